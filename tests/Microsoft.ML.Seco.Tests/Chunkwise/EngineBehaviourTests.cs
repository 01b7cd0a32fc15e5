using Microsoft.ML.Seco.Chunkwise;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>Memory discipline, reproducibility and option handling of the chunk-wise step.</summary>
[TestClass]
public sealed class EngineBehaviourTests
{
    [TestMethod]
    public void OnlyOneChunkGraphIsAliveDuringStageTwo()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 48 });
        var live = new List<long>();
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 })
        {
            AfterChunkBackward = _ => live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount),
        };
        step.Run(model, batch);
        model.zero_grad();
        Assert.AreEqual(6, live.Count);
        // The first chunk processed allocates the cache gradients; from then on nothing may accumulate per chunk.
        Assert.AreEqual(1, live.Skip(1).Distinct().Count(), "live tensors after each chunk: " + string.Join(", ", live));

        // The probe is sensitive: holding on to one tensor per chunk shows up.
        var kept = new List<Tensor>();
        live.Clear();
        step.AfterChunkBackward = _ => { kept.Add(ones(1)); live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount); };
        step.Run(model, batch);
        model.zero_grad();
        Assert.AreEqual(5, live.Skip(1).Distinct().Count());
        kept.ForEach(t => t.Dispose());
    }

    [TestMethod]
    public void StepsDoNotLeakTensors()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 40, 33 });
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8, SampledChunks = 2 });
        step.Run(model, batch);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) step.Run(model, batch);
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        model.zero_grad();
    }

    [TestMethod]
    public void SameSeedGivesSameChunksAndBitwiseIdenticalGradients()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 64 });
        var runs = new List<List<(StepResult, Dictionary<string, Tensor>)>>();
        foreach (int seed in new[] { 42, 42, 43 })
        {
            var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8, SampledChunks = 3, Seed = seed });
            var steps = new List<(StepResult, Dictionary<string, Tensor>)>();
            for (int i = 0; i < 3; i++)
            {
                StepResult? result = null;
                var g = GradientCheck.Gradients(model, () => result = step.Run(model, batch));
                steps.Add((result!, g));
            }
            runs.Add(steps);
        }
        for (int i = 0; i < 3; i++)
        {
            Assert.AreEqual(runs[0][i].Item1, runs[1][i].Item1);
            foreach (var (name, g) in runs[0][i].Item2)
                Assert.IsTrue(BitwiseEqual(g, runs[1][i].Item2[name]), $"step {i}: {name} differs between runs with the same seed");
        }
        bool anyDifferent = Enumerable.Range(0, 3).Any(i => runs[0][i].Item2.Any(kv => !BitwiseEqual(kv.Value, runs[2][i].Item2[kv.Key])));
        Assert.IsTrue(anyDifferent, "another seed should sample other chunks at least once in three steps");
    }

    static bool BitwiseEqual(Tensor a, Tensor b) => a.data<double>().ToArray().SequenceEqual(b.data<double>().ToArray());

    [TestMethod]
    public void StepSeedsArePinnedSoOtherProcessesSampleTheSameChunks()
    {
        // Fixed values: a per-process hash (HashCode.Combine) here once made runs differ from process to process.
        Assert.AreEqual(ChunkwiseStep.StepSeed(42, 0), ChunkwiseStep.StepSeed(42, 0));
        Assert.AreEqual(269157861, ChunkwiseStep.StepSeed(0, 0)); // SplitMix64(1), computed independently
        Assert.AreEqual(ChunkwiseStep.StepSeed(7, 3), ChunkwiseStep.StepSeed(7, 3));
        Assert.AreNotEqual(ChunkwiseStep.StepSeed(7, 3), ChunkwiseStep.StepSeed(7, 4));
        Assert.AreNotEqual(ChunkwiseStep.StepSeed(7, 3), ChunkwiseStep.StepSeed(8, 3));
    }

    [TestMethod]
    public void OptionsOutOfRangeNameTheOption()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 0 }));
        Assert.AreEqual("ChunkSize", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ChunkwiseStep(new ChunkwiseOptions { SampledChunks = 0 }));
        Assert.AreEqual("SampledChunks", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ChunkwiseStep(new ChunkwiseOptions { MaxCompensation = 0.5 }));
        Assert.AreEqual("MaxCompensation", e.ParamName);
    }

    [TestMethod]
    public void SamplersDrawWhatTheyPromise()
    {
        var random = new Random(1);
        for (int i = 0; i < 50; i++)
        {
            var fixedBudget = ChunkSelection.Sample(10, 3, ChunkSampler.FixedBudget, true, null, random);
            Assert.AreEqual(3, fixedBudget.Count);
            Assert.AreEqual(10.0 / 3, fixedBudget.Compensation, 1e-15);
        }
        Assert.AreEqual(2.0, ChunkSelection.Sample(10, 3, ChunkSampler.FixedBudget, true, 2, random).Compensation);
        Assert.AreEqual(1.0, ChunkSelection.Sample(10, 3, ChunkSampler.Bernoulli, false, null, random).Compensation);
        var all = ChunkSelection.Sample(4, 9, ChunkSampler.Bernoulli, true, null, random);
        Assert.AreEqual(4, all.Count);
        Assert.AreEqual(1.0, all.Compensation);
        int kept = Enumerable.Range(0, 2000).Sum(_ => ChunkSelection.Sample(10, 3, ChunkSampler.Bernoulli, true, null, random).Count);
        Assert.AreEqual(3.0, kept / 2000.0, 0.1, "Bernoulli keeps t chunks on average");
    }
}
