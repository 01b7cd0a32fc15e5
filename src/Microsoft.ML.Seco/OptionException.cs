using System.Collections;
using System.Globalization;
using System.Text;

namespace Microsoft.ML.Seco;

/// <summary>
/// An option's value breaks one of its rules. The error is data, not a finished sentence: the option as the record that
/// checks it names it (<see cref="Option"/>, also <see cref="ArgumentException.ParamName"/>), the rule
/// (<see cref="Rule"/>, a sentence in which every option is a placeholder such as <c>{ChunkSize}</c> and the value may
/// appear as <c>{value}</c>) and the value (<see cref="Value"/>). A front end words it with its own names for the
/// options through <see cref="Describe"/>: ML.NET's option fields (<see cref="ChunkwiseLoraTrainer.Options"/>), a
/// configuration file's fields, command-line flags. <see cref="Exception.Message"/> uses the names the record uses.
/// </summary>
/// <remarks>
/// It derives from <see cref="ArgumentOutOfRangeException"/>, itself an <see cref="ArgumentException"/>, so that code
/// catching what the records' <c>Validate</c> methods threw before keeps catching it.
/// </remarks>
public sealed class OptionException : ArgumentOutOfRangeException
{
    /// <summary>The placeholder that stands for the value in a <see cref="Rule"/>.</summary>
    public const string ValuePlaceholder = "{value}";

    readonly object? _value;

    /// <summary>Creates the error.</summary>
    /// <param name="option">The option whose value breaks the rule, as the record names it (e.g. <c>ChunkSize</c>).</param>
    /// <param name="value">The value, or null when the rule is not about one value (a missing or a conflicting setting).</param>
    /// <param name="rule">
    /// The rule as a sentence without its final full stop, every option written as a placeholder in braces
    /// (<c>{ChunkSize} must be at least 1</c>, <c>{WarmupRatio} cannot be combined with {WarmupSteps}</c>) and the value,
    /// where the sentence shows it, as <see cref="ValuePlaceholder"/>. Literal braces are doubled. A rule that does not
    /// show the value is followed by "; got <i>value</i>" when there is a value.
    /// </param>
    /// <param name="innerException">What caused it, if anything.</param>
    public OptionException(string option, object? value, string rule, Exception? innerException = null)
        : base(rule, innerException)
    {
        ArgumentException.ThrowIfNullOrEmpty(option);
        ArgumentNullException.ThrowIfNull(rule);
        Option = option;
        _value = value;
        Rule = rule;
        NamedOptions = Parse(rule).Where(p => p.Option is not (null or ValueName)).Select(p => p.Option!).Prepend(option).Distinct(StringComparer.Ordinal).ToArray();
    }

    /// <summary>The option whose value breaks the rule, as the record that checks it names it.</summary>
    public string Option { get; }

    /// <summary>The rule: a sentence with the options as placeholders (<c>{ChunkSize}</c>) and maybe <see cref="ValuePlaceholder"/>.</summary>
    public string Rule { get; }

    /// <summary>The value that breaks the rule, or null.</summary>
    public object? Value => _value;

    /// <summary>Every option the rule names: <see cref="Option"/> first, then the others in the order the rule names them.</summary>
    public IReadOnlyList<string> NamedOptions { get; }

    /// <inheritdoc/>
    public override string ParamName => Option;

    /// <inheritdoc/>
    public override object? ActualValue => _value;

    /// <summary>The rule worded with the record's names for the options (what <see cref="Describe"/> gives with the names unchanged).</summary>
    public override string Message => Describe(name => name);

    /// <summary>
    /// The rule as one sentence, each option named as <paramref name="optionName"/> spells it (a stage's option field, a
    /// configuration file's field and where it is, a flag) and the value written by <paramref name="formatValue"/>
    /// (default: invariant culture, lists comma-separated, null as "null"). When the rule does not name
    /// <see cref="Option"/> itself, the sentence starts with it ("name: rule").
    /// </summary>
    public string Describe(Func<string, string> optionName, Func<object?, string>? formatValue = null)
    {
        ArgumentNullException.ThrowIfNull(optionName);
        return Render(Rule, Option, _value, optionName, formatValue ?? Format);
    }

    /// <summary>
    /// The same error with the options renamed (a stage that holds a record's fields under names of its own reports the
    /// record's errors in its names); this error becomes the inner exception.
    /// </summary>
    public OptionException WithOptionNames(Func<string, string> rename)
    {
        ArgumentNullException.ThrowIfNull(rename);
        var rule = new StringBuilder(Rule.Length);
        foreach (var (text, option) in Parse(Rule))
        {
            if (option is null) rule.Append(Escape(text));
            else rule.Append('{').Append(option == ValueName ? option : rename(option)).Append('}');
        }
        return new OptionException(rename(Option), _value, rule.ToString(), this);
    }

    /// <summary>Text with its braces doubled, to be part of a <see cref="Rule"/> as it is (a file name, another message).</summary>
    public static string Escape(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Replace("{", "{{", StringComparison.Ordinal).Replace("}", "}}", StringComparison.Ordinal);
    }

    /// <summary>A value as <see cref="Message"/> writes it: invariant culture, lists comma-separated, null as "null".</summary>
    public static string Format(object? value) => value switch
    {
        null => "null",
        string s => s,
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        IEnumerable list => string.Join(", ", list.Cast<object?>().Select(Format)),
        _ => value.ToString() ?? "",
    };

    const string ValueName = "value";

    static string Render(string rule, string option, object? value, Func<string, string> optionName, Func<object?, string> formatValue)
    {
        var text = new StringBuilder(rule.Length + 32);
        bool namesOption = false, showsValue = false;
        foreach (var (literal, name) in Parse(rule))
        {
            if (name is null) text.Append(literal);
            else if (name == ValueName)
            {
                showsValue = true;
                text.Append(formatValue(value));
            }
            else
            {
                namesOption |= name == option;
                text.Append(optionName(name));
            }
        }
        if (!namesOption) text.Insert(0, optionName(option) + ": ");
        if (!showsValue && value is not null) text.Append("; got ").Append(formatValue(value));
        if (text.Length == 0 || text[^1] != '.') text.Append('.');
        return text.ToString();
    }

    // The rule's pieces in order: literal text (Option null) or a placeholder's name. "{{" and "}}" are literal braces;
    // a brace that opens no placeholder is kept as text.
    static IEnumerable<(string Text, string? Option)> Parse(string rule)
    {
        var literal = new StringBuilder();
        for (int i = 0; i < rule.Length; i++)
        {
            char c = rule[i];
            if ((c == '{' || c == '}') && i + 1 < rule.Length && rule[i + 1] == c)
            {
                literal.Append(c);
                i++;
                continue;
            }
            int close = c == '{' ? rule.IndexOf('}', i + 1) : -1;
            if (close > i + 1 && rule.IndexOf('{', i + 1, close - i - 1) < 0)
            {
                if (literal.Length > 0) yield return (literal.ToString(), null);
                literal.Clear();
                yield return ("", rule[(i + 1)..close]);
                i = close;
                continue;
            }
            literal.Append(c);
        }
        if (literal.Length > 0) yield return (literal.ToString(), null);
    }
}
