using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>The shape of a random tiny model (defaults: a 2-layer Llama with GQA over GPT-2's vocabulary).</summary>
public sealed record TinyModelSpec
{
    /// <summary>llama, mistral or qwen2.</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; init; } = 64;
    /// <summary>Query heads.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Key/value heads (fewer than <see cref="Heads"/> gives grouped-query attention).</summary>
    public int KeyValueHeads { get; init; } = 2;
    /// <summary>MLP width.</summary>
    public int IntermediateSize { get; init; } = 128;
    /// <summary>Safetensors shards to write (1 = a single model.safetensors).</summary>
    public int Shards { get; init; } = 1;
    /// <summary>Initialisation seed.</summary>
    public int Seed { get; init; }
    /// <summary>Write GPT-2's tokenizer (vocabulary 50257); false gives a 512-token vocabulary and no tokenizer.</summary>
    public bool WithTokenizer { get; init; } = true;

    /// <summary>Checks the shape; an <see cref="OptionException"/> names the property whose value breaks a rule.</summary>
    public void Validate()
    {
        if (!ModelConfig.SupportedModelTypes.Contains(ModelType))
            throw new OptionException(nameof(ModelType), ModelType, $"{{ModelType}} '{{value}}' is not supported; supported: {string.Join(", ", ModelConfig.SupportedModelTypes)}");
        if (Layers <= 0) throw new OptionException(nameof(Layers), Layers, "{Layers} must be at least 1");
        if (HiddenSize <= 0) throw new OptionException(nameof(HiddenSize), HiddenSize, "{HiddenSize} must be at least 1");
        if (IntermediateSize <= 0) throw new OptionException(nameof(IntermediateSize), IntermediateSize, "{IntermediateSize} must be at least 1");
        if (Heads <= 0 || HiddenSize % Heads != 0)
            throw new OptionException(nameof(Heads), Heads, $"{{Heads}} ({{value}}) must divide {{HiddenSize}} ({HiddenSize})");
        if (KeyValueHeads <= 0 || Heads % KeyValueHeads != 0)
            throw new OptionException(nameof(KeyValueHeads), KeyValueHeads, $"{{KeyValueHeads}} ({{value}}) must be at least 1 and divide {{Heads}} ({Heads})");
        if (Shards <= 0) throw new OptionException(nameof(Shards), Shards, "{Shards} must be at least 1");
    }
}

/// <summary>
/// Writes random tiny models in exactly the Hugging Face layout (config.json, safetensors, tokenizer), so tests,
/// examples and benchmarks go through the same loader as a real download.
/// </summary>
public static class TinyModel
{
    /// <summary>Writes the model into <paramref name="directory"/> and returns its config.</summary>
    /// <exception cref="OptionException">The spec breaks a rule of <see cref="TinyModelSpec.Validate"/>.</exception>
    public static ModelConfig Write(string directory, TinyModelSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        int vocab = spec.WithTokenizer ? TokenizerFiles.Gpt2EndOfTextId + 1 : 512;
        var config = new ModelConfig
        {
            ModelType = spec.ModelType,
            VocabSize = vocab,
            HiddenSize = spec.HiddenSize,
            IntermediateSize = spec.IntermediateSize,
            NumHiddenLayers = spec.Layers,
            NumAttentionHeads = spec.Heads,
            NumKeyValueHeads = spec.KeyValueHeads,
            HeadDim = spec.HiddenSize / spec.Heads,
            RmsNormEps = 1e-6,
            RopeTheta = 10000,
            MaxPositionEmbeddings = 32768,
            QkvBias = spec.ModelType == "qwen2",
            TieWordEmbeddings = spec.ModelType == "qwen2",
            BosTokenId = spec.WithTokenizer ? TokenizerFiles.Gpt2EndOfTextId : null,
            EosTokenIds = spec.WithTokenizer ? new[] { TokenizerFiles.Gpt2EndOfTextId } : Array.Empty<int>(),
        };
        config.Validate("tiny model");
        using var model = new CausalLM(config, ScalarType.Float32, CPU);
        // HF's std of 0.02 suits hidden sizes in the thousands; at a tiny width it leaves the logits nearly flat (a row of
        // lm_head would have norm 0.1), so that no adapter could move them. 1/sqrt(hidden) keeps rows at unit norm.
        model.InitializeRandom(spec.Seed, std: 1 / Math.Sqrt(spec.HiddenSize));
        ModelDirectory.Save(model, directory, maxShardBytes: spec.Shards > 1 ? ShardLimit(model, spec.Shards) : null);
        if (spec.WithTokenizer) TokenizerFiles.WriteGpt2(directory);
        return config;
    }

    /// <summary>The smallest shard size limit that gives at most <paramref name="shards"/> shards.</summary>
    static long ShardLimit(CausalLM model, int shards)
    {
        var sizes = model.OwnParameters().Select(p => p.Parameter.numel() * 4).ToList();
        long low = 1, high = sizes.Sum();
        while (low < high)
        {
            long middle = low + (high - low) / 2;
            if (HuggingFaceCheckpoint.PlanShards(sizes, middle).Count <= shards) high = middle; else low = middle + 1;
        }
        return low;
    }
}
