using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Chunkwise;

/// <summary>Options of chunk-wise optimization.</summary>
public sealed record ChunkwiseOptions
{
    /// <summary>The default <see cref="ChunkSize"/>: <see cref="SecoDefaults.ChunkSize"/>, 128 tokens (the paper finds gains flatten above 128).</summary>
    public const int DefaultChunkSize = SecoDefaults.ChunkSize;

    /// <summary>Tokens per chunk. Default <see cref="DefaultChunkSize"/>.</summary>
    public int ChunkSize { get; init; } = DefaultChunkSize;
    /// <summary>
    /// Chunks backpropagated per step (t). Null, or at least the step's chunk count k, means every chunk with factors 1:
    /// exact SeCO (the authors' code instead keeps scaling by k/t &lt; 1 when t &gt; k). One selection is drawn per
    /// batch and shared by all its sequences; k is the chunk count of the batch's padded length, ⌈L / ChunkSize⌉.
    /// </summary>
    public int? SampledChunks { get; init; }
    /// <summary>
    /// How the t chunks are drawn, one of the registered samplers (<see cref="ChunkSamplers"/>). Default
    /// <see cref="ChunkSampler.Bernoulli"/> (unbiased). For a sampler that uses labelled chunks
    /// (<see cref="ChunkSampler.Stratified"/>) a chunk counts as labelled when any sequence of the batch has a labelled
    /// target in it. Ignored when <see cref="CustomSampler"/> is set.
    /// </summary>
    public ChunkSampler Sampler { get; init; } = ChunkSampler.Bernoulli;
    /// <summary>
    /// A sampler of the user's own (or any <see cref="IChunkSampler"/>), run instead of <see cref="Sampler"/> when set.
    /// Default null. Options that hold one cannot be saved by name: the ML.NET stage and the command line take
    /// <see cref="Sampler"/> only.
    /// </summary>
    public IChunkSampler? CustomSampler { get; init; }
    /// <summary>The sampler that runs: <see cref="CustomSampler"/> when set, else the registered sampler of <see cref="Sampler"/>.</summary>
    public IChunkSampler EffectiveSampler => CustomSampler ?? ChunkSamplers.Get(Sampler);
    /// <summary>Which seeds the factor k/t multiplies. Default <see cref="Chunkwise.Compensation.LossAndCache"/>.</summary>
    public Compensation Compensation { get; init; } = Compensation.LossAndCache;
    /// <summary>Upper bound on the compensation factor in every mode (paper: 2), at least 1, or null for none.</summary>
    public double? MaxCompensation { get; init; }
    /// <summary>Seed of the chunk sampler and of dropout replay.</summary>
    public int Seed { get; init; }
    /// <summary>
    /// False cuts the gradient between chunks: each selected chunk is trained on its own loss with its prefix's
    /// keys/values treated as constants (a detached prefix), and no cache gradient is ever injected. An ablation
    /// (docs/QUALITY.md), not a training method: the gradient is then biased. Default true.
    /// </summary>
    public bool CrossChunkGradients { get; init; } = true;
    /// <summary>
    /// True rebuilds a Stage-2 chunk's graph one decoder layer at a time (activation checkpointing inside the chunk):
    /// a forward without a graph keeps each layer's input, and the backward recomputes one layer's graph from it. The
    /// chunk then holds one layer's activations instead of every layer's, for one more forward of the chunk; gradients
    /// are unchanged (docs/ENGINE.md). What makes large chunks fit: see docs/BENCHMARKS.md, <i>Memory</i>. Default false.
    /// </summary>
    public bool RecomputeLayers { get; init; }

    /// <summary>
    /// Tokens Stage 1 runs per forward pass, at least: whole chunks, together at least this many. Default 512
    /// (see <see cref="Stage1BlockSize(int, bool)"/>).
    /// </summary>
    public int Stage1MinimumTokens { get; init; } = 512;

    /// <summary>At most this many chunks per Stage-1 forward pass (<see cref="Stage1BlockSize(int, bool)"/>).</summary>
    public const int Stage1MaximumChunks = 8;

    /// <summary>
    /// Tokens per Stage-1 forward pass for a model of <paramref name="layers"/> decoder layers: whole chunks, at least
    /// <see cref="Stage1MinimumTokens"/>, and, when the attention runs fused (<paramref name="fusedAttention"/>) and
    /// without <see cref="RecomputeLayers"/>, as many chunks as ¾ of the layers (at most <see cref="Stage1MaximumChunks"/>). Stage 1 keeps no graph and holds one layer's transients at a time
    /// (about seven rows of the MLP's width per token, as the memory model's fit to measured peaks has it), while Stage
    /// 2's chunk holds the graph of every layer (about three such rows per token and layer): with the cap, a block costs
    /// no more memory than the step needs anyway (<see cref="StepMemory"/> predicts whichever of the two is the peak),
    /// and each pass reads every weight once and dispatches its operations once for the whole block instead of once per
    /// chunk. With recompute, Stage 2 holds one layer's graph, and the blockwise attention holds a block's own
    /// rows × rows scores, so in either case the block stays near one chunk. The cache
    /// holds the same values up to rounding. With dropout to replay, Stage 1 goes chunk by chunk: each chunk's masks
    /// come from its own seed. The benchmark's chunked inference runs in these blocks too, so SpaCO is compared with the
    /// same pass.
    /// </summary>
    public int Stage1BlockSize(int layers, bool fusedAttention)
    {
        int chunks = Math.Max(1, (Stage1MinimumTokens + ChunkSize - 1) / ChunkSize);
        if (fusedAttention && !RecomputeLayers) chunks = Math.Max(chunks, Math.Min(Stage1MaximumChunks, 3 * layers / 4));
        return ChunkSize * chunks;
    }

    /// <summary>Throws an <see cref="OptionException"/> naming the first option out of range.</summary>
    public void Validate()
    {
        if (ChunkSize <= 0) throw new OptionException(nameof(ChunkSize), ChunkSize, "{ChunkSize} must be at least 1");
        if (SampledChunks is <= 0) throw new OptionException(nameof(SampledChunks), SampledChunks, "{SampledChunks} must be at least 1 (or null for exact SeCO)");
        if (Stage1MinimumTokens <= 0) throw new OptionException(nameof(Stage1MinimumTokens), Stage1MinimumTokens, "{Stage1MinimumTokens} must be at least 1");
        if (MaxCompensation is double cap && !(cap >= 1)) throw new OptionException(nameof(MaxCompensation), cap, "{MaxCompensation} must be at least 1 (or null)");
        if (CustomSampler is null && !Enum.IsDefined(Sampler)) throw new OptionException(nameof(Sampler), Sampler, "{Sampler} is not a known sampler");
        if (!Enum.IsDefined(Compensation)) throw new OptionException(nameof(Compensation), Compensation, "{Compensation} is not a known mode");
        if (EffectiveSampler.Rejects(Compensation) is string reason) throw new OptionException(nameof(Compensation), Compensation, reason);
    }
}

/// <summary>
/// SeCO and SpaCO (docs/ALGORITHM.md). Stage 1 runs every chunk without a graph and caches its keys/values;
/// Stage 2 walks the selected chunks backwards, rebuilding one chunk's graph at a time on top of the cached prefix
/// and backpropagating its loss together with the gradient later chunks sent to its cache.
/// </summary>
public sealed class ChunkwiseStep : IResumableTrainingStep
{
    // Every step draws from a generator seeded by (Seed, steps run so far), so the whole random state is one counter
    // that a resumed run restores.
    long _stepsRun;

    /// <summary>The options.</summary>
    public ChunkwiseOptions Options { get; }

    /// <inheritdoc/>
    public int? ChunkSize => Options.ChunkSize;

    /// <summary>Diagnostic hook: called after each Stage-2 chunk has been backpropagated and its graph released.</summary>
    public Action<int>? AfterChunkBackward { get; set; }

    /// <summary>Diagnostic: when set, each step's phases are timed into it (with a device synchronisation at each boundary).</summary>
    public StepPhases? Phases { get; set; }

    /// <summary>Creates the step.</summary>
    public ChunkwiseStep(ChunkwiseOptions options)
    {
        options.Validate();
        Options = options;
    }

    /// <inheritdoc/>
    public string Name => Options.SampledChunks is null ? "seco" : $"spaco-{Options.EffectiveSampler.Name}";

    /// <summary>Chunks a sequence of <paramref name="length"/> tokens is split into.</summary>
    public int ChunkCount(long length) => (int)((length + Options.ChunkSize - 1) / Options.ChunkSize);

    /// <inheritdoc/>
    public StepResult Run(CausalLM model, TokenBatch batch)
    {
        var random = new Random(StepSeed(Options.Seed, _stepsRun++));
        int k = ChunkCount(batch.Length);
        var sampler = Options.EffectiveSampler;
        var selection = sampler.Sample(k, Options.SampledChunks ?? k, Options.Compensation, Options.MaxCompensation, random,
            sampler.UsesLabelledChunks ? batch.ChunksWithLabels(Options.ChunkSize) : null);
        return Run(model, batch, selection, random.NextInt64());
    }

    /// <summary>Runs Stage 1 and Stage 2 for a given selection of chunks (used by the expectation checks).</summary>
    public StepResult Run(CausalLM model, TokenBatch batch, ChunkSelection selection) => Run(model, batch, selection, Options.Seed);

    /// <summary>
    /// A seed for step <paramref name="step"/>: SplitMix64 of (seed, step). Not HashCode.Combine, whose values change
    /// from process to process, which would make a resumed or repeated run sample other chunks.
    /// </summary>
    internal static int StepSeed(int seed, long step)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step + 1);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (int)((z ^ (z >> 31)) & int.MaxValue);
    }

    /// <inheritdoc/>
    public byte[] SaveState() => BitConverter.GetBytes(_stepsRun);

    /// <inheritdoc/>
    public void LoadState(byte[] state) => _stepsRun = BitConverter.ToInt64(state);

    StepResult Run(CausalLM model, TokenBatch batch, ChunkSelection selection, long dropoutSeed)
    {
        int k = ChunkCount(batch.Length);
        if (selection.Keep.Length != k) throw new ArgumentException($"The selection covers {selection.Keep.Length} chunks; the batch has {k}.", nameof(selection));
        using var scope = NewDisposeScope();
        using var targets = batch.LabelledTargets(Options.ChunkSize);
        using var cache = new KvCache(model.Config, batch.BatchSize, batch.Length, model.DType, model.Device) { Phases = Phases };
        var pass = new Pass(model, batch, targets, cache, selection, model.training && model.HasStochasticLayers ? dropoutSeed : null);

        var lossSum = zeros(1, dtype: CausalLM.ScoreType(model.DType), device: model.Device);
        using (Phases?.Measure(StepPhases.Stage1)) Stage1(pass, lossSum);
        Stage2(pass, lossSum);
        // The step's one read from the device.
        return new StepResult(lossSum.to(ScalarType.Float64).item<double>() / targets.Count, targets.Count, k, selection.Count, selection.LossFactor, selection.CacheFactor);
    }

    /// <summary>What both stages of one step share.</summary>
    sealed record Pass(CausalLM Model, TokenBatch Batch, LabelledTargets Targets, KvCache Cache, ChunkSelection Selection, long? DropoutSeed)
    {
        public long Start(int chunk) => (long)chunk * Targets.ChunkSize;
        public long Size(int chunk) => Math.Min(Targets.ChunkSize, Batch.Length - Start(chunk));
        public Tensor Ids(int chunk) => Batch.InputIds.narrow(1, Start(chunk), Size(chunk));
        public Tensor Loss(Tensor hidden, int chunk) => Model.LossSum(hidden, Targets.TargetsOf(chunk), Targets.PositionsOf(chunk));

        /// <summary>Reseeds dropout per layer for <paramref name="chunk"/>, when there is dropout to replay (<see cref="ReplayDropout"/>).</summary>
        public Action<int>? DropoutOf(int chunk) =>
            DropoutSeed is long seed ? layer => ReplayDropout(seed, chunk, layer, Model.Config.NumHiddenLayers) : null;
    }

    /// <summary>
    /// Stage 1: m'_j = f(x_j; m'_1..m'_{j-1}) for every chunk j, no graph, into the cache. It also yields the exact loss
    /// of the chunks Stage 2 skips; a selected chunk's loss comes from its Stage-2 forward (the same computation), so a
    /// block of selected chunks runs only as far as its cache (up to the last layer's keys/values). No chunk reads the
    /// last chunk's cache, so a selected last chunk is left to Stage 2 altogether. Without dropout to replay, a forward
    /// pass runs a block of several chunks (<see cref="ChunkwiseOptions.Stage1BlockSize(int, bool)"/>) and each unselected chunk's
    /// loss is taken from its slice of the block; with dropout a block is one chunk, so a block's index is its chunk's.
    /// </summary>
    void Stage1(Pass pass, Tensor lossSum)
    {
        var keep = pass.Selection.Keep;
        int chunks = keep[^1] ? keep.Length - 1 : keep.Length;
        if (chunks == 0) return;
        var model = pass.Model;
        bool fused = FusedChunkAttention.ServesModel(model, pass.Batch.Length);
        int chunksPerBlock = pass.DropoutSeed is null ? Options.Stage1BlockSize(model.Config.NumHiddenLayers, fused) / Options.ChunkSize : 1;
        IEnumerable<int> ChunksOf(int block) => Enumerable.Range(block * chunksPerBlock, Math.Min(chunksPerBlock, chunks - block * chunksPerBlock));

        using var _ = no_grad();
        var ids = pass.Batch.InputIds.narrow(1, 0, Math.Min(pass.Batch.Length, pass.Start(chunks)));
        Action<int, int>? dropout = pass.DropoutSeed is null ? null : (block, layer) => pass.DropoutOf(block)!(layer);
        foreach (var block in pass.Model.Prefill(ids, pass.Cache, chunksPerBlock * Options.ChunkSize, dropout, hiddenNeeded: b => ChunksOf(b).Any(j => !keep[j])))
            foreach (int j in ChunksOf(block.Index).Where(j => !keep[j]))
                lossSum.add_(pass.Loss(block.Hidden.narrow(1, pass.Start(j) - block.Start, pass.Size(j)), j));
    }

    /// <summary>
    /// Stage 2: for i = k..1 over the selected chunks, rebuild chunk i's graph on the cached prefix and backpropagate
    /// c·J_i together with b·(the gradient later chunks sent to m'_i) (<see cref="ChunkBackward"/>). Attention adds the
    /// gradient of every prefix key/value to the cache's gradient buffers and, in each chunk's backward, b times what
    /// they hold for the chunk to the gradient of the chunk's own keys/values. Without cross-chunk gradients the cache
    /// keeps no gradient buffers: attention then reads the prefix as constants.
    /// </summary>
    void Stage2(Pass pass, Tensor lossSum)
    {
        var selection = pass.Selection;
        pass.Cache.TrackGradients(Options.CrossChunkGradients, selection.CacheFactor);
        using var lossSeed = full(Array.Empty<long>(), selection.LossFactor / pass.Targets.Count, dtype: CausalLM.ScoreType(pass.Model.DType), device: pass.Model.Device);
        bool cacheHasGradient = false;
        for (int i = selection.Keep.Length - 1; i >= 0; i--)
        {
            if (!selection.Keep[i]) continue;
            using (var chunkScope = NewDisposeScope())
            {
                int chunk = i;
                var backward = new ChunkBackward(pass.Model, pass.Cache, pass.Ids(i), pass.Start(i), hidden => pass.Loss(hidden, chunk),
                    lossSeed, CacheHasGradient: cacheHasGradient, BeforeLayer: pass.DropoutOf(i), Phases);
                var (chunkLoss, backpropagated) = Options.RecomputeLayers ? backward.LayerByLayer() : backward.WholeGraph();
                using (no_grad()) lossSum.add_(chunkLoss);
                cacheHasGradient |= Options.CrossChunkGradients && backpropagated && i > 0;
            }
            AfterChunkBackward?.Invoke(i);
        }
        pass.Cache.TrackGradients(false);
    }

    /// <summary>
    /// Stage 2 must rebuild exactly the activations of Stage 1, so with stochastic layers (LoRA dropout) both stages
    /// draw the same masks: the generator is reseeded per (step, chunk, layer), so that a layer rebuilt on its own
    /// (<see cref="ChunkwiseOptions.RecomputeLayers"/>) draws what it drew inside the whole chunk. With dropout Stage 1
    /// runs one chunk per pass, so a pass's index is its chunk's.
    /// </summary>
    static void ReplayDropout(long stepSeed, int chunk, int layer, int layers) => random.manual_seed(stepSeed + (long)chunk * layers + layer);
}
