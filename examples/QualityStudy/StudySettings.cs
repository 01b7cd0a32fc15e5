using Microsoft.ML.Seco.Chunkwise;

namespace Microsoft.ML.Seco.Examples.QualityStudy;

/// <summary>One training method of the study: SeCO, a SpaCO variant, or the detached-prefix ablation.</summary>
/// <param name="Id">File-name slug.</param>
/// <param name="Label">Legend and table label.</param>
/// <param name="BudgetDivisor">t = k / divisor chunks backpropagated; null = every chunk.</param>
/// <param name="Sampler">SpaCO's sampler.</param>
/// <param name="Compensation">What the factor k/t multiplies.</param>
/// <param name="CrossChunkGradients">False = the ablation (each chunk trained on a detached prefix).</param>
public sealed record Method(string Id, string Label, int? BudgetDivisor, ChunkSampler Sampler, Compensation Compensation, bool CrossChunkGradients = true)
{
    /// <summary>The study's methods, in table order.</summary>
    public static readonly IReadOnlyList<Method> All =
    [
        new("seco", "SeCO (exact)", null, ChunkSampler.Bernoulli, Compensation.LossAndCache),
        new("fixed8-loss", "SpaCO 1/8 fixed, loss-only", 8, ChunkSampler.FixedBudget, Compensation.LossOnly),
        new("fixed8-both", "SpaCO 1/8 fixed, loss+cache", 8, ChunkSampler.FixedBudget, Compensation.LossAndCache),
        new("bernoulli8", "SpaCO 1/8 Bernoulli (unbiased)", 8, ChunkSampler.Bernoulli, Compensation.LossAndCache),
        new("fixed4-loss", "SpaCO 1/4 fixed, loss-only", 4, ChunkSampler.FixedBudget, Compensation.LossOnly),
        new("fixed4-both", "SpaCO 1/4 fixed, loss+cache", 4, ChunkSampler.FixedBudget, Compensation.LossAndCache),
        new("bernoulli4", "SpaCO 1/4 Bernoulli (unbiased)", 4, ChunkSampler.Bernoulli, Compensation.LossAndCache),
        new("detached", "Ablation: detached prefix", null, ChunkSampler.Bernoulli, Compensation.LossAndCache, CrossChunkGradients: false),
    ];

    /// <summary>The budget t for a sequence of <paramref name="chunks"/> chunks, or null for every chunk.</summary>
    public int? SampledChunks(int chunks) => BudgetDivisor is int d ? Math.Max(1, chunks / d) : null;
}

/// <summary>The sizes of one study (the full one or the --quick smoke run).</summary>
public sealed record StudySettings
{
    /// <summary>"full" or "quick": names the cache and output folders.</summary>
    public required string Name { get; init; }
    /// <summary>Decoder layers of the base model.</summary>
    public int Layers { get; init; } = 4;
    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; init; } = 128;
    /// <summary>Attention heads (as many key/value heads).</summary>
    public int Heads { get; init; } = 4;
    /// <summary>MLP width.</summary>
    public int IntermediateSize { get; init; } = 384;

    /// <summary>Context of pretraining (the base model never sees a position beyond it).</summary>
    public int PretrainLength { get; init; } = 256;
    /// <summary>Sequences per pretraining step.</summary>
    public int PretrainBatch { get; init; } = 16;
    /// <summary>Optimizer steps of pretraining.</summary>
    public int PretrainSteps { get; init; } = 600;
    /// <summary>Peak learning rate of pretraining (every weight trained).</summary>
    public double PretrainLearningRate { get; init; } = 3e-3;

    /// <summary>Context of the extension runs.</summary>
    public int Length { get; init; } = 4096;
    /// <summary>Chunk size.</summary>
    public int ChunkSize { get; init; } = 128;
    /// <summary>Optimizer steps (= sequences: batch 1, no accumulation) of every extension run.</summary>
    public int Updates { get; init; } = 64;
    /// <summary>The learning-rate grid, run with the first seed.</summary>
    public IReadOnlyList<double> LearningRates { get; init; } = [3e-3, 1e-2, 3e-2];
    /// <summary>Seeds (LoRA initialisation and chunk sampling); the first runs the grid, the others the best rate.</summary>
    public IReadOnlyList<int> Seeds { get; init; } = [0, 1];
    /// <summary>Held-out windows per corpus (SOTU addresses never trained on, Moby-Dick).</summary>
    public int HeldOutWindows { get; init; } = 8;

    /// <summary>
    /// The context-extension study scores held-out text at this length (twice the extension's): positions the base
    /// model was trained on, those the extension trained on, and as many again that neither saw.
    /// </summary>
    public int EvaluationLength => 2 * Length;
    /// <summary>The context-extension study's needle grid: prompt lengths in tokens.</summary>
    public IReadOnlyList<int> NeedleLengths { get; init; } = [256, 512, 1024, 2048, 4096, 8192];
    /// <summary>The needle grid's depths.</summary>
    public IReadOnlyList<double> NeedleDepths { get; init; } = Enumerable.Range(0, 11).Select(i => i / 10.0).ToArray();

    /// <summary>Chunks per extension sequence.</summary>
    public int Chunks => Length / ChunkSize;

    /// <summary>The full study: about an hour of this project's 2-core machine.</summary>
    public static StudySettings Full => new() { Name = "full" };

    /// <summary>A smoke run of every code path in a few minutes; its numbers mean nothing.</summary>
    public static StudySettings Quick => new()
    {
        Name = "quick", Layers = 2, HiddenSize = 64, IntermediateSize = 128, PretrainSteps = 30, PretrainBatch = 8,
        Length = 1024, Updates = 6, HeldOutWindows = 2, NeedleLengths = [128, 256, 1024, 2048], NeedleDepths = [0, 0.5, 1],
    };

    /// <summary>A key of everything the base model depends on: a cached model is reused only by the same settings.</summary>
    public string BaseModelKey =>
        $"L{Layers}-H{HiddenSize}-A{Heads}-I{IntermediateSize}-ctx{PretrainLength}-b{PretrainBatch}-s{PretrainSteps}-lr{PretrainLearningRate:G3}";
}
