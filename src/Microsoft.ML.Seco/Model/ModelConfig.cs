using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Model;

/// <summary>How rotary frequencies are rescaled for long contexts (config.json <c>rope_scaling</c>).</summary>
public sealed record RopeScaling
{
    /// <summary><c>linear</c> (positions divided by <see cref="Factor"/>) or <c>llama3</c> (Llama 3.1 band-wise scaling).</summary>
    public required string Type { get; init; }
    /// <summary>The scaling factor.</summary>
    public double Factor { get; init; } = 1;
    /// <summary>llama3: frequencies with a wavelength above original context / this factor are divided by <see cref="Factor"/>.</summary>
    public double LowFreqFactor { get; init; } = 1;
    /// <summary>llama3: frequencies with a wavelength below original context / this factor are kept.</summary>
    public double HighFreqFactor { get; init; } = 4;
    /// <summary>llama3: the context length the model was pretrained with.</summary>
    public double OriginalMaxPositionEmbeddings { get; init; } = 8192;
}

/// <summary>
/// The architecture of a Llama-family decoder, read from a Hugging Face <c>config.json</c>
/// (<c>model_type</c> llama, mistral or qwen2). Field names follow the JSON keys.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>The model types this library implements.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = new[] { "llama", "mistral", "qwen2" };

    /// <summary><c>model_type</c>: llama, mistral or qwen2.</summary>
    public required string ModelType { get; init; }
    /// <summary><c>vocab_size</c>.</summary>
    public required int VocabSize { get; init; }
    /// <summary><c>hidden_size</c>.</summary>
    public required int HiddenSize { get; init; }
    /// <summary><c>intermediate_size</c> of the SwiGLU MLP.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary><c>num_hidden_layers</c>.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary><c>num_attention_heads</c> (query heads).</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary><c>num_key_value_heads</c>: fewer than the query heads means grouped-query attention.</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c>; hidden_size / num_attention_heads when config.json omits it.</summary>
    public required int HeadDim { get; init; }
    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c>.</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary><c>rope_scaling</c>, or null.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary><c>max_position_embeddings</c>.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary><c>tie_word_embeddings</c>: the output projection reuses the embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Biases on q/k/v projections (qwen2 always; llama when <c>attention_bias</c>).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the output projection (llama <c>attention_bias</c>).</summary>
    public bool OutputBias { get; init; }
    /// <summary><c>mlp_bias</c> (llama).</summary>
    public bool MlpBias { get; init; }
    /// <summary>Mistral/Qwen2 sliding-window attention span, or null for full attention.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c> (all of them when config.json lists several).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();
    /// <summary><c>pad_token_id</c>.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Query heads that share one key/value head.</summary>
    public int QueriesPerKeyValueHead => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>Reads and validates <c>config.json</c> in a model directory.</summary>
    public static ModelConfig Load(string modelDirectory)
    {
        string path = Path.Combine(modelDirectory, "config.json");
        if (!File.Exists(path))
            throw new FileNotFoundException($"No config.json in model directory '{modelDirectory}'.", path);
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: invalid JSON ({e.Message}).", e); }
        // A number out of its field's range (e.g. 1e400 where an int goes) surfaces from System.Text.Json as
        // JsonException, a key given twice as ArgumentException on first access.
        try { return FromJson(json, path); }
        catch (Exception e) when (e is JsonException or ArgumentException) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    /// <summary>Builds a config from a parsed config.json; <paramref name="source"/> names it in errors.</summary>
    public static ModelConfig FromJson(JsonObject json, string source = "config.json")
    {
        string modelType = Text(json, "model_type", source) ?? throw Missing("model_type", source);
        if (!SupportedModelTypes.Contains(modelType))
            throw new NotSupportedException($"{source}: model_type '{modelType}' is not supported; supported: {string.Join(", ", SupportedModelTypes)}.");
        string act = Text(json, "hidden_act", source) ?? "silu";
        if (act != "silu")
            throw new NotSupportedException($"{source}: hidden_act '{act}' is not supported; supported: silu.");
        if (Number(json, "partial_rotary_factor", source) is double partial && partial != 1)
            throw new NotSupportedException($"{source}: partial_rotary_factor {partial} is not supported; supported: 1.");

        int hidden = Int(json, "hidden_size", source) ?? throw Missing("hidden_size", source);
        int heads = Int(json, "num_attention_heads", source) ?? throw Missing("num_attention_heads", source);
        int kvHeads = Int(json, "num_key_value_heads", source) ?? heads;
        int headDim = Int(json, "head_dim", source) ?? (heads > 0 ? hidden / heads : 0);
        bool attentionBias = Bool(json, "attention_bias", source) ?? false;
        // Hugging Face's rule per family: Mistral windows whenever sliding_window is set (MistralConfig has no
        // use_sliding_window, so a stray one is ignored), Qwen2 only with use_sliding_window, Llama never.
        bool useSliding = modelType switch
        {
            "mistral" => true,
            "qwen2" => Bool(json, "use_sliding_window", source) ?? false,
            _ => false,
        };
        // Qwen2 windows only the layers from max_window_layers on; this library windows every layer or none.
        if (modelType == "qwen2" && useSliding && Int(json, "max_window_layers", source) is int windowLayers && windowLayers > 0)
            throw new NotSupportedException($"{source}: use_sliding_window = true with max_window_layers = {windowLayers} is not supported; supported: use_sliding_window = false, or max_window_layers = 0.");

        var config = new ModelConfig
        {
            ModelType = modelType,
            VocabSize = Int(json, "vocab_size", source) ?? throw Missing("vocab_size", source),
            HiddenSize = hidden,
            IntermediateSize = Int(json, "intermediate_size", source) ?? throw Missing("intermediate_size", source),
            NumHiddenLayers = Int(json, "num_hidden_layers", source) ?? throw Missing("num_hidden_layers", source),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = Number(json, "rms_norm_eps", source) ?? 1e-6,
            RopeTheta = Number(json, "rope_theta", source) ?? 10000,
            RopeScaling = ParseRopeScaling(json["rope_scaling"], source),
            MaxPositionEmbeddings = Int(json, "max_position_embeddings", source) ?? 2048,
            TieWordEmbeddings = Bool(json, "tie_word_embeddings", source) ?? false,
            QkvBias = modelType == "qwen2" || attentionBias,
            OutputBias = modelType == "llama" && attentionBias,
            MlpBias = Bool(json, "mlp_bias", source) ?? false,
            SlidingWindow = useSliding ? Int(json, "sliding_window", source) : null,
            BosTokenId = Int(json, "bos_token_id", source),
            EosTokenIds = IntList(json, "eos_token_id", source),
            PadTokenId = Int(json, "pad_token_id", source),
        };
        config.Validate(source);
        return config;
    }

    /// <summary>Throws when the values cannot describe a working model; names the offending field.</summary>
    public void Validate(string source = "config")
    {
        void Positive(string field, double value)
        {
            if (!(value > 0)) throw new InvalidDataException($"{source}: {field} must be positive, found {value}.");
        }
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("head_dim", HeadDim);
        Positive("rms_norm_eps", RmsNormEps);
        Positive("rope_theta", RopeTheta);
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new InvalidDataException($"{source}: num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads}).");
        if (HeadDim % 2 != 0)
            throw new InvalidDataException($"{source}: head_dim ({HeadDim}) must be even for rotary embeddings.");
        if (SlidingWindow is int w && w <= 0)
            throw new InvalidDataException($"{source}: sliding_window must be positive, found {w}.");
    }

    /// <summary>The config as Hugging Face writes it, for saving a model directory.</summary>
    public JsonObject ToJson()
    {
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType switch { "qwen2" => "Qwen2ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM" }),
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["tie_word_embeddings"] = TieWordEmbeddings,
        };
        if (ModelType == "llama")
        {
            json["attention_bias"] = QkvBias;
            json["mlp_bias"] = MlpBias;
        }
        if (ModelType == "qwen2") json["use_sliding_window"] = SlidingWindow is not null;
        if (ModelType != "llama") json["sliding_window"] = SlidingWindow;
        if (RopeScaling is { } s)
        {
            var scaling = new JsonObject { ["rope_type"] = s.Type, ["factor"] = s.Factor };
            if (s.Type == "llama3")
            {
                scaling["low_freq_factor"] = s.LowFreqFactor;
                scaling["high_freq_factor"] = s.HighFreqFactor;
                scaling["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings;
            }
            json["rope_scaling"] = scaling;
        }
        if (BosTokenId is int bos) json["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) json["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) json["eos_token_id"] = new JsonArray(EosTokenIds.Select(id => (JsonNode?)id).ToArray());
        if (PadTokenId is int pad) json["pad_token_id"] = pad;
        return json;
    }

    static RopeScaling? ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null) return null;
        if (node is not JsonObject scaling) throw new InvalidDataException($"{source}: rope_scaling must be an object or null.");
        string field = "rope_scaling.rope_type";
        string? type = Text(scaling, "rope_type", source) ?? Text(scaling, "type", source);
        if (type is null) throw Missing(field, source);
        if (type == "default") return null;
        double factor = Number(scaling, "factor", source) ?? throw Missing("rope_scaling.factor", source);
        return type switch
        {
            "linear" => new RopeScaling { Type = type, Factor = factor },
            "llama3" => new RopeScaling
            {
                Type = type,
                Factor = factor,
                LowFreqFactor = Number(scaling, "low_freq_factor", source) ?? throw Missing("rope_scaling.low_freq_factor", source),
                HighFreqFactor = Number(scaling, "high_freq_factor", source) ?? throw Missing("rope_scaling.high_freq_factor", source),
                OriginalMaxPositionEmbeddings = Number(scaling, "original_max_position_embeddings", source)
                    ?? throw Missing("rope_scaling.original_max_position_embeddings", source),
            },
            _ => throw new NotSupportedException($"{source}: {field} '{type}' is not supported; supported: default, linear, llama3."),
        };
    }

    static InvalidDataException Missing(string field, string source) => new($"{source}: required field '{field}' is missing.");

    static JsonNode? Field(JsonObject json, string name) => json.TryGetPropertyValue(name, out var node) ? node : null;

    static string? Text(JsonObject json, string name, string source) => Field(json, name) switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new InvalidDataException($"{source}: field '{name}' must be a string."),
    };

    static double? Number(JsonObject json, string name, string source) => Field(json, name) switch
    {
        null => null,
        // Parsed files hold JsonElements; configs built in code hold CLR numbers of any type.
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.Deserialize<double>(),
        _ => throw new InvalidDataException($"{source}: field '{name}' must be a number."),
    };

    static int? Int(JsonObject json, string name, string source)
    {
        double? value = Number(json, name, source);
        if (value is null) return null;
        if (value != Math.Floor(value.Value) || Math.Abs(value.Value) > int.MaxValue)
            throw new InvalidDataException($"{source}: field '{name}' must be an integer, found {value}.");
        return (int)value.Value;
    }

    static bool? Bool(JsonObject json, string name, string source) => Field(json, name) switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        _ => throw new InvalidDataException($"{source}: field '{name}' must be true or false."),
    };

    static IReadOnlyList<int> IntList(JsonObject json, string name, string source) => Field(json, name) switch
    {
        null => Array.Empty<int>(),
        JsonArray array => array.Select(n => n is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.Deserialize<int>()
            : throw new InvalidDataException($"{source}: field '{name}' must list integers.")).ToArray(),
        _ => new[] { Int(json, name, source)!.Value },
    };
}
