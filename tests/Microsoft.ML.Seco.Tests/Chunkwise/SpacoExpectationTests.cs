using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
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
    public void BernoulliSamplerIsUnbiasedForEveryBudget()
    {
        using var model = Model();
        using var batch = TestModels.Batch(61, new[] { 38 }, ignoredFraction: 0.1); // 5 chunks of 8, the last of 6
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        var full = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        for (int t = 1; t <= 4; t++)
        {
            var selections = GradientCheck.Selections(5, t, ChunkSampler.Bernoulli, null);
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
        var atFactor = factors.Select(c => GradientCheck.Gradients(model, () => step.Run(model, batch, new ChunkSelection(Enumerable.Repeat(true, k).ToArray(), c)))).ToArray();
        var inverse = InvertVandermonde(factors);

        Assert.AreEqual(0, TestModels.MaxRelativeError(atFactor[0], full), 1e-10, "with c = 1 every chain has weight 1");
        foreach (var (t, cap) in new (int, double?)[] { (1, null), (2, null), (3, null), (1, 2.0), (2, 1.5), (4, null) })
        {
            var selections = GradientCheck.Selections(k, t, ChunkSampler.FixedBudget, cap);
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
