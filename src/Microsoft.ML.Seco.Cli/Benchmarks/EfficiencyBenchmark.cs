using System.Diagnostics;
using System.Text.RegularExpressions;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>One measured (strategy, length) point.</summary>
/// <param name="Strategy">full, checkpoint, seco, spaco or inference.</param>
/// <param name="Length">Tokens in the sequence.</param>
/// <param name="SecondsPerStep">Median wall time of the timed steps.</param>
/// <param name="PeakBytes">Peak resident memory above the level before the steps (Linux only; null elsewhere).</param>
/// <param name="Loss">The step's loss, the same for every strategy at a length (a cross-check).</param>
internal sealed record BenchmarkPoint(string Strategy, int Length, double SecondsPerStep, long? PeakBytes, double Loss);

/// <summary>
/// The paper's efficiency study on a random model built in memory: time per training step and peak memory of plain
/// training, layer checkpointing, SeCO and SpaCO, and of a chunked inference pass, at growing sequence lengths.
/// Memory is the process's peak resident set during one step above its level before it, read from /proc/self/status
/// after returning freed memory (malloc_trim) and resetting the peak (/proc/self/clear_refs), so every point is
/// measured in one process and one run (Linux with glibc; elsewhere memory is not reported).
/// </summary>
internal static class EfficiencyBenchmark
{
    public static readonly string[] Strategies = { "full", "checkpoint", "seco", "spaco", "inference" };

    public static CausalLM Model(int layers, int hidden, int heads, int kvHeads, int vocab, ScalarType dtype)
    {
        var config = new ModelConfig
        {
            ModelType = "llama", VocabSize = vocab, HiddenSize = hidden, IntermediateSize = hidden * 8 / 3,
            NumHiddenLayers = layers, NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, HeadDim = hidden / heads,
            RopeTheta = 500000, MaxPositionEmbeddings = 1 << 20,
        };
        var model = new CausalLM(config, dtype, CPU);
        model.InitializeRandom(0, std: 1 / Math.Sqrt(hidden));
        manual_seed(0);
        model.AttachLora(new LoraConfig { Rank = 8, Alpha = 16 });
        return model;
    }

    public static BenchmarkPoint Measure(CausalLM model, string strategy, int length, int chunkSize, int sampledChunks, int steps)
    {
        var random = new Random(length);
        var ids = Enumerable.Range(0, length).Select(_ => random.Next(model.Config.VocabSize)).ToArray();
        using var batch = TokenBatch.FromSequences(new[] { ids }, null, 0, model.Device);
        Func<double> run = strategy switch
        {
            "full" => Step(model, batch, new FullBackprop()),
            "checkpoint" => Step(model, batch, new LayerCheckpointing()),
            "seco" => Step(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = chunkSize })),
            "spaco" => Step(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = chunkSize, SampledChunks = sampledChunks, Sampler = ChunkSampler.Bernoulli, Seed = 1 })),
            "inference" => () =>
            {
                var (sum, tokens) = Evaluation.MeanNll(model, batch, chunkSize);
                return sum / tokens;
            },
            _ => throw new UsageException($"--strategies: unknown strategy '{strategy}'; use {string.Join(", ", Strategies)}."),
        };
        // Time with glibc's heap reuse (its threshold as it settles after large frees), memory with every tensor over
        // 128 KB in its own mapping: then resident memory follows live tensors, and the peak above the level before
        // the step is what the strategy holds rather than the allocator's history. The two need different settings.
        MallOpt(MmapThreshold, 32 << 20);
        run(); // warm-up: first-use costs stay out of the figures
        var times = new List<double>();
        double loss = 0;
        for (int i = 0; i < steps; i++)
        {
            var clock = Stopwatch.StartNew();
            loss = run();
            times.Add(clock.Elapsed.TotalSeconds);
        }
        times.Sort();

        MallOpt(MmapThreshold, 128 << 10);
        long? before = Settle();
        run();
        long? peak = Resident("VmHWM") is long hwm && before is long b ? Math.Max(0, hwm - b) : null;
        return new BenchmarkPoint(strategy, length, times[times.Count / 2], peak, loss);
    }

    static Func<double> Step(CausalLM model, TokenBatch batch, ITrainingStep step) => () =>
    {
        double loss = step.Run(model, batch).Loss;
        model.zero_grad();
        return loss;
    };

    /// <summary>
    /// Returns freed memory to the system and starts a new peak, so that the next step's peak above the returned
    /// resident level is what the step itself needed. Null where /proc is not available (memory is then not reported).
    /// </summary>
    static long? Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        // glibc keeps freed blocks in its heap; without the trim, a step reuses memory an earlier one freed and its
        // growth above the "before" level understates what it needs.
        if (OperatingSystem.IsLinux()) _ = MallocTrim(0);
        // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0).
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DirectoryNotFoundException or FileNotFoundException) { return null; }
        return Resident("VmRSS");
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    const int MmapThreshold = -3; // M_MMAP_THRESHOLD

    static void MallOpt(int parameter, int value)
    {
        if (OperatingSystem.IsLinux()) _ = NativeMallOpt(parameter, value);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mallopt")]
    static extern int NativeMallOpt(int parameter, int value);

    static long? Resident(string field)
    {
        try
        {
            var match = Regex.Match(File.ReadAllText("/proc/self/status"), field + @":\s+(\d+) kB");
            return match.Success ? long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * 1024 : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DirectoryNotFoundException or FileNotFoundException)
        {
            return null;
        }
    }
}
