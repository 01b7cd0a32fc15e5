using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Training;
using static Microsoft.ML.Seco.Tests.MLNet.TinyModelFixture;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>The estimator/transformer pair as a user drives it through MLContext.</summary>
[TestClass]
public sealed class ChunkwiseLoraStageTests
{
    static ChunkwiseLoraTrainer.Options Options(int steps = 8) => new()
    {
        ModelPath = ModelPath, ChunkSize = 16, SampledChunks = 2, MaxSequenceLength = 96, LoraRank = 4,
        LearningRate = 5e-3, MaxSteps = steps, Seed = 3, Device = "cpu", DType = "float32",
    };

    static float[] Perplexities(IDataView scored) => scored.GetColumn<float>("Perplexity").ToArray();

    [TestMethod]
    public void FitTransformSaveLoadGivesTheSamePerplexities()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(12));
        var messages = new List<string>();
        ml.Log += (_, e) => { if (e.Source.Contains("ChunkwiseLora")) messages.Add(e.Message); };
        using var model = ml.Transforms.Text.ChunkwiseLora(Options()).Fit(data);
        Assert.IsTrue(messages.Any(m => m.Contains("] step 8/8 ", StringComparison.Ordinal)), "progress reaches MLContext.Log: " + string.Join(" | ", messages.Take(5)));

        var heldOut = ml.Data.LoadFromEnumerable(Documents(3, seed: 9));
        var scored = model.Transform(heldOut);
        var before = Perplexities(scored);
        Assert.AreEqual(3, before.Length);
        Assert.IsTrue(before.All(p => p > 1 && float.IsFinite(p)));
        Assert.AreEqual(model.Perplexity(Documents(3, seed: 9)[0].Text), before[0], 1e-3 * before[0]);

        AssertReloadScoresTheSame(ml, model, heldOut);
    }

    [TestMethod]
    public void AutoDeviceHonoursMlContextsGpuDeviceIdAndFallbackToCpu()
    {
        // As ML.NET's TorchSharp trainers: a GPU id with no such CUDA device trains on the CPU only when FallbackToCpu says
        // so, and otherwise stops naming both settings. (On a machine with CUDA device 0 the first fit would use it.)
        var options = Options(steps: 1);
        options.Device = "auto";
        if (TorchSharp.torch.cuda.is_available()) Assert.Inconclusive("this check needs a machine without CUDA");
        var fallback = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = true };
        using (var model = fallback.Transforms.Text.ChunkwiseLora(options).Fit(fallback.Data.LoadFromEnumerable(Documents(2))))
            Assert.AreEqual(TorchSharp.DeviceType.CPU, model.Model.Device.type);
        var strict = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = false };
        var e = Assert.ThrowsExactly<OptionException>(() => strict.Transforms.Text.ChunkwiseLora(options).Fit(strict.Data.LoadFromEnumerable(Documents(2))));
        Assert.AreEqual("Device 'auto' asks for MLContext.GpuDeviceId 0, but no CUDA device is available, and MLContext.FallbackToCpu is false.", e.Message);
        Assert.AreEqual((nameof(ChunkwiseLoraTrainer.Options.Device), (object?)"auto"), (e.Option, e.Value));
    }

    [TestMethod]
    public void FullFineTuningSavesEveryWeightAndReloads()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(6));
        var options = Options(steps: 3);
        options.FullFineTuning = true;
        using var model = ml.Transforms.Text.ChunkwiseLora(options).Fit(data);
        Assert.IsNull(LoraAdapters.ConfigOf(model.Model), "full fine-tuning attaches no adapter");
        Assert.ThrowsExactly<InvalidOperationException>(() => model.SaveAdapter(TempPath("no-adapter")));
        var heldOut = ml.Data.LoadFromEnumerable(Documents(2, seed: 4));
        AssertReloadScoresTheSame(ml, model, heldOut);
    }

    /// <summary>Saves the stage to one file, loads it back and compares the held-out perplexities bit for bit.</summary>
    static void AssertReloadScoresTheSame(MLContext ml, ChunkwiseLoraTransformer model, IDataView heldOut)
    {
        var expected = Perplexities(model.Transform(heldOut));
        string path = TempPath("stage") + ".seco";
        try
        {
            model.Save(ml, path);
            using var reloaded = (ChunkwiseLoraTransformer)SecoModel.Load(ml, path);
            CollectionAssert.AreEqual(expected, Perplexities(reloaded.Transform(heldOut)));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void AChainWithMlNetStagesSavesAndLoadsAsOneFile()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(10));
        var pipeline = ml.Transforms.Text.NormalizeText("Clean", "Text", keepDiacritics: true)
            .Append(ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
            {
                ModelPath = ModelPath, TextColumnName = "Clean", ChunkSize = 16, MaxSequenceLength = 64, MaxSteps = 3, Seed = 2, Device = "cpu",
            }))
            .Append(ml.Transforms.CopyColumns("PerplexityCopy", "Perplexity"));
        var model = pipeline.Fit(data);
        var heldOut = ml.Data.LoadFromEnumerable(Documents(2, seed: 5));
        var expected = model.Transform(heldOut).GetColumn<float>("PerplexityCopy").ToArray();

        string path = TempPath("chain") + ".seco";
        try
        {
            SecoModel.Save(ml, model, data.Schema, path);
            var reloaded = SecoModel.Load(ml, path);
            CollectionAssert.AreEqual(expected, reloaded.Transform(heldOut).GetColumn<float>("PerplexityCopy").ToArray());
            (reloaded as IDisposable)?.Dispose();
        }
        finally
        {
            File.Delete(path);
            model.Dispose();
        }
    }

    [TestMethod]
    public void MlNetModelSaveRefusesWithAPointerToSecoModel()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(4));
        using var model = ml.Transforms.Text.ChunkwiseLora(Options(steps: 1)).Fit(data);
        using var stream = new MemoryStream();
        var e = Assert.Throws<Exception>(() => ml.Model.Save(model, data.Schema, stream));
        var notSupported = e as NotSupportedException ?? e.InnerException as NotSupportedException;
        Assert.IsNotNull(notSupported, e.ToString());
        StringAssert.Contains(notSupported.Message, "SecoModel.Save");

        // Through a file path, ML.NET has already created the file when it reaches this stage (a 193-byte stub with
        // Microsoft.ML 5.0.1): it must not load back as a model.
        string path = TempPath("mlnet") + ".zip";
        try
        {
            Assert.Throws<Exception>(() => ml.Model.Save(model, data.Schema, path));
            if (File.Exists(path)) Assert.Throws<Exception>(() => ml.Model.Load(path, out _));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void MissingOrWrongColumnsAreNamed()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(2));
        var wrongName = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options { ModelPath = ModelPath, TextColumnName = "Body" });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => wrongName.Fit(data));
        StringAssert.Contains(e.Message, "'Body'");
        var numbers = ml.Data.LoadFromEnumerable(new[] { new Numbers { Text = 1.5f } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.Text.ChunkwiseLora(Options()).Fit(numbers));
        StringAssert.Contains(e.Message, "'Text'");
        StringAssert.Contains(e.Message, "expects Text");
    }

    sealed class Numbers
    {
        public float Text { get; set; }
    }

    [TestMethod]
    public void OptionsOutOfRangeAreNamed()
    {
        var ml = new MLContext();
        foreach (var (options, name) in new (ChunkwiseLoraTrainer.Options, string)[]
        {
            (new() { ModelPath = ModelPath, ChunkSize = 0 }, "ChunkSize"),
            (new() { ModelPath = ModelPath, SampledChunks = 0 }, "SampledChunks"),
            (new() { ModelPath = ModelPath, MaxCompensation = 0.5 }, "MaxCompensation"),
            (new() { ModelPath = ModelPath, LearningRate = -1 }, "LearningRate"),
            (new() { ModelPath = ModelPath, MaxSequenceLength = 1 }, "MaxSequenceLength"),
            (new() { ModelPath = ModelPath, GradientAccumulationSteps = 0 }, "GradientAccumulationSteps"),
            (new() { ModelPath = "" }, "ModelPath"),
            (new() { ModelPath = ModelPath, SampledChunks = 2, Sampler = ChunkSampler.Stratified }, "Compensation"),
            (new() { ModelPath = ModelPath, Beta2 = 1 }, "Beta2"),
            (new() { ModelPath = ModelPath, Epsilon = -1 }, "Epsilon"),
            (new() { ModelPath = ModelPath, WarmupRatio = 0.1, WarmupSteps = 2 }, "WarmupRatio"),
            (new() { ModelPath = ModelPath, MaxGradNorm = 0 }, "MaxGradNorm"),
            // Rules that live in LoraConfig and TrainingOptions under other names are reported under the stage's names.
            (new() { ModelPath = ModelPath, LoraRank = 0 }, "LoraRank"),
            (new() { ModelPath = ModelPath, LoraTargetModules = new[] { "qq_proj" } }, "LoraTargetModules"),
            (new() { ModelPath = ModelPath, FinalLearningRateRatio = 2 }, "FinalLearningRateRatio"),
        })
        {
            var e = Assert.Throws<ArgumentException>(() => ml.Transforms.Text.ChunkwiseLora(options));
            Assert.AreEqual(name, e.ParamName);
        }
    }

    [TestMethod]
    public void PaperSettingsReachTheEngine()
    {
        var options = new ChunkwiseLoraTrainer.Options
        {
            ModelPath = ModelPath, SampledChunks = 3, Sampler = ChunkSampler.FixedBudget, Compensation = Compensation.LossOnly, MaxCompensation = 2,
            Beta1 = 0.8, Beta2 = 0.95, Epsilon = 1e-6, WeightDecay = 0.05, WarmupRatio = 0.01, MaxGradNorm = null,
        };
        options.Validate();
        var chunkwise = options.Chunkwise(seed: 4);
        Assert.AreEqual((ChunkSampler.FixedBudget, Compensation.LossOnly, (double?)2), (chunkwise.Sampler, chunkwise.Compensation, chunkwise.MaxCompensation));
        var training = options.Training(seed: 4);
        Assert.AreEqual((0.8, 0.95, 1e-6, 0.05, (double?)0.01, (double?)null),
            (training.Beta1, training.Beta2, training.Epsilon, training.WeightDecay, training.WarmupRatio, training.MaxGradNorm));
        Assert.AreEqual(10, training.WarmupStepsFor(1000), "1% of 1,000 steps");
        Assert.AreEqual(1, training.WarmupStepsFor(40), "rounded up");

#pragma warning disable CS0618 // the earlier name must keep meaning what it meant
        options.Compensate = false;
        Assert.AreEqual(Compensation.None, options.Compensation);
        options.Compensate = true;
        Assert.AreEqual(Compensation.LossAndCache, options.Compensation);
#pragma warning restore CS0618
    }
}
