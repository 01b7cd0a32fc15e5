namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>How SpaCO chooses the chunks that are backpropagated.</summary>
public enum ChunkSampler
{
    /// <summary>
    /// Each chunk kept independently with probability q = t / k, compensation 1 / q. A chain of p chunks survives with
    /// probability q^p and carries weight q^−p, so the gradient estimate is exactly unbiased (this project's addition).
    /// </summary>
    Bernoulli,
    /// <summary>
    /// The paper's sampler: exactly t distinct chunks of k, compensation k / t (optionally capped). Unbiased for direct
    /// paths (one chunk), slightly biased for chains through the cache.
    /// </summary>
    FixedBudget,
}

/// <summary>Which chunks Stage 2 backpropagates, and the compensation factor c applied to each.</summary>
/// <param name="Keep">Keep[j] is true when chunk j is backpropagated.</param>
/// <param name="Compensation">c: the sampled chunks' losses and injected cache gradients are multiplied by it.</param>
public sealed record ChunkSelection(bool[] Keep, double Compensation)
{
    /// <summary>Every chunk, factor 1: SeCO.</summary>
    public static ChunkSelection All(int chunks) => new(Enumerable.Repeat(true, chunks).ToArray(), 1);

    /// <summary>Number of chunks kept.</summary>
    public int Count => Keep.Count(k => k);

    /// <summary>
    /// Draws a selection of t of k chunks. t ≥ k gives every chunk with factor 1 (SeCO). With
    /// <paramref name="compensate"/> false the factor is 1; <paramref name="maxCompensation"/> caps it (the paper
    /// recommends 2), which biases the estimate further.
    /// </summary>
    public static ChunkSelection Sample(int chunks, int sampled, ChunkSampler sampler, bool compensate, double? maxCompensation, Random random)
    {
        if (chunks <= 0) throw new ArgumentOutOfRangeException(nameof(chunks), chunks, "There must be at least one chunk.");
        if (sampled <= 0) throw new ArgumentOutOfRangeException(nameof(sampled), sampled, "At least one chunk must be sampled.");
        if (sampled >= chunks) return All(chunks);
        double q = (double)sampled / chunks;
        double factor = compensate ? Math.Min(1 / q, maxCompensation ?? double.PositiveInfinity) : 1;
        var keep = new bool[chunks];
        if (sampler == ChunkSampler.Bernoulli)
        {
            for (int j = 0; j < chunks; j++) keep[j] = random.NextDouble() < q;
        }
        else
        {
            // Partial Fisher-Yates: the first `sampled` entries of a random permutation.
            var order = Enumerable.Range(0, chunks).ToArray();
            for (int j = 0; j < sampled; j++)
            {
                int pick = random.Next(j, chunks);
                (order[j], order[pick]) = (order[pick], order[j]);
                keep[order[j]] = true;
            }
        }
        return new ChunkSelection(keep, factor);
    }
}
