using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco tokenize: a model's tokenizer on text, through <see cref="ModelTokenizer"/> (no weights are read).</summary>
internal static class TokenizeCommand
{
    public static Command Create(CliContext context)
    {
        var model = new Option<string>("--model")
        {
            Description = "Model directory; only its tokenizer files are read (tokenizer.json or tokenizer.model, tokenizer_config.json, config.json if present).",
            Required = true,
        };
        var text = new Option<string?>("--text") { Description = "The text to tokenize. Default: none (give --text or --data)." };
        var data = new Option<string?>("--data") { Description = "Documents to tokenize, one result each: a .jsonl file (\"text\", or \"prompt\" + \"response\", encoded one after the other), a .txt file or a folder of .txt files. Default: none." };
        var noSpecial = new Option<bool>("--no-special-tokens") { Description = "Do not add the tokenizer's own special tokens (e.g. Llama's <s>); special tokens written in the text are still recognised.", DefaultValueFactory = _ => false };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per document: {\"ids\": [...], \"tokens\": [...], \"count\": N}.", DefaultValueFactory = _ => false };

        var command = new Command("tokenize", "Tokenize text with a model's tokenizer: token ids, token strings and the count, per document.")
        {
            model, text, data, noSpecial, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            string? textValue = parse.GetValue(text), dataPath = parse.GetValue(data);
            if ((textValue is null) == (dataPath is null)) throw new UsageException("give exactly one of --text and --data.");
            ModelLoading.RequireModelDirectory(parse.GetValue(model)!, needsConfig: false);
            var tokenizer = ModelTokenizer.Load(parse.GetValue(model)!);
            bool addSpecial = !parse.GetValue(noSpecial), asJson = parse.GetValue(json);

            IEnumerable<Document> documents = textValue is not null ? [new TextDocument(textValue, 1)] : DataSources.Documents(dataPath!, "--data");
            // Lines of a JSON-lines file are named, since blank lines are skipped and documents then differ from lines.
            bool jsonLines = dataPath is not null && File.Exists(dataPath) && !dataPath.EndsWith(".txt", StringComparison.OrdinalIgnoreCase);
            int index = 0;
            foreach (var document in documents)
            {
                index++;
                var ids = Encode(tokenizer, document, addSpecial);
                var tokens = ids.Select(id => tokenizer.IdToToken(id)).ToArray();
                if (asJson)
                {
                    Json.WriteLine(context.Out, new JsonObject
                    {
                        ["ids"] = new JsonArray(ids.Select(id => (JsonNode?)id).ToArray()),
                        ["tokens"] = new JsonArray(tokens.Select(t => (JsonNode?)t).ToArray()),
                        ["count"] = ids.Count,
                    });
                }
                else
                {
                    string where = dataPath is null ? "text" : $"document {index}{(jsonLines ? $" (line {document.Line})" : "")}";
                    context.Out.WriteLine($"{where}: {ids.Count.ToString(CultureInfo.InvariantCulture)} tokens");
                    context.Out.WriteLine($"  ids:    {string.Join(' ', ids.Select(id => id.ToString(CultureInfo.InvariantCulture)))}");
                    context.Out.WriteLine($"  tokens: {string.Join(' ', tokens.Select(Quote))}");
                }
            }
            if (index == 0) throw new UsageException($"--data '{dataPath}' has no document.");
            return ExitCodes.Success;
        }));
        return command;
    }

    // Quoted so that a token's own spaces, quotes and control characters stay visible; other characters (▁, emoji,
    // CJK) are printed as they are, unlike JSON's encoder, which escapes everything beyond the Basic Multilingual Plane.
    static string Quote(string? token)
    {
        if (token is null) return "null";
        var quoted = new System.Text.StringBuilder(token.Length + 2).Append('"');
        foreach (char c in token)
        {
            quoted.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                < ' ' => $"\\u{(int)c:X4}",
                _ => c.ToString(),
            });
        }
        return quoted.Append('"').ToString();
    }

    // A prompt/response row is encoded as training encodes it: prompt and response separately, one after the other.
    static IReadOnlyList<int> Encode(ModelTokenizer tokenizer, Document document, bool addSpecial)
    {
        if (document is TextDocument text) return tokenizer.EncodeWithSpecialTokens(text.Text, addSpecial);
        if (document is not PromptResponseDocument pair) throw new UsageException($"{document.Where}: seco tokenize does not read {document.Kind} documents yet.");
        var ids = new List<int>();
        if (addSpecial) ids.AddRange(tokenizer.SpecialPrefixIds);
        if (!string.IsNullOrEmpty(pair.Prompt)) ids.AddRange(tokenizer.EncodeWithSpecialTokens(pair.Prompt, addSpecialTokens: false));
        ids.AddRange(tokenizer.EncodeWithSpecialTokens(pair.Response, addSpecialTokens: false));
        if (addSpecial) ids.AddRange(tokenizer.SpecialSuffixIds);
        return ids;
    }
}
