using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Data;

/// <summary>
/// A batch's next-token targets and, per chunk, which of them carry a label, built once per step on the batch's
/// device: the labelled positions of every chunk are one device tensor that each chunk narrows, so a chunk loop
/// copies nothing from the host and reads nothing back. A chunk whose every target is labelled (plain language
/// modelling) needs no positions at all.
/// </summary>
public sealed class LabelledTargets : IDisposable
{
    readonly long[] _offsets, _counts;
    readonly long _batch, _length;
    readonly Tensor? _positions;

    /// <summary>Next-token targets [B, L] (−100 where there is no label, see <see cref="TokenBatch.Targets"/>).</summary>
    public Tensor Targets { get; }
    /// <summary>Labelled targets in the batch.</summary>
    public long Count { get; }
    /// <summary>Positions per chunk.</summary>
    public int ChunkSize { get; }
    /// <summary>Chunks of <see cref="ChunkSize"/> in the batch's length.</summary>
    public int Chunks => _counts.Length;

    internal LabelledTargets(Tensor targets, int chunkSize)
    {
        Targets = targets;
        ChunkSize = chunkSize;
        (_batch, _length) = (targets.shape[0], targets.shape[1]);
        var (perChunk, total) = TokenBatch.LabelledPositions(targets, chunkSize);
        Count = total;
        _counts = perChunk.Select(p => (long)p.Length).ToArray();
        _offsets = new long[perChunk.Length];
        for (int j = 1; j < perChunk.Length; j++) _offsets[j] = _offsets[j - 1] + _counts[j - 1];
        if (total > 0) _positions = tensor(perChunk.SelectMany(p => p).ToArray(), device: targets.device);
    }

    /// <summary>Labelled targets in chunk <paramref name="chunk"/> (host-side, no synchronisation).</summary>
    public long CountOf(int chunk) => _counts[chunk];

    /// <summary>Chunk <paramref name="chunk"/>'s targets [B, size].</summary>
    public Tensor TargetsOf(int chunk) => Targets.narrow(1, Start(chunk), Size(chunk));

    /// <summary>
    /// Flat indices into chunk <paramref name="chunk"/>'s B·size positions of the targets that carry a label, or null
    /// when all of them do.
    /// </summary>
    public Tensor? PositionsOf(int chunk) =>
        _counts[chunk] == _batch * Size(chunk) ? null : _positions is null ? empty(0, dtype: ScalarType.Int64, device: Targets.device) : _positions.narrow(0, _offsets[chunk], _counts[chunk]);

    long Start(int chunk) => (long)chunk * ChunkSize;
    long Size(int chunk) => Math.Min(ChunkSize, _length - Start(chunk));

    /// <inheritdoc/>
    public void Dispose()
    {
        Targets.Dispose();
        _positions?.Dispose();
    }
}
