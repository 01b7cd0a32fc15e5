using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Rotary position embedding as in Hugging Face's modeling_llama.py: inv_freq = 1 / theta^(2i/d), optionally rescaled
/// (<c>linear</c>, <c>llama3</c>, <c>yarn</c>, <c>dynamic</c>: modeling_rope_utils.py), cos/sin of position · inv_freq
/// duplicated over both halves of the head, both multiplied by the attention factor (yarn's; 1 otherwise), and
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
            case { Type: "yarn" } s:
                return YarnInverseFrequencies(inv, s, config.RopeTheta, d);
            case { Type: "dynamic" }:
                // transformers' _compute_dynamic_ntk_parameters with seq_len ≤ max_position_embeddings leaves the base as
                // it is: base · (factor · L / max − (factor − 1))^(d/(d−2)) = base at L = max. Longer sequences would
                // change every frequency with the sequence's length, which a chunk with a cache cannot know: refused
                // position by position (PositionLimit).
                return inv;
            default:
                throw new NotSupportedException($"rope_scaling type '{config.RopeScaling.Type}' is not supported.");
        }
    }

    // transformers' _compute_yarn_parameters: dimensions that turn fewer than beta_slow times over the original context
    // are interpolated (divided by the factor), those that turn more than beta_fast times are kept, and a linear ramp
    // over the dimension index blends the two in between.
    static double[] YarnInverseFrequencies(double[] extrapolation, RopeScaling s, double theta, int d)
    {
        double CorrectionDim(double rotations) => d * Math.Log(s.OriginalMaxPositionEmbeddings / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = CorrectionDim(s.BetaFast), high = CorrectionDim(s.BetaSlow);
        if (s.Truncate) (low, high) = (Math.Floor(low), Math.Ceiling(high));
        (low, high) = (Math.Max(low, 0), Math.Min(high, d - 1));
        if (low == high) high += 0.001; // transformers: prevents a division by zero
        return extrapolation.Select((f, i) =>
        {
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
            double keep = 1 - ramp; // transformers' inv_freq_extrapolation_factor
            return f / s.Factor * (1 - keep) + f * keep;
        }).ToArray();
    }

    /// <summary>
    /// The factor cos and sin are multiplied by (transformers' attention_scaling): yarn's attention_factor, or
    /// 0.1 · ln(factor) + 1 (mscale), or with mscale and mscale_all_dim their ratio mscale(factor, mscale) /
    /// mscale(factor, mscale_all_dim); 1 for every other type.
    /// </summary>
    public static double AttentionScaling(ModelConfig config)
    {
        if (config.RopeScaling is not { Type: "yarn" } s) return 1;
        if (s.AttentionFactor is double given) return given;
        static double MscaleOf(double scale, double mscale) => scale <= 1 ? 1 : 0.1 * mscale * Math.Log(scale) + 1;
        // Python's `if mscale and mscale_all_dim`: both present and non-zero.
        return s.Mscale is double m && m != 0 && s.MscaleAllDim is double all && all != 0
            ? MscaleOf(s.Factor, m) / MscaleOf(s.Factor, all)
            : MscaleOf(s.Factor, 1);
    }

    /// <summary>
    /// The first position the model cannot rotate exactly, or null when every position can: for <c>dynamic</c> scaling,
    /// max_position_embeddings (beyond it transformers derives the frequencies from the length of the whole forward,
    /// which a chunk processed against a key/value cache does not know, and which would change the rotation of keys
    /// already cached).
    /// </summary>
    public static long? PositionLimit(ModelConfig config) => config.RopeScaling is { Type: "dynamic" } ? config.MaxPositionEmbeddings : null;

    /// <summary>Throws when positions [start, start + length) reach <see cref="PositionLimit"/>.</summary>
    public static void CheckPositions(long? limit, long start, long length)
    {
        if (limit is long max && start + length > max)
            throw new NotSupportedException(
                $"rope_scaling 'dynamic' rotates positions up to max_position_embeddings ({max}) exactly, and position {start + length - 1} was asked: " +
                "beyond that length transformers recomputes every frequency from the length of the whole forward, which chunk-wise " +
                "processing with a key/value cache cannot reproduce (each chunk would need the document's final length, and keys " +
                $"already cached would change). Keep sequences to {max} tokens, or use rope_scaling 'yarn' or 'linear'.");
    }

    /// <summary>
    /// cos and the signed sin ([−sin ; sin] over the two halves) for absolute positions [start, start + length), each
    /// [length, head_dim], in <paramref name="dtype"/>.
    /// </summary>
    public static (Tensor Cos, Tensor SignedSin) CosSin(double[] inverseFrequencies, long start, long length, ScalarType dtype, Device device, double attentionScaling = 1)
    {
        using var inv = tensor(inverseFrequencies, dtype: ScalarType.Float64, device: device);
        return CosSin(inv, start, length, dtype, device, attentionScaling);
    }

    /// <summary>As <see cref="CosSin(double[], long, long, ScalarType, Device, double)"/>, from float64 inverse frequencies already on the device.</summary>
    public static (Tensor Cos, Tensor SignedSin) CosSin(Tensor inverseFrequencies, long start, long length, ScalarType dtype, Device device, double attentionScaling = 1)
    {
        using var scope = NewDisposeScope();
        // Angles in float32 as HF does for low-precision models, in float64 for float64 models.
        var angleType = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var positions = arange(start, start + length, dtype: angleType, device: device);
        var inv = inverseFrequencies.to(angleType);
        var freqs = outer(positions, inv);
        var emb = cat(new[] { freqs, freqs }, -1);
        var sin = freqs.sin();
        var cos = emb.cos();
        // transformers: cos = emb.cos() * attention_scaling, sin likewise, in the angles' dtype, then cast.
        if (attentionScaling != 1)
        {
            cos = cos.mul_(attentionScaling);
            sin = sin.mul_(attentionScaling);
        }
        return (cos.to(dtype).MoveToOuterDisposeScope(), cat(new[] { sin.neg(), sin }, -1).to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>Rotates x [..., length, head_dim] by the positions whose cos and signed sin (<see cref="CosSin(Tensor, long, long, ScalarType, Device, double)"/>) are given.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor signedSin) =>
        // roll swaps the halves: [x₂, x₁] · [−sin ; sin] = rotate_half(x) · sin.
        (x * cos).add_(x.roll(x.shape[^1] / 2, -1).mul_(signedSin));
}
