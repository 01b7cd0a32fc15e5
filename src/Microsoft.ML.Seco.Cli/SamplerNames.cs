using Microsoft.ML.Seco.Chunkwise.Samplers;

namespace Microsoft.ML.Seco.Cli;

/// <summary>The samplers as flags name them: the registry's names (<see cref="ChunkSamplers"/>) and descriptions.</summary>
internal static class SamplerNames
{
    /// <summary>"bernoulli (…), fixed (…) or stratified (…)": each sampler's name and description, for help texts.</summary>
    public static string Help(IEnumerable<IChunkSampler> samplers) => Or(samplers.Select(s => $"{s.Name} ({s.Description})").ToList());

    /// <summary>
    /// The sampler <paramref name="text"/> names, among <paramref name="allowed"/>; a registered sampler that is not
    /// allowed is refused with <paramref name="whyNotAllowed"/>, an unknown name with the allowed names.
    /// </summary>
    public static IChunkSampler Parse(string text, string flag, IReadOnlyCollection<IChunkSampler> allowed, string whyNotAllowed)
    {
        string names = Or(allowed.Select(s => s.Name).ToList());
        if (!ChunkSamplers.TryByName(text, out var sampler))
            throw new UsageException($"{flag}: unknown sampler '{text.Trim()}'; use {names}.");
        if (!allowed.Contains(sampler))
            throw new UsageException($"{flag}: the {sampler.Name} sampler does not run here ({whyNotAllowed}); use {names}.");
        return sampler;
    }

    static string Or(IReadOnlyList<string> items) => items.Count <= 1 ? string.Join("", items) : $"{string.Join(", ", items.Take(items.Count - 1))} or {items[^1]}";
}
