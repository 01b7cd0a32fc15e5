using Microsoft.ML.Seco.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Lora;

/// <summary>
/// A linear projection with a LoRA adapter: y = W x (+ b) + (alpha / r) · B(A(dropout(x))). It takes the place of a
/// model's plain projection (<see cref="LoraAdapters.Attach"/>), sharing its weight and bias. Parameter names match
/// Hugging Face checkpoints (<c>weight</c>, <c>bias</c>) and PEFT adapters (<c>lora_A.weight</c>, <c>lora_B.weight</c>),
/// so both load and save by name.
/// </summary>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>, IStochasticLayer
{
    // Fields named exactly like the registered parameters and modules: TorchSharp's Module.to() finds them by name
    // when it replaces tensors, and the names are Hugging Face's and PEFT's.
#pragma warning disable IDE1006, CA1051
    /// <summary>The frozen base weight, [out, in].</summary>
    public Parameter weight;
    /// <summary>The base bias, or null.</summary>
    public Parameter? bias;
    /// <summary>LoRA down-projection A, [r, in]: Kaiming-uniform, as PEFT and nn.Linear.</summary>
    public Linear lora_A;
    /// <summary>LoRA up-projection B, [out, r]; zero-initialised so a fresh adapter changes nothing.</summary>
    public Linear lora_B;
#pragma warning restore IDE1006, CA1051

    readonly double _scaling;
    readonly double _dropout;
    bool _merged;

    /// <summary>
    /// Wraps a projection's <paramref name="weight"/> [out, in] and <paramref name="bias"/> (shared, not copied) with a
    /// fresh adapter. A's initialisation draws from torch's global generator.
    /// </summary>
    public LoraLinear(Parameter weight, Parameter? bias, LoraConfig config) : base("LoraLinear")
    {
        config.Validate();
        this.weight = weight;
        register_parameter(nameof(weight), weight);
        if (bias is not null)
        {
            this.bias = bias;
            register_parameter(nameof(bias), bias);
        }
        lora_A = nn.Linear(InFeatures, config.Rank, hasBias: false, device: weight.device, dtype: weight.dtype);
        lora_B = nn.Linear(config.Rank, OutFeatures, hasBias: false, device: weight.device, dtype: weight.dtype);
        using (no_grad()) lora_B.weight!.zero_();
        register_module(nameof(lora_A), lora_A);
        register_module(nameof(lora_B), lora_B);
        Config = config;
        _scaling = config.Scaling;
        _dropout = config.Dropout;
    }

    /// <summary>The adapter's hyper-parameters.</summary>
    public LoraConfig Config { get; }
    /// <summary>In features.</summary>
    public long InFeatures => weight.shape[1];
    /// <summary>Out features.</summary>
    public long OutFeatures => weight.shape[0];
    /// <summary>True while the adapter's update is folded into <see cref="weight"/>.</summary>
    public bool IsMerged => _merged;
    /// <summary>True when LoRA dropout is on: the layer draws random numbers in training mode.</summary>
    public bool IsStochastic => _dropout > 0;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var y = nn.functional.linear(x, weight, bias);
        if (_merged) return y;
        var h = _dropout > 0 ? nn.functional.dropout(x, _dropout, training) : x;
        return y.AddScaled_(lora_B.forward(lora_A.forward(h)), _scaling);
    }

    /// <summary>Folds the adapter into the base weight: W ← W + scaling · B A.</summary>
    public void Merge()
    {
        if (_merged) return;
        using var _ = no_grad();
        weight.AddScaled_(matmul(lora_B.weight!, lora_A.weight!), _scaling);
        _merged = true;
    }

    /// <summary>Undoes <see cref="Merge"/>: W ← W − scaling · B A.</summary>
    public void Unmerge()
    {
        if (!_merged) return;
        using var _ = no_grad();
        weight.AddScaled_(matmul(lora_B.weight!, lora_A.weight!), -_scaling);
        _merged = false;
    }
}
