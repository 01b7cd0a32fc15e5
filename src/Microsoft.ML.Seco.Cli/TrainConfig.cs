using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// The train command's configuration file: the fields of <see cref="ChunkwiseLoraTrainer.Options"/> in camelCase, plus
/// the data and output paths. Every field defaults to the library's default; unknown fields and wrong types are errors.
/// The effective configuration (file + flags) is written to the output folder as seco-config.json in the same shape.
/// </summary>
internal sealed class TrainConfig
{
    public const string FileName = "seco-config.json";
    static readonly ChunkwiseLoraTrainer.Options Defaults = new();

    static readonly JsonSerializerOptions Reading = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        RespectNullableAnnotations = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    static readonly JsonSerializerOptions Writing = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    // Paths
    public string? ModelPath { get; set; }
    public string? Data { get; set; }
    public string? ValidationData { get; set; }
    public string? Output { get; set; }

    // Data
    public string TextColumnName { get; set; } = Defaults.TextColumnName;
    public int MaxSequenceLength { get; set; } = Defaults.MaxSequenceLength;
    public string Overflow { get; set; } = "split";

    // Chunk-wise optimization
    public int ChunkSize { get; set; } = Defaults.ChunkSize;
    public int? SampledChunks { get; set; } = Defaults.SampledChunks;
    public string Sampler { get; set; } = "bernoulli";
    /// <summary>both, loss, cache or none; null = both (or what the earlier <see cref="Compensate"/> says).</summary>
    public string? Compensation { get; set; }
    /// <summary>The earlier name of <see cref="Compensation"/> (true = both, false = none), still read so old configurations load; never written.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? Compensate { get; set; }
    public double? MaxCompensation { get; set; } = Defaults.MaxCompensation;

    // LoRA
    public int LoraRank { get; set; } = Defaults.LoraRank;
    public double LoraAlpha { get; set; } = Defaults.LoraAlpha;
    public double LoraDropout { get; set; } = Defaults.LoraDropout;
    public string[] LoraTargetModules { get; set; } = Defaults.LoraTargetModules;
    public bool FullFineTuning { get; set; } = Defaults.FullFineTuning;

    // Optimisation
    public int BatchSize { get; set; } = Defaults.BatchSize;
    public int MaxEpoch { get; set; } = Defaults.MaxEpoch;
    public int? MaxSteps { get; set; } = Defaults.MaxSteps;
    public double LearningRate { get; set; } = Defaults.LearningRate;
    public double FinalLearningRateRatio { get; set; } = Defaults.FinalLearningRateRatio;
    public int WarmupSteps { get; set; } = Defaults.WarmupSteps;
    public double? WarmupRatio { get; set; } = Defaults.WarmupRatio;
    public string Schedule { get; set; } = "cosine";
    public double WeightDecay { get; set; } = Defaults.WeightDecay;
    public double Beta1 { get; set; } = Defaults.Beta1;
    public double Beta2 { get; set; } = Defaults.Beta2;
    public double Epsilon { get; set; } = Defaults.Epsilon;
    public double? MaxGradNorm { get; set; } = Defaults.MaxGradNorm;
    public int GradientAccumulationSteps { get; set; } = Defaults.GradientAccumulationSteps;

    // Runtime
    public string Device { get; set; } = Defaults.Device;
    public string DType { get; set; } = Defaults.DType;
    public int Seed { get; set; }
    public int CheckpointEverySteps { get; set; } = Defaults.CheckpointEverySteps;

    /// <summary>Reads a configuration file; errors name the file, the field and (when known) the line and column.</summary>
    public static TrainConfig Load(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"--config '{path}' does not exist.");
        try
        {
            return JsonSerializer.Deserialize<TrainConfig>(File.ReadAllText(path), Reading)
                ?? throw new UsageException($"{path}: the configuration is null; expected a JSON object.");
        }
        catch (JsonException e)
        {
            throw new UsageException($"{path}: {Describe(e)}");
        }
    }

    static string Describe(JsonException e)
    {
        string field = e.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : e.Path ?? "";
        string where = e.LineNumber is long line ? $" (line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1})" : "";
        string message = e.Message;
        if (message.Contains("could not be mapped", StringComparison.Ordinal))
            return $"unknown field '{field}'{where}; the fields are the options' names in camelCase (e.g. chunkSize, learningRate) plus data, validationData and output.";
        if (message.Contains("could not be converted", StringComparison.Ordinal))
            return $"field '{field}' has the wrong type{where}{ExpectedType(field)}.";
        if (message.Contains("null", StringComparison.OrdinalIgnoreCase) && field.Length > 0)
            return $"field '{field}' cannot be null{where}.";
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return $"invalid JSON{where}: {(cut > 0 ? message[..cut] : message)}";
    }

    static string ExpectedType(string field)
    {
        var property = typeof(TrainConfig).GetProperties().FirstOrDefault(p => string.Equals(p.Name, field, StringComparison.OrdinalIgnoreCase));
        if (property is null) return "";
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        string name = type == typeof(int) ? "an integer" : type == typeof(double) ? "a number" : type == typeof(bool) ? "true or false"
            : type == typeof(string[]) ? "an array of strings" : "a string";
        return $": expected {name}{(Nullable.GetUnderlyingType(property.PropertyType) is not null ? " or null" : "")}";
    }

    public string ToJson() => JsonSerializer.Serialize(this, Writing);

    /// <summary>The library options this configuration describes (paths, progress and cancellation are set by the caller).</summary>
    public ChunkwiseLoraTrainer.Options ToOptions() => new()
    {
        ModelPath = ModelPath ?? "",
        TextColumnName = TextColumnName,
        MaxSequenceLength = MaxSequenceLength,
        Overflow = ParseOverflow(Overflow),
        ChunkSize = ChunkSize,
        SampledChunks = SampledChunks,
        Sampler = ParseSampler(Sampler, "sampler"),
        Compensation = ResolveCompensation(),
        MaxCompensation = MaxCompensation,
        LoraRank = LoraRank,
        LoraAlpha = LoraAlpha,
        LoraDropout = LoraDropout,
        LoraTargetModules = LoraTargetModules,
        FullFineTuning = FullFineTuning,
        BatchSize = BatchSize,
        MaxEpoch = MaxEpoch,
        MaxSteps = MaxSteps,
        LearningRate = LearningRate,
        FinalLearningRateRatio = FinalLearningRateRatio,
        WarmupSteps = WarmupSteps,
        WarmupRatio = WarmupRatio,
        Schedule = ParseSchedule(Schedule),
        WeightDecay = WeightDecay,
        Beta1 = Beta1,
        Beta2 = Beta2,
        Epsilon = Epsilon,
        MaxGradNorm = MaxGradNorm,
        GradientAccumulationSteps = GradientAccumulationSteps,
        Device = Device,
        DType = DType,
        Seed = Seed,
        CheckpointEverySteps = CheckpointEverySteps,
    };

    public static ChunkSampler ParseSampler(string value, string name) => value.Trim().ToLowerInvariant() switch
    {
        "bernoulli" => ChunkSampler.Bernoulli,
        "fixed" or "fixedbudget" or "fixed-budget" => ChunkSampler.FixedBudget,
        "stratified" => ChunkSampler.Stratified,
        _ => throw new UsageException($"{name} '{value}' is not a sampler; use fixed, bernoulli or stratified."),
    };

    Compensation ResolveCompensation()
    {
        if (Compensation is not null && Compensate is not null)
            throw new UsageException("compensate (the earlier name) and compensation are both set; keep only compensation (both, loss, cache or none).");
        return Compensation is string name ? ParseCompensation(name, "compensation")
            : Compensate is false ? Chunkwise.Compensation.None : Chunkwise.Compensation.LossAndCache;
    }

    /// <summary>The names the configuration and --compensation use, by mode.</summary>
    public static string CompensationName(Compensation mode) => mode switch
    {
        Chunkwise.Compensation.LossOnly => "loss",
        Chunkwise.Compensation.CacheOnly => "cache",
        Chunkwise.Compensation.None => "none",
        _ => "both",
    };

    public static Compensation ParseCompensation(string value, string name) => value.Trim().ToLowerInvariant() switch
    {
        "both" or "lossandcache" => Chunkwise.Compensation.LossAndCache,
        "loss" or "lossonly" => Chunkwise.Compensation.LossOnly,
        "cache" or "cacheonly" => Chunkwise.Compensation.CacheOnly,
        "none" => Chunkwise.Compensation.None,
        _ => throw new UsageException($"{name} '{value}' is not a compensation mode; use both, loss, cache or none."),
    };

    public static string SamplerName(ChunkSampler sampler) => sampler switch
    {
        ChunkSampler.FixedBudget => "fixed",
        ChunkSampler.Stratified => "stratified",
        _ => "bernoulli",
    };

    static SequenceOverflow ParseOverflow(string value) => value.Trim().ToLowerInvariant() switch
    {
        "split" => SequenceOverflow.Split,
        "truncate" => SequenceOverflow.Truncate,
        _ => throw new UsageException($"overflow '{value}' is not supported; use split or truncate."),
    };

    static LearningRateSchedule ParseSchedule(string value) =>
        Enum.TryParse<LearningRateSchedule>(value.Trim(), ignoreCase: true, out var schedule) && Enum.IsDefined(schedule) && !int.TryParse(value, out _)
            ? schedule
            : throw new UsageException($"schedule '{value}' is not supported; use constant, linear or cosine.");
}
