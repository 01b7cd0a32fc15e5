using System.Diagnostics;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using TorchSharp;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Baselines;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>What happened to a (strategy, length) point.</summary>
internal enum PointStatus
{
    /// <summary>Run and measured.</summary>
    Measured,
    /// <summary>Not attempted: its predicted peak exceeds the memory available (out of memory).</summary>
    Oom,
    /// <summary>
    /// Attempted, and the allocator ran out of memory (CUDA, where nothing predicts a point, or a CPU prediction that
    /// was too low); longer lengths of the strategy are then not attempted.
    /// </summary>
    RanOutOfMemory,
}

/// <summary>How the chunk-wise strategies run: chunk size, SpaCO's budget and sampler, and recompute inside a chunk.</summary>
internal sealed record StrategySettings(int ChunkSize, int SampledChunks, IChunkSampler Sampler, bool RecomputeLayers);

/// <summary>One (strategy, length) point of the study.</summary>
/// <param name="Strategy">full, checkpoint, seco, spaco or inference.</param>
/// <param name="Length">Tokens in the sequence.</param>
/// <param name="Chunks">Chunks of the chunk size in the sequence (k).</param>
/// <param name="Status">Measured, or why it was not attempted.</param>
/// <param name="SecondsPerStep">Median wall time of the timed steps; null when not measured.</param>
/// <param name="PeakBytes">Peak memory of one step above the level before it; null when not measured or not measurable.</param>
/// <param name="PredictedBytes">The memory guard's prediction made before the point (null where memory is not measurable).</param>
/// <param name="Loss">The step's loss, the same for every strategy at a length (a cross-check); null when not measured.</param>
/// <param name="ModelFlops">Analytic model FLOPs of the step (<see cref="StepFlops"/>).</param>
/// <param name="Operations">libtorch calls made from .NET by one step (<see cref="OperationCount"/>); null when not measured.</param>
/// <param name="Phases">Seconds per phase of one step timed by phases (<see cref="StepPhases"/>); null when not asked for or not chunk-wise.</param>
internal sealed record BenchmarkPoint(string Strategy, int Length, int Chunks, PointStatus Status, double? SecondsPerStep, long? PeakBytes,
    double? PredictedBytes, double? Loss, double ModelFlops, long? Operations = null, IReadOnlyDictionary<string, double>? Phases = null)
{
    /// <summary>Operations per chunk and layer: <see cref="Operations"/> over chunks × layers (a whole-sequence step counts its chunks too).</summary>
    public double? OperationsPerChunkLayer(int layers) => Operations is long n && Chunks > 0 ? (double)n / ((long)Chunks * layers) : null;

    /// <summary>Achieved model FLOP/s, or null when not measured.</summary>
    public double? FlopsPerSecond => SecondsPerStep is double s && s > 0 ? ModelFlops / s : null;

    /// <summary>The status as the CSV and JSON spell it.</summary>
    public string StatusName => Status == PointStatus.Measured ? "measured" : "oom";
}

/// <summary>
/// The paper's efficiency study on a random model built in memory: time per training step and peak memory of plain
/// training, layer checkpointing, SeCO and SpaCO, and of a chunked inference pass, at growing sequence lengths, every
/// point in one process and one run. Memory is one step's peak above the level before it: on the CPU the process's
/// resident set (<see cref="ResidentMemory"/>, Linux with glibc), on CUDA the device memory libtorch's caching
/// allocator holds (<see cref="DeviceMemory"/>); elsewhere it is not reported.
/// </summary>
internal static class EfficiencyBenchmark
{
    public static readonly string[] Strategies = { "full", "checkpoint", "seco", "spaco", "inference" };

    /// <summary>The LoRA adapters every benchmark model carries (PEFT's defaults: r = 8 on q, k, v, o).</summary>
    public static readonly LoraConfig Lora = new() { Rank = 8, Alpha = 16 };

    public static CausalLM Model(ModelConfig config, ScalarType dtype, Device device, AttentionOptions? attention = null)
    {
        var model = new CausalLM(config, dtype, device) { Attention = attention ?? AttentionOptions.Default };
        model.InitializeRandom(0, std: 1 / Math.Sqrt(config.HiddenSize));
        manual_seed(0);
        LoraAdapters.Attach(model, Lora);
        return model;
    }

    /// <summary>True where <see cref="Memory"/> reports memory: the CPU on Linux, and CUDA devices whose driver answers.</summary>
    public static bool MemoryMeasurable(Device device) => device.type switch
    {
        DeviceType.CPU => OperatingSystem.IsLinux(),
        DeviceType.CUDA => DeviceMemory.InUse(device) is not null,
        _ => false,
    };

    /// <summary>Memory a step may still take: MemAvailable on the CPU, the device's free memory (cached blocks released) on CUDA; null where unknown.</summary>
    public static long? Available(Device device) => device.type == DeviceType.CUDA
        ? DeviceMemory.Settle(device) is not null ? DeviceMemory.Free(device) : null
        : ResidentMemory.Available();

    /// <summary>
    /// Peak memory of one step above the settled level before it, after a warm-up step (first-use costs such as
    /// cuBLAS's workspace stay out). On the CPU every allocation over 16 KB gets its own mapping, so that resident
    /// memory follows live tensors; call it for every point before any <see cref="Time"/>: timing lets glibc's heap grow
    /// with blocks of up to 32 MB, and small allocations scattered over that trimmed heap afterwards fault in a page
    /// each, which inflated the memory of later points (a SeCO slope read 7.6× the cache instead of 1.8× on the gqa
    /// shape). On CUDA the cached blocks are handed back before the step, so that the allocator's high-water mark after
    /// it is this step's alone; only in a process that ran nothing larger before (<see cref="MemoryProcess"/>).
    /// </summary>
    public static (long? PeakBytes, double Loss) Memory(CausalLM model, string strategy, int length, StrategySettings settings)
    {
        using var point = new Point(model, strategy, length, settings);
        var device = model.Device;
        bool cuda = device.type == DeviceType.CUDA;
        if (!cuda) ResidentMemory.TrackLargeAllocations(true);
        point.Run();
        long? before = cuda ? DeviceMemory.Settle(device) : ResidentMemory.Settle();
        double loss = point.Run();
        return (cuda ? DeviceMemory.PeakAbove(device, before) : ResidentMemory.PeakAbove(before), loss);
    }

    /// <summary>One point's timing: the median step, its loss, the operations one step dispatches, and its phases when asked for.</summary>
    public sealed record Timing(double SecondsPerStep, double Loss, long Operations, IReadOnlyDictionary<string, double>? Phases);

    /// <summary>
    /// Median wall time of <paramref name="steps"/> steps after a warm-up, with glibc's heap reuse (as a user's process
    /// runs), and the operations each dispatches (the same count every step). With <paramref name="phases"/>, a
    /// chunk-wise strategy runs one more step timed by phases.
    /// </summary>
    public static Timing Time(CausalLM model, string strategy, int length, StrategySettings settings, int steps, bool phases = false)
    {
        using var point = new Point(model, strategy, length, settings);
        if (model.Device.type == DeviceType.CPU) ResidentMemory.TrackLargeAllocations(false);
        point.Run();
        var times = new List<double>();
        double loss = 0;
        long operations = 0;
        for (int i = 0; i < steps; i++)
        {
            var clock = Stopwatch.StartNew();
            operations = OperationCount.Of(() => loss = point.Run());
            times.Add(clock.Elapsed.TotalSeconds);
        }
        times.Sort();
        double median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
        return new Timing(median, loss, operations, phases ? point.Phases() : null);
    }

    /// <summary>One (strategy, length) point: a random sequence and the step that trains (or scores) it.</summary>
    sealed class Point : IDisposable
    {
        readonly TokenBatch _batch;
        readonly Func<double> _step;
        readonly Device _device;
        readonly ChunkwiseStep? _chunkwise;

        public Point(CausalLM model, string strategy, int length, StrategySettings settings)
        {
            var (chunkSize, sampledChunks, sampler, recompute) = settings;
            var random = new Random(length);
            var ids = Enumerable.Range(0, length).Select(_ => random.Next(model.Config.VocabSize)).ToArray();
            _batch = TokenBatch.FromSequences(new[] { ids }, null, 0, model.Device);
            _device = model.Device;
            var batch = _batch;
            _chunkwise = strategy switch
            {
                "seco" => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = chunkSize, RecomputeLayers = recompute }),
                "spaco" => new ChunkwiseStep(new ChunkwiseOptions
                {
                    ChunkSize = chunkSize, SampledChunks = sampledChunks, CustomSampler = sampler, Seed = 1, RecomputeLayers = recompute,
                }),
                _ => null,
            };
            _step = strategy switch
            {
                "full" => Step(model, batch, new FullBackprop()),
                "checkpoint" => Step(model, batch, new LayerCheckpointing()),
                "seco" or "spaco" => Step(model, batch, _chunkwise!),
                "inference" => () =>
                {
                    // In the blocks SeCO's Stage 1 runs in: SpaCO's forward over its unsampled chunks is this same pass.
                    var (sum, tokens) = Evaluation.MeanNll(model, batch, new ChunkwiseOptions { ChunkSize = chunkSize, RecomputeLayers = recompute }.Stage1BlockSize(model.Config.NumHiddenLayers,
                        FusedChunkAttention.ServesModel(model, length)));
                    return sum / tokens;
                },
                _ => throw new UsageException($"--strategies: unknown strategy '{strategy}'; use {string.Join(", ", Strategies)}."),
            };
        }

        /// <summary>One step, finished on the device; returns its loss.</summary>
        public double Run()
        {
            double value = _step();
            Synchronize(_device);
            return value;
        }

        /// <summary>One more step timed by phases, with its total under "step"; null for a strategy that is not chunk-wise.</summary>
        public IReadOnlyDictionary<string, double>? Phases()
        {
            if (_chunkwise is null) return null;
            var phases = new StepPhases(_device);
            _chunkwise.Phases = phases;
            try
            {
                var clock = Stopwatch.StartNew();
                Run();
                var seconds = new Dictionary<string, double>(phases.Seconds) { ["step"] = clock.Elapsed.TotalSeconds };
                return seconds;
            }
            finally
            {
                _chunkwise.Phases = null;
            }
        }

        public void Dispose() => _batch.Dispose();
    }

    /// <summary>
    /// The best FLOP/s of a dense n × n matrix product in the model's dtype on its device (one warm-up, then the fastest
    /// of five): the peak the step's achieved FLOP/s are compared with.
    /// </summary>
    public static double MatmulPeak(Device device, ScalarType dtype, int n = 2048)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = randn(n, n, dtype: dtype, device: device);
        var b = randn(n, n, dtype: dtype, device: device);
        a.matmul(b).Dispose();
        Synchronize(device);
        double best = double.PositiveInfinity;
        for (int i = 0; i < 5; i++)
        {
            var clock = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            Synchronize(device);
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * n / best;
    }

    /// <summary>Whether libtorch's error is an allocator running out of memory.</summary>
    public static bool IsOutOfMemory(Exception e) => MemoryPreflight.IsOutOfMemory(e) || e is InsufficientDeviceMemoryException;

    /// <summary>
    /// After a step ran out of memory: drops the gradients it left and lets the collector finalize the tensors no dispose
    /// scope owned, so that the next point starts from the memory the model alone holds.
    /// </summary>
    public static void ReleaseAfterOutOfMemory(CausalLM model)
    {
        model.zero_grad();
        GC.Collect();
        GC.WaitForPendingFinalizers();
    }

    // CUDA kernels run asynchronously: a clock read without waiting for them times the launch, not the work.
    static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    static Func<double> Step(CausalLM model, TokenBatch batch, ITrainingStep step) => () =>
    {
        double loss = step.Run(model, batch).Loss;
        model.zero_grad();
        return loss;
    };
}
