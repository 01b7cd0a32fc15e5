using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Training;

/// <summary>The training (or scoring) strategies whose memory <see cref="StepMemory"/> predicts.</summary>
public enum MemoryStrategy
{
    /// <summary>Plain training: the whole sequence's graph, one backward (<see cref="Baselines.FullBackprop"/>).</summary>
    FullBackprop,
    /// <summary>Layer-wise gradient checkpointing over the whole sequence (<see cref="Baselines.LayerCheckpointing"/>).</summary>
    LayerCheckpointing,
    /// <summary>SeCO: one chunk's graph at a time over the cache and its gradient.</summary>
    Seco,
    /// <summary>SpaCO: the same peak as SeCO (a sampled chunk's graph is a chunk's graph), less work.</summary>
    Spaco,
    /// <summary>Chunked inference (scoring, Stage 1 alone): the cache and one forward block without a graph.</summary>
    Inference,
}

/// <summary>What a run asks of its device, for <see cref="StepMemory.Predict"/>.</summary>
public sealed record StepMemoryQuery
{
    /// <summary>The architecture.</summary>
    public required ModelConfig Config { get; init; }
    /// <summary>Parameter dtype.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;
    /// <summary>The strategy.</summary>
    public MemoryStrategy Strategy { get; init; } = MemoryStrategy.Seco;
    /// <summary>Tokens per sequence (the padded length of the run's longest batch).</summary>
    public long Length { get; init; }
    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Tokens per chunk (chunk-wise strategies and inference).</summary>
    public int ChunkSize { get; init; } = SecoDefaults.ChunkSize;
    /// <summary><see cref="ChunkwiseOptions.RecomputeLayers"/>.</summary>
    public bool RecomputeLayers { get; init; }
    /// <summary>The adapters; null trains every weight (full fine-tuning).</summary>
    public LoraConfig? Lora { get; init; } = new();
    /// <summary>Bytes of logits the head holds at once (<see cref="CausalLM.LossSum"/>).</summary>
    public long LossPieceBytes { get; init; } = CausalLM.DefaultLossPieceBytes;
    /// <summary>True when an AdamW optimizer holds two moments per trainable parameter (training); false for a bare step.</summary>
    public bool OptimizerState { get; init; } = true;
    /// <summary>True on a CUDA device, where the blockwise attention over the prefix runs in larger blocks (<see cref="AttentionOptions.BlockFor"/>).</summary>
    public bool Cuda { get; init; }
    /// <summary>
    /// The attention kernel (<see cref="CausalLM.Attention"/>): <see cref="AttentionKernel.Auto"/> is predicted as the
    /// fused kernels, which serve every model without a sliding window that cuts the prefix.
    /// </summary>
    public AttentionKernel Attention { get; init; } = AttentionKernel.Auto;
}

/// <summary>
/// A predicted peak, term by term, in bytes. <see cref="Step"/> is what one step adds above what the run holds between
/// steps (what <c>seco bench</c> measures); <see cref="Total"/> is the device memory the run needs.
/// </summary>
/// <param name="Weights">The base model's weights.</param>
/// <param name="Adapters">LoRA's A and B matrices (0 in full fine-tuning).</param>
/// <param name="TrainingState">Gradients and AdamW's two moments of the trainable parameters.</param>
/// <param name="Cache">The key/value cache of the sequence (chunk-wise strategies and inference).</param>
/// <param name="CacheGradient">Its gradient buffers (SeCO, SpaCO).</param>
/// <param name="Activations">What the graph (or the forward's transients) holds at the step's peak.</param>
/// <param name="Head">The output layer and loss at that moment: a piece of logits, and the gradient of the hidden states.</param>
public sealed record StepMemoryEstimate(long Weights, long Adapters, long TrainingState, long Cache, long CacheGradient, long Activations, long Head)
{
    /// <summary>What one step adds at its peak: cache, its gradient, activations and head.</summary>
    public long Step => Cache + CacheGradient + Activations + Head;
    /// <summary>Everything: weights, adapters, training state and the step's peak.</summary>
    public long Total => Weights + Adapters + TrainingState + Step;
}

/// <summary>
/// Predicts a step's peak memory from the model's shape, without running it (<c>seco bench --predict</c>, and the
/// pre-flight check of the stage and <c>seco train</c>). The terms follow what each strategy keeps alive: the tensors
/// autograd saves per decoder layer for the rows whose graph exists (docs/ENGINE.md, <i>Memory layout</i>), the cache
/// and its gradient, the head's pieces, and the backward's transients of one layer. Checked against measured peaks in
/// docs/BENCHMARKS.md (<i>Memory model</i>).
/// </summary>
public static class StepMemory
{
    // The backward of one layer holds transients of a few [rows × intermediate] tensors (the gradients of the gate, up
    // and product) beside what is saved; fitted to the measured peaks in docs/BENCHMARKS.md, Memory model.
    const double BackwardIntermediates = 4;
    // A forward without a graph holds the gate, up, SiLU and product of one layer's MLP, in blocks of Stage 1's size, and more
    // than these four: refitted to 7 on the measured peaks of Stage 1's larger blocks (docs/BENCHMARKS.md, Memory model); and
    // about one and a half score blocks of a blockwise attention (the scores, exponentiated in place, and the mask of a cut block).
    const double ForwardIntermediates = 7;
    const double ForwardScoreBlocks = 1.5;
    // The chunk-wise attention's backward holds a score block's probabilities, the product they scale and the mask of a
    // block the causal rule cuts: about two and a half score blocks.
    const double ScoreBlocks = 2.5;
    // The fused attention's two parts' outputs, their combination and the kernels' buffers, in the score dtype (fitted).
    const double FusedOutputCopies = 8;

    /// <summary>The predicted peak of <paramref name="query"/>.</summary>
    public static StepMemoryEstimate Predict(StepMemoryQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Length < 1) throw new ArgumentOutOfRangeException(nameof(query), query.Length, "Length must be at least 1.");
        if (query.ChunkSize < 1) throw new ArgumentOutOfRangeException(nameof(query), query.ChunkSize, "ChunkSize must be at least 1.");
        var c = query.Config;
        double b = ElementSize(query.DType), s = ElementSize(CausalLM.ScoreType(query.DType));
        long batch = query.BatchSize, length = query.Length, layers = c.NumHiddenLayers;
        long weights = (long)(ParameterCount(c) * b);
        long adapters = query.Lora is { } lora ? (long)(AdapterParameterCount(c, lora) * b) : 0;
        long trainable = query.Lora is null ? weights : adapters;
        long trainingState = trainable * (query.OptimizerState ? 3 : 1);
        long cachePerToken = CacheBytesPerToken(c, query.DType, query.BatchSize);

        // Rows whose graph (or forward) is alive at once.
        long chunkRows = Math.Min(query.ChunkSize, length) * batch, sequenceRows = length * batch;
        bool fused = FusedChunkAttention.ServesSequences(c, query.Attention, length);
        long blockRows = Math.Min(new ChunkwiseOptions { ChunkSize = query.ChunkSize, RecomputeLayers = query.RecomputeLayers }.Stage1BlockSize(c.NumHiddenLayers, fused), length) * batch;
        double layerInput = c.HiddenSize * b;
        double Backward(long rows) => BackwardIntermediates * rows * c.IntermediateSize * s;
        // The head: a piece's logits in the score dtype (and, with a graph, their gradient cast to the weight's dtype
        // where that differs), transient; the final norm's output and, with a graph, the gradient of the hidden states it
        // hands back (and of the output weight in full fine-tuning), held into the backward.
        // A piece holds its logits and the log-sum-exp's (or log-softmax's) temporary of the same size.
        double HeadPiece(long rows, bool graph) =>
            Math.Min(rows, LinearCrossEntropy.RowsPerPiece(c.VocabSize, CausalLM.ScoreType(query.DType), query.LossPieceBytes))
            * c.VocabSize * (2 * s + (graph && b != s ? b : 0));
        double HeadHeld(long rows, bool graph) =>
            rows * c.HiddenSize * (b + (graph ? b + s : 0)) + (graph && query.Lora is null ? c.VocabSize * c.HiddenSize * b : 0);
        // Blockwise attention: a chunk's score block, its queries (every head) against its own keys or one prefix block,
        // whichever is larger. Fused attention holds no score block: its backward returns one layer's prefix key and value
        // gradients before they are added to the cache's (a layer's share of the cache gradient), and either pass holds a few
        // [rows × heads × head dim] outputs.
        double ScoreBlock(long rows)
        {
            long perSequence = rows / batch;
            long prefixBlock = Math.Min(length - perSequence, AttentionOptions.Default.BlockFor(rows * c.NumAttentionHeads, (int)s, query.Cuda));
            return rows * c.NumAttentionHeads * Math.Max(perSequence, prefixBlock) * s;
        }
        double FusedOutputs(long rows) => FusedOutputCopies * rows * c.NumAttentionHeads * c.HeadDim * s;
        double AttentionBackward(long rows) => fused ? (double)cachePerToken / layers * length + FusedOutputs(rows) : ScoreBlocks * ScoreBlock(rows);
        double ForwardTransient(long rows) =>
            rows * ForwardIntermediates * c.IntermediateSize * b + (fused ? FusedOutputs(rows) : ForwardScoreBlocks * ScoreBlock(rows));

        // The layers' transients (a backward's or a forward's) and the head's piece come at different moments: the peak is
        // what is held plus the largest of them, counted under activations unless the head's piece is the largest.
        long cache = 0, cacheGradient = 0;
        double held, transient, piece, headHeld;
        switch (query.Strategy)
        {
            case MemoryStrategy.FullBackprop:
                held = layers * sequenceRows * SavedPerRow(c, query, prefix: false);
                transient = Backward(sequenceRows);
                (piece, headHeld) = (HeadPiece(sequenceRows, graph: true), HeadHeld(sequenceRows, graph: true));
                break;
            case MemoryStrategy.LayerCheckpointing:
                held = (layers + 1) * sequenceRows * layerInput + sequenceRows * SavedPerRow(c, query, prefix: false);
                transient = Backward(sequenceRows);
                // The head runs first, on the last layer's saved output; the gradient it hands down is what stays.
                (piece, headHeld) = (HeadPiece(sequenceRows, graph: true), sequenceRows * layerInput);
                break;
            case MemoryStrategy.Seco or MemoryStrategy.Spaco:
                cache = cachePerToken * length;
                cacheGradient = cache;
                held = query.RecomputeLayers
                    ? (layers + 1) * chunkRows * layerInput + chunkRows * SavedPerRow(c, query, prefix: true)
                    : layers * chunkRows * SavedPerRow(c, query, prefix: true);
                transient = Math.Max(Backward(chunkRows), AttentionBackward(chunkRows));
                (piece, headHeld) = (HeadPiece(chunkRows, graph: true), HeadHeld(chunkRows, graph: true));
                // Stage 1 holds the cache without its gradient and one block's forward: with short sequences and small
                // chunks, that is the step's peak.
                double stage1 = ForwardTransient(blockRows);
                if (stage1 > cacheGradient + held + Math.Max(transient, piece) + headHeld)
                    (cacheGradient, held, transient, piece, headHeld) = (0, 0, stage1, 0, 0);
                break;
            case MemoryStrategy.Inference:
                cache = cachePerToken * length;
                held = 0;
                transient = ForwardTransient(blockRows);
                (piece, headHeld) = (HeadPiece(blockRows, graph: false), HeadHeld(blockRows, graph: false));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(query), query.Strategy, "Unknown strategy.");
        }
        double activations = held + Math.Max(transient, 0), head = headHeld + Math.Max(0, piece - transient);
        return new StepMemoryEstimate(weights, adapters, trainingState, cache, cacheGradient, (long)activations, (long)head);
    }

    /// <summary>
    /// Bytes autograd saves per row and decoder layer: the norms' float inputs, the inputs of every projection whose weight
    /// or adapter trains (an adapter's A reads its projection's input), the attention's queries, keys, values, output and
    /// row log-sum-exp (keys/values repeated per query head in the fused whole-sequence attention), and the MLP's gate,
    /// its SiLU and the up projection.
    /// </summary>
    static double SavedPerRow(ModelConfig c, StepMemoryQuery query, bool prefix)
    {
        double b = ElementSize(query.DType), s = ElementSize(CausalLM.ScoreType(query.DType));
        bool Trains(string projection) => query.Lora is not { } lora || lora.TargetModules.Contains(projection);
        double q = c.NumAttentionHeads * c.HeadDim, kv = prefix ? c.NumKeyValueHeads * c.HeadDim : q;
        double saved = 2 * c.HiddenSize * s                                          // the two norms' inputs
            + (Trains("q_proj") || Trains("k_proj") || Trains("v_proj") ? c.HiddenSize * b : 0)
            + (2 * q + 2 * kv) * b + c.NumAttentionHeads * s                         // attention: q, k, v, output, lse
            + (Trains("o_proj") ? q * b : 0)
            + (Trains("gate_proj") || Trains("up_proj") ? c.HiddenSize * b : 0)
            + 3 * c.IntermediateSize * b                                             // gate, silu(gate), up
            + (Trains("down_proj") ? c.IntermediateSize * b : 0);
        return saved;
    }

    /// <summary>
    /// The longest length (a multiple of <paramref name="granularity"/>, at most <paramref name="limit"/>) whose predicted
    /// <see cref="StepMemoryEstimate.Total"/> fits in <paramref name="budget"/> bytes, or 0 when not even
    /// <paramref name="granularity"/> tokens fit. Every term grows with the length, so bisection finds it.
    /// </summary>
    public static long LongestWithin(StepMemoryQuery query, long budget, int granularity, long limit = 1L << 22)
    {
        ArgumentNullException.ThrowIfNull(query);
        bool Fits(long length) => Predict(query with { Length = length }).Total <= budget;
        if (!Fits(granularity)) return 0;
        long lo = granularity, hi = limit + granularity;
        while (hi - lo > granularity)
        {
            long mid = lo + (hi - lo) / 2 / granularity * granularity;
            if (mid <= lo) mid = lo + granularity;
            if (Fits(mid)) lo = mid; else hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// Weights of the base model: q, k, v, o, gate, up, down and two norms per layer, the embedding, the output layer
    /// unless tied, the final norm; q/k/v biases where the family has them.
    /// </summary>
    public static long ParameterCount(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.HiddenSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        long layer = h * q + 2 * h * kv + q * h + 3 * h * config.IntermediateSize + 2 * h + (config.QkvBias ? q + 2 * kv : 0);
        return config.NumHiddenLayers * layer + (config.TieWordEmbeddings ? 1 : 2) * (long)config.VocabSize * h + h;
    }

    /// <summary>LoRA's A [r, in] and B [out, r] over the target projections of every layer.</summary>
    public static long AdapterParameterCount(ModelConfig config, LoraConfig lora)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(lora);
        long h = config.HiddenSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim, i = config.IntermediateSize;
        long PerLayer(string name) => name switch
        {
            "q_proj" => h + q, "k_proj" or "v_proj" => h + kv, "o_proj" => q + h,
            "gate_proj" or "up_proj" => h + i, "down_proj" => i + h,
            _ => 0,
        };
        return config.NumHiddenLayers * lora.Rank * lora.TargetModules.Sum(PerLayer);
    }

    /// <summary>
    /// Key/value cache bytes per token: 2 (keys and values) × layers × kv heads × head dim × element size × batch.
    /// </summary>
    public static long CacheBytesPerToken(ModelConfig config, ScalarType dtype, int batch = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        return 2L * config.NumHiddenLayers * config.NumKeyValueHeads * config.HeadDim * ElementSize(dtype) * batch;
    }

    /// <summary>Bytes one element of a model dtype takes.</summary>
    public static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => 8,
        ScalarType.Float32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        _ => throw new ArgumentException($"dtype {dtype} is not a model dtype.", nameof(dtype)),
    };
}
