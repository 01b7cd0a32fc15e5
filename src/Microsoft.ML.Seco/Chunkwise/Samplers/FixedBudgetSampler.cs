namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// The paper's sampler (<see cref="ChunkSampler.FixedBudget"/>): exactly t distinct chunks of k, uniformly, factor k / t.
/// A chain of p chunks survives with probability t(t−1)…(t−p+1) / (k(k−1)…(k−p+1)), which equals (t/k)^p only for p = 1:
/// with loss compensation the estimate is unbiased for direct paths (one chunk) and biased for chains through the cache
/// (docs/ALGORITHM.md). Its law is the C(k, t) subsets, equally likely.
/// </summary>
public sealed class FixedBudgetSampler : ChunkSamplerBase
{
    /// <inheritdoc/>
    public override string Name => "fixed";

    /// <inheritdoc/>
    public override string Description => "the paper's: exactly t chunks, uniformly";

    /// <summary>t draws of a partial Fisher-Yates shuffle of the chunk indices.</summary>
    protected override bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks)
    {
        var keep = new bool[chunks];
        DrawFrom(Enumerable.Range(0, chunks).ToArray(), sampled, keep, random);
        return keep;
    }

    /// <inheritdoc/>
    protected override double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) => Binomial(chunks, sampled);

    /// <summary>The C(k, t) subsets of t chunks, each with probability 1 / C(k, t).</summary>
    protected override IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        double probability = 1 / Binomial(chunks, sampled);
        foreach (var subset in Subsets(chunks, sampled))
        {
            var keep = new bool[chunks];
            foreach (int j in subset) keep[j] = true;
            yield return (keep, probability);
        }
    }

    /// <summary>t / k for every chunk.</summary>
    protected override double[] InclusionProbabilitiesCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) =>
        Enumerable.Repeat((double)sampled / chunks, chunks).ToArray();

    /// <summary>t(t−1)…(t−p+1) / (k(k−1)…(k−p+1)) for p = |subset|.</summary>
    protected override double AllKeptProbabilityCore(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks) =>
        AllDrawnProbability(chunks, sampled, subset.Count);
}
