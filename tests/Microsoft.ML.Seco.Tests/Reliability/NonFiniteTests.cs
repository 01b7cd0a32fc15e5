using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Reliability;

/// <summary>An injected NaN in a loss or a gradient stops the run (or skips the batch) and never reaches saved weights.</summary>
[TestClass]
public sealed class NonFiniteTests
{
    const int Vocab = 61;

    /// <summary>Runs the real step, then on the chosen calls (0-based) turns the loss into NaN and one gradient into NaN, as an overflow would.</summary>
    sealed class PoisonedStep(ITrainingStep inner, params int[] poisonedCalls) : ITrainingStep
    {
        int _calls;
        public string Name => "poisoned " + inner.Name;

        public StepResult Run(CausalLM model, TokenBatch batch)
        {
            var result = inner.Run(model, batch);
            if (!poisonedCalls.Contains(_calls++)) return result;
            using (no_grad()) TrainableParameters.Of(model)[0].Parameter.grad!.fill_(double.NaN);
            return result with { Loss = double.NaN };
        }
    }

    sealed class Recorder(Action<TrainingProgress> onReport) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => onReport(value);
    }

    static CausalLM Model()
    {
        random.manual_seed(1);
        return TestModels.WithLora(TestModels.Create(TestModels.Llama()));
    }

    static Func<IEnumerable<TokenBatch>> Data(int count) =>
        () => Enumerable.Range(0, count).Select(i => TestModels.Batch(Vocab, new[] { 24, 19 }, seed: 100 + i));

    static double[] Weights(CausalLM model) =>
        TrainableParameters.Of(model).SelectMany(p => p.Parameter.to(ScalarType.Float64).data<double>().ToArray()).ToArray();

    [TestMethod]
    public void ANanLossStopsTheRunNamingTheStepAndBatchAndLeavesTheLastGoodWeights()
    {
        using var model = Model();
        var step = new PoisonedStep(new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), 4);
        using var trainer = new Trainer(model, step, new TrainingOptions { LearningRate = 1e-2, MaxEpoch = 1, GradientAccumulationSteps = 2 });
        double[]? afterStep2 = null;
        var recorder = new Recorder(p => { if (p.Step == 2) afterStep2 = Weights(model); });

        var e = Assert.ThrowsExactly<TrainingDivergedException>(() => trainer.Train(Data(8), 8, recorder, CancellationToken.None));

        Assert.AreEqual(3, e.Step);
        Assert.AreEqual(1, e.Epoch);
        Assert.AreEqual(4, e.FirstBatch, "the third step starts at batch 5 (0-based 4) with two micro-batches per step");
        Assert.AreEqual(1, e.BatchCount, "the first micro-batch of the step already diverged");
        StringAssert.Contains(e.Message, "optimizer step 3 (epoch 1, batch 5 of the epoch)");
        StringAssert.Contains(e.Message, "NaN");
        Assert.AreEqual(2, trainer.CompletedSteps);
        CollectionAssert.AreEqual(afterStep2, Weights(model), "no update may be applied from a NaN");
        Assert.IsTrue(TrainableParameters.Of(model).All(p => p.Parameter.grad is null || p.Parameter.grad.isfinite().all().item<bool>()),
            "the poisoned gradients must be dropped");
    }

    [TestMethod]
    public void SkipBatchDropsTheStepCountsItAndKeepsTraining()
    {
        using var model = Model();
        var step = new PoisonedStep(new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), 2, 5);
        using var trainer = new Trainer(model, step, new TrainingOptions { LearningRate = 1e-2, MaxEpoch = 1, NonFiniteLoss = NonFiniteLossAction.SkipBatch });
        var weights = new List<double[]>();
        var recorder = new Recorder(_ => weights.Add(Weights(model)));

        var summary = trainer.Train(Data(8), 8, recorder, CancellationToken.None);

        Assert.AreEqual(8, summary.Steps);
        Assert.AreEqual(2, summary.SkippedBatches);
        Assert.IsTrue(double.IsNaN(summary.History[2].Loss) && double.IsNaN(summary.History[5].Loss));
        Assert.IsTrue(double.IsFinite(summary.History[3].Loss) && double.IsFinite(summary.FinalLoss));
        Assert.AreEqual(1, summary.History[2].SkippedBatches);
        CollectionAssert.AreEqual(weights[1], weights[2], "the skipped step applies no update");
        CollectionAssert.AreNotEqual(weights[2], weights[3], "the next step trains again");
        Assert.IsTrue(weights[^1].All(double.IsFinite));
    }

    [TestMethod]
    public void ANanGradientWithAFiniteLossIsCaughtBeforeTheUpdate()
    {
        using var model = Model();
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { MaxEpoch = 1, MaxGradNorm = null });
        trainer.BeforeOptimizerStep = s => { if (s == 2) using (no_grad()) TrainableParameters.Of(model)[1].Parameter.grad!.fill_(double.PositiveInfinity); };
        double[]? afterStep1 = null;
        var e = Assert.ThrowsExactly<TrainingDivergedException>(() =>
            trainer.Train(Data(4), 4, new Recorder(p => { if (p.Step == 1) afterStep1 = Weights(model); }), CancellationToken.None));
        Assert.AreEqual(2, e.Step);
        StringAssert.Contains(e.Message, "gradient norm");
        CollectionAssert.AreEqual(afterStep1, Weights(model));
    }

    [TestMethod]
    public void ANanParameterIsNeverSavedAndTheLastGoodStateStays()
    {
        string directory = Path.Combine(Path.GetTempPath(), "seco-nan-state-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = Model();
            using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { MaxSteps = 2 });
            trainer.Train(Data(4), 4, null, CancellationToken.None);
            trainer.SaveState(directory);
            byte[] good = File.ReadAllBytes(Path.Combine(directory, "trainer-state.bin"));

            using (no_grad()) TrainableParameters.Of(model)[3].Parameter.narrow(0, 0, 1).fill_(double.NaN);
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => trainer.SaveState(directory));
            StringAssert.Contains(e.Message, TrainableParameters.Of(model)[3].Name);
            CollectionAssert.AreEqual(good, File.ReadAllBytes(Path.Combine(directory, "trainer-state.bin")));
            Assert.AreEqual(1, Directory.GetFiles(directory).Length, "no temporary file is left behind");
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, true);
        }
    }

    [TestMethod]
    public void ANanWeightIsNeverWrittenAsAnAdapterOrAModel()
    {
        string directory = Path.Combine(Path.GetTempPath(), "seco-nan-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = Model();
            string adapter = Path.Combine(directory, "adapter"), merged = Path.Combine(directory, "merged");
            PeftAdapter.Save(model, adapter);
            ModelDirectory.Save(model, merged);
            var before = Snapshot(directory);

            var (loraName, lora) = TrainableParameters.Of(model)[1];
            using (no_grad()) lora.narrow(0, 0, 1).fill_(double.NaN);
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => PeftAdapter.Save(model, adapter));
            StringAssert.Contains(e.Message, loraName);
            using (no_grad()) lora.nan_to_num_(0);

            using (no_grad()) model.model.norm.weight!.narrow(0, 0, 1).fill_(double.PositiveInfinity);
            e = Assert.ThrowsExactly<InvalidOperationException>(() => ModelDirectory.Save(model, merged));
            StringAssert.Contains(e.Message, "model.norm.weight");

            var after = Snapshot(directory);
            CollectionAssert.AreEquivalent(before.Keys, after.Keys, "no file added or removed");
            foreach (var (file, bytes) in before) CollectionAssert.AreEqual(bytes, after[file], file);
        }
        finally
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, true);
        }

        static Dictionary<string, byte[]> Snapshot(string root) =>
            Directory.GetFiles(root, "*", SearchOption.AllDirectories).ToDictionary(f => Path.GetRelativePath(root, f), File.ReadAllBytes);
    }

    /// <summary>
    /// Through the ML.NET stage: a token whose embedding is NaN appears only in input row 6, so with two rows per batch
    /// the third batch diverges and the error names rows 5 and 6.
    /// </summary>
    [TestMethod]
    public void TheStageNamesTheInputRowsOfTheBatchThatDiverged()
    {
        string modelPath = MLNet.TinyModelFixture.TempPath("nan-token-model");
        try
        {
            TinyModel.Write(modelPath, new TinyModelSpec { Layers = 2, HiddenSize = 32, Heads = 4, KeyValueHeads = 2, IntermediateSize = 64, Seed = 1 });
            var documents = MLNet.TinyModelFixture.Documents(8, seed: 3);
            documents[5].Text += " xylophone";
            var tokenizer = ModelTokenizer.Load(modelPath);
            var common = documents.Where((_, i) => i != 5).SelectMany(d => tokenizer.Encode(d.Text, addBos: true)).ToHashSet();
            var poisoned = tokenizer.Encode(" xylophone", addBos: false).Where(id => !common.Contains(id)).ToArray();
            Assert.IsTrue(poisoned.Length > 0, "the poisoned word must have a token of its own");
            PoisonEmbeddings(modelPath, poisoned);

            var ml = new MLContext(seed: 1);
            var stage = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
            {
                ModelPath = modelPath, ChunkSize = 16, MaxSequenceLength = 256, BatchSize = 2, MaxEpoch = 1, Device = "cpu",
            });
            var e = Assert.ThrowsExactly<TrainingDivergedException>(() => stage.Fit(ml.Data.LoadFromEnumerable(documents)));
            Assert.AreEqual(3, e.Step);
            StringAssert.Contains(e.Message, "input rows 5, 6 (1-based, in data order)");
        }
        finally
        {
            if (Directory.Exists(modelPath)) Directory.Delete(modelPath, true);
        }
    }

    static void PoisonEmbeddings(string modelPath, int[] ids)
    {
        string file = Path.Combine(modelPath, "model.safetensors");
        var tensors = new List<(string, Tensor)>();
        using (var reader = SafeTensorsFile.Open(file))
            foreach (var name in reader.TensorNames) tensors.Add((name, reader.ReadTensor(name)));
        var embedding = tensors.Single(t => t.Item1 == "model.embed_tokens.weight").Item2;
        using (no_grad())
            foreach (int id in ids) embedding[id].fill_(double.NaN);
        SafeTensorsFile.Write(file, tensors);
        foreach (var (_, t) in tensors) t.Dispose();
    }
}
