using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Baselines;

/// <summary>
/// Plain training ("naive parallel" in the paper): the whole sequence forward with a graph, one backward.
/// The reference the chunk-wise strategies are checked against; its activation memory grows with the length.
/// </summary>
public sealed class FullBackprop : ITrainingStep
{
    /// <inheritdoc/>
    public string Name => "full";

    /// <inheritdoc/>
    public StepResult Run(CausalLM model, TokenBatch batch)
    {
        using var scope = NewDisposeScope();
        using var targets = batch.LabelledTargets((int)batch.Length);
        long labelled = targets.Count;
        var (hidden, _) = model.ForwardChunk(batch.InputIds, 0, null);
        var loss = model.LossSum(hidden, targets.Targets, targets.PositionsOf(0)) / labelled;
        loss.backward();
        return new StepResult(loss.to(ScalarType.Float64).item<double>(), labelled, 1, 1, 1, 1);
    }
}
