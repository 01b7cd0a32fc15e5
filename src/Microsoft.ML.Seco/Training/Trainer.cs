using System.Diagnostics;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Distributed;
using Microsoft.ML.Seco.Model;
using TorchSharp.Modules;
using Microsoft.ML.Seco.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Training;

/// <summary>
/// The training loop: AdamW over the model's trainable parameters, warmup and decay of the learning rate, gradient
/// clipping, gradient accumulation, divergence detection, validation, cancellation and exact resume.
/// </summary>
/// <remarks>
/// Gradient accumulation averages: each <see cref="ITrainingStep"/> leaves the gradient of its batch's mean token loss,
/// and the summed gradients of the n micro-batches of an optimizer step are divided by n before clipping. The step
/// therefore follows the mean of the micro-batch losses, each micro-batch weighing the same whatever its token count
/// (equal to the mean over all their tokens when the micro-batches have equal labelled-token counts).
/// At the end of an epoch a partial accumulation window is still applied, averaged over the micro-batches it has, so
/// an epoch of b batches takes ⌈b / <see cref="TrainingOptions.GradientAccumulationSteps"/>⌉ optimizer steps.
/// With <see cref="DataParallel"/> a micro-batch is the global batch over all ranks, its gradient the mean over all its
/// labelled tokens.
/// </remarks>
public sealed partial class Trainer : IDisposable
{
    readonly AdamW _optimizer;
    // Parameters in the optimizer's order: AdamW's state_dict lists states group by group in this order.
    readonly IReadOnlyList<(string Name, Parameter Parameter)> _parameters;

    /// <summary>The model being trained.</summary>
    public CausalLM Model { get; }
    /// <summary>The forward/backward strategy of each micro-batch.</summary>
    public ITrainingStep Step { get; }
    /// <summary>The options.</summary>
    public TrainingOptions Options { get; }
    /// <summary>Tokens per forward pass of validation. Defaults to the step's <see cref="ITrainingStep.ChunkSize"/>, else <see cref="DefaultValidationChunkSize"/>.</summary>
    public int ValidationChunkSize { get; set; }

    /// <summary>Validation's tokens per forward pass when the step forwards whole sequences: bounds the memory of scoring a long sequence.</summary>
    public const int DefaultValidationChunkSize = 256;

    /// <summary>Optimizer steps completed (across resumes).</summary>
    public int CompletedSteps { get; private set; }
    /// <summary>Epochs completed (across resumes).</summary>
    public int CompletedEpochs { get; private set; }
    /// <summary>Batches of the current epoch already trained on; a resumed run skips them.</summary>
    public int BatchesConsumedInEpoch { get; private set; }

    /// <summary>
    /// Data-parallel training (docs/SCALING.md): null (default) trains alone; set, every rank runs <see cref="Train"/> on
    /// its shard (<see cref="DataParallel.Shard"/>) and the gradients are summed over the ranks before each optimizer step.
    /// </summary>
    public DataParallel? DataParallel { get; set; }

    /// <summary>Test hook: called once per optimizer step with the averaged, not yet clipped gradients in place.</summary>
    internal Action<int>? BeforeOptimizerStep { get; set; }

    /// <summary>Creates the trainer and its AdamW optimizer over <see cref="TrainableParameters.Of"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range (named by ParamName).</exception>
    /// <exception cref="ArgumentException">The model has no trainable parameter.</exception>
    public Trainer(CausalLM model, ITrainingStep step, TrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(step);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Model = model;
        Step = step;
        Options = options;
        ValidationChunkSize = step.ChunkSize ?? DefaultValidationChunkSize;

        var trainable = TrainableParameters.Of(model);
        if (trainable.Count == 0)
            throw new ArgumentException("The model has no trainable parameter: attach LoRA (LoraAdapters.Attach) or choose full fine-tuning (TrainableParameters.Select).", nameof(model));
        // Decay matrices only: decaying biases and norm scales towards zero hurts and is not what Hugging Face does.
        var decayed = trainable.Where(p => p.Parameter.dim() >= 2).ToList();
        var notDecayed = trainable.Where(p => p.Parameter.dim() < 2).ToList();
        _parameters = decayed.Concat(notDecayed).ToList();
        var groups = new List<AdamW.ParamGroup>();
        if (decayed.Count > 0) groups.Add(Group(decayed, options.WeightDecay));
        if (notDecayed.Count > 0) groups.Add(Group(notDecayed, 0));
        _optimizer = optim.AdamW(groups, options.LearningRate, options.Beta1, options.Beta2, options.Epsilon, options.WeightDecay);
    }

    StepResult RunStep(TokenBatch batch, int stepNumber)
    {
        try
        {
            return Step.Run(Model, batch);
        }
        catch (Exception e) when (MemoryPreflight.IsOutOfMemory(e))
        {
            // The step's scoped tensors went with its dispose scopes; its partial gradients go here, so that a caller who
            // catches this holds the model as the last optimizer step left it.
            _optimizer.zero_grad();
            int chunkSize = Step.ChunkSize ?? (int)batch.Length;
            throw new InsufficientDeviceMemoryException(Model.Device.ToString(), batch.Length, (int)batch.BatchSize, chunkSize, null, null, stepNumber, [], e);
        }
    }

    AdamW.ParamGroup Group(List<(string Name, Parameter Parameter)> parameters, double weightDecay) =>
        new(parameters.Select(p => p.Parameter), Options.LearningRate, Options.Beta1, Options.Beta2, Options.Epsilon, weightDecay, false, false);

    /// <summary>Optimizer steps of a run, when known: MaxSteps, else ⌈batches per epoch / accumulation⌉ × MaxEpoch.</summary>
    public int? TotalSteps(int? batchesPerEpoch) =>
        Options.MaxSteps ?? (batchesPerEpoch is int b ? (b + Options.GradientAccumulationSteps - 1) / Options.GradientAccumulationSteps * Options.MaxEpoch : null);

    /// <summary>
    /// Trains from where the trainer stands (step 0, or the state last loaded) until MaxSteps optimizer steps, or
    /// MaxEpoch epochs when MaxSteps is null, or cancellation.
    /// </summary>
    /// <param name="epochBatches">Creates the batches of one epoch; called once per epoch. Every batch is disposed after use,
    /// so the enumerable must create fresh ones (as <see cref="Data.Batching.Batches"/> does). It must yield the same
    /// batches in the same order on each call for a resumed run to skip exactly what was already trained on.</param>
    /// <param name="batchesPerEpoch">Batches per epoch when known: gives the schedule its total length and the progress its ETA.
    /// Unknown (null) without MaxSteps, the learning rate stays at its peak after warmup.</param>
    /// <param name="progress">Receives a record after every optimizer step, synchronously on the training thread.</param>
    /// <param name="cancellationToken">Checked before every optimizer step; cancellation returns normally with
    /// <see cref="TrainingSummary.Cancelled"/> set, model and optimizer consistent (ready for <see cref="SaveState"/>).</param>
    /// <param name="validationBatches">Creates validation batches (disposed after use); evaluated after each epoch and
    /// after the final step.</param>
    /// <exception cref="TrainingDivergedException">A loss or the gradient norm is NaN or infinite and
    /// <see cref="TrainingOptions.NonFiniteLoss"/> is <see cref="NonFiniteLossAction.Stop"/>; the trainer stays at the
    /// last good step (ready for <see cref="SaveState"/>).</exception>
    public TrainingSummary Train(Func<IEnumerable<TokenBatch>> epochBatches, int? batchesPerEpoch, IProgress<TrainingProgress>? progress,
        CancellationToken cancellationToken, Func<IEnumerable<TokenBatch>>? validationBatches = null)
    {
        ArgumentNullException.ThrowIfNull(epochBatches);
        if (batchesPerEpoch is <= 0) throw new ArgumentOutOfRangeException(nameof(batchesPerEpoch), batchesPerEpoch, "batchesPerEpoch must be positive when given.");
        int? totalSteps = TotalSteps(batchesPerEpoch);
        Options.WarmupStepsFor(totalSteps); // fails now, not after an epoch, when WarmupRatio has no total to apply to
        if (CompletedSteps == 0 && BatchesConsumedInEpoch == 0) random.manual_seed(Options.Seed);
        DataParallel?.Synchronize(_parameters.Select(p => p.Parameter).ToList());

        var clock = Stopwatch.StartNew();
        double allReduceAtStart = DataParallel?.AllReduceSeconds ?? 0;
        var history = new List<TrainingProgress>();
        int stepsAtStart = CompletedSteps;
        long tokens = 0;
        double finalLoss = double.NaN;
        double? validationLoss = null;
        bool cancelled = false;
        int skippedBatches = 0;
        bool wasTraining = Model.training;
        Model.train();
        try
        {
            while (!Finished)
            {
                using var batches = new Lookahead(epochBatches().GetEnumerator());
                for (int i = 0; i < BatchesConsumedInEpoch; i++)
                {
                    if (batches.Next() is not TokenBatch skipped)
                        throw new InvalidOperationException($"The epoch has fewer batches ({i}) than the saved position ({BatchesConsumedInEpoch}): the data differs from the run that was saved.");
                    skipped.Dispose();
                }
                if (!batches.HasNext)
                    throw new InvalidOperationException(BatchesConsumedInEpoch == 0 ? "The epoch yielded no batch: there is nothing to train on." :
                        $"The epoch ends at the saved position ({BatchesConsumedInEpoch} batches): the data differs from the run that was saved.");

                while (batches.HasNext && !Finished)
                {
                    // Ranks stop together: one that stopped alone would leave the others waiting in a collective.
                    if (DataParallel?.Any(cancellationToken.IsCancellationRequested) ?? cancellationToken.IsCancellationRequested) { cancelled = true; break; }
                    int stepNumber = CompletedSteps + 1;
                    int firstBatch = BatchesConsumedInEpoch;
                    double lossSum = 0;
                    int micro = 0;
                    string? nonFinite = null;
                    ResidentMemory.ResetPeak();
                    while (micro < Options.GradientAccumulationSteps && batches.Next() is TokenBatch batch)
                    {
                        using (batch)
                        using (NewDisposeScope())
                        {
                            var result = RunStep(batch, stepNumber);
                            long batchTokens = batch.InputIds.numel();
                            if (DataParallel is { } parallel) (result, batchTokens) = parallel.AfterMicroBatch(_parameters.Select(p => p.Parameter).ToList(), batch, result, batchTokens);
                            micro++;
                            tokens += batchTokens;
                            if (double.IsFinite(result.Loss)) lossSum += result.Loss;
                            else nonFinite = $"the loss of micro-batch {micro} is {result.Loss}";
                        }
                        // The gradients already hold the bad batch's contribution: the rest of the window cannot repair them.
                        if (nonFinite is not null) break;
                    }
                    double learningRate = Options.LearningRateAt(stepNumber, totalSteps);
                    if (nonFinite is null) nonFinite = ApplyStep(stepNumber, micro, learningRate);
                    else
                    {
                        _optimizer.zero_grad();
                        DataParallel?.Discard();
                    }
                    if (nonFinite is not null)
                    {
                        if (Options.NonFiniteLoss == NonFiniteLossAction.Stop)
                            throw new TrainingDivergedException(stepNumber, CompletedEpochs + 1, firstBatch, micro, nonFinite);
                        skippedBatches += micro;
                    }
                    // The step's activations are freed now; glibc would keep them in its arenas (docs/RELIABILITY.md).
                    ResidentMemory.ReleaseFreed();
                    CompletedSteps = stepNumber;
                    BatchesConsumedInEpoch += micro;
                    double stepLoss = nonFinite is null ? lossSum / micro : double.NaN;
                    if (nonFinite is null) finalLoss = stepLoss;

                    bool epochEnds = !batches.HasNext;
                    double? stepValidation = null;
                    if (validationBatches is not null && (epochEnds || Finished))
                    {
                        var (sum, count) = Evaluation.MeanNll(Model, validationBatches(), ValidationChunkSize);
                        if (DataParallel is { } parallel) (sum, count) = parallel.Sum(sum, count);
                        stepValidation = validationLoss = count > 0 ? sum / count : double.NaN;
                    }
                    var record = Progress(stepNumber, totalSteps, stepLoss, learningRate, tokens, clock.Elapsed, stepsAtStart, stepValidation, skippedBatches);
                    if (epochEnds)
                    {
                        CompletedEpochs++;
                        BatchesConsumedInEpoch = 0;
                    }
                    history.Add(record);
                    progress?.Report(record);
                }
                if (cancelled) break;
            }
        }
        finally
        {
            Model.train(wasTraining);
        }
        return new TrainingSummary(CompletedSteps, CompletedEpochs, finalLoss, validationLoss, clock.Elapsed, cancelled, history, skippedBatches,
            TimeSpan.FromSeconds((DataParallel?.AllReduceSeconds ?? 0) - allReduceAtStart));
    }

    bool Finished => Options.MaxSteps is int maxSteps ? CompletedSteps >= maxSteps : CompletedEpochs >= Options.MaxEpoch;

    TrainingProgress Progress(int step, int? totalSteps, double loss, double learningRate, long tokens, TimeSpan elapsed, int stepsAtStart,
        double? validationLoss, int skippedBatches)
    {
        int stepsThisCall = step - stepsAtStart;
        TimeSpan? eta = totalSteps is int total ? elapsed / stepsThisCall * Math.Max(0, total - step) : null;
        // The kernel's per-step peak where there is one: the process-lifetime peak never goes down, so a single costly
        // step (validation, a long document) would read as memory climbing for the rest of the run.
        long peak = ResidentMemory.Peak() ?? LifetimePeak();
        return new TrainingProgress(step, totalSteps, CompletedEpochs + 1, loss, learningRate,
            tokens / Math.Max(elapsed.TotalSeconds, 1e-9), elapsed, eta, peak, validationLoss,
            validationLoss is double v ? Math.Exp(v) : null, skippedBatches, DeviceMemory.InUse(Model.Device));
    }

    static long LifetimePeak()
    {
        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    /// <summary>Averages, clips and applies the step's gradients; returns what was not finite (no update applied), or null.</summary>
    string? ApplyStep(int stepNumber, int microBatches, double learningRate)
    {
        using var scope = NewDisposeScope();
        var parameters = _parameters.Select(p => p.Parameter).ToList();
        DataParallel?.ReduceGradients(parameters);
        var gradients = parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        if (microBatches > 1)
            foreach (var g in gradients) g.div_(microBatches);
        BeforeOptimizerStep?.Invoke(stepNumber);

        double norm = Options.MaxGradNorm is double max
            ? nn.utils.clip_grad_norm_(parameters, max)
            : gradients.Count == 0 ? 0 : stack(gradients.Select(g => g.norm().to(ScalarType.Float64))).norm().item<double>();
        if (!double.IsFinite(norm))
        {
            _optimizer.zero_grad();
            return $"the gradient norm is {norm}";
        }
        foreach (var group in _optimizer.ParamGroups) group.LearningRate = learningRate;
        _optimizer.step();
        _optimizer.zero_grad();
        return null;
    }

    /// <inheritdoc/>
    public void Dispose() => _optimizer.Dispose();

    /// <summary>An enumerator that knows whether another item follows, so an epoch's last step is recognised as such.</summary>
    sealed class Lookahead(IEnumerator<TokenBatch> inner) : IDisposable
    {
        TokenBatch? _next = inner.MoveNext() ? inner.Current : null;

        public bool HasNext => _next is not null;

        public TokenBatch? Next()
        {
            var current = _next;
            if (current is not null) _next = inner.MoveNext() ? inner.Current : null;
            return current;
        }

        public void Dispose()
        {
            _next?.Dispose();
            inner.Dispose();
        }
    }
}
