using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Data;

/// <summary>
/// Token ids and labels for one training step, [batch, length] each, right-padded. Labels follow Hugging Face:
/// label t is the token at position t (the model shifts), −100 means "no loss here"; padding carries −100.
/// Because padding is on the right, a causal query never sees a pad key, so padding needs no mask of its own.
/// </summary>
public sealed class TokenBatch : IDisposable
{
    /// <summary>Label value that contributes no loss (Hugging Face's ignore index).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Token ids, int64 [B, L].</summary>
    public Tensor InputIds { get; }
    /// <summary>Labels, int64 [B, L].</summary>
    public Tensor Labels { get; }

    /// <summary>Wraps existing tensors (not copied; disposed with the batch).</summary>
    public TokenBatch(Tensor inputIds, Tensor labels)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input ids must be [batch, length], got [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        if (!labels.shape.SequenceEqual(inputIds.shape))
            throw new ArgumentException($"labels [{string.Join(", ", labels.shape)}] must have the shape of input ids [{string.Join(", ", inputIds.shape)}].", nameof(labels));
        InputIds = inputIds;
        Labels = labels;
    }

    /// <summary>Batch size.</summary>
    public long BatchSize => InputIds.shape[0];
    /// <summary>Padded sequence length.</summary>
    public long Length => InputIds.shape[1];

    /// <summary>
    /// Builds a right-padded batch from sequences of possibly different lengths. Labels default to the ids (plain
    /// language modelling); pass per-sequence labels with −100 where no loss is wanted.
    /// </summary>
    public static TokenBatch FromSequences(IReadOnlyList<IReadOnlyList<int>> ids, IReadOnlyList<IReadOnlyList<int>>? labels, int padId, Device device)
    {
        if (ids.Count == 0) throw new ArgumentException("A batch needs at least one sequence.", nameof(ids));
        if (labels is not null && labels.Count != ids.Count) throw new ArgumentException("One label sequence per id sequence is required.", nameof(labels));
        int length = ids.Max(s => s.Count);
        if (length == 0) throw new ArgumentException("Every sequence in the batch is empty.", nameof(ids));
        var flatIds = new long[ids.Count * length];
        var flatLabels = new long[ids.Count * length];
        Array.Fill(flatIds, padId);
        Array.Fill(flatLabels, IgnoreIndex);
        for (int b = 0; b < ids.Count; b++)
        {
            var l = labels?[b] ?? ids[b];
            if (l.Count != ids[b].Count) throw new ArgumentException($"Sequence {b}: {l.Count} labels for {ids[b].Count} ids.", nameof(labels));
            for (int t = 0; t < ids[b].Count; t++)
            {
                flatIds[b * length + t] = ids[b][t];
                flatLabels[b * length + t] = l[t];
            }
        }
        return new TokenBatch(tensor(flatIds, new long[] { ids.Count, length }, device: device),
                              tensor(flatLabels, new long[] { ids.Count, length }, device: device));
    }

    /// <summary>
    /// Next-token targets [B, L]: target t is label t + 1, the last position has none. Chunk j then takes targets of its
    /// own positions, so no chunk needs its neighbour's tokens.
    /// </summary>
    public Tensor Targets() =>
        cat(new[] { Labels.narrow(1, 1, Length - 1), full(BatchSize, 1, IgnoreIndex, dtype: ScalarType.Int64, device: Labels.device) }, 1);

    /// <summary>
    /// The step's targets and, per chunk of <paramref name="chunkSize"/>, where the labels are, on the batch's device
    /// (<see cref="LabelledTargets"/>). Every strategy starts here; a batch with no labelled token has no loss and is refused.
    /// </summary>
    public LabelledTargets LabelledTargets(int chunkSize)
    {
        var targets = new LabelledTargets(Targets(), chunkSize);
        if (targets.Count > 0) return targets;
        targets.Dispose();
        throw new ArgumentException("The batch has no labelled token: there is no loss to train on.");
    }

    /// <summary>
    /// For each chunk of <paramref name="chunkSize"/> positions, the flat indices (into the chunk's B·T positions) of
    /// targets that carry a label, computed on the host from one copy of the targets per step, so chunk loops need
    /// no device synchronisation. Also returns the total number of labelled targets.
    /// </summary>
    public static (long[][] PerChunk, long Total) LabelledPositions(Tensor targets, int chunkSize)
    {
        long batch = targets.shape[0], length = targets.shape[1];
        var host = targets.cpu().data<long>().ToArray();
        int chunks = (int)((length + chunkSize - 1) / chunkSize);
        var perChunk = new long[chunks][];
        long total = 0;
        for (int j = 0; j < chunks; j++)
        {
            long start = (long)j * chunkSize, size = Math.Min(chunkSize, length - start);
            var positions = new List<long>();
            for (long b = 0; b < batch; b++)
                for (long t = 0; t < size; t++)
                    if (host[b * length + start + t] != IgnoreIndex) positions.Add(b * size + t);
            perChunk[j] = positions.ToArray();
            total += positions.Count;
        }
        return (perChunk, total);
    }

    /// <summary>
    /// For each chunk of <paramref name="chunkSize"/> positions, whether any sequence of the batch has a labelled
    /// target in it (what the stratified sampler calls a response chunk).
    /// </summary>
    public bool[] ChunksWithLabels(int chunkSize)
    {
        using var targets = Targets();
        return LabelledPositions(targets, chunkSize).PerChunk.Select(positions => positions.Length > 0).ToArray();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        InputIds.Dispose();
        Labels.Dispose();
    }
}
