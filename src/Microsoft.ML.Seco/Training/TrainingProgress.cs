namespace Microsoft.ML.Seco.Training;

/// <summary>Reported after every optimizer step.</summary>
/// <param name="Step">Optimizer steps completed so far (1-based number of this step), counted across resumes.</param>
/// <param name="TotalSteps">Steps the run will take, when known (MaxSteps, or batches per epoch × epochs).</param>
/// <param name="Epoch">The epoch this step belongs to, 1-based.</param>
/// <param name="Loss">Mean of the step's micro-batch losses (each the exact mean token loss of its batch).</param>
/// <param name="LearningRate">The learning rate this step was taken with.</param>
/// <param name="TokensPerSecond">Token positions (padding included) processed per second since this call to Train began.</param>
/// <param name="Elapsed">Time since this call to Train began.</param>
/// <param name="Eta">Estimated time to <paramref name="TotalSteps"/> at the pace of this call, when the total is known.</param>
/// <param name="PeakMemoryBytes">The process's peak working set so far (host memory).</param>
/// <param name="ValidationLoss">Mean token loss on the validation batches, on the last step of an epoch (and the final step).</param>
/// <param name="ValidationPerplexity">exp(<paramref name="ValidationLoss"/>).</param>
public sealed record TrainingProgress(int Step, int? TotalSteps, int Epoch, double Loss, double LearningRate, double TokensPerSecond,
    TimeSpan Elapsed, TimeSpan? Eta, long PeakMemoryBytes, double? ValidationLoss, double? ValidationPerplexity);

/// <summary>What a call to <see cref="Trainer.Train"/> did.</summary>
/// <param name="Steps">Optimizer steps completed in total (across resumes).</param>
/// <param name="Epochs">Epochs completed in total.</param>
/// <param name="FinalLoss">The loss of the last optimizer step (NaN when this call took none).</param>
/// <param name="ValidationLoss">The last validation loss measured in this call, if any.</param>
/// <param name="Elapsed">Duration of this call.</param>
/// <param name="Cancelled">The call stopped early on cancellation, at an optimizer-step boundary.</param>
/// <param name="History">The progress records of this call, one per optimizer step.</param>
public sealed record TrainingSummary(int Steps, int Epochs, double FinalLoss, double? ValidationLoss, TimeSpan Elapsed, bool Cancelled,
    IReadOnlyList<TrainingProgress> History);

/// <summary>The loss or the gradient norm became NaN or infinite; no update was applied for that step.</summary>
public sealed class TrainingDivergedException : Exception
{
    /// <summary>The optimizer step (1-based) at which the non-finite value appeared.</summary>
    public int Step { get; }

    /// <summary>Creates the exception for <paramref name="step"/>; the message names the step and suggests a remedy.</summary>
    public TrainingDivergedException(int step, string what)
        : base($"Training diverged at optimizer step {step}: {what}. No update was applied for this step. " +
               "Lower LearningRate, enable gradient clipping (MaxGradNorm), add warmup, or train in float32 rather than half precision.")
    {
        Step = step;
    }

    /// <summary>Creates the exception with a message of its own.</summary>
    public TrainingDivergedException() { }

    /// <summary>Creates the exception with a message of its own.</summary>
    public TrainingDivergedException(string message) : base(message) { }

    /// <summary>Creates the exception with a message of its own and an inner exception.</summary>
    public TrainingDivergedException(string message, Exception innerException) : base(message, innerException) { }
}
