using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Lora;

/// <summary>
/// A linear projection y = W x (+ b) that can carry a LoRA adapter: y += (alpha / r) · B(A(dropout(x))).
/// Parameter names match Hugging Face checkpoints (<c>weight</c>, <c>bias</c>) and PEFT adapters
/// (<c>lora_A.weight</c>, <c>lora_B.weight</c>), so both load and save by name.
/// </summary>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    // Fields named exactly like the registered parameters and modules: TorchSharp's Module.to() finds them by name
    // when it replaces tensors, and the names are Hugging Face's and PEFT's.
#pragma warning disable IDE1006, CA1051
    /// <summary>The frozen base weight, [out, in].</summary>
    public Parameter weight;
    /// <summary>The base bias, or null.</summary>
    public Parameter? bias;
    /// <summary>LoRA down-projection A, [r, in]; null until <see cref="AttachAdapter"/>.</summary>
    public Linear? lora_A;
    /// <summary>LoRA up-projection B, [out, r]; zero-initialised so a fresh adapter changes nothing.</summary>
    public Linear? lora_B;
#pragma warning restore IDE1006, CA1051

    double _scaling;
    double _dropout;
    bool _merged;

    /// <summary>Creates an uninitialised projection; weights come from a checkpoint or an initialiser.</summary>
    public LoraLinear(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device device) : base("LoraLinear")
    {
        weight = new Parameter(empty(outFeatures, inFeatures, dtype: dtype, device: device), requires_grad: false);
        register_parameter(nameof(weight), weight);
        if (hasBias)
        {
            bias = new Parameter(zeros(outFeatures, dtype: dtype, device: device), requires_grad: false);
            register_parameter(nameof(bias), bias);
        }
    }

    /// <summary>In features.</summary>
    public long InFeatures => weight.shape[1];
    /// <summary>Out features.</summary>
    public long OutFeatures => weight.shape[0];
    /// <summary>True when an adapter is attached.</summary>
    public bool HasAdapter => lora_A is not null;
    /// <summary>True while the adapter's update is folded into <see cref="weight"/>.</summary>
    public bool IsMerged => _merged;

    /// <summary>Adds an adapter: A Kaiming-uniform (as PEFT and nn.Linear), B zeros.</summary>
    public void AttachAdapter(LoraConfig config)
    {
        if (HasAdapter) throw new InvalidOperationException("This projection already has a LoRA adapter.");
        config.Validate();
        var a = nn.Linear(InFeatures, config.Rank, hasBias: false, device: weight.device, dtype: weight.dtype);
        var b = nn.Linear(config.Rank, OutFeatures, hasBias: false, device: weight.device, dtype: weight.dtype);
        using (no_grad())
        {
            // nn.Linear's default init is kaiming_uniform(a = sqrt(5)), PEFT's init for lora_A.
            b.weight!.zero_();
        }
        lora_A = a;
        lora_B = b;
        register_module(nameof(lora_A), a);
        register_module(nameof(lora_B), b);
        _scaling = config.Scaling;
        _dropout = config.Dropout;
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var y = nn.functional.linear(x, weight, bias);
        if (lora_A is null || lora_B is null || _merged) return y;
        var h = _dropout > 0 ? nn.functional.dropout(x, _dropout, training) : x;
        return y.add_(lora_B.forward(lora_A.forward(h)), alpha: _scaling);
    }

    /// <summary>Folds the adapter into the base weight: W ← W + scaling · B A.</summary>
    public void Merge()
    {
        if (lora_A is null || lora_B is null || _merged) return;
        using var _ = no_grad();
        weight.add_(matmul(lora_B.weight!, lora_A.weight!), alpha: _scaling);
        _merged = true;
    }

    /// <summary>Undoes <see cref="Merge"/>: W ← W − scaling · B A.</summary>
    public void Unmerge()
    {
        if (lora_A is null || lora_B is null || !_merged) return;
        using var _ = no_grad();
        weight.add_(matmul(lora_B.weight!, lora_A.weight!), alpha: -_scaling);
        _merged = false;
    }
}
