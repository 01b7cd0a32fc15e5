using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Model;

/// <summary>
/// yarn and dynamic rope_scaling against transformers' modeling_rope_utils.py (<c>_compute_yarn_parameters</c>,
/// <c>_compute_dynamic_ntk_parameters</c>), transcribed below line by line from the Python, independent of
/// <see cref="RotaryEmbedding"/>; chunked = full forward with yarn; config.json round trips; the options of a run.
/// </summary>
[TestClass]
public sealed class RopeScalingTests
{
    // transformers' _compute_yarn_parameters (v5: original_max_position_embeddings defaults to max_position_embeddings,
    // an explicit factor is used as given, a missing one is max_position_embeddings / original), in double precision,
    // with Python's dict.get and `or` spelled out. `rs` is config.rope_scaling as parsed JSON.
    static (double[] InvFreq, double AttentionFactor) PythonYarn(int dim, double @base, double maxPositionEmbeddings, JsonObject rs)
    {
        double? Get(string key) => rs[key] is JsonValue v ? v.GetValue<double>() : null;
        double? Or(double? value) => value is double d && d != 0 ? d : null; // Python's truthiness of a number
        double original = Or(Get("original_max_position_embeddings")) ?? maxPositionEmbeddings;
        double factor = Get("factor") ?? maxPositionEmbeddings / original;
        double? attentionFactor = Get("attention_factor"), mscale = Get("mscale"), mscaleAllDim = Get("mscale_all_dim");

        static double GetMscale(double scale, double mscale = 1) => scale <= 1 ? 1.0 : 0.1 * mscale * Math.Log(scale) + 1.0;
        attentionFactor ??= Or(mscale) is double m && Or(mscaleAllDim) is double mad ? GetMscale(factor, m) / GetMscale(factor, mad) : GetMscale(factor);

        double betaFast = Or(Get("beta_fast")) ?? 32, betaSlow = Or(Get("beta_slow")) ?? 1;
        double FindCorrectionDim(double numRotations) => dim * Math.Log(original / (numRotations * 2 * Math.PI)) / (2 * Math.Log(@base));
        bool truncate = rs["truncate"] is JsonValue t ? t.GetValue<bool>() : true;
        double low = FindCorrectionDim(betaFast), high = FindCorrectionDim(betaSlow);
        if (truncate) { low = Math.Floor(low); high = Math.Ceiling(high); }
        low = Math.Max(low, 0);
        high = Math.Min(high, dim - 1);
        if (low == high) high += 0.001;

        var inv = new double[dim / 2];
        for (int i = 0; i < dim / 2; i++)
        {
            double posFreq = Math.Pow(@base, (2.0 * i) / dim);
            double extrapolation = 1.0 / posFreq, interpolation = 1.0 / (factor * posFreq);
            double linearFunc = (i - low) / (high - low);
            double ramp = Math.Min(Math.Max(linearFunc, 0), 1);
            double extrapolationFactor = 1 - ramp;
            inv[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
        }
        return (inv, attentionFactor.Value);
    }

    static ModelConfig ConfigWith(int headDim, double theta, int maxPositions, string ropeScaling)
    {
        var json = TestModels.Llama().ToJson();
        json["head_dim"] = headDim;
        json["num_attention_heads"] = 4;
        json["hidden_size"] = headDim * 4;
        json["rope_theta"] = theta;
        json["max_position_embeddings"] = maxPositions;
        json["rope_scaling"] = JsonNode.Parse(ropeScaling);
        return ModelConfig.FromJson(json);
    }

    static void AssertYarnMatchesTransformers(int headDim, double theta, int maxPositions, string ropeScaling)
    {
        var config = ConfigWith(headDim, theta, maxPositions, ropeScaling);
        var (expected, attention) = PythonYarn(headDim, theta, maxPositions, JsonNode.Parse(ropeScaling)!.AsObject());
        var actual = RotaryEmbedding.InverseFrequencies(config);
        Assert.HasCount(expected.Length, actual);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], 1e-14 * expected[i], $"{ropeScaling}: inv_freq[{i}]");
        Assert.AreEqual(attention, RotaryEmbedding.AttentionScaling(config), 1e-15, $"{ropeScaling}: attention factor");
    }

    [TestMethod]
    public void YarnMatchesTransformersForEveryField()
    {
        // Qwen2.5's documented long-context setting, in the older "type" spelling.
        AssertYarnMatchesTransformers(128, 1e6, 32768, """{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}""");
        // DeepSeek-V3's: mscale = mscale_all_dim gives an attention factor of 1; unequal ones their ratio.
        AssertYarnMatchesTransformers(64, 10000, 163840, """{"rope_type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}""");
        AssertYarnMatchesTransformers(64, 10000, 163840, """{"rope_type": "yarn", "factor": 40, "mscale": 0.707, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}""");
        // gpt-oss's: no rounding of the correction range.
        AssertYarnMatchesTransformers(64, 150000, 131072, """{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096}""");
        // Other betas, an explicit attention factor, beta 0 falling back to the default (Python's `or`).
        AssertYarnMatchesTransformers(128, 500000, 8192, """{"rope_type": "yarn", "factor": 8, "beta_fast": 16, "beta_slow": 2, "original_max_position_embeddings": 8192}""");
        AssertYarnMatchesTransformers(128, 500000, 8192, """{"rope_type": "yarn", "factor": 8, "attention_factor": 0.8, "beta_fast": 0, "original_max_position_embeddings": 2048}""");
        // No original length: max_position_embeddings; no factor either: their ratio (1: attention factor 1).
        AssertYarnMatchesTransformers(64, 10000, 4096, """{"rope_type": "yarn", "factor": 2}""");
        AssertYarnMatchesTransformers(64, 10000, 16384, """{"rope_type": "yarn", "original_max_position_embeddings": 4096}""");
        // A correction range that collapses to one dimension (low == high: transformers adds 0.001).
        AssertYarnMatchesTransformers(8, 500000, 2048, """{"rope_type": "yarn", "factor": 4, "beta_fast": 2, "beta_slow": 1.9, "original_max_position_embeddings": 16}""");
    }

    [TestMethod]
    public void YarnMatchesNumbersComputedWithPython()
    {
        // python3, the same transcription with float (double) arithmetic and the math module:
        //   inv, af = yarn(128, 1000000.0, 32768, {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768})
        //   inv, af = yarn(64, 150000.0, 131072, {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
        //                                         "truncate": False, "original_max_position_embeddings": 4096})
        // where yarn(dim, base, max_pos, rs) is _compute_yarn_parameters with torch replaced by a loop over i < dim // 2:
        //   pos = base ** ((2 * i) / dim); ramp = min(max((i - low) / (high - low), 0), 1); ef = 1 - ramp
        //   inv_freq[i] = (1.0 / (factor * pos)) * (1 - ef) + (1.0 / pos) * ef
        var qwen = ConfigWith(128, 1e6, 32768, """{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}""");
        var inv = RotaryEmbedding.InverseFrequencies(qwen);
        Assert.AreEqual(1.138629436111989, RotaryEmbedding.AttentionScaling(qwen), 1e-15);
        int[] at = { 0, 10, 20, 30, 40, 63 };
        double[] python = { 1.0, 0.1154781984689458, 0.01333521432163324, 0.0010643609812470017, 4.445698525097307e-05, 3.102344401879299e-07 };
        for (int k = 0; k < at.Length; k++) Assert.AreEqual(python[k], inv[at[k]], 1e-14 * python[k], $"qwen inv_freq[{at[k]}]");

        var gptOss = ConfigWith(64, 150000, 131072, """{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096}""");
        inv = RotaryEmbedding.InverseFrequencies(gptOss);
        Assert.AreEqual(1.3465735902799727, RotaryEmbedding.AttentionScaling(gptOss), 1e-15);
        at = new[] { 0, 8, 12, 16, 20, 31 };
        python = new[] { 1.0, 0.050813274815461475, 0.006794959489732219, 0.00045648391922324086, 1.818833668168956e-05, 3.0235114281192144e-07 };
        for (int k = 0; k < at.Length; k++) Assert.AreEqual(python[k], inv[at[k]], 1e-14 * python[k], $"gpt-oss inv_freq[{at[k]}]");
    }

    [TestMethod]
    public void YarnsAttentionFactorScalesCosAndSin()
    {
        // transformers: cos = emb.cos() * attention_scaling, sin = emb.sin() * attention_scaling.
        var config = TestModels.Llama() with { RopeScaling = new RopeScaling { Type = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 16 } };
        double scaling = 0.1 * Math.Log(4) + 1;
        var inv = RotaryEmbedding.InverseFrequencies(config);
        using var model = TestModels.Create(config);
        using var positions = model.Positions(5, 3);
        var cos = positions.Cos.data<double>().ToArray();
        var signedSin = positions.SignedSin.data<double>().ToArray();
        int d = config.HeadDim, half = d / 2;
        for (int p = 0; p < 3; p++)
            for (int j = 0; j < d; j++)
            {
                double angle = (5 + p) * inv[j % half];
                Assert.AreEqual(Math.Cos(angle) * scaling, cos[p * d + j], 1e-14, $"cos[{p}, {j}]");
                Assert.AreEqual((j < half ? -1 : 1) * Math.Sin(angle) * scaling, signedSin[p * d + j], 1e-14, $"sin[{p}, {j}]");
            }
    }

    [TestMethod]
    public void DynamicScalingIsUnscaledUpToMaxPositionEmbeddingsAndRefusedBeyond()
    {
        // _compute_dynamic_ntk_parameters at seq_len ≤ max_position_embeddings: base · (factor · max / max − (factor − 1))^(d/(d−2)) = base.
        var plain = TestModels.Llama() with { MaxPositionEmbeddings = 24 };
        var dynamic = plain with { RopeScaling = new RopeScaling { Type = "dynamic", Factor = 3 } };
        var expected = RotaryEmbedding.InverseFrequencies(plain);
        int d = plain.HeadDim;
        double @base = plain.RopeTheta * Math.Pow(3.0 * 24 / 24 - (3 - 1), d / (d - 2.0));
        for (int i = 0; i < d / 2; i++) Assert.AreEqual(1.0 / Math.Pow(@base, 2.0 * i / d), expected[i], 1e-15 * expected[i]);
        CollectionAssert.AreEqual(expected, RotaryEmbedding.InverseFrequencies(dynamic));
        Assert.AreEqual(1.0, RotaryEmbedding.AttentionScaling(dynamic));

        using var model = TestModels.Create(dynamic);
        using (model.Positions(16, 8)) { } // positions 16..23: within max_position_embeddings
        var e = Assert.ThrowsExactly<NotSupportedException>(() => model.Positions(20, 5));
        StringAssert.Contains(e.Message, "dynamic");
        StringAssert.Contains(e.Message, "max_position_embeddings (24)");
        StringAssert.Contains(e.Message, "position 24");
    }

    [TestMethod]
    public void ScaledConfigsSurviveConfigJson()
    {
        string dir = Path.Combine(Path.GetTempPath(), "seco-rope-" + Guid.NewGuid().ToString("N"));
        try
        {
            var yarn = new RopeScaling
            {
                Type = "yarn", Factor = 40, OriginalMaxPositionEmbeddings = 4096, BetaFast = 16, BetaSlow = 2,
                AttentionFactor = 0.9, Mscale = 0.707, MscaleAllDim = 1, Truncate = false,
            };
            foreach (var scaling in new RopeScaling?[] { yarn, yarn with { AttentionFactor = null, Mscale = null, MscaleAllDim = null, Truncate = true },
                         new RopeScaling { Type = "dynamic", Factor = 2 }, new RopeScaling { Type = "linear", Factor = 4 }, null })
            {
                var config = TestModels.Llama() with { RopeScaling = scaling, RopeTheta = 1e6, MaxPositionEmbeddings = 163840 };
                Assert.AreEqual(config, ModelConfig.FromJson(config.ToJson()) with { EosTokenIds = config.EosTokenIds }, $"{scaling}");
                using var model = TestModels.Create(config);
                ModelDirectory.Save(model, dir);
                Assert.AreEqual(config, ModelConfig.Load(dir) with { EosTokenIds = config.EosTokenIds }, $"{scaling} through config.json");
                Directory.Delete(dir, true);
            }
            var written = TestModels.Llama() with { RopeScaling = yarn };
            var json = written.ToJson()["rope_scaling"]!.AsObject();
            foreach (var key in new[] { "rope_type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate" })
                Assert.IsTrue(json.ContainsKey(key), $"config.json's rope_scaling has {key}: {json}");
            Assert.IsTrue((TestModels.Llama().ToJson()).ContainsKey("rope_scaling"), "none is written as null");
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void BadScalingFieldsAreNamed()
    {
        void Refused<T>(string scaling, string named) where T : Exception
        {
            var json = TestModels.Llama().ToJson();
            json["rope_scaling"] = JsonNode.Parse(scaling);
            var e = Assert.ThrowsExactly<T>(() => ModelConfig.FromJson(json), scaling);
            StringAssert.Contains(e.Message, named, scaling);
        }
        Refused<InvalidDataException>("""{"rope_type": "yarn", "factor": -2}""", "rope_scaling.factor");
        Refused<InvalidDataException>("""{"rope_type": "yarn", "factor": 2, "beta_slow": -1}""", "rope_scaling.beta_slow");
        Refused<InvalidDataException>("""{"rope_type": "yarn", "factor": 2, "truncate": 1}""", "truncate");
        Refused<InvalidDataException>("""{"rope_type": "dynamic"}""", "rope_scaling.factor");
        Refused<InvalidDataException>("""{"factor": 2}""", "rope_scaling.rope_type");
        Refused<NotSupportedException>("""{"type": "longrope", "factor": 2}""", "longrope");
    }

    static ChunkwiseLoraTrainer.Options Options(Action<ChunkwiseLoraTrainer.Options> set)
    {
        var options = new ChunkwiseLoraTrainer.Options { ModelPath = "unused" };
        set(options);
        return options;
    }

    [TestMethod]
    public void TheRunsOptionsApplyToTheBaseConfigAndSaySo()
    {
        var plain = TestModels.Llama() with { MaxPositionEmbeddings = 32768, RopeTheta = 1e6 };
        var (config, note) = Options(_ => { }).ApplyRope(plain);
        Assert.AreEqual(plain, config);
        Assert.IsNull(note, "nothing to say about a model without scaling");

        (config, note) = Options(o => { o.RopeScaling = RopeScalingType.Yarn; o.RopeFactor = 4; }).ApplyRope(plain);
        Assert.AreEqual(new RopeScaling { Type = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 32768 }, config.RopeScaling, "the original length defaults to max_position_embeddings");
        StringAssert.Contains(note, "yarn");

        var llama31 = plain with { RopeScaling = new RopeScaling { Type = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 } };
        (config, note) = Options(_ => { }).ApplyRope(llama31);
        Assert.AreEqual(llama31, config, "a base model's scaling is kept");
        StringAssert.Contains(note, "kept");
        (config, note) = Options(o => { o.RopeScaling = RopeScalingType.Llama3; o.RopeFactor = 16; }).ApplyRope(llama31);
        Assert.AreEqual(llama31.RopeScaling! with { Factor = 16 }, config.RopeScaling, "the base's band factors and original length stay");
        StringAssert.Contains(note, "replaces");
        (config, note) = Options(o => { o.RopeScaling = RopeScalingType.None; o.RopeTheta = 5e6; }).ApplyRope(llama31);
        Assert.IsNull(config.RopeScaling);
        Assert.AreEqual(5e6, config.RopeTheta);
        StringAssert.Contains(note, "removed");
        StringAssert.Contains(note, "RopeTheta");
        (config, _) = Options(o => { o.RopeScaling = RopeScalingType.Yarn; o.RopeFactor = 4; o.RopeOriginalMaxPositionEmbeddings = 4096; }).ApplyRope(llama31);
        Assert.AreEqual(4096, config.RopeScaling!.OriginalMaxPositionEmbeddings);
        Assert.AreEqual(32, config.RopeScaling.BetaFast, "yarn's defaults, not the llama3 base's fields");
    }

    [TestMethod]
    public void BadRopeOptionsNameTheOption()
    {
        void Refused(Action<ChunkwiseLoraTrainer.Options> set, string option, string? says = null)
        {
            var e = Assert.Throws<ArgumentException>(() => Options(set).Validate());
            Assert.AreEqual(option, e.ParamName, e.Message);
            if (says is not null) StringAssert.Contains(e.Message, says);
        }
        Refused(o => o.RopeFactor = 4, "RopeFactor", "RopeScaling");
        Refused(o => o.RopeScaling = RopeScalingType.Yarn, "RopeFactor", "needs RopeFactor");
        Refused(o => { o.RopeScaling = RopeScalingType.Yarn; o.RopeFactor = 0.5; }, "RopeFactor", "at least 1");
        Refused(o => { o.RopeScaling = RopeScalingType.Linear; o.RopeFactor = 2; o.RopeOriginalMaxPositionEmbeddings = 4096; }, "RopeOriginalMaxPositionEmbeddings", "yarn and llama3");
        Refused(o => { o.RopeScaling = RopeScalingType.Yarn; o.RopeFactor = 2; o.RopeOriginalMaxPositionEmbeddings = 0; }, "RopeOriginalMaxPositionEmbeddings");
        Refused(o => o.RopeTheta = -1, "RopeTheta", "positive");

        // dynamic beyond max_position_embeddings, asked for or from the base model's config.json
        var plain = TestModels.Llama() with { MaxPositionEmbeddings = 4096 };
        var e = Assert.ThrowsExactly<OptionException>(() => Options(o => { o.RopeScaling = RopeScalingType.Dynamic; o.RopeFactor = 2; }).ApplyRope(plain));
        Assert.AreEqual("MaxSequenceLength", e.ParamName);
        StringAssert.Contains(e.Message, "max_position_embeddings (4096)");
        e = Assert.ThrowsExactly<OptionException>(() => Options(_ => { }).ApplyRope(plain with { RopeScaling = new RopeScaling { Type = "dynamic", Factor = 2 } }));
        StringAssert.Contains(e.Message, "base model's config.json");
        var (config, _) = Options(o => { o.RopeScaling = RopeScalingType.Dynamic; o.RopeFactor = 2; o.MaxSequenceLength = 4096; }).ApplyRope(plain);
        Assert.AreEqual("dynamic", config.RopeScaling!.Type);
    }

    [TestMethod]
    public void AnAdapterCarriesTheRotarySettingsItWasTrainedWith()
    {
        string root = Path.Combine(Path.GetTempPath(), "seco-rope-adapter-" + Guid.NewGuid().ToString("N"));
        try
        {
            var plain = TestModels.Llama();
            string basePath = Path.Combine(root, "base"), adapter = Path.Combine(root, "adapter");
            using (var baseModel = TestModels.Create(plain)) ModelDirectory.Save(baseModel, basePath);

            var trained = plain with { RopeScaling = new RopeScaling { Type = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 16 }, RopeTheta = 20000 };
            using (var model = TestModels.WithLora(TestModels.Create(trained))) PeftAdapter.Save(model, adapter, basePath);
            Assert.IsTrue(File.Exists(Path.Combine(adapter, PeftAdapter.RopeFileName)));
            var loaded = PeftAdapter.ConfigFor(ModelConfig.Load(basePath), adapter);
            Assert.AreEqual(trained.RopeScaling, loaded.RopeScaling);
            Assert.AreEqual(20000, loaded.RopeTheta);
            using (var model = ModelDirectory.Load(basePath, loaded, ScalarType.Float64, CPU))
                Assert.AreEqual(0.1 * Math.Log(4) + 1, RotaryEmbedding.AttentionScaling(model.Config), 1e-15);

            // Trained on the base model's own settings: PEFT's two files only, and the base config as it is.
            using (var model = TestModels.WithLora(TestModels.Create(plain))) PeftAdapter.Save(model, adapter, basePath);
            Assert.IsFalse(File.Exists(Path.Combine(adapter, PeftAdapter.RopeFileName)));
            Assert.AreEqual(ModelConfig.Load(basePath), PeftAdapter.ConfigFor(ModelConfig.Load(basePath), adapter));
        }
        finally { if (Directory.Exists(root)) Directory.Delete(root, true); }
    }
}
