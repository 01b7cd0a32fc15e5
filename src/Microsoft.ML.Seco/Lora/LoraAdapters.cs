using Microsoft.ML.Seco.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Lora;

/// <summary>
/// Attaches LoRA to a model from outside it, as PEFT's <c>inject_adapter_in_model</c> (<c>_create_and_replace</c>) and
/// torchtune's LoRA builders do: the config's target modules decide which projections become <see cref="LoraLinear"/>;
/// the model only offers <see cref="CausalLM.Projections"/> and <see cref="CausalLM.ReplaceProjection"/>.
/// </summary>
public static class LoraAdapters
{
    /// <summary>
    /// Replaces every projection named in <paramref name="config"/>'s target modules with a <see cref="LoraLinear"/>
    /// sharing its weights. The adapters' parameters are trainable, the base weights are left as they were (frozen
    /// when loaded); the training side picks what trains (<see cref="Training.TrainableParameters.Select"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The model already has adapters.</exception>
    public static void Attach(CausalLM model, LoraConfig config)
    {
        config.Validate();
        if (ConfigOf(model) is not null) throw new InvalidOperationException("The model already has a LoRA adapter.");
        foreach (var (path, projection) in model.Projections().ToList())
        {
            if (!config.TargetModules.Contains(path[(path.LastIndexOf('.') + 1)..])) continue;
            var weight = projection.get_parameter("weight") ?? throw new InvalidOperationException($"{path} has no weight to adapt.");
            model.ReplaceProjection(path, new LoraLinear(weight, projection.get_parameter("bias"), config));
        }
    }

    /// <summary>The model's LoRA layers with their module paths, in layer order.</summary>
    public static IReadOnlyList<(string Path, LoraLinear Layer)> Of(CausalLM model) =>
        model.Projections().Where(p => p.Projection is LoraLinear).Select(p => (p.Path, (LoraLinear)p.Projection)).ToList();

    /// <summary>The configuration of the attached adapters, or null when the model has none.</summary>
    public static LoraConfig? ConfigOf(CausalLM model) => Of(model).Select(l => l.Layer.Config).FirstOrDefault();

    /// <summary>True for the name of an adapter parameter (<c>...q_proj.lora_A.weight</c>): PEFT's naming, which the files keep.</summary>
    public static bool IsAdapterParameter(string name) => name.Contains(".lora_", StringComparison.Ordinal);

    /// <summary>The adapters' parameters by full name, in the model's order.</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> Parameters(CausalLM model) =>
        model.named_parameters().Where(p => IsAdapterParameter(p.name)).Select(p => (p.name, p.parameter)).ToList();

    /// <summary>Runs <paramref name="action"/> with every adapter folded into its base weight, then unfolds them.</summary>
    public static void WithMerged(CausalLM model, Action action)
    {
        var layers = Of(model).Select(l => l.Layer).ToList();
        layers.ForEach(l => l.Merge());
        try { action(); }
        finally { layers.ForEach(l => l.Unmerge()); }
    }
}
