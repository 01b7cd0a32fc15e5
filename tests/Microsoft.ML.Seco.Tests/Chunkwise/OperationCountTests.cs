using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>
/// Ceilings on the libtorch calls a step dispatches from .NET (issue #22's targets), pinned so that a regression fails.
/// The count of a step depends on layers, chunks, Stage-1 blocks and the head's pieces, not on widths or on the length
/// of a fused attention's prefix, so Qwen2.5-0.5B's 24 layers, 16 chunks each its own Stage-1 block (as chunks of 1,024
/// run at 16K tokens) and a head of one piece per chunk stand for 16K tokens in chunks of 1,024 on a narrow model
/// (docs/BENCHMARKS.md, <i>Operations dispatched</i>, has the counts at 16K).
/// </summary>
[TestClass]
public sealed class OperationCountTests
{
    const int Layers = 24, Chunks = 16, ChunkSize = 16;

    static CausalLM Model()
    {
        var config = new ModelConfig
        {
            ModelType = "qwen2", VocabSize = 64, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = Layers,
            NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 8, RopeTheta = 1e6, QkvBias = true, TieWordEmbeddings = true,
        };
        var model = new CausalLM(config, ScalarType.Float32, CPU);
        model.InitializeRandom(0);
        LoraAdapters.Attach(model, new LoraConfig { Rank = 8, Alpha = 16 });
        return model;
    }

    /// <summary>Operations of one step after a warm-up step (first use compiles and checks the fused kernels).</summary>
    static long Count(CausalLM model, TokenBatch batch, Func<double> step)
    {
        step();
        model.zero_grad();
        long operations = OperationCount.Of(() => step());
        model.zero_grad();
        return operations;
    }

    [TestMethod]
    public void ChunkwiseStepsDispatchAFewTimesWhatPlainTrainingDoes()
    {
        using var model = Model();
        var random = new Random(1);
        using var batch = TokenBatch.FromSequences(new[] { Enumerable.Range(0, Chunks * ChunkSize).Select(_ => random.Next(64)).ToArray() }, null, 0, CPU);
        var options = new ChunkwiseOptions { ChunkSize = ChunkSize, Stage1MinimumTokens = ChunkSize };
        Assert.AreEqual(8 * ChunkSize, options.Stage1BlockSize(Layers, fusedAttention: true), "Stage 1 in blocks of 8 chunks, as chunks of 1,024 run at 16K tokens");
        long full = Count(model, batch, () => new FullBackprop().Run(model, batch).Loss);
        long seco = Count(model, batch, () => new ChunkwiseStep(options).Run(model, batch).Loss);
        long spaco = Count(model, batch, () => new ChunkwiseStep(options with { SampledChunks = 8, Sampler = ChunkSampler.FixedBudget, Seed = 1 }).Run(model, batch).Loss);
        long inference = Count(model, batch, () => Evaluation.MeanNll(model, batch, options.Stage1BlockSize(Layers, fusedAttention: true)).SumNll);
        Console.WriteLine($"operations per step: full {full}, seco {seco} ({seco / (double)full:F1}×), spaco {spaco}, inference {inference} (spaco {spaco / (double)inference:F1}×)");

        // Issue #22's targets: SeCO ≤ 20× plain training's count (met) and SpaCO ≤ 10× (10.7× here, where plain training's
        // head is one piece; 9.0× at 16K tokens on the benchmark's narrow model, docs/BENCHMARKS.md). Stage 2 runs every
        // layer once per backpropagated chunk (16 or 8 here) where plain training runs it once, and Stage 1 once per 8
        // chunks, so only operations plain training does not have at all (the attention's backward, the cache's
        // bookkeeping) move the ratio down; making a layer cheaper cuts plain training's count as much (docs/BENCHMARKS.md,
        // Operations dispatched). The ceilings sit at the target or just above today's counts, so that a regression fails.
        AssertAtMost("SeCO", seco, 20 * full);
        AssertAtMost("SpaCO (t = 8)", spaco, 10.8 * full);
        AssertAtMost("chunked inference", inference, 2 * full);
        AssertAtMost("SeCO per chunk-layer", seco / (double)(Chunks * Layers), 59);
        AssertAtMost("plain training per layer", full / (double)Layers, 48);
    }

    static void AssertAtMost(string what, double count, double ceiling) =>
        Assert.IsTrue(count <= ceiling, $"{what}: {count:F0} operations dispatched, ceiling {ceiling:F0}");
}
