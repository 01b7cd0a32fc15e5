using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using TorchSharp;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Training;
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
        // Expected values from an independent SplitMix64 (Python, 64-bit wrap-around, low 31 bits of the output).
        Assert.AreEqual(269157861, ChunkwiseStep.StepSeed(0, 0));
        Assert.AreEqual(136194311, ChunkwiseStep.StepSeed(42, 0));
        Assert.AreEqual(2002657118, ChunkwiseStep.StepSeed(7, 3));
        Assert.AreEqual(466361121, ChunkwiseStep.StepSeed(7, 4));
        Assert.AreEqual(1476624210, ChunkwiseStep.StepSeed(8, 3));
        Assert.AreEqual(1943763748, ChunkwiseStep.StepSeed(-1, 5));
    }

    [TestMethod]
    public void OptionsOutOfRangeNameTheOption()
    {
        var e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 0 }));
        Assert.AreEqual("ChunkSize", e.ParamName);
        e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseStep(new ChunkwiseOptions { SampledChunks = 0 }));
        Assert.AreEqual("SampledChunks", e.ParamName);
        e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseStep(new ChunkwiseOptions { MaxCompensation = 0.5 }));
        Assert.AreEqual("MaxCompensation", e.ParamName);
    }

    [TestMethod]
    public void SamplersDrawWhatTheyPromise()
    {
        var random = new Random(1);
        for (int i = 0; i < 50; i++)
        {
            var fixedBudget = ChunkSamplers.FixedBudget.Sample(10, 3, Compensation.LossAndCache, null, random);
            Assert.AreEqual(3, fixedBudget.Count);
            Assert.AreEqual(10.0 / 3, fixedBudget.LossFactor, 1e-15);
            Assert.AreEqual(10.0 / 3, fixedBudget.CacheFactor, 1e-15);
        }
        // Each mode puts k/t (capped) where its name says and 1 elsewhere.
        var modes = new (Compensation Mode, double? Cap, double Loss, double Cache)[]
        {
            (Compensation.LossOnly, null, 2.5, 1), (Compensation.CacheOnly, null, 1, 2.5), (Compensation.None, null, 1, 1),
            (Compensation.LossAndCache, 2, 2, 2), (Compensation.LossOnly, 2, 2, 1), (Compensation.CacheOnly, 1.5, 1, 1.5),
        };
        foreach (var (mode, cap, loss, cache) in modes)
        {
            var selection = ChunkSamplers.FixedBudget.Sample(10, 4, mode, cap, random);
            Assert.AreEqual((loss, cache), (selection.LossFactor, selection.CacheFactor), $"{mode}, cap {cap}");
        }
        var all = ChunkSamplers.Bernoulli.Sample(4, 9, Compensation.LossAndCache, null, random);
        Assert.AreEqual(4, all.Count);
        Assert.AreEqual((1.0, 1.0), (all.LossFactor, all.CacheFactor), "t >= k is SeCO: every chunk, factors 1");
        int kept = Enumerable.Range(0, 2000).Sum(_ => ChunkSamplers.Bernoulli.Sample(10, 3, Compensation.LossAndCache, null, random).Count);
        Assert.AreEqual(3.0, kept / 2000.0, 0.1, "Bernoulli keeps t chunks on average");

        // Stratified: ⌈t/2⌉ from the labelled chunks, ⌊t/2⌋ from the others, a short group's remainder to the other.
        var labelled = new[] { false, true, false, true, true, false, false, true, false, false };
        for (int t = 1; t < 10; t++)
        {
            var selection = ChunkSamplers.Stratified.Sample(10, t, Compensation.None, null, random, labelled);
            int fromLabelled = Enumerable.Range(0, 10).Count(j => selection.Keep[j] && labelled[j]);
            Assert.AreEqual(StratifiedSampler.Budget(4, 6, t), (fromLabelled, selection.Count - fromLabelled), $"t = {t}");
            Assert.AreEqual((1.0, 1.0), (selection.LossFactor, selection.CacheFactor));
        }
        foreach (var (labelledChunks, others, t, expected) in new[] { (5, 5, 4, (2, 2)), (5, 5, 3, (2, 1)), (1, 9, 4, (1, 3)), (9, 1, 4, (3, 1)), (0, 5, 3, (0, 3)), (4, 6, 9, (4, 5)) })
            Assert.AreEqual(expected, StratifiedSampler.Budget(labelledChunks, others, t), $"{labelledChunks} labelled, {others} others, t = {t}");
        ArgumentOutOfRangeException e = Assert.ThrowsExactly<OptionException>(() => ChunkSamplers.Stratified.Sample(10, 3, Compensation.LossAndCache, null, random, labelled));
        StringAssert.Contains(e.Message, "None");
        e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseStep(new ChunkwiseOptions { SampledChunks = 2, Sampler = ChunkSampler.Stratified }));
        Assert.AreEqual("Compensation", e.ParamName);
        Assert.ThrowsExactly<ArgumentException>(() => ChunkSamplers.Stratified.Sample(10, 3, Compensation.None, null, random));
    }

    [TestMethod]
    public void SampleDrawsEachSelectionWithItsEnumeratedProbability()
    {
        // Sample and GradientCheck.Selections are separate code: the draws' frequencies must match the enumeration.
        var labelled = new[] { false, true, false, true, false };
        var random = new Random(4);
        const int draws = 40000;
        foreach (var (sampler, t) in new[] { (ChunkSampler.Bernoulli, 2), (ChunkSampler.FixedBudget, 2), (ChunkSampler.Stratified, 3), (ChunkSampler.Stratified, 1) })
        {
            var mode = sampler == ChunkSampler.Stratified ? Compensation.None : Compensation.LossAndCache;
            var expected = GradientCheck.Selections(5, t, ChunkSamplers.Get(sampler), mode, null, labelledChunks: labelled)
                .ToDictionary(s => Mask(s.Selection.Keep), s => s.Probability);
            Assert.AreEqual(1.0, expected.Values.Sum(), 1e-12);
            var counts = new Dictionary<int, int>();
            for (int i = 0; i < draws; i++)
            {
                int mask = Mask(ChunkSamplers.Get(sampler).Sample(5, t, mode, null, random, labelled).Keep);
                counts[mask] = counts.GetValueOrDefault(mask) + 1;
            }
            foreach (var mask in counts.Keys) Assert.IsTrue(expected.ContainsKey(mask), $"{sampler} t = {t} drew pattern {mask}, which the enumeration calls impossible");
            foreach (var (mask, p) in expected)
            {
                double frequency = counts.GetValueOrDefault(mask) / (double)draws;
                double sigma = Math.Sqrt(p * (1 - p) / draws);
                Assert.AreEqual(p, frequency, 5 * sigma, $"{sampler} t = {t}, pattern {mask}");
            }
        }
    }

    static int Mask(bool[] keep) => keep.Select((k, j) => k ? 1 << j : 0).Sum();
}
