using System.Globalization;
using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// The names every template sees: <c>true</c>/<c>false</c>/<c>none</c> (and <c>True</c>/<c>False</c>/<c>None</c>),
/// <c>namespace(...)</c>, <c>range(...)</c>, <c>raise_exception(message)</c> and <c>strftime_now(format)</c> on an
/// injectable clock.
/// </summary>
internal static class Globals
{
    /// <summary>The longest <c>range</c>, Jinja's sandbox limit.</summary>
    public const int MaxRange = 100_000;

    public static Scope Create(TimeProvider clock)
    {
        var scope = new Scope();
        scope.Set("true", BooleanValue.True);
        scope.Set("True", BooleanValue.True);
        scope.Set("false", BooleanValue.False);
        scope.Set("False", BooleanValue.False);
        scope.Set("none", NullValue.Instance);
        scope.Set("None", NullValue.Instance);
        scope.Set("namespace", new FunctionValue("namespace", (args, _) => Namespace(args)));
        scope.Set("range", new FunctionValue("range", (args, _) => Range(args)));
        scope.Set("raise_exception", new FunctionValue("raise_exception", (args, _) =>
            throw new TemplateError(args.Positional.Count > 0 ? Operators.RawString(args.Positional[0]) : "", ChatTemplateErrorKind.Raised)));
        scope.Set("strftime_now", new FunctionValue("strftime_now", (args, _) =>
            new StringValue(Strftime(clock.GetLocalNow(), args.Positional.Count > 0 && args.Positional[0] is StringValue f ? f.Value
                : throw TemplateError.Runtime("strftime_now needs a format string")))));
        return scope;
    }

    private static NamespaceValue Namespace(Arguments args)
    {
        if (args.Positional.Count > 1) throw TemplateError.Runtime($"namespace expected at most 1 argument, got {args.Positional.Count}");
        var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
        if (args.Positional.Count == 1)
        {
            switch (args.Positional[0])
            {
                case ObjectValue o:
                    foreach (var (k, v) in o.Entries) entries[k] = v;
                    break;
                case ArrayValue a:
                    foreach (var pair in a.Items)
                    {
                        if (pair is not ArrayValue { Items.Count: 2 } p) throw TemplateError.Runtime("namespace expected an object or an iterable of [key, value] pairs");
                        if (p.Items[0] is not StringValue key) throw TemplateError.Runtime("namespace keys must be strings");
                        entries[key.Value] = p.Items[1];
                    }
                    break;
                default:
                    throw TemplateError.Runtime($"'{args.Positional[0].TypeName}' object is not iterable");
            }
        }
        foreach (var (k, v) in args.Keyword) entries[k] = v;
        return new NamespaceValue(entries);
    }

    private static ArrayValue Range(Arguments args)
    {
        double Num(int i) => args.Positional[i] is NumberValue n ? n.Number : throw TemplateError.Runtime("range() arguments must be numbers");
        if (args.Positional.Count == 0) throw TemplateError.Runtime("range expected at least 1 argument");
        double start = 0, stop, step = 1;
        if (args.Positional.Count == 1) stop = Num(0);
        else
        {
            start = Num(0);
            stop = Num(1);
            if (args.Positional.Count > 2) step = Num(2);
        }
        if (step == 0) throw TemplateError.Runtime("range() step must not be zero");
        if (Math.Ceiling((stop - start) / step) > MaxRange)
            throw TemplateError.Runtime($"Range too big: at most {MaxRange} items (as Jinja's sandbox, which transformers renders with)");
        var items = new List<Value>();
        if (step > 0) for (double i = start; i < stop; i += step) items.Add(new IntegerValue(i));
        else for (double i = start; i > stop; i += step) items.Add(new IntegerValue(i));
        return new ArrayValue(items);
    }

    /// <summary>Python's <c>strftime</c> for the common directives, in English.</summary>
    public static string Strftime(DateTimeOffset t, string format)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                sb.Append(format[i]);
                continue;
            }
            char d = format[++i];
            bool noPad = false;
            if (d == '-' && i + 1 < format.Length)
            {
                noPad = true;
                d = format[++i];
            }
            string Pad(int v) => noPad ? v.ToString(c) : v.ToString("00", c);
            sb.Append(d switch
            {
                'Y' => t.Year.ToString(c),
                'y' => Pad(t.Year % 100),
                'm' => Pad(t.Month),
                'd' => Pad(t.Day),
                'e' => t.Day.ToString(c).PadLeft(2),
                'b' or 'h' => c.DateTimeFormat.GetAbbreviatedMonthName(t.Month),
                'B' => c.DateTimeFormat.GetMonthName(t.Month),
                'a' => c.DateTimeFormat.GetAbbreviatedDayName(t.DayOfWeek),
                'A' => c.DateTimeFormat.GetDayName(t.DayOfWeek),
                'H' => Pad(t.Hour),
                'I' => Pad(t.Hour % 12 == 0 ? 12 : t.Hour % 12),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'M' => Pad(t.Minute),
                'S' => Pad(t.Second),
                'j' => noPad ? t.DayOfYear.ToString(c) : t.DayOfYear.ToString("000", c),
                '%' => "%",
                _ => "%" + (noPad ? "-" : "") + d,
            });
        }
        return sb.ToString();
    }
}
