using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>SeCO and layer checkpointing give the gradients of full backpropagation (float64).</summary>
[TestClass]
public sealed class SecoExactnessTests
{
    static (Dictionary<string, Tensor> Gradients, StepResult Result) Gradients(CausalLM model, ITrainingStep step, TokenBatch batch)
    {
        StepResult? result = null;
        var gradients = GradientCheck.Gradients(model, () => result = step.Run(model, batch));
        return (gradients, result!);
    }

    static void AssertExact(CausalLM model, TokenBatch batch, ITrainingStep step)
    {
        var (reference, full) = Gradients(model, new FullBackprop(), batch);
        var (actual, result) = Gradients(model, step, batch);
        double error = TestModels.MaxRelativeError(actual, reference);
        Assert.IsTrue(error <= 1e-10, $"{step.Name}: max relative gradient error {error:E3}");
        Assert.AreEqual(full.Loss, result.Loss, 1e-12 * Math.Abs(full.Loss), $"{step.Name}: loss differs");
        Assert.AreEqual(full.LabelledTokens, result.LabelledTokens);
    }

    [TestMethod]
    [DataRow(AttentionKernel.Fused, DisplayName = "fused attention kernels")]
    [DataRow(AttentionKernel.Blockwise, DisplayName = "blockwise attention")]
    public void SecoEqualsFullBackpropWithLora(AttentionKernel kernel)
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        model.Attention = new AttentionOptions { Kernel = kernel };
        using var batch = TestModels.Batch(61, new[] { 37 });
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 });
        Assert.AreEqual(5, step.ChunkCount(37));
        AssertExact(model, batch, step);
    }

    [TestMethod]
    public void SecoEqualsFullBackpropInFullFineTuningWithIgnoredLabelsAndPadding()
    {
        using var model = TestModels.Create(TestModels.Qwen2());
        TrainableParameters.Select(model, fullFineTuning: true);
        using var batch = TestModels.Batch(61, new[] { 30, 19 }, ignoredFraction: 0.3);
        AssertExact(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 7 }));
    }

    [TestMethod]
    public void SecoEqualsFullBackpropWhenOnlyTheLastChunkHasLabels()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama(ropeType: "llama3")), allProjections: false);
        using var batch = TestModels.Batch(61, new[] { 29 });
        using (no_grad()) batch.Labels.narrow(1, 0, 25).fill_(TokenBatch.IgnoreIndex);
        AssertExact(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 6 }));
    }

    [TestMethod]
    public void SecoEqualsFullBackpropWithASlidingWindowAndPrefixBlocks()
    {
        // The window (5) cuts across chunks (4) and prefix blocks (3); the whole-sequence reference runs the fused
        // attention with its own mask, an independent path.
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 5 }));
        model.Attention = Tests.Model.ChunkAttentionTests.Blockwise(3);
        using var batch = TestModels.Batch(61, new[] { 29, 22 }, ignoredFraction: 0.2);
        AssertExact(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 4 }));
    }

    [TestMethod]
    public void StageOneInBlocksOfSeveralChunksKeepsGradientsAndLossesExact()
    {
        // Stage 1 in blocks of two chunks of 6 over 29 tokens: blocks {0, 1}, {2, 3} and {4} (the last chunk, of 5
        // tokens, in Stage 1 only when not selected). Each selection below leaves a different mix: blocks all selected
        // (keys/values only), mixed (full forward, loss sliced per unselected chunk), none selected.
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 29, 23 }, ignoredFraction: 0.2);
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 6, Stage1MinimumTokens = 12 });
        Assert.AreEqual(12, step.Options.Stage1BlockSize(model.Config.NumHiddenLayers, fusedAttention: true));
        AssertExact(model, batch, step);

        var full = new FullBackprop().Run(model, batch);
        model.zero_grad();
        foreach (var keep in new[] { "11000", "10100", "01011", "00001", "11110", "00000" })
        {
            var selection = new ChunkSelection(keep.Select(c => c == '1').ToArray(), 1, 1);
            var result = step.Run(model, batch, selection);
            model.zero_grad();
            Assert.AreEqual(full.Loss, result.Loss, 1e-12 * Math.Abs(full.Loss), $"selection {keep}: every chunk's loss counted once");
        }
        var selections = GradientCheck.Selections(5, 2, ChunkSamplers.Bernoulli, Compensation.LossAndCache, null);
        var expectation = GradientCheck.Expectation(model, batch, step, selections);
        var reference = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        double error = TestModels.MaxRelativeError(expectation, reference);
        Assert.IsTrue(error <= 1e-10, $"Bernoulli SpaCO over blocks: E[g] differs from the full gradient by {error:E3}");
    }

    [TestMethod]
    [DataRow("lora", DisplayName = "LoRA on every projection")]
    [DataRow("full", DisplayName = "full fine-tuning, tied embeddings, ignored labels and padding")]
    [DataRow("last", DisplayName = "LoRA on attention only, labels in the last chunk only")]
    [DataRow("window", DisplayName = "sliding window across chunks and prefix blocks")]
    public void SecoWithLayersRecomputedEqualsFullBackprop(string variant)
    {
        // Recompute inside the chunk (activation checkpointing) against full backpropagation, an independent path.
        using var model = variant switch
        {
            "full" => TestModels.Create(TestModels.Qwen2()),
            "last" => TestModels.WithLora(TestModels.Create(TestModels.Llama(layers: 3)), allProjections: false),
            "window" => TestModels.WithLora(TestModels.Create(TestModels.Llama() with { ModelType = "mistral", SlidingWindow = 5 })),
            _ => TestModels.WithLora(TestModels.Create(TestModels.Llama(layers: 3))),
        };
        if (variant == "full") TrainableParameters.Select(model, fullFineTuning: true);
        if (variant == "window") model.Attention = Tests.Model.ChunkAttentionTests.Blockwise(3);
        using var batch = TestModels.Batch(61, variant == "lora" ? new[] { 37 } : new[] { 30, 19 }, ignoredFraction: variant is "full" or "window" ? 0.3 : 0);
        if (variant == "last")
            using (no_grad()) batch.Labels.narrow(1, 0, 25).fill_(TokenBatch.IgnoreIndex);
        AssertExact(model, batch, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = variant == "window" ? 4 : 7, RecomputeLayers = true }));
    }

    [TestMethod]
    public void SpacoWithLayersRecomputedIsUnbiased()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 29 });
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 6, RecomputeLayers = true });
        var selections = GradientCheck.Selections(5, 2, ChunkSamplers.Bernoulli, Compensation.LossAndCache, null);
        var expectation = GradientCheck.Expectation(model, batch, step, selections);
        var reference = GradientCheck.Gradients(model, () => new FullBackprop().Run(model, batch));
        double error = TestModels.MaxRelativeError(expectation, reference);
        Assert.IsTrue(error <= 1e-10, $"Bernoulli SpaCO with recompute: E[g] differs from the full gradient by {error:E3}");
    }

    [TestMethod]
    public void RecomputedLayersReplayLoraDropoutExactly()
    {
        // With dropout there is no dropout-free reference: recompute must give what the whole chunk graph gives with the
        // same masks (both reseed per step, chunk and layer), and another seed must give something else.
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama(layers: 3)), dropout: 0.3);
        model.train();
        using var batch = TestModels.Batch(61, new[] { 33, 20 });
        Dictionary<string, Tensor> Run(bool recompute, int seed) => GradientCheck.Gradients(model,
            () => new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 7, RecomputeLayers = recompute, Seed = seed }).Run(model, batch));
        var whole = Run(false, 4);
        double error = TestModels.MaxRelativeError(Run(true, 4), whole);
        Assert.IsTrue(error <= 1e-12, $"recompute with dropout differs from the whole chunk graph by {error:E3}");
        Assert.IsTrue(TestModels.MaxRelativeError(Run(true, 5), whole) > 1e-3, "another dropout seed should change the gradients");
    }

    [TestMethod]
    public void LayerCheckpointingEqualsFullBackprop()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 26, 21 }, ignoredFraction: 0.2);
        AssertExact(model, batch, new LayerCheckpointing());
        TrainableParameters.Select(model, fullFineTuning: true);
        AssertExact(model, batch, new LayerCheckpointing());
    }
}
