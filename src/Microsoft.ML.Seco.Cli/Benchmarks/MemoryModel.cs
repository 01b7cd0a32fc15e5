using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
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
/// estimate; with none, twice the analytic estimate (<see cref="Estimate"/>).
/// </summary>
internal static class MemoryModel
{
    /// <summary>Searches for the longest length stop here (4M tokens).</summary>
    public const long SearchLimit = 1L << 22;

    /// <summary>
    /// A rough analytic estimate of a step's peak bytes from its dominant terms, for predicting a point before any of the
    /// strategy is measured: per layer, activations kept for the backward (inputs of the projections and MLP); for the
    /// chunk-wise strategies the score and probability matrices of one attention block (a chunk's queries × its own keys
    /// and one prefix block, in the score dtype; the whole-sequence baselines use fused attention, which keeps none);
    /// logits and their softmax over the tokens whose loss is computed at once; the key/value cache (and, for SeCO and
    /// SpaCO, its gradient).
    /// </summary>
    public static double Estimate(string strategy, ModelConfig c, ScalarType dtype, long length, int chunkSize)
    {
        double b = BenchmarkShape.ElementSize(dtype), s = BenchmarkShape.ElementSize(CausalLM.ScoreType(dtype));
        double L = length, chunk = Math.Min(chunkSize, length), block = Math.Min(ChunkwiseStep.Stage1BlockSize(chunkSize), length);
        double perToken = b * (4.0 * c.HiddenSize + 3.0 * c.IntermediateSize + 2.0 * c.NumAttentionHeads * c.HeadDim + 4.0 * c.NumKeyValueHeads * c.HeadDim);
        double prefixBlock = Math.Min(ChunkAttention.BlockSize, L);
        double Scores(double queries) => 2 * c.NumAttentionHeads * queries * (queries + prefixBlock) * s;
        double Logits(double tokens) => 2 * tokens * c.VocabSize * s;
        double cache = BenchmarkShape.KvBytesPerToken(c, dtype) * L;
        return strategy switch
        {
            "full" => c.NumHiddenLayers * L * perToken + Logits(L),
            "checkpoint" => c.NumHiddenLayers * L * c.HiddenSize * b + L * perToken + Logits(L),
            // Score blocks are transient, one layer's at a time: the blockwise attention saves only O(chunk) per layer.
            "seco" or "spaco" => 2 * cache + c.NumHiddenLayers * chunk * perToken + Scores(chunk) + Logits(chunk),
            "inference" => cache + block * perToken + Scores(block) + Logits(block),
            _ => throw new ArgumentException($"Unknown strategy '{strategy}'.", nameof(strategy)),
        };
    }

    /// <summary>Predicted peak bytes at <paramref name="length"/> from the measured (length, bytes) points of one strategy.</summary>
    public static double Predict(IReadOnlyList<(int Length, long Bytes)> measured, long length, Func<long, double> estimate)
    {
        var points = measured.Where(p => p.Bytes > 0).OrderBy(p => p.Length).ToArray();
        // The estimate leaves out the allocator's and the framework's fixed costs (measured: 2–4× below the peak of a tiny
        // model's first point); doubling it keeps the guard from attempting a first point that cannot fit.
        if (points.Length == 0) return 2 * estimate(length);
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

    /// <summary>Memory the system can still give this process (MemAvailable in /proc/meminfo), or null where unknown.</summary>
    public static long? Available()
    {
        try
        {
            var match = Regex.Match(File.ReadAllText("/proc/meminfo"), @"MemAvailable:\s+(\d+) kB");
            return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) * 1024 : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DirectoryNotFoundException or FileNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Parses a size such as 8GiB, 512MiB, 16GB, 1.5G or 1000000 (bytes); binary prefixes for a bare K/M/G/T.</summary>
    public static long ParseSize(string text, string option)
    {
        var match = Regex.Match(text.Trim(), @"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)$", RegexOptions.IgnoreCase);
        if (!match.Success || !double.TryParse(match.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new UsageException($"{option}: '{text}' is not a size; use e.g. 8GiB, 512MiB or 16GB.");
        string prefix = match.Groups[2].Value.ToUpperInvariant();
        bool decimalUnit = match.Groups[3].Value.Length == 0 && match.Groups[4].Value.Length > 0;
        double unit = Math.Pow(decimalUnit ? 1000 : 1024, "KMGT".IndexOf(prefix, StringComparison.Ordinal) + 1);
        if (prefix.Length == 0) unit = 1;
        double bytes = value * unit;
        return bytes is >= 1 and < long.MaxValue ? (long)bytes : throw new UsageException($"{option}: '{text}' is out of range.");
    }

    /// <summary>Bytes as MiB or GiB for the report.</summary>
    public static string Format(double bytes) => bytes >= 1 << 30
        ? (bytes / (1 << 30)).ToString("F2", CultureInfo.InvariantCulture) + " GiB"
        : (bytes / (1 << 20)).ToString("F1", CultureInfo.InvariantCulture) + " MiB";
}
