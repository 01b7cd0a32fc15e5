using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>
/// The architecture of the random benchmark model: a named preset (<c>--shape</c>) whose fields the explicit shape
/// flags override.
/// </summary>
internal sealed record BenchmarkShape(
    string Name, string ModelType, int Layers, int Hidden, int Intermediate, int Heads, int KvHeads, int HeadDim, int Vocab,
    bool TiedEmbeddings = false, bool QkvBias = false, double RopeTheta = 500000)
{
    /// <summary>
    /// default: this project's first study (small cache, so transient attention dominates SeCO's memory);
    /// wide-cache: Llama-3-8B's per-layer key/value width (8 kv heads × 128) on 2 layers, so the cache dominates;
    /// gqa: Llama-3-style 4:1 grouped-query attention on 4 layers; qwen2.5-0.5b, llama-3.2-3b and llama-3-8b (the
    /// paper's model): those models' exact shapes, for GPUs or patient CPUs; tiny: the --quick smoke test.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, BenchmarkShape> Presets = new[]
    {
        new BenchmarkShape("default", "llama", Layers: 4, Hidden: 256, Intermediate: 682, Heads: 8, KvHeads: 2, HeadDim: 32, Vocab: 4096),
        new BenchmarkShape("wide-cache", "llama", Layers: 2, Hidden: 1024, Intermediate: 2816, Heads: 8, KvHeads: 8, HeadDim: 128, Vocab: 4096),
        new BenchmarkShape("gqa", "llama", Layers: 4, Hidden: 512, Intermediate: 1408, Heads: 8, KvHeads: 2, HeadDim: 64, Vocab: 4096),
        // Qwen/Qwen2.5-0.5B's config.json: qwen2 always has q/k/v biases; rope_theta 1e6.
        new BenchmarkShape("qwen2.5-0.5b", "qwen2", Layers: 24, Hidden: 896, Intermediate: 4864, Heads: 14, KvHeads: 2, HeadDim: 64, Vocab: 151936,
            TiedEmbeddings: true, QkvBias: true, RopeTheta: 1000000),
        // meta-llama/Llama-3.2-3B's and Meta-Llama-3-8B's config.json (the paper's model). Their rope scaling is left out:
        // it changes no cost.
        new BenchmarkShape("llama-3.2-3b", "llama", Layers: 28, Hidden: 3072, Intermediate: 8192, Heads: 24, KvHeads: 8, HeadDim: 128, Vocab: 128256,
            TiedEmbeddings: true),
        new BenchmarkShape("llama-3-8b", "llama", Layers: 32, Hidden: 4096, Intermediate: 14336, Heads: 32, KvHeads: 8, HeadDim: 128, Vocab: 128256),
        new BenchmarkShape("tiny", "llama", Layers: 2, Hidden: 64, Intermediate: 172, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 256),
    }.ToDictionary(s => s.Name);

    /// <summary>The preset named by --shape, or a usage error listing the names.</summary>
    public static BenchmarkShape Preset(string name) => Presets.TryGetValue(name.Trim().ToLowerInvariant(), out var shape)
        ? shape : throw new UsageException($"--shape: unknown shape '{name}'; use {string.Join(", ", Presets.Keys)}.");

    /// <summary>
    /// This shape with the flags given on the command line. A new hidden size or head count without --head-dim
    /// derives the head dimension as hidden / heads, as config.json does when it omits head_dim.
    /// </summary>
    public BenchmarkShape With(int? layers, int? hidden, int? intermediate, int? heads, int? kvHeads, int? headDim, int? vocab)
    {
        int h = hidden ?? Hidden, nh = heads ?? Heads, kv = kvHeads ?? KvHeads;
        if (h <= 0 || nh <= 0 || kv <= 0 || nh % kv != 0)
            throw new UsageException($"--hidden-size ({h}), --heads ({nh}) and --kv-heads ({kv}) must be positive, kv heads dividing heads.");
        int hd = headDim ?? (hidden is null && heads is null ? HeadDim
            : h % nh == 0 ? h / nh : throw new UsageException($"--heads ({nh}) must divide --hidden-size ({h}) unless --head-dim is given."));
        var shape = this with
        {
            Layers = layers ?? Layers, Hidden = h, Intermediate = intermediate ?? Intermediate, Heads = nh, KvHeads = kv, HeadDim = hd,
            Vocab = vocab ?? Vocab,
        };
        if (shape.Layers <= 0 || shape.Intermediate <= 0 || shape.HeadDim <= 0 || shape.Vocab < 2)
            throw new UsageException("--layers, --intermediate-size and --head-dim must be positive and --vocab at least 2.");
        return shape;
    }

    /// <summary>The model configuration of this shape.</summary>
    public ModelConfig ToConfig() => new()
    {
        ModelType = ModelType, VocabSize = Vocab, HiddenSize = Hidden, IntermediateSize = Intermediate, NumHiddenLayers = Layers,
        NumAttentionHeads = Heads, NumKeyValueHeads = KvHeads, HeadDim = HeadDim, RopeTheta = RopeTheta, MaxPositionEmbeddings = 1 << 20,
        TieWordEmbeddings = TiedEmbeddings, QkvBias = QkvBias,
    };

    /// <summary>One line for the report.</summary>
    public string Describe() =>
        $"{Name}: {Layers} layers, hidden {Hidden}, intermediate {Intermediate}, {Heads} heads / {KvHeads} kv heads × {HeadDim}, vocabulary {Vocab}"
        + (TiedEmbeddings ? ", tied embeddings" : "") + (QkvBias ? ", qkv biases" : "");

    /// <summary>
    /// Key/value cache bytes per token: 2 (keys and values) × layers × kv heads × head dim × element size × batch.
    /// The unit the memory slopes are expressed in: a strategy whose memory grows by one cache per token has ratio 1.
    /// </summary>
    public static long KvBytesPerToken(ModelConfig config, ScalarType dtype, int batch = 1) => StepMemory.CacheBytesPerToken(config, dtype, batch);
}
