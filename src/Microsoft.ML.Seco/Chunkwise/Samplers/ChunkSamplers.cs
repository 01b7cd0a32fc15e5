using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace Microsoft.ML.Seco.Chunkwise.Samplers;

/// <summary>
/// The registered samplers: one instance per <see cref="ChunkSampler"/> value, found by the value
/// (<see cref="Get(ChunkSampler)"/>) or by name (<see cref="ByName(string)"/>, as the command line and configuration
/// files spell them). A sampler that is not registered runs through <see cref="ChunkwiseOptions.CustomSampler"/>.
/// </summary>
public static class ChunkSamplers
{
    /// <summary>The sampler of <see cref="ChunkSampler.Bernoulli"/>.</summary>
    public static BernoulliSampler Bernoulli { get; } = new();

    /// <summary>The sampler of <see cref="ChunkSampler.FixedBudget"/>.</summary>
    public static FixedBudgetSampler FixedBudget { get; } = new();

    /// <summary>The sampler of <see cref="ChunkSampler.Stratified"/>.</summary>
    public static StratifiedSampler Stratified { get; } = new();

    static readonly (ChunkSampler Kind, IChunkSampler Sampler)[] Registered =
    [
        (ChunkSampler.Bernoulli, Bernoulli),
        (ChunkSampler.FixedBudget, FixedBudget),
        (ChunkSampler.Stratified, Stratified),
    ];

    /// <summary>Every registered sampler, in the order of <see cref="ChunkSampler"/>'s values.</summary>
    public static IReadOnlyList<IChunkSampler> All { get; } = Registered.Select(r => r.Sampler).ToArray();

    /// <summary>The registered samplers' names (<see cref="IChunkSampler.Name"/>), in the order of <see cref="All"/>.</summary>
    public static IReadOnlyList<string> Names { get; } = All.Select(s => s.Name).ToArray();

    /// <summary>The sampler of a <see cref="ChunkSampler"/> value.</summary>
    public static IChunkSampler Get(ChunkSampler kind)
    {
        foreach (var (k, sampler) in Registered)
            if (k == kind) return sampler;
        throw new ArgumentOutOfRangeException(nameof(kind), kind, "Sampler is not a known sampler.");
    }

    /// <summary>The <see cref="ChunkSampler"/> value of a registered sampler; null for any other.</summary>
    public static ChunkSampler? KindOf(IChunkSampler sampler)
    {
        foreach (var (kind, registered) in Registered)
            if (ReferenceEquals(registered, sampler)) return kind;
        return null;
    }

    /// <summary>
    /// The registered sampler a name denotes: its <see cref="IChunkSampler.Name"/>, or its <see cref="ChunkSampler"/>
    /// value's name in any case or in kebab-case (<c>fixed</c>, <c>FixedBudget</c>, <c>fixed-budget</c>), surrounding
    /// spaces ignored. Throws <see cref="ArgumentException"/> naming the known samplers.
    /// </summary>
    public static IChunkSampler ByName(string name) =>
        TryByName(name, out var sampler) ? sampler
        : throw new ArgumentException($"Unknown sampler '{name}'; the samplers are {string.Join(", ", Names)}.", nameof(name));

    /// <summary>Like <see cref="ByName(string)"/>, false for a name no registered sampler has.</summary>
    public static bool TryByName(string? name, [NotNullWhen(true)] out IChunkSampler? sampler)
    {
        string text = name?.Trim() ?? "";
        foreach (var (kind, registered) in Registered)
        {
            if (Spellings(kind, registered).Any(s => s.Equals(text, StringComparison.OrdinalIgnoreCase)))
            {
                sampler = registered;
                return true;
            }
        }
        sampler = null;
        return false;
    }

    /// <summary>The expected number of chunks the sampler keeps: Σ_j π_j (<see cref="IChunkSampler.InclusionProbabilities"/>).</summary>
    public static double ExpectedKept(this IChunkSampler sampler, int chunks, int sampled, IReadOnlyList<bool>? labelledChunks = null) =>
        sampler.InclusionProbabilities(chunks, sampled, labelledChunks).Sum();

    static IEnumerable<string> Spellings(ChunkSampler kind, IChunkSampler sampler) => [sampler.Name, kind.ToString(), KebabCase(kind.ToString())];

    static string KebabCase(string name)
    {
        var result = new StringBuilder();
        for (int i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0) result.Append('-');
            result.Append(char.ToLowerInvariant(name[i]));
        }
        return result.ToString();
    }
}
