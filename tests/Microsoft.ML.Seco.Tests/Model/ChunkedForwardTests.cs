using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Model;

/// <summary>A forward pass chunk by chunk against the key/value cache equals one forward over the whole sequence.</summary>
[TestClass]
public sealed class ChunkedForwardTests
{
    static double MaxChunkedDifference(ModelConfig config, int length, int chunkSize)
    {
        using var scope = NewDisposeScope();
        using var model = TestModels.Create(config);
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
    public void MistralSlidingWindowSpanningChunks() =>
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 7 }, 30, 4) <= 1e-10);

    [TestMethod]
    public void PrefixReadInBlocksSmallerThanTheChunk()
    {
        // Blocks of 3 prefix positions: several blocks per chunk, a partial last block, a window cutting blocks.
        using var blocks = ChunkAttentionTests.Blocks(3);
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama(), 23, 5) <= 1e-10);
        Assert.IsTrue(MaxChunkedDifference(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 7 }, 30, 4) <= 1e-10);
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
