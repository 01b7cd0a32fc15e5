using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Keys (after rotary embedding) and values of every layer for positions [0, capacity), one preallocated buffer per
/// layer and kind, [batch, kv_heads, capacity, head_dim]. A chunk at absolute start s reads the prefix [0, s) as a
/// slice of the buffers (no copy), and its own keys/values are written into [s, s + length). For SeCO's Stage 2 the cache also holds
/// one gradient buffer per key/value buffer, in the same layout: attention adds the gradient that later chunks send
/// to chunk i's cache there in place, and Stage 2 reads it back when it reaches chunk i.
/// </summary>
public sealed class KvCache : IDisposable
{
    Tensor[]? _keyGradients, _valueGradients;

    /// <summary>Per-layer key buffers.</summary>
    public Tensor[] Keys { get; }
    /// <summary>Per-layer value buffers.</summary>
    public Tensor[] Values { get; }
    /// <summary>Positions the buffers can hold.</summary>
    public long Capacity { get; }

    /// <summary>Diagnostic: where attention over a prefix of this cache times itself (<see cref="StepPhases"/>), or null.</summary>
    public StepPhases? Phases { get; init; }

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
        // One index for every layer: an in-place index copy dispatches nothing more, where a slice per buffer would.
        using var positions = arange(start, start + chunk[0].Keys.shape[2], dtype: ScalarType.Int64, device: Keys[0].device);
        for (int l = 0; l < Keys.Length; l++)
        {
            Keys[l].index_copy_(2, positions, chunk[l].Keys);
            Values[l].index_copy_(2, positions, chunk[l].Values);
        }
    }

    /// <summary>Allocates zeroed gradient buffers for every layer (SeCO Stage 2), or frees them.</summary>
    public void TrackGradients(bool track)
    {
        FreeGradients();
        if (!track) return;
        _keyGradients = Keys.Select(b => zeros_like(b)).ToArray();
        _valueGradients = Values.Select(b => zeros_like(b)).ToArray();
    }

    /// <summary>The gradient accumulated on positions [start, start + length) of a layer's keys and values, or null when gradients are not tracked.</summary>
    public (Tensor Keys, Tensor Values)? GradientOf(int layer, long start, long length) =>
        _keyGradients is { } keys && _valueGradients is { } values
            ? (keys[layer].narrow(2, start, length), values[layer].narrow(2, start, length))
            : null;

    /// <summary>Positions [0, start) of one layer, with their gradient buffers when gradients are tracked.</summary>
    internal CachedPrefix Prefix(int layer, long start) =>
        new(Keys[layer], Values[layer], _keyGradients?[layer], _valueGradients?[layer], start) { Phases = Phases };

    void FreeGradients()
    {
        foreach (var gradient in (_keyGradients ?? []).Concat(_valueGradients ?? [])) gradient.Dispose();
        (_keyGradients, _valueGradients) = (null, null);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        FreeGradients();
        foreach (var buffer in Keys.Concat(Values)) buffer.Dispose();
    }
}
