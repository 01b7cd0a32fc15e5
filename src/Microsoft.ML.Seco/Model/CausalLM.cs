using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

// A Llama-family decoder (llama, mistral, qwen2) in one file, after Hugging Face's modeling_llama.py and
// modeling_qwen2.py. Module and parameter names are Hugging Face's, so checkpoints and PEFT adapters map by name.
// Every forward works on one chunk: token ids at absolute positions [start, start + T) attending to the cached
// keys/values of positions [0, start) and causally to themselves. A whole sequence is the chunk with start 0.

// Fields carry Hugging Face's snake_case names: TorchSharp's Module.to() and the checkpoint loader find them by name.
#pragma warning disable IDE1006, CA1051

/// <summary>Per-chunk inputs shared by all layers: where the chunk is and its rotary cos/sin (views of the model's <see cref="RotaryTable"/>).</summary>
internal sealed class ChunkPositions : IDisposable
{
    /// <summary>Absolute position of the chunk's first token.</summary>
    public long Start { get; }
    /// <summary>Tokens in the chunk.</summary>
    public long Length { get; }
    /// <summary>cos of the chunk's rotary angles, [length, head_dim].</summary>
    public Tensor Cos { get; }
    /// <summary>sin of the chunk's rotary angles with rotate_half's sign, [−sin ; sin], [length, head_dim].</summary>
    public Tensor SignedSin { get; }

    internal ChunkPositions(long start, long length, Tensor cos, Tensor signedSin) =>
        (Start, Length, Cos, SignedSin) = (start, length, cos, signedSin);

    /// <inheritdoc/>
    public void Dispose()
    {
        Cos.Dispose();
        SignedSin.Dispose();
    }
}

/// <summary>One block of <see cref="CausalLM.Prefill"/>: its index, first position, length and final-norm hidden states.</summary>
public readonly record struct PrefilledBlock(int Index, long Start, long Length, Tensor Hidden);

/// <summary>Root-mean-square layer norm: weight · x / sqrt(mean(x²) + eps), computed in at least float32.</summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>The per-feature scale.</summary>
    public Parameter weight;
    readonly double _eps;

    /// <summary>Creates a norm of <paramref name="size"/> features with unit weight.</summary>
    public RmsNorm(long size, double eps, ScalarType dtype, Device device) : base("RmsNorm")
    {
        weight = new Parameter(ones(size, dtype: dtype, device: device), requires_grad: false);
        _eps = eps;
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var computeType = CausalLM.ScoreType(x.dtype);
        // In the model's dtype when that is already float32 or float64: no casts to dispatch.
        var h = x.dtype == computeType ? x : x.to(computeType);
        h = h * h.pow(2).mean(new long[] { -1 }, keepdim: true).add_(_eps).rsqrt_();
        return weight * (h.dtype == x.dtype ? h : h.to(x.dtype));
    }
}

/// <summary>
/// A plain linear projection y = W x (+ b) with Hugging Face's parameter names. Unlike nn.Linear it allocates its weight
/// uninitialised: a checkpoint or <see cref="CausalLM.InitializeRandom"/> fills it, so loading a large model does not
/// first draw random weights. Adapters replace it from outside (<see cref="CausalLM.ReplaceProjection"/>).
/// </summary>
internal sealed class Projection : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter? bias;

    public Projection(long inFeatures, long outFeatures, bool hasBias, ScalarType dtype, Device device) : base("Projection")
    {
        weight = new Parameter(empty(outFeatures, inFeatures, dtype: dtype, device: device), requires_grad: false);
        register_parameter(nameof(weight), weight);
        if (hasBias)
        {
            bias = new Parameter(zeros(outFeatures, dtype: dtype, device: device), requires_grad: false);
            register_parameter(nameof(bias), bias);
        }
    }

    public override Tensor forward(Tensor x) => nn.functional.linear(x, weight, bias);
}

/// <summary>
/// A layer whose forward draws random numbers in training mode (dropout). The chunk-wise engine asks the model for such
/// layers (<see cref="CausalLM.HasStochasticLayers"/>) because Stage 2 must replay Stage 1's draws exactly.
/// </summary>
internal interface IStochasticLayer
{
    /// <summary>True when the layer draws random numbers while the model is in training mode.</summary>
    bool IsStochastic { get; }
}

/// <summary>Multi-head attention with grouped key/value heads and rotary positions, over [cached prefix ; chunk].</summary>
internal sealed class Attention : nn.Module
{
    /// <summary>Projections, named as in Hugging Face: plain linear maps unless an adapter replaced them.</summary>
    public nn.Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;
    readonly ModelConfig _config;

    /// <summary>How a chunk attends over its prefix; set for the whole model through <see cref="CausalLM.Attention"/>.</summary>
    internal AttentionOptions Options { get; set; } = AttentionOptions.Default;

    /// <summary>Creates the projections for <paramref name="config"/>.</summary>
    public Attention(ModelConfig config, ScalarType dtype, Device device) : base("Attention")
    {
        _config = config;
        long h = config.HiddenSize, q = config.NumAttentionHeads * config.HeadDim, kv = config.NumKeyValueHeads * config.HeadDim;
        q_proj = new Projection(h, q, config.QkvBias, dtype, device);
        k_proj = new Projection(h, kv, config.QkvBias, dtype, device);
        v_proj = new Projection(h, kv, config.QkvBias, dtype, device);
        o_proj = new Projection(q, h, config.OutputBias, dtype, device);
        RegisterComponents();
    }

    internal void Replace(string name, nn.Module<Tensor, Tensor> projection)
    {
        switch (name)
        {
            case nameof(q_proj): q_proj = projection; break;
            case nameof(k_proj): k_proj = projection; break;
            case nameof(v_proj): v_proj = projection; break;
            case nameof(o_proj): o_proj = projection; break;
            default: throw new ArgumentException($"Attention has no projection '{name}'.", nameof(name));
        }
        CausalLM.Reregister(this, name, projection);
    }

    /// <summary>
    /// Attends the chunk x [B, T, hidden] to the cached prefix (null when the chunk starts at position 0) and causally
    /// to itself. Returns the output and the chunk's own keys (rotated) and values, [B, kv_heads, T, d].
    /// </summary>
    internal (Tensor Output, Tensor Keys, Tensor Values) Forward(Tensor x, ChunkPositions positions, CachedPrefix? prefix)
    {
        long b = x.shape[0], t = x.shape[1], d = _config.HeadDim;
        long kvHeads = _config.NumKeyValueHeads, groups = _config.QueriesPerKeyValueHead, heads = kvHeads * groups;
        var (q, k, v) = Project(x, positions);
        var output = prefix is null
            ? SelfAttention(q, k, v, groups, _config.SlidingWindow).transpose(1, 2).reshape(b, t, heads * d)
            : ChunkAttention.Apply(q, k, v, prefix, _config.SlidingWindow, Options);   // [B, T, heads·d]
        return (o_proj.forward(output), k, v);
    }

    /// <summary>
    /// Queries [B, heads, T, d] and keys [B, kv_heads, T, d], rotated to their positions, and values [B, kv_heads, T, d].
    /// Always all three, in this order, so that LoRA dropout draws the same masks whether or not the queries are used.
    /// </summary>
    internal (Tensor Queries, Tensor Keys, Tensor Values) Project(Tensor x, ChunkPositions positions)
    {
        long b = x.shape[0], t = x.shape[1], d = _config.HeadDim;
        var q = q_proj.forward(x).view(b, t, _config.NumAttentionHeads, d).transpose(1, 2);   // [B, heads, T, d]
        var k = k_proj.forward(x).view(b, t, _config.NumKeyValueHeads, d).transpose(1, 2);   // [B, kv_heads, T, d]
        var v = v_proj.forward(x).view(b, t, _config.NumKeyValueHeads, d).transpose(1, 2);   // [B, kv_heads, T, d]
        return (RotaryEmbedding.Apply(q, positions.Cos, positions.SignedSin), RotaryEmbedding.Apply(k, positions.Cos, positions.SignedSin), v);
    }

    /// <summary>
    /// Causal attention of a chunk with no prefix (a whole sequence, or the first chunk) through libtorch's fused
    /// scaled_dot_product_attention, as Hugging Face's default <c>sdpa</c> attention runs it: the whole-sequence
    /// baselines then grow linearly with length, like a user's run, instead of materialising L × L scores.
    /// </summary>
    internal static Tensor SelfAttention(Tensor q, Tensor k, Tensor v, long groups, int? window)
    {
        if (groups > 1)
        {
            // TorchSharp's binding has no enable_gqa: repeat each kv head for its query heads (Hugging Face's repeat_kv).
            long b = k.shape[0], kvHeads = k.shape[1], t = k.shape[2], d = k.shape[3];
            k = k.unsqueeze(2).expand(b, kvHeads, groups, t, d).reshape(b, kvHeads * groups, t, d);
            v = v.unsqueeze(2).expand(b, kvHeads, groups, t, d).reshape(b, kvHeads * groups, t, d);
        }
        if (window is not int span) return nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        // A sliding window needs an explicit mask (Hugging Face's sdpa path builds the same boolean matrix).
        using var scope = NewDisposeScope();
        long length = q.shape[2];
        var query = arange(length, device: q.device).unsqueeze(1);
        var key = arange(length, device: q.device).unsqueeze(0);
        var visible = (key <= query).logical_and(query - key < span);
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: visible).MoveToOuterDisposeScope();
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) · up(x)).</summary>
internal sealed class Mlp : nn.Module<Tensor, Tensor>
{
    /// <summary>Projections, named as in Hugging Face: plain linear maps unless an adapter replaced them.</summary>
    public nn.Module<Tensor, Tensor> gate_proj, up_proj, down_proj;

    /// <summary>Creates the projections for <paramref name="config"/>.</summary>
    public Mlp(ModelConfig config, ScalarType dtype, Device device) : base("Mlp")
    {
        gate_proj = new Projection(config.HiddenSize, config.IntermediateSize, config.MlpBias, dtype, device);
        up_proj = new Projection(config.HiddenSize, config.IntermediateSize, config.MlpBias, dtype, device);
        down_proj = new Projection(config.IntermediateSize, config.HiddenSize, config.MlpBias, dtype, device);
        RegisterComponents();
    }

    internal void Replace(string name, nn.Module<Tensor, Tensor> projection)
    {
        switch (name)
        {
            case nameof(gate_proj): gate_proj = projection; break;
            case nameof(up_proj): up_proj = projection; break;
            case nameof(down_proj): down_proj = projection; break;
            default: throw new ArgumentException($"Mlp has no projection '{name}'.", nameof(name));
        }
        CausalLM.Reregister(this, name, projection);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => down_proj.forward(nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x));
}

/// <summary>One pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(·)).</summary>
internal sealed class DecoderLayer : nn.Module
{
    /// <summary>Sub-modules, named as in Hugging Face.</summary>
    public Attention self_attn;
    /// <summary>The feed-forward block.</summary>
    public Mlp mlp;
    /// <summary>Norms before attention and before the MLP.</summary>
    public RmsNorm input_layernorm, post_attention_layernorm;

    /// <summary>Creates the block for <paramref name="config"/>.</summary>
    public DecoderLayer(ModelConfig config, ScalarType dtype, Device device) : base("DecoderLayer")
    {
        self_attn = new Attention(config, dtype, device);
        mlp = new Mlp(config, dtype, device);
        input_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        post_attention_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    /// <summary>Runs the block on a chunk; returns the new hidden states and the chunk's keys/values.</summary>
    internal (Tensor Hidden, Tensor Keys, Tensor Values) Forward(Tensor x, ChunkPositions positions, CachedPrefix? prefix)
    {
        var (attended, keys, values) = self_attn.Forward(input_layernorm.forward(x), positions, prefix);
        var h = x + attended;
        return (h + mlp.forward(post_attention_layernorm.forward(h)), keys, values);
    }

    /// <summary>The chunk's keys and values alone: what this block adds to the cache, without attending.</summary>
    internal (Tensor Keys, Tensor Values) KeysAndValues(Tensor x, ChunkPositions positions)
    {
        var (_, keys, values) = self_attn.Project(input_layernorm.forward(x), positions);
        return (keys, values);
    }
}

/// <summary>The decoder stack (Hugging Face's <c>model</c>): embeddings, layers, final norm.</summary>
internal sealed class DecoderStack : nn.Module
{
    /// <summary>Token embeddings.</summary>
    public Embedding embed_tokens;
    /// <summary>The decoder blocks.</summary>
    public ModuleList<DecoderLayer> layers;
    /// <summary>Final norm.</summary>
    public RmsNorm norm;

    /// <summary>Creates the stack for <paramref name="config"/>.</summary>
    public DecoderStack(ModelConfig config, ScalarType dtype, Device device) : base("DecoderStack")
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new DecoderLayer(config, dtype, device)).ToArray());
        norm = new RmsNorm(config.HiddenSize, config.RmsNormEps, dtype, device);
        RegisterComponents();
    }
}

/// <summary>
/// A causal language model (Hugging Face's <c>*ForCausalLM</c>): the decoder stack and the output projection
/// <c>lm_head</c> (or the tied embedding matrix). Forward passes work chunk by chunk against a <see cref="KvCache"/>.
/// </summary>
public sealed class CausalLM : nn.Module
{
    /// <summary>The decoder stack.</summary>
    internal DecoderStack model;
    /// <summary>Output projection; null when <see cref="ModelConfig.TieWordEmbeddings"/>.</summary>
    public nn.Module<Tensor, Tensor>? lm_head;

    // On the model's device once, so that a chunk's rotary table copies nothing from the host (a copy to a CUDA device
    // waits for the device).
    readonly Tensor _inverseFrequencies;
    readonly RotaryTable _rotary;
    // The first position dynamic scaling cannot rotate exactly, or null.
    readonly long? _positionLimit;
    readonly string[] _ownParameters;

    /// <summary>The architecture.</summary>
    public ModelConfig Config { get; }
    /// <summary>Parameter dtype.</summary>
    public ScalarType DType { get; }
    /// <summary>Parameter device.</summary>
    public Device Device { get; }

    /// <summary>
    /// The architecture's own weights by Hugging Face name, in construction order: what a checkpoint of this model
    /// holds. Parameters that modules put in by <see cref="ReplaceProjection"/> added since (an adapter's) are not among
    /// them; a replaced projection's base weight, which keeps its name, is.
    /// </summary>
    public IEnumerable<(string Name, Parameter Parameter)> OwnParameters()
    {
        var current = named_parameters().ToDictionary(p => p.name, p => p.parameter);
        return _ownParameters.Select(name => (name, current[name]));
    }

    /// <summary>
    /// How every layer's chunk attends over the cached prefix: the fused kernels where they serve (default), or the
    /// blockwise path (<see cref="AttentionOptions"/>). Results agree up to rounding either way.
    /// </summary>
    public AttentionOptions Attention
    {
        get => _attention;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            value.Validate();
            _attention = value;
            foreach (var layer in model.layers) layer.self_attn.Options = value;
        }
    }
    AttentionOptions _attention = AttentionOptions.Default;

    /// <summary>Creates a model with uninitialised weights; load a checkpoint or call <see cref="InitializeRandom"/>.</summary>
    public CausalLM(ModelConfig config, ScalarType dtype, Device device) : base("CausalLM")
    {
        config.Validate();
        Config = config;
        DType = dtype;
        Device = device;
        model = new DecoderStack(config, dtype, device);
        if (!config.TieWordEmbeddings) lm_head = new Projection(config.HiddenSize, config.VocabSize, false, dtype, device);
        RegisterComponents();
        foreach (var p in parameters()) p.requires_grad = false;
        _ownParameters = named_parameters().Select(p => p.name).ToArray();
        // After RegisterComponents, which would register a tensor field as a buffer (then checkpoints would need it). The
        // model owns it: a dispose scope open while the model is built must not take it.
        _inverseFrequencies = tensor(RotaryEmbedding.InverseFrequencies(config), dtype: ScalarType.Float64, device: device).DetachFromDisposeScope();
        _positionLimit = RotaryEmbedding.PositionLimit(config);
        _rotary = new RotaryTable(_inverseFrequencies, RotaryEmbedding.AttentionScaling(config), dtype, device);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _rotary.Dispose();
            _inverseFrequencies.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>The dtype attention scores, softmax, norms and the loss are computed in: at least float32.</summary>
    public static ScalarType ScoreType(ScalarType dtype) => dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>Hugging Face's initialisation: normal(0, std) for linear and embedding weights, zero biases, unit norms.</summary>
    public void InitializeRandom(long seed, double std = 0.02)
    {
        using var _ = no_grad();
        var generator = new Generator((ulong)seed, CPU);
        // The model's own parameters in construction order: an adapter attached since keeps its own initialisation,
        // and a partly replaced layer draws the same numbers as before.
        foreach (var (name, p) in OwnParameters())
        {
            var values = name.EndsWith("norm.weight", StringComparison.Ordinal) ? ones(p.shape)
                : name.EndsWith(".bias", StringComparison.Ordinal) ? zeros(p.shape)
                : normal(0, std, p.shape, generator: generator, dtype: ScalarType.Float64);
            p.copy_(values);
            values.Dispose();
        }
    }

    /// <summary>The rotary angles of a chunk at [start, start + length), sliced from the model's table.</summary>
    internal ChunkPositions Positions(long start, long length)
    {
        RotaryEmbedding.CheckPositions(_positionLimit, start, length);
        return _rotary.Slice(start, length);
    }

    /// <summary>Embeds token ids [B, T].</summary>
    public Tensor Embed(Tensor inputIds) => model.embed_tokens.forward(inputIds);

    /// <summary>
    /// Runs one chunk [B, T] of token ids at absolute positions [start, start + T) through every layer, reading
    /// positions [0, start) from <paramref name="cache"/> (which may be null when start is 0). Returns the final-norm
    /// hidden states and, per layer, the chunk's keys and values (still attached to the graph when grad is on).
    /// </summary>
    /// <param name="inputIds">Token ids [B, T].</param>
    /// <param name="start">Absolute position of the first token.</param>
    /// <param name="cache">The keys/values of positions [0, start); may be null when start is 0.</param>
    /// <param name="beforeLayer">Called with a layer's index just before it runs (e.g. to reseed dropout per layer).</param>
    public (Tensor Hidden, (Tensor Keys, Tensor Values)[] ChunkCache) ForwardChunk(Tensor inputIds, long start, KvCache? cache, Action<int>? beforeLayer = null)
    {
        var chunkCache = new (Tensor, Tensor)[Config.NumHiddenLayers];
        var h = ForwardLayers(inputIds, start, cache, chunkCache, lastLayerKeysAndValuesOnly: false, beforeLayer);
        return (model.norm.forward(h), chunkCache);
    }

    /// <summary>
    /// The keys and values a chunk adds to the cache, per layer, and nothing more: the last layer stops at its
    /// projections, since its attention, its MLP, the final norm and lm_head feed only the chunk's own logits.
    /// This is what SeCO's Stage 1 needs of a chunk whose loss Stage 2 computes (one layer's work less per chunk).
    /// </summary>
    public (Tensor Keys, Tensor Values)[] ChunkKeysAndValues(Tensor inputIds, long start, KvCache? cache, Action<int>? beforeLayer = null)
    {
        var chunkCache = new (Tensor, Tensor)[Config.NumHiddenLayers];
        ForwardLayers(inputIds, start, cache, chunkCache, lastLayerKeysAndValuesOnly: true, beforeLayer);
        return chunkCache;
    }

    /// <summary>The decoder layers, for strategies that walk them one at a time (layer checkpointing, recompute).</summary>
    internal IList<DecoderLayer> Layers => model.layers;

    /// <summary>The final norm.</summary>
    internal Tensor FinalNorm(Tensor hidden) => model.norm.forward(hidden);

    Tensor ForwardLayers(Tensor inputIds, long start, KvCache? cache, (Tensor, Tensor)[] chunkCache, bool lastLayerKeysAndValuesOnly, Action<int>? beforeLayer)
    {
        if (start > 0 && cache is null) throw new ArgumentException("A chunk after position 0 needs the cache of the positions before it.", nameof(cache));
        using var positions = Positions(start, inputIds.shape[1]);
        // A caller's dispose scope would keep every wrapper a layer makes until the chunk ends, and a wrapper keeps its
        // tensor alive: each layer gets its own scope, which hands out only its hidden states, keys and values. Without a
        // graph (inference, SeCO's Stage 1) the forward then holds one layer's transients at a time; with one, the graph
        // keeps what autograd saved and nothing else (a layer's other intermediates, such as its norms' squares, the
        // rotary halves and the MLP's product, go with its scope, as PyTorch frees them by reference count).
        var h = Embed(inputIds);
        int last = Config.NumHiddenLayers - 1;
        for (int l = 0; l <= last; l++)
        {
            // The prefix views outlive the layer's scope: the attention's backward reads them after the forward.
            var prefix = cache?.Prefix(l, start);
            using var layerScope = NewDisposeScope();
            beforeLayer?.Invoke(l);
            var input = h;
            Tensor k, v;
            if (l == last && lastLayerKeysAndValuesOnly) (k, v) = model.layers[l].KeysAndValues(h, positions);
            else (h, k, v) = model.layers[l].Forward(h, positions, prefix);
            chunkCache[l] = (k, v);
            layerScope.MoveToOuter(k, v);
            if (!ReferenceEquals(h, input))
            {
                layerScope.MoveToOuter(h);
                input.Dispose();
            }
        }
        return h;
    }

    /// <summary>
    /// Forwards token ids [B, L] block by block into <paramref name="cache"/> (block j covers positions
    /// [j·blockSize, min((j+1)·blockSize, L)), one forward pass each) and yields each block's final-norm hidden states
    /// [B, size, H]. The one "prefill" loop of training's Stage 1, evaluation, generation and the examples (a block may
    /// hold several of training's chunks). Each item lives in a dispose scope of its own that closes when the next item
    /// is asked for, so what the caller computes from it goes too unless moved out (<c>MoveToOuterDisposeScope</c>).
    /// Grad mode is the caller's: wrap the loop in no_grad() for inference.
    /// </summary>
    /// <param name="inputIds">Token ids [B, L].</param>
    /// <param name="cache">Receives every block's keys and values; it must hold at least L positions.</param>
    /// <param name="blockSize">Tokens per forward pass.</param>
    /// <param name="beforeLayer">Called with a block's index and a layer's index just before that layer runs in that
    /// block's pass (e.g. to reseed dropout).</param>
    /// <param name="hiddenNeeded">
    /// Null, or false for a block whose hidden states the caller does not need: that block is run only as far as the
    /// cache needs (<see cref="ChunkKeysAndValues"/>) and is not yielded.
    /// </param>
    public IEnumerable<PrefilledBlock> Prefill(Tensor inputIds, KvCache cache, int blockSize, Action<int, int>? beforeLayer = null,
        Func<int, bool>? hiddenNeeded = null)
    {
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "blockSize must be positive.");
        return Iterate();

        IEnumerable<PrefilledBlock> Iterate()
        {
            long length = inputIds.shape[1];
            int count = (int)((length + blockSize - 1) / blockSize);
            for (int j = 0; j < count; j++)
            {
                using var blockScope = NewDisposeScope();
                long start = (long)j * blockSize, size = Math.Min(blockSize, length - start);
                var ids = inputIds.narrow(1, start, size);
                int block = j;
                Action<int>? layerHook = beforeLayer is null ? null : l => beforeLayer(block, l);
                if (hiddenNeeded?.Invoke(j) == false)
                {
                    cache.Write(start, ChunkKeysAndValues(ids, start, cache, layerHook));
                    continue;
                }
                var (hidden, blockCache) = ForwardChunk(ids, start, cache, layerHook);
                cache.Write(start, blockCache);
                yield return new PrefilledBlock(j, start, size, hidden);
            }
        }
    }

    /// <summary>Logits [B, T, vocab] for final-norm hidden states, in at least float32.</summary>
    public Tensor Logits(Tensor hidden)
    {
        var logits = lm_head is null ? nn.functional.linear(hidden, model.embed_tokens.weight!) : lm_head.forward(hidden);
        return logits.to(ScoreType(DType));
    }

    /// <summary>
    /// Bytes of score-dtype logits the output layer and the loss hold at once (<see cref="LossSum"/>,
    /// <see cref="TokenNll"/>): 64 MiB, about 110 rows of Qwen2.5's 151,936-word vocabulary in float32.
    /// </summary>
    public const long DefaultLossPieceBytes = 64L << 20;

    /// <summary>
    /// Summed cross-entropy of a chunk: hidden [B, T, H] predicting targets [B, T] (the NEXT token of each position;
    /// −100 = ignored). The output layer and the loss run over pieces of rows, forward and backward, so that at most
    /// <paramref name="pieceBytes"/> of logits exist at a time (<see cref="LinearCrossEntropy"/>). When
    /// <paramref name="labelledPositions"/> (flat indices into B·T) is given, logits are computed for those positions
    /// only, which is most of the work saved when few tokens carry a label (prompt/response data).
    /// </summary>
    public Tensor LossSum(Tensor hidden, Tensor targets, Tensor? labelledPositions = null, long pieceBytes = DefaultLossPieceBytes)
    {
        var (h, t) = LabelledRows(hidden, targets, labelledPositions);
        if (h.shape[0] == 0) return zeros(new long[0], dtype: ScoreType(DType), device: Device);
        return LinearCrossEntropy.Sum(h, OutputWeight, t, LinearCrossEntropy.RowsPerPiece(Config.VocabSize, ScoreType(DType), pieceBytes));
    }

    /// <summary>
    /// Negative log-likelihood of each target [N] (no graph), in the score dtype, for the positions
    /// <paramref name="labelledPositions"/> (or every position) of hidden [B, T, H] and targets [B, T]; the output layer runs
    /// over pieces of at most <paramref name="pieceBytes"/> of logits, as in <see cref="LossSum"/>.
    /// </summary>
    public Tensor TokenNll(Tensor hidden, Tensor targets, Tensor? labelledPositions = null, long pieceBytes = DefaultLossPieceBytes)
    {
        var (h, t) = LabelledRows(hidden, targets, labelledPositions);
        return LinearCrossEntropy.PerRow(h, OutputWeight, t, LinearCrossEntropy.RowsPerPiece(Config.VocabSize, ScoreType(DType), pieceBytes));
    }

    (Tensor Hidden, Tensor Targets) LabelledRows(Tensor hidden, Tensor targets, Tensor? labelledPositions)
    {
        var h = hidden.reshape(-1, hidden.shape[^1]);
        var t = targets.reshape(-1);
        return labelledPositions is null ? (h, t) : (h.index_select(0, labelledPositions), t.index_select(0, labelledPositions));
    }

    // lm_head is always a plain projection here: adapters replace decoder-layer projections only (ReplaceProjection).
    Tensor OutputWeight => lm_head is null ? model.embed_tokens.weight! : ((Projection)lm_head).weight;

    /// <summary>
    /// Every projection of the decoder layers with its Hugging Face module path (e.g. <c>model.layers.0.self_attn.q_proj</c>):
    /// a plain linear map, or whatever <see cref="ReplaceProjection"/> put there (e.g. a LoRA layer).
    /// </summary>
    public IEnumerable<(string Path, nn.Module<Tensor, Tensor> Projection)> Projections()
    {
        for (int l = 0; l < Config.NumHiddenLayers; l++)
        {
            var layer = model.layers[l];
            string p = $"model.layers.{l}";
            yield return ($"{p}.self_attn.q_proj", layer.self_attn.q_proj);
            yield return ($"{p}.self_attn.k_proj", layer.self_attn.k_proj);
            yield return ($"{p}.self_attn.v_proj", layer.self_attn.v_proj);
            yield return ($"{p}.self_attn.o_proj", layer.self_attn.o_proj);
            yield return ($"{p}.mlp.gate_proj", layer.mlp.gate_proj);
            yield return ($"{p}.mlp.up_proj", layer.mlp.up_proj);
            yield return ($"{p}.mlp.down_proj", layer.mlp.down_proj);
        }
    }

    /// <summary>
    /// Puts <paramref name="replacement"/> where the projection at <paramref name="path"/> (a path from
    /// <see cref="Projections"/>) was, as PEFT's <c>_replace_module</c> does: adapters wrap projections from outside
    /// the model. The replacement must keep the projection's parameter names for checkpoints to map.
    /// </summary>
    public void ReplaceProjection(string path, nn.Module<Tensor, Tensor> replacement)
    {
        ArgumentNullException.ThrowIfNull(replacement);
        var parts = path.Split('.');
        if (parts is not ["model", "layers", var index, var block, var name] || !int.TryParse(index, out int l) || l < 0 || l >= Config.NumHiddenLayers)
            throw new ArgumentException($"'{path}' is not a projection path of this model (model.layers.N.self_attn.q_proj, ...).", nameof(path));
        var layer = model.layers[l];
        if (block == "self_attn") layer.self_attn.Replace(name, replacement);
        else if (block == "mlp") layer.mlp.Replace(name, replacement);
        else throw new ArgumentException($"'{path}' is not a projection path of this model (model.layers.N.self_attn.q_proj, ...).", nameof(path));
    }

    // TorchSharp registers submodules by name: the replaced one goes, the replacement takes its name. A field and its
    // registration must agree, or Module.to() and named_parameters() would see different modules.
    internal static void Reregister(nn.Module parent, string name, nn.Module replacement)
    {
        parent.register_module(name, null!);
        parent.register_module(name, replacement);
    }

    /// <summary>
    /// True when some layer draws random numbers in training mode (e.g. LoRA dropout): the chunk-wise engine then
    /// replays the draws so that Stage 2 rebuilds Stage 1's activations exactly.
    /// </summary>
    public bool HasStochasticLayers => modules().OfType<IStochasticLayer>().Any(l => l.IsStochastic);
}
