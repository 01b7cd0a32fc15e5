using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>
/// Stage 2's work on one chunk i (docs/ALGORITHM.md, steps 2 and 3): rebuild (J_i, m_i) = f(x_i; m'_1..m'_{i-1}; Θ) on
/// top of the cached prefix and backpropagate c·J_i together with b·(the gradient later chunks sent to m'_i). Both meet
/// in the attention's backward, the one consumer of m_i within the chunk's graph: it adds b·(what the cache's gradient
/// buffers hold for the chunk) to m_i's gradient and the prefix keys'/values' gradients to the buffers
/// (<see cref="CachedPrefix.CacheScale"/>), so only the loss is seeded here.
/// </summary>
/// <param name="Model">The model.</param>
/// <param name="Cache">The cached prefix and, when cross-chunk gradients are on, its gradient buffers.</param>
/// <param name="InputIds">The chunk's token ids [B, T].</param>
/// <param name="Start">Absolute position of the chunk's first token.</param>
/// <param name="Loss">The chunk's summed token loss from its final-norm hidden states (J_i before the 1 / labelled scaling).</param>
/// <param name="LossSeed">What J_i's sum is seeded with, a scalar on the device (made once per step): the compensation
/// factor over the sequence's labelled tokens.</param>
/// <param name="CacheHasGradient">True once a later chunk has sent gradient to the cache: a chunk without a loss of its
/// own then backpropagates from a zero seed at its output, so that its attention hands that gradient on.</param>
/// <param name="BeforeLayer">Called with a layer's index before every forward of that layer (dropout replay).</param>
/// <param name="Phases">Diagnostic: times the forwards and backwards, or null.</param>
internal sealed record ChunkBackward(CausalLM Model, KvCache Cache, Tensor InputIds, long Start, Func<Tensor, Tensor> Loss,
    Tensor LossSeed, bool CacheHasGradient, Action<int>? BeforeLayer, StepPhases? Phases)
{
    long Size => InputIds.shape[1];

    CachedPrefix? Prefix(int layer) => Cache.Prefix(layer, Start);

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
            var (hidden, _) = Model.ForwardChunk(InputIds, Start, Cache, BeforeLayer);
            loss = Loss(hidden);
            Seed(outputs, seeds, loss, hidden);
        }
        if (outputs.Count > 0)
            using (Phases?.Measure(StepPhases.Stage2Backward)) autograd.backward(outputs, seeds);
        return (loss, outputs.Count > 0);
    }

    /// <summary>
    /// Activation checkpointing inside the chunk: a forward without a graph keeps each layer's input; the head is
    /// backpropagated from the last one, then each layer's graph is rebuilt from its saved input and backpropagated with
    /// the gradient of its output (its attention adds what later chunks sent its keys/values), one layer's graph alive at
    /// a time. Dropout is replayed per
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
            Seed(headOutputs, headSeeds, loss, top);
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
            Tensor output;
            using (Phases?.Measure(StepPhases.Stage2Forward))
            using (var forwardScope = NewDisposeScope())
            {
                (output, _, _) = layers[l].Forward(input, positions, prefix);
                forwardScope.MoveToOuter(output);
            }
            bool seeded = gradient is not null && output.requires_grad;
            if (seeded)
                using (Phases?.Measure(StepPhases.Stage2Backward)) autograd.backward([output], [gradient!]);
            backpropagated |= seeded;
            gradient?.Dispose();
            gradient = l > 0 ? input.grad?.MoveToOuterDisposeScope() : null;
            inputs[l + 1].Dispose();
        }
        gradient?.Dispose();
        return (loss, backpropagated);
    }

    /// <summary>
    /// Seeds the chunk's loss with <see cref="LossSeed"/>; a chunk without labels has no loss of its own, but while its
    /// cache carries gradient from later chunks its <paramref name="output"/> is seeded with zeros, so that the backward
    /// reaches the attention that hands that gradient on.
    /// </summary>
    void Seed(List<Tensor> outputs, List<Tensor> seeds, Tensor loss, Tensor output)
    {
        if (loss.requires_grad)
        {
            outputs.Add(loss);
            seeds.Add(LossSeed);
        }
        else if (CacheHasGradient && output.requires_grad)
        {
            outputs.Add(output);
            seeds.Add(zeros_like(output));
        }
    }
}
