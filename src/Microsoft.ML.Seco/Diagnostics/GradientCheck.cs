using System.Text.RegularExpressions;
using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>The strategies <see cref="GradientCheck"/> compares against full backpropagation.</summary>
internal enum GradientCheckStrategy
{
    /// <summary>Exact chunk-wise optimization.</summary>
    Seco,
    /// <summary>Layer-wise gradient checkpointing.</summary>
    Checkpoint,
    /// <summary>SpaCO with the paper's fixed-budget sampler: the expectation over all C(k, t) subsets.</summary>
    SpacoFixed,
    /// <summary>SpaCO with the Bernoulli sampler: the expectation over all 2^k keep patterns.</summary>
    SpacoBernoulli,
}

/// <summary>Error of one group of parameters (same name once the layer index is removed).</summary>
/// <param name="Group">e.g. <c>model.layers.*.self_attn.q_proj.lora_A.weight</c>.</param>
/// <param name="Tensors">Tensors in the group.</param>
/// <param name="MaxAbsError">max |g − g_full| over the group.</param>
/// <param name="MaxRelError">max |g − g_full| / max |g_full| over the group.</param>
internal sealed record ParameterGroupError(string Group, int Tensors, double MaxAbsError, double MaxRelError);

/// <summary>Outcome of a gradient check.</summary>
/// <param name="Strategy">What was checked.</param>
/// <param name="Chunks">Chunks per sequence (k).</param>
/// <param name="Runs">Stage-2 runs that were averaged (1 for exact strategies; patterns for SpaCO).</param>
/// <param name="Parameters">Trainable parameter tensors compared.</param>
/// <param name="Groups">Errors per parameter group.</param>
internal sealed record GradientCheckResult(GradientCheckStrategy Strategy, int Chunks, int Runs, int Parameters, IReadOnlyList<ParameterGroupError> Groups)
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
/// by enumerating every selection with its probability, which for the Bernoulli sampler with
/// <see cref="Compensation.LossAndCache"/> must equal the full gradient.
/// </summary>
internal static class GradientCheck
{
    /// <summary>
    /// Runs the check. Gradients already on the model are cleared first and after. <paramref name="compensation"/> and
    /// <paramref name="maxCompensation"/> apply to the SpaCO strategies.
    /// </summary>
    public static GradientCheckResult Run(CausalLM model, TokenBatch batch, GradientCheckStrategy strategy, int chunkSize,
                                          int? sampledChunks = null, double? maxCompensation = null, int maxPatterns = 4096,
                                          Compensation compensation = Compensation.LossAndCache)
    {
        model.zero_grad();
        var reference = Gradients(model, () => new FullBackprop().Run(model, batch));
        var step = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = chunkSize, Compensation = compensation, MaxCompensation = maxCompensation });
        int k = step.ChunkCount(batch.Length);
        int t = sampledChunks ?? k;
        Dictionary<string, Tensor> actual;
        int runs = 1;
        switch (strategy)
        {
            case GradientCheckStrategy.Seco:
                actual = Gradients(model, () => step.Run(model, batch, ChunkSelection.All(k)));
                break;
            case GradientCheckStrategy.Checkpoint:
                actual = Gradients(model, () => new LayerCheckpointing().Run(model, batch));
                break;
            default:
                var sampler = strategy == GradientCheckStrategy.SpacoFixed ? ChunkSampler.FixedBudget : ChunkSampler.Bernoulli;
                var patterns = Selections(k, t, sampler, compensation, maxCompensation, maxPatterns);
                runs = patterns.Count;
                actual = Expectation(model, batch, step, patterns);
                break;
        }
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
    /// Every selection a sampler can draw, with its probability and the factors of <paramref name="compensation"/>: the
    /// C(k, t) subsets for the fixed budget, the 2^k keep patterns for Bernoulli, the products of per-group subsets for
    /// the stratified sampler (which needs <paramref name="labelledChunks"/>). Refuses more than
    /// <paramref name="maxPatterns"/> (naming the limit in the message).
    /// </summary>
    public static IReadOnlyList<(ChunkSelection Selection, double Probability)> Selections(int chunks, int sampled, ChunkSampler sampler,
        Compensation compensation, double? maxCompensation, int maxPatterns = 4096, IReadOnlyList<bool>? labelledChunks = null)
    {
        if (sampled <= 0) throw new ArgumentOutOfRangeException(nameof(sampled), sampled, "sampled chunks must be positive.");
        var (lossFactor, cacheFactor) = ChunkSelection.Factors(chunks, sampled, sampler, compensation, maxCompensation);
        if (sampled >= chunks) return new[] { (ChunkSelection.All(chunks), 1.0) };
        if (sampler == ChunkSampler.Stratified && (labelledChunks is null || labelledChunks.Count != chunks))
            throw new ArgumentException($"The stratified sampler needs to know which of the {chunks} chunks hold labels.", nameof(labelledChunks));
        int labelledCount = labelledChunks?.Count(x => x) ?? 0;
        var (fromLabelled, fromOthers) = ChunkSelection.StratifiedBudget(labelledCount, chunks - labelledCount, sampled);
        double count = sampler switch
        {
            ChunkSampler.Bernoulli => Math.Pow(2, chunks),
            ChunkSampler.FixedBudget => Binomial(chunks, sampled),
            _ => Binomial(labelledCount, fromLabelled) * Binomial(chunks - labelledCount, fromOthers),
        };
        if (count > maxPatterns)
            throw new ArgumentOutOfRangeException(nameof(chunks), chunks,
                $"{chunks} chunks give {count:N0} {(sampler == ChunkSampler.Bernoulli ? "keep patterns" : "subsets")} to enumerate, more than the limit of {maxPatterns:N0}; use a shorter sequence or a larger chunk size.");
        // The enumeration walks all 2^k keep patterns, whatever the sampler keeps of them.
        if (chunks > 30)
            throw new ArgumentOutOfRangeException(nameof(chunks), chunks, $"{chunks} chunks are too many to enumerate (the limit is 30); use a shorter sequence or a larger chunk size.");
        double q = (double)sampled / chunks;
        var result = new List<(ChunkSelection, double)>();
        for (int mask = 0; mask < 1 << chunks; mask++)
        {
            var keep = Enumerable.Range(0, chunks).Select(j => (mask >> j & 1) == 1).ToArray();
            int kept = keep.Count(x => x);
            if (sampler == ChunkSampler.FixedBudget && kept != sampled) continue;
            if (sampler == ChunkSampler.Stratified &&
                (Enumerable.Range(0, chunks).Count(j => keep[j] && labelledChunks![j]) != fromLabelled || kept != fromLabelled + fromOthers)) continue;
            double probability = sampler == ChunkSampler.Bernoulli
                ? Math.Pow(q, kept) * Math.Pow(1 - q, chunks - kept)
                : 1 / count;
            result.Add((new ChunkSelection(keep, lossFactor, cacheFactor), probability));
        }
        return result;
    }

    /// <summary>Σ over selections of probability × the gradient Stage 2 leaves for that selection.</summary>
    public static Dictionary<string, Tensor> Expectation(CausalLM model, TokenBatch batch, ChunkwiseStep step, IReadOnlyList<(ChunkSelection Selection, double Probability)> selections)
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
    public static Dictionary<string, Tensor> Gradients(CausalLM model, Action run)
    {
        model.zero_grad();
        run();
        var result = TrainableParameters.Of(model).ToDictionary(p => p.Name,
            p => (p.Parameter.grad is { } g ? g.detach().clone() : zeros_like(p.Parameter)).DetachFromDisposeScope());
        model.zero_grad();
        return result;
    }

    /// <summary>Errors per parameter group: max |a − b| and max |a − b| / max |b|.</summary>
    public static IReadOnlyList<ParameterGroupError> Compare(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> reference)
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

    static double Binomial(int n, int k)
    {
        double result = 1;
        for (int i = 1; i <= k; i++) result = result * (n - k + i) / i;
        return result;
    }
}
