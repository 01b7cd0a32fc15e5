using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>How a longest-length-within-budget figure was obtained.</summary>
internal enum BudgetBasis
{
    /// <summary>A measured point fits and the next measured one does not, and nothing between them was predicted to fit.</summary>
    Measured,
    /// <summary>Between a measured point that fits and a longer measured one that does not, from the fitted model.</summary>
    Interpolated,
    /// <summary>Beyond the longest measured point, from the fitted model.</summary>
    Extrapolated,
    /// <summary>Even the shortest measured point needs more than the budget.</summary>
    None,
}

/// <summary>The longest length a strategy trains within a memory budget.</summary>
internal sealed record BudgetResult(string Strategy, long? Length, BudgetBasis Basis, bool AtSearchLimit);

/// <summary>
/// Peak step memory as a function of length, for the memory guard (predict a point before attempting it) and for
/// --memory-budget (the longest length within a budget). With two or more measured points the prediction is the power
/// law m = a·L^p through the two measured points nearest to L (bracketing it when it lies between them), p clamped to
/// [1, 2]: no strategy here grows slower than its cache (linear) or faster than its score matrices (quadratic), and at
/// short lengths fixed costs make the fitted exponent small. With one point, that point scaled by the analytic
/// estimate; with none, the analytic estimate (<see cref="StepMemory"/>) with a quarter's margin.
/// </summary>
internal static class MemoryModel
{
    /// <summary>Searches for the longest length stop here (4M tokens).</summary>
    public const long SearchLimit = 1L << 22;

    /// <summary>The library's strategy for a bench strategy name.</summary>
    public static MemoryStrategy StrategyOf(string strategy) => strategy switch
    {
        "full" => MemoryStrategy.FullBackprop,
        "checkpoint" => MemoryStrategy.LayerCheckpointing,
        "seco" => MemoryStrategy.Seco,
        "spaco" => MemoryStrategy.Spaco,
        "inference" => MemoryStrategy.Inference,
        _ => throw new ArgumentException($"Unknown strategy '{strategy}'.", nameof(strategy)),
    };

    /// <summary>The bench's step as a <see cref="StepMemoryQuery"/>: its LoRA adapters, batch 1, no optimizer.</summary>
    public static StepMemoryQuery Query(string strategy, ModelConfig c, ScalarType dtype, long length, int chunkSize, bool recomputeLayers,
        AttentionKernel attention = AttentionKernel.Auto) => new()
    {
        Config = c, DType = dtype, Strategy = StrategyOf(strategy), Length = length, ChunkSize = chunkSize, RecomputeLayers = recomputeLayers,
        Lora = EfficiencyBenchmark.Lora, OptimizerState = false, Attention = attention,
    };

    /// <summary>Predicted peak bytes at <paramref name="length"/> from the measured (length, bytes) points of one strategy.</summary>
    public static double Predict(IReadOnlyList<(int Length, long Bytes)> measured, long length, Func<long, double> estimate)
    {
        var points = measured.Where(p => p.Bytes > 0).OrderBy(p => p.Length).ToArray();
        // The analytic model is checked to 15 % on measured points (docs/BENCHMARKS.md, Memory model); a quarter more keeps
        // the guard from attempting a first point that cannot fit.
        if (points.Length == 0) return 1.25 * estimate(length);
        if (points.Length == 1) return points[0].Bytes * estimate(length) / estimate(points[0].Length);
        int i = 0;
        while (i + 2 < points.Length && points[i + 1].Length <= length) i++;
        var (l1, m1) = points[i];
        var (l2, m2) = points[i + 1];
        double p = Math.Clamp(Math.Log((double)m2 / m1) / Math.Log((double)l2 / l1), 1, 2);
        return m2 * Math.Pow((double)length / l2, p);
    }

    /// <summary>
    /// Least-squares slope of peak bytes against length over the measured points (bytes per token), or null with fewer
    /// than two distinct lengths.
    /// </summary>
    public static double? Slope(IReadOnlyList<(int Length, long Bytes)> measured)
    {
        if (measured.Select(p => p.Length).Distinct().Count() < 2) return null;
        double mx = measured.Average(p => (double)p.Length), my = measured.Average(p => (double)p.Bytes);
        double sxy = measured.Sum(p => (p.Length - mx) * (p.Bytes - my)), sxx = measured.Sum(p => (p.Length - mx) * (p.Length - mx));
        return sxy / sxx;
    }

    /// <summary>
    /// The longest length (a multiple of <paramref name="granularity"/>) whose peak fits in <paramref name="budget"/>:
    /// never at or beyond a measured length that does not fit, found by bisection on the prediction.
    /// </summary>
    public static BudgetResult LongestWithin(string strategy, IReadOnlyList<(int Length, long Bytes)> measured, long budget, int granularity, Func<long, double> estimate)
    {
        var fitting = measured.Where(p => p.Bytes <= budget).Select(p => p.Length).DefaultIfEmpty(0).Max();
        if (fitting == 0) return new BudgetResult(strategy, null, BudgetBasis.None, false);
        long over = measured.Where(p => p.Bytes > budget && p.Length > fitting).Select(p => (long)p.Length).DefaultIfEmpty(SearchLimit + 1).Min();
        bool Fits(long length) => Predict(measured, length, estimate) <= budget;
        long lo = fitting, hi = over; // Fits(lo) is measured; hi does not fit (or is past the search)
        while (hi - lo > granularity)
        {
            long mid = lo + (hi - lo) / 2 / granularity * granularity;
            if (mid <= lo) mid = lo + granularity;
            if (Fits(mid)) lo = mid; else hi = mid;
        }
        var basis = lo == fitting ? BudgetBasis.Measured : over <= SearchLimit ? BudgetBasis.Interpolated : BudgetBasis.Extrapolated;
        return new BudgetResult(strategy, lo, basis, over > SearchLimit && hi > SearchLimit);
    }

    /// <summary>Parses a size such as 8GiB, 512MiB, 16GB, 1.5G or 1000000 (bytes) for a command-line option.</summary>
    public static long ParseSize(string text, string option) => ByteSize.TryParse(text, out long bytes)
        ? bytes : throw new UsageException($"{option} '{text}' is not a size; use e.g. {ByteSize.Examples}.");

    /// <summary>Bytes as MiB or GiB for the report.</summary>
    public static string Format(double bytes) => ByteSize.Format(bytes);
}
