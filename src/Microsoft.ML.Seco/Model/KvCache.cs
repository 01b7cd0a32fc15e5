using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Keys (after rotary embedding) and values of every layer for positions [0, capacity), one preallocated buffer per
/// layer and kind, [batch, kv_heads, capacity, head_dim]. A chunk at absolute start s reads the prefix [0, s) as a
/// slice of the buffers (no copy), and its own keys/values are written into [s, s + length). For SeCO's Stage 2 the cache also holds
/// one gradient buffer per key/value buffer, in the same layout: attention adds the gradient that later chunks send
/// to chunk i's cache there in place, and chunk i's own attention backward adds it, times b, to the gradient of its
/// keys/values when Stage 2 reaches chunk i.
/// </summary>
public sealed class KvCache : IDisposable
{
    Tensor[]? _keyGradients, _valueGradients;
    double _cacheScale = 1;

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

    /// <summary>
    /// Allocates zeroed gradient buffers for every layer (SeCO's Stage 2), or frees them. <paramref name="cacheScale"/> is
    /// b of docs/ALGORITHM.md: a chunk's keys/values receive b × the gradient later chunks sent them
    /// (<see cref="CachedPrefix.CacheScale"/>).
    /// </summary>
    public void TrackGradients(bool track, double cacheScale = 1)
    {
        FreeGradients();
        _cacheScale = cacheScale;
        if (!track) return;
        _keyGradients = Keys.Select(b => zeros_like(b)).ToArray();
        _valueGradients = Values.Select(b => zeros_like(b)).ToArray();
    }

    /// <summary>
    /// Positions [0, start) of one layer, with their gradient buffers when gradients are tracked; null for a chunk at
    /// position 0 when they are not (it attends to itself alone). While they are tracked even the first chunk has its
    /// (empty) prefix: the attention's backward is where a chunk's keys/values receive what later chunks sent them.
    /// </summary>
    internal CachedPrefix? Prefix(int layer, long start) =>
        start == 0 && _keyGradients is null
            ? null
            : new(Keys[layer], Values[layer], _keyGradients?[layer], _valueGradients?[layer], start) { Phases = Phases, CacheScale = _cacheScale };

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
