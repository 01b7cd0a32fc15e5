using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// A flag that means one thing wherever it appears: its name, the sentence <c>--help</c> gives it and the name of its
/// value. Every command that takes it builds its option here (<see cref="Option{T}"/>), so that it parses, is checked
/// and reads the same in every command; a command adds a note only for what is its own (its default, what it seeds).
/// </summary>
internal sealed class Flag(string name, string help, string? helpName = null)
{
    /// <summary>The flag as users type it, e.g. <c>--chunk-size</c>.</summary>
    public string Name { get; } = name;
    /// <summary>What it means, in one sentence (or two), the same in every command.</summary>
    public string Help { get; } = help;
    /// <summary>How --help names its value (<c>int</c>, <c>dir</c>), or null for the value type's own.</summary>
    public string? HelpName { get; } = helpName;

    /// <summary>The help sentence, then a command's own note.</summary>
    public string Describe(string? note = null) => note is null ? Help : $"{Help} {note}";

    /// <summary>
    /// The command-line option of this flag, its value parsed by <see cref="FlagValues"/>: a number that is not one is
    /// refused at parse time naming the flag. <paramref name="note"/> follows the shared sentence.
    /// </summary>
    public Option<T> Option<T>(string? note = null, bool required = false) =>
        FlagValues.Option<T>(Name, Describe(note), HelpName, required);
}

/// <summary>
/// The flags that several commands share, with their help sentences, written once. Train's other settings have their
/// flag names and sentences in <see cref="TrainSetting"/>; flags that one command alone has are written in that command.
/// </summary>
internal static class Flags
{
    public static readonly Flag Model = new("--model",
        "Hugging Face model directory (config.json, safetensors weights, and the tokenizer files where text is involved).", "dir");
    public static readonly Flag Adapter = new("--adapter",
        "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), e.g. OUTPUT/adapter from seco train; the rotary settings it was trained with are applied.", "dir");
    public static readonly Flag Device = new("--device", "auto, cpu, cuda or cuda:N.");
    public static readonly Flag DType = new("--dtype", "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16 or float64.");
    public static readonly Flag ChunkSize = new("--chunk-size",
        "Tokens per chunk, at least 1: the model runs a sequence this many tokens at a time (memory is one chunk's activations plus the key/value cache).", "int");
    public static readonly Flag MaxSequenceLength = new("--max-seq-len",
        "Longest sequence the model runs on at once, 2 to 1048576: longer documents are split into windows of this many tokens.", "int");
    public static readonly Flag Seed = new("--seed", "Random seed: the same seed, inputs and settings give the same result.", "int");
    public static readonly Flag AssistantOnlyLoss = new("--assistant-only-loss",
        "Conversations (messages lines): the assistant's turns only (true, as TRL's assistant_only_loss) or every token the chat template renders (false) are trained on, scored by eval and marked as trained by tokenize.");
    public static readonly Flag SampledChunks = new("--sampled-chunks",
        "Chunks backpropagated per step (SpaCO's t), at least 1; t at or above the chunk count is exact SeCO.");
    public static readonly Flag Compensation = new("--compensation",
        "Which seeds SpaCO's factor k/t multiplies: both (loss and injected cache gradient; unbiased with bernoulli), loss (the authors' released code), cache (the paper's Algorithm 2) or none.");
    public static readonly Flag MaxCompensation = new("--max-compensation",
        "Cap on SpaCO's compensation factor in every mode, at least 1 (the paper recommends 2).");
    public static readonly Flag LoraRank = new("--lora-rank", "LoRA rank r, at least 1.", "int");
    public static readonly Flag FullFineTuning = new("--full-finetune", "Every parameter instead of LoRA adapters.");
    public static readonly Flag RecomputeLayers = new("--recompute-layers",
        "Rebuild a chunk's graph one decoder layer at a time in the backward (activation checkpointing inside the chunk): one layer's activations instead of every layer's, for one more forward of each backpropagated chunk; gradients unchanged.");
    public static readonly Flag MemoryBudget = new("--memory-budget", "Device memory, weights included: a size such as 24GiB, 16GB or 512MiB.", "size");

    // The shape of a model: init-tiny writes one, bench builds one in memory.
    public static readonly Flag Layers = new("--layers", "Decoder layers.", "int");
    public static readonly Flag HiddenSize = new("--hidden-size", "Hidden size.", "int");
    public static readonly Flag Heads = new("--heads", "Query heads.", "int");
    public static readonly Flag KvHeads = new("--kv-heads", "Key/value heads, dividing --heads (fewer than --heads gives grouped-query attention).", "int");
    public static readonly Flag IntermediateSize = new("--intermediate-size", "MLP width.", "int");
}

/// <summary>How flag values are parsed and written, the same for every command and for the configuration file.</summary>
internal static class FlagValues
{
    /// <summary>
    /// An option whose value is parsed here: integers and numbers in invariant form; a value that does not parse is a
    /// parse error naming the flag. Other types are System.CommandLine's (text, true/false). A flag that takes "none" for
    /// null is a text option checked by <see cref="ParsedAs"/>.
    /// </summary>
    public static Option<T> Option<T>(string name, string description, string? helpName = null, bool required = false)
    {
        var type = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        var option = new Option<T>(name) { Description = description, Required = required };
        if (IsNumber(type))
        {
            option.HelpName = helpName ?? (type == typeof(double) ? "number" : "int");
            option.CustomParser = result => ParseToken<T>(result, name, type);
        }
        else if (helpName is not null) option.HelpName = helpName;
        if (type == typeof(bool)) option.Arity = ArgumentArity.ZeroOrOne;
        return option;
    }

    /// <summary>
    /// A text option whose value must parse as <paramref name="type"/> (<paramref name="nullable"/>: or be "none"), checked
    /// at parse time so that a bad value is refused naming the flag before the command runs; the command parses the text
    /// with <see cref="Parse"/>.
    /// </summary>
    public static Option<string?> ParsedAs(this Option<string?> option, Type type, bool nullable)
    {
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                try { Parse(type, nullable, token.Value, option.Name); }
                catch (UsageException e) { result.AddError(e.Message); }
            }
        });
        return option;
    }

    /// <summary>Sets the default value --help shows as [default: ...].</summary>
    public static Option<T> WithDefault<T>(this Option<T> option, T value)
    {
        option.DefaultValueFactory = _ => value;
        return option;
    }

    /// <summary>
    /// Ends the description with a default the option does not hold as its value, in the form --help gives one set with
    /// <see cref="WithDefault"/> (<see cref="DefaultNote"/>): "none", one that depends on other flags, or one that a
    /// flag not given must leave to a configuration file.
    /// </summary>
    public static Option<T> WithDefaultNote<T>(this Option<T> option, string value)
    {
        option.Description = $"{option.Description} {DefaultNote(value)}";
        return option;
    }

    /// <summary>A default as --help shows it, <c>[default: value]</c>: every command's help has one form for it.</summary>
    public static string DefaultNote(string value) => $"[default: {value}]";

    /// <summary>
    /// Accepts only these values (as System.CommandLine's AcceptOnlyFromAmong, and offered as completions); any other is
    /// a parse error that names the flag and lists them on one line.
    /// </summary>
    public static Option<T> OneOf<T>(this Option<T> option, params string[] values)
    {
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
                if (!values.Contains(token.Value, StringComparer.Ordinal))
                    result.AddError($"{option.Name} '{token.Value}' not recognized; must be one of {string.Join(", ", values.Select(v => $"'{v}'"))}.");
        });
        option.CompletionSources.Add(values);
        return option;
    }

    static bool IsNumber(Type type) => type == typeof(int) || type == typeof(long) || type == typeof(double);

    static T ParseToken<T>(ArgumentResult result, string name, Type type)
    {
        if (result.Tokens.Count == 0) return default!;
        try { return (T)Parse(type, nullable: false, result.Tokens[^1].Value, name)!; }
        catch (UsageException e)
        {
            result.AddError(e.Message);
            return default!;
        }
    }

    /// <summary>
    /// Parses a flag's (or a field's) text as <paramref name="type"/>; <paramref name="nullable"/> lets "none" stand for
    /// null; <paramref name="where"/> names the flag or field in errors.
    /// </summary>
    public static object? Parse(Type type, bool nullable, string text, string where)
    {
        string value = text.Trim();
        if (nullable && value.Equals("none", StringComparison.OrdinalIgnoreCase)) return null;
        string orNone = nullable ? " or none" : "";
        if (type == typeof(int))
            return int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw new UsageException($"{where} '{text}' is not an integer{orNone}.");
        if (type == typeof(long))
            return long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) ? l : throw new UsageException($"{where} '{text}' is not an integer{orNone}.");
        if (type == typeof(double))
            return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw new UsageException($"{where} '{text}' is not a number{orNone}.");
        if (type == typeof(bool))
            return bool.TryParse(value, out bool b) ? b : throw new UsageException($"{where} '{text}' is neither true nor false.");
        if (type == typeof(string[]))
            return value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (type.IsEnum) return EnumNames.Parse(type, value, where);
        return text;
    }

    /// <summary>A value as flags and the configuration file write it: none, numbers in invariant form, enum names as flags take them.</summary>
    public static string Display(object? value) => value switch
    {
        null or "" => "none",
        double d when d != 0 && Math.Abs(d) < 1e-3 => d.ToString("0.###e0", CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        string s => s,
        Enum e => EnumNames.Of(e),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        System.Collections.IEnumerable list => string.Join(',', list.Cast<object?>().Select(Display)),
        _ => value.ToString() ?? "",
    };

    /// <summary>
    /// An option error as a command line says it: each option by the flag <paramref name="flagOf"/> gives it, values as
    /// flags write them.
    /// </summary>
    public static string Describe(OptionException e, Func<string, string> flagOf) => e.Describe(flagOf, Display);
}
