using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Lora;

/// <summary>
/// LoRA adapters in Hugging Face PEFT's layout: <c>adapter_config.json</c> and <c>adapter_model.safetensors</c>
/// with keys such as <c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>, so that
/// <c>PeftModel.from_pretrained(base, dir)</c> loads what this library trained, and the other way round.
/// </summary>
public static class PeftAdapter
{
    /// <summary>PEFT's config file name.</summary>
    public const string ConfigFileName = "adapter_config.json";
    /// <summary>PEFT's weights file name.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>The prefix PEFT puts before the base model's parameter names.</summary>
    public const string KeyPrefix = "base_model.model.";
    /// <summary>
    /// The rotary settings the adapter was trained with (rope_theta and rope_scaling, as config.json writes them), beside
    /// PEFT's two files when they are not the base model's own: PEFT does not read it, <see cref="ConfigFor"/> does.
    /// </summary>
    public const string RopeFileName = "seco_rope.json";

    /// <summary>
    /// Writes the model's adapters. The files are written into a fresh folder that then replaces
    /// <paramref name="directory"/>, so an interrupted save never leaves a half-written adapter.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model has no adapter, or an adapter weight holds NaN or infinite values (nothing is written).</exception>
    public static void Save(CausalLM model, string directory, string? baseModelPath = null)
    {
        var config = LoraAdapters.ConfigOf(model) ?? throw new InvalidOperationException("The model has no LoRA adapter to save.");
        var tensors = LoraAdapters.Parameters(model).Select(p => (KeyPrefix + p.Name, (Tensor)p.Parameter)).ToList();
        FiniteWeights.Require(tensors.Select(t => ($"Adapter weight '{t.Item1}'", (Tensor?)t.Item2)), $"the adapter is not saved, so '{directory}' keeps what it held.");
        AtomicFile.WriteDirectory(directory, staging =>
        {
            Directory.CreateDirectory(staging);
            SafeTensorsFile.Write(Path.Combine(staging, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllText(Path.Combine(staging, ConfigFileName), ConfigJson(config, baseModelPath).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            if (RecordsRope(model.Config, baseModelPath))
                File.WriteAllText(Path.Combine(staging, RopeFileName), model.Config.RopeJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }

    // Whether the model's rotary settings need recording: whenever it has a scaling, and whenever they are not those of
    // the base model's config.json (a theta changed, a scaling removed), as far as that file can be read.
    static bool RecordsRope(ModelConfig trained, string? baseModelPath)
    {
        if (trained.RopeScaling is not null) return true;
        if (baseModelPath is null || !File.Exists(Path.Combine(baseModelPath, "config.json"))) return false;
        try
        {
            var original = ModelConfig.Load(baseModelPath);
            return original.RopeScaling is not null || original.RopeTheta != trained.RopeTheta;
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or IOException) { return false; }
    }

    /// <summary>
    /// The config a model needs to run the adapter in <paramref name="directory"/>: <paramref name="baseConfig"/> with the
    /// rotary settings the adapter was trained with (<see cref="RopeFileName"/>), or unchanged when the folder has none
    /// (an adapter of PEFT's, or one trained on the base model's own settings).
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON or holds a value out of range.</exception>
    public static ModelConfig ConfigFor(ModelConfig baseConfig, string directory)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        string path = Path.Combine(directory, RopeFileName);
        if (!File.Exists(path)) return baseConfig;
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: invalid JSON ({e.Message}).", e); }
        return baseConfig.WithRope(json, path);
    }

    /// <summary>
    /// Loads the base model in <paramref name="modelDirectory"/> with the adapter in <paramref name="adapterDirectory"/>
    /// (or none) attached, built with the rotary settings the adapter was trained with (<see cref="ConfigFor"/>), as
    /// PEFT's <c>PeftModel.from_pretrained(base, adapter)</c> does. The model is in training mode, as loaded.
    /// </summary>
    public static CausalLM LoadWithBase(string modelDirectory, string? adapterDirectory, ScalarType dtype, Device device)
    {
        var config = ModelConfig.Load(modelDirectory);
        if (adapterDirectory is not null) config = ConfigFor(config, adapterDirectory);
        var model = ModelDirectory.Load(modelDirectory, config, dtype, device);
        try
        {
            if (adapterDirectory is not null) Load(model, adapterDirectory);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>PEFT's adapter_config.json for a LoRA config.</summary>
    public static JsonObject ConfigJson(LoraConfig config, string? baseModelPath) => new()
    {
        ["peft_type"] = "LORA",
        ["task_type"] = "CAUSAL_LM",
        ["base_model_name_or_path"] = baseModelPath,
        ["r"] = config.Rank,
        ["lora_alpha"] = config.Alpha,
        ["lora_dropout"] = config.Dropout,
        ["target_modules"] = new JsonArray(config.TargetModules.Select(m => (JsonNode?)m).ToArray()),
        ["bias"] = "none",
        ["fan_in_fan_out"] = false,
        ["inference_mode"] = true,
        ["init_lora_weights"] = true,
        ["modules_to_save"] = null,
        ["use_rslora"] = false,
        ["use_dora"] = false,
    };

    /// <summary>Reads adapter_config.json; refuses LoRA variants this library does not implement.</summary>
    /// <exception cref="FileNotFoundException">The folder has no adapter_config.json.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON, lacks a field, or has one of the wrong type or out of range.</exception>
    /// <exception cref="NotSupportedException">The file asks for a PEFT method or LoRA variant this library does not implement.</exception>
    public static LoraConfig ReadConfig(string directory)
    {
        string path = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {ConfigFileName} in adapter directory '{directory}'.", path);
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: invalid JSON ({e.Message}).", e); }
        LoraConfig config;
        try
        {
            string? type = json["peft_type"]?.GetValue<string>();
            if (type != "LORA") throw new NotSupportedException($"{path}: peft_type '{type}' is not supported; supported: LORA.");
            foreach (var flag in new[] { "use_rslora", "use_dora", "fan_in_fan_out" })
                if (json[flag] is JsonValue v && v.GetValueKind() == JsonValueKind.True)
                    throw new NotSupportedException($"{path}: {flag} = true is not supported.");
            if (json["bias"] is JsonValue bias && bias.GetValue<string>() != "none")
                throw new NotSupportedException($"{path}: bias '{bias}' is not supported; supported: none.");
            var targets = json["target_modules"] switch
            {
                JsonArray array => array.Select(n => n?.GetValue<string>() ?? throw new InvalidDataException($"{path}: target_modules holds null.")).ToArray(),
                JsonValue single => new[] { single.GetValue<string>() },
                _ => throw new InvalidDataException($"{path}: target_modules is missing."),
            };
            config = new LoraConfig
            {
                Rank = json["r"]?.GetValue<int>() ?? throw new InvalidDataException($"{path}: r is missing."),
                Alpha = json["lora_alpha"]?.GetValue<double>() ?? throw new InvalidDataException($"{path}: lora_alpha is missing."),
                Dropout = json["lora_dropout"]?.GetValue<double>() ?? 0,
                TargetModules = targets,
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException)
        {
            // JsonNode.GetValue throws the first two for a field of the wrong JSON type or out of range; JsonObject
            // throws ArgumentException on first access when a key appears twice.
            throw new InvalidDataException($"{path}: a field has the wrong type or is out of range ({e.Message}).", e);
        }
        try { config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        return config;
    }

    /// <summary>Attaches the adapter in <paramref name="directory"/> to a model that has none yet, and loads its weights.</summary>
    public static LoraConfig Load(CausalLM model, string directory)
    {
        if (LoraAdapters.ConfigOf(model) is not null) throw new InvalidOperationException("The model already has a LoRA adapter.");
        var config = ReadConfig(directory);
        string weights = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(weights)) throw new FileNotFoundException($"No {WeightsFileName} in adapter directory '{directory}'.", weights);
        LoraAdapters.Attach(model, config);
        using var file = SafeTensorsFile.Open(weights);
        var expected = LoraAdapters.Parameters(model).ToDictionary(p => KeyPrefix + p.Name, p => p.Parameter);
        var missing = expected.Keys.Where(k => !file.Contains(k)).ToList();
        var unexpected = file.TensorNames.Where(k => !expected.ContainsKey(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException($"{weights} does not fit the model: missing {missing.Count} ({string.Join(", ", missing.Take(5))}), unexpected {unexpected.Count} ({string.Join(", ", unexpected.Take(5))}).");
        foreach (var (key, parameter) in expected) file.ReadInto(key, parameter);
        return config;
    }
}
