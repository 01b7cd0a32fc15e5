using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Checkpoints;

/// <summary>Hugging Face model directories: the tiny-model factory, the loader, config errors.</summary>
[TestClass]
public sealed class ModelDirectoryTests
{
    static string TempDir() => Path.Combine(Path.GetTempPath(), "seco-model-" + Guid.NewGuid().ToString("N"));

    [TestMethod]
    public void TinyModelsLoadThroughTheRealLoaderShardedOrNot()
    {
        string single = TempDir(), sharded = TempDir();
        try
        {
            var spec = new TinyModelSpec { ModelType = "qwen2", WithTokenizer = false, Seed = 3 };
            TinyModel.Write(single, spec);
            TinyModel.Write(sharded, spec with { Shards = 3 });
            Assert.IsTrue(File.Exists(Path.Combine(sharded, "model.safetensors.index.json")));
            Assert.AreEqual(3, Directory.GetFiles(sharded, "model-*-of-00003.safetensors").Length, "--shards 3 gives three shards");

            using var a = ModelDirectory.Load(single, ScalarType.Float32, CPU);
            using var b = ModelDirectory.Load(sharded, ScalarType.Float32, CPU);
            using var reference = new CausalLM(a.Config, ScalarType.Float32, CPU);
            reference.InitializeRandom(3, std: 1 / Math.Sqrt(a.Config.HiddenSize));
            Assert.IsTrue(a.Config.TieWordEmbeddings && a.Config.QkvBias);
            foreach (var ((name, p), (_, q), (_, r)) in a.named_parameters().Zip(b.named_parameters(), reference.named_parameters()))
            {
                Assert.IsTrue(p.equal(q).all().item<bool>(), $"{name}: sharded differs from single file");
                Assert.IsTrue(p.equal(r).all().item<bool>(), $"{name}: loaded differs from what was written");
            }
        }
        finally
        {
            foreach (var d in new[] { single, sharded }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    [TestMethod]
    public void SaveInBfloat16LoadsTheRoundedValues()
    {
        string dir = TempDir();
        try
        {
            using var model = TestModels.Create(TestModels.Llama(), ScalarType.Float32);
            ModelDirectory.Save(model, dir, dtype: ScalarType.BFloat16);
            StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "config.json")), "\"torch_dtype\": \"bfloat16\"");
            using var loaded = ModelDirectory.Load(dir, ScalarType.Float32, CPU);
            foreach (var ((name, p), (_, q)) in model.named_parameters().Zip(loaded.named_parameters()))
                Assert.IsTrue(p.to(ScalarType.BFloat16).to(ScalarType.Float32).equal(q).all().item<bool>(), name);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void UnsupportedConfigValuesAreNamedWithTheSupportedOnes()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ModelConfig.FromJson(System.Text.Json.Nodes.JsonNode.Parse(
            """{"model_type": "gpt_neox", "vocab_size": 10}""")!.AsObject()));
        StringAssert.Contains(e.Message, "gpt_neox");
        StringAssert.Contains(e.Message, "llama, mistral, qwen2");
        var json = TestModels.Llama().ToJson();
        json["rope_scaling"] = System.Text.Json.Nodes.JsonNode.Parse("""{"rope_type": "longrope", "factor": 4}""");
        e = Assert.ThrowsExactly<NotSupportedException>(() => ModelConfig.FromJson(json));
        StringAssert.Contains(e.Message, "longrope");
        StringAssert.Contains(e.Message, "default, linear, llama3, yarn, dynamic");
        json = TestModels.Llama().ToJson();
        json["num_key_value_heads"] = 3;
        var invalid = Assert.ThrowsExactly<InvalidDataException>(() => ModelConfig.FromJson(json));
        StringAssert.Contains(invalid.Message, "num_key_value_heads");
    }

    [TestMethod]
    public void ConfigSurvivesARoundTrip()
    {
        foreach (var config in new[] { TestModels.Llama(ropeType: "llama3"), TestModels.Qwen2(), TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 4096 } })
            Assert.AreEqual(config with { }, ModelConfig.FromJson(config.ToJson()) with { EosTokenIds = config.EosTokenIds });
    }

    [TestMethod]
    public void SlidingWindowFollowsEachFamilysHuggingFaceRule()
    {
        // transformers: MistralConfig has no use_sliding_window (sliding_window alone decides), Qwen2Config sets
        // sliding_window = None unless use_sliding_window, and Llama has no window at all.
        int? Window(string modelType, string extra) => ModelConfig.FromJson(System.Text.Json.Nodes.JsonNode.Parse(
            $$"""{"model_type": "{{modelType}}", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2{{extra}}}""")!.AsObject()).SlidingWindow;
        Assert.AreEqual(16, Window("mistral", """, "sliding_window": 16, "use_sliding_window": false"""));
        Assert.AreEqual(16, Window("mistral", """, "sliding_window": 16"""));
        Assert.IsNull(Window("mistral", """, "sliding_window": null"""));
        Assert.IsNull(Window("qwen2", """, "sliding_window": 16"""));
        Assert.IsNull(Window("qwen2", """, "sliding_window": 16, "use_sliding_window": false"""));
        Assert.AreEqual(16, Window("qwen2", """, "sliding_window": 16, "use_sliding_window": true, "max_window_layers": 0"""));
        Assert.IsNull(Window("llama", """, "sliding_window": 16, "use_sliding_window": true"""));
        Assert.IsFalse((TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 16 }).ToJson().ContainsKey("use_sliding_window"));
    }
}
