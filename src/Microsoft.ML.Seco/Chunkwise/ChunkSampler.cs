namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>
/// The built-in ways SpaCO chooses the chunks that are backpropagated: names that options and saved models hold. Each
/// value stands for one <see cref="Samplers.IChunkSampler"/> (<see cref="Samplers.ChunkSamplers.Get(ChunkSampler)"/>),
/// which owns the drawing, the probability law and the factors; <see cref="ChunkwiseOptions.CustomSampler"/> runs any
/// other implementation instead.
/// </summary>
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
