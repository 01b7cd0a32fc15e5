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
        var model = Flags.Model.Option<string>("Only its tokenizer files are read here (tokenizer.json or tokenizer.model, tokenizer_config.json, config.json if present).", required: true);
        var text = new Option<string?>("--text") { Description = "The text to tokenize; give it or --data." }.WithDefaultNote("none");
        var data = new Option<string?>("--data") { Description = "Documents to tokenize as training encodes them, one result each: a .jsonl file (\"text\"; \"prompt\" + \"response\"; \"messages\", rendered by the model's chat template), a .txt file or a folder of .txt files." }.WithDefaultNote("none");
        var noSpecial = new Option<bool>("--no-special-tokens") { Description = "--text: do not add the tokenizer's own special tokens (e.g. Llama's <s>); --data: leave out the BOS and EOS training puts around a text or prompt/response (a conversation's come from its template and stay). Special tokens written in the text are still recognised.", DefaultValueFactory = _ => false };
        var assistantOnly = Flags.AssistantOnlyLoss.Option<bool>().WithDefault(true);
        var json = new Option<bool>("--json") { Description = "Print one JSON object per document: {\"rendered\", \"ids\", \"trained\" (--data: 0/1 per id), \"tokens\", \"count\"}.", DefaultValueFactory = _ => false };

        var command = new Command("tokenize", "Tokenize text with a model's tokenizer, or documents as training encodes them: token ids, token strings, the count and which tokens are trained on.")
        {
            model, text, data, noSpecial, assistantOnly, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            string? textValue = parse.GetValue(text), dataPath = parse.GetValue(data);
            if ((textValue is null) == (dataPath is null)) throw new UsageException("give exactly one of --text and --data.");
            string directory = parse.GetValue(model)!;
            ModelLoading.RequireModelDirectory(directory, needsConfig: false);
            var tokenizer = ModelTokenizer.Load(directory);
            bool addSpecial = !parse.GetValue(noSpecial), asJson = parse.GetValue(json);
            var encoderFor = DataSources.Encoders(directory, tokenizer, parse.GetValue(assistantOnly));

            // --text is the tokenizer alone (as Hugging Face's tokenizer(text) encodes it); --data the documents as
            // training encodes them (DocumentEncoder), with which tokens the loss is on.
            IEnumerable<Document> documents = textValue is not null ? [new TextDocument(textValue, 1)] : DataSources.Documents(dataPath!, "--data");
            // Lines of a JSON-lines file are named, since blank lines are skipped and documents then differ from lines.
            bool jsonLines = dataPath is not null && File.Exists(dataPath) && !dataPath.EndsWith(".txt", StringComparison.OrdinalIgnoreCase);
            int index = 0;
            foreach (var document in documents)
            {
                index++;
                var encoded = textValue is not null
                    ? new EncodedDocument([.. tokenizer.EncodeWithSpecialTokens(textValue, addSpecial)], [], textValue)
                    : Encode(encoderFor, tokenizer, document, addSpecial);
                var ids = encoded.Ids;
                var tokens = ids.Select(id => tokenizer.IdToToken(id)).ToArray();
                bool withMask = textValue is null;
                if (asJson)
                {
                    var line = new JsonObject { ["rendered"] = encoded.Rendered ?? Rendered(document) };
                    line["ids"] = new JsonArray(ids.Select(id => (JsonNode?)id).ToArray());
                    if (withMask) line["trained"] = new JsonArray(encoded.Trained.Select(t => (JsonNode?)(t ? 1 : 0)).ToArray());
                    line["tokens"] = new JsonArray(tokens.Select(t => (JsonNode?)t).ToArray());
                    line["count"] = ids.Length;
                    Json.WriteLine(context.Out, line);
                }
                else
                {
                    string where = dataPath is null ? "text" : $"document {index}{(jsonLines ? $" (line {document.Line})" : "")}";
                    context.Out.WriteLine($"{where}: {ids.Length.ToString(CultureInfo.InvariantCulture)} tokens{(withMask ? $", {encoded.Trained.Count(t => t).ToString(CultureInfo.InvariantCulture)} trained" : "")}");
                    if (document is ConversationDocument) context.Out.WriteLine($"  rendered: {Quote(encoded.Rendered)}");
                    context.Out.WriteLine($"  ids:    {string.Join(' ', ids.Select(id => id.ToString(CultureInfo.InvariantCulture)))}");
                    context.Out.WriteLine($"  tokens: {string.Join(' ', tokens.Select(Quote))}");
                    if (withMask && encoded.Trained.Contains(false))
                        context.Out.WriteLine($"  trained: {string.Join(' ', encoded.Trained.Select(t => t ? '1' : '0'))}");
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

    /// <summary>
    /// A document as training encodes it; without special tokens, a text or prompt/response loses the BOS and EOS that
    /// encoding puts first and last (when the tokenizer has them), and their marks with them.
    /// </summary>
    static EncodedDocument Encode(Func<Document, DocumentEncoder> encoderFor, ModelTokenizer tokenizer, Document document, bool addSpecial)
    {
        var encoded = encoderFor(document).Encode(document);
        if (addSpecial || document is ConversationDocument || encoded.Ids.Length == 0) return encoded;
        int start = tokenizer.BosId is not null ? 1 : 0, end = encoded.Ids.Length - (tokenizer.EosId is not null ? 1 : 0);
        if (end < start) end = start;
        return encoded with { Ids = encoded.Ids[start..end], Trained = encoded.Trained[start..end] };
    }

    // The text a document's ids encode when it is its own: a text, or a prompt and its response one after the other.
    static string Rendered(Document document) => document switch
    {
        TextDocument t => t.Text,
        PromptResponseDocument p => p.Prompt + p.Response,
        _ => "",
    };
}
