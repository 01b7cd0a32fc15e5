using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Keys (after rotary embedding) and values of every layer for positions [0, capacity), one preallocated buffer per
/// layer and kind, [batch, kv_heads, capacity, head_dim]. A chunk at absolute start s reads the prefix [0, s) as a
/// view (no copy), and its own keys/values are written into [s, s + length). SeCO's Stage 2 turns the buffers into
/// leaves that require grad, so the gradient that later chunks send to chunk i's cache lands in the same layout.
/// </summary>
public sealed class KvCache : IDisposable
{
    /// <summary>Per-layer key buffers.</summary>
    public Tensor[] Keys { get; }
    /// <summary>Per-layer value buffers.</summary>
    public Tensor[] Values { get; }
    /// <summary>Positions the buffers can hold.</summary>
    public long Capacity { get; }

    /// <summary>Allocates zeroed buffers for <paramref name="capacity"/> positions.</summary>
    public KvCache(ModelConfig config, long batch, long capacity, ScalarType dtype, Device device)
    {
        Capacity = capacity;
        Keys = new Tensor[config.NumHiddenLayers];
        Values = new Tensor[config.NumHiddenLayers];
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            Keys[l] = zeros(batch, config.NumKeyValueHeads, capacity, config.HeadDim, dtype: dtype, device: device);
            Values[l] = zeros(batch, config.NumKeyValueHeads, capacity, config.HeadDim, dtype: dtype, device: device);
        }
    }

    /// <summary>Stores one chunk's keys/values (detached) at positions [start, start + length).</summary>
    public void Write(long start, IReadOnlyList<(Tensor Keys, Tensor Values)> chunk)
    {
        using var _ = no_grad();
        for (int l = 0; l < Keys.Length; l++)
        {
            long length = chunk[l].Keys.shape[2];
            Keys[l].narrow(2, start, length).copy_(chunk[l].Keys);
            Values[l].narrow(2, start, length).copy_(chunk[l].Values);
        }
    }

    /// <summary>Makes every buffer a leaf that accumulates gradient (SeCO Stage 2), or stops that and frees the gradients.</summary>
    public void TrackGradients(bool track)
    {
        foreach (var buffer in Keys.Concat(Values))
        {
            if (!track && buffer.grad is { } grad) { grad.Dispose(); buffer.grad = null; }
            buffer.requires_grad_(track);
        }
    }

    /// <summary>The gradient accumulated on positions [start, start + length) of a layer's keys and values, or null if none yet.</summary>
    public (Tensor Keys, Tensor Values)? GradientOf(int layer, long start, long length) =>
        Keys[layer].grad is { } gk && Values[layer].grad is { } gv
            ? (gk.narrow(2, start, length), gv.narrow(2, start, length))
            : null;

    /// <inheritdoc/>
    public void Dispose()
    {
        TrackGradients(false);
        foreach (var buffer in Keys.Concat(Values)) buffer.Dispose();
    }
}
