using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>
/// Stage 2's work on one chunk i (docs/ALGORITHM.md, steps 2 and 3): rebuild (J_i, m_i) = f(x_i; m'_1..m'_{i-1}; Θ) on
/// top of the cached prefix and backpropagate c·J_i together with m_i seeded by b·(the gradient later chunks sent to
/// m'_i). Attention adds the prefix keys'/values' gradients to the cache's gradient buffers on the way.
/// </summary>
/// <param name="Model">The model.</param>
/// <param name="Cache">The cached prefix and, when cross-chunk gradients are on, its gradient buffers.</param>
/// <param name="InputIds">The chunk's token ids [B, T].</param>
/// <param name="Start">Absolute position of the chunk's first token.</param>
/// <param name="Loss">The chunk's summed token loss from its final-norm hidden states (J_i before the 1 / labelled scaling).</param>
/// <param name="LossSeed">What J_i's sum is seeded with, a scalar on the device (made once per step): the compensation
/// factor over the sequence's labelled tokens.</param>
/// <param name="CacheScale">The compensation factor of the injected cache gradient.</param>
/// <param name="InjectCacheGradient">False while the gradient buffers still hold zeros (no chunk with a prefix was backpropagated yet).</param>
/// <param name="BeforeLayer">Called with a layer's index before every forward of that layer (dropout replay).</param>
/// <param name="Phases">Diagnostic: times the forwards and backwards, or null.</param>
internal sealed record ChunkBackward(CausalLM Model, KvCache Cache, Tensor InputIds, long Start, Func<Tensor, Tensor> Loss,
    Tensor LossSeed, double CacheScale, bool InjectCacheGradient, Action<int>? BeforeLayer, StepPhases? Phases)
{
    long Size => InputIds.shape[1];

    CachedPrefix? Prefix(int layer) => Start == 0 ? null : Cache.Prefix(layer, Start);

    /// <summary>
    /// The chunk's graph through every layer at once, one backward call: the activations of all layers for the chunk's rows
    /// are alive together.
    /// </summary>
    /// <returns>The chunk's summed loss (its graph already released), and whether any gradient was backpropagated.</returns>
    public (Tensor Loss, bool Backpropagated) WholeGraph()
    {
        var outputs = new List<Tensor>();
        var seeds = new List<Tensor>();
        Tensor loss;
        using (Phases?.Measure(StepPhases.Stage2Forward))
        {
            var (hidden, chunkCache) = Model.ForwardChunk(InputIds, Start, Cache, BeforeLayer);
            loss = Loss(hidden);
            SeedLoss(outputs, seeds, loss);
            for (int l = 0; l < chunkCache.Length; l++) SeedCache(outputs, seeds, l, chunkCache[l].Keys, chunkCache[l].Values);
        }
        if (outputs.Count > 0)
            using (Phases?.Measure(StepPhases.Stage2Backward)) autograd.backward(outputs, seeds);
        return (loss, outputs.Count > 0);
    }

    /// <summary>
    /// Activation checkpointing inside the chunk: a forward without a graph keeps each layer's input; the head is
    /// backpropagated from the last one, then each layer's graph is rebuilt from its saved input and backpropagated with
    /// the gradient of its output and of its keys/values, one layer's graph alive at a time. Dropout is replayed per
    /// layer through <see cref="BeforeLayer"/>. The same gradients as <see cref="WholeGraph"/> up to rounding, for one more
    /// forward of the chunk.
    /// </summary>
    /// <returns>The chunk's summed loss (its graph already released), and whether any gradient was backpropagated.</returns>
    public (Tensor Loss, bool Backpropagated) LayerByLayer()
    {
        var layers = Model.Layers;
        using var positions = Model.Positions(Start, Size);
        var inputs = new Tensor[layers.Count + 1];
        using (Phases?.Measure(StepPhases.Stage2Forward))
        using (no_grad())
        {
            inputs[0] = Model.Embed(InputIds);
            for (int l = 0; l < layers.Count; l++)
            {
                using var layerScope = NewDisposeScope();
                BeforeLayer?.Invoke(l);
                inputs[l + 1] = layers[l].Forward(inputs[l], positions, Prefix(l)).Hidden.MoveToOuterDisposeScope();
            }
        }

        var top = inputs[^1].detach().requires_grad_(true);
        var headOutputs = new List<Tensor>();
        var headSeeds = new List<Tensor>();
        Tensor loss;
        using (Phases?.Measure(StepPhases.Stage2Forward))
        {
            loss = Loss(Model.FinalNorm(top));
            SeedLoss(headOutputs, headSeeds, loss);
        }
        bool backpropagated = headOutputs.Count > 0;
        if (backpropagated)
            using (Phases?.Measure(StepPhases.Stage2Backward)) autograd.backward(headOutputs, headSeeds);
        var gradient = top.grad;

        for (int l = layers.Count - 1; l >= 0; l--)
        {
            using var layerScope = NewDisposeScope();
            BeforeLayer?.Invoke(l);
            // Layer 0 starts from the embedding, which is trainable only in full fine-tuning.
            var input = l == 0 ? Model.Embed(InputIds) : inputs[l].detach().requires_grad_(true);
            // The rebuilt graph keeps what autograd saved; the forward's other intermediates go before the backward runs.
            var prefix = Prefix(l);
            Tensor output, keys, values;
            using (Phases?.Measure(StepPhases.Stage2Forward))
            using (var forwardScope = NewDisposeScope())
            {
                (output, keys, values) = layers[l].Forward(input, positions, prefix);
                forwardScope.MoveToOuter(output, keys, values);
            }
            var outputs = new List<Tensor>();
            var seeds = new List<Tensor>();
            if (gradient is not null && output.requires_grad)
            {
                outputs.Add(output);
                seeds.Add(gradient);
            }
            SeedCache(outputs, seeds, l, keys, values);
            if (outputs.Count > 0)
                using (Phases?.Measure(StepPhases.Stage2Backward)) autograd.backward(outputs, seeds);
            backpropagated |= outputs.Count > 0;
            gradient?.Dispose();
            gradient = l > 0 ? input.grad?.MoveToOuterDisposeScope() : null;
            inputs[l + 1].Dispose();
        }
        gradient?.Dispose();
        return (loss, backpropagated);
    }

    void SeedLoss(List<Tensor> outputs, List<Tensor> seeds, Tensor loss)
    {
        // A chunk without labels has no loss of its own; its cache still carries gradient from later chunks.
        if (!loss.requires_grad) return;
        outputs.Add(loss);
        seeds.Add(LossSeed);
    }

    void SeedCache(List<Tensor> outputs, List<Tensor> seeds, int layer, Tensor keys, Tensor values)
    {
        if (!InjectCacheGradient || Cache.GradientOf(layer, Start, Size) is not var (gradKeys, gradValues)) return;
        Seed(outputs, seeds, keys, gradKeys);
        Seed(outputs, seeds, values, gradValues);
    }

    void Seed(List<Tensor> outputs, List<Tensor> seeds, Tensor output, Tensor gradient)
    {
        // A key/value that no trainable parameter produced (e.g. layer 0 with LoRA only on q) has no graph to seed.
        if (!output.requires_grad) return;
        outputs.Add(output);
        seeds.Add(CacheScale == 1 ? gradient : gradient * CacheScale);
    }
}
