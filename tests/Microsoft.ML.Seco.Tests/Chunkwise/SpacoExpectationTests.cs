using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>
/// SpaCO's gradient estimate in expectation, by exact enumeration of every selection (float64): the Bernoulli sampler
/// is unbiased; the fixed-budget sampler's bias is what the chain-survival argument of docs/ALGORITHM.md predicts.
/// </summary>
[TestClass]
public sealed class SpacoExpectationTests
{
    static CausalLM Model() => TestModels.WithLora(TestModels.Create(TestModels.Llama()));

    [TestMethod]
    public void AnEnumerationOverTheLimitIsRefusedWithItsTermsAsData()
    {
        // A front end says which of its settings to change from the fields; the message says it in the check's terms.
        var e = Assert.ThrowsExactly<TooManySelectionsException>(() => GradientCheck.Selections(13, 2, ChunkSamplers.Bernoulli, Compensation.LossAndCache, null, maxPatterns: 4096));
        Assert.AreEqual((13, "bernoulli", 8192.0, 4096), (e.Chunks, e.Sampler, e.Selections, e.Limit));
        Assert.AreEqual("13 chunks give 8,192 selections of the bernoulli sampler to enumerate, more than the limit of 4,096; use a shorter sequence or a larger chunk size.", e.Message);
        Assert.IsInstanceOfType<ArgumentOutOfRangeException>(e, "code that caught the check's earlier error keeps catching it");
        Assert.AreEqual("chunks", e.ParamName);
        Assert.AreEqual(4096, GradientCheck.Selections(12, 2, ChunkSamplers.Bernoulli, Compensation.LossAndCache, null, maxPatterns: 4096).Count);
    }

    [TestMethod]
    public void BernoulliSamplerIsUnbiasedForEveryBudget()
    {
        using var model = Model();
        using var batch = TestModels.Batch(61, new[] { 38 }, ignoredFraction: 0.1); // 5 chunks of 8, the last of 6
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        for (int t = 1; t <= 4; t++)
        {
            var selections = GradientCheck.Selections(5, t, ChunkSamplers.Bernoulli, Compensation.LossAndCache, null);
            Assert.AreEqual(32, selections.Count);
            Assert.AreEqual(1.0, selections.Sum(s => s.Probability), 1e-12);
            var expectation = GradientCheck.Expectation(model, batch, step, selections);
            double error = TestModels.MaxRelativeError(expectation, full);
            Assert.IsTrue(error <= 1e-10, $"t = {t}: E[g] differs from the full gradient by {error:E3}");
        }
    }

    [TestMethod]
    public void FixedBudgetSamplerHasExactlyThePredictedBias()
    {
        using var model = Model();
        using var batch = TestModels.Batch(61, new[] { 30 }, seed: 5); // 4 chunks of 8, the last of 6
        const int k = 4;
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));

        // With every chunk kept and factor c, Stage 2 yields g(c) = Σ_p c^p G_p, G_p the sum of the chains through p
        // chunks. Four factors determine G_1..G_4; then E_fixed = Σ_p c^p · P(a chain of p survives) · G_p with
        // P = t(t−1)..(t−p+1) / (k(k−1)..(k−p+1)).
        var factors = new double[] { 1, 2, 3, 4 };
        var atFactor = factors.Select(c => GradientCheck.Gradients(model, () => step.Run(model, batch, new ChunkSelection(Enumerable.Repeat(true, k).ToArray(), c, c)))).ToArray();
        var inverse = InvertVandermonde(factors);

        Assert.AreEqual(0, TestModels.MaxRelativeError(atFactor[0], full), 1e-10, "with c = 1 every chain has weight 1");
        foreach (var (t, cap) in new (int, double?)[] { (1, null), (2, null), (3, null), (1, 2.0), (2, 1.5), (4, null) })
        {
            var selections = GradientCheck.Selections(k, t, ChunkSamplers.FixedBudget, Compensation.LossAndCache, cap);
            var measured = GradientCheck.Expectation(model, batch, step, selections);
            double c = Math.Min((double)k / t, cap ?? double.PositiveInfinity);
            var predicted = Predict(atFactor, inverse, p => Math.Pow(c, p) * Survival(k, t, p));
            double bias = TestModels.MaxRelativeError(measured, full);
            double mismatch = TestModels.MaxRelativeError(measured, predicted);
            Assert.IsTrue(mismatch <= 1e-8, $"t = {t}, cap = {cap}: measured expectation differs from the prediction by {mismatch:E3}");
            if (t == k) Assert.IsTrue(bias <= 1e-10, $"t = k must be exact, bias {bias:E3}");
            else Assert.IsTrue(bias >= 1e-3, $"t = {t}, cap = {cap}: a bias of {bias:E3} is implausibly small for chains through the cache");
        }
    }

    [TestMethod]
    public void AChainOfPChunksCarriesLossFactorTimesCacheFactorToThePMinusOne()
    {
        using var model = Model();
        using var batch = TestModels.Batch(61, new[] { 30 }, seed: 5); // 4 chunks of 8, the last of 6
        const int k = 4;
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var (atFactor, inverse) = ChainComponents(model, batch, step, k);
        foreach (var (a, b) in new[] { (2.0, 1.0), (1.0, 3.0), (2.5, 0.5), (1.0, 1.0) })
        {
            var measured = GradientCheck.Gradients(model, () => step.Run(model, batch, new ChunkSelection(Enumerable.Repeat(true, k).ToArray(), a, b)));
            var predicted = Predict(atFactor, inverse, p => a * Math.Pow(b, p - 1));
            double mismatch = TestModels.MaxRelativeError(measured, predicted);
            Assert.IsTrue(mismatch <= 1e-8, $"a = {a}, b = {b}: Stage 2 differs from Σ_p a·b^(p−1)·G_p by {mismatch:E3}");
        }
    }

    [TestMethod]
    public void EveryCompensationModeHasItsClosedFormExpectation()
    {
        using var model = Model();
        using var batch = TestModels.Batch(61, new[] { 30 }, seed: 5, ignoredFraction: 0.1);
        const int k = 4;
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        var (atFactor, inverse) = ChainComponents(model, batch, step, k);

        // E[g] = Σ_p a·b^(p−1)·P_p·G_p, P_p the probability that p given chunks are all kept: q^p for Bernoulli
        // (q = t/k), t(t−1)..(t−p+1) / (k(k−1)..(k−p+1)) for the fixed budget. With f = min(k/t, cap):
        // LossAndCache a = b = f; LossOnly a = f, b = 1; CacheOnly a = 1, b = f; None a = b = 1.
        var cases = new List<(ChunkSampler, int, double?)>();
        foreach (var sampler in new[] { ChunkSampler.Bernoulli, ChunkSampler.FixedBudget })
        {
            foreach (int t in new[] { 1, 2, 3 }) cases.Add((sampler, t, null));
            cases.Add((sampler, 1, 2.0));
        }
        foreach (var (sampler, t, cap) in cases)
        {
            foreach (var mode in Enum.GetValues<Compensation>())
            {
                double f = Math.Min((double)k / t, cap ?? double.PositiveInfinity);
                double a = mode is Compensation.LossAndCache or Compensation.LossOnly ? f : 1;
                double b = mode is Compensation.LossAndCache or Compensation.CacheOnly ? f : 1;
                Func<int, double> survival = sampler == ChunkSampler.Bernoulli ? p => Math.Pow((double)t / k, p) : p => Survival(k, t, p);
                var predicted = Predict(atFactor, inverse, p => a * Math.Pow(b, p - 1) * survival(p));
                var measured = GradientCheck.Expectation(model, batch, step, GradientCheck.Selections(k, t, ChunkSamplers.Get(sampler), mode, cap));
                string name = $"{sampler} t = {t} cap = {cap} {mode}";
                double mismatch = TestModels.MaxRelativeError(measured, predicted);
                Assert.IsTrue(mismatch <= 1e-8, $"{name}: measured expectation differs from the closed form by {mismatch:E3}");
                double bias = TestModels.MaxRelativeError(measured, full);
                if (sampler == ChunkSampler.Bernoulli && mode == Compensation.LossAndCache && cap is null)
                    Assert.IsTrue(bias <= 1e-10, $"{name} must be unbiased, bias {bias:E3}");
                else Assert.IsTrue(bias >= 1e-3, $"{name}: a bias of {bias:E3} is implausibly small");
            }
        }
    }

    [TestMethod]
    public void StratifiedSamplerHasItsClosedFormExpectation()
    {
        using var model = Model();
        const int k = 5, chunkSize = 8;
        // Two response spans between prompt text: targets in chunks 1 and 3 only (target p is label p + 1).
        var random = new Random(9);
        var ids = Enumerable.Range(0, 38).Select(_ => random.Next(61)).ToArray();
        var labels = ids.Select((id, p) => p is >= 9 and < 16 or >= 25 and < 32 ? id : (int)TokenBatch.IgnoreIndex).ToArray();
        using var batch = TokenBatch.FromSequences([ids], [labels], 0, CPU);
        var labelled = batch.ChunksWithLabels(chunkSize);
        CollectionAssert.AreEqual(new[] { false, true, false, true, false }, labelled);
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = chunkSize });
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));

        // G_S, the chain through exactly the chunks of S, by Möbius inversion of the subset runs g_T = Σ_{S⊆T} G_S
        // (factors 1). Summed by |S| they must equal the G_p that the factor runs give: the chain model holds.
        var subsetRuns = Enumerable.Range(0, 1 << k).Select(mask => GradientCheck.Gradients(model, () =>
            step.Run(model, batch, new ChunkSelection(Enumerable.Range(0, k).Select(j => (mask >> j & 1) == 1).ToArray(), 1, 1)))).ToArray();
        var chains = new Dictionary<string, Tensor>[1 << k];
        for (int set = 1; set < 1 << k; set++)
        {
            chains[set] = full.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value));
            for (int subset = set; ; subset = (subset - 1) & set)
            {
                double sign = (BitCount(set) - BitCount(subset)) % 2 == 0 ? 1 : -1;
                foreach (var (name, g) in subsetRuns[subset]) chains[set][name].add_(g, alpha: sign);
                if (subset == 0) break;
            }
        }
        var (atFactor, inverse) = ChainComponents(model, batch, step, k);
        for (int p = 1; p <= k; p++)
        {
            int length = p;
            var bySize = Sum(Enumerable.Range(1, (1 << k) - 1).Where(set => BitCount(set) == length).Select(set => (chains[set], 1.0)));
            // Relative to the whole gradient: some groups have no chain of a given length (a 2-layer model's chains
            // reach at most 3 chunks, and only k/v projections of layer 0 end one of 3), so per-group ratios are 0/0.
            var byFactor = Predict(atFactor, inverse, q => q == length ? 1 : 0);
            double mismatch = bySize.Max(kv => (kv.Value - byFactor[kv.Key]).abs().max().item<double>()) / full.Values.Max(g => g.abs().max().item<double>());
            Assert.IsTrue(mismatch <= 1e-8, $"chains through {p} chunks: subset and factor decompositions differ by {mismatch:E3}");
        }

        // E[g] = Σ_S P(S ⊆ kept)·G_S, with P the product over the two groups of t_g(t_g−1).. / (n_g(n_g−1)..).
        int labelledMask = Enumerable.Range(0, k).Where(j => labelled[j]).Sum(j => 1 << j);
        foreach (int t in new[] { 1, 2, 3, 4 })
        {
            var (fromLabelled, fromOthers) = StratifiedSampler.Budget(2, 3, t);
            var predicted = Sum(Enumerable.Range(1, (1 << k) - 1).Select(set =>
                (chains[set], Survival(2, fromLabelled, BitCount(set & labelledMask)) * Survival(3, fromOthers, BitCount(set & ~labelledMask)))));
            var selections = GradientCheck.Selections(k, t, ChunkSamplers.Stratified, Compensation.None, null, labelledChunks: labelled);
            var measured = GradientCheck.Expectation(model, batch, step, selections);
            double mismatch = TestModels.MaxRelativeError(measured, predicted);
            Assert.IsTrue(mismatch <= 1e-8, $"t = {t}: stratified expectation differs from the closed form by {mismatch:E3}");
            Assert.IsTrue(TestModels.MaxRelativeError(measured, full) >= 1e-3, $"t = {t}: without compensation the estimate must be biased");
        }
    }

    static int BitCount(int x) => System.Numerics.BitOperations.PopCount((uint)x);

    static Dictionary<string, Tensor> Sum(IEnumerable<(Dictionary<string, Tensor> Gradients, double Weight)> terms)
    {
        Dictionary<string, Tensor>? result = null;
        foreach (var (gradients, weight) in terms)
        {
            result ??= gradients.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value));
            foreach (var (name, g) in gradients) result[name].add_(g, alpha: weight);
        }
        return result!;
    }

    /// <summary>Stage 2 with every chunk kept at factors c = 1..k, and the inverse Vandermonde that turns them into G_p.</summary>
    static (Dictionary<string, Tensor>[] AtFactor, double[,] Inverse) ChainComponents(CausalLM model, TokenBatch batch, ChunkwiseStep step, int k)
    {
        var factors = Enumerable.Range(1, k).Select(c => (double)c).ToArray();
        var atFactor = factors.Select(c => GradientCheck.Gradients(model, () => step.Run(model, batch, new ChunkSelection(Enumerable.Repeat(true, k).ToArray(), c, c)))).ToArray();
        return (atFactor, InvertVandermonde(factors));
    }

    /// <summary>The probability that p given chunks of k are all among t drawn without replacement.</summary>
    static double Survival(int k, int t, int p)
    {
        double probability = 1;
        for (int i = 0; i < p; i++) probability *= (double)Math.Max(t - i, 0) / (k - i);
        return probability;
    }

    /// <summary>Σ_m (Σ_p w(p) · V⁻¹[p, m]) · g(c_m), i.e. Σ_p w(p) G_p.</summary>
    static Dictionary<string, Tensor> Predict(Dictionary<string, Tensor>[] atFactor, double[,] inverse, Func<int, double> weight)
    {
        int n = atFactor.Length;
        var result = atFactor[0].ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value));
        for (int m = 0; m < n; m++)
        {
            double coefficient = 0;
            for (int p = 1; p <= n; p++) coefficient += weight(p) * inverse[p - 1, m];
            foreach (var (name, g) in atFactor[m]) result[name].add_(g, alpha: coefficient);
        }
        return result;
    }

    /// <summary>Inverse of V[m, p] = c_m^(p+1) (no constant term: every chain has at least one chunk).</summary>
    static double[,] InvertVandermonde(double[] c)
    {
        int n = c.Length;
        var a = new double[n, 2 * n];
        for (int m = 0; m < n; m++)
        {
            for (int p = 0; p < n; p++) a[m, p] = Math.Pow(c[m], p + 1);
            a[m, n + m] = 1;
        }
        for (int col = 0; col < n; col++)
        {
            int pivot = Enumerable.Range(col, n - col).MaxBy(r => Math.Abs(a[r, col]));
            for (int j = 0; j < 2 * n; j++) (a[col, j], a[pivot, j]) = (a[pivot, j], a[col, j]);
            double d = a[col, col];
            for (int j = 0; j < 2 * n; j++) a[col, j] /= d;
            for (int r = 0; r < n; r++)
            {
                if (r == col) continue;
                double f = a[r, col];
                for (int j = 0; j < 2 * n; j++) a[r, j] -= f * a[col, j];
            }
        }
        // a now holds [I | V⁻¹] with V indexed [m, p]; G = V⁻¹ g, so G_p = Σ_m V⁻¹[p, m] g_m.
        var inverse = new double[n, n];
        for (int p = 0; p < n; p++)
            for (int m = 0; m < n; m++) inverse[p, m] = a[p, n + m];
        return inverse;
    }
}
