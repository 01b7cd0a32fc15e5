namespace Microsoft.ML.Seco.Chunkwise;

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
