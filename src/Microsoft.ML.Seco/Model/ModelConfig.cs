using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// How rotary frequencies are rescaled for long contexts (config.json <c>rope_scaling</c>), with Hugging Face
/// transformers' meaning of each field (modeling_rope_utils.py): <c>linear</c>, <c>llama3</c>, <c>yarn</c> and
/// <c>dynamic</c>.
/// </summary>
public sealed record RopeScaling
{
    /// <summary>The types this library implements.</summary>
    public static readonly IReadOnlyList<string> SupportedTypes = new[] { "linear", "llama3", "yarn", "dynamic" };

    /// <summary>
    /// <c>linear</c> (positions divided by <see cref="Factor"/>), <c>llama3</c> (Llama 3.1 band-wise scaling), <c>yarn</c>
    /// (YaRN: band-wise interpolation between extrapolated and interpolated frequencies, cos and sin scaled by
    /// <see cref="RotaryEmbedding"/>'s attention factor) or <c>dynamic</c> (NTK-aware dynamic scaling: unscaled frequencies
    /// up to max_position_embeddings; longer sequences are refused, see docs/ENGINE.md).
    /// </summary>
    public required string Type { get; init; }
    /// <summary>The scaling factor.</summary>
    public double Factor { get; init; } = 1;
    /// <summary>llama3: frequencies with a wavelength above original context / this factor are divided by <see cref="Factor"/>.</summary>
    public double LowFreqFactor { get; init; } = 1;
    /// <summary>llama3: frequencies with a wavelength below original context / this factor are kept.</summary>
    public double HighFreqFactor { get; init; } = 4;
    /// <summary>llama3 and yarn: the context length the model was pretrained with (yarn: max_position_embeddings when config.json omits it).</summary>
    public double OriginalMaxPositionEmbeddings { get; init; } = 8192;
    /// <summary>yarn: rotations over the original context above which a dimension is extrapolated (kept). Default 32.</summary>
    public double BetaFast { get; init; } = 32;
    /// <summary>yarn: rotations over the original context below which a dimension is interpolated (divided by the factor). Default 1.</summary>
    public double BetaSlow { get; init; } = 1;
    /// <summary>yarn: the factor cos and sin are multiplied by; null computes it from <see cref="Factor"/>, <see cref="Mscale"/> and <see cref="MscaleAllDim"/>.</summary>
    public double? AttentionFactor { get; init; }
    /// <summary>yarn (DeepSeek): with <see cref="MscaleAllDim"/>, the attention factor is mscale(factor, this) / mscale(factor, mscale_all_dim).</summary>
    public double? Mscale { get; init; }
    /// <summary>yarn (DeepSeek): see <see cref="Mscale"/>.</summary>
    public double? MscaleAllDim { get; init; }
    /// <summary>yarn: round the correction range to whole dimensions (floor / ceil). Default true.</summary>
    public bool Truncate { get; init; } = true;

    /// <summary>Throws when a field cannot describe a scaling; names the field.</summary>
    public void Validate(string source = "config")
    {
        void Positive(string field, double value)
        {
            if (!(value > 0) || double.IsInfinity(value)) throw new InvalidDataException($"{source}: rope_scaling.{field} must be a positive number, found {value}.");
        }
        if (!SupportedTypes.Contains(Type))
            throw new NotSupportedException($"{source}: rope_scaling.rope_type '{Type}' is not supported; supported: default, {string.Join(", ", SupportedTypes)}.");
        Positive("factor", Factor);
        if (Type is "llama3")
        {
            Positive("low_freq_factor", LowFreqFactor);
            Positive("high_freq_factor", HighFreqFactor);
            if (HighFreqFactor <= LowFreqFactor)
                throw new InvalidDataException($"{source}: rope_scaling.high_freq_factor ({HighFreqFactor}) must be above low_freq_factor ({LowFreqFactor}).");
        }
        if (Type is "llama3" or "yarn") Positive("original_max_position_embeddings", OriginalMaxPositionEmbeddings);
        if (Type is "yarn")
        {
            Positive("beta_fast", BetaFast);
            Positive("beta_slow", BetaSlow);
            if (AttentionFactor is double a) Positive("attention_factor", a);
        }
    }

    /// <summary>The scaling as config.json writes it: every field of its type, so that it reads back the same.</summary>
    public JsonObject ToJson()
    {
        var json = new JsonObject { ["rope_type"] = Type, ["factor"] = Factor };
        if (Type is "llama3")
        {
            json["low_freq_factor"] = LowFreqFactor;
            json["high_freq_factor"] = HighFreqFactor;
        }
        if (Type is "llama3" or "yarn") json["original_max_position_embeddings"] = OriginalMaxPositionEmbeddings;
        if (Type is "yarn")
        {
            json["beta_fast"] = BetaFast;
            json["beta_slow"] = BetaSlow;
            if (AttentionFactor is double a) json["attention_factor"] = a;
            if (Mscale is double m) json["mscale"] = m;
            if (MscaleAllDim is double mad) json["mscale_all_dim"] = mad;
            json["truncate"] = Truncate;
        }
        return json;
    }

    /// <summary>One line for logs: the type and its fields.</summary>
    public override string ToString() => $"{Type} {ToJson().ToJsonString()}";
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
        int maxPositions = Int(json, "max_position_embeddings", source) ?? 2048;
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
            RopeScaling = ParseRopeScaling(json["rope_scaling"], maxPositions, source),
            MaxPositionEmbeddings = maxPositions,
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
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        RopeScaling?.Validate(source);
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
        // Written when null too, so that a config that removed a base model's scaling reads back without it.
        json["rope_scaling"] = RopeScaling?.ToJson();
        if (BosTokenId is int bos) json["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) json["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) json["eos_token_id"] = new JsonArray(EosTokenIds.Select(id => (JsonNode?)id).ToArray());
        if (PadTokenId is int pad) json["pad_token_id"] = pad;
        return json;
    }

    /// <summary>rope_theta and rope_scaling (null when none) as config.json writes them.</summary>
    public JsonObject RopeJson() => new() { ["rope_theta"] = RopeTheta, ["rope_scaling"] = RopeScaling?.ToJson() };

    /// <summary>
    /// This config with the rope_theta and rope_scaling that <paramref name="json"/> holds (a config.json, or what
    /// <see cref="RopeJson"/> wrote); a field it lacks keeps this config's value, rope_scaling null removes the scaling.
    /// <paramref name="source"/> names the file in errors.
    /// </summary>
    /// <exception cref="InvalidDataException">A field has the wrong type or is out of range.</exception>
    /// <exception cref="NotSupportedException">The scaling is of a type this library does not implement.</exception>
    public ModelConfig WithRope(JsonObject json, string source)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            var config = this with
            {
                RopeTheta = Number(json, "rope_theta", source) ?? RopeTheta,
                RopeScaling = json.ContainsKey("rope_scaling") ? ParseRopeScaling(json["rope_scaling"], MaxPositionEmbeddings, source) : RopeScaling,
            };
            config.Validate(source);
            return config;
        }
        catch (Exception e) when (e is JsonException or ArgumentException) { throw new InvalidDataException($"{source}: {e.Message}", e); }
    }

    static RopeScaling? ParseRopeScaling(JsonNode? node, double maxPositionEmbeddings, string source)
    {
        if (node is null) return null;
        if (node is not JsonObject scaling) throw new InvalidDataException($"{source}: rope_scaling must be an object or null.");
        // transformers reads rope_type, then the older spelling type.
        string? type = Text(scaling, "rope_type", source) ?? Text(scaling, "type", source);
        if (type is null) throw Missing("rope_scaling.rope_type", source);
        if (type == "default") return null;
        if (!RopeScaling.SupportedTypes.Contains(type))
            throw new NotSupportedException($"{source}: rope_scaling.rope_type '{type}' is not supported; supported: default, {string.Join(", ", RopeScaling.SupportedTypes)}.");
        double? Optional(string name) => Number(scaling, name, source);
        double Required(string name) => Optional(name) ?? throw Missing("rope_scaling." + name, source);
        RopeScaling result = type switch
        {
            "linear" or "dynamic" => new RopeScaling { Type = type, Factor = Required("factor") },
            "llama3" => new RopeScaling
            {
                Type = type,
                Factor = Required("factor"),
                LowFreqFactor = Required("low_freq_factor"),
                HighFreqFactor = Required("high_freq_factor"),
                OriginalMaxPositionEmbeddings = Required("original_max_position_embeddings"),
            },
            _ => Yarn(),
        };
        result.Validate(source);
        return result;

        RopeScaling Yarn()
        {
            // As transformers' _compute_yarn_parameters (v5): original_max_position_embeddings defaults to
            // max_position_embeddings; an explicit factor wins, and only a missing one is their ratio. beta_fast and
            // beta_slow fall back to 32 and 1 when absent or 0 (Python's `or`).
            double original = Optional("original_max_position_embeddings") ?? maxPositionEmbeddings;
            return new RopeScaling
            {
                Type = type,
                OriginalMaxPositionEmbeddings = original,
                Factor = Optional("factor") ?? maxPositionEmbeddings / original,
                BetaFast = Optional("beta_fast") is double fast && fast != 0 ? fast : 32,
                BetaSlow = Optional("beta_slow") is double slow && slow != 0 ? slow : 1,
                AttentionFactor = Optional("attention_factor"),
                Mscale = Optional("mscale"),
                MscaleAllDim = Optional("mscale_all_dim"),
                Truncate = Bool(scaling, "truncate", source) ?? true,
            };
        }
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
