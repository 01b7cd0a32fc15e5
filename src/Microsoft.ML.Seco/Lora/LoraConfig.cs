namespace Microsoft.ML.Seco.Lora;

/// <summary>
/// LoRA hyper-parameters with the meaning (and JSON names, in adapter_config.json) that Hugging Face PEFT uses:
/// y = W x + (lora_alpha / r) · B(A(dropout(x))).
/// </summary>
public sealed record LoraConfig
{
    /// <summary>The attention projections PEFT targets by default for Llama-family models.</summary>
    public static readonly IReadOnlyList<string> AttentionProjections = new[] { "q_proj", "k_proj", "v_proj", "o_proj" };
    /// <summary>The MLP projections, which can be added to <see cref="TargetModules"/>.</summary>
    public static readonly IReadOnlyList<string> MlpProjections = new[] { "gate_proj", "up_proj", "down_proj" };

    /// <summary>Rank r of the update B·A (PEFT <c>r</c>). Default 8.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>Scale numerator (PEFT <c>lora_alpha</c>); the update is multiplied by alpha / r. Default 16.</summary>
    public double Alpha { get; init; } = 16;
    /// <summary>Dropout on the LoRA input (PEFT <c>lora_dropout</c>), in [0, 1). Default 0.</summary>
    public double Dropout { get; init; }
    /// <summary>Projection names that get adapters (PEFT <c>target_modules</c>). Default: q, k, v, o.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = AttentionProjections;

    /// <summary>alpha / r.</summary>
    public double Scaling => Alpha / Rank;

    /// <summary>Throws an <see cref="OptionException"/> when a value is out of range, naming it.</summary>
    public void Validate()
    {
        if (Rank <= 0) throw new OptionException(nameof(Rank), Rank, "{Rank} must be at least 1");
        if (!(Alpha > 0)) throw new OptionException(nameof(Alpha), Alpha, "{Alpha} must be positive");
        if (!(Dropout >= 0 && Dropout < 1)) throw new OptionException(nameof(Dropout), Dropout, "{Dropout} must be in [0, 1)");
        if (TargetModules.Count == 0) throw new OptionException(nameof(TargetModules), null, "{TargetModules} is empty: LoRA needs at least one target module");
        var known = AttentionProjections.Concat(MlpProjections).ToHashSet();
        var unknown = TargetModules.Where(m => !known.Contains(m)).ToList();
        if (unknown.Count > 0)
            throw new OptionException(nameof(TargetModules), unknown.ToArray(),
                "{TargetModules} names unknown LoRA target module(s) {value}; known: " + OptionException.Escape(string.Join(", ", known)));
    }
}
