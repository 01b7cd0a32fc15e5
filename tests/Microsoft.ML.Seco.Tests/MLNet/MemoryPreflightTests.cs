using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static Microsoft.ML.Seco.Tests.MLNet.TinyModelFixture;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>A run that will not fit says so before its first step, naming the length, the chunk size and what would fit.</summary>
[TestClass]
public sealed class MemoryPreflightTests
{
    static ChunkwiseLoraTrainer.Options Options(string budget, string? checkpoints = null) => new()
    {
        ModelPath = ModelPath, ChunkSize = 16, MaxSequenceLength = 96, MaxSteps = 2, Device = "cpu", DType = "float32",
        MemoryBudget = budget, CheckpointDirectory = checkpoints,
    };

    [TestMethod]
    public void ARunOverItsBudgetStopsBeforeTheFirstStepWithWhatWouldFit()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(4));
        string checkpoints = TempPath("preflight");
        // A budget smaller than the weights: nothing can fit, and the message says so.
        var tiny = Assert.ThrowsExactly<InsufficientDeviceMemoryException>(() => ml.Transforms.Text.ChunkwiseLora(Options("1KiB")).Fit(data));
        Assert.IsEmpty(tiny.Remedies);
        StringAssert.Contains(tiny.Message, "No single change of RecomputeLayers, ChunkSize, BatchSize, MaxSequenceLength is predicted to fit");
        long longest = tiny.Length;
        Assert.IsTrue(longest is > 16 and <= 96, $"longest batch {longest}");

        var query = new StepMemoryQuery { Config = ModelConfig.Load(ModelPath), Length = longest, ChunkSize = 16 };
        long whole = StepMemory.Predict(query).Total, recomputed = StepMemory.Predict(query with { RecomputeLayers = true }).Total;
        Assert.IsTrue(recomputed < whole, $"recompute should predict less: {recomputed} vs {whole}");
        // Between the two: recomputing fits, the run as asked does not.
        long budget = (whole + recomputed) / 2;

        var e = Assert.ThrowsExactly<InsufficientDeviceMemoryException>(() => ml.Transforms.Text.ChunkwiseLora(Options($"{budget}", checkpoints)).Fit(data));
        Assert.IsNull(e.Step, "refused before the first step");
        Assert.AreEqual(longest, e.Length);
        Assert.AreEqual(16, e.ChunkSize);
        Assert.AreEqual(whole, e.PredictedBytes);
        Assert.AreEqual(budget, e.AvailableBytes);
        StringAssert.Contains(e.Message, $"a sequence of {longest} tokens in chunks of 16");
        var recompute = e.Remedies.Single(r => r.Option == nameof(ChunkwiseLoraTrainer.Options.RecomputeLayers));
        Assert.AreEqual(true, recompute.Value);
        StringAssert.Contains(e.Message, "RecomputeLayers true");
        Assert.IsFalse(Directory.Exists(checkpoints) && Directory.EnumerateFileSystemEntries(checkpoints).Any(), "nothing written before the check");

        // Every change offered fits when applied: the run then trains.
        foreach (var remedy in e.Remedies)
        {
            var options = Options($"{budget}");
            typeof(ChunkwiseLoraTrainer.Options).GetField(remedy.Option)!.SetValue(options, remedy.Value);
            using var fitted = ml.Transforms.Text.ChunkwiseLora(options).Fit(data);
            Assert.AreEqual(2, fitted.TrainingSummary!.Steps, remedy.Option);
        }
    }

    [TestMethod]
    public void ABudgetThatIsNotASizeIsNamed()
    {
        var e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseLoraTrainer.Options { ModelPath = "m", MemoryBudget = "lots" }.Validate());
        Assert.AreEqual(nameof(ChunkwiseLoraTrainer.Options.MemoryBudget), e.ParamName);
        StringAssert.Contains(e.Message, "'lots' is not a size");
    }
}
