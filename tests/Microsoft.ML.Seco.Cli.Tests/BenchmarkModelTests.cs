using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Cli.Benchmarks;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>The benchmark's arithmetic: sizes, the memory model behind the guard and the budget, FLOP counts, shapes.</summary>
[TestClass]
public sealed class BenchmarkModelTests
{
    [TestMethod]
    public void SizesParseWithBinaryAndDecimalUnitsAndBadOnesNameTheFlag()
    {
        Assert.AreEqual(8L << 30, MemoryModel.ParseSize("8GiB", "--memory-budget"));
        Assert.AreEqual(512L << 20, MemoryModel.ParseSize("512MiB", "--memory-budget"));
        Assert.AreEqual(16_000_000_000L, MemoryModel.ParseSize("16GB", "--memory-budget"));
        Assert.AreEqual(3L << 29, MemoryModel.ParseSize("1.5G", "--memory-budget"));
        Assert.AreEqual(1000L, MemoryModel.ParseSize("1000", "--memory-budget"));
        var e = Assert.ThrowsExactly<UsageException>(() => MemoryModel.ParseSize("8 gigs", "--memory-budget"));
        StringAssert.Contains(e.Message, "--memory-budget");
    }

    static double NoEstimate(long length) => throw new AssertFailedException("the estimate is only for fewer than two points");

    [TestMethod]
    public void PredictionFollowsThePowerLawThroughTheNearestPointsWithTheExponentClamped()
    {
        // m = 10·L^1.5 through every point: recovered beyond, between and below them.
        (int, long)[] power = [(100, 10_000), (400, 80_000), (1600, 640_000)];
        Assert.AreEqual(10 * Math.Pow(6400, 1.5), MemoryModel.Predict(power, 6400, NoEstimate), 1e-6 * 5_120_000);
        Assert.AreEqual(10 * Math.Pow(800, 1.5), MemoryModel.Predict(power, 800, NoEstimate), 1e-3);
        Assert.AreEqual(10 * Math.Pow(200, 1.5), MemoryModel.Predict(power, 200, NoEstimate), 1e-3);
        // Growth faster than quadratic is taken as quadratic, slower than linear as linear.
        (int, long)[] cubic = [(10, 1000), (20, 8000)];
        Assert.AreEqual(8000 * 4.0, MemoryModel.Predict(cubic, 40, NoEstimate), 1e-9);
        (int, long)[] flat = [(10, 1000), (20, 1100)];
        Assert.AreEqual(1100 * 2.0, MemoryModel.Predict(flat, 40, NoEstimate), 1e-9);
        // One point scales by the estimate's growth; none uses the estimate with a quarter's margin.
        Assert.AreEqual(9000.0, MemoryModel.Predict([(10, 1000)], 30, l => (double)l * l), 1e-9);
        Assert.AreEqual(1.25 * 123.0, MemoryModel.Predict([], 30, _ => 123), 1e-12);
    }

    [TestMethod]
    public void TheAnalyticEstimateGrowsAsEachStrategysMemoryDoes()
    {
        // Past one prefix block, a chunk-wise step grows by its cache (and the cache's gradient) alone, and the fused
        // whole-sequence baselines grow linearly: an estimate with L × L scores refused plain training at 16K on the
        // default shape as 131 GiB (measured at 8K: 1.7 GB).
        var config = BenchmarkShape.Preset("default").ToConfig();
        double Estimate(string strategy, long length) => StepMemory.Predict(MemoryModel.Query(strategy, config, ScalarType.Float32, length, 128, recomputeLayers: false)).Step;
        long kv = BenchmarkShape.KvBytesPerToken(config, ScalarType.Float32);
        // Linear plus the head's piece of logits, whose size is capped by bytes: twice the length, under twice the bytes.
        foreach (var strategy in new[] { "full", "checkpoint" })
            Assert.IsTrue(Estimate(strategy, 16384) / Estimate(strategy, 8192) is > 1.5 and <= 2.0, strategy);
        // SeCO: the cache and its gradient, and the fused attention's backward, which holds one layer's share of the prefix
        // gradient for a moment (a fraction 1 / layers of the cache gradient).
        Assert.AreEqual((2.0 + 1.0 / config.NumHiddenLayers) * kv * 8192, Estimate("seco", 16384) - Estimate("seco", 8192), 1e-6 * kv * 8192);
        Assert.AreEqual(1.0 * kv * 8192, Estimate("inference", 16384) - Estimate("inference", 8192), 1e-6 * kv * 8192);
        Assert.IsTrue(Estimate("full", 16384) < 4e9, $"{Estimate("full", 16384):E3}");
        // Score blocks are transient, one layer's at a time, and the head holds one piece of logits. Counted once per
        // layer, score blocks made the guard refuse SeCO on Qwen2.5-0.5B's shape at 16K in chunks of 4,096 on an H200
        // (predicted 122.5 GiB); the chunk's whole logits were another 5 GB. Its 24 layers' saved activations of a chunk
        // are 4.3 GB.
        var qwen = BenchmarkShape.Preset("qwen2.5-0.5b").ToConfig();
        double secoQwen = StepMemory.Predict(MemoryModel.Query("seco", qwen, ScalarType.BFloat16, 16384, 4096, recomputeLayers: false) with { Cuda = true }).Step;
        // The fused attention holds no score block; the blockwise path on CUDA may take 256 MiB per block, about two and a
        // half of them at once in the backward.
        Assert.IsTrue(secoQwen is > 4e9 and < 9e9, $"{secoQwen:E3}");
        double secoQwenBlockwise = StepMemory.Predict(MemoryModel.Query("seco", qwen, ScalarType.BFloat16, 16384, 4096, recomputeLayers: false, AttentionKernel.Blockwise) with { Cuda = true }).Step;
        Assert.IsTrue(secoQwenBlockwise is > 4e9 and < 9e9 && secoQwenBlockwise > secoQwen, $"{secoQwenBlockwise:E3}");
    }

    [TestMethod]
    public void LongestLengthWithinABudgetIsMarkedByHowItWasFound()
    {
        // Linear memory, 100 bytes per token.
        (int, long)[] linear = [(128, 12_800), (256, 25_600)];
        var r = MemoryModel.LongestWithin("seco", linear, 100_000, 64, NoEstimate);
        Assert.AreEqual(960L, r.Length); // 1000 tokens fit; searched in steps of 64 from the measured 256: 960
        Assert.AreEqual(BudgetBasis.Extrapolated, r.Basis);
        // A measured point over the budget bounds the answer: between 256 and 1024, interpolated.
        (int, long)[] bracketed = [(128, 12_800), (256, 25_600), (1024, 102_400)];
        r = MemoryModel.LongestWithin("seco", bracketed, 51_200, 64, NoEstimate);
        Assert.AreEqual(512L, r.Length);
        Assert.AreEqual(BudgetBasis.Interpolated, r.Basis);
        // Nothing fits.
        r = MemoryModel.LongestWithin("full", bracketed, 1_000, 64, NoEstimate);
        Assert.IsNull(r.Length);
        Assert.AreEqual(BudgetBasis.None, r.Basis);
        // Least-squares slope of exact linear data with an offset is its slope.
        Assert.AreEqual(100.0, MemoryModel.Slope([(128, 50_000 + 12_800), (256, 50_000 + 25_600), (512, 50_000 + 51_200)])!.Value, 1e-9);
        Assert.IsNull(MemoryModel.Slope([(128, 1)]));
    }

    [TestMethod]
    public void ForwardFlopsAreTwiceTheProjectionWeightsPerTokenPlusCausalAttention()
    {
        foreach (var name in new[] { "tiny", "qwen2.5-0.5b" })
        {
            // An independent count from the model's own parameter shapes: every 2-D weight is one product per token
            // (the embedding only where it doubles as the output layer); norms and biases are 1-D.
            var shape = BenchmarkShape.Preset(name) with { Layers = 1, Vocab = 1000 };
            var config = shape.ToConfig();
            using var model = new CausalLM(config, ScalarType.Float32, CPU);
            LoraAdapters.Attach(model, EfficiencyBenchmark.Lora);
            double perToken = model.named_parameters().Where(p => p.parameter.dim() == 2 && (config.TieWordEmbeddings || !p.name.Contains("embed_tokens")))
                .Sum(p => 2.0 * p.parameter.numel());
            const int length = 300;
            double attention = 4.0 * config.NumAttentionHeads * config.HeadDim * length * (length + 1) / 2;
            double forward = StepFlops.Of("inference", config, EfficiencyBenchmark.Lora, length, 100, 1);
            Assert.AreEqual(length * perToken + attention, forward, 1e-9 * forward, name);
            // SeCO's Stage 1 runs every chunk but the last (3 chunks of 100 here) only as far as the cache needs: with
            // one layer, its q/k/v projections (q too: dropout replay draws its mask), no attention, MLP or lm_head;
            // Stage 2 is plain training. SpaCO with t = 1 of k = 3 chunks: Stage 1 runs all its chunks in one block
            // (at least 512 tokens), in full since some chunk in it is not sampled, with lm_head only for those, and
            // leaves the last chunk out when it is the one sampled; Stage 2 backpropagates t/k of the step.
            double head = 2.0 * config.HiddenSize * config.VocabSize;
            double qkv = model.named_parameters().Where(p => p.parameter.dim() == 2 && (p.name.Contains("q_proj") || p.name.Contains("k_proj") || p.name.Contains("v_proj")))
                .Sum(p => 2.0 * p.parameter.numel());
            double Layers(int n) => n * (perToken - head) + 4.0 * config.NumAttentionHeads * config.HeadDim * n * (n + 1) / 2;
            double full = StepFlops.Of("full", config, EfficiencyBenchmark.Lora, length, 100, 1);
            Assert.AreEqual(200 * qkv + full, StepFlops.Of("seco", config, EfficiencyBenchmark.Lora, length, 100, 1), 1e-9 * full);
            double stage1 = forward - (length * head + Layers(300) - Layers(200)) / 3;
            Assert.AreEqual(stage1 + full / 3, StepFlops.Of("spaco", config, EfficiencyBenchmark.Lora, length, 100, 1), 1e-9 * full);

            // Chunks of 600 tokens are Stage-1 blocks of their own: a sampled chunk before the last stops at the cache, as
            // in SeCO. t = 1 of 3 (both samplers: 1/3 each), and a length of 1,500 (the last chunk has 300 tokens).
            const int longLength = 1500;
            double longForward = StepFlops.Of("inference", config, EfficiencyBenchmark.Lora, longLength, 600, 1);
            double longFull = StepFlops.Of("full", config, EfficiencyBenchmark.Lora, longLength, 600, 1);
            double Tail(int from, int to) => Layers(to) - Layers(from) - (to - from) * qkv;
            double longStage1 = longForward - (longLength * head + Layers(1500) - Layers(1200) + Tail(0, 600) + Tail(600, 1200)) / 3;
            foreach (var sampler in new IChunkSampler[] { ChunkSamplers.FixedBudget, ChunkSamplers.Bernoulli })
                Assert.AreEqual(longStage1 + longFull / 3, StepFlops.Of("spaco", config, EfficiencyBenchmark.Lora, longLength, 600, 1, sampler), 1e-9 * longFull, sampler.Name);
        }
    }

    [TestMethod]
    public void RealModelPresetsHaveTheirModelsShapesAndFlagsOverrideThem()
    {
        var qwen = BenchmarkShape.Preset("qwen2.5-0.5b").ToConfig();
        // Qwen/Qwen2.5-0.5B config.json.
        Assert.AreEqual((24, 896, 4864, 14, 2, 64, 151936, true, true), (qwen.NumHiddenLayers, qwen.HiddenSize, qwen.IntermediateSize,
            qwen.NumAttentionHeads, qwen.NumKeyValueHeads, qwen.HeadDim, qwen.VocabSize, qwen.TieWordEmbeddings, qwen.QkvBias));
        Assert.AreEqual(2L * 24 * 2 * 64 * 2, BenchmarkShape.KvBytesPerToken(qwen, ScalarType.BFloat16));
        // The weight count against the published parameter counts of the presets' models (too large to build here), and
        // against a model built from a small preset, biases and tied embeddings included.
        Assert.AreEqual(8_030_261_248L, StepMemory.ParameterCount(BenchmarkShape.Preset("llama-3-8b").ToConfig()));
        Assert.AreEqual(3_212_749_824L, StepMemory.ParameterCount(BenchmarkShape.Preset("llama-3.2-3b").ToConfig()));
        Assert.AreEqual(494_032_768L, StepMemory.ParameterCount(qwen));
        foreach (var small in new[] { BenchmarkShape.Preset("tiny"), BenchmarkShape.Preset("qwen2.5-0.5b") with { Layers = 1, Vocab = 1000 } })
        {
            using var built = new CausalLM(small.ToConfig(), ScalarType.Float32, CPU);
            Assert.AreEqual(built.parameters().Sum(p => p.numel()), StepMemory.ParameterCount(small.ToConfig()), small.Name);
        }
        var custom = BenchmarkShape.Preset("default").With(layers: 3, hidden: 512, intermediate: null, heads: 4, kvHeads: null, headDim: null, vocab: null);
        Assert.AreEqual((3, 512, 4, 2, 128), (custom.Layers, custom.Hidden, custom.Heads, custom.KvHeads, custom.HeadDim));
    }

    [TestMethod]
    public void TheMemoryModelPredictsTheMeasuredPeaks()
    {
        // docs/bench/memory-model-check.csv: single steps measured in processes of their own on this project's CPU by
        // docs/bench/memory-model-check.sh. Regenerate it with that script when the engine's memory changes; this test then
        // says whether the model still describes it.
        var lines = File.ReadAllLines(Microsoft.ML.Seco.Tests.Packaging.RepositoryFiles.PathOf("docs/bench/memory-model-check.csv"));
        Assert.AreEqual("shape,dtype,chunk_size,recompute_layers,strategy,length,peak_bytes", lines[0]);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        Assert.IsTrue(rows.Select(r => r[0]).Distinct().Count() >= 3, "three shapes");
        Assert.IsTrue(rows.Any(r => r[2] == "128") && rows.Any(r => r[2] == "1024") && rows.Any(r => r[3] == "true"), "chunks 128 to 1,024, with recompute");
        var errors = new List<string>();
        double worst = 0;
        foreach (var r in rows)
        {
            var config = BenchmarkShape.Preset(r[0]).ToConfig();
            var dtype = TensorSettings.ResolveDType(r[1], CPU);
            var query = MemoryModel.Query(r[4], config, dtype, long.Parse(r[5], CultureInfo.InvariantCulture), int.Parse(r[2], CultureInfo.InvariantCulture), bool.Parse(r[3]));
            double predicted = StepMemory.Predict(query).Step, measured = long.Parse(r[6], CultureInfo.InvariantCulture);
            double error = Math.Abs(predicted - measured);
            double tolerance = r[4] is "full" or "checkpoint" ? BaselineTolerance : Tolerance;
            if (r[4] is not ("full" or "checkpoint")) worst = Math.Max(worst, error / measured);
            if (error > tolerance * measured) errors.Add(string.Create(CultureInfo.InvariantCulture, $"{string.Join(' ', r[..6])}: predicted {predicted / 1048576:F1} MiB, measured {measured / 1048576:F1} MiB"));
        }
        Assert.IsEmpty(errors, $"worst {worst:P1}: " + string.Join("; ", errors));
    }

    // Every strategy within 25 % (docs/BENCHMARKS.md, Memory model). The chunk-wise strategies and inference were within
    // 15 % before the fused attention and Stage 1's larger blocks (2026-12-02); the forward's transients have been refitted
    // since (worst 22 %), and what else a Stage-1 block holds is not yet counted.
    const double Tolerance = 0.25, BaselineTolerance = 0.25;
}
