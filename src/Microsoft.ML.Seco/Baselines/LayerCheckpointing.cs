using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Baselines;

/// <summary>
/// Layer-wise gradient checkpointing, the paper's memory baseline: the forward keeps only each decoder layer's input;
/// the backward walks the layers in reverse, recomputing one layer's graph from its saved input and
/// backpropagating the gradient of its output. TorchSharp has no torch.utils.checkpoint, so the reverse pass is manual.
/// </summary>
public sealed class LayerCheckpointing : ITrainingStep
{
    /// <inheritdoc/>
    public string Name => "checkpoint";

    /// <inheritdoc/>
    public StepResult Run(CausalLM model, TokenBatch batch)
    {
        if (model.training && model.HasStochasticLayers)
            throw new NotSupportedException("Layer checkpointing does not replay dropout; use LoRA dropout 0 with this baseline.");
        using var scope = NewDisposeScope();
        using var targets = batch.LabelledTargets((int)batch.Length);
        long labelled = targets.Count;
        var layers = model.Layers;
        using var positions = model.Positions(0, batch.Length);

        // Forward without a graph, keeping each layer's input.
        var inputs = new Tensor[layers.Count + 1];
        using (no_grad())
        {
            inputs[0] = model.Embed(batch.InputIds);
            for (int l = 0; l < layers.Count; l++)
            {
                // Each layer's intermediates (attention scores, MLP activations) go when the layer is done.
                using var layerScope = NewDisposeScope();
                inputs[l + 1] = layers[l].Forward(inputs[l], positions, null).Hidden.MoveToOuterDisposeScope();
            }
        }

        // Head: loss from the last hidden state, gradient with respect to it.
        var last = inputs[^1].detach().requires_grad_(true);
        var loss = model.LossSum(model.FinalNorm(last), targets.Targets, targets.PositionsOf(0)) / labelled;
        loss.backward();
        var gradient = last.grad!;

        // Layers in reverse: rebuild one layer's graph, push the output gradient through it.
        for (int l = layers.Count - 1; l >= 0; l--)
        {
            using var layerScope = NewDisposeScope();
            var input = inputs[l].detach().requires_grad_(true);
            // The rebuilt graph keeps what autograd saved; the forward's other intermediates go before the backward runs.
            Tensor output;
            using (var forwardScope = NewDisposeScope()) output = layers[l].Forward(input, positions, null).Hidden.MoveToOuterDisposeScope();
            autograd.backward(new[] { output }, new[] { gradient });
            gradient = input.grad!.MoveToOuterDisposeScope();
            inputs[l + 1].Dispose();
        }

        // Embeddings last (trainable only in full fine-tuning).
        var embedded = model.Embed(batch.InputIds);
        if (embedded.requires_grad) autograd.backward(new[] { embedded }, new[] { gradient });
        return new StepResult(loss.to(ScalarType.Float64).item<double>(), labelled, 1, 1, 1, 1);
    }
}
