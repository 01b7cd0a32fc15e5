using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Distributed;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco;

/// <summary>
/// The estimator: fine-tunes a Hugging Face causal LM on the documents of an IDataView with chunk-wise optimization
/// (SeCO when <see cref="Options.SampledChunks"/> is null, SpaCO otherwise), LoRA by default. Fitting yields a
/// <see cref="ChunkwiseLoraTransformer"/> that scores documents (perplexity) and can generate.
/// </summary>
public sealed partial class ChunkwiseLoraTrainer : IEstimator<ChunkwiseLoraTransformer>
{
    readonly IHostEnvironment _environment;
    readonly Options _options;
    // MLContext's device settings, honoured for Device = "auto" as ML.NET's TorchSharp trainers honour them.
    readonly int? _gpuDeviceId;
    readonly bool _fallbackToCpu = true;

    /// <summary>Creates the estimator; <c>mlContext.Transforms.Text.ChunkwiseLora(options)</c> does the same.</summary>
    public ChunkwiseLoraTrainer(MLContext mlContext, Options options) : this((IHostEnvironment)mlContext, options) { }

    internal ChunkwiseLoraTrainer(IHostEnvironment environment, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _environment = environment;
        _options = options;
        (_gpuDeviceId, _fallbackToCpu) = DeviceSettingsOf(environment);
    }

    // MLContext.GpuDeviceId and FallbackToCpu. Through the catalog the stage sees the MLContext's inner environment, which
    // carries them behind ML.NET's internal IHostEnvironmentInternal (what its TorchSharp trainers read); pinned by
    // ChunkwiseLoraStageTests.AutoDeviceHonoursMlContextsGpuDeviceIdAndFallbackToCpu.
    static (int? GpuDeviceId, bool FallbackToCpu) DeviceSettingsOf(IHostEnvironment environment)
    {
        if (environment is MLContext context) return (context.GpuDeviceId, context.FallbackToCpu);
        var settings = typeof(IHostEnvironment).Assembly.GetType("Microsoft.ML.Runtime.IHostEnvironmentInternal");
        if (settings is null || !settings.IsInstanceOfType(environment)) return (null, true);
        return ((int?)settings.GetProperty(nameof(MLContext.GpuDeviceId))?.GetValue(environment),
            settings.GetProperty(nameof(MLContext.FallbackToCpu))?.GetValue(environment) as bool? ?? true);
    }

    /// <summary>Checks the input columns and returns the schema with the scoring columns added.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        _options.Columns.Check(inputSchema);
        return Scoring.OutputShape(_options, inputSchema);
    }

    /// <summary>Loads the base model, trains on <paramref name="input"/> and returns the fitted stage.</summary>
    /// <remarks>
    /// Started under Open MPI's mpirun with N &gt; 1 ranks (<see cref="Distributed.Communicator.World"/>), every rank runs the
    /// same pipeline and trains data-parallel on its share of each global batch of N · <see cref="Options.BatchSize"/>
    /// rows, with the same result as one process with that batch size (docs/SCALING.md); rank 0 alone writes the
    /// checkpoints, every rank returns the same fitted stage, and a rank that fails ends the job (MPI_Abort) with its error.
    /// </remarks>
    /// <exception cref="OptionException">
    /// <see cref="Options.Device"/> or <see cref="Options.DType"/> names no device or dtype, or a device this machine lacks;
    /// the error names the field (<see cref="OptionException.Option"/>) and holds its value.
    /// </exception>
    public ChunkwiseLoraTransformer Fit(IDataView input)
    {
        var world = Distributed.Communicator.World;
        if (world.Size == 1) return Fit(input, null);
        using var parallel = new DataParallel(world);
        try
        {
            return Fit(input, parallel);
        }
        catch (Exception e)
        {
            parallel.AbortOnFailure(e);
            throw;
        }
    }

    ChunkwiseLoraTransformer Fit(IDataView input, DataParallel? parallel)
    {
        var columns = _options.Columns;
        columns.Check(input.Schema);
        if (_options.ValidationSet is { } validationSet) columns.Check(validationSet.Schema);
        var host = _environment.Register(nameof(ChunkwiseLoraTrainer));
        int seed = _options.Seed ?? host.Rand.Next();
        // An MLContext without a seed draws another on every rank; chunk sampling must agree.
        if (parallel is not null) seed = parallel.FromRoot(seed);
        using var channel = host.Start("ChunkwiseLora");

        var device = TensorSettings.ResolveDevice(_options.Device, nameof(Options.Device), _gpuDeviceId, _fallbackToCpu);
        if (parallel is not null) device = parallel.DeviceFor(device, nameof(Options.Device));
        var dtype = TensorSettings.ResolveDType(_options.DType, device, nameof(Options.DType));
        var tokenizer = ModelTokenizer.Load(_options.ModelPath);
        // The one encoder of every row (training, validation, the rows of a failed batch, and the fitted stage's scoring);
        // conversations need the model's chat template, refused here, before the model is loaded, when there is none.
        var encoder = columns.Encoder(_options.ModelPath, tokenizer, _options.AssistantOnlyLoss);
        // The run's rotary settings go into the model before it is built: its rotation tables are computed once.
        var (config, ropeNote) = _options.ApplyRope(ModelConfig.Load(_options.ModelPath));
        if (ropeNote is not null) channel.Info(MessageSensitivity.None, $"ChunkwiseLora: {ropeNote}");
        var model = ModelDirectory.Load(_options.ModelPath, config, dtype, device);
        try
        {
            if (!_options.FullFineTuning)
            {
                manual_seed(seed); // LoRA A's Kaiming init draws from the global generator.
                LoraAdapters.Attach(model, _options.Lora);
            }
            TrainableParameters.Select(model, _options.FullFineTuning);
            model.train();
            channel.Info(MessageSensitivity.None, $"ChunkwiseLora: {model.Config.ModelType} with {model.Config.NumHiddenLayers} layers on {device.type} ({TensorSettings.Name(dtype)}), " +
                $"{(_options.SampledChunks is int t ? $"SpaCO t={t} {_options.CustomSampler?.Name ?? ChunkSamplers.Get(_options.Sampler).Name} compensation {_options.Compensation}" : "SeCO")}, chunk {_options.ChunkSize}, " +
                $"{TrainableParameters.Of(model).Sum(p => p.Parameter.numel()):N0} trainable parameters.");

            var summary = Train(model, encoder, input, seed, device, channel, parallel);
            model.eval();
            return new ChunkwiseLoraTransformer(model, encoder, ScoringSettings.From(_options, device, dtype), summary);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    TrainingSummary Train(CausalLM model, DocumentEncoder encoder, IDataView input, int seed, Device device, IChannel channel, DataParallel? parallel)
    {
        var builder = new SequenceBuilder(_options.MaxSequenceLength, _options.Overflow);
        var columns = _options.Columns;
        int padId = encoder.Tokenizer.PaddingId;
        long skipped = 0;
        // Rows that give no sequence (empty text, an empty response, a conversation whose windows hold no trained token)
        // are never dropped silently: each pass counts them and the run reports the count.
        IEnumerable<TrainingExample> Examples(IDataView data, Action? onSkipped)
        {
            foreach (var row in DocumentRows.Read(data, columns))
            {
                var examples = builder.FromDocument(encoder, row).ToList();
                if (examples.Count == 0) onSkipped?.Invoke();
                foreach (var example in examples) yield return example;
            }
        }
        Func<IEnumerable<TokenBatch>> epoch = () =>
        {
            skipped = 0;
            return parallel?.Shard(Examples(input, () => skipped++), _options.BatchSize, padId, device) ?? Batching.Batches(Examples(input, () => skipped++), _options.BatchSize, padId, device);
        };
        Func<IEnumerable<TokenBatch>>? validation = _options.ValidationSet is { } v
            ? () => Batching.Batches(parallel?.ShardExamples(Examples(v, null)) ?? Examples(v, null), _options.BatchSize, padId, device)
            : null;
        // Rows per optimizer step's micro-batch over all ranks: what batch indices (resume, diverged rows) count in.
        int globalBatchSize = parallel?.GlobalBatchSize(_options.BatchSize) ?? _options.BatchSize;
        bool writesFiles = parallel?.IsRoot ?? true;

        using var trainer = new Trainer(model, new ChunkwiseStep(_options.Chunkwise(seed)), _options.Training(seed)) { DataParallel = parallel };
        if (_options.CheckpointDirectory is { } checkpoints && _options.Resume && Trainer.HasState(checkpoints))
        {
            trainer.LoadState(checkpoints);
            channel.Info(MessageSensitivity.None, $"ChunkwiseLora: resumed from {checkpoints}.");
        }
        // One tokenising pass over all the data before the first step, whatever MaxSteps says: a malformed row (file and
        // line for JSON lines) or a missing field stops the run now rather than hours in, and the count tells the
        // schedule (cosine/linear decay) and the ETA how many steps there will be.
        long exampleCount = 0, emptyRows = 0, emptyValidationRows = 0;
        int longest = 0;
        foreach (var example in Examples(input, () => emptyRows++))
        {
            exampleCount++;
            longest = Math.Max(longest, example.Ids.Length);
        }
        if (exampleCount == 0) throw new ArgumentException($"No row of the training data has anything to train on (column {string.Join(", ", columns.Names)}; {emptyRows} row(s) read).", nameof(input));
        long validationCount = _options.ValidationSet is { } validationData ? Examples(validationData, () => emptyValidationRows++).LongCount() : 0;
        channel.Info(MessageSensitivity.None, $"ChunkwiseLora: {exampleCount} training sequence(s) of {columns.Kind} rows (column {string.Join(", ", columns.Names)}), the longest {longest} tokens" +
            $"{(emptyRows > 0 ? $"; {emptyRows} row(s) gave nothing to train on and are skipped" : "")}" +
            $"{(_options.ValidationSet is not null ? $"; {validationCount} validation sequence(s){(emptyValidationRows > 0 ? $", {emptyValidationRows} validation row(s) with nothing to score" : "")}" : "")}.");
        // The same pass tells the longest batch: a run that cannot fit says so now, with what would, not hours in.
        var memory = MemoryQuery(model, longest);
        long? capacity = MemoryPreflight.Ensure(memory, device, _options.MemoryBudgetBytes);
        int? batchesPerEpoch = _options.MaxSteps is null ? (int)Math.Ceiling(exampleCount / (double)globalBatchSize) : null;
        var progress = new Progress(channel, _options, trainer, writesFiles);
        TrainingSummary summary;
        try
        {
            summary = trainer.Train(epoch, batchesPerEpoch, progress, _options.CancellationToken, validation);
        }
        catch (InsufficientDeviceMemoryException e) when (e.Step is not null && e.Remedies.Count == 0)
        {
            // The trainer knows the batch that failed; the stage knows the options that would make it fit. The prediction
            // was too low for this device, so the changes it offers aim a fifth below what it had predicted to fit.
            var failed = memory with { Length = e.Length, BatchSize = e.BatchSize };
            long predicted = StepMemory.Predict(failed).Total;
            throw e.WithRemedies(MemoryPreflight.Remedies(failed, (capacity ?? predicted) * 4 / 5), predicted, capacity);
        }
        catch (TrainingDivergedException e) when (e.Rows is null && e.FirstBatch >= 0 && e.Reason is not null)
        {
            throw new TrainingDivergedException(e.Step, e.Epoch, e.FirstBatch, e.BatchCount, e.Reason, RowsOf(input, builder, encoder, globalBatchSize, e.FirstBatch, e.BatchCount), e);
        }
        if (summary.SkippedBatches > 0)
            channel.Warning(MessageSensitivity.None, $"ChunkwiseLora: skipped {summary.SkippedBatches} batch(es) with a non-finite loss or gradient.");
        if (_options.CheckpointDirectory is { } directory && writesFiles) trainer.SaveState(directory);
        if (skipped > 0) channel.Warning(MessageSensitivity.None, $"ChunkwiseLora: skipped {skipped} row(s) with nothing to train on in the last epoch.");
        channel.Info(MessageSensitivity.None, $"ChunkwiseLora: {(summary.Cancelled ? "cancelled" : "finished")} after {summary.Steps} steps, " +
            $"final loss {summary.FinalLoss:F4}{(summary.ValidationLoss is double vl ? $", validation loss {vl:F4}" : "")}, {summary.Elapsed:hh\\:mm\\:ss}.");
        return summary;
    }

    /// <summary>What a batch of this run asks of its device, for the memory model.</summary>
    StepMemoryQuery MemoryQuery(CausalLM model, long length) => new()
    {
        Config = model.Config, DType = model.DType, Strategy = _options.SampledChunks is null ? MemoryStrategy.Seco : MemoryStrategy.Spaco,
        Length = length, BatchSize = _options.BatchSize, ChunkSize = _options.ChunkSize, RecomputeLayers = _options.RecomputeLayers,
        Lora = _options.FullFineTuning ? null : _options.Lora, Cuda = model.Device.type == TorchSharp.DeviceType.CUDA,
        // The kernel that will run: Auto falls back to blockwise where the fused kernels fail their check on this device.
        Attention = model.Attention.Kernel == AttentionKernel.Auto && FusedChunkAttention.Verdict(model.Device, model.DType) is not null
            ? AttentionKernel.Blockwise : model.Attention.Kernel,
    };

    /// <summary>
    /// The input rows (1-based, in data order) whose sequences make up batches <paramref name="firstBatch"/> to
    /// <paramref name="firstBatch"/> + <paramref name="count"/> − 1 of an epoch. Found again by re-reading the data,
    /// only when a batch fails, so that nothing is kept per step: batching does not reorder, so the batch of a sequence
    /// follows from its position.
    /// </summary>
    string RowsOf(IDataView data, SequenceBuilder builder, DocumentEncoder encoder, int batchSize, int firstBatch, int count)
    {
        long first = (long)firstBatch * batchSize, end = first + (long)count * batchSize;
        var rows = new SortedSet<long>();
        long sequence = 0, row = 0;
        foreach (var r in DocumentRows.Read(data, _options.Columns))
        {
            row++;
            int produced = builder.FromDocument(encoder, r).Count();
            if (sequence + produced > first && sequence < end) rows.Add(row);
            sequence += produced;
            if (sequence >= end) break;
        }
        return rows.Count == 0 ? "rows unknown" : $"input row{(rows.Count > 1 ? "s" : "")} {string.Join(", ", rows)} (1-based, in data order)";
    }

    /// <summary>Forwards progress to ML.NET's log, the user's IProgress, and the periodic checkpoint (written by rank 0 alone).</summary>
    sealed class Progress(IChannel channel, Options options, Trainer trainer, bool writesFiles) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            channel.Info(MessageSensitivity.None,
                $"step {p.Step}{(p.TotalSteps is int total ? $"/{total}" : "")} epoch {p.Epoch} loss {p.Loss:F4} lr {p.LearningRate:E2} " +
                $"{p.TokensPerSecond:F0} tok/s elapsed {p.Elapsed:hh\\:mm\\:ss}{(p.Eta is TimeSpan eta ? $" eta {eta:hh\\:mm\\:ss}" : "")} " +
                $"peak {p.PeakMemoryBytes / (1024.0 * 1024):F0} MiB{(p.DeviceMemoryBytes is long gpu ? $" device {gpu / (1024.0 * 1024):F0} MiB" : "")}{(p.ValidationLoss is double v ? $" validation loss {v:F4} ppl {p.ValidationPerplexity:F2}" : "")}");
            options.Progress?.Report(p);
            if (options.CheckpointDirectory is { } directory && writesFiles && p.Step % options.CheckpointEverySteps == 0) trainer.SaveState(directory);
        }
    }
}
