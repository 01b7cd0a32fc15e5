namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// What every <see cref="IChunkSampler"/> shares: argument checks, t ≥ k as every chunk with factors 1 (SeCO), the
/// compensation factor k/t (capped) applied where <see cref="Compensation"/> says, and the labelled-chunks check. A
/// sampler derives from it and writes what is its own for t &lt; k: <see cref="SampleCore"/> (the draw),
/// <see cref="LawCore"/> and <see cref="SelectionCountCore"/> (the exact law). The marginals default to sums over the
/// law; override them with closed forms where k may be large (the benchmark's FLOP count asks for them at k in the
/// hundreds).
/// </summary>
public abstract class ChunkSamplerBase : IChunkSampler
{
    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <inheritdoc/>
    public abstract string Description { get; }

    /// <inheritdoc/>
    public virtual bool UsesLabelledChunks => false;

    /// <inheritdoc/>
    public virtual string? Rejects(Compensation compensation) => Enum.IsDefined(compensation) ? null : "{Compensation} is not a known mode";

    /// <summary>
    /// k / t capped at <paramref name="maxCompensation"/>, applied where <paramref name="compensation"/> says, 1
    /// elsewhere; t ≥ k gives factors 1. Throws for a mode <see cref="Rejects"/> refuses.
    /// </summary>
    public virtual (double Loss, double Cache) Factors(int chunks, int sampled, Compensation compensation, double? maxCompensation)
    {
        CheckSizes(chunks, sampled);
        if (Rejects(compensation) is string reason) throw new OptionException(nameof(Compensation), compensation, reason);
        if (sampled >= chunks || compensation == Compensation.None) return (1, 1);
        double factor = Math.Min((double)chunks / sampled, maxCompensation ?? double.PositiveInfinity);
        return (compensation is Compensation.LossAndCache or Compensation.LossOnly ? factor : 1,
                compensation is Compensation.LossAndCache or Compensation.CacheOnly ? factor : 1);
    }

    /// <inheritdoc/>
    public ChunkSelection Sample(int chunks, int sampled, Compensation compensation, double? maxCompensation, Random random,
                                 IReadOnlyList<bool>? labelledChunks = null)
    {
        CheckSizes(chunks, sampled);
        var (lossFactor, cacheFactor) = Factors(chunks, sampled, compensation, maxCompensation);
        if (sampled >= chunks) return ChunkSelection.All(chunks);
        ArgumentNullException.ThrowIfNull(random);
        CheckLabels(chunks, labelledChunks);
        var keep = SampleCore(chunks, sampled, random, labelledChunks);
        if (keep.Length != chunks) throw new InvalidOperationException($"The {Name} sampler drew a pattern of {keep.Length} chunks for {chunks}.");
        return new ChunkSelection(keep, lossFactor, cacheFactor);
    }

    /// <inheritdoc/>
    public double SelectionCount(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null)
    {
        CheckSizes(chunks, sampled);
        if (sampled >= chunks) return 1;
        CheckLabels(chunks, labelledChunks);
        return SelectionCountCore(chunks, sampled, labelledChunks);
    }

    /// <inheritdoc/>
    public IEnumerable<(bool[] Keep, double Probability)> Law(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null)
    {
        CheckSizes(chunks, sampled);
        if (sampled >= chunks) return [(Enumerable.Repeat(true, chunks).ToArray(), 1.0)];
        CheckLabels(chunks, labelledChunks);
        return LawCore(chunks, sampled, labelledChunks);
    }

    /// <inheritdoc/>
    public double[] InclusionProbabilities(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null)
    {
        CheckSizes(chunks, sampled);
        if (sampled >= chunks) return Enumerable.Repeat(1.0, chunks).ToArray();
        CheckLabels(chunks, labelledChunks);
        return InclusionProbabilitiesCore(chunks, sampled, labelledChunks);
    }

    /// <inheritdoc/>
    public double AllKeptProbability(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks = null)
    {
        CheckSizes(chunks, sampled);
        ArgumentNullException.ThrowIfNull(subset);
        if (subset.Any(j => j < 0 || j >= chunks) || subset.Distinct().Count() != subset.Count)
            throw new ArgumentException($"The subset must hold distinct chunk indices in [0, {chunks}).", nameof(subset));
        if (sampled >= chunks || subset.Count == 0) return 1;
        CheckLabels(chunks, labelledChunks);
        return AllKeptProbabilityCore(chunks, sampled, subset, labelledChunks);
    }

    /// <inheritdoc/>
    public bool IsUnbiased(int chunks, int sampled, Compensation compensation, double? maxCompensation)
    {
        CheckSizes(chunks, sampled);
        return sampled >= chunks || IsUnbiasedCore(chunks, sampled, compensation, maxCompensation);
    }

    /// <summary>The keep pattern of one draw, 1 ≤ t &lt; k (labelled chunks checked when <see cref="UsesLabelledChunks"/>).</summary>
    protected abstract bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks);

    /// <summary>Every keep pattern <see cref="SampleCore"/> can draw, with its probability, 1 ≤ t &lt; k.</summary>
    protected abstract IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks);

    /// <summary>The number of patterns <see cref="LawCore"/> yields, 1 ≤ t &lt; k, without enumerating them.</summary>
    protected abstract double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks);

    /// <summary>π_j, 1 ≤ t &lt; k. The default sums the law; override with a closed form.</summary>
    protected virtual double[] InclusionProbabilitiesCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        var result = new double[chunks];
        foreach (var (keep, probability) in LawCore(chunks, sampled, labelledChunks))
            for (int j = 0; j < chunks; j++)
                if (keep[j]) result[j] += probability;
        return result;
    }

    /// <summary>P(every chunk of a non-empty <paramref name="subset"/> is kept), 1 ≤ t &lt; k. The default sums the law; override with a closed form.</summary>
    protected virtual double AllKeptProbabilityCore(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks) =>
        LawCore(chunks, sampled, labelledChunks).Where(s => subset.All(j => s.Keep[j])).Sum(s => s.Probability);

    /// <summary>Whether the estimate is unbiased for 1 ≤ t &lt; k. Default false: claim it only where it is proved and tested.</summary>
    protected virtual bool IsUnbiasedCore(int chunks, int sampled, Compensation compensation, double? maxCompensation) => false;

    /// <summary>Marks <paramref name="count"/> of <paramref name="pool"/> uniformly: the first entries of a partial Fisher-Yates shuffle of the pool (which it reorders).</summary>
    protected static void DrawFrom(int[] pool, int count, bool[] keep, Random random)
    {
        for (int j = 0; j < count; j++)
        {
            int pick = random.Next(j, pool.Length);
            (pool[j], pool[pick]) = (pool[pick], pool[j]);
            keep[pool[j]] = true;
        }
    }

    /// <summary>
    /// The <paramref name="size"/>-element subsets of {0, …, n − 1}, each as its ascending indices, in increasing order of
    /// Σ 2^index (co-lexicographic order).
    /// </summary>
    protected static IEnumerable<int[]> Subsets(int n, int size)
    {
        if (size < 0 || size > n) yield break;
        var current = Enumerable.Range(0, size).ToArray();
        while (true)
        {
            yield return (int[])current.Clone();
            int i = 0;
            while (i < size && current[i] + 1 == (i + 1 < size ? current[i + 1] : n)) i++;
            if (i == size) yield break;
            current[i]++;
            for (int j = 0; j < i; j++) current[j] = j;
        }
    }

    /// <summary>Orders keep patterns as the numbers Σ_j Keep[j]·2^j (the order <see cref="IChunkSampler.Law"/> documents).</summary>
    protected static int CompareAsMasks(bool[] a, bool[] b)
    {
        for (int j = Math.Max(a.Length, b.Length) - 1; j >= 0; j--)
        {
            bool x = j < a.Length && a[j], y = j < b.Length && b[j];
            if (x != y) return x ? 1 : -1;
        }
        return 0;
    }

    /// <summary>The binomial coefficient C(n, k) as a double.</summary>
    protected static double Binomial(int n, int k)
    {
        double result = 1;
        for (int i = 1; i <= k; i++) result = result * (n - k + i) / i;
        return result;
    }

    /// <summary>
    /// The probability that <paramref name="members"/> given elements of a pool of <paramref name="pool"/> are all among
    /// <paramref name="drawn"/> drawn uniformly without replacement: Π_{i &lt; members} max(drawn − i, 0) / (pool − i).
    /// </summary>
    protected static double AllDrawnProbability(int pool, int drawn, int members)
    {
        double probability = 1;
        for (int i = 0; i < members; i++) probability = probability * Math.Max(0, drawn - i) / (pool - i);
        return probability;
    }

    static void CheckSizes(int chunks, int sampled)
    {
        if (chunks <= 0) throw new ArgumentOutOfRangeException(nameof(chunks), chunks, "There must be at least one chunk.");
        if (sampled <= 0) throw new ArgumentOutOfRangeException(nameof(sampled), sampled, "At least one chunk must be sampled.");
    }

    void CheckLabels(int chunks, IReadOnlyList<bool>? labelledChunks)
    {
        if (UsesLabelledChunks && (labelledChunks is null || labelledChunks.Count != chunks))
            throw new ArgumentException($"The {Name} sampler needs to know which of the {chunks} chunks hold labels.", nameof(labelledChunks));
    }
}
