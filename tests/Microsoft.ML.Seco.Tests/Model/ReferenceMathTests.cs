using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Model;

/// <summary>
/// The building blocks against the formulas of Hugging Face's modeling_llama.py / modeling_qwen2.py, written out here
/// with plain double arithmetic (loops, Math.Exp), independent of the TorchSharp code under test.
/// </summary>
[TestClass]
public sealed class ReferenceMathTests
{
    static double[] Values(Tensor t) => t.to(ScalarType.Float64).data<double>().ToArray();

    static void AssertClose(double[] expected, double[] actual, double tolerance, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], tolerance, $"{what}[{i}]");
    }

    [TestMethod]
    public void RmsNormScalesByTheRootMeanSquare()
    {
        // LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps)
        double[] x = { 1, -2, 3, 4 }, w = { 1, 1, 2, 0.5 };
        const double eps = 1e-6;
        double rms = Math.Sqrt((1 + 4 + 9 + 16) / 4.0 + eps);
        var expected = x.Select((v, i) => w[i] * v / rms).ToArray();
        using var norm = new RmsNorm(4, eps, ScalarType.Float64, CPU);
        using (no_grad()) norm.weight.copy_(tensor(w));
        AssertClose(expected, Values(norm.forward(tensor(x).view(1, 4))), 1e-14, "rmsnorm");
    }

    [TestMethod]
    public void RotaryEmbeddingRotatesPairsOfHalves()
    {
        // head_dim 4, theta 10000: inv_freq = [1, 1/100]; rotate_half(x) = [-x2, x1]
        var config = TestModels.Llama() with { HeadDim = 4, RopeTheta = 10000 };
        var inv = RotaryEmbedding.InverseFrequencies(config);
        AssertClose(new[] { 1.0, 0.01 }, inv, 1e-16, "inv_freq");
        double a = 0.3, b = -1.1, c = 0.7, d = 2.0;
        const int position = 5;
        var (cos, sin) = RotaryEmbedding.CosSin(inv, position, 1, ScalarType.Float64, CPU);
        var rotated = RotaryEmbedding.Apply(tensor(new[] { a, b, c, d }).view(1, 4), cos, sin);
        double p = position, q = position / 100.0;
        var expected = new[]
        {
            a * Math.Cos(p) - c * Math.Sin(p),
            b * Math.Cos(q) - d * Math.Sin(q),
            c * Math.Cos(p) + a * Math.Sin(p),
            d * Math.Cos(q) + b * Math.Sin(q),
        };
        AssertClose(expected, Values(rotated), 1e-14, "rope");
    }

    [TestMethod]
    public void Llama3ScalingFollowsTheThreeBands()
    {
        // _compute_llama3_parameters with Llama 3.1's values.
        var config = TestModels.Llama() with
        {
            HeadDim = 128, RopeTheta = 500000,
            RopeScaling = new RopeScaling { Type = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 },
        };
        var scaled = RotaryEmbedding.InverseFrequencies(config);
        int bands = 0;
        for (int i = 0; i < 64; i++)
        {
            double f = 1 / Math.Pow(500000, 2.0 * i / 128), wavelen = 2 * Math.PI / f;
            double expected;
            if (wavelen < 8192 / 4.0) { expected = f; bands |= 1; }
            else if (wavelen > 8192 / 1.0) { expected = f / 8; bands |= 2; }
            else
            {
                double smooth = (8192 / wavelen - 1) / (4 - 1);
                expected = (1 - smooth) * f / 8 + smooth * f;
                bands |= 4;
            }
            Assert.AreEqual(expected, scaled[i], 1e-15 * f, $"inv_freq[{i}]");
        }
        Assert.AreEqual(7, bands, "the chosen config must exercise all three bands");
        var linear = RotaryEmbedding.InverseFrequencies(config with { RopeScaling = new RopeScaling { Type = "linear", Factor = 4 } });
        Assert.AreEqual(1 / Math.Pow(500000, 2.0 * 3 / 128) / 4, linear[3], 1e-18);
    }

    [TestMethod]
    public void MlpIsSwiGlu()
    {
        var config = TestModels.Llama() with { HiddenSize = 3, IntermediateSize = 2 };
        using var mlp = new Mlp(config, ScalarType.Float64, CPU);
        double[,] gate = { { 0.5, -1, 0.25 }, { 1, 0, -0.5 } }, up = { { 2, 1, 0 }, { -1, 0.5, 1 } }, down = { { 1, -1 }, { 0.5, 2 }, { 0, 1 } };
        using (no_grad())
        {
            mlp.gate_proj.get_parameter("weight")!.copy_(tensor(gate));
            mlp.up_proj.get_parameter("weight")!.copy_(tensor(up));
            mlp.down_proj.get_parameter("weight")!.copy_(tensor(down));
        }
        double[] x = { 0.3, -0.7, 1.2 };
        static double Silu(double v) => v / (1 + Math.Exp(-v));
        var hidden = Enumerable.Range(0, 2).Select(j =>
            Silu(Enumerable.Range(0, 3).Sum(i => gate[j, i] * x[i])) * Enumerable.Range(0, 3).Sum(i => up[j, i] * x[i])).ToArray();
        var expected = Enumerable.Range(0, 3).Select(o => down[o, 0] * hidden[0] + down[o, 1] * hidden[1]).ToArray();
        AssertClose(expected, Values(mlp.forward(tensor(x).view(1, 3))), 1e-14, "mlp");
    }

    [TestMethod]
    public void AttentionIsCausalGroupedSoftmaxOverRotatedKeys()
    {
        // 4 query heads share 2 key/value heads (query head h uses kv head h / 2); scores q·k / sqrt(d); causal softmax.
        var config = TestModels.Llama() with { HiddenSize = 8, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 2, QkvBias = true };
        using var attention = new Attention(config, ScalarType.Float64, CPU);
        var random = new Random(5);
        double[,] Matrix(int rows, int cols) { var m = new double[rows, cols]; for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) m[r, c] = random.NextDouble() - 0.5; return m; }
        double[] Vector(int n) => Enumerable.Range(0, n).Select(_ => random.NextDouble() - 0.5).ToArray();
        var (wq, wk, wv, wo) = (Matrix(8, 8), Matrix(4, 8), Matrix(4, 8), Matrix(8, 8));
        var (bq, bk, bv) = (Vector(8), Vector(4), Vector(4));
        using (no_grad())
        {
            attention.q_proj.get_parameter("weight")!.copy_(tensor(wq)); attention.q_proj.get_parameter("bias")!.copy_(tensor(bq));
            attention.k_proj.get_parameter("weight")!.copy_(tensor(wk)); attention.k_proj.get_parameter("bias")!.copy_(tensor(bk));
            attention.v_proj.get_parameter("weight")!.copy_(tensor(wv)); attention.v_proj.get_parameter("bias")!.copy_(tensor(bv));
            attention.o_proj.get_parameter("weight")!.copy_(tensor(wo));
        }
        const int T = 4;
        var x = Enumerable.Range(0, T).Select(_ => Vector(8)).ToArray();
        double[] Affine(double[,] w, double[] b, double[] v) => Enumerable.Range(0, w.GetLength(0)).Select(r => b[r] + Enumerable.Range(0, v.Length).Sum(c => w[r, c] * v[c])).ToArray();
        double[] Rope(double[] v, int offset, int position) // one head of width 2: inv_freq = [1]
            => new[] { v[offset] * Math.Cos(position) - v[offset + 1] * Math.Sin(position), v[offset + 1] * Math.Cos(position) + v[offset] * Math.Sin(position) };

        var q = x.Select(v => Affine(wq, bq, v)).ToArray();
        var k = x.Select(v => Affine(wk, bk, v)).ToArray();
        var v = x.Select(u => Affine(wv, bv, u)).ToArray();
        var expected = new double[T * 8];
        for (int t = 0; t < T; t++)
        {
            var concat = new double[8];
            for (int h = 0; h < 4; h++)
            {
                int kv = h / 2;
                var qh = Rope(q[t], 2 * h, t);
                var scores = Enumerable.Range(0, t + 1).Select(s => { var ks = Rope(k[s], 2 * kv, s); return (qh[0] * ks[0] + qh[1] * ks[1]) / Math.Sqrt(2); }).ToArray();
                double max = scores.Max();
                var weights = scores.Select(s => Math.Exp(s - max)).ToArray();
                double total = weights.Sum();
                for (int s = 0; s <= t; s++)
                    for (int i = 0; i < 2; i++) concat[2 * h + i] += weights[s] / total * v[s][2 * kv + i];
            }
            var o = Affine(wo, new double[8], concat);
            Array.Copy(o, 0, expected, t * 8, 8);
        }

        var input = tensor(x.SelectMany(r => r).ToArray(), new long[] { 1, T, 8 });
        using var positions = new CausalLM(config with { NumHiddenLayers = 1, VocabSize = 3 }, ScalarType.Float64, CPU).Positions(0, T);
        var (output, _, _) = attention.Forward(input, positions, null);
        AssertClose(expected, Values(output), 1e-13, "attention");
    }
}
