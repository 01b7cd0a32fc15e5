using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Rotary position embedding as in Hugging Face's modeling_llama.py: inv_freq = 1 / theta^(2i/d), optionally rescaled
/// (<c>linear</c>, <c>llama3</c>), cos/sin of position · inv_freq duplicated over both halves of the head, and
/// x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁]. The sine table carries rotate_half's sign
/// ([−sin ; sin]), so that a rotation is the halves swapped (one roll) and three arithmetic operations.
/// </summary>
internal static class RotaryEmbedding
{
    /// <summary>The rotary inverse frequencies, d/2 of them, computed in double precision on the host.</summary>
    public static double[] InverseFrequencies(ModelConfig config)
    {
        int d = config.HeadDim;
        // HF computes base ** (arange(0, d, 2) / d) in float32; in double the values differ by < 1 ulp of float32.
        var inv = Enumerable.Range(0, d / 2).Select(i => 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / d)).ToArray();
        switch (config.RopeScaling)
        {
            case null:
                return inv;
            case { Type: "linear" } s:
                return inv.Select(f => f / s.Factor).ToArray();
            case { Type: "llama3" } s:
                double lowFreqWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highFreqWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                return inv.Select(f =>
                {
                    double wavelen = 2 * Math.PI / f;
                    if (wavelen < highFreqWavelen) return f;
                    if (wavelen > lowFreqWavelen) return f / s.Factor;
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    return (1 - smooth) * f / s.Factor + smooth * f;
                }).ToArray();
            default:
                throw new NotSupportedException($"rope_scaling type '{config.RopeScaling.Type}' is not supported.");
        }
    }

    /// <summary>
    /// cos and the signed sin ([−sin ; sin] over the two halves) for absolute positions [start, start + length), each
    /// [length, head_dim], in <paramref name="dtype"/>.
    /// </summary>
    public static (Tensor Cos, Tensor SignedSin) CosSin(double[] inverseFrequencies, long start, long length, ScalarType dtype, Device device)
    {
        using var inv = tensor(inverseFrequencies, dtype: ScalarType.Float64, device: device);
        return CosSin(inv, start, length, dtype, device);
    }

    /// <summary>As <see cref="CosSin(double[], long, long, ScalarType, Device)"/>, from float64 inverse frequencies already on the device.</summary>
    public static (Tensor Cos, Tensor SignedSin) CosSin(Tensor inverseFrequencies, long start, long length, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        // Angles in float32 as HF does for low-precision models, in float64 for float64 models.
        var angleType = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var positions = arange(start, start + length, dtype: angleType, device: device);
        var inv = inverseFrequencies.to(angleType);
        var freqs = outer(positions, inv);
        var emb = cat(new[] { freqs, freqs }, -1);
        var sin = freqs.sin();
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), cat(new[] { sin.neg(), sin }, -1).to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>Rotates x [..., length, head_dim] by the positions whose cos and signed sin (<see cref="CosSin(Tensor, long, long, ScalarType, Device)"/>) are given.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor signedSin) =>
        // roll swaps the halves: [x₂, x₁] · [−sin ; sin] = rotate_half(x) · sin.
        (x * cos).add_(x.roll(x.shape[^1] / 2, -1).mul_(signedSin));
}
