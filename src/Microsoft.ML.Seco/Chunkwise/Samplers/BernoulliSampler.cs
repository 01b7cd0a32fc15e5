namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// This project's unbiased sampler (<see cref="ChunkSampler.Bernoulli"/>): each chunk kept independently with
/// probability q = t / k, factor 1 / q. A chain of p chunks survives with probability q^p; with
/// <see cref="Compensation.LossAndCache"/> (and no cap below k/t) it carries weight q^−p, so the expectation of the
/// estimate is exactly the full gradient, for every chain length (docs/ALGORITHM.md). The number of chunks kept is
/// binomial, t on average; its law has 2^k patterns.
/// </summary>
public sealed class BernoulliSampler : ChunkSamplerBase
{
    /// <inheritdoc/>
    public override string Name => "bernoulli";

    /// <inheritdoc/>
    public override string Description => "each chunk with probability t/k; unbiased with loss and cache compensation";

    /// <summary>One <see cref="Random.NextDouble"/> per chunk, in chunk order: chunk j is kept when it is below q.</summary>
    protected override bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks)
    {
        var keep = new bool[chunks];
        double q = (double)sampled / chunks;
        for (int j = 0; j < chunks; j++) keep[j] = random.NextDouble() < q;
        return keep;
    }

    /// <inheritdoc/>
    protected override double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) => Math.Pow(2, chunks);

    /// <summary>All 2^k keep patterns, each with probability q^kept (1 − q)^(k − kept). At most 62 chunks.</summary>
    protected override IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        if (chunks > 62)
            throw new ArgumentOutOfRangeException(nameof(chunks), chunks, $"{chunks} chunks give 2^{chunks} keep patterns, too many to enumerate (the limit is 62 chunks).");
        return Patterns();

        IEnumerable<(bool[], double)> Patterns()
        {
            double q = (double)sampled / chunks;
            for (long mask = 0; mask < 1L << chunks; mask++)
            {
                var keep = new bool[chunks];
                int kept = 0;
                for (int j = 0; j < chunks; j++)
                {
                    keep[j] = (mask >> j & 1) == 1;
                    if (keep[j]) kept++;
                }
                yield return (keep, Math.Pow(q, kept) * Math.Pow(1 - q, chunks - kept));
            }
        }
    }

    /// <summary>q = t / k for every chunk.</summary>
    protected override double[] InclusionProbabilitiesCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) =>
        Enumerable.Repeat((double)sampled / chunks, chunks).ToArray();

    /// <summary>q^|subset|: chunks are kept independently.</summary>
    protected override double AllKeptProbabilityCore(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks) =>
        Math.Pow((double)sampled / chunks, subset.Count);

    /// <summary>With both factors and no cap below k/t: a chain of p chunks survives with q^p and weighs q^−p.</summary>
    protected override bool IsUnbiasedCore(int chunks, int sampled, Compensation compensation, double? maxCompensation) =>
        compensation == Compensation.LossAndCache && !(maxCompensation < (double)chunks / sampled);
}
