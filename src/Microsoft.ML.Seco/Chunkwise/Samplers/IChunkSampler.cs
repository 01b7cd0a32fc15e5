namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// A SpaCO chunk sampler: how t of a step's k chunks are drawn for Stage 2, the exact probability law of what it draws,
/// and the factors the drawn chunks' seeds get (docs/ALGORITHM.md). Everything that depends on the sampler asks it:
/// <see cref="ChunkwiseStep"/> draws with <see cref="Sample"/>, the gradient check enumerates <see cref="Law"/> to
/// compute the estimate's exact expectation, and the benchmark's FLOP count takes <see cref="InclusionProbabilities"/>
/// and <see cref="AllKeptProbability"/>.
/// </summary>
/// <remarks>
/// <para>The built-in samplers are <see cref="BernoulliSampler"/>, <see cref="FixedBudgetSampler"/> and
/// <see cref="StratifiedSampler"/>, named by <see cref="ChunkSamplers"/>; <see cref="ChunkwiseOptions.CustomSampler"/>
/// runs any other. <see cref="ChunkSamplerBase"/> implements what every sampler shares (t ≥ k is every chunk with factors
/// 1, the compensation factor k/t, argument checks), so a new sampler writes its draw and its law.</para>
/// <para>Contract, for every k ≥ 1 and t ≥ 1: with t ≥ k every method describes the selection of every chunk with factors
/// 1 (SeCO); <see cref="Law"/>'s probabilities are positive and sum to 1; <see cref="Sample"/> draws each keep pattern
/// of the law with its probability (and no other pattern); <see cref="InclusionProbabilities"/> and
/// <see cref="AllKeptProbability"/> are the law's marginals; <see cref="SelectionCount"/> is the number of patterns
/// <see cref="Law"/> yields.</para>
/// </remarks>
public interface IChunkSampler
{
    /// <summary>The sampler's name on the command line and in configuration files: lower case, e.g. <c>bernoulli</c>.</summary>
    string Name { get; }

    /// <summary>One line for help texts: what the sampler draws and what it is for.</summary>
    string Description { get; }

    /// <summary>
    /// True when the sampler needs to know which chunks hold a labelled target (the <c>labelledChunks</c> argument of
    /// the other members); the step then computes it from the batch. Samplers that return false ignore the argument.
    /// </summary>
    bool UsesLabelledChunks { get; }

    /// <summary>
    /// Why the sampler cannot run with <paramref name="compensation"/>, or null when it can: a rule in
    /// <see cref="OptionException"/>'s form (the option written <c>{Compensation}</c>, no final full stop), so that every
    /// front end names the option its own way.
    /// </summary>
    string? Rejects(Compensation compensation);

    /// <summary>
    /// The (loss, cache) factors a selection of <paramref name="sampled"/> of <paramref name="chunks"/> chunks gets
    /// under <paramref name="compensation"/>, capped at <paramref name="maxCompensation"/> (docs/ALGORITHM.md). Throws
    /// <see cref="ArgumentOutOfRangeException"/> for a mode <see cref="Rejects"/> refuses.
    /// </summary>
    (double Loss, double Cache) Factors(int chunks, int sampled, Compensation compensation, double? maxCompensation);

    /// <summary>
    /// Draws one selection of t = <paramref name="sampled"/> of k = <paramref name="chunks"/> chunks from
    /// <paramref name="random"/>, with its <see cref="Factors"/>. t ≥ k gives every chunk with factors 1 (SeCO) and
    /// draws nothing. <paramref name="labelledChunks"/>[j] tells whether chunk j holds a labelled target; required
    /// when <see cref="UsesLabelledChunks"/>.
    /// </summary>
    ChunkSelection Sample(int chunks, int sampled, Compensation compensation, double? maxCompensation, Random random,
                          IReadOnlyList<bool>? labelledChunks = null);

    /// <summary>The number of keep patterns <see cref="Law"/> yields (a double: for large k it may exceed any integer type).</summary>
    double SelectionCount(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null);

    /// <summary>
    /// The exact probability law of <see cref="Sample"/>'s keep patterns: every pattern it can draw (Keep[j] = chunk j
    /// kept) with its probability, each pattern once. Check <see cref="SelectionCount"/> before enumerating: the law
    /// grows combinatorially with k (Bernoulli's has 2^k patterns). The built-in samplers yield the patterns in
    /// increasing order of Σ_j Keep[j]·2^j.
    /// </summary>
    IEnumerable<(bool[] Keep, double Probability)> Law(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null);

    /// <summary>π_j: the probability that chunk j is kept, for j = 0..k−1. Their sum is the expected number of chunks kept.</summary>
    double[] InclusionProbabilities(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null);

    /// <summary>
    /// The probability that every chunk of <paramref name="subset"/> (distinct indices in [0, k)) is kept. A chain
    /// through those chunks reaches the parameters with this probability (docs/ALGORITHM.md); 1 for an empty subset.
    /// </summary>
    double AllKeptProbability(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks = null);

    /// <summary>
    /// Whether the sampler's gradient estimate has the full gradient as its expectation with these settings, for every
    /// model and batch: what the gradient check judges. True at least for t ≥ k (every chunk, factors 1).
    /// </summary>
    bool IsUnbiased(int chunks, int sampled, Compensation compensation, double? maxCompensation);
}
