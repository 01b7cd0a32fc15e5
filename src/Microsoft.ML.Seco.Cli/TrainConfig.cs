using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chunkwise;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// One setting of <c>seco train</c>: a field of <see cref="ChunkwiseLoraTrainer.Options"/>, the configuration file's
/// field (its name in camelCase) and the flag. Names, types and defaults come from the options class itself; a flag that
/// other commands take too (<see cref="Flags"/>) brings its name and help sentence from there, and only the other flags'
/// names (where shorter than the field's) and help sentences are written here.
/// </summary>
internal sealed class TrainSetting
{
    TrainSetting(FieldInfo field, string flag, string help, bool nullable)
    {
        Field = field;
        Flag = flag;
        Help = help;
        Nullable = nullable;
        ConfigName = JsonNamingPolicy.CamelCase.ConvertName(field.Name);
    }

    public FieldInfo Field { get; }
    /// <summary>The option's name (the field of <see cref="ChunkwiseLoraTrainer.Options"/>).</summary>
    public string Name => Field.Name;
    public string ConfigName { get; }
    public string Flag { get; }
    public string Help { get; }
    /// <summary>Whether null is a value (flag value "none", JSON null).</summary>
    public bool Nullable { get; }
    /// <summary>The value type without Nullable&lt;&gt;.</summary>
    public Type ValueType => System.Nullable.GetUnderlyingType(Field.FieldType) ?? Field.FieldType;

    static readonly ChunkwiseLoraTrainer.Options Defaults = new();

    /// <summary>The default, as the options class sets it.</summary>
    public object? Default => Field.GetValue(Defaults);

    /// <summary>The help line: what the setting does, then the options' default.</summary>
    public string Description => $"{Help} {FlagValues.DefaultNote(Display(Default))}";

    /// <summary>
    /// Fields of the options that are not settings of their own: the command sets them from other inputs. A field that is
    /// neither here nor of a supported type is a failure of the test that checks every option has a flag.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> SetElsewhere = new Dictionary<string, string>
    {
        [nameof(ChunkwiseLoraTrainer.Options.PromptColumnName)] = "set when --data holds prompt/response lines",
        [nameof(ChunkwiseLoraTrainer.Options.ResponseColumnName)] = "set when --data holds prompt/response lines",
        [nameof(ChunkwiseLoraTrainer.Options.MessagesColumnName)] = "set when --data holds messages lines",
        [nameof(ChunkwiseLoraTrainer.Options.ValidationSet)] = "--validation-data",
        [nameof(ChunkwiseLoraTrainer.Options.CheckpointDirectory)] = "OUTPUT/checkpoints",
        [nameof(ChunkwiseLoraTrainer.Options.Resume)] = "--resume",
        [nameof(ChunkwiseLoraTrainer.Options.Progress)] = "progress lines, the progress bar and metrics.csv",
        [nameof(ChunkwiseLoraTrainer.Options.CancellationToken)] = "Ctrl+C",
        [nameof(ChunkwiseLoraTrainer.Options.CustomSampler)] = "code only: --sampler names the registered samplers",
        ["Compensate"] = "obsolete name of Compensation; the configuration file still reads 'compensate'",
    };

    // The settings whose flag other commands take too: the flag's name and sentence are the shared ones, and a note says
    // what is train's own.
    static readonly Dictionary<string, (Flag Flag, string? Note)> SharedFlags = new()
    {
        [nameof(ChunkwiseLoraTrainer.Options.ModelPath)] = (Flags.Model, "Required (here or as modelPath in the config)."),
        [nameof(ChunkwiseLoraTrainer.Options.Device)] = (Flags.Device, null),
        [nameof(ChunkwiseLoraTrainer.Options.DType)] = (Flags.DType, null),
        [nameof(ChunkwiseLoraTrainer.Options.AssistantOnlyLoss)] = (Flags.AssistantOnlyLoss, null),
        [nameof(ChunkwiseLoraTrainer.Options.MaxSequenceLength)] = (Flags.MaxSequenceLength, "Longer documents are split or truncated as --overflow says."),
        [nameof(ChunkwiseLoraTrainer.Options.ChunkSize)] = (Flags.ChunkSize, null),
        [nameof(ChunkwiseLoraTrainer.Options.SampledChunks)] = (Flags.SampledChunks, "One selection per micro-batch; none is exact SeCO too."),
        [nameof(ChunkwiseLoraTrainer.Options.Compensation)] = (Flags.Compensation, null),
        [nameof(ChunkwiseLoraTrainer.Options.MaxCompensation)] = (Flags.MaxCompensation, "none: no cap."),
        [nameof(ChunkwiseLoraTrainer.Options.RecomputeLayers)] = (Flags.RecomputeLayers, null),
        [nameof(ChunkwiseLoraTrainer.Options.MemoryBudget)] = (Flags.MemoryBudget, "The run may use this much in all: before the first step the predicted peak of the longest batch is checked against it; none: the device's free memory."),
        [nameof(ChunkwiseLoraTrainer.Options.LoraRank)] = (Flags.LoraRank, null),
        [nameof(ChunkwiseLoraTrainer.Options.FullFineTuning)] = (Flags.FullFineTuning, "Training them all writes merged/ instead of adapter/."),
        [nameof(ChunkwiseLoraTrainer.Options.Seed)] = (Flags.Seed, "Seeds LoRA initialisation, chunk sampling and dropout; none takes the MLContext's seed, which seco sets to 0."),
    };

    // Train's own flags that are shorter than the field's name in kebab-case (and kept for the command lines already written).
    static readonly Dictionary<string, string> FlagNames = new()
    {
        [nameof(ChunkwiseLoraTrainer.Options.TextColumnName)] = "--text-column",
        [nameof(ChunkwiseLoraTrainer.Options.LoraTargetModules)] = "--lora-targets",
        [nameof(ChunkwiseLoraTrainer.Options.MaxEpoch)] = "--epochs",
        [nameof(ChunkwiseLoraTrainer.Options.LearningRate)] = "--lr",
        [nameof(ChunkwiseLoraTrainer.Options.FinalLearningRateRatio)] = "--final-lr-ratio",
        [nameof(ChunkwiseLoraTrainer.Options.GradientAccumulationSteps)] = "--grad-accum",
        [nameof(ChunkwiseLoraTrainer.Options.CheckpointEverySteps)] = "--checkpoint-every",
        [nameof(ChunkwiseLoraTrainer.Options.RopeOriginalMaxPositionEmbeddings)] = "--rope-original-length",
    };

    // What each of train's own settings does, for --help; the default is appended from the options.
    static readonly Dictionary<string, string> HelpTexts = new()
    {
        [nameof(ChunkwiseLoraTrainer.Options.RopeScaling)] = "Rotary scaling applied to the base model before training and recorded with the adapter and merged checkpoints: model (the base model's config.json: its rope_scaling or none), none, linear, dynamic (exact only up to the base model's max_position_embeddings: a longer --max-seq-len is refused), yarn or llama3.",
        [nameof(ChunkwiseLoraTrainer.Options.RopeFactor)] = "Scaling factor, at least 1: required by --rope-scaling linear, dynamic, yarn and llama3, or none.",
        [nameof(ChunkwiseLoraTrainer.Options.RopeOriginalMaxPositionEmbeddings)] = "yarn and llama3: the context length the base model was pretrained with, at least 1, or none for the base model's scaling's own (same type) or its max_position_embeddings.",
        [nameof(ChunkwiseLoraTrainer.Options.RopeTheta)] = "rope_theta (the rotary base), positive, replacing the base model's, or none to keep it.",
        [nameof(ChunkwiseLoraTrainer.Options.TextColumnName)] = "Column of the data view with whole documents (the .jsonl and .txt readers name it Text).",
        [nameof(ChunkwiseLoraTrainer.Options.Overflow)] = "Documents longer than --max-seq-len: split (consecutive windows) or truncate (the first window only).",
        [nameof(ChunkwiseLoraTrainer.Options.Sampler)] = $"SpaCO sampler: {SamplerNames.Help(Chunkwise.Samplers.ChunkSamplers.All)}; stratified needs --compensation none.",
        [nameof(ChunkwiseLoraTrainer.Options.CrossChunkGradients)] = "True lets gradients flow between chunks; false trains each chunk on a detached prefix (no gradient into earlier chunks' keys/values): an ablation, not a way to train.",
        [nameof(ChunkwiseLoraTrainer.Options.LoraAlpha)] = "LoRA alpha (the update is scaled by alpha / r), positive.",
        [nameof(ChunkwiseLoraTrainer.Options.LoraDropout)] = "LoRA dropout in [0, 1).",
        [nameof(ChunkwiseLoraTrainer.Options.LoraTargetModules)] = "Comma-separated projections that get adapters (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).",
        [nameof(ChunkwiseLoraTrainer.Options.BatchSize)] = "Sequences per micro-batch, at least 1.",
        [nameof(ChunkwiseLoraTrainer.Options.MaxEpoch)] = "Passes over the data, at least 1; used only when --max-steps is none.",
        [nameof(ChunkwiseLoraTrainer.Options.MaxSteps)] = "Optimizer steps of the whole run (counted across --resume), at least 1; when set it decides the run's length alone, the data repeating as needed, and --epochs is ignored.",
        [nameof(ChunkwiseLoraTrainer.Options.LearningRate)] = "Peak AdamW learning rate, positive.",
        [nameof(ChunkwiseLoraTrainer.Options.FinalLearningRateRatio)] = "Final learning rate as a fraction of the peak (cosine or linear decay), in [0, 1].",
        [nameof(ChunkwiseLoraTrainer.Options.WarmupSteps)] = "Optimizer steps of linear warm-up, at least 0 (not with --warmup-ratio).",
        [nameof(ChunkwiseLoraTrainer.Options.WarmupRatio)] = "Warm-up as a fraction in [0, 1] of the run's optimizer steps, rounded up (not with --warmup-steps), or none.",
        [nameof(ChunkwiseLoraTrainer.Options.Schedule)] = "Learning-rate schedule after warm-up: constant, linear or cosine.",
        [nameof(ChunkwiseLoraTrainer.Options.WeightDecay)] = "AdamW weight decay (matrices only), at least 0.",
        [nameof(ChunkwiseLoraTrainer.Options.Beta1)] = "AdamW beta1, in [0, 1).",
        [nameof(ChunkwiseLoraTrainer.Options.Beta2)] = "AdamW beta2, in [0, 1).",
        [nameof(ChunkwiseLoraTrainer.Options.Epsilon)] = "AdamW epsilon, at least 0.",
        [nameof(ChunkwiseLoraTrainer.Options.MaxGradNorm)] = "Clip the gradient's global L2 norm to this (positive), or none for no clipping.",
        [nameof(ChunkwiseLoraTrainer.Options.GradientAccumulationSteps)] = "Micro-batches per optimizer step, at least 1.",
        [nameof(ChunkwiseLoraTrainer.Options.NonFiniteLoss)] = "A NaN or infinite loss or gradient: stop (the run ends naming the step and the rows) or skipbatch (that optimizer step is dropped and counted).",
        [nameof(ChunkwiseLoraTrainer.Options.MaxNewTokens)] = "Tokens model.seco generates per row into a Completion column for prompt/response data, at least 0 (0: no Completion column).",
        [nameof(ChunkwiseLoraTrainer.Options.CheckpointEverySteps)] = "Optimizer steps between saved training states in OUTPUT/checkpoints (and always at the end), at least 1.",
    };

    static readonly Type[] Supported = [typeof(int), typeof(double), typeof(bool), typeof(string), typeof(string[])];

    /// <summary>The flag of an option of <see cref="ChunkwiseLoraTrainer.Options"/> (its name when it has none): how a command line names it.</summary>
    public static string FlagOf(string optionName) => All.FirstOrDefault(s => s.Name == optionName)?.Flag ?? optionName;

    /// <summary>Every setting, in the options' declaration order.</summary>
    public static readonly IReadOnlyList<TrainSetting> All = Build();

    static List<TrainSetting> Build()
    {
        var nullability = new NullabilityInfoContext();
        var settings = new List<TrainSetting>();
        foreach (var field in typeof(ChunkwiseLoraTrainer.Options).GetFields(BindingFlags.Public | BindingFlags.Instance))
        {
            if (SetElsewhere.ContainsKey(field.Name)) continue;
            var type = System.Nullable.GetUnderlyingType(field.FieldType) ?? field.FieldType;
            if (!type.IsEnum && !Supported.Contains(type)) continue;
            bool nullable = System.Nullable.GetUnderlyingType(field.FieldType) is not null
                || (!field.FieldType.IsValueType && nullability.Create(field).WriteState == NullabilityState.Nullable);
            string flag, help;
            if (SharedFlags.TryGetValue(field.Name, out var shared)) (flag, help) = (shared.Flag.Name, shared.Flag.Describe(shared.Note));
            else
            {
                flag = FlagNames.GetValueOrDefault(field.Name) ?? "--" + JsonNamingPolicy.KebabCaseLower.ConvertName(field.Name);
                // A field added to the options after this table still gets a flag; the test of help texts asks for a line here.
                help = HelpTexts.GetValueOrDefault(field.Name) ?? $"ChunkwiseLoraTrainer.Options.{field.Name}.";
            }
            settings.Add(new TrainSetting(field, flag, help, nullable));
        }
        return settings;
    }

    public static bool HasWrittenHelp(TrainSetting setting) => HelpTexts.ContainsKey(setting.Name) || SharedFlags.ContainsKey(setting.Name);

    /// <summary>The shared flag this setting's flag is, or null for one of train's own.</summary>
    public Flag? SharedFlag => SharedFlags.TryGetValue(Name, out var shared) ? shared.Flag : null;

    public static TrainSetting? ByName(string optionName) => All.FirstOrDefault(s => s.Name == optionName);

    /// <summary>A value as flags and the configuration file write it (<see cref="FlagValues.Display"/>).</summary>
    public static string Display(object? value) => FlagValues.Display(value);

    /// <summary>Parses a flag's text; <paramref name="where"/> names the flag (or field) in errors.</summary>
    public object? Parse(string text, string where) => FlagValues.Parse(ValueType, Nullable, text, where);

    /// <summary>Reads the JSON value the reader stands on; <paramref name="where"/> names the field in errors.</summary>
    public object? Read(ref Utf8JsonReader reader, string where)
    {
        var type = ValueType;
        if (reader.TokenType == JsonTokenType.Null)
            return Nullable ? null : throw new UsageException($"{where} cannot be null; expected {Expected(type)}.");
        string orNull = Nullable ? " or null" : "";
        object? value = null;
        if (type == typeof(int) && reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int i)) value = i;
        else if (type == typeof(double) && reader.TokenType == JsonTokenType.Number) value = reader.GetDouble();
        else if (type == typeof(bool) && reader.TokenType is JsonTokenType.True or JsonTokenType.False) value = reader.GetBoolean();
        else if ((type == typeof(string) || type.IsEnum) && reader.TokenType == JsonTokenType.String)
            value = type.IsEnum ? EnumNames.Parse(type, reader.GetString()!, where) : reader.GetString();
        else if (type == typeof(string[]) && reader.TokenType == JsonTokenType.StartArray)
        {
            var items = new List<string>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.String) throw new UsageException($"{where} has the wrong type: expected {Expected(type)}{orNull}.");
                items.Add(reader.GetString()!);
            }
            value = items.ToArray();
        }
        if (value is null)
        {
            reader.Skip();
            throw new UsageException($"{where} has the wrong type: expected {Expected(type)}{orNull}.");
        }
        return value;
    }

    /// <summary>The value as the configuration file writes it.</summary>
    public JsonNode? ToJson(object? value) => value switch
    {
        null => null,
        string[] list => new JsonArray(list.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray()),
        Enum e => JsonValue.Create(EnumNames.Of(e)),
        int i => JsonValue.Create(i),
        double d => JsonValue.Create(d),
        bool b => JsonValue.Create(b),
        string s => JsonValue.Create(s),
        _ => throw new NotSupportedException($"{Name} has a type the configuration file cannot hold."),
    };

    static string Expected(Type type) =>
        type == typeof(int) ? "an integer" : type == typeof(double) ? "a number" : type == typeof(bool) ? "true or false"
        : type == typeof(string[]) ? "an array of strings" : type.IsEnum ? $"one of {string.Join(", ", EnumNames.All(type))}" : "a string";
}

/// <summary>The names flags and configuration files give enum values: the member's name in lower case, or a shorter alias.</summary>
internal static class EnumNames
{
    static readonly Dictionary<object, string> Aliases = new()
    {
        [Chunkwise.Compensation.LossAndCache] = "both",
        [Chunkwise.Compensation.LossOnly] = "loss",
        [Chunkwise.Compensation.CacheOnly] = "cache",
    };

    public static string Of(Enum value) => value is ChunkSampler sampler ? Chunkwise.Samplers.ChunkSamplers.Get(sampler).Name
        : Aliases.GetValueOrDefault(value) ?? value.ToString().ToLowerInvariant();

    public static string[] All(Type type) => Enum.GetValues(type).Cast<Enum>().Select(Of).ToArray();

    /// <summary>Accepts the name <see cref="Of"/> gives, the member's name in any case, or in kebab-case.</summary>
    public static object Parse(Type type, string text, string where)
    {
        string value = text.Trim();
        foreach (Enum member in Enum.GetValues(type))
        {
            if (value.Equals(Of(member), StringComparison.OrdinalIgnoreCase) || value.Equals(member.ToString(), StringComparison.OrdinalIgnoreCase)
                || value.Equals(JsonNamingPolicy.KebabCaseLower.ConvertName(member.ToString()), StringComparison.OrdinalIgnoreCase))
                return member;
        }
        throw new UsageException($"{where} '{text}' is not one of {string.Join(", ", All(type))}.");
    }

    public static T Parse<T>(string text, string where) where T : struct, Enum => (T)Parse(typeof(T), text, where);
}

/// <summary>
/// The train command's configuration: the options (from the file, then the flags), the data and output paths, and where
/// each setting came from, so that an error names the flag the user typed or the file's field with its line.
/// The configuration file holds the settings' fields in camelCase plus data, validationData and output; unknown fields
/// and wrong types are errors. The effective configuration is written to the output folder as seco-config.json.
/// </summary>
internal sealed class TrainConfig
{
    public const string FileName = "seco-config.json";

    public ChunkwiseLoraTrainer.Options Options { get; } = new();
    public string? Data { get; set; }
    public string? ValidationData { get; set; }
    public string? Output { get; set; }

    /// <summary>Where each option (by field name) and path (data, validationData, output) was set: the flag, or file, field and line.</summary>
    public Dictionary<string, string> Origins { get; } = new(StringComparer.Ordinal);

    public object? this[TrainSetting setting]
    {
        get => setting.Field.GetValue(Options);
        set => setting.Field.SetValue(Options, value);
    }

    /// <summary>Sets a setting from a flag.</summary>
    public void Set(TrainSetting setting, object? value, string origin)
    {
        this[setting] = value;
        Origins[setting.Name] = origin;
    }

    /// <summary>How an error refers to a setting: the flag or the file's field where it was set, else the flag.</summary>
    public string Where(TrainSetting setting) => Origins.GetValueOrDefault(setting.Name) ?? setting.Flag;

    /// <summary>Reads a configuration file; errors name the file, the field and its line and column.</summary>
    public static TrainConfig Load(string path)
    {
        if (Directory.Exists(path)) throw new UsageException($"--config '{path}' is a folder; expected a JSON file.");
        if (!File.Exists(path)) throw new UsageException($"--config '{path}' does not exist.");
        byte[] bytes = File.ReadAllBytes(path);
        var config = new TrainConfig();
        bool? compensate = null;
        string? compensateAt = null;
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new UsageException($"{path}: expected a JSON object {{ \"field\": value, ... }}{At(bytes, reader.TokenStartIndex)}.");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                string name = reader.GetString()!;
                string where = $"{path}: field '{name}'{At(bytes, reader.TokenStartIndex)}";
                reader.Read();
                switch (name)
                {
                    case "data": config.Data = ReadPath(ref reader, where); config.Origins["data"] = where; break;
                    case "validationData": config.ValidationData = ReadPath(ref reader, where); config.Origins["validationData"] = where; break;
                    case "output": config.Output = ReadPath(ref reader, where); config.Origins["output"] = where; break;
                    case "compensate":
                        compensateAt = where;
                        compensate = reader.TokenType switch
                        {
                            JsonTokenType.True => true,
                            JsonTokenType.False => false,
                            JsonTokenType.Null => null,
                            _ => throw new UsageException($"{where} has the wrong type: expected true or false."),
                        };
                        break;
                    default:
                        var setting = TrainSetting.All.FirstOrDefault(s => s.ConfigName == name)
                            ?? throw new UsageException($"{where}: unknown field; the fields are the options' names in camelCase (e.g. chunkSize, learningRate) plus data, validationData and output.");
                        config.Set(setting, setting.Read(ref reader, where), where);
                        break;
                }
            }
            // Checks that nothing but whitespace and comments follows.
            if (reader.Read()) throw new UsageException($"{path}: text after the closing brace{At(bytes, reader.TokenStartIndex)}.");
        }
        catch (JsonException e)
        {
            int cut = e.Message.IndexOf(" LineNumber:", StringComparison.Ordinal);
            throw new UsageException($"{path}: invalid JSON (line {e.LineNumber + 1}, column {e.BytePositionInLine + 1}): {(cut > 0 ? e.Message[..cut] : e.Message)}");
        }
        if (compensate is bool c)
        {
            var mode = TrainSetting.ByName(nameof(ChunkwiseLoraTrainer.Options.Compensation))!;
            if (config.Origins.ContainsKey(mode.Name))
                throw new UsageException($"{compensateAt}: compensate (the earlier name) and compensation are both set; keep only compensation (both, loss, cache or none).");
            config.Set(mode, c ? Chunkwise.Compensation.LossAndCache : Chunkwise.Compensation.None, compensateAt!);
        }
        return config;
    }

    static string? ReadPath(ref Utf8JsonReader reader, string where) => reader.TokenType switch
    {
        JsonTokenType.String => reader.GetString(),
        JsonTokenType.Null => null,
        _ => throw new UsageException($"{where} has the wrong type: expected a path (a string) or null."),
    };

    // Utf8JsonReader knows byte offsets, not lines: count them, columns in characters.
    static string At(byte[] bytes, long offset)
    {
        int end = (int)Math.Min(offset, bytes.Length);
        int line = 1, lineStart = 0;
        for (int i = 0; i < end; i++)
            if (bytes[i] == (byte)'\n') { line++; lineStart = i + 1; }
        int column = Encoding.UTF8.GetCharCount(bytes, lineStart, end - lineStart) + 1;
        return $" (line {line}, column {column})";
    }

    /// <summary>The effective configuration, in the shape <see cref="Load"/> reads.</summary>
    public string ToJson()
    {
        var json = new JsonObject();
        foreach (var setting in TrainSetting.All) json[setting.ConfigName] = setting.ToJson(this[setting]);
        json["data"] = Data;
        json["validationData"] = ValidationData;
        json["output"] = Output;
        return json.ToJsonString(Cli.Json.Indented);
    }

    /// <summary>
    /// Runs the options' own validation; its error, which names option fields, is worded with the flags or the
    /// configuration file's fields the values came from (<see cref="Describe"/>).
    /// </summary>
    public void Validate()
    {
        try { Options.Validate(); }
        catch (OptionException e) { throw new UsageException(Describe(e)); }
    }

    /// <summary>
    /// An option error with every option it names called where the user set it: the flag, or the configuration file's
    /// field with its line and column; an option not set is called by its flag.
    /// </summary>
    public string Describe(OptionException e) => e.Describe(name => TrainSetting.ByName(name) is { } s ? Where(s) : name, TrainSetting.Display);
}
