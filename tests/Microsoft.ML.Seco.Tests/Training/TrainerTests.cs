using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using TorchSharp;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Baselines;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Training;

/// <summary>The training loop on tiny random models: learning, schedule, divergence, cancellation, resume, accumulation, memory.</summary>
[TestClass]
public sealed class TrainerTests
{
    const int Vocab = 61;

    /// <summary>Records progress synchronously (System.Progress would post to a thread-pool context).</summary>
    sealed class Recorder(Action<TrainingProgress>? onReport = null) : IProgress<TrainingProgress>
    {
        public List<TrainingProgress> Reports { get; } = new();
        public void Report(TrainingProgress value)
        {
            Reports.Add(value);
            onReport?.Invoke(value);
        }
    }

    /// <summary>The same model on every call: LoRA A is initialised from torch's global generator, so it is seeded first.</summary>
    static CausalLM LoraModel(double dropout = 0)
    {
        random.manual_seed(1);
        return TestModels.WithLora(TestModels.Create(TestModels.Llama()), dropout: dropout);
    }

    /// <summary>Fresh batches on every call (the trainer disposes what it consumes): <paramref name="count"/> batches of two sequences.</summary>
    static Func<IEnumerable<TokenBatch>> Data(int count, int length = 24) =>
        () => Enumerable.Range(0, count).Select(i => TestModels.Batch(Vocab, new[] { length, length - 5 }, seed: 100 + i));

    static Dictionary<string, double[]> Snapshot(CausalLM model) =>
        TrainableParameters.Of(model).ToDictionary(p => p.Name, p => p.Parameter.to(ScalarType.Float64).data<double>().ToArray());

    [TestMethod]
    public void LossFallsWhenMemorisingARepeatedSequence()
    {
        using var model = LoraModel();
        var pattern = new[] { 5, 17, 42, 8, 33, 21, 9, 50 };
        var sequence = Enumerable.Range(0, 32).Select(i => pattern[i % pattern.Length]).ToArray();
        Func<IEnumerable<TokenBatch>> data = () => new[] { TokenBatch.FromSequences(new[] { sequence }, null, 0, CPU) };
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }),
            new TrainingOptions { LearningRate = 1e-2, MaxEpoch = 30, WarmupSteps = 2 });

        var summary = trainer.Train(data, 1, null, CancellationToken.None);

        Assert.AreEqual(30, summary.Steps);
        Assert.AreEqual(30, summary.Epochs);
        double first = summary.History[0].Loss, last = summary.FinalLoss;
        Assert.IsTrue(last < 0.3 * first, $"loss {first:F3} → {last:F3}: expected at least a 70% drop over 30 steps");
    }

    [TestMethod]
    public void ScheduleWarmsUpLinearlyThenFollowsCosineToTheFloor()
    {
        var options = new TrainingOptions { LearningRate = 1e-3, WarmupSteps = 4, MinLearningRateRatio = 0.1, Schedule = LearningRateSchedule.Cosine };
        const int total = 24;
        double Expected(int s)
        {
            if (s <= 4) return 1e-3 * s / 4;
            double p = (s - 4 - 1) / (double)(total - 4);
            return 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + Math.Cos(Math.PI * p));
        }
        foreach (int s in new[] { 1, 2, 4, 5, 6, 14, 15, 23, 24 })
            Assert.AreEqual(Expected(s), options.LearningRateAt(s, total), 1e-15, $"step {s}");
        Assert.AreEqual(2.5e-4, options.LearningRateAt(1, total), 1e-18, "the first warmup step already moves");
        Assert.AreEqual(1e-3, options.LearningRateAt(5, total), 1e-18, "the first step after warmup is at the peak");
        Assert.AreEqual(1e-4 + 0.9e-3 * 0.5, options.LearningRateAt(15, total), 1e-15, "half way through the decay");
        Assert.IsTrue(options.LearningRateAt(total, total) > 1e-4, "no step is spent exactly at the floor");

        var linear = options with { Schedule = LearningRateSchedule.Linear, WarmupSteps = 0, WarmupRatio = 0.25 };
        Assert.AreEqual(6, linear.WarmupStepsFor(total));
        Assert.AreEqual(1e-4 + 0.9e-3 * (1 - 3.0 / 18), linear.LearningRateAt(10, total), 1e-15);
        Assert.AreEqual(1e-3, (options with { Schedule = LearningRateSchedule.Constant }).LearningRateAt(20, total));
        Assert.AreEqual(1e-3, options.LearningRateAt(20, null), "with the total unknown the rate stays at the peak after warmup");
        Assert.ThrowsExactly<ArgumentException>(() => linear.LearningRateAt(1, null));

        // The trainer applies exactly these rates: 3 batches per epoch, accumulation 2 → 2 steps per epoch, 3 epochs.
        using var model = LoraModel();
        using var trainer = new Trainer(model, new FullBackprop(), options with { MaxEpoch = 3, GradientAccumulationSteps = 2, WarmupSteps = 2 });
        var summary = trainer.Train(Data(3, 12), 3, null, CancellationToken.None);
        Assert.AreEqual(6, summary.Steps);
        Assert.AreEqual(6, summary.History[^1].TotalSteps);
        var trained = options with { WarmupSteps = 2 };
        CollectionAssert.AreEqual(Enumerable.Range(1, 6).Select(s => trained.LearningRateAt(s, 6)).ToArray(), summary.History.Select(h => h.LearningRate).ToArray());
        CollectionAssert.AreEqual(new[] { 1, 1, 2, 2, 3, 3 }, summary.History.Select(h => h.Epoch).ToArray());
    }

    [TestMethod]
    public void OptionsOutOfRangeNameTheOption()
    {
        void Check(string name, TrainingOptions o) =>
            Assert.AreEqual(name, Assert.ThrowsExactly<OptionException>(o.Validate).ParamName);
        var ok = new TrainingOptions();
        ok.Validate();
        Check(nameof(TrainingOptions.LearningRate), ok with { LearningRate = 0 });
        Check(nameof(TrainingOptions.LearningRate), ok with { LearningRate = double.NaN });
        Check(nameof(TrainingOptions.WeightDecay), ok with { WeightDecay = -1 });
        Check(nameof(TrainingOptions.Beta1), ok with { Beta1 = 1 });
        Check(nameof(TrainingOptions.Beta2), ok with { Beta2 = -0.1 });
        Check(nameof(TrainingOptions.Epsilon), ok with { Epsilon = -1 });
        Check(nameof(TrainingOptions.WarmupSteps), ok with { WarmupSteps = -1 });
        Check(nameof(TrainingOptions.WarmupRatio), ok with { WarmupRatio = 1.5 });
        Check(nameof(TrainingOptions.WarmupRatio), ok with { WarmupRatio = 0.1, WarmupSteps = 3 });
        Check(nameof(TrainingOptions.MinLearningRateRatio), ok with { MinLearningRateRatio = 2 });
        Check(nameof(TrainingOptions.MaxGradNorm), ok with { MaxGradNorm = -1 });
        Check(nameof(TrainingOptions.MaxGradNorm), ok with { MaxGradNorm = 0 }); // null, not 0, turns clipping off
        Check(nameof(TrainingOptions.GradientAccumulationSteps), ok with { GradientAccumulationSteps = 0 });
        Check(nameof(TrainingOptions.MaxEpoch), ok with { MaxEpoch = 0 });
        Check(nameof(TrainingOptions.MaxSteps), ok with { MaxSteps = 0 });
        Check(nameof(TrainingOptions.Schedule), ok with { Schedule = (LearningRateSchedule)7 });
    }

    [TestMethod]
    public void NaNLossStopsAtTheStepItAppearsWithoutUpdating()
    {
        using var model = LoraModel();
        var poisoned = TrainableParameters.Of(model)[0];
        Dictionary<string, double[]>? before = null;
        var recorder = new Recorder(p =>
        {
            if (p.Step != 2) return;
            using var _ = no_grad();
            poisoned.Parameter.flatten()[0] = float.NaN;
            before = Snapshot(model);
        });
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { MaxSteps = 5 });

        var e = Assert.ThrowsExactly<TrainingDivergedException>(() => trainer.Train(Data(4), 4, recorder, CancellationToken.None));

        Assert.AreEqual(3, e.Step);
        StringAssert.Contains(e.Message, "step 3");
        StringAssert.Contains(e.Message, "LearningRate");
        Assert.AreEqual(2, trainer.CompletedSteps);
        var after = Snapshot(model);
        foreach (var (name, values) in before!)
            CollectionAssert.AreEqual(values, after[name], $"{name} changed although the step diverged");
    }

    [TestMethod]
    public void NonFiniteGradientNormStopsWithoutUpdating()
    {
        using var model = LoraModel();
        var before = Snapshot(model);
        using var trainer = new Trainer(model, new FullBackprop(), new TrainingOptions { MaxSteps = 3, MaxGradNorm = null });
        trainer.BeforeOptimizerStep = _ =>
        {
            using var grad = TrainableParameters.Of(model)[1].Parameter.grad!;
            grad.flatten()[0] = float.PositiveInfinity;
        };

        var e = Assert.ThrowsExactly<TrainingDivergedException>(() => trainer.Train(Data(4), null, null, CancellationToken.None));

        Assert.AreEqual(1, e.Step);
        StringAssert.Contains(e.Message, "gradient norm");
        var after = Snapshot(model);
        foreach (var (name, values) in before)
            CollectionAssert.AreEqual(values, after[name], $"{name} changed although the step diverged");
    }

    [TestMethod]
    public void CancellationStopsAtAStepBoundaryAndTrainingCanGoOn()
    {
        using var model = LoraModel();
        using var cancellation = new CancellationTokenSource();
        var recorder = new Recorder(p => { if (p.Step == 3) cancellation.Cancel(); });
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }),
            new TrainingOptions { MaxEpoch = 2, GradientAccumulationSteps = 2 });

        var first = trainer.Train(Data(5), 5, recorder, cancellation.Token);

        Assert.IsTrue(first.Cancelled);
        Assert.AreEqual(3, first.Steps);
        Assert.AreEqual(3, first.History.Count);
        Assert.AreEqual(1, first.Epochs, "epoch 1 (3 steps of 2+2+1 batches) completed");
        Assert.AreEqual(0, trainer.BatchesConsumedInEpoch);

        var rest = trainer.Train(Data(5), 5, recorder, CancellationToken.None);
        Assert.IsFalse(rest.Cancelled);
        Assert.AreEqual(6, rest.Steps);
        Assert.AreEqual(2, rest.Epochs);
        CollectionAssert.AreEqual(new[] { 4, 5, 6 }, rest.History.Select(h => h.Step).ToArray());
        Assert.IsTrue(rest.History.All(h => h.TotalSteps == 6 && h.TokensPerSecond > 0 && h.PeakMemoryBytes > 0 && h.Eta is not null));
        Assert.AreEqual(TimeSpan.Zero, rest.History[^1].Eta);
    }

    [TestMethod]
    [DataRow("seco", DisplayName = "SeCO")]
    [DataRow("full", DisplayName = "full backprop with LoRA dropout (torch's generator is part of the state)")]
    [DataRow("spaco", DisplayName = "SpaCO with LoRA dropout (the sampler's step counter is part of the state)")]
    public void ResumeFromSavedStateIsBitwiseIdenticalToAnUninterruptedRun(string strategy)
    {
        // Accumulation 2 over 5 batches: a partial window ends each epoch and the save falls mid-epoch.
        var options = new TrainingOptions { LearningRate = 5e-3, WeightDecay = 0.01, WarmupSteps = 2, GradientAccumulationSteps = 2, MaxEpoch = 3 };
        ITrainingStep NewStep() => strategy switch
        {
            "full" => new FullBackprop(),
            "spaco" => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8, SampledChunks = 2, Seed = 5 }),
            _ => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }),
        };
        CausalLM LoraModel() => TrainerTests.LoraModel(strategy == "seco" ? 0 : 0.1);
        string directory = Path.Combine(Path.GetTempPath(), "seco-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            Dictionary<string, double[]> uninterrupted;
            using (var model = LoraModel())
            using (var trainer = new Trainer(model, NewStep(), options))
            {
                var summary = trainer.Train(Data(5), 5, null, CancellationToken.None);
                Assert.AreEqual(9, summary.Steps);
                uninterrupted = Snapshot(model);
            }

            using (var model = LoraModel())
            using (var trainer = new Trainer(model, NewStep(), options))
            using (var cancellation = new CancellationTokenSource())
            {
                var summary = trainer.Train(Data(5), 5, new Recorder(p => { if (p.Step == 4) cancellation.Cancel(); }), cancellation.Token);
                Assert.IsTrue(summary.Cancelled);
                Assert.AreEqual(2, trainer.BatchesConsumedInEpoch, "the save should fall in the middle of epoch 2");
                trainer.SaveState(directory);
            }
            Assert.AreEqual(1, Directory.GetFiles(directory).Length, "only the state file, no temporary left behind");

            using (var model = LoraModel())
            using (var trainer = new Trainer(model, NewStep(), options))
            {
                // The fresh model starts from the initial weights: the state must carry the trained values.
                trainer.LoadState(directory);
                Assert.AreEqual(4, trainer.CompletedSteps);
                Assert.AreEqual(1, trainer.CompletedEpochs);
                var summary = trainer.Train(Data(5), 5, null, CancellationToken.None);
                CollectionAssert.AreEqual(new[] { 5, 6, 7, 8, 9 }, summary.History.Select(h => h.Step).ToArray());
                var resumed = Snapshot(model);
                foreach (var (name, values) in uninterrupted)
                    CollectionAssert.AreEqual(values, resumed[name], $"{name} differs after resume");
            }
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }

    [TestMethod]
    public void LoadingAStateIntoAnotherModelNamesTheMismatch()
    {
        string directory = Path.Combine(Path.GetTempPath(), "seco-mismatch-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var model = LoraModel())
            using (var trainer = new Trainer(model, new FullBackprop(), new TrainingOptions()))
                trainer.SaveState(directory);
            using var other = TestModels.WithLora(TestModels.Create(TestModels.Llama(layers: 1)));
            using var otherTrainer = new Trainer(other, new FullBackprop(), new TrainingOptions());
            var e = Assert.ThrowsExactly<InvalidDataException>(() => otherTrainer.LoadState(directory));
            StringAssert.Contains(e.Message, "trainable parameters");
            Assert.ThrowsExactly<FileNotFoundException>(() => otherTrainer.LoadState(directory + "-missing"));
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }

    [TestMethod]
    public void AccumulatedMicroBatchesGiveTheGradientAndUpdateOfTheirUnion()
    {
        // Two micro-batches with the same number of labelled tokens (one 20-token sequence each, no padding):
        // averaging their mean-loss gradients equals the gradient of the mean loss over the 2-sequence batch holding both.
        var random = new Random(5);
        var a = Enumerable.Range(0, 20).Select(_ => random.Next(Vocab)).ToArray();
        var b = Enumerable.Range(0, 20).Select(_ => random.Next(Vocab)).ToArray();
        TokenBatch Batch(params int[][] sequences) => TokenBatch.FromSequences(sequences, null, 0, CPU);
        var options = new TrainingOptions { LearningRate = 1e-2, MaxSteps = 1, WeightDecay = 0.1, MaxGradNorm = 1e-3 };

        Dictionary<string, Tensor> Run(Func<IEnumerable<TokenBatch>> data, int accumulation, out Dictionary<string, double[]> parameters)
        {
            using var model = LoraModel();
            using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), options with { GradientAccumulationSteps = accumulation });
            Dictionary<string, Tensor>? gradients = null;
            trainer.BeforeOptimizerStep = _ => gradients = TrainableParameters.Of(model).ToDictionary(p => p.Name, p => p.Parameter.grad!.detach().clone().DetachFromDisposeScope());
            trainer.Train(data, null, null, CancellationToken.None);
            parameters = Snapshot(model);
            return gradients!;
        }

        var accumulated = Run(() => new[] { Batch(a), Batch(b) }, 2, out var accumulatedParameters);
        var union = Run(() => new[] { Batch(a, b) }, 1, out var unionParameters);
        double error = TestModels.MaxRelativeError(accumulated, union);
        Assert.IsTrue(error < 1e-12, $"averaged micro-batch gradients differ from the union's: max relative error {error:E2}");
        // Clipping (active: norm limit 1e-3) and AdamW then see the same gradient, so the updates agree to rounding.
        foreach (var (name, values) in unionParameters)
            for (int i = 0; i < values.Length; i++)
                Assert.AreEqual(values[i], accumulatedParameters[name][i], 1e-12, $"{name}[{i}]");
        foreach (var g in accumulated.Values.Concat(union.Values)) g.Dispose();
    }

    [TestMethod]
    public void ValidationAfterEachEpochMatchesChunkedEvaluation()
    {
        using var model = LoraModel();
        Func<IEnumerable<TokenBatch>> validation = () => new[] { TestModels.Batch(Vocab, new[] { 30, 17 }, seed: 9, ignoredFraction: 0.2) };
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { MaxEpoch = 2 });

        var summary = trainer.Train(Data(3), 3, null, CancellationToken.None, validation);

        CollectionAssert.AreEqual(new[] { false, false, true, false, false, true }, summary.History.Select(h => h.ValidationLoss is not null).ToArray());
        var (sum, tokens) = Evaluation.MeanNll(model, validation(), chunkSize: 5);
        Assert.AreEqual(sum / tokens, summary.ValidationLoss!.Value, 1e-12, "chunk size must not change the NLL");
        Assert.AreEqual(Math.Exp(summary.ValidationLoss.Value), summary.History[^1].ValidationPerplexity!.Value, 1e-9);

        // Chunked NLL equals the whole-sequence loss.
        using var batch = validation().Single();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (hidden, _) = model.ForwardChunk(batch.InputIds, 0, null);
        double whole = model.LossSum(hidden, batch.Targets()).item<double>();
        var (perRow, rowTokens) = Evaluation.SequenceNll(model, batch, chunkSize: 7);
        Assert.AreEqual(whole, perRow.Sum(), 1e-9);
        Assert.AreEqual(batch.Targets().ne(-100).sum().item<long>(), rowTokens.Sum());
    }

    [TestMethod]
    public void StepsDoNotLeakTensors()
    {
        using var model = LoraModel();
        var live = new List<long>();
        var recorder = new Recorder(_ => live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount));
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8, SampledChunks = 2 }),
            new TrainingOptions { MaxEpoch = 2, GradientAccumulationSteps = 2 });
        // The model's rotary table grows to the longest sequence once and is the model's, not the step's.
        using (model.Positions(0, 24)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;

        trainer.Train(Data(12), 12, recorder, CancellationToken.None, () => new[] { TestModels.Batch(Vocab, new[] { 20 }) });

        Assert.AreEqual(12, live.Count);
        // Within an epoch the next batch is already loaded; at an epoch's last step it is not, hence two populations.
        var midEpoch = live.Where((_, i) => i % 6 != 5).Skip(1).Distinct().ToList();
        Assert.AreEqual(1, midEpoch.Count, "live tensors after each step: " + string.Join(", ", live));
        Assert.AreEqual(live[5], live[11], "live tensors at the end of each epoch: " + string.Join(", ", live));
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "tensors left alive by Train");
    }

    /// <summary>SeCO whose <paramref name="failingStep"/>-th step fails after its first chunk's backward, as libtorch's CUDA allocator does.</summary>
    static ChunkwiseStep RunsOutOfMemory(int failingStep)
    {
        int steps = 0;
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        step.AfterChunkBackward = chunk =>
        {
            // Stage 2 walks the chunks backwards: the last one (index 2 of 24 tokens) comes first in each step.
            if (chunk == 2 && ++steps == failingStep)
                throw new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)");
        };
        return step;
    }

    [TestMethod]
    public void AStepThatRunsOutOfMemoryFailsNamingItAndLeavesTheLastCheckpointIntact()
    {
        string directory = Path.Combine(Path.GetTempPath(), "seco-oom-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = LoraModel();
            using var trainer = new Trainer(model, RunsOutOfMemory(failingStep: 3), new TrainingOptions { LearningRate = 1e-2, MaxSteps = 5 });
            Dictionary<string, double[]>? afterStep2 = null;
            var progress = new Recorder(p =>
            {
                trainer.SaveState(directory); // as the stage's periodic checkpoint does
                afterStep2 = Snapshot(model);
            });
            var e = Assert.ThrowsExactly<InsufficientDeviceMemoryException>(() => trainer.Train(Data(5), 5, progress, CancellationToken.None));
            Assert.AreEqual(3, e.Step);
            Assert.AreEqual(24, e.Length);
            Assert.AreEqual(2, e.BatchSize);
            Assert.AreEqual(8, e.ChunkSize);
            StringAssert.Contains(e.Message, "Step 3 ran out of memory on cpu with 2 sequences of 24 tokens in chunks of 8");
            StringAssert.Contains(e.Message, "The last saved checkpoint is unchanged.");
            Assert.IsInstanceOfType<System.Runtime.InteropServices.ExternalException>(e.InnerException);
            Assert.AreEqual(2, trainer.CompletedSteps);
            Assert.IsTrue(TrainableParameters.Of(model).All(p => p.Parameter.grad is null || p.Parameter.grad.abs().max().item<double>() == 0),
                "the failed step's partial gradients (its last chunk's) are dropped");

            // The state on disk is step 2's: a fresh trainer resumes from it with the weights step 2 left.
            using var resumedModel = LoraModel();
            using var resumed = new Trainer(resumedModel, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { LearningRate = 1e-2, MaxSteps = 5 });
            resumed.LoadState(directory);
            Assert.AreEqual(2, resumed.CompletedSteps);
            foreach (var (name, values) in Snapshot(resumedModel)) CollectionAssert.AreEqual(afterStep2![name], values, name);
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
    }
}
