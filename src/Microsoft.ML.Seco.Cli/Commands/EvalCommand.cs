using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using Spectre.Console;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco eval: negative log-likelihood and perplexity, computed chunk by chunk (memory bounded by one chunk + the cache).</summary>
internal static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        var model = Flags.Model.Option<string>(required: true);
        var adapter = Flags.Adapter.Option<string?>();
        var data = new Option<string?>("--data") { Description = "Documents to score: a .jsonl file (\"text\"; \"prompt\" + \"response\": only the response is scored; \"messages\": rendered by the model's chat template, the assistant's turns scored), a .txt file or a folder of .txt files. Needs the model's tokenizer; give it or --input-ids." }.WithDefaultNote("none");
        var assistantOnly = Flags.AssistantOnlyLoss.Option<bool>().WithDefault(true);
        var inputIds = new Option<string?>("--input-ids") { Description = "One sequence of token ids, comma-separated (e.g. 1,2,3); needs no tokenizer." }.WithDefaultNote("none");
        var chunkSize = Flags.ChunkSize.Option<int>().WithDefault(SecoDefaults.ChunkSize);
        var maxSeqLen = Flags.MaxSequenceLength.Option<int>("Each window is scored as training sees it.").WithDefault(SecoDefaults.MaxSequenceLength);
        var perToken = new Option<bool>("--per-token") { Description = "Also report each scored token's NLL: entry i is -log p(token i+1 | tokens 0..i), sequences one after another.", DefaultValueFactory = _ => false };
        var device = Flags.Device.Option<string>().WithDefault("auto");
        var dtype = Flags.DType.Option<string>().WithDefault("float32");
        var json = new Option<bool>("--json") { Description = "Print one JSON object: {\"tokens\", \"nll\", \"perplexity\", \"per_token_nll\" (with --per-token)}.", DefaultValueFactory = _ => false };

        var command = new Command("eval", "Score documents or token ids: mean negative log-likelihood per token and perplexity.")
        {
            model, adapter, data, inputIds, chunkSize, maxSeqLen, perToken, assistantOnly, device, dtype, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            string? dataPath = parse.GetValue(data), ids = parse.GetValue(inputIds);
            if ((dataPath is null) == (ids is null)) throw new UsageException("give exactly one of --data and --input-ids.");
            int chunk = parse.GetValue(chunkSize), maxLength = parse.GetValue(maxSeqLen);
            // Scoring takes the stage's settings: the stage's rules check them, and its errors name these flags.
            new ChunkwiseLoraTrainer.Options { ModelPath = parse.GetValue(model)!, ChunkSize = chunk, MaxSequenceLength = maxLength }.Validate();
            bool wantPerToken = parse.GetValue(perToken);
            var parsedIds = ids is null ? null : ParseIds(ids);
            using var m = ModelLoading.Load(parse.GetValue(model)!, parse.GetValue(adapter), parse.GetValue(dtype)!, parse.GetValue(device)!);

            double sum = 0;
            long tokens = 0;
            int sequences = 0;
            var perTokenNll = new List<double>();
            void Add(double[] values)
            {
                perTokenNll.AddRange(values);
                sum += values.Sum();
                tokens += values.Length;
            }
            if (parsedIds is not null)
            {
                if (parsedIds.FirstOrDefault(id => id >= m.Config.VocabSize) is int bad && bad >= m.Config.VocabSize)
                    throw new UsageException($"--input-ids: id {bad} is outside the model's vocabulary (0 to {m.Config.VocabSize - 1}).");
                // Raw ids need no tokenizer: one sequence, every next token scored.
                using var batch = TokenBatch.FromSequences([parsedIds], [parsedIds], padId: 0, m.Device);
                sequences = 1;
                if (wantPerToken) Add(PerTokenNll(m, batch, chunk));
                else (sum, tokens) = Evaluation.MeanNll(m, batch, chunk);
            }
            else
            {
                // The library's document scoring, as the fitted stage's Perplexity column computes it; conversations
                // are encoded with the model's chat template, as training encodes them.
                string directory = parse.GetValue(model)!;
                var tokenizer = ModelTokenizer.Load(directory);
                var encoderFor = DataSources.Encoders(directory, tokenizer, parse.GetValue(assistantOnly));
                foreach (var document in DataSources.Documents(dataPath!, "--data"))
                {
                    var score = Evaluation.ScoreDocument(m, encoderFor(document), document, chunk, maxLength, wantPerToken);
                    sequences += score.Sequences;
                    if (score.TokenNll is { } values) Add(values.ToArray());
                    else
                    {
                        sum += score.SumNll;
                        tokens += score.Tokens;
                    }
                }
            }
            if (tokens == 0) throw new UsageException(parsedIds is not null ? "--input-ids needs at least 2 ids." : $"--data '{dataPath}' has no token to score.");
            double nll = sum / tokens;
            if (parse.GetValue(json))
            {
                var result = new JsonObject
                {
                    ["tokens"] = tokens,
                    ["sequences"] = sequences,
                    ["nll"] = Json.Number(nll),
                    ["perplexity"] = Json.Number(Math.Exp(nll)),
                };
                if (wantPerToken) result["per_token_nll"] = new JsonArray(perTokenNll.Select(v => Json.Number(v)).ToArray());
                Json.WriteLine(context.Out, result);
            }
            else
            {
                var console = TrainCommand.Console(context.Out);
                var table = new Table().AddColumn("tokens").AddColumn("sequences").AddColumn("nll").AddColumn("perplexity");
                table.AddRow(tokens.ToString(CultureInfo.InvariantCulture), sequences.ToString(CultureInfo.InvariantCulture),
                    nll.ToString("F6", CultureInfo.InvariantCulture), Math.Exp(nll).ToString("F4", CultureInfo.InvariantCulture));
                console.Write(table);
                if (wantPerToken)
                {
                    var tokensTable = new Table().AddColumn("i").AddColumn("nll");
                    for (int i = 0; i < perTokenNll.Count; i++)
                        tokensTable.AddRow(i.ToString(CultureInfo.InvariantCulture), perTokenNll[i].ToString("F6", CultureInfo.InvariantCulture));
                    console.Write(tokensTable);
                }
            }
            return ExitCodes.Success;
        }));
        return command;
    }

    static int[] ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
                throw new UsageException($"--input-ids: '{parts[i]}' (item {i + 1}) is not a non-negative integer token id.");
        if (ids.Length < 2) throw new UsageException($"--input-ids needs at least 2 ids (got {ids.Length}): the first token is only context.");
        return ids;
    }

    /// <summary>
    /// NLL of every labelled next-token target of a one-sequence batch, chunk by chunk against a key/value cache
    /// (no graph): memory is one chunk's activations and logits plus the cache.
    /// </summary>
    internal static double[] PerTokenNll(CausalLM model, TokenBatch batch, int chunkSize) => Evaluation.TokenNll(model, batch, chunkSize)[0];
}
