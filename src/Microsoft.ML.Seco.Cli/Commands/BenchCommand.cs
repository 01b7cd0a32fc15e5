using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Cli.Benchmarks;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using Spectre.Console;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>
/// seco bench: the efficiency study a user decides from. Time (median of timed steps) and peak memory per training step
/// of each strategy at growing lengths in one run, with a memory guard, memory slopes in units of the key/value cache,
/// the longest length within a memory budget, model FLOP/s against a measured matmul peak, the paper's time ratios,
/// CSV/JSON and PNG plots.
/// </summary>
internal static class BenchCommand
{
    // The guard leaves this share of the memory available to the system and other processes.
    const double GuardShare = 0.9;
    // The paper's targets (issue #9): SpaCO within 1.5× of inference at k ≥ 64 chunks, SeCO within 1.5× of plain training.
    const int TargetChunks = 64;
    const double TargetRatio = 1.5;
    // Issue #22's ceilings on operations dispatched from .NET: SeCO within 20× plain training's, SpaCO within 10× chunked inference's.
    // Issue #22's: operations dispatched per step against plain training's.
    const double SecoOperationsTarget = 20, SpacoOperationsTarget = 10, InferenceOperationsTarget = 10;
    // SpaCO's t when --sampled-chunks is not given.
    const int DefaultSampledChunks = 8;

    sealed record Settings(BenchmarkShape Shape, int[] Lengths, string[] Strategies, int BaselinesUpTo, int ChunkSize, int SampledChunks,
        IChunkSampler Sampler, int Steps, global::TorchSharp.torch.ScalarType DType, global::TorchSharp.torch.Device Device, long? Budget,
        bool IsolateMemory, bool RecomputeLayers, bool Cuda, bool Phases, AttentionKernel Attention)
    {
        /// <summary>The chunk-wise strategies' settings.</summary>
        public StrategySettings Strategy => new(ChunkSize, SampledChunks, Sampler, RecomputeLayers);

        /// <summary>The arguments that rebuild this model and step in a measuring process of its own (<see cref="MemoryProcess"/>).</summary>
        public IEnumerable<string> ChildArguments() => new[]
        {
            "--shape", Shape.Name, "--layers", I(Shape.Layers), "--hidden-size", I(Shape.Hidden), "--intermediate-size", I(Shape.Intermediate),
            "--heads", I(Shape.Heads), "--kv-heads", I(Shape.KvHeads), "--head-dim", I(Shape.HeadDim), "--vocab", I(Shape.Vocab),
            "--chunk-size", I(ChunkSize), "--sampled-chunks", I(SampledChunks), "--sampler", Sampler.Name,
            "--dtype", TensorSettings.Name(DType), "--device", Device.ToString(),
        }.Concat(RecomputeLayers ? new[] { "--recompute-layers" } : []).Concat(new[] { "--attention", Attention.ToString().ToLowerInvariant() });

        /// <summary>A benchmark model of this shape, dtype, device and attention kernel.</summary>
        public CausalLM Model() => EfficiencyBenchmark.Model(Shape.ToConfig(), DType, Device, new AttentionOptions { Kernel = Attention });

        static string I(int value) => value.ToString(CultureInfo.InvariantCulture);
    }

    // The samplers the benchmark runs: those that need no labelled chunks and take its compensation (both).
    static readonly IChunkSampler[] BenchSamplers =
        ChunkSamplers.All.Where(s => !s.UsesLabelledChunks && s.Rejects(Compensation.LossAndCache) is null).ToArray();

    sealed record StrategySummary(string Strategy, int Measured, double? SlopeBytesPerToken, double? SlopeOverKv, BudgetResult? Budget);

    public static Command Create(CliContext context)
    {
        var shape = new Option<string?>("--shape") { Description = $"Model shape preset: {string.Join(", ", BenchmarkShape.Presets.Keys)}; the shape flags below override its fields." }.WithDefaultNote("default (tiny with --quick)");
        var quick = new Option<bool>("--quick") { Description = "Smoke test in well under 2 minutes: the tiny shape, lengths 128,256,512, chunk 64, t = 2, baselines at every length (explicit flags still override)." };
        var lengths = new Option<string?>("--lengths") { Description = "Comma-separated sequence lengths." }.WithDefaultNote("1024,2048,4096,8192");
        var strategies = new Option<string>("--strategies") { Description = "Comma-separated: full, checkpoint, seco, spaco, inference.", DefaultValueFactory = _ => "full,checkpoint,seco,spaco,inference" };
        var baselinesUpTo = FlagValues.Option<int?>("--baselines-up-to", "Longest length at which the whole-sequence baselines (full, checkpoint) run, their time growing fastest; 0 = every length.").WithDefaultNote("4096 (every length with --quick)");
        var chunkSize = Flags.ChunkSize.Option<int?>().WithDefaultNote($"{SecoDefaults.ChunkSize} (64 with --quick)");
        var sampled = Flags.SampledChunks.Option<int?>().WithDefaultNote($"{DefaultSampledChunks} (2 with --quick)");
        var sampler = new Option<string>("--sampler") { Description = $"SpaCO's sampler: {SamplerNames.Help(BenchSamplers)}.", DefaultValueFactory = _ => ChunkSamplers.FixedBudget.Name };
        const string OverridesPreset = "Overrides the preset.";
        var layers = Flags.Layers.Option<int?>(OverridesPreset);
        var hidden = Flags.HiddenSize.Option<int?>(OverridesPreset);
        var intermediate = Flags.IntermediateSize.Option<int?>(OverridesPreset);
        var heads = Flags.Heads.Option<int?>(OverridesPreset + " They must divide --hidden-size unless --head-dim is given.");
        var kvHeads = Flags.KvHeads.Option<int?>(OverridesPreset);
        var headDim = FlagValues.Option<int?>("--head-dim", "Head dimension (overrides the preset; default hidden / heads when either of those is given).");
        var vocab = FlagValues.Option<int?>("--vocab", "Vocabulary size (overrides the preset).");
        var steps = FlagValues.Option<int>("--steps", "Timed steps per point after one warm-up step; the median is reported. Memory is measured on one more step.").WithDefault(3);
        var dtype = Flags.DType.Option<string>().WithDefault("float32");
        var device = Flags.Device.Option<string>("On CUDA memory is the device memory libtorch's allocator reserves during a step, read through the CUDA driver; nothing else should use the device meanwhile.").WithDefault("cpu");
        var budget = Flags.MemoryBudget.Option<string?>("Reports the longest length each strategy trains within it, from the measured points and the fitted memory model.").WithDefaultNote("none");
        var csv = new Option<string?>("--csv") { Description = "Write the points to this CSV file and the per-strategy summary to NAME-summary.csv beside it." }.WithDefaultNote("none");
        var plots = new Option<string?>("--plots") { Description = "Folder for bench-time.png and bench-memory.png." }.WithDefaultNote("beside --csv (NAME-time.png, NAME-memory.png), else none");
        var isolate = new Option<bool>("--isolate-memory") { Description = "Measure each point's memory in a fresh process of its own (always on CUDA, where libtorch's caching allocator cannot be emptied and a point measured after a larger one would read low); the timed steps still run in this process." };
        var memoryPoint = new Option<string?>(MemoryProcess.PointOption) { Hidden = true, Description = "Internal: measure the memory of one STRATEGY@LENGTH point and print it as one JSON line." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per point, then a summary, and nothing else." };
        var predict = new Option<bool>("--predict") { Description = "Run nothing: print each strategy's predicted peak device memory of a training run (weights, adapters and AdamW state, cache and its gradient, activations, the head's pieces) at every length, and with --memory-budget the longest length within it. Any shape, dtype and device, no memory needed." };
        var recompute = Flags.RecomputeLayers.Option<bool>("Here: SeCO's and SpaCO's steps.");
        var attention = new Option<string>("--attention") { Description = "How a chunk attends over its prefix: auto (libtorch's fused kernels where they serve, else blockwise), fused (fail where they do not) or blockwise (the C# online softmax, the reference).", DefaultValueFactory = _ => "auto" };
        var phases = new Option<bool>("--phases") { Description = "Time SeCO's and SpaCO's phases on one more step per point: Stage 1, Stage 2's forwards and backwards, and within them the attention over a prefix, each bounded by a device synchronisation." };

        var command = new Command("bench", "The efficiency study: time and peak memory per training step of full backprop, layer checkpointing, SeCO and SpaCO (and chunked inference) at growing lengths on a random LoRA model built in memory, with memory slopes, a memory guard, the longest length within a budget, FLOP/s and plots.")
        {
            shape, quick, lengths, strategies, baselinesUpTo, chunkSize, sampled, sampler, layers, hidden, intermediate, heads, kvHeads, headDim, vocab,
            steps, dtype, device, budget, csv, plots, isolate, memoryPoint, json, recompute, predict, phases, attention,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            bool isQuick = parse.GetValue(quick);
            var preset = BenchmarkShape.Preset(parse.GetValue(shape) ?? (isQuick ? "tiny" : "default"));
            var benchShape = preset.With(parse.GetValue(layers), parse.GetValue(hidden), parse.GetValue(intermediate), parse.GetValue(heads),
                parse.GetValue(kvHeads), parse.GetValue(headDim), parse.GetValue(vocab));
            var lengthList = ParseList(parse.GetValue(lengths) ?? (isQuick ? "128,256,512" : "1024,2048,4096,8192"), "--lengths")
                .Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 2
                    ? n : throw new UsageException($"--lengths: '{s}' is not a length of at least 2.")).Distinct().Order().ToArray();
            var strategyList = ParseList(parse.GetValue(strategies)!, "--strategies");
            foreach (var s in strategyList.Where(s => !EfficiencyBenchmark.Strategies.Contains(s)))
                throw new UsageException($"--strategies: unknown strategy '{s}'; use {string.Join(", ", EfficiencyBenchmark.Strategies)}.");
            var samplerKind = SamplerNames.Parse(parse.GetValue(sampler)!, "--sampler", BenchSamplers,
                "the benchmark's random sequences are labelled everywhere and it runs compensation both");
            int chunk = parse.GetValue(chunkSize) ?? (isQuick ? 64 : SecoDefaults.ChunkSize), t = parse.GetValue(sampled) ?? (isQuick ? 2 : DefaultSampledChunks);
            // The chunk-wise step's own rules; its errors name the flags.
            new ChunkwiseOptions { ChunkSize = chunk, SampledChunks = t }.Validate();
            if (parse.GetValue(steps) < 1) throw new UsageException("--steps must be at least 1.");
            int upTo = parse.GetValue(baselinesUpTo) ?? (isQuick ? 0 : 4096);
            if (upTo < 0) throw new UsageException("--baselines-up-to must be 0 (every length) or positive.");
            // A prediction runs nothing, so it may name a device this machine does not have.
            string deviceName = parse.GetValue(device)!;
            var dev = parse.GetValue(predict) ? global::TorchSharp.torch.CPU : TensorSettings.ResolveDevice(deviceName);
            var settings = new Settings(benchShape, lengthList, strategyList, upTo == 0 ? int.MaxValue : upTo, chunk, t, samplerKind, parse.GetValue(steps),
                TensorSettings.ResolveDType(parse.GetValue(dtype)!, dev), dev,
                parse.GetValue(budget) is { } b ? MemoryModel.ParseSize(b, "--memory-budget") : null,
                IsolateMemory: parse.GetValue(isolate) || dev.type == global::TorchSharp.DeviceType.CUDA, RecomputeLayers: parse.GetValue(recompute),
                Cuda: deviceName.Trim().StartsWith("cuda", StringComparison.OrdinalIgnoreCase), Phases: parse.GetValue(phases),
                Attention: Enum.TryParse<AttentionKernel>(parse.GetValue(attention), ignoreCase: true, out var kernel) && Enum.IsDefined(kernel)
                    ? kernel : throw new UsageException($"--attention: unknown kernel '{parse.GetValue(attention)}'; use auto, fused or blockwise."));
            if (parse.GetValue(memoryPoint) is { } point) return MeasureOnePoint(context, settings, point);
            if (parse.GetValue(predict)) return Predict(context, settings, parse.GetValue(json));
            string? csvPath = parse.GetValue(csv);
            string? plotDirectory = parse.GetValue(plots);
            return Run(context, settings, parse.GetValue(json), csvPath, plotDirectory);
        }));
        return command;
    }

    static int Run(CliContext context, Settings s, bool asJson, string? csvPath, string? plotDirectory)
    {
        var config = s.Shape.ToConfig();
        long kvPerToken = BenchmarkShape.KvBytesPerToken(config, s.DType);
        bool memoryMeasurable = EfficiencyBenchmark.MemoryMeasurable(s.Device);
        string samplerName = s.Sampler.Name;
        string where = s.Device.type == global::TorchSharp.DeviceType.CUDA ? s.Device.ToString() : "CPU";

        double peak = EfficiencyBenchmark.MatmulPeak(s.Device, s.DType);
        bool isolate = memoryMeasurable && s.IsolateMemory;
        // With the memory measured in processes of their own, this one builds its model after them: a GPU that holds one
        // copy of the weights need not hold two.
        var inProcessModel = isolate ? null : s.Model();
        long childWeights = isolate ? StepMemory.ParameterCount(config) * StepMemory.ElementSize(s.DType) : 0;
        if (!asJson)
        {
            context.Out.WriteLine($"Random LoRA model ({s.Shape.Describe()}), {TensorSettings.Name(s.DType)}, {where}; chunk {s.ChunkSize}, SpaCO t = {s.SampledChunks} ({samplerName} sampler); median of {s.Steps} timed step(s) after a warm-up.");
            context.Out.WriteLine($"Key/value cache: {kvPerToken:N0} bytes per token. Dense {TensorSettings.Name(s.DType)} matmul peak (2048 × 2048): {peak / 1e9:F1} GFLOP/s.");
            string? verdict = s.Attention == AttentionKernel.Blockwise ? null : FusedChunkAttention.Verdict(s.Device, s.DType);
            context.Out.WriteLine(s.Attention == AttentionKernel.Blockwise ? "Attention over a prefix: blockwise (C# online softmax)."
                : verdict is null ? "Attention over a prefix: libtorch's fused kernels."
                : $"Attention over a prefix: blockwise; the fused kernels do not serve {TensorSettings.Name(s.DType)} on {where}: {verdict}");
            context.Out.WriteLine(!memoryMeasurable ? "Memory: not measurable on this device; no memory guard, no budget."
                : s.Device.type == global::TorchSharp.DeviceType.CUDA ? "Memory: device memory libtorch's allocator reserves during a step (read through the CUDA driver)."
                : "Memory: peak resident memory of a step.");
        }

        // Pass 1, memory: every point before any timing, so that the allocator's history of the timed steps does not leak
        // into the figures (see EfficiencyBenchmark.Memory); the guard skips points that would not fit, and a point that
        // runs out of memory anyway ends its strategy's longer lengths.
        var grid = s.Lengths.SelectMany(length => s.Strategies.Where(strategy => !(strategy is "full" or "checkpoint" && length > s.BaselinesUpTo))
            .Select(strategy => (Length: length, Strategy: strategy))).ToList();
        var memory = new List<BenchmarkPoint>();
        var notAttempted = new Dictionary<(int, string), PointStatus>();
        if (memoryMeasurable)
        {
            foreach (var (length, strategy) in grid)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                double predicted = MemoryModel.Predict(Measured(memory, strategy), length, Estimator(strategy, config, s));
                long? peakBytes = null;
                if (notAttempted.Any(n => n.Key.Item2 == strategy && n.Value == PointStatus.RanOutOfMemory))
                    notAttempted[(length, strategy)] = PointStatus.Oom;
                else if (EfficiencyBenchmark.Available(s.Device) - childWeights is long available && predicted > GuardShare * available)
                {
                    notAttempted[(length, strategy)] = PointStatus.Oom;
                    if (!asJson) context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {strategy,-10} {length,7} tokens  predicted {MemoryModel.Format(predicted)} > {GuardShare:P0} of {MemoryModel.Format(available)} available: not attempted (OOM)"));
                }
                else
                {
                    var reading = isolate ? MemoryProcess.Measure(s.ChildArguments(), strategy, length, context.CancellationToken)
                        : MeasureMemory(inProcessModel!, s, strategy, length);
                    peakBytes = reading.PeakBytes;
                    if (reading.RanOutOfMemory) notAttempted[(length, strategy)] = PointStatus.RanOutOfMemory;
                    if (!asJson) context.Out.WriteLine(reading.RanOutOfMemory
                        ? string.Create(CultureInfo.InvariantCulture, $"  {strategy,-10} {length,7} tokens  ran out of memory (predicted {predicted / 1048576.0:F1} MiB)")
                        : string.Create(CultureInfo.InvariantCulture, $"  {strategy,-10} {length,7} tokens  memory {peakBytes / 1048576.0,8:F1} MiB (predicted {predicted / 1048576.0:F1} MiB{(isolate ? ", own process" : "")})"));
                }
                memory.Add(new BenchmarkPoint(strategy, length, 0, PointStatus.Measured, null, peakBytes, predicted, null, 0));
            }
        }

        // Pass 2, time: the median of the timed steps of every point that fits.
        using var model = inProcessModel ?? s.Model();
        var points = new List<BenchmarkPoint>();
        foreach (var (length, strategy) in grid)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            int chunks = (length + s.ChunkSize - 1) / s.ChunkSize;
            double flops = StepFlops.Of(strategy, config, EfficiencyBenchmark.Lora, length, s.ChunkSize, s.SampledChunks, s.Sampler);
            var memoryPoint = memory.FirstOrDefault(p => p.Length == length && p.Strategy == strategy);
            BenchmarkPoint point;
            if (notAttempted.TryGetValue((length, strategy), out var status))
                point = new BenchmarkPoint(strategy, length, chunks, status, null, null, memoryPoint?.PredictedBytes, null, flops);
            else if (points.Any(p => p.Strategy == strategy && p.Status == PointStatus.RanOutOfMemory && p.Length < length))
                point = new BenchmarkPoint(strategy, length, chunks, PointStatus.Oom, null, null, memoryPoint?.PredictedBytes, null, flops);
            else
            {
                try
                {
                    var timing = EfficiencyBenchmark.Time(model, strategy, length, s.Strategy, s.Steps, s.Phases);
                    point = new BenchmarkPoint(strategy, length, chunks, PointStatus.Measured, timing.SecondsPerStep, memoryPoint?.PeakBytes,
                        memoryPoint?.PredictedBytes, timing.Loss, flops, timing.Operations, timing.Phases);
                }
                catch (Exception e) when (EfficiencyBenchmark.IsOutOfMemory(e))
                {
                    // The step's scoped tensors went with its dispose scopes; its gradients and unscoped tensors go here.
                    EfficiencyBenchmark.ReleaseAfterOutOfMemory(model);
                    point = new BenchmarkPoint(strategy, length, chunks, PointStatus.RanOutOfMemory, null, null, memoryPoint?.PredictedBytes, null, flops);
                }
            }
            points.Add(point);
            Report(context, asJson, point, peak, config.NumHiddenLayers, point.Status switch
            {
                PointStatus.Oom => "  (not attempted: predicted out of memory, or a shorter length ran out)",
                PointStatus.RanOutOfMemory => "  (ran out of memory)",
                _ => "",
            });
        }

        var summaries = s.Strategies.Select(strategy =>
        {
            var measured = Measured(points, strategy);
            double? slope = MemoryModel.Slope(measured);
            var budget = s.Budget is long b && measured.Count > 0
                ? MemoryModel.LongestWithin(strategy, measured, b, s.ChunkSize, Estimator(strategy, config, s)) : null;
            return new StrategySummary(strategy, measured.Count, slope, slope / kvPerToken, budget);
        }).ToList();

        if (csvPath is not null) WriteCsv(csvPath, points, summaries, peak, kvPerToken, s.Budget, config.NumHiddenLayers);
        var plotFiles = plotDirectory is not null ? BenchmarkPlots.Write(plotDirectory, "bench-", points, s.Shape.Name)
            : csvPath is not null ? BenchmarkPlots.Write(Path.GetDirectoryName(Path.GetFullPath(csvPath))!, Path.GetFileNameWithoutExtension(csvPath) + "-", points, s.Shape.Name)
            : new List<string>();

        var targets = Targets(points, peak);
        if (s.Phases && !asJson) WritePhases(context, points);
        if (asJson)
        {
            context.Out.WriteLine(SummaryJson(s, points, summaries, targets, peak, kvPerToken, plotFiles).ToJsonString());
            return ExitCodes.Success;
        }
        WriteTables(context, s, points, summaries);
        foreach (var line in targets.Select(t => t.Text)) context.Out.WriteLine(line);
        foreach (var file in plotFiles) context.Out.WriteLine($"Wrote {file}");
        return ExitCodes.Success;
    }

    /// <summary>
    /// --predict: the memory model's prediction for a training run (the bench's LoRA adapters with AdamW state) of every
    /// strategy and length, term by term, and the longest length within --memory-budget; runs no step.
    /// </summary>
    static int Predict(CliContext context, Settings s, bool asJson)
    {
        var config = s.Shape.ToConfig();
        StepMemoryQuery Query(string strategy, long length) =>
            MemoryModel.Query(strategy, config, s.DType, length, s.ChunkSize, s.RecomputeLayers, s.Attention) with { OptimizerState = true, Cuda = s.Cuda };
        var rows = s.Lengths.SelectMany(length => s.Strategies.Select(strategy => (strategy, length, StepMemory.Predict(Query(strategy, length))))).ToList();
        var longest = s.Budget is long budget
            ? s.Strategies.ToDictionary(strategy => strategy, strategy => StepMemory.LongestWithin(Query(strategy, s.ChunkSize), budget, s.ChunkSize))
            : null;
        if (asJson)
        {
            foreach (var (strategy, length, e) in rows)
                context.Out.WriteLine(new JsonObject
                {
                    ["event"] = "prediction", ["strategy"] = strategy, ["length"] = length, ["total_bytes"] = e.Total, ["step_bytes"] = e.Step,
                    ["weights_bytes"] = e.Weights, ["adapters_bytes"] = e.Adapters, ["training_state_bytes"] = e.TrainingState,
                    ["cache_bytes"] = e.Cache, ["cache_gradient_bytes"] = e.CacheGradient, ["activations_bytes"] = e.Activations, ["head_bytes"] = e.Head,
                }.ToJsonString());
            if (longest is not null)
                context.Out.WriteLine(new JsonObject
                {
                    ["event"] = "budget", ["memory_budget_bytes"] = s.Budget,
                    ["longest_length_within_budget"] = new JsonObject(longest.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
                }.ToJsonString());
            return ExitCodes.Success;
        }
        context.Out.WriteLine($"Predicted peak device memory of a training run: {s.Shape.Describe()}, {TensorSettings.Name(s.DType)}, chunk {s.ChunkSize}"
            + $"{(s.RecomputeLayers ? ", layers recomputed" : "")}, LoRA r = {EfficiencyBenchmark.Lora.Rank} on {string.Join(", ", EfficiencyBenchmark.Lora.TargetModules)} with AdamW (nothing was run).");
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(context.Out), Ansi = AnsiSupport.No });
        console.Profile.Width = 160;
        var table = new Table().AddColumns("strategy", "length", "total", "weights", "adapters + state", "cache + gradient", "activations", "head");
        foreach (var (strategy, length, e) in rows)
            table.AddRow(strategy, length.ToString("N0", CultureInfo.InvariantCulture), MemoryModel.Format(e.Total), MemoryModel.Format(e.Weights),
                MemoryModel.Format(e.Adapters + e.TrainingState), MemoryModel.Format(e.Cache + e.CacheGradient), MemoryModel.Format(e.Activations), MemoryModel.Format(e.Head));
        console.Write(table);
        if (longest is not null)
            foreach (var (strategy, length) in longest)
                context.Out.WriteLine(length > 0
                    ? string.Create(CultureInfo.InvariantCulture, $"Longest length within {MemoryModel.Format(s.Budget!.Value)}: {strategy} {length:N0} tokens{(length >= MemoryModel.SearchLimit ? " (search limit)" : "")}.")
                    : $"Longest length within {MemoryModel.Format(s.Budget!.Value)}: {strategy} none (not even {s.ChunkSize} tokens fit).");
        return ExitCodes.Success;
    }

    /// <summary>One point's memory in this process; a step that runs out of memory is reported, not thrown.</summary>
    static MemoryProcess.Reading MeasureMemory(CausalLM model, Settings s, string strategy, int length)
    {
        try
        {
            return new(EfficiencyBenchmark.Memory(model, strategy, length, s.Strategy).PeakBytes, false);
        }
        catch (Exception e) when (EfficiencyBenchmark.IsOutOfMemory(e))
        {
            EfficiencyBenchmark.ReleaseAfterOutOfMemory(model);
            return new(null, RanOutOfMemory: true);
        }
    }

    /// <summary>The child's side of <see cref="MemoryProcess"/>: builds the model, measures the one point, prints one JSON line.</summary>
    static int MeasureOnePoint(CliContext context, Settings s, string point)
    {
        var parts = point.Split('@');
        if (parts.Length != 2 || !EfficiencyBenchmark.Strategies.Contains(parts[0])
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int length) || length < 2)
            throw new UsageException($"{MemoryProcess.PointOption}: '{point}' is not STRATEGY@LENGTH.");
        using var model = s.Model();
        var reading = MeasureMemory(model, s, parts[0], length);
        context.Out.WriteLine(MemoryProcess.Json(parts[0], length, reading.PeakBytes, reading.RanOutOfMemory).ToJsonString());
        return ExitCodes.Success;
    }

    static List<(int Length, long Bytes)> Measured(List<BenchmarkPoint> points, string strategy) =>
        points.Where(p => p.Strategy == strategy && p.PeakBytes is long b && b > 0).Select(p => (p.Length, p.PeakBytes!.Value)).ToList();

    static Func<long, double> Estimator(string strategy, ModelConfig config, Settings s) =>
        length => StepMemory.Predict(MemoryModel.Query(strategy, config, s.DType, length, s.ChunkSize, s.RecomputeLayers, s.Attention) with { Cuda = s.Cuda }).Step;

    static void Report(CliContext context, bool asJson, BenchmarkPoint p, double peak, int layers, string note)
    {
        if (asJson)
        {
            context.Out.WriteLine(PointJson(p, peak, layers).ToJsonString());
            return;
        }
        string time = p.SecondsPerStep is double t ? $"{t,9:F3} s/step" : "      – s/step";
        string memory = p.Status != PointStatus.Measured ? "      OOM" : p.PeakBytes is long b ? $"{b / 1048576.0,8:F1} MiB" : "      n/a";
        string rate = p.FlopsPerSecond is double f ? $"{f / 1e9,7:F2} GFLOP/s ({f / peak,6:P1} of peak)" : "";
        string operations = p.Operations is long n ? string.Create(CultureInfo.InvariantCulture, $"  {n,9:N0} ops ({p.OperationsPerChunkLayer(layers),5:F0} per chunk-layer)") : "";
        context.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {p.Strategy,-10} {p.Length,7} tokens {p.Chunks,5} chunks {time}  {memory}  {rate}{operations}{note}"));
    }

    static JsonObject PointJson(BenchmarkPoint p, double peak, int layers) => new()
    {
        ["event"] = "point", ["strategy"] = p.Strategy, ["length"] = p.Length, ["chunks"] = p.Chunks, ["status"] = p.StatusName,
        ["seconds_per_step"] = p.SecondsPerStep, ["peak_bytes"] = p.PeakBytes, ["predicted_peak_bytes"] = p.PredictedBytes, ["loss"] = p.Loss,
        ["model_flops"] = p.ModelFlops, ["flops_per_second"] = p.FlopsPerSecond, ["fraction_of_matmul_peak"] = p.FlopsPerSecond / peak,
        ["operations"] = p.Operations, ["operations_per_chunk_layer"] = p.OperationsPerChunkLayer(layers),
        ["phases"] = p.Phases is { } phases ? new JsonObject(phases.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))) : null,
    };

    /// <summary>--phases: where each chunk-wise step's time went, in seconds and as shares of the phased step.</summary>
    static void WritePhases(CliContext context, List<BenchmarkPoint> points)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(context.Out), Ansi = AnsiSupport.No });
        console.Profile.Width = 160;
        string[] names = { StepPhases.Stage1, StepPhases.Stage2Forward, StepPhases.Stage2Backward, StepPhases.AttentionForward, StepPhases.AttentionBackward };
        var table = new Table().AddColumns(new[] { "strategy", "length", "step (phased)" }.Concat(names.Select(n => n + " (s, share)")).ToArray());
        foreach (var p in points.Where(p => p.Phases is not null))
        {
            double step = p.Phases!.GetValueOrDefault("step");
            table.AddRow(new[] { p.Strategy, p.Length.ToString(CultureInfo.InvariantCulture), step.ToString("F3", CultureInfo.InvariantCulture) }
                .Concat(names.Select(n => p.Phases!.TryGetValue(n, out double v)
                    ? string.Create(CultureInfo.InvariantCulture, $"{v:F3} ({v / step:P0})") : "–")).ToArray());
        }
        context.Out.WriteLine("Phases (one more step, a device synchronisation at every boundary; attention is part of the stage it ran in):");
        console.Write(table);
    }

    static double? Ratio(double? a, double? b) => a is double x && b is double y && y > 0 ? x / y : null;

    static BenchmarkPoint? Get(List<BenchmarkPoint> points, string strategy, int length) =>
        points.FirstOrDefault(p => p.Strategy == strategy && p.Length == length && p.Status == PointStatus.Measured);

    /// <summary>
    /// The issue's targets, as ratios measured in this run: SpaCO against chunked inference at the longest length with at
    /// least 64 chunks, SeCO against plain training at the longest length where plain training was measured, and the
    /// achieved FLOP/s of SeCO's longest step against the matmul peak.
    /// </summary>
    static List<(string Name, JsonObject Json, string Text)> Targets(List<BenchmarkPoint> points, double peak)
    {
        var targets = new List<(string, JsonObject, string)>();
        var spaco = points.Where(p => p.Strategy == "spaco" && p.Status == PointStatus.Measured && p.Chunks >= TargetChunks && Get(points, "inference", p.Length) is not null)
            .MaxBy(p => p.Length);
        if (spaco is not null && Ratio(spaco.SecondsPerStep, Get(points, "inference", spaco.Length)!.SecondsPerStep) is double r1)
            targets.Add(("spaco_over_inference", new JsonObject { ["length"] = spaco.Length, ["chunks"] = spaco.Chunks, ["ratio"] = r1, ["target"] = TargetRatio },
                string.Create(CultureInfo.InvariantCulture, $"Target SpaCO / inference ≤ {TargetRatio} at k ≥ {TargetChunks} chunks: {r1:F2} at {spaco.Length} tokens ({spaco.Chunks} chunks).")));
        else
            targets.Add(("spaco_over_inference", new JsonObject { ["ratio"] = null, ["target"] = TargetRatio },
                $"Target SpaCO / inference ≤ {TargetRatio} at k ≥ {TargetChunks} chunks: not measured (no length with {TargetChunks} chunks or more)."));
        var full = points.Where(p => p.Strategy == "full" && p.Status == PointStatus.Measured && Get(points, "seco", p.Length) is not null).MaxBy(p => p.Length);
        if (full is not null && Ratio(Get(points, "seco", full.Length)!.SecondsPerStep, full.SecondsPerStep) is double r2)
            targets.Add(("seco_over_full", new JsonObject { ["length"] = full.Length, ["ratio"] = r2, ["target"] = TargetRatio },
                string.Create(CultureInfo.InvariantCulture, $"Target SeCO / full ≤ {TargetRatio} at the longest length plain training was measured: {r2:F2} at {full.Length} tokens.")));
        else
            targets.Add(("seco_over_full", new JsonObject { ["ratio"] = null, ["target"] = TargetRatio }, "Target SeCO / full: not measured (no length with both)."));
        foreach (var (name, strategy, baseline, target) in new[] { ("seco_over_full_operations", "seco", "full", SecoOperationsTarget), ("spaco_over_full_operations", "spaco", "full", SpacoOperationsTarget),
            ("inference_over_full_operations", "inference", "full", InferenceOperationsTarget) })
        {
            var at = points.Where(p => p.Strategy == baseline && p.Operations is not null && Get(points, strategy, p.Length)?.Operations is not null).MaxBy(p => p.Length);
            if (at is null || Ratio(Get(points, strategy, at.Length)!.Operations, at.Operations) is not double r) continue;
            targets.Add((name, new JsonObject { ["length"] = at.Length, ["ratio"] = r, ["target"] = target },
                string.Create(CultureInfo.InvariantCulture, $"Target {strategy} / {baseline} operations dispatched ≤ {target}: {r:F1} at {at.Length} tokens ({Get(points, strategy, at.Length)!.Operations:N0} / {at.Operations:N0}).")));
        }
        var seco = points.Where(p => p.Strategy == "seco" && p.FlopsPerSecond is not null).MaxBy(p => p.Length);
        if (seco is not null)
            targets.Add(("seco_flops", new JsonObject { ["length"] = seco.Length, ["flops_per_second"] = seco.FlopsPerSecond, ["matmul_peak_flops_per_second"] = peak, ["fraction"] = seco.FlopsPerSecond / peak },
                string.Create(CultureInfo.InvariantCulture, $"SeCO at {seco.Length} tokens: {seco.FlopsPerSecond / 1e9:F2} model GFLOP/s = {seco.FlopsPerSecond / peak:P1} of the measured matmul peak ({peak / 1e9:F1} GFLOP/s).")));
        return targets;
    }

    static void WriteTables(CliContext context, Settings s, List<BenchmarkPoint> points, List<StrategySummary> summaries)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(context.Out), Ansi = AnsiSupport.No });
        console.Profile.Width = 160; // redirected output has no terminal width; the default 80 would wrap every header
        string F(double? v) => v is double x ? x.ToString("F2", CultureInfo.InvariantCulture) : "–";
        var ratios = new Table().AddColumns("length", "chunks", "SeCO / full (time)", "SpaCO / SeCO (time)", "SpaCO / inference (time)", "checkpoint / SeCO (memory)", "full / SeCO (memory)",
            "SeCO / full (ops)", "SpaCO / inference (ops)");
        foreach (int length in s.Lengths)
        {
            double? T(string strategy) => Get(points, strategy, length)?.SecondsPerStep;
            double? M(string strategy) => Get(points, strategy, length)?.PeakBytes;
            double? O(string strategy) => Get(points, strategy, length)?.Operations;
            ratios.AddRow(length.ToString(CultureInfo.InvariantCulture), ((length + s.ChunkSize - 1) / s.ChunkSize).ToString(CultureInfo.InvariantCulture),
                F(Ratio(T("seco"), T("full"))), F(Ratio(T("spaco"), T("seco"))), F(Ratio(T("spaco"), T("inference"))),
                F(Ratio(M("checkpoint"), M("seco"))), F(Ratio(M("full"), M("seco"))), F(Ratio(O("seco"), O("full"))), F(Ratio(O("spaco"), O("inference"))));
        }
        console.Write(ratios);

        var columns = new List<string> { "strategy", "points", "memory slope (bytes/token)", "slope ÷ KV bytes/token" };
        if (s.Budget is long b) columns.Add($"longest length within {MemoryModel.Format(b)}");
        var summary = new Table().AddColumns(columns.ToArray());
        foreach (var row in summaries)
        {
            var cells = new List<string>
            {
                row.Strategy, row.Measured.ToString(CultureInfo.InvariantCulture),
                row.SlopeBytesPerToken is double slope ? slope.ToString("N0", CultureInfo.InvariantCulture) : "–", F(row.SlopeOverKv),
            };
            if (s.Budget is not null) cells.Add(BudgetText(row.Budget));
            summary.AddRow(cells.Select(Markup.Escape).ToArray());
        }
        console.Write(summary);
    }

    static string BudgetText(BudgetResult? r) => r switch
    {
        null => "–",
        { Length: null } => "none (shortest measured is over)",
        { AtSearchLimit: true } => $"≥ {r.Length:N0} (extrapolated; search limit)",
        _ => string.Create(CultureInfo.InvariantCulture, $"{r.Length:N0} ({r.Basis.ToString().ToLowerInvariant()})"),
    };

    static JsonObject SummaryJson(Settings s, List<BenchmarkPoint> points, List<StrategySummary> summaries, List<(string Name, JsonObject Json, string Text)> targets,
        double peak, long kvPerToken, List<string> plotFiles)
    {
        var targetJson = new JsonObject();
        foreach (var (name, json, _) in targets) targetJson[name] = json;
        return new JsonObject
        {
            ["event"] = "summary",
            ["points"] = points.Count(p => p.Status == PointStatus.Measured),
            ["oom"] = points.Count(p => p.Status != PointStatus.Measured),
            ["shape"] = new JsonObject
            {
                ["name"] = s.Shape.Name, ["model_type"] = s.Shape.ModelType, ["layers"] = s.Shape.Layers, ["hidden_size"] = s.Shape.Hidden,
                ["intermediate_size"] = s.Shape.Intermediate, ["heads"] = s.Shape.Heads, ["kv_heads"] = s.Shape.KvHeads, ["head_dim"] = s.Shape.HeadDim,
                ["vocab"] = s.Shape.Vocab, ["tied_embeddings"] = s.Shape.TiedEmbeddings, ["qkv_bias"] = s.Shape.QkvBias,
            },
            ["dtype"] = TensorSettings.Name(s.DType), ["device"] = s.Device.ToString(), ["chunk_size"] = s.ChunkSize, ["sampled_chunks"] = s.SampledChunks,
            ["attention"] = s.Attention.ToString().ToLowerInvariant(),
            ["fused_attention_verdict"] = s.Attention == AttentionKernel.Blockwise ? null : FusedChunkAttention.Verdict(s.Device, s.DType) ?? "serves",
            ["sampler"] = s.Sampler.Name, ["steps"] = s.Steps,
            ["kv_bytes_per_token"] = kvPerToken, ["matmul_peak_flops_per_second"] = peak, ["memory_budget_bytes"] = s.Budget,
            ["strategies"] = new JsonArray(summaries.Select(r => (JsonNode)new JsonObject
            {
                ["strategy"] = r.Strategy, ["measured_points"] = r.Measured, ["memory_slope_bytes_per_token"] = r.SlopeBytesPerToken,
                ["memory_slope_over_kv_bytes_per_token"] = r.SlopeOverKv, ["longest_length_within_budget"] = r.Budget?.Length,
                ["budget_basis"] = r.Budget is null ? null : r.Budget.AtSearchLimit ? "search-limit" : r.Budget.Basis.ToString().ToLowerInvariant(),
            }).ToArray()),
            ["targets"] = targetJson,
            ["plots"] = new JsonArray(plotFiles.Select(f => (JsonNode)JsonValue.Create(f)).ToArray()),
        };
    }

    static void WriteCsv(string path, List<BenchmarkPoint> points, List<StrategySummary> summaries, double peak, long kvPerToken, long? budget, int layers)
    {
        static string N(double? v) => v is double x ? x.ToString("R", CultureInfo.InvariantCulture) : "";
        string[] phases = { StepPhases.Stage1, StepPhases.Stage2Forward, StepPhases.Stage2Backward, StepPhases.AttentionForward, StepPhases.AttentionBackward, "step" };
        File.WriteAllLines(path, points.Select(p => string.Join(',', new[] { p.Strategy, p.Length.ToString(CultureInfo.InvariantCulture),
                p.Chunks.ToString(CultureInfo.InvariantCulture), p.StatusName, N(p.SecondsPerStep), N(p.PeakBytes), N(p.PredictedBytes), N(p.Loss),
                N(p.ModelFlops), N(p.FlopsPerSecond), N(p.FlopsPerSecond / peak), N(p.Operations), N(p.OperationsPerChunkLayer(layers)) }
                .Concat(phases.Select(name => p.Phases is { } ph && ph.TryGetValue(name, out double v) ? N(v) : ""))))
            .Prepend("strategy,length,chunks,status,seconds_per_step,peak_bytes,predicted_peak_bytes,loss,model_flops,flops_per_second,fraction_of_matmul_peak,operations,operations_per_chunk_layer,"
                + string.Join(',', phases.Select(name => "phase_" + name + "_seconds"))));
        File.WriteAllLines(SummaryPath(path), summaries.Select(r => string.Join(',', r.Strategy, r.Measured.ToString(CultureInfo.InvariantCulture),
                N(r.SlopeBytesPerToken), kvPerToken.ToString(CultureInfo.InvariantCulture), N(r.SlopeOverKv), N(budget), N(r.Budget?.Length),
                r.Budget is null ? "" : r.Budget.AtSearchLimit ? "search-limit" : r.Budget.Basis.ToString().ToLowerInvariant(), N(peak)))
            .Prepend("strategy,measured_points,memory_slope_bytes_per_token,kv_bytes_per_token,memory_slope_over_kv_bytes_per_token,memory_budget_bytes,longest_length_within_budget,budget_basis,matmul_peak_flops_per_second"));
    }

    /// <summary>NAME-summary.csv beside NAME.csv.</summary>
    public static string SummaryPath(string csvPath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(csvPath))!, Path.GetFileNameWithoutExtension(csvPath) + "-summary.csv");

    static string[] ParseList(string value, string option)
    {
        var items = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return items.Length > 0 ? items : throw new UsageException($"{option} needs at least one value.");
    }
}
