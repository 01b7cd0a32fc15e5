using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using TorchSharp.Modules;

namespace Microsoft.ML.Seco.Training;

/// <summary>
/// What trains is the training side's choice, not the model's: adapters only (LoRA) or every parameter (full
/// fine-tuning). A loaded model starts with every parameter frozen.
/// </summary>
public static class TrainableParameters
{
    /// <summary>
    /// Every parameter trains (<paramref name="fullFineTuning"/>), or only the adapters' (<see cref="LoraAdapters"/>),
    /// the base weights frozen.
    /// </summary>
    public static void Select(CausalLM model, bool fullFineTuning)
    {
        foreach (var (name, p) in model.named_parameters())
            p.requires_grad = fullFineTuning || LoraAdapters.IsAdapterParameter(name);
    }

    /// <summary>The parameters that receive gradients, by name, in the model's order.</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> Of(CausalLM model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
}
