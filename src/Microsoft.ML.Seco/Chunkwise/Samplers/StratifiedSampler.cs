namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// The authors' sampler for prompt/response data (<see cref="ChunkSampler.Stratified"/>): ⌈t/2⌉ chunks drawn uniformly
/// among the chunks that hold a labelled target (a response token), the other ⌊t/2⌋ among the rest; when a group has
/// fewer chunks than its share, the remainder goes to the other group (<see cref="Budget"/>). No compensation (factor
/// 1): it accepts only <see cref="Compensation.None"/>, and its estimate is biased. Its law is the products of a subset
/// of each group, equally likely.
/// </summary>
public sealed class StratifiedSampler : ChunkSamplerBase
{
    internal const string NeedsNone =
        "The Stratified sampler applies no compensation (as the authors' supervised runs); set {Compensation} to None";

    /// <inheritdoc/>
    public override string Name => "stratified";

    /// <inheritdoc/>
    public override string Description => "the authors' for prompt/response data: half of t to chunks with labelled targets, no compensation";

    /// <inheritdoc/>
    public override bool UsesLabelledChunks => true;

    /// <summary>Every mode but <see cref="Compensation.None"/> is refused.</summary>
    public override string? Rejects(Compensation compensation) =>
        base.Rejects(compensation) ?? (compensation == Compensation.None ? null : NeedsNone);

    /// <summary>
    /// Chunks drawn from the labelled group and from the others: ⌈t/2⌉ and ⌊t/2⌋, the remainder of a group smaller than
    /// its share going to the other group (t &lt; k assumed).
    /// </summary>
    public static (int Labelled, int Others) Budget(int labelledChunks, int otherChunks, int sampled)
    {
        int labelled = Math.Min(labelledChunks, Math.Max((sampled + 1) / 2, sampled - otherChunks));
        return (labelled, Math.Min(otherChunks, sampled - labelled));
    }

    /// <summary>The labelled group's draws (a partial Fisher-Yates shuffle), then the others'.</summary>
    protected override bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks)
    {
        var (labelled, others) = Groups(chunks, labelledChunks!);
        var (fromLabelled, fromOthers) = Budget(labelled.Length, others.Length, sampled);
        var keep = new bool[chunks];
        DrawFrom(labelled, fromLabelled, keep, random);
        DrawFrom(others, fromOthers, keep, random);
        return keep;
    }

    /// <inheritdoc/>
    protected override double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        var (labelled, others) = Groups(chunks, labelledChunks!);
        var (fromLabelled, fromOthers) = Budget(labelled.Length, others.Length, sampled);
        return Binomial(labelled.Length, fromLabelled) * Binomial(others.Length, fromOthers);
    }

    /// <summary>Every pair of a subset of each group of its budget's size, each with probability 1 / (C(n₁, t₁)·C(n₂, t₂)).</summary>
    protected override IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        var (labelled, others) = Groups(chunks, labelledChunks!);
        var (fromLabelled, fromOthers) = Budget(labelled.Length, others.Length, sampled);
        double probability = 1 / (Binomial(labelled.Length, fromLabelled) * Binomial(others.Length, fromOthers));
        var patterns = new List<bool[]>();
        foreach (var inLabelled in Subsets(labelled.Length, fromLabelled))
            foreach (var inOthers in Subsets(others.Length, fromOthers))
            {
                var keep = new bool[chunks];
                foreach (int i in inLabelled) keep[labelled[i]] = true;
                foreach (int i in inOthers) keep[others[i]] = true;
                patterns.Add(keep);
            }
        patterns.Sort(CompareAsMasks);
        return patterns.Select(keep => (keep, probability));
    }

    /// <summary>t₁ / n₁ for a labelled chunk, t₂ / n₂ for the others.</summary>
    protected override double[] InclusionProbabilitiesCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks)
    {
        var (labelled, others) = Groups(chunks, labelledChunks!);
        var (fromLabelled, fromOthers) = Budget(labelled.Length, others.Length, sampled);
        return Enumerable.Range(0, chunks)
            .Select(j => labelledChunks![j] ? (double)fromLabelled / labelled.Length : (double)fromOthers / others.Length).ToArray();
    }

    /// <summary>The product over the two groups of the probability that the subset's members of the group are all drawn.</summary>
    protected override double AllKeptProbabilityCore(int chunks, int sampled, IReadOnlyCollection<int> subset, IReadOnlyList<bool>? labelledChunks)
    {
        var (labelled, others) = Groups(chunks, labelledChunks!);
        var (fromLabelled, fromOthers) = Budget(labelled.Length, others.Length, sampled);
        int inLabelled = subset.Count(j => labelledChunks![j]);
        return AllDrawnProbability(labelled.Length, fromLabelled, inLabelled) * AllDrawnProbability(others.Length, fromOthers, subset.Count - inLabelled);
    }

    static (int[] Labelled, int[] Others) Groups(int chunks, IReadOnlyList<bool> labelledChunks) =>
        (Enumerable.Range(0, chunks).Where(j => labelledChunks[j]).ToArray(), Enumerable.Range(0, chunks).Where(j => !labelledChunks[j]).ToArray());
}
