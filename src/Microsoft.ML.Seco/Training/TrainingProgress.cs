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
/// <param name="PeakMemoryBytes">Peak resident memory of the process during this optimizer step (host memory). On Linux the
/// kernel's peak counter is reset when the step starts, so the figure goes down again when a step needs less; elsewhere
/// it is the process's peak working set since it started.</param>
/// <param name="ValidationLoss">Mean token loss on the validation batches, on the last step of an epoch (and the final step).</param>
/// <param name="ValidationPerplexity">exp(<paramref name="ValidationLoss"/>).</param>
/// <param name="SkippedBatches">Batches dropped so far in this call for a non-finite loss or gradient
/// (<see cref="NonFiniteLossAction.SkipBatch"/>); when this step was one of them, <paramref name="Loss"/> is NaN.</param>
/// <param name="DeviceMemoryBytes">On CUDA, the device memory in use after this step, read through the CUDA driver: the
/// weights, the optimizer state and libtorch's cached blocks, so the high-water mark of the run so far (it includes any
/// other process on the device). Null on the CPU.</param>
public sealed record TrainingProgress(int Step, int? TotalSteps, int Epoch, double Loss, double LearningRate, double TokensPerSecond,
    TimeSpan Elapsed, TimeSpan? Eta, long PeakMemoryBytes, double? ValidationLoss, double? ValidationPerplexity, int SkippedBatches = 0,
    long? DeviceMemoryBytes = null);

/// <summary>What a call to <see cref="Trainer.Train"/> did.</summary>
/// <param name="Steps">Optimizer steps completed in total (across resumes).</param>
/// <param name="Epochs">Epochs completed in total.</param>
/// <param name="FinalLoss">The loss of the last optimizer step (NaN when this call took none).</param>
/// <param name="ValidationLoss">The last validation loss measured in this call, if any.</param>
/// <param name="Elapsed">Duration of this call.</param>
/// <param name="Cancelled">The call stopped early on cancellation, at an optimizer-step boundary.</param>
/// <param name="History">The progress records of this call, one per optimizer step.</param>
/// <param name="SkippedBatches">Batches dropped in this call for a non-finite loss or gradient (<see cref="NonFiniteLossAction.SkipBatch"/>).</param>
/// <param name="GradientAllReduce">Data-parallel training: time this rank spent summing the gradients over the ranks
/// before the optimizer steps (host copies included); zero alone.</param>
public sealed record TrainingSummary(int Steps, int Epochs, double FinalLoss, double? ValidationLoss, TimeSpan Elapsed, bool Cancelled,
    IReadOnlyList<TrainingProgress> History, int SkippedBatches = 0, TimeSpan GradientAllReduce = default);

/// <summary>The loss or the gradient norm became NaN or infinite; no update was applied for that step.</summary>
public sealed class TrainingDivergedException : Exception
{
    const string Remedy = "Lower LearningRate, enable gradient clipping (MaxGradNorm), add warmup, train in float32 rather than half " +
        "precision, or set NonFiniteLoss = SkipBatch to drop such batches.";

    /// <summary>The optimizer step (1-based) at which the non-finite value appeared.</summary>
    public int Step { get; }
    /// <summary>The epoch (1-based) of the step, when known (0 otherwise).</summary>
    public int Epoch { get; }
    /// <summary>The first batch of the step, 0-based within its epoch, when known (−1 otherwise).</summary>
    public int FirstBatch { get; } = -1;
    /// <summary>Batches (micro-batches) of the step that were run, ending with the one that diverged; 0 when unknown.</summary>
    public int BatchCount { get; }
    /// <summary>What was not finite (e.g. "the gradient norm is NaN"), or null.</summary>
    public string? Reason { get; }
    /// <summary>The data rows those batches were built from, described by whoever knows them (e.g. the ML.NET stage), or null.</summary>
    public string? Rows { get; }

    /// <summary>Creates the exception for <paramref name="step"/>; the message names the step and suggests a remedy.</summary>
    public TrainingDivergedException(int step, string what)
        : base($"Training diverged at optimizer step {step}: {what}. No update was applied for this step. {Remedy}")
    {
        Step = step;
        Reason = what;
    }

    /// <summary>
    /// Creates the exception for <paramref name="step"/> of <paramref name="epoch"/>, whose batches
    /// <paramref name="firstBatch"/> (0-based within the epoch) to <paramref name="firstBatch"/> + <paramref name="batchCount"/> − 1
    /// were run; <paramref name="rows"/> names the data rows they came from, when known.
    /// </summary>
    public TrainingDivergedException(int step, int epoch, int firstBatch, int batchCount, string what, string? rows = null, Exception? innerException = null)
        : base($"Training diverged at optimizer step {step} (epoch {epoch}, " +
               (batchCount == 1 ? $"batch {firstBatch + 1}" : $"batches {firstBatch + 1} to {firstBatch + batchCount}") +
               $" of the epoch{(rows is null ? "" : ", " + rows)}): {what}. No update was applied for this step. {Remedy}", innerException)
    {
        Step = step;
        Reason = what;
        Epoch = epoch;
        FirstBatch = firstBatch;
        BatchCount = batchCount;
        Rows = rows;
    }

    /// <summary>Creates the exception with a message of its own.</summary>
    public TrainingDivergedException() { }

    /// <summary>Creates the exception with a message of its own.</summary>
    public TrainingDivergedException(string message) : base(message) { }

    /// <summary>Creates the exception with a message of its own and an inner exception.</summary>
    public TrainingDivergedException(string message, Exception innerException) : base(message, innerException) { }
}
