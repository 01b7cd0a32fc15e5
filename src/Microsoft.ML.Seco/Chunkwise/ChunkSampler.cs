namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>How SpaCO chooses the chunks that are backpropagated.</summary>
public enum ChunkSampler
{
    /// <summary>
    /// Each chunk kept independently with probability q = t / k, factor 1 / q. A chain of p chunks survives with
    /// probability q^p; with <see cref="Compensation.LossAndCache"/> it carries weight q^−p, so the gradient estimate
    /// is exactly unbiased (this project's addition).
    /// </summary>
    Bernoulli,
    /// <summary>
    /// The paper's sampler: exactly t distinct chunks of k, uniformly, factor k / t. Unbiased for direct paths (one
    /// chunk) with loss compensation, biased for chains through the cache.
    /// </summary>
    FixedBudget,
    /// <summary>
    /// The authors' sampler for prompt/response data: ⌈t/2⌉ chunks drawn uniformly among the chunks that hold a
    /// labelled target (a response token), the other ⌊t/2⌋ among the rest; when a group has fewer chunks than its
    /// share, the remainder goes to the other group. No compensation (factor 1): it requires
    /// <see cref="Compensation.None"/>.
    /// </summary>
    Stratified,
}

/// <summary>Which of Stage 2's seeds the sampler's factor multiplies.</summary>
/// <remarks>
/// A gradient reaches the parameters along chains of chunks (the loss of the chain's last chunk → the cache of an
/// earlier chunk → ... → the parameters inside the chain's first chunk). With loss factor a and cache factor b, a
/// chain through p chunks carries weight a·b^(p−1): the loss is scaled once, the cache gradient at each of the p − 1
/// hops.
/// </remarks>
public enum Compensation
{
    /// <summary>
    /// Both the sampled chunks' losses and the cache gradients they inject (a = b = factor). With the Bernoulli sampler
    /// the estimate is exactly unbiased. Equal to the authors' opt-in flag <c>--unbiased_estimate</c>. The default.
    /// </summary>
    LossAndCache,
    /// <summary>Only the losses (a = factor, b = 1): what the authors' released code does by default.</summary>
    LossOnly,
    /// <summary>Only the injected cache gradients (a = 1, b = factor): the paper's Algorithm 2.</summary>
    CacheOnly,
    /// <summary>Neither (a = b = 1).</summary>
    None,
}

/// <summary>Which chunks Stage 2 backpropagates, and the factors applied to their seeds.</summary>
/// <param name="Keep">Keep[j] is true when chunk j is backpropagated.</param>
/// <param name="LossFactor">a: each sampled chunk's loss is multiplied by it.</param>
/// <param name="CacheFactor">b: the gradient later chunks sent to a sampled chunk's cache is multiplied by it before it seeds that chunk.</param>
public sealed record ChunkSelection(bool[] Keep, double LossFactor, double CacheFactor)
{
    /// <summary>Every chunk, factors 1: SeCO.</summary>
    public static ChunkSelection All(int chunks) => new(Enumerable.Repeat(true, chunks).ToArray(), 1, 1);

    /// <summary>Number of chunks kept.</summary>
    public int Count => Keep.Count(k => k);

    /// <summary>
    /// The (loss, cache) factors of a sampler drawing <paramref name="sampled"/> of <paramref name="chunks"/> chunks:
    /// k / t capped at <paramref name="maxCompensation"/>, applied where <paramref name="mode"/> says, 1 elsewhere.
    /// t ≥ k means every chunk with factors 1. The stratified sampler compensates nothing and accepts only
    /// <see cref="Compensation.None"/>.
    /// </summary>
    public static (double Loss, double Cache) Factors(int chunks, int sampled, ChunkSampler sampler, Compensation mode, double? maxCompensation)
    {
        if (!Enum.IsDefined(mode)) throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown compensation mode.");
        if (sampler == ChunkSampler.Stratified && mode != Compensation.None)
            throw new ArgumentOutOfRangeException(nameof(mode), mode, StratifiedNeedsNone);
        if (sampled >= chunks || mode == Compensation.None) return (1, 1);
        double factor = Math.Min((double)chunks / sampled, maxCompensation ?? double.PositiveInfinity);
        return (mode is Compensation.LossAndCache or Compensation.LossOnly ? factor : 1,
                mode is Compensation.LossAndCache or Compensation.CacheOnly ? factor : 1);
    }

    internal const string StratifiedNeedsNone =
        "The Stratified sampler applies no compensation (as the authors' supervised runs); set Compensation to None.";

    /// <summary>
    /// Chunks the stratified sampler draws from the labelled group and from the others: ⌈t/2⌉ and ⌊t/2⌋, the
    /// remainder of a group smaller than its share going to the other group (t &lt; k assumed).
    /// </summary>
    public static (int Labelled, int Others) StratifiedBudget(int labelledChunks, int otherChunks, int sampled)
    {
        int labelled = Math.Min(labelledChunks, Math.Max((sampled + 1) / 2, sampled - otherChunks));
        return (labelled, Math.Min(otherChunks, sampled - labelled));
    }

    /// <summary>
    /// Draws a selection of t = <paramref name="sampled"/> of k = <paramref name="chunks"/> chunks. t ≥ k gives every
    /// chunk with factors 1 (SeCO). <paramref name="labelledChunks"/> (chunk j holds a labelled target) is required by
    /// the stratified sampler and ignored by the others.
    /// </summary>
    public static ChunkSelection Sample(int chunks, int sampled, ChunkSampler sampler, Compensation compensation, double? maxCompensation,
                                        Random random, IReadOnlyList<bool>? labelledChunks = null)
    {
        if (chunks <= 0) throw new ArgumentOutOfRangeException(nameof(chunks), chunks, "There must be at least one chunk.");
        if (sampled <= 0) throw new ArgumentOutOfRangeException(nameof(sampled), sampled, "At least one chunk must be sampled.");
        var (lossFactor, cacheFactor) = Factors(chunks, sampled, sampler, compensation, maxCompensation);
        if (sampled >= chunks) return All(chunks);
        var keep = new bool[chunks];
        switch (sampler)
        {
            case ChunkSampler.Bernoulli:
                double q = (double)sampled / chunks;
                for (int j = 0; j < chunks; j++) keep[j] = random.NextDouble() < q;
                break;
            case ChunkSampler.FixedBudget:
                Draw(Enumerable.Range(0, chunks).ToArray(), sampled, keep, random);
                break;
            case ChunkSampler.Stratified:
                if (labelledChunks is null || labelledChunks.Count != chunks)
                    throw new ArgumentException($"The stratified sampler needs to know which of the {chunks} chunks hold labels.", nameof(labelledChunks));
                var labelled = Enumerable.Range(0, chunks).Where(j => labelledChunks[j]).ToArray();
                var others = Enumerable.Range(0, chunks).Where(j => !labelledChunks[j]).ToArray();
                var (fromLabelled, fromOthers) = StratifiedBudget(labelled.Length, others.Length, sampled);
                Draw(labelled, fromLabelled, keep, random);
                Draw(others, fromOthers, keep, random);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(sampler), sampler, "Unknown sampler.");
        }
        return new ChunkSelection(keep, lossFactor, cacheFactor);
    }

    /// <summary>Marks <paramref name="count"/> of <paramref name="pool"/> uniformly: the first entries of a partial Fisher-Yates shuffle.</summary>
    static void Draw(int[] pool, int count, bool[] keep, Random random)
    {
        for (int j = 0; j < count; j++)
        {
            int pick = random.Next(j, pool.Length);
            (pool[j], pool[pick]) = (pool[pick], pool[j]);
            keep[pool[j]] = true;
        }
    }
}
