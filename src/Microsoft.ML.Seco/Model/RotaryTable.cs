using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// The rotary cos and signed-sin tables of one model for positions [0, <see cref="Length"/>), on its device and in its
/// dtype, built once and sliced for each chunk, block or generated token: a chunk's positions are then two views
/// instead of a dozen operations (arange, the outer product, the trigonometry, casts). A longer sequence grows the
/// table; each entry is positions × inverse frequency computed on its own, so a slice of the table holds exactly what
/// a table of the slice's positions would.
/// </summary>
internal sealed class RotaryTable : IDisposable
{
    // Growth in whole steps of this many positions, so that generating token by token rebuilds the table rarely.
    const long Granularity = 1024;

    readonly Tensor _inverseFrequencies;
    readonly double _attentionScaling;
    readonly ScalarType _dtype;
    readonly Device _device;
    Tensor? _cos, _signedSin;

    /// <summary>
    /// A table over float64 <paramref name="inverseFrequencies"/> (which the caller owns), cos and sin multiplied by
    /// <paramref name="attentionScaling"/> (<see cref="RotaryEmbedding.AttentionScaling"/>), empty until first sliced.
    /// </summary>
    public RotaryTable(Tensor inverseFrequencies, double attentionScaling, ScalarType dtype, Device device) =>
        (_inverseFrequencies, _attentionScaling, _dtype, _device) = (inverseFrequencies, attentionScaling, dtype, device);

    /// <summary>Positions the table holds.</summary>
    public long Length { get; private set; }

    /// <summary>The rotary angles of positions [start, start + length), as views of the table.</summary>
    public ChunkPositions Slice(long start, long length)
    {
        if (start < 0 || length < 0) throw new ArgumentOutOfRangeException(nameof(start), $"Positions [{start}, {start + length}) are not a range of positions.");
        if (start + length > Length) Grow(start + length);
        return new ChunkPositions(start, length, _cos!.narrow(0, start, length), _signedSin!.narrow(0, start, length));
    }

    void Grow(long positions)
    {
        long length = (positions + Granularity - 1) / Granularity * Granularity;
        using var _ = no_grad();
        var (cos, signedSin) = RotaryEmbedding.CosSin(_inverseFrequencies, 0, length, _dtype, _device, _attentionScaling);
        Dispose();
        // The model owns the table: a dispose scope open while it grows (a training step's) must not take it.
        (_cos, _signedSin, Length) = (cos.DetachFromDisposeScope(), signedSin.DetachFromDisposeScope(), length);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _cos?.Dispose();
        _signedSin?.Dispose();
        (_cos, _signedSin, Length) = (null, null, 0);
    }
}
