using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Diagnostics;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>
/// The sampler contract (<see cref="IChunkSampler"/>), checked for every registered sampler and for a sampler written
/// here, by exact enumeration of each law: it sums to 1, its marginals are the inclusion probabilities, Sample draws
/// its patterns with their probabilities, and the unbiasedness a sampler claims holds chain by chain. Then a custom
/// sampler through the step and the gradient check, and the registry's names.
/// </summary>
[TestClass]
public sealed class SamplerTests
{
    /// <summary>
    /// A user's sampler in a few lines: t consecutive chunks at a uniformly drawn offset, with the default factor k/t.
    /// Biased (a chunk at the edge is kept less often than one in the middle).
    /// </summary>
    sealed class WindowSampler : ChunkSamplerBase
    {
        public override string Name => "window";
        public override string Description => "t consecutive chunks at a uniform offset";

        protected override bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks) =>
            Window(chunks, sampled, random.Next(chunks - sampled + 1));

        protected override double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) => chunks - sampled + 1;

        protected override IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) =>
            Enumerable.Range(0, chunks - sampled + 1).Select(start => (Window(chunks, sampled, start), 1.0 / (chunks - sampled + 1)));

        static bool[] Window(int chunks, int sampled, int start) => Enumerable.Range(0, chunks).Select(j => j >= start && j < start + sampled).ToArray();
    }

    static readonly WindowSampler Window = new();

    /// <summary>Every registered sampler and the one written here.</summary>
    static IEnumerable<IChunkSampler> Samplers => ChunkSamplers.All.Append(Window);

    /// <summary>(k, t, labelled chunks): budgets below, at and above k; labels ignored by the samplers that do not use them.</summary>
    static readonly (int Chunks, int Sampled, bool[] Labelled)[] Cases =
    [
        (5, 1, [false, true, false, true, false]),
        (5, 2, [false, true, false, true, false]),
        (5, 3, [false, true, false, true, false]),
        (6, 4, [true, true, false, false, false, true]),
        (6, 3, [true, false, false, false, false, false]),
        (4, 4, [false, true, true, false]),
        (3, 7, [true, false, true]),
    ];

    static Compensation Accepted(IChunkSampler sampler) => Enum.GetValues<Compensation>().First(m => sampler.Rejects(m) is null);

    static int Mask(bool[] keep) => keep.Select((k, j) => k ? 1 << j : 0).Sum();

    static IEnumerable<int[]> NonEmptySubsets(int k) =>
        Enumerable.Range(1, (1 << k) - 1).Select(mask => Enumerable.Range(0, k).Where(j => (mask >> j & 1) == 1).ToArray());

    [TestMethod]
    public void EveryLawSumsToOneAndItsMarginalsAreTheInclusionProbabilities()
    {
        foreach (var sampler in Samplers)
        {
            foreach (var (k, t, labelled) in Cases)
            {
                string name = $"{sampler.Name} k = {k} t = {t}";
                var law = sampler.Law(k, t, labelled).ToList();
                Assert.AreEqual(sampler.SelectionCount(k, t, labelled), (double)law.Count, $"{name}: SelectionCount");
                Assert.AreEqual(1.0, law.Sum(s => s.Probability), 1e-12, $"{name}: the law sums to 1");
                Assert.IsTrue(law.All(s => s.Probability > 0 && s.Keep.Length == k), $"{name}: positive probabilities over k chunks");
                var masks = law.Select(s => Mask(s.Keep)).ToList();
                Assert.AreEqual(masks.Count, masks.Distinct().Count(), $"{name}: each pattern once");
                if (sampler is not WindowSampler)
                    CollectionAssert.AreEqual(masks.Order().ToList(), masks, $"{name}: the built-in laws come in increasing mask order");
                if (t >= k)
                    CollectionAssert.AreEqual(new[] { (1 << k) - 1 }, masks, $"{name}: t >= k is every chunk");

                var inclusion = sampler.InclusionProbabilities(k, t, labelled);
                Assert.AreEqual(k, inclusion.Length);
                for (int j = 0; j < k; j++)
                    Assert.AreEqual(law.Where(s => s.Keep[j]).Sum(s => s.Probability), inclusion[j], 1e-12, $"{name}: π_{j}");
                Assert.AreEqual(inclusion.Sum(), sampler.ExpectedKept(k, t, labelled), 1e-12);
                if (sampler is BernoulliSampler or FixedBudgetSampler or WindowSampler)
                    Assert.AreEqual(Math.Min(t, k), sampler.ExpectedKept(k, t, labelled), 1e-12, $"{name}: t chunks kept on average");
                foreach (var subset in NonEmptySubsets(k))
                    Assert.AreEqual(law.Where(s => subset.All(j => s.Keep[j])).Sum(s => s.Probability), sampler.AllKeptProbability(k, t, subset, labelled), 1e-12,
                        $"{name}: P(chunks {string.Join(",", subset)} all kept)");
                Assert.AreEqual(1.0, sampler.AllKeptProbability(k, t, Array.Empty<int>(), labelled));
            }
        }
    }

    [TestMethod]
    public void SampleDrawsEveryPatternWithItsProbability()
    {
        const int draws = 20000;
        foreach (var sampler in Samplers)
        {
            var random = new Random(17);
            foreach (var (k, t, labelled) in Cases)
            {
                string name = $"{sampler.Name} k = {k} t = {t}";
                var mode = Accepted(sampler);
                var law = sampler.Law(k, t, labelled).ToDictionary(s => Mask(s.Keep), s => s.Probability);
                var (loss, cache) = sampler.Factors(k, t, mode, null);
                var counts = new Dictionary<int, int>();
                for (int i = 0; i < draws; i++)
                {
                    var selection = sampler.Sample(k, t, mode, null, random, labelled);
                    Assert.AreEqual((loss, cache), (selection.LossFactor, selection.CacheFactor), $"{name}: factors");
                    int mask = Mask(selection.Keep);
                    Assert.IsTrue(law.ContainsKey(mask), $"{name} drew pattern {mask}, which its law calls impossible");
                    counts[mask] = counts.GetValueOrDefault(mask) + 1;
                }
                // Pearson's χ² with |law| − 1 degrees of freedom, refused beyond 6 standard deviations of its distribution
                // (the seed is fixed: the test is deterministic, the bound only says how unlikely a failure by chance is).
                double chiSquare = law.Sum(p => Math.Pow(counts.GetValueOrDefault(p.Key) - draws * p.Value, 2) / (draws * p.Value));
                int freedom = law.Count - 1;
                Assert.IsTrue(chiSquare <= freedom + 6 * Math.Sqrt(2 * freedom), $"{name}: χ² = {chiSquare:F1} with {freedom} degrees of freedom");
            }
        }
    }

    [TestMethod]
    public void UnbiasednessHoldsChainByChainExactlyWhereASamplerClaimsIt()
    {
        // A chain through the chunks of S reaches the parameters when all of S is kept, weighted a·b^(|S|−1)
        // (docs/ALGORITHM.md); the estimate is unbiased for every model iff each chain's expected weight is 1.
        int claimed = 0;
        foreach (var sampler in Samplers)
        {
            foreach (var (k, t, labelled) in Cases)
            {
                var law = sampler.Law(k, t, labelled).ToList();
                foreach (var mode in Enum.GetValues<Compensation>().Where(m => sampler.Rejects(m) is null))
                {
                    foreach (double? cap in new double?[] { null, 1.5, 2 })
                    {
                        string name = $"{sampler.Name} k = {k} t = {t} {mode} cap {cap}";
                        var (a, b) = sampler.Factors(k, t, mode, cap);
                        var worst = NonEmptySubsets(k).Max(chain =>
                            Math.Abs(law.Where(s => chain.All(j => s.Keep[j])).Sum(s => s.Probability) * a * Math.Pow(b, chain.Length - 1) - 1));
                        if (sampler.IsUnbiased(k, t, mode, cap))
                        {
                            claimed++;
                            Assert.AreEqual(0, worst, 1e-12, $"{name} claims to be unbiased");
                        }
                        else Assert.IsTrue(worst > 1e-6, $"{name} is unbiased (chain weights within {worst:E1} of 1) but does not say so");
                    }
                }
            }
        }
        Assert.IsTrue(ChunkSamplers.Bernoulli.IsUnbiased(5, 2, Compensation.LossAndCache, null));
        Assert.IsFalse(ChunkSamplers.Bernoulli.IsUnbiased(5, 2, Compensation.LossAndCache, 2), "a cap below k/t biases Bernoulli");
        Assert.IsFalse(ChunkSamplers.FixedBudget.IsUnbiased(5, 2, Compensation.LossAndCache, null));
        Assert.IsTrue(claimed > 0);
    }

    [TestMethod]
    public void TheSamplersDrawWhatTheEnumSwitchDrewBefore()
    {
        // The draws the samplers made before they became classes, written out: seeded runs must not change.
        static bool[] Before(ChunkSampler kind, int k, int t, Random random, bool[] labelled)
        {
            var keep = new bool[k];
            void Draw(int[] pool, int count)
            {
                for (int j = 0; j < count; j++)
                {
                    int pick = random.Next(j, pool.Length);
                    (pool[j], pool[pick]) = (pool[pick], pool[j]);
                    keep[pool[j]] = true;
                }
            }
            if (kind == ChunkSampler.Bernoulli)
                for (int j = 0; j < k; j++) keep[j] = random.NextDouble() < (double)t / k;
            else if (kind == ChunkSampler.FixedBudget) Draw(Enumerable.Range(0, k).ToArray(), t);
            else
            {
                var inLabelled = Enumerable.Range(0, k).Where(j => labelled[j]).ToArray();
                var others = Enumerable.Range(0, k).Where(j => !labelled[j]).ToArray();
                int fromLabelled = Math.Min(inLabelled.Length, Math.Max((t + 1) / 2, t - others.Length));
                Draw(inLabelled, fromLabelled);
                Draw(others, Math.Min(others.Length, t - fromLabelled));
            }
            return keep;
        }
        var labelled = new[] { false, true, true, false, false, true, false, false, true, false };
        foreach (var kind in Enum.GetValues<ChunkSampler>())
        {
            var sampler = ChunkSamplers.Get(kind);
            var mode = Accepted(sampler);
            for (int seed = 0; seed < 50; seed++)
            {
                foreach (int t in new[] { 1, 3, 7 })
                {
                    Random now = new(seed), then = new(seed);
                    CollectionAssert.AreEqual(Before(kind, 10, t, then, labelled), sampler.Sample(10, t, mode, null, now, labelled).Keep, $"{kind} seed {seed} t = {t}");
                    Assert.AreEqual(then.NextInt64(), now.NextInt64(), $"{kind} seed {seed} t = {t}: the generator must be left where it was");
                }
            }
        }
    }

    [TestMethod]
    public void ACustomSamplerRunsInTheStepAndInTheGradientCheck()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 38 }, ignoredFraction: 0.1); // 5 chunks of 8, the last of 6
        const int k = 5, t = 2;

        // The step draws from the custom sampler (it overrides Sampler), seeded per step as the built-in ones are.
        var options = new ChunkwiseOptions { ChunkSize = 8, SampledChunks = t, Sampler = ChunkSampler.Stratified, CustomSampler = Window, Seed = 3 };
        Assert.AreSame(Window, options.EffectiveSampler);
        var step = new ChunkwiseStep(options);
        Assert.AreEqual("spaco-window", step.Name);
        var backpropagated = new List<int>();
        step.AfterChunkBackward = backpropagated.Add;
        for (int i = 0; i < 4; i++)
        {
            backpropagated.Clear();
            var result = step.Run(model, batch);
            model.zero_grad();
            var expected = Window.Sample(k, t, Compensation.LossAndCache, null, new Random(ChunkwiseStep.StepSeed(3, i))).Keep;
            CollectionAssert.AreEqual(Enumerable.Range(0, k).Where(j => expected[j]).Reverse().ToList(), backpropagated, $"step {i}");
            Assert.AreEqual((t, 2.5, 2.5), (result.BackpropagatedChunks, result.LossFactor, result.CacheFactor));
        }

        // The gradient check enumerates its law: k − t + 1 windows, and E[g] = their average.
        var selections = GradientCheck.Selections(k, t, Window, Compensation.LossAndCache, null);
        Assert.AreEqual(k - t + 1, selections.Count);
        var exact = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var expectation = GradientCheck.Expectation(model, batch, exact, selections);
        var runs = Enumerable.Range(0, k - t + 1)
            .Select(start => GradientCheck.Gradients(model, () => exact.Run(model, batch,
                new ChunkSelection(Enumerable.Range(0, k).Select(j => j >= start && j < start + t).ToArray(), 2.5, 2.5)))).ToList();
        var average = runs[0].ToDictionary(kv => kv.Key, kv => runs.Select(r => r[kv.Key]).Aggregate((x, y) => x + y) / runs.Count);
        Assert.IsTrue(TestModels.MaxRelativeError(expectation, average) <= 1e-12, "E[g] over the law = the average over the windows");

        var strategy = GradientCheckStrategy.Spaco(Window);
        Assert.AreEqual("spaco-window", strategy.Name);
        var check = GradientCheck.Run(model, batch, strategy, 8, t);
        Assert.AreEqual(k - t + 1, check.Runs);
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        Assert.AreEqual(TestModels.MaxRelativeError(expectation, full), check.MaxRelError, 1e-9 * check.MaxRelError);
        Assert.IsTrue(check.MaxRelError > 1e-3, $"the window sampler is biased, yet E[g] is within {check.MaxRelError:E2} of the full gradient");
    }

    [TestMethod]
    public void EveryRegisteredSamplerIsACheckableStrategy()
    {
        CollectionAssert.AreEqual(new[] { "seco", "checkpoint" }.Concat(ChunkSamplers.Names.Select(n => "spaco-" + n)).ToList(),
            GradientCheckStrategy.All.Select(s => s.Name).ToList());
        // The stratified sampler takes its labelled chunks from the batch: targets in chunks 1 and 3 only.
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        var random = new Random(9);
        var ids = Enumerable.Range(0, 38).Select(_ => random.Next(61)).ToArray();
        var labels = ids.Select((id, p) => p is >= 9 and < 16 or >= 25 and < 32 ? id : (int)TokenBatch.IgnoreIndex).ToArray();
        using var batch = TokenBatch.FromSequences([ids], [labels], 0, TorchSharp.torch.CPU);
        var check = GradientCheck.Run(model, batch, GradientCheckStrategy.Spaco(ChunkSamplers.Stratified), 8, 3, compensation: Compensation.None);
        Assert.AreEqual(3, check.Runs, "⌈3/2⌉ = 2 of the 2 labelled chunks (C(2, 2) ways), 1 of the 3 others (3 ways)");
        Assert.ThrowsExactly<OptionException>(() => GradientCheck.Run(model, batch, GradientCheckStrategy.Spaco(ChunkSamplers.Stratified), 8, 3));
    }

    [TestMethod]
    public void TheRegistryMapsEveryKindAndNameAndRejectsUnknownNames()
    {
        Assert.AreEqual(Enum.GetValues<ChunkSampler>().Length, ChunkSamplers.All.Count);
        CollectionAssert.AreEqual(ChunkSamplers.All.Select(s => s.Name).ToList(), ChunkSamplers.Names.ToList());
        Assert.AreEqual(ChunkSamplers.Names.Count, ChunkSamplers.Names.Distinct().Count());
        foreach (var kind in Enum.GetValues<ChunkSampler>())
        {
            var sampler = ChunkSamplers.Get(kind);
            Assert.AreEqual(kind, ChunkSamplers.KindOf(sampler));
            Assert.IsFalse(string.IsNullOrWhiteSpace(sampler.Description));
            Assert.AreEqual(sampler.Name, sampler.Name.ToLowerInvariant());
            foreach (var spelling in new[] { sampler.Name, kind.ToString(), kind.ToString().ToUpperInvariant(), $"  {sampler.Name.ToUpperInvariant()} " })
                Assert.AreSame(sampler, ChunkSamplers.ByName(spelling), spelling);
        }
        Assert.AreSame(ChunkSamplers.FixedBudget, ChunkSamplers.ByName("fixed"));
        Assert.AreSame(ChunkSamplers.FixedBudget, ChunkSamplers.ByName("fixed-budget"));
        Assert.AreSame(ChunkSamplers.Bernoulli, ChunkSamplers.Get(ChunkSampler.Bernoulli));
        Assert.AreSame(ChunkSamplers.Stratified, ChunkSamplers.Get(ChunkSampler.Stratified));
        Assert.IsNull(ChunkSamplers.KindOf(Window));
        Assert.IsFalse(ChunkSamplers.TryByName("window", out _), "a custom sampler is not registered");

        var e = Assert.ThrowsExactly<ArgumentException>(() => ChunkSamplers.ByName("uniform"));
        StringAssert.Contains(e.Message, "'uniform'");
        foreach (var name in ChunkSamplers.Names) StringAssert.Contains(e.Message, name);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ChunkSamplers.Get((ChunkSampler)42));
    }

    [TestMethod]
    public void OptionsValidateWithTheSamplerThatRuns()
    {
        // The custom sampler decides what compensation is accepted, not the enum it overrides.
        new ChunkwiseOptions { SampledChunks = 2, Sampler = ChunkSampler.Stratified, CustomSampler = ChunkSamplers.Bernoulli }.Validate();
        var e = Assert.ThrowsExactly<OptionException>(() =>
            new ChunkwiseOptions { SampledChunks = 2, CustomSampler = ChunkSamplers.Stratified }.Validate());
        Assert.AreEqual("Compensation", e.ParamName);
        new ChunkwiseOptions { Sampler = (ChunkSampler)42, CustomSampler = Window }.Validate();
        e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseOptions { Sampler = (ChunkSampler)42 }.Validate());
        Assert.AreEqual("Sampler", e.ParamName);

        // Argument checks every sampler shares.
        foreach (var sampler in Samplers)
        {
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sampler.Sample(0, 1, Accepted(sampler), null, new Random(1), []));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sampler.Law(3, 0, [true, false, true]));
            Assert.ThrowsExactly<ArgumentException>(() => sampler.AllKeptProbability(3, 1, [0, 0], [true, false, true]));
            Assert.ThrowsExactly<ArgumentException>(() => sampler.AllKeptProbability(3, 1, [3], [true, false, true]));
        }
        Assert.ThrowsExactly<ArgumentException>(() => ChunkSamplers.Stratified.Law(3, 1));
    }
}
