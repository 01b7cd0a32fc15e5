using Microsoft.ML.Seco.Training;
using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Lora;
using Spectre.Console;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco gradcheck: GradientCheck.Run on seeded random token ids against full backpropagation.</summary>
internal static class GradcheckCommand
{
    // SpaCO with every registered sampler, each by its name: spaco-bernoulli, spaco-fixed, spaco-stratified.
    static readonly string[] Strategies = GradientCheckStrategy.All.Select(s => s.Name).ToArray();

    public static Command Create(CliContext context)
    {
        var model = Flags.Model.Option<string>(required: true);
        var seqLen = FlagValues.Option<int>("--seq-len", "Length of the random token sequence, at least 2.", required: true);
        var chunkSize = Flags.ChunkSize.Option<int>(required: true);
        var strategy = FlagValues.Option<string>("--strategy",
            $"seco and checkpoint must equal full backpropagation; spaco-SAMPLER ({string.Join(", ", Strategies.Where(s => s.StartsWith("spaco-", StringComparison.Ordinal)))}) " +
            "computes the exact expectation of SpaCO's estimate over every selection the sampler can draw, which must equal it too where the sampler is unbiased " +
            "(spaco-bernoulli with compensation both and no binding --max-compensation); the other samplers and modes are biased for chains through the cache: " +
            "their errors are reported, not judged.").WithDefault("seco");
        strategy.OneOf(Strategies);
        var sampledChunks = Flags.SampledChunks.Option<int?>("Required with the spaco strategies.").WithDefaultNote("none");
        var compensation = Flags.Compensation.Option<string?>(
            "Without it, every mode's expectation is reported; only spaco-bernoulli with both (and no binding --max-compensation) is judged: it alone is unbiased.")
            .OneOf("both", "loss", "cache", "none").WithDefaultNote("all four");
        var maxCompensation = Flags.MaxCompensation.Option<double?>().WithDefaultNote("none");
        var dtype = Flags.DType.Option<string>("gradcheck takes float64 (pass: max relative error <= 1e-8) or float32 (<= 1e-3).").WithDefault("float64").OneOf("float64", "float32");
        var fullFinetune = Flags.FullFineTuning.Option<bool>("Their gradients are checked instead of LoRA's.").WithDefault(false);
        var loraRank = Flags.LoraRank.Option<int>("The adapters go on q/k/v/o and the MLP projections.").WithDefault(4);
        var seed = Flags.Seed.Option<int>("Seeds the token ids and the adapter's weights.").WithDefault(0);
        var maxPatterns = FlagValues.Option<int>("--max-patterns", "Refuse (exit 2) when SpaCO has more selections than this to enumerate.").WithDefault(4096);
        var device = Flags.Device.Option<string>("Both the strategy and the full backpropagation it is compared with run there.").WithDefault("cpu");
        var json = FlagValues.Option<bool>("--json", "Print one JSON object {\"strategy\", \"parameters\", \"max_abs_error\", \"max_rel_error\", \"groups\": [...]}.").WithDefault(false);

        var command = new Command("gradcheck",
            "Compare a strategy's gradients with full backpropagation on the model, for random token ids (seeded). " +
            "Unless --full-finetune, LoRA adapters are attached and their B matrices randomised: a fresh adapter has B = 0, which gives A no gradient " +
            "and would make the check vacuous for A. Exit 0 when within tolerance (spaco-fixed: always), 1 when not, 2 when there are too many chunks to enumerate.")
        {
            model, seqLen, chunkSize, strategy, sampledChunks, compensation, maxCompensation, dtype, fullFinetune, loraRank, seed, maxPatterns, device, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            int length = parse.GetValue(seqLen), chunk = parse.GetValue(chunkSize);
            if (length < 2) throw new UsageException($"--seq-len must be at least 2 (got {length}).");
            string strategyName = parse.GetValue(strategy)!;
            var kind = GradientCheckStrategy.All.First(s => s.Name == strategyName);
            int? t = parse.GetValue(sampledChunks);
            bool spaco = kind.IsSpaco;
            if (spaco && t is null) throw new UsageException($"--sampled-chunks is required with --strategy {strategyName}.");
            double? cap = parse.GetValue(maxCompensation);
            // The chunk-wise step's and LoRA's own rules check the settings; their errors name the flags (FlagOf).
            new ChunkwiseOptions { ChunkSize = chunk, SampledChunks = t, MaxCompensation = cap }.Validate();
            var lora = new LoraConfig
            {
                Rank = parse.GetValue(loraRank), Alpha = 2.0 * parse.GetValue(loraRank),
                TargetModules = LoraConfig.AttentionProjections.Concat(LoraConfig.MlpProjections).ToArray(),
            };
            lora.Validate();
            // Exact strategies use factors 1 whatever the mode; SpaCO reports every mode unless one is named.
            // A sampler runs only with the modes it accepts (the stratified one with none alone).
            var modes = parse.GetValue(compensation) is string named ? [EnumNames.Parse<Compensation>(named, "--compensation")]
                : spaco ? Enum.GetValues<Compensation>().Where(m => kind.Sampler!.Rejects(m) is null).ToArray() : [Compensation.LossAndCache];
            if (spaco && kind.Sampler!.Rejects(modes[0]) is string reason)
                throw new UsageException(new OptionException(nameof(Compensation), EnumNames.Of(modes[0]), reason).Describe(_ => "--compensation") + ".");
            string dtypeName = parse.GetValue(dtype)!;
            int seedValue = parse.GetValue(seed);
            bool full = parse.GetValue(fullFinetune);
            int chunks = (length + chunk - 1) / chunk;
            // Fail before loading the model when the enumeration would be refused anyway (the library's message); a sampler
            // that needs the batch's labelled chunks is checked once the batch exists.
            // The enumeration's limit, in the flags that set its terms.
            UsageException TooMany(TooManySelectionsException e) => new(string.Create(CultureInfo.InvariantCulture,
                $"--seq-len {length} in chunks of --chunk-size {chunk} makes {e.Chunks} chunks: {e.Selections:N0} selections of the {e.Sampler} sampler to enumerate, " +
                $"more than --max-patterns {e.Limit}; use a shorter --seq-len or a larger --chunk-size."));
            if (spaco && t < chunks && !kind.Sampler!.UsesLabelledChunks)
            {
                try { GradientCheck.Selections(chunks, t!.Value, kind.Sampler, modes[0], cap, parse.GetValue(maxPatterns)); }
                catch (TooManySelectionsException e) { throw TooMany(e); }
            }

            using var m = ModelLoading.Load(parse.GetValue(model)!, null, dtypeName, parse.GetValue(device)!);
            using (var _ = no_grad())
            {
                if (full) TrainableParameters.Select(m, fullFineTuning: true);
                else
                {
                    manual_seed(seedValue);
                    LoraAdapters.Attach(m, lora);
                    var generator = new Generator((ulong)seedValue + 1, CPU);
                    foreach (var (name, p) in m.named_parameters())
                        if (name.Contains("lora_B", StringComparison.Ordinal))
                            p.copy_(normal(0, 0.2, p.shape, generator: generator, dtype: ScalarType.Float64));
                }
            }
            var random = new Random(seedValue);
            var ids = Enumerable.Range(0, length).Select(_ => random.Next(m.Config.VocabSize)).ToArray();
            using var batch = TokenBatch.FromSequences([ids], [ids], 0, m.Device);
            List<GradientCheckResult> results;
            try { results = modes.Select(mode => GradientCheck.Run(m, batch, kind, chunk, t, cap, parse.GetValue(maxPatterns), mode)).ToList(); }
            catch (TooManySelectionsException e) { throw TooMany(e); }

            double threshold = dtypeName == "float64" ? 1e-8 : 1e-3;
            // Only the exact strategies and a sampler that claims it (Bernoulli with both factors, uncapped) have the full
            // gradient as expectation.
            bool Judged(GradientCheckResult r) => !kind.IsSpaco || kind.Sampler.IsUnbiased(r.Chunks, t!.Value, r.Compensation, cap);
            var result = results.FirstOrDefault(Judged) ?? results[0];
            bool judged = Judged(result);
            bool passed = result.MaxRelError <= threshold;
            int exit = !judged || passed ? ExitCodes.Success : ExitCodes.Failure;
            string ModeName(GradientCheckResult r) => EnumNames.Of(r.Compensation);
            if (parse.GetValue(json))
            {
                var output = new JsonObject
                {
                    ["strategy"] = strategyName,
                    ["dtype"] = dtypeName,
                    ["device"] = m.Device.ToString(),
                    ["trainable"] = full ? "full" : "lora",
                    ["seq_len"] = length,
                    ["chunk_size"] = chunk,
                    ["chunks"] = result.Chunks,
                    ["sampled_chunks"] = t,
                    ["compensation"] = spaco ? ModeName(result) : null,
                    ["max_compensation"] = cap,
                    ["runs"] = result.Runs,
                    ["parameters"] = result.Parameters,
                    ["max_abs_error"] = result.MaxAbsError,
                    ["max_rel_error"] = result.MaxRelError,
                    ["threshold"] = threshold,
                    ["judged"] = judged,
                    ["passed"] = judged ? passed : null,
                    ["groups"] = new JsonArray(result.Groups.Select(g => (JsonNode)new JsonObject
                    {
                        ["group"] = g.Group,
                        ["tensors"] = g.Tensors,
                        ["max_abs_error"] = g.MaxAbsError,
                        ["max_rel_error"] = g.MaxRelError,
                    }).ToArray()),
                };
                if (spaco)
                    output["modes"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
                    {
                        ["compensation"] = ModeName(r),
                        ["max_abs_error"] = r.MaxAbsError,
                        ["max_rel_error"] = r.MaxRelError,
                        ["judged"] = Judged(r),
                    }).ToArray());
                Json.WriteLine(context.Out, output);
            }
            else
            {
                var console = TrainCommand.Console(context.Out);
                var table = new Table().AddColumn("parameter group").AddColumn("tensors").AddColumn("max abs error").AddColumn("max rel error");
                foreach (var g in result.Groups)
                    table.AddRow(new Text(g.Group), new Text(g.Tensors.ToString(CultureInfo.InvariantCulture)),
                        new Text(g.MaxAbsError.ToString("E3", CultureInfo.InvariantCulture)), new Text(g.MaxRelError.ToString("E3", CultureInfo.InvariantCulture)));
                console.Write(table);
                if (spaco)
                    foreach (var r in results)
                        console.WriteLine($"{strategyName} compensation {ModeName(r)}: E[g] over {r.Runs} selections differs from the full gradient by " +
                            $"{r.MaxRelError.ToString("E3", CultureInfo.InvariantCulture)} (max relative){(Judged(r) ? "" : ", not judged")}");
                string verdict = !judged
                    ? $"{strategyName}: the errors above are the bias of the sampler and compensation over {result.Runs} selections (not judged)."
                    : $"{strategyName}{(spaco ? $" compensation {ModeName(result)}" : "")}: max relative error {result.MaxRelError:E3} {(passed ? "<=" : ">")} {threshold:E0} over {result.Parameters} tensors, {result.Chunks} chunks, {result.Runs} run(s): {(passed ? "PASS" : "FAIL")}";
                console.WriteLine(verdict);
            }
            return exit;
        }, FlagOf));
        return command;
    }

    // LoRA's rank is the stage's LoraRank; the chunk-wise settings are named as the stage names them.
    static string FlagOf(string option) => option == nameof(LoraConfig.Rank) ? Flags.LoraRank.Name : TrainSetting.FlagOf(option);
}
