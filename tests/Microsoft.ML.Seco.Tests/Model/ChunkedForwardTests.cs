using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Model;

/// <summary>A forward pass chunk by chunk against the key/value cache equals one forward over the whole sequence.</summary>
[TestClass]
public sealed class ChunkedForwardTests
{
    static double MaxChunkedDifference(ModelConfig config, int length, int chunkSize, AttentionOptions? attention = null)
    {
        using var scope = NewDisposeScope();
        using var model = TestModels.Create(config);
        if (attention is not null) model.Attention = attention;
        using var batch = TestModels.Batch(config.VocabSize, new[] { length, length - 3 });
        using var _ = no_grad();
        var (fullHidden, _) = model.ForwardChunk(batch.InputIds, 0, null);
        var full = model.Logits(fullHidden);

        using var cache = new KvCache(config, batch.BatchSize, batch.Length, model.DType, model.Device);
        var pieces = new List<Tensor>();
        for (long start = 0; start < length; start += chunkSize)
        {
            long size = Math.Min(chunkSize, length - start);
            var (hidden, chunkCache) = model.ForwardChunk(batch.InputIds.narrow(1, start, size), start, cache);
            cache.Write(start, chunkCache);
            pieces.Add(model.Logits(hidden));
        }
        return (cat(pieces, 1) - full).abs().max().item<double>();
    }

    [TestMethod]
    public void LlamaWithGroupedQueryAttention() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama(), 23, 5) <= 1e-10);

    [TestMethod]
    public void Qwen2WithBiasesAndTiedEmbeddings() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Qwen2(), 23, 6) <= 1e-10);

    [TestMethod]
    public void Llama3RopeScaling() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama(ropeType: "llama3"), 40, 9) <= 1e-10);

    [TestMethod]
    public void YarnRopeScaling()
    {
        // Attention factor on cos and sin, a band of interpolated dimensions; and without rounding, with mscales.
        var yarn = new RopeScaling { Type = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 16 };
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { RopeScaling = yarn }, 40, 9) <= 1e-10);
        Assert.IsTrue(MaxChunkedDifference(TestModels.Qwen2() with { RopeScaling = yarn with { Truncate = false, BetaFast = 8, Mscale = 0.7, MscaleAllDim = 1 } }, 23, 6) <= 1e-10);
    }

    [TestMethod]
    public void DynamicRopeScalingWithinMaxPositionEmbeddings() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { MaxPositionEmbeddings = 40, RopeScaling = new RopeScaling { Type = "dynamic", Factor = 2 } }, 40, 9) <= 1e-10);

    [TestMethod]
    public void MistralSlidingWindowSpanningChunks() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 7 }, 30, 4) <= 1e-10);

    [TestMethod]
    public void PrefixReadInBlocksSmallerThanTheChunk()
    {
        // Blocks of 3 prefix positions: several blocks per chunk, a partial last block, a window cutting blocks.
        var blocks = ChunkAttentionTests.Blockwise(3);
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama(), 23, 5, blocks) <= 1e-10);
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 7 }, 30, 4, blocks) <= 1e-10);
    }

    [TestMethod]
    public void KeysAndValuesAloneEqualTheFullForwardsCache()
    {
        // SeCO's Stage 1 builds the cache of a selected chunk without the last layer's attention and MLP; with LoRA
        // dropout (training mode, masks replayed from one seed) the keys/values must still be the full forward's.
        using var scope = NewDisposeScope();
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama(layers: 3)), dropout: 0.3);
        model.train();
        using var batch = TestModels.Batch(model.Config.VocabSize, new[] { 17, 14 });
        using var _ = no_grad();
        using var cache = new KvCache(model.Config, batch.BatchSize, batch.Length, model.DType, model.Device);
        double worst = 0;
        for (long start = 0; start < batch.Length; start += 6)
        {
            var ids = batch.InputIds.narrow(1, start, Math.Min(6, batch.Length - start));
            random.manual_seed(start);
            var (_, full) = model.ForwardChunk(ids, start, cache);
            random.manual_seed(start);
            var alone = model.ChunkKeysAndValues(ids, start, cache);
            Assert.HasCount(full.Length, alone);
            for (int l = 0; l < full.Length; l++)
                worst = Math.Max(worst, Math.Max((full[l].Keys - alone[l].Keys).abs().max().item<double>(), (full[l].Values - alone[l].Values).abs().max().item<double>()));
            cache.Write(start, alone);
        }
        Assert.IsTrue(worst == 0, $"max difference {worst}");

        // The comparison can fail: another dropout draw gives other keys/values.
        random.manual_seed(99);
        var redrawn = model.ChunkKeysAndValues(batch.InputIds.narrow(1, 6, 6), 6, cache);
        random.manual_seed(6);
        var (__, reference) = model.ForwardChunk(batch.InputIds.narrow(1, 6, 6), 6, cache);
        Assert.IsTrue((redrawn[^1].Values - reference[^1].Values).abs().max().item<double>() > 0);
    }

    [TestMethod]
    public void ChunksMatterOnlyThroughTheCache()
    {
        // The check above must be able to fail: a chunk that ignores its prefix gives other logits.
        using var model = TestModels.Create(TestModels.Llama());
        using var batch = TestModels.Batch(61, new[] { 12 });
        using var _ = no_grad();
        var (full, _) = model.ForwardChunk(batch.InputIds, 0, null);
        var (alone, _) = model.ForwardChunk(batch.InputIds.narrow(1, 6, 6), 6, new KvCache(model.Config, 1, 12, model.DType, model.Device));
        Assert.IsTrue((full.narrow(1, 6, 6) - alone).abs().max().item<double>() > 1e-3);
    }
}
