using Microsoft.ML.Seco.Training;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Lora;

[TestClass]
public sealed class LoraTests
{
    static Tensor Logits(CausalLM model, Tensor ids)
    {
        using var _ = no_grad();
        return model.Logits(model.ForwardChunk(ids, 0, null).Hidden);
    }

    static Tensor Ids() => TestModels.Batch(61, new[] { 9 }).InputIds;

    [TestMethod]
    public void FreshAdapterLeavesTheModelUnchanged()
    {
        using var model = TestModels.Create(TestModels.Llama());
        var ids = Ids();
        var before = Logits(model, ids);
        LoraAdapters.Attach(model, new LoraConfig { TargetModules = LoraConfig.AttentionProjections.Concat(LoraConfig.MlpProjections).ToArray() });
        Assert.AreEqual(0.0, (Logits(model, ids) - before).abs().max().item<double>());
        foreach (var (name, p) in model.named_parameters().Where(p => p.name.Contains("lora_A")))
            Assert.IsTrue(p.abs().max().item<double>() > 0, $"{name} must be randomly initialised");
    }

    [TestMethod]
    public void OnlyLoraParametersAreTrainableByDefault()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()), allProjections: false);
        var trainable = TrainableParameters.Of(model).Select(p => p.Name).ToList();
        Assert.AreEqual(2 * 4 * 2, trainable.Count); // layers × q,k,v,o × (A, B)
        Assert.IsTrue(trainable.All(n => n.Contains(".lora_")));
        TrainableParameters.Select(model, fullFineTuning: true);
        Assert.AreEqual(model.parameters().Count(), TrainableParameters.Of(model).Count);
    }

    [TestMethod]
    public void AttachReplacesOnlyTheTargetsKeepingNamesAndSharingTheBaseWeights()
    {
        using var model = TestModels.Create(TestModels.Llama());
        var names = model.named_parameters().Select(p => p.name).ToList();
        var qWeight = model.model.layers[1].self_attn.q_proj.get_parameter("weight")!;
        Assert.IsFalse(model.HasStochasticLayers);
        LoraAdapters.Attach(model, new LoraConfig { TargetModules = new[] { "q_proj", "down_proj" }, Dropout = 0.1 });

        var adapted = LoraAdapters.Of(model).Select(l => l.Path).ToList();
        CollectionAssert.AreEqual(new[] { "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj" }, adapted);
        Assert.IsNotInstanceOfType<LoraLinear>(model.model.layers[0].self_attn.k_proj);
        // The base parameters keep their Hugging Face names (checkpoints map by name) and are the same tensors.
        CollectionAssert.IsSubsetOf(names, model.named_parameters().Select(p => p.name).ToList());
        Assert.AreSame(qWeight, ((LoraLinear)model.model.layers[1].self_attn.q_proj).weight);
        Assert.IsTrue(model.HasStochasticLayers, "LoRA dropout makes the model stochastic in training mode");
        Assert.ThrowsExactly<InvalidOperationException>(() => LoraAdapters.Attach(model, new LoraConfig()));
    }

    [TestMethod]
    public void MergedEqualsUnmergedAndUnmergeRestoresTheBase()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        var ids = Ids();
        Tensor QWeight() => model.model.layers[0].self_attn.q_proj.get_parameter("weight")!;
        var baseWeight = QWeight().clone();
        var unmerged = Logits(model, ids);
        foreach (var (_, layer) in LoraAdapters.Of(model)) layer.Merge();
        Assert.IsTrue((Logits(model, ids) - unmerged).abs().max().item<double>() <= 1e-12);
        Assert.IsTrue((QWeight() - baseWeight).abs().max().item<double>() > 1e-3, "merge must change W");
        foreach (var (_, layer) in LoraAdapters.Of(model)) layer.Unmerge();
        Assert.IsTrue((QWeight() - baseWeight).abs().max().item<double>() <= 1e-14);
        Assert.IsTrue((Logits(model, ids) - unmerged).abs().max().item<double>() <= 1e-12);
    }

    [TestMethod]
    public void AdapterFilesUsePeftNamesAndReloadToTheSameOutputs()
    {
        string dir = Path.Combine(Path.GetTempPath(), "seco-adapter-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()), allProjections: false);
            var ids = Ids();
            var expected = Logits(model, ids);
            PeftAdapter.Save(model, dir, baseModelPath: "models/tiny");

            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
            Assert.AreEqual("LORA", (string?)config["peft_type"]);
            Assert.AreEqual("CAUSAL_LM", (string?)config["task_type"]);
            Assert.AreEqual(4, (int?)config["r"]);
            Assert.AreEqual(8.0, (double?)config["lora_alpha"]);
            CollectionAssert.AreEqual(new[] { "q_proj", "k_proj", "v_proj", "o_proj" }, config["target_modules"]!.AsArray().Select(n => (string?)n).ToArray());
            using (var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                Assert.IsTrue(file.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
                Assert.IsTrue(file.Contains("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"));
                Assert.AreEqual(16, file.TensorNames.Count);
                CollectionAssert.AreEqual(new long[] { 4, 32 }, file.GetInfo("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").Shape.ToArray());
            }

            using var reloaded = TestModels.Create(TestModels.Llama());
            PeftAdapter.Load(reloaded, dir);
            Assert.AreEqual(0.0, (Logits(reloaded, ids) - expected).abs().max().item<double>());
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void BadConfigValuesAreNamed()
    {
        Assert.AreEqual("Rank", Assert.ThrowsExactly<OptionException>(() => new LoraConfig { Rank = 0 }.Validate()).ParamName);
        var e = Assert.ThrowsExactly<OptionException>(() => new LoraConfig { TargetModules = new[] { "qkv" } }.Validate());
        StringAssert.Contains(e.Message, "qkv");
    }
}
