namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>
/// Which chunks Stage 2 backpropagates, and the factors applied to their seeds. A sampler
/// (<see cref="Samplers.IChunkSampler"/>) draws one per step; SeCO is <see cref="All(int)"/>.
/// </summary>
/// <param name="Keep">Keep[j] is true when chunk j is backpropagated.</param>
/// <param name="LossFactor">a: each sampled chunk's loss is multiplied by it.</param>
/// <param name="CacheFactor">b: the gradient later chunks sent to a sampled chunk's cache is multiplied by it before it seeds that chunk.</param>
public sealed record ChunkSelection(bool[] Keep, double LossFactor, double CacheFactor)
{
    /// <summary>Every chunk, factors 1: SeCO.</summary>
    public static ChunkSelection All(int chunks) => new(Enumerable.Repeat(true, chunks).ToArray(), 1, 1);

    /// <summary>Number of chunks kept.</summary>
    public int Count => Keep.Count(k => k);
}
