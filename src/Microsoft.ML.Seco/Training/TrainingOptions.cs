namespace Microsoft.ML.Seco.Training;

/// <summary>How the learning rate decays after warmup.</summary>
public enum LearningRateSchedule
{
    /// <summary>The peak learning rate throughout.</summary>
    Constant,
    /// <summary>Straight line from the peak down to the minimum.</summary>
    Linear,
    /// <summary>Half a cosine from the peak down to the minimum.</summary>
    Cosine,
}

/// <summary>What the training loop does when a loss or the gradient norm is NaN or infinite.</summary>
public enum NonFiniteLossAction
{
    /// <summary>Stop the run with a <see cref="TrainingDivergedException"/> naming the step and its batches; no update is applied.</summary>
    Stop,
    /// <summary>
    /// Discard the optimizer step that holds the batch (its gradients are dropped, no update is applied), count its
    /// batches in <see cref="TrainingSummary.SkippedBatches"/> and go on.
    /// </summary>
    SkipBatch,
}

/// <summary>Optimizer, schedule and loop settings of a <see cref="Trainer"/>.</summary>
public sealed record TrainingOptions
{
    /// <summary>Peak learning rate. Default 1e-4.</summary>
    public double LearningRate { get; init; } = 1e-4;
    /// <summary>AdamW's decoupled weight decay, applied to matrices only (not to biases and norm weights). Default 0.</summary>
    public double WeightDecay { get; init; }
    /// <summary>AdamW's first-moment decay. Default 0.9.</summary>
    public double Beta1 { get; init; } = 0.9;
    /// <summary>AdamW's second-moment decay. Default 0.999.</summary>
    public double Beta2 { get; init; } = 0.999;
    /// <summary>AdamW's denominator term. Default 1e-8.</summary>
    public double Epsilon { get; init; } = 1e-8;
    /// <summary>Optimizer steps of linear warmup. Default 0. Set this or <see cref="WarmupRatio"/>, not both.</summary>
    public int WarmupSteps { get; init; }
    /// <summary>Warmup as a fraction of the total optimizer steps (rounded up); needs the total to be known.</summary>
    public double? WarmupRatio { get; init; }
    /// <summary>Decay after warmup. Default <see cref="LearningRateSchedule.Cosine"/>.</summary>
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Cosine;
    /// <summary>The learning rate the decay tends to, as a fraction of the peak. Default 0.</summary>
    public double MinLearningRateRatio { get; init; }
    /// <summary>Gradients are rescaled so that their global L2 norm is at most this; positive, or null for no clipping. Default 1.</summary>
    public double? MaxGradNorm { get; init; } = 1.0;
    /// <summary>Micro-batches whose gradients are averaged into one optimizer step. Default 1.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>Passes over the data when <see cref="MaxSteps"/> is null. Default 1.</summary>
    public int MaxEpoch { get; init; } = 1;
    /// <summary>Optimizer steps to run; when set it overrides <see cref="MaxEpoch"/> (epochs repeat as needed). Default null.</summary>
    public int? MaxSteps { get; init; }
    /// <summary>Seeds torch's global generator when training starts from step 0 (dropout of whole-sequence steps).</summary>
    public int Seed { get; init; }
    /// <summary>
    /// What a NaN or infinite loss or gradient norm does: <see cref="NonFiniteLossAction.Stop"/> (default) stops the run
    /// naming the step and its batches, <see cref="NonFiniteLossAction.SkipBatch"/> drops that optimizer step and counts
    /// its batches. Either way no update is applied from non-finite values.
    /// </summary>
    public NonFiniteLossAction NonFiniteLoss { get; init; } = NonFiniteLossAction.Stop;

    /// <summary>Throws an <see cref="OptionException"/> naming the first option out of range.</summary>
    public void Validate()
    {
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) Throw(nameof(LearningRate), LearningRate, "{LearningRate} must be positive and finite");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) Throw(nameof(WeightDecay), WeightDecay, "{WeightDecay} must be zero or positive and finite");
        if (!(Beta1 >= 0 && Beta1 < 1)) Throw(nameof(Beta1), Beta1, "{Beta1} must be in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) Throw(nameof(Beta2), Beta2, "{Beta2} must be in [0, 1)");
        if (!(Epsilon >= 0) || double.IsInfinity(Epsilon)) Throw(nameof(Epsilon), Epsilon, "{Epsilon} must be zero or positive and finite");
        if (WarmupSteps < 0) Throw(nameof(WarmupSteps), WarmupSteps, "{WarmupSteps} must not be negative");
        if (WarmupRatio is double ratio)
        {
            if (!(ratio >= 0 && ratio <= 1)) Throw(nameof(WarmupRatio), ratio, "{WarmupRatio} must be in [0, 1]");
            if (WarmupSteps != 0) Throw(nameof(WarmupRatio), ratio, "{WarmupRatio} cannot be combined with {WarmupSteps}; set one of them");
        }
        if (!Enum.IsDefined(NonFiniteLoss)) Throw(nameof(NonFiniteLoss), NonFiniteLoss, "{NonFiniteLoss} is not a known action");
        if (!Enum.IsDefined(Schedule)) Throw(nameof(Schedule), Schedule, "{Schedule} is not a known schedule");
        if (!(MinLearningRateRatio >= 0 && MinLearningRateRatio <= 1)) Throw(nameof(MinLearningRateRatio), MinLearningRateRatio, "{MinLearningRateRatio} must be in [0, 1]");
        if (MaxGradNorm is double norm && (!(norm > 0) || double.IsInfinity(norm))) Throw(nameof(MaxGradNorm), norm, "{MaxGradNorm} must be positive and finite (null for no clipping)");
        if (GradientAccumulationSteps < 1) Throw(nameof(GradientAccumulationSteps), GradientAccumulationSteps, "{GradientAccumulationSteps} must be at least 1");
        if (MaxEpoch < 1) Throw(nameof(MaxEpoch), MaxEpoch, "{MaxEpoch} must be at least 1");
        if (MaxSteps is < 1) Throw(nameof(MaxSteps), MaxSteps, "{MaxSteps} must be at least 1 (or null to let {MaxEpoch} decide)");
    }

    static void Throw(string name, object? value, string rule) => throw new OptionException(name, value, rule);

    /// <summary>Optimizer steps of warmup for a run of <paramref name="totalSteps"/> steps (null when unknown).</summary>
    /// <exception cref="ArgumentException"><see cref="WarmupRatio"/> is set but the total is unknown.</exception>
    public int WarmupStepsFor(int? totalSteps)
    {
        if (WarmupRatio is not double ratio) return WarmupSteps;
        if (totalSteps is not int total)
            throw new ArgumentException("WarmupRatio needs the total number of steps: set MaxSteps or pass the number of batches per epoch.", nameof(totalSteps));
        return (int)Math.Ceiling(ratio * total);
    }

    /// <summary>
    /// The learning rate of optimizer step <paramref name="step"/> (1-based) out of <paramref name="totalSteps"/>.
    /// With W warmup steps, peak η and floor m·η: steps s ≤ W use η·s/W (the first step already moves); after
    /// warmup p = (s − W − 1) / (T − W) runs from 0 (first decay step at the peak) towards 1, so no step is spent at
    /// the floor; Linear gives m·η + (η − m·η)(1 − p), Cosine m·η + (η − m·η)(1 + cos πp)/2. With the total unknown
    /// the rate stays at the peak after warmup.
    /// </summary>
    public double LearningRateAt(int step, int? totalSteps)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "Optimizer steps are numbered from 1.");
        int warmup = WarmupStepsFor(totalSteps);
        if (step <= warmup) return LearningRate * step / warmup;
        if (Schedule == LearningRateSchedule.Constant || totalSteps is not int total || total <= warmup) return LearningRate;
        double progress = Math.Clamp((double)(step - warmup - 1) / (total - warmup), 0, 1);
        double floor = MinLearningRateRatio * LearningRate;
        double shape = Schedule == LearningRateSchedule.Linear ? 1 - progress : (1 + Math.Cos(Math.PI * progress)) / 2;
        return floor + (LearningRate - floor) * shape;
    }
}
