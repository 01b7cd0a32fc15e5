using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>The ablation switch <see cref="ChunkwiseOptions.CrossChunkGradients"/> = false (float64).</summary>
[TestClass]
public sealed class CrossChunkGradientTests
{
    const int ChunkSize = 8;

    /// <summary>
    /// The gradient of Σ_j loss_j / labelled where chunk j reads its prefix's keys/values as constants, computed
    /// without the step: per chunk, one no-grad forward over the whole prefix [0, s_j) (not chunk by chunk, no Stage 1
    /// or 2, no gradient buffers), then chunk j with a graph on top of it, backpropagated alone.
    /// </summary>
    static Dictionary<string, Tensor> DetachedPrefixReference(CausalLM model, TokenBatch batch)
    {
        return GradientCheck.Gradients(model, () =>
        {
            using var scope = NewDisposeScope();
            var targets = batch.Targets();
            double labelled = targets.ne(TokenBatch.IgnoreIndex).sum().item<long>();
            for (long start = 0; start < batch.Length; start += ChunkSize)
            {
                long size = Math.Min(ChunkSize, batch.Length - start);
                using var cache = new KvCache(model.Config, batch.BatchSize, batch.Length, model.DType, model.Device);
                if (start > 0)
                {
                    using var noGrad = no_grad();
                    var (_, prefix) = model.ForwardChunk(batch.InputIds.narrow(1, 0, start), 0, null);
                    cache.Write(0, prefix);
                }
                var (hidden, _) = model.ForwardChunk(batch.InputIds.narrow(1, start, size), start, cache);
                var loss = model.LossSum(hidden, targets.narrow(1, start, size)) / labelled;
                loss.backward();
            }
        });
    }

    [TestMethod]
    public void WithoutCrossChunkGradientsEachChunkIsTrainedOnADetachedPrefix()
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama()));
        using var batch = TestModels.Batch(61, new[] { 37, 30 }, ignoredFraction: 0.2);
        var reference = DetachedPrefixReference(model, batch);

        StepResult? cut = null, exact = null;
        var ablation = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = ChunkSize, CrossChunkGradients = false });
        var actual = GradientCheck.Gradients(model, () => cut = ablation.Run(model, batch));
        double error = TestModels.MaxRelativeError(actual, reference);
        Assert.IsTrue(error <= 1e-10, $"max relative gradient error against the detached-prefix reference {error:E3}");

        // The switch changes the gradient, not the loss: exact SeCO's gradient differs by the cross-chunk terms.
        var seco = GradientCheck.Gradients(model, () => exact = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = ChunkSize }).Run(model, batch));
        Assert.AreEqual(exact!.Loss, cut!.Loss, 1e-12 * Math.Abs(exact.Loss));
        double difference = TestModels.MaxRelativeError(seco, reference);
        Assert.IsTrue(difference > 1e-3, $"exact SeCO is within {difference:E3} of the detached-prefix gradient: the check would be vacuous");
    }

    [TestMethod]
    public void TheMlNetOptionReachesTheStep()
    {
        var options = new ChunkwiseLoraTrainer.Options { ModelPath = "unused", CrossChunkGradients = false };
        Assert.IsFalse(options.Chunkwise(seed: 0).CrossChunkGradients);
        Assert.IsTrue(new ChunkwiseLoraTrainer.Options { ModelPath = "unused" }.Chunkwise(seed: 0).CrossChunkGradients);
    }
}
