using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>
/// Validation errors are data (option, rule, value): the records throw them in their own names, the stage renames them by
/// dictionary into its option fields, and a front end words them in its own vocabulary.
/// </summary>
[TestClass]
public sealed class OptionErrorTests
{
    static readonly Dictionary<string, string> Flags = new()
    {
        ["ChunkSize"] = "--chunk-size", ["LoraRank"] = "--lora-rank", ["WarmupRatio"] = "--warmup-ratio", ["WarmupSteps"] = "--warmup-steps",
        ["Device"] = "--device", ["DType"] = "--dtype",
    };

    static string Flag(string option) => Flags.GetValueOrDefault(option) ?? option;

    [TestMethod]
    public void AnErrorCarriesTheOptionTheRuleAndTheValue()
    {
        var e = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseOptions { ChunkSize = 0 }.Validate());
        Assert.AreEqual(("ChunkSize", "{ChunkSize} must be at least 1", (object?)0), (e.Option, e.Rule, e.Value));
        Assert.AreEqual("ChunkSize", e.ParamName);
        Assert.AreEqual(0, e.ActualValue);
        Assert.AreEqual("ChunkSize must be at least 1; got 0.", e.Message);
        Assert.AreEqual("--chunk-size must be at least 1; got 0.", e.Describe(Flag));
        Assert.IsInstanceOfType<ArgumentException>(e, "existing catch sites keep catching it");
        Assert.IsInstanceOfType<ArgumentOutOfRangeException>(e);

        // A rule that names two options names both in every vocabulary.
        var both = Assert.ThrowsExactly<OptionException>(() => new TrainingOptions { WarmupRatio = 0.1, WarmupSteps = 2 }.Validate());
        CollectionAssert.AreEqual(new[] { "WarmupRatio", "WarmupSteps" }, both.NamedOptions.ToArray());
        Assert.AreEqual("--warmup-ratio cannot be combined with --warmup-steps; set one of them; got 0.1.", both.Describe(Flag));
        Assert.AreEqual("warmupRatio cannot be combined with warmupSteps; set one of them; got 10 %.",
            both.Describe(n => char.ToLowerInvariant(n[0]) + n[1..], v => $"{(double)v! * 100} %"));
    }

    [TestMethod]
    public void RulesShowTheirValueWhereTheSentenceSaysAndEscapeBraces()
    {
        var inline = new OptionException("MaxSequenceLength", 40000, "{MaxSequenceLength} ({value}) is too long");
        Assert.AreEqual("MaxSequenceLength (40000) is too long.", inline.Message, "a value the rule shows is not repeated");
        var braces = new OptionException("ModelPath", null, "{ModelPath} " + OptionException.Escape("{not an option}") + " is odd");
        Assert.AreEqual("--model {not an option} is odd.", braces.Describe(n => n == "ModelPath" ? "--model" : n));
        CollectionAssert.AreEqual(new[] { "ModelPath" }, braces.NamedOptions.ToArray());
        var unnamed = new OptionException("Seed", -1, "no negative seeds");
        Assert.AreEqual("--seed: no negative seeds; got -1.", unnamed.Describe(_ => "--seed"), "a rule that does not name its option starts with it");
        var list = new OptionException("TargetModules", new[] { "a", "b" }, "{TargetModules} names {value}");
        Assert.AreEqual("TargetModules names a, b.", list.Message);
    }

    [TestMethod]
    public void TheStageReportsARecordsRuleUnderItsOwnFieldName()
    {
        // LoraConfig.Rank is the stage's LoraRank; TrainingOptions.MinLearningRateRatio its FinalLearningRateRatio.
        var rank = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseLoraTrainer.Options { ModelPath = "m", LoraRank = 0 }.Validate());
        Assert.AreEqual(("LoraRank", "{LoraRank} must be at least 1", (object?)0), (rank.Option, rank.Rule, rank.Value));
        Assert.AreEqual("LoraRank must be at least 1; got 0.", rank.Message);
        Assert.AreEqual("--lora-rank must be at least 1; got 0.", rank.Describe(Flag));
        Assert.IsInstanceOfType<OptionException>(rank.InnerException, "the record's own error is kept");
        Assert.AreEqual("Rank", ((OptionException)rank.InnerException).Option);

        var ratio = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseLoraTrainer.Options { ModelPath = "m", FinalLearningRateRatio = 2 }.Validate());
        Assert.AreEqual("FinalLearningRateRatio must be in [0, 1]; got 2.", ratio.Message);
        Assert.IsFalse(ratio.Message.Contains("MinLearningRateRatio", StringComparison.Ordinal));

        var targets = Assert.ThrowsExactly<OptionException>(() => new LoraConfig { TargetModules = ["qkv"] }.Validate());
        CollectionAssert.AreEqual(new[] { "qkv" }, (string[])targets.Value!);

        // The stage's own rules, and those that name two of its options.
        var rope = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseLoraTrainer.Options { ModelPath = "m", RopeScaling = RopeScalingType.Yarn }.Validate());
        CollectionAssert.AreEqual(new[] { "RopeFactor", "RopeScaling" }, rope.NamedOptions.ToArray());
        Assert.AreEqual("RopeScaling yarn needs RopeFactor, the scaling factor (e.g. 4).", rope.Message);
        var budget = Assert.ThrowsExactly<OptionException>(() => new ChunkwiseLoraTrainer.Options { ModelPath = "m", MemoryBudget = "lots" }.Validate());
        Assert.AreEqual("MemoryBudget 'lots' is not a size; use e.g. " + ByteSize.Examples + ".", budget.Message);
    }

    sealed class Row
    {
        public string Text = "";
    }

    [TestMethod]
    public void TheDeviceAndTheDTypeAreTheCallersOptions()
    {
        var device = Assert.ThrowsExactly<OptionException>(() => TensorSettings.ResolveDevice("tpu"));
        Assert.AreEqual(("Device", "{Device} '{value}' is not a device; use auto, cpu, cuda or cuda:N", (object?)"tpu"), (device.Option, device.Rule, device.Value));
        Assert.AreEqual("Device 'tpu' is not a device; use auto, cpu, cuda or cuda:N.", device.Message);
        Assert.AreEqual("--device 'tpu' is not a device; use auto, cpu, cuda or cuda:N.", device.Describe(Flag));
        // A method names it as its parameter, and reads the same in any vocabulary.
        var parameter = Assert.ThrowsExactly<OptionException>(() => TensorSettings.ResolveDevice(" TPU ", "device"));
        Assert.AreEqual("device ' TPU ' is not a device; use auto, cpu, cuda or cuda:N.", parameter.Message, "the value as the user wrote it");
        Assert.AreEqual("device", parameter.ParamName);
        Assert.AreEqual("field 'device' (line 4) ' TPU ' is not a device; use auto, cpu, cuda or cuda:N.", parameter.Describe(n => $"field '{n}' (line 4)"));

        var dtype = Assert.ThrowsExactly<OptionException>(() => TensorSettings.ResolveDType("int4", TorchSharp.torch.CPU));
        Assert.AreEqual(("DType", (object?)"int4"), (dtype.Option, dtype.Value));
        Assert.AreEqual("DType 'int4' is not supported; use auto, float32, bfloat16, float16, float64.", dtype.Message);
        Assert.AreEqual("--dtype 'int4' is not supported; use auto, float32, bfloat16, float16, float64.", dtype.Describe(Flag));

        if (!TorchSharp.torch.cuda.is_available())
        {
            var cuda = Assert.ThrowsExactly<OptionException>(() => TensorSettings.ResolveDevice("cuda:1"));
            Assert.AreEqual("--device 'cuda:1' asks for CUDA, but no CUDA device is available (on a GPU machine, build with -p:TorchBackend=cuda, " +
                "or run on a CUDA PyTorch's libtorch: see the README's backend section).", cuda.Describe(Flag));
        }

        // The stage's fields name them; both are checked before the model is read, so no model is needed.
        var ml = new MLContext(seed: 1);
        var rows = ml.Data.LoadFromEnumerable(new[] { new Row { Text = "a document" } });
        foreach (var (options, message) in new[]
        {
            (new ChunkwiseLoraTrainer.Options { ModelPath = "no-such-model", Device = "tpu" }, "Device 'tpu' is not a device; use auto, cpu, cuda or cuda:N."),
            (new ChunkwiseLoraTrainer.Options { ModelPath = "no-such-model", Device = "cpu", DType = "int4" }, "DType 'int4' is not supported; use auto, float32, bfloat16, float16, float64."),
        })
        {
            var stage = Assert.ThrowsExactly<OptionException>(() => ml.Transforms.Text.ChunkwiseLora(options).Fit(rows));
            Assert.AreEqual(message, stage.Message);
        }
    }

    [TestMethod]
    public void ARotaryNoteNamesTheOptionsAsTheCallerDoes()
    {
        var options = new ChunkwiseLoraTrainer.Options { ModelPath = "m", RopeScaling = RopeScalingType.Linear, RopeFactor = 2, RopeTheta = 2.5e5 };
        var plain = TestModels.Llama();
        var (_, note) = options.ApplyRope(plain, n => n == "RopeScaling" ? "--rope-scaling" : n == "RopeTheta" ? "--rope-theta" : n);
        StringAssert.StartsWith(note, "--rope-scaling linear: rope_scaling");
        StringAssert.Contains(note, "--rope-theta: rope_theta 250000 replaces");
        var (_, stageNote) = options.ApplyRope(plain);
        StringAssert.StartsWith(stageNote, "RopeScaling linear:");
    }
}
