namespace Microsoft.ML.Seco;

/// <summary>
/// The rotary scaling a fine-tuning run applies to the base model (<see cref="ChunkwiseLoraTrainer.Options.RopeScaling"/>),
/// with the meaning Hugging Face transformers gives each type.
/// </summary>
public enum RopeScalingType
{
    /// <summary>As the base model's config.json says (its rope_scaling, or none).</summary>
    Model,
    /// <summary>No scaling, whatever the base model's config.json says.</summary>
    None,
    /// <summary>Positions divided by the factor (position interpolation).</summary>
    Linear,
    /// <summary>
    /// NTK-aware dynamic scaling. Exact only up to the base model's max_position_embeddings, where it leaves the
    /// frequencies unscaled: beyond it transformers derives them from the length of the whole forward, which chunk-wise
    /// processing cannot reproduce, so longer sequences are refused (docs/ENGINE.md, RoPE scaling).
    /// </summary>
    Dynamic,
    /// <summary>YaRN: band-wise interpolation, with cos and sin scaled by its attention factor.</summary>
    Yarn,
    /// <summary>Llama 3.1's band-wise scaling (low_freq_factor 1 and high_freq_factor 4 unless the base model's llama3 scaling says otherwise).</summary>
    Llama3,
}
