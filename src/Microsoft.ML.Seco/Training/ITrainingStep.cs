using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco.Training;

/// <summary>What one training step did.</summary>
/// <param name="Loss">The exact mean token loss of the batch (whatever the strategy backpropagated).</param>
/// <param name="LabelledTokens">Tokens that carried a label, the loss's denominator.</param>
/// <param name="Chunks">Chunks the sequence was split into (1 for whole-sequence strategies).</param>
/// <param name="BackpropagatedChunks">Chunks whose graph was rebuilt and backpropagated in Stage 2.</param>
/// <param name="LossFactor">Factor applied to the sampled chunks' losses (1 when exact).</param>
/// <param name="CacheFactor">Factor applied to the cache gradients injected into sampled chunks (1 when exact).</param>
public sealed record StepResult(double Loss, long LabelledTokens, int Chunks, int BackpropagatedChunks, double LossFactor, double CacheFactor);

/// <summary>
/// One training step: forward and backward over a batch, leaving gradients on the model's trainable parameters
/// (accumulated onto any already there, so several steps can accumulate) and returning the exact loss.
/// </summary>
public interface ITrainingStep
{
    /// <summary>A short name for logs and benchmarks.</summary>
    string Name { get; }

    /// <summary>Runs the step.</summary>
    StepResult Run(CausalLM model, TokenBatch batch);

    /// <summary>Tokens the step forwards at a time (a chunk-wise step's chunk), or null when it forwards whole sequences.</summary>
    int? ChunkSize => null;
}

/// <summary>
/// A training step with random state of its own (e.g. SpaCO's chunk sampler) that must survive
/// <see cref="Training.Trainer.SaveState"/>/<see cref="Training.Trainer.LoadState"/> for a resumed run to repeat an uninterrupted one.
/// </summary>
public interface IResumableTrainingStep : ITrainingStep
{
    /// <summary>The step's state as bytes.</summary>
    byte[] SaveState();

    /// <summary>Restores a state returned by <see cref="SaveState"/>.</summary>
    void LoadState(byte[] state);
}
