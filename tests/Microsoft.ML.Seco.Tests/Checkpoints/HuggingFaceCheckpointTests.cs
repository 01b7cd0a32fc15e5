using System.Text.Json;
using Microsoft.ML.Seco.Checkpoints;
using TorchSharp;
using static Microsoft.ML.Seco.Tests.Checkpoints.CheckpointTestSupport;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Checkpoints;

[TestClass]
public sealed class HuggingFaceCheckpointTests
{
    private string _dir = "";

    [TestInitialize]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("seco-hf-").FullName;
        manual_seed(1234);
    }

    [TestCleanup]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static TinyLm Model(ScalarType dtype = ScalarType.Float32) => new TinyLm().to(dtype);

    [TestMethod]
    [DataRow(ScalarType.Float32)]
    [DataRow(ScalarType.Float64)]
    public void RoundTripIsBitIdentical(ScalarType dtype)
    {
        using var source = Model(dtype);
        var written = HuggingFaceCheckpoint.Save(source.Weights(), _dir);
        CollectionAssert.AreEqual(new[] { Path.Combine(_dir, "model.safetensors") }, written.ToArray());

        using var target = Model(dtype);
        var report = HuggingFaceCheckpoint.LoadInto(target, _dir, dtype, CPU);
        AssertSameWeights(source, target);
        Assert.HasCount(source.Weights().Count, report.Loaded);
        CollectionAssert.Contains(report.Loaded.ToArray(), "model.layers.1.self_attn.q_proj.weight");
        CollectionAssert.Contains(report.Loaded.ToArray(), "model.step");
        CollectionAssert.DoesNotContain(report.Loaded.ToArray(), "model.inv_freq", "non-persistent buffers are not checkpoint content");
        using var file = SafeTensorsFile.Open(written[0]);
        Assert.AreEqual("pt", file.Metadata["format"]);
    }

    [TestMethod]
    public void ShardedCheckpointEqualsSingleFile()
    {
        using var source = Model();
        string single = Path.Combine(_dir, "single"), sharded = Path.Combine(_dir, "sharded");
        HuggingFaceCheckpoint.Save(source.Weights(), single);
        // The 28-element embedding (112 bytes) exceeds the limit and gets a shard of its own.
        var written = HuggingFaceCheckpoint.Save(source.Weights(), sharded, maxShardBytes: 100);
        int shards = written.Count - 1;
        Assert.IsGreaterThan(2, shards);
        Assert.AreEqual($"model-00001-of-{shards:D5}.safetensors", Path.GetFileName(written[0]));
        Assert.AreEqual($"model-{shards:D5}-of-{shards:D5}.safetensors", Path.GetFileName(written[shards - 1]));
        Assert.AreEqual("model.safetensors.index.json", Path.GetFileName(written[^1]));
        Assert.IsFalse(File.Exists(Path.Combine(sharded, "model.safetensors")));

        using var index = JsonDocument.Parse(File.ReadAllText(written[^1]));
        long expectedTotal = source.Weights().Sum(w => w.tensor.numel() * w.tensor.element_size());
        Assert.AreEqual(expectedTotal, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        Assert.HasCount(source.Weights().Count, map);
        foreach (var (name, shard) in map)
        {
            using var f = SafeTensorsFile.Open(Path.Combine(sharded, shard));
            Assert.IsTrue(f.Contains(name), $"{shard} lacks {name}");
            Assert.IsTrue(f.Tensors.Values.Sum(t => t.ByteLength) <= 100 || f.Tensors.Count == 1, $"{shard} is over the limit");
        }

        using var fromSingle = Model();
        using var fromSharded = Model();
        HuggingFaceCheckpoint.LoadInto(fromSingle, single, ScalarType.Float32, CPU);
        var report = HuggingFaceCheckpoint.LoadInto(fromSharded, sharded, ScalarType.Float32, CPU);
        Assert.HasCount(shards, report.Files);
        AssertSameWeights(source, fromSharded);
        AssertSameWeights(fromSingle, fromSharded);

        // Saving again unsharded leaves no stale shards or index behind to confuse a loader.
        HuggingFaceCheckpoint.Save(source.Weights(), sharded);
        CollectionAssert.AreEqual(new[] { "model.safetensors" }, Directory.GetFiles(sharded).Select(Path.GetFileName).ToArray());
    }

    [TestMethod]
    [DataRow(ScalarType.BFloat16, 0.10009765625f)]
    [DataRow(ScalarType.Float16, 0.0999755859375f)]
    public void HalfPrecisionCheckpointLoadsRoundedValues(ScalarType stored, float expectedTenth)
    {
        using var source = Model();
        using (no_grad())
        {
            foreach (var (_, t) in source.Weights().Where(w => w.tensor.is_floating_point()))
            {
                using var flat = t.view(-1);
                var pattern = new[] { 1.5f, -2.25f, 0.1f };
                flat.copy_(tensor(Enumerable.Range(0, (int)flat.numel()).Select(i => pattern[i % 3]).ToArray()));
            }
        }
        HuggingFaceCheckpoint.Save(source.Weights(), _dir, dtype: stored);
        using (var file = SafeTensorsFile.Open(Path.Combine(_dir, "model.safetensors")))
        {
            Assert.AreEqual(stored, file.GetInfo("lm_head.weight").DType);
            Assert.AreEqual(ScalarType.Int64, file.GetInfo("model.step").DType, "integer buffers keep their type");
        }

        using var target = Model();
        HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU);
        foreach (var (name, t) in target.Weights().Where(w => w.tensor.is_floating_point()))
        {
            Assert.AreEqual(ScalarType.Float32, t.dtype);
            var values = t.data<float>().ToArray();
            for (int i = 0; i < values.Length; i++)
            {
                float expected = (i % 3) switch { 0 => 1.5f, 1 => -2.25f, _ => expectedTenth };
                Assert.AreEqual(expected, values[i], $"{name}[{i}]");
            }
        }
    }

    [TestMethod]
    public void MissingAndUnexpectedTensorsAreListedTogether()
    {
        using var source = Model();
        var weights = source.Weights().Where(w => !w.name.StartsWith("model.layers.1.", StringComparison.Ordinal)).ToList();
        using var extra = ones(2);
        weights.Add(("model.layers.9.mlp.weight", extra));
        HuggingFaceCheckpoint.Save(weights, _dir);

        using var target = Model();
        var before = target.Weights().ToDictionary(w => w.name, w => RawBytes(w.tensor));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains(_dir, e.Message);
        Assert.Contains("3 missing", e.Message);
        Assert.Contains("model.layers.1.self_attn.q_proj.weight", e.Message);
        Assert.Contains("model.layers.1.self_attn.o_proj.weight", e.Message);
        Assert.Contains("1 unexpected", e.Message);
        Assert.Contains("model.layers.9.mlp.weight", e.Message);
        Assert.HasCount(3, (string[])e.Data[CheckpointErrors.MissingKey]!);
        foreach (var (name, t) in target.Weights())
        {
            CollectionAssert.AreEqual(before[name], RawBytes(t), $"a failed load must leave '{name}' untouched");
        }
    }

    [TestMethod]
    public void OptionalAndIgnoredNamesAreAllowed()
    {
        using var source = Model();
        var weights = source.Weights().Where(w => w.name != "lm_head.weight").ToList();
        using var invFreq = ones(2);
        weights.Add(("model.layers.0.self_attn.rotary_emb.inv_freq", invFreq));
        HuggingFaceCheckpoint.Save(weights, _dir);

        using var target = Model();
        var report = HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU,
            optional: name => name == "lm_head.weight",
            ignore: name => name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal));
        CollectionAssert.AreEqual(new[] { "lm_head.weight" }, report.MissingOptional.ToArray());
        CollectionAssert.AreEqual(new[] { "model.layers.0.self_attn.rotary_emb.inv_freq" }, report.Ignored.ToArray());
        Assert.HasCount(weights.Count - 1, report.Loaded);
    }

    [TestMethod]
    public void LongListsAreCutInTheMessage()
    {
        using var source = new TinyLm(layers: 12);
        HuggingFaceCheckpoint.Save(source.Weights().Where(w => !w.name.Contains("layers")).ToList(), _dir);
        using var target = new TinyLm(layers: 12);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains("36 missing", e.Message);
        Assert.Contains("(16 more)", e.Message);
        Assert.HasCount(36, (string[])e.Data[CheckpointErrors.MissingKey]!);
    }

    [TestMethod]
    public void ShapeMismatchNamesTensorAndBothShapes()
    {
        using var wide = new TinyLm(vocab: 9);
        HuggingFaceCheckpoint.Save(wide.Weights(), _dir);
        using var target = Model();
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains("'lm_head.weight': module expects [7, 4], model.safetensors holds [9, 4]", e.Message);
        Assert.Contains("'model.embed_tokens.weight'", e.Message);
    }

    [TestMethod]
    public void MissingShardIsNamed()
    {
        using var source = Model();
        var written = HuggingFaceCheckpoint.Save(source.Weights(), _dir, maxShardBytes: 100);
        File.Delete(written[1]);
        using var target = Model();
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains(Path.GetFileName(written[1]), e.Message);
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.AreEqual(written[1], e.FileName);
    }

    [TestMethod]
    public void IndexThatEscapesTheFolderIsRejected()
    {
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"),
            """{"metadata":{"total_size":4},"weight_map":{"w":"../elsewhere.safetensors"}}""");
        using var target = Model();
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains("not a plain file name", e.Message);
    }

    [TestMethod]
    public void FolderWithoutSafetensorsSaysWhatWasLookedFor()
    {
        using var target = Model();
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains(_dir, e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("model.safetensors.index.json", e.Message);

        File.WriteAllBytes(Path.Combine(_dir, "pytorch_model.bin"), [0x80, 0x02]);
        e = Assert.ThrowsExactly<FileNotFoundException>(() => HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("not supported", e.Message);
        Assert.Contains("convert", e.Message);

        Assert.ThrowsExactly<DirectoryNotFoundException>(() => HuggingFaceCheckpoint.LoadInto(target, Path.Combine(_dir, "nope"), ScalarType.Float32, CPU));
    }

    [TestMethod]
    public void LoadConvertsToTheModulesOwnType()
    {
        using var source = Model(ScalarType.Float64);
        HuggingFaceCheckpoint.Save(source.Weights(), _dir);
        using var target = Model();
        HuggingFaceCheckpoint.LoadInto(target, _dir, ScalarType.Float32, CPU);
        var expected = source.Weights().ToDictionary(w => w.name, w => w.tensor);
        foreach (var (name, t) in target.Weights())
        {
            using var want = expected[name].to(t.dtype);
            CollectionAssert.AreEqual(RawBytes(want), RawBytes(t), name);
        }
    }
}
