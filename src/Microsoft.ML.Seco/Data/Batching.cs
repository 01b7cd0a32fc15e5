using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Data;

/// <summary>Groups training examples into right-padded <see cref="TokenBatch"/>es, lazily.</summary>
public static class Batching
{
    /// <summary>
    /// Batches of <paramref name="batchSize"/> examples (the last may be smaller), right-padded with
    /// <paramref name="padId"/>, padding labelled −100. With <paramref name="lengthSortWindow"/> &gt; 0, examples are
    /// read that many at a time and sorted by length within the window before batching, so that a batch holds
    /// sequences of similar length and carries less padding; the order changes only within a window. Each batch is
    /// created when enumerated: the consumer owns and disposes it.
    /// </summary>
    /// <param name="examples">The examples, streamed.</param>
    /// <param name="batchSize">Sequences per batch.</param>
    /// <param name="padId">Id written in padding positions (never attended to nor trained on).</param>
    /// <param name="device">Where the batches' tensors live.</param>
    /// <param name="lengthSortWindow">Examples sorted together by length; 0 (default) keeps the input order.</param>
    public static IEnumerable<TokenBatch> Batches(IEnumerable<TrainingExample> examples, int batchSize, int padId, Device device, int lengthSortWindow = 0)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batchSize must be positive.");
        if (lengthSortWindow < 0) throw new ArgumentOutOfRangeException(nameof(lengthSortWindow), lengthSortWindow, "lengthSortWindow must not be negative.");
        return Iterate(examples, batchSize, padId, device, lengthSortWindow);
    }

    static IEnumerable<TokenBatch> Iterate(IEnumerable<TrainingExample> examples, int batchSize, int padId, Device device, int lengthSortWindow) =>
        Groups(examples, batchSize, lengthSortWindow).Select(group => TokenBatch.FromSequences(group.Select(e => (IReadOnlyList<int>)e.Ids).ToList(),
            group.Select(e => (IReadOnlyList<int>)e.Labels).ToList(), padId, device));

    /// <summary>The examples of each batch <see cref="Batches"/> makes, in its order (data-parallel training shards them).</summary>
    internal static IEnumerable<List<TrainingExample>> Groups(IEnumerable<TrainingExample> examples, int batchSize, int lengthSortWindow)
    {
        int window = lengthSortWindow > 0 ? Math.Max(lengthSortWindow, batchSize) : batchSize;
        var buffer = new List<TrainingExample>(window);
        foreach (var example in examples)
        {
            buffer.Add(example);
            if (buffer.Count < window) continue;
            foreach (var group in Flush(buffer, batchSize, lengthSortWindow > 0)) yield return group;
        }
        foreach (var group in Flush(buffer, batchSize, lengthSortWindow > 0)) yield return group;
    }

    static IEnumerable<List<TrainingExample>> Flush(List<TrainingExample> buffer, int batchSize, bool sort)
    {
        var ordered = sort ? buffer.OrderBy(e => e.Ids.Length).ToList() : new List<TrainingExample>(buffer);
        buffer.Clear();
        for (int start = 0; start < ordered.Count; start += batchSize)
            yield return ordered.GetRange(start, Math.Min(batchSize, ordered.Count - start));
    }
}
