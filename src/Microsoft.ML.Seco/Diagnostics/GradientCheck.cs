using System.Text.RegularExpressions;
using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// A strategy <see cref="GradientCheck"/> compares against full backpropagation: SeCO, layer checkpointing, or SpaCO
/// with a sampler, whose exact expectation is computed over every selection of the sampler's law.
/// </summary>
/// <param name="Name">The strategy's name on the command line: seco, checkpoint, or spaco- and the sampler's name.</param>
/// <param name="Sampler">SpaCO's sampler; null for the exact strategies.</param>
public sealed record GradientCheckStrategy(string Name, IChunkSampler? Sampler = null)
{
    /// <summary>Exact chunk-wise optimization.</summary>
    public static GradientCheckStrategy Seco { get; } = new("seco");

    /// <summary>Layer-wise gradient checkpointing.</summary>
    public static GradientCheckStrategy Checkpoint { get; } = new("checkpoint");

    /// <summary>SpaCO with <paramref name="sampler"/>: the expectation over every selection of its law.</summary>
    public static GradientCheckStrategy Spaco(IChunkSampler sampler) => new($"spaco-{sampler.Name}", sampler);

    /// <summary>The exact strategies, then SpaCO with every registered sampler (<see cref="ChunkSamplers.All"/>).</summary>
    public static IReadOnlyList<GradientCheckStrategy> All { get; } = [Seco, Checkpoint, .. ChunkSamplers.All.Select(Spaco)];

    /// <summary>True for SpaCO (a strategy with a sampler).</summary>
    [System.Diagnostics.CodeAnalysis.MemberNotNullWhen(true, nameof(Sampler))]
    public bool IsSpaco => Sampler is not null;
}

/// <summary>Error of one group of parameters (same name once the layer index is removed).</summary>
/// <param name="Group">e.g. <c>model.layers.*.self_attn.q_proj.lora_A.weight</c>.</param>
/// <param name="Tensors">Tensors in the group.</param>
/// <param name="MaxAbsError">max |g − g_full| over the group.</param>
/// <param name="MaxRelError">max |g − g_full| / max |g_full| over the group.</param>
public sealed record ParameterGroupError(string Group, int Tensors, double MaxAbsError, double MaxRelError);

/// <summary>Outcome of a gradient check.</summary>
/// <param name="Strategy">What was checked.</param>
/// <param name="Chunks">Chunks per sequence (k).</param>
/// <param name="Runs">Stage-2 runs that were averaged (1 for exact strategies; patterns for SpaCO).</param>
/// <param name="Parameters">Trainable parameter tensors compared.</param>
/// <param name="Groups">Errors per parameter group.</param>
public sealed record GradientCheckResult(GradientCheckStrategy Strategy, int Chunks, int Runs, int Parameters, IReadOnlyList<ParameterGroupError> Groups)
{
    /// <summary>The compensation mode of a SpaCO check (<see cref="Compensation.None"/> is meaningless for exact strategies, which use factors 1).</summary>
    public Compensation Compensation { get; init; } = Compensation.LossAndCache;

    /// <summary>Largest absolute error over all groups.</summary>
    public double MaxAbsError => Groups.Max(g => g.MaxAbsError);
    /// <summary>Largest relative error over all groups.</summary>
    public double MaxRelError => Groups.Max(g => g.MaxRelError);
}

/// <summary>
/// Checks the engine on the user's own model: runs a strategy and full backpropagation on the same batch and
/// compares the gradients of every trainable parameter. For SpaCO it computes the exact expectation of the estimate
/// by enumerating every selection of the sampler's law (<see cref="IChunkSampler.Law"/>) with its probability, which
/// must equal the full gradient where the sampler claims it unbiased (<see cref="IChunkSampler.IsUnbiased"/>: the
/// Bernoulli sampler with <see cref="Compensation.LossAndCache"/>).
/// </summary>
public static class GradientCheck
{
    /// <summary>
    /// Runs the check. Gradients already on the model are cleared first and after. <paramref name="compensation"/> and
    /// <paramref name="maxCompensation"/> apply to the SpaCO strategies; a sampler that uses labelled chunks takes them
    /// from the batch.
    /// </summary>
    /// <exception cref="TooManySelectionsException">SpaCO's sampler has more than <paramref name="maxPatterns"/> selections to enumerate.</exception>
    public static GradientCheckResult Run(CausalLM model, TokenBatch batch, GradientCheckStrategy strategy, int chunkSize,
                                          int? sampledChunks = null, double? maxCompensation = null, int maxPatterns = 4096,
                                          Compensation compensation = Compensation.LossAndCache)
    {
        model.zero_grad();
        var step = new ChunkwiseStep(new ChunkwiseOptions
        {
            ChunkSize = chunkSize, Compensation = compensation, MaxCompensation = maxCompensation, CustomSampler = strategy.Sampler,
        });
        var reference = Gradients(model, () => new FullBackprop().Run(model, batch));
        int k = step.ChunkCount(batch.Length);
        int t = sampledChunks ?? k;
        Dictionary<string, Tensor> actual;
        int runs = 1;
        if (strategy.IsSpaco)
        {
            var labelled = strategy.Sampler.UsesLabelledChunks ? batch.ChunksWithLabels(chunkSize) : null;
            var patterns = Selections(k, t, strategy.Sampler, compensation, maxCompensation, maxPatterns, labelled);
            runs = patterns.Count;
            actual = Expectation(model, batch, step, patterns);
        }
        else if (strategy == GradientCheckStrategy.Checkpoint)
            actual = Gradients(model, () => new LayerCheckpointing().Run(model, batch));
        else
            actual = Gradients(model, () => step.Run(model, batch, ChunkSelection.All(k)));
        try
        {
            return new GradientCheckResult(strategy, k, runs, reference.Count, Compare(actual, reference)) { Compensation = compensation };
        }
        finally
        {
            foreach (var g in actual.Values.Concat(reference.Values)) g.Dispose();
        }
    }

    /// <summary>
    /// Every selection <paramref name="sampler"/> can draw (<see cref="IChunkSampler.Law"/>), with its probability and
    /// the factors of <paramref name="compensation"/>: for the built-in samplers the 2^k keep patterns of Bernoulli,
    /// the C(k, t) subsets of the fixed budget, the products of per-group subsets of the stratified sampler (which
    /// needs <paramref name="labelledChunks"/>).
    /// </summary>
    /// <exception cref="TooManySelectionsException">The law has more than <paramref name="maxPatterns"/> selections.</exception>
    public static IReadOnlyList<(ChunkSelection Selection, double Probability)> Selections(int chunks, int sampled, IChunkSampler sampler,
        Compensation compensation, double? maxCompensation, int maxPatterns = 4096, IReadOnlyList<bool>? labelledChunks = null)
    {
        if (sampled <= 0) throw new ArgumentOutOfRangeException(nameof(sampled), sampled, "sampled chunks must be positive.");
        var (lossFactor, cacheFactor) = sampler.Factors(chunks, sampled, compensation, maxCompensation);
        double count = sampler.SelectionCount(chunks, sampled, labelledChunks);
        if (count > maxPatterns) throw new TooManySelectionsException(chunks, sampler.Name, count, maxPatterns);
        var result = new List<(ChunkSelection, double)>();
        foreach (var (keep, probability) in sampler.Law(chunks, sampled, labelledChunks))
        {
            // A sampler whose count understates its law is stopped at the limit all the same.
            if (result.Count == maxPatterns) throw new TooManySelectionsException(chunks, sampler.Name, maxPatterns + 1.0, maxPatterns);
            if (keep.Length != chunks) throw new InvalidOperationException($"The {sampler.Name} sampler's law holds a pattern of {keep.Length} chunks for {chunks}.");
            result.Add((new ChunkSelection(keep, lossFactor, cacheFactor), probability));
        }
        return result;
    }

    /// <summary>Σ over selections of probability × the gradient Stage 2 leaves for that selection.</summary>
    internal static Dictionary<string, Tensor> Expectation(CausalLM model, TokenBatch batch, ChunkwiseStep step, IReadOnlyList<(ChunkSelection Selection, double Probability)> selections)
    {
        var sum = TrainableParameters.Of(model).ToDictionary(p => p.Name, p => zeros_like(p.Parameter).DetachFromDisposeScope());
        foreach (var (selection, probability) in selections)
        {
            var gradients = Gradients(model, () => step.Run(model, batch, selection));
            foreach (var (name, g) in gradients)
            {
                sum[name].AddScaled_(g, probability);
                g.Dispose();
            }
        }
        return sum;
    }

    /// <summary>Runs <paramref name="run"/> and takes the gradients it left (zeros for untouched parameters), clearing them.</summary>
    internal static Dictionary<string, Tensor> Gradients(CausalLM model, Action run)
    {
        model.zero_grad();
        run();
        var result = TrainableParameters.Of(model).ToDictionary(p => p.Name,
            p => (p.Parameter.grad is { } g ? g.detach().clone() : zeros_like(p.Parameter)).DetachFromDisposeScope());
        model.zero_grad();
        return result;
    }

    /// <summary>Errors per parameter group: max |a − b| and max |a − b| / max |b|.</summary>
    internal static IReadOnlyList<ParameterGroupError> Compare(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> reference)
    {
        using var scope = NewDisposeScope();
        return reference.GroupBy(p => Regex.Replace(p.Key, @"\.\d+\.", ".*."))
            .Select(group =>
            {
                double abs = 0, scale = 0;
                foreach (var (name, r) in group)
                {
                    abs = Math.Max(abs, (actual[name].to(ScalarType.Float64) - r.to(ScalarType.Float64)).abs().max().item<double>());
                    scale = Math.Max(scale, r.abs().max().to(ScalarType.Float64).item<double>());
                }
                return new ParameterGroupError(group.Key, group.Count(), abs, scale > 0 ? abs / scale : abs);
            })
            .ToList();
    }
}
