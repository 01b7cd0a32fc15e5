using System.Globalization;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// The <c>|</c> filters. Those the reference has behave as there (e.g. <c>sort</c> and <c>dictsort</c> ignore case
/// by default, <c>unique</c> does not, <c>indent</c> skips the first and blank lines, <c>int</c> parses like
/// <c>parseInt</c>); Jinja's <c>count</c>, <c>wordcount</c>, <c>round</c>, <c>select</c>, <c>reject</c>,
/// <c>escape</c>, <c>map</c> with a filter name and a few list/string forms are added with Python Jinja's meaning.
/// </summary>
internal static partial class Filters
{
    public static Value Apply(string name, Value operand, Arguments args)
    {
        switch (name)
        {
            case "safe": return operand;
            case "tojson": return new StringValue(ToJson(operand, args));
            case "default" or "d":
            {
                var fallback = args.Get(0, "default_value") ?? StringValue.Empty;
                var boolean = args.Get(1, "boolean") ?? BooleanValue.False;
                if (boolean is not BooleanValue b) throw TemplateError.Runtime("`default` filter flag must be a boolean");
                return operand is UndefinedValue || (b.Value && !operand.IsTruthy) ? fallback : operand;
            }
            case "string" when operand is NullValue: return new StringValue("None");
        }
        return operand switch
        {
            ArrayValue a => ArrayFilter(name, a, args),
            StringValue s => StringFilter(name, s, args),
            NumberValue n => NumberFilter(name, n, args),
            ObjectValue o => ObjectFilter(name, o, args),
            BooleanValue b => name switch
            {
                "bool" => b,
                "int" => new IntegerValue(b.Value ? 1 : 0),
                "float" => new FloatValue(b.Value ? 1 : 0),
                "string" => new StringValue(b.Value ? "true" : "false"),
                _ => throw TemplateError.Runtime($"Unknown BooleanValue filter: {name}"),
            },
            _ => throw TemplateError.Runtime($"Cannot apply filter \"{name}\" to type: {operand.TypeName}"),
        };
    }

    private static string ToJson(Value operand, Arguments args)
    {
        var indent = args.Get(0, "indent") ?? NullValue.Instance;
        if (indent is not (IntegerValue or NullValue)) throw TemplateError.Runtime("If set, indent must be a number");
        var ensureAscii = args.Keyword.GetValueOrDefault("ensure_ascii") ?? BooleanValue.False;
        if (ensureAscii is not BooleanValue ea) throw TemplateError.Runtime("If set, ensure_ascii must be a boolean");
        var sortKeys = args.Keyword.GetValueOrDefault("sort_keys") ?? BooleanValue.False;
        if (sortKeys is not BooleanValue sk) throw TemplateError.Runtime("If set, sort_keys must be a boolean");
        string? itemSep = null, keySep = null;
        var separators = args.Keyword.GetValueOrDefault("separators") ?? NullValue.Instance;
        if (separators is ArrayValue sep)
        {
            if (sep.Items.Count != 2 || sep.Items[0] is not StringValue i || sep.Items[1] is not StringValue k)
                throw TemplateError.Runtime("separators must be a tuple of two strings");
            (itemSep, keySep) = (i.Value, k.Value);
        }
        else if (separators is not NullValue) throw TemplateError.Runtime("If set, separators must be a tuple of two strings");
        int width = indent is IntegerValue iv ? (int)iv.Number : 0;
        return JsonText.Write(operand, new JsonText.Options(width, ea.Value, itemSep, keySep, sk.Value));
    }

    private static Value ArrayFilter(string name, ArrayValue a, Arguments args)
    {
        var items = a.Items;
        switch (name)
        {
            case "list": return a;
            case "first": return items.Count > 0 ? items[0] : UndefinedValue.Instance;
            case "last": return items.Count > 0 ? items[^1] : UndefinedValue.Instance;
            case "length" or "count": return new IntegerValue(items.Count);
            case "reverse": return new ArrayValue(Enumerable.Reverse(items).ToList());
            case "join":
            {
                var separator = args.Get(0, "d") ?? args.Keyword.GetValueOrDefault("separator") ?? StringValue.Empty;
                if (separator is not StringValue sep) throw TemplateError.Runtime("separator must be a string");
                var attribute = args.Keyword.GetValueOrDefault("attribute");
                var parts = attribute is StringValue attr ? items.Select(i => AttributeOf(i, attr.Value)) : items;
                return new StringValue(string.Join(sep.Value, parts.Select(Operators.JoinString)));
            }
            case "string": return new StringValue(JsonText.Write(a, new JsonText.Options(), undefinedAsNull: false));
            case "unique":
            {
                var seen = new HashSet<object>();
                var output = new List<Value>();
                foreach (var item in items)
                    if (seen.Add(IdentityKey(item))) output.Add(item);
                return new ArrayValue(output);
            }
            case "sort":
            {
                bool reverse = args.Get(0, "reverse") is { IsTruthy: true };
                bool caseSensitive = args.Get(1, "case_sensitive") is { IsTruthy: true };
                var attribute = args.Get(2, "attribute") ?? NullValue.Instance;
                if (attribute is not (StringValue or IntegerValue or NullValue)) throw TemplateError.Runtime("attribute must be a string, integer, or null");
                Value Key(Value item) => attribute switch
                {
                    StringValue s => AttributeOf(item, s.Value),
                    IntegerValue i => AttributeOf(item, JsCompat.FormatNumber(i.Number)),
                    _ => item,
                };
                var comparer = Comparer<Value>.Create((x, y) =>
                {
                    int r = CompareValues(Key(x), Key(y), caseSensitive);
                    return reverse ? -r : r;
                });
                return new ArrayValue(items.OrderBy(x => x, comparer).ToList());
            }
            case "selectattr" or "rejectattr":
            {
                bool select = name == "selectattr";
                if (items.Any(i => i is not (ObjectValue or NamespaceValue))) throw TemplateError.Runtime($"`{name}` can only be applied to array of objects");
                if (args.Positional.Count == 0 || args.Positional[0] is not StringValue attr) throw TemplateError.Runtime($"arguments of `{name}` must be strings");
                string? test = args.Positional.Count > 1 ? (args.Positional[1] as StringValue)?.Value ?? throw TemplateError.Runtime($"arguments of `{name}` must be strings") : null;
                var testArgs = args.Positional.Skip(2).ToList();
                return new ArrayValue(items.Where(item =>
                {
                    var entries = item is ObjectValue o ? o.Entries : ((NamespaceValue)item).Entries;
                    bool result = entries.TryGetValue(attr.Value, out var v) && (test is null ? v.IsTruthy : Predicates.Apply(test, v, testArgs));
                    return select ? result : !result;
                }).ToList());
            }
            case "select" or "reject":
            {
                bool select = name == "select";
                string? test = args.Positional.Count > 0 ? (args.Positional[0] as StringValue)?.Value ?? throw TemplateError.Runtime($"the test of `{name}` must be a string") : null;
                var testArgs = args.Positional.Skip(1).ToList();
                return new ArrayValue(items.Where(v => (test is null ? v.IsTruthy : Predicates.Apply(test, v, testArgs)) == select).ToList());
            }
            case "map":
            {
                if (args.Keyword.TryGetValue("attribute", out var attrValue))
                {
                    if (attrValue is not StringValue attr) throw TemplateError.Runtime("attribute must be a string");
                    var fallback = args.Keyword.GetValueOrDefault("default");
                    return new ArrayValue(items.Select(item =>
                    {
                        if (item is not (ObjectValue or NamespaceValue)) throw TemplateError.Runtime("items in map must be an object");
                        var v = AttributeOf(item, attr.Value);
                        return v is UndefinedValue ? fallback ?? UndefinedValue.Instance : v;
                    }).ToList());
                }
                if (args.Positional.Count > 0 && args.Positional[0] is StringValue filter)
                {
                    var rest = new Arguments(args.Positional.Skip(1).ToList(), args.Keyword);
                    return new ArrayValue(items.Select(item => Apply(filter.Value, item, rest)).ToList());
                }
                throw TemplateError.Runtime("`map` expressions without `attribute` set are not currently supported.");
            }
            case "sum":
            {
                double total = args.Get(1, "start") is NumberValue start ? start.Number : 0;
                bool isFloat = false;
                var attribute = args.Get(0, "attribute");
                foreach (var item in items)
                {
                    var v = attribute is StringValue s ? AttributeOf(item, s.Value) : item;
                    if (v is not NumberValue n) throw TemplateError.Runtime($"Cannot sum {v.TypeName}");
                    total += n.Number;
                    isFloat |= v is FloatValue;
                }
                return isFloat ? new FloatValue(total) : new IntegerValue(total);
            }
            case "min" or "max":
            {
                if (items.Count == 0) return UndefinedValue.Instance;
                var best = items[0];
                foreach (var item in items.Skip(1))
                {
                    int c = CompareValues(item, best, caseSensitive: false);
                    if (name == "min" ? c < 0 : c > 0) best = item;
                }
                return best;
            }
            case "batch":
            {
                int size = args.Get(0, "linecount") is NumberValue n && n.Number >= 1 ? (int)n.Number : throw TemplateError.Runtime("batch needs a positive size");
                var fill = args.Get(1, "fill_with");
                var batches = items.Chunk(size).Select(c =>
                {
                    var row = c.ToList();
                    while (fill is not null && row.Count < size) row.Add(fill);
                    return (Value)new ArrayValue(row);
                }).ToList();
                return new ArrayValue(batches);
            }
            default: throw TemplateError.Runtime($"Unknown ArrayValue filter: {name}");
        }
    }

    // The reference keeps the first of equal JavaScript values (objects by identity).
    private static object IdentityKey(Value v) => v switch
    {
        StringValue s => "s" + s.Value,
        NumberValue n => n.Number,
        BooleanValue b => b.Value,
        NullValue => "null",
        UndefinedValue => "undefined",
        ArrayValue a => a.Items,
        ObjectValue o => o.Entries,
        NamespaceValue ns => ns.Entries,
        _ => v,
    };

    private static Value StringFilter(string name, StringValue s, Arguments args)
    {
        string v = s.Value;
        switch (name)
        {
            case "length" or "count": return new IntegerValue(v.Length);
            case "upper": return new StringValue(v.ToUpperInvariant());
            case "lower": return new StringValue(v.ToLowerInvariant());
            case "title": return new StringValue(JsCompat.TitleCase(v));
            case "capitalize": return new StringValue(Methods.Capitalize(v));
            case "trim":
            {
                var chars = args.Get(0, "chars");
                return new StringValue(chars is StringValue c ? JsCompat.StripChars(v, c.Value, true, true) : JsCompat.Trim(v));
            }
            case "string" or "safe": return s;
            case "join":
            {
                var separator = args.Get(0, "d") ?? args.Keyword.GetValueOrDefault("separator") ?? StringValue.Empty;
                if (separator is not StringValue sep) throw TemplateError.Runtime("separator must be a string");
                return new StringValue(string.Join(sep.Value, CodePoints(v)));
            }
            case "list": return new ArrayValue(CodePoints(v).Select(c => (Value)new StringValue(c)).ToList());
            case "first": return v.Length == 0 ? UndefinedValue.Instance : new StringValue(CodePoints(v).First());
            case "last": return v.Length == 0 ? UndefinedValue.Instance : new StringValue(CodePoints(v).Last());
            case "reverse": return new StringValue(string.Concat(CodePoints(v).Reverse()));
            case "int":
            {
                double d = JsCompat.ParseInt(v);
                return double.IsNaN(d) ? args.Get(0, "default") ?? new IntegerValue(0) : new IntegerValue(d);
            }
            case "float":
            {
                double d = JsCompat.ParseFloat(v);
                return double.IsNaN(d) ? args.Get(0, "default") ?? new FloatValue(0) : new FloatValue(d);
            }
            case "indent":
            {
                var width = args.Get(0, "width") ?? new IntegerValue(4);
                string pad = width switch
                {
                    IntegerValue w => new string(' ', (int)w.Number),
                    StringValue w => w.Value,
                    _ => throw TemplateError.Runtime("width must be a number"),
                };
                bool first = args.Get(1, "first") is { IsTruthy: true };
                bool blank = args.Get(2, "blank") is { IsTruthy: true };
                var lines = v.Split('\n');
                return new StringValue(string.Join("\n", lines.Select((x, i) => (!first && i == 0) || (!blank && x.Length == 0) ? x : pad + x)));
            }
            case "replace":
            {
                if (args.Positional.Count < 2 || args.Positional[0] is not StringValue o || args.Positional[1] is not StringValue n)
                    throw TemplateError.Runtime("replace() arguments must be strings");
                var count = args.Get(2, "count") ?? NullValue.Instance;
                return new StringValue(Methods.Replace(v, o.Value, n.Value, count is IntegerValue c ? (int)c.Number : -1));
            }
            case "wordcount": return new IntegerValue(WordPattern().Count(v));
            case "escape" or "e" or "forceescape":
                return new StringValue(v.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;"));
            case "bool": return BooleanValue.Of(v.Length > 0);
            default: throw TemplateError.Runtime($"Unknown StringValue filter: {name}");
        }
    }

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordPattern();

    private static IEnumerable<string> CodePoints(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsSurrogatePair(s, i))
            {
                yield return s.Substring(i, 2);
                i++;
            }
            else yield return s[i].ToString();
        }
    }

    private static Value NumberFilter(string name, NumberValue n, Arguments args)
    {
        bool isInt = n is IntegerValue;
        switch (name)
        {
            case "abs": return isInt ? new IntegerValue(Math.Abs(n.Number)) : new FloatValue(Math.Abs(n.Number));
            case "int": return new IntegerValue(Math.Floor(n.Number));
            case "float": return new FloatValue(n.Number);
            case "string": return new StringValue(n.ToOutput());
            case "bool": return BooleanValue.Of(n.IsTruthy);
            case "round":
            {
                int precision = args.Get(0, "precision") is NumberValue p ? (int)p.Number : 0;
                string method = args.Get(1, "method") is StringValue m ? m.Value : "common";
                double scale = Math.Pow(10, precision), x = n.Number * scale;
                double r = method switch
                {
                    "common" => Math.Round(x, MidpointRounding.AwayFromZero),
                    "floor" => Math.Floor(x),
                    "ceil" => Math.Ceiling(x),
                    _ => throw TemplateError.Runtime("method must be common, floor or ceil"),
                };
                return new FloatValue(r / scale);
            }
            default: throw TemplateError.Runtime($"Unknown NumericValue filter: {name}");
        }
    }

    private static Value ObjectFilter(string name, ObjectValue o, Arguments args)
    {
        switch (name)
        {
            case "items": return Methods.Items(o);
            case "length" or "count": return new IntegerValue(o.Entries.Count);
            case "list": return new ArrayValue(o.Entries.Keys.Select(k => (Value)new StringValue(k)).ToList());
            case "string": return new StringValue(o.ToOutput());
            case "dictsort": return Methods.DictSort(o, args);
        }
        if (name is "get" or "keys" or "values" && Methods.GetMember(o, new StringValue(name)) is FunctionValue method)
            return method.Invoke(args, new Scope());
        throw TemplateError.Runtime($"Unknown ObjectValue filter: {name}");
    }

    /// <summary>A dotted attribute path into dicts, namespaces and lists ("details.priority", "items.0"); undefined when missing.</summary>
    public static Value AttributeOf(Value item, string path)
    {
        var value = item;
        foreach (var part in path.Split('.'))
        {
            switch (value)
            {
                case ObjectValue o:
                    value = o.Entries.TryGetValue(part, out var v) ? v : UndefinedValue.Instance;
                    break;
                case NamespaceValue ns:
                    value = ns.Entries.TryGetValue(part, out var w) ? w : UndefinedValue.Instance;
                    break;
                case ArrayValue a when int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) && i >= 0 && i < a.Items.Count:
                    value = a.Items[i];
                    break;
                default:
                    return UndefinedValue.Instance;
            }
        }
        return value;
    }

    /// <summary>The reference's ordering for <c>sort</c>: numbers and booleans together, strings (case-insensitive unless asked), none with none.</summary>
    public static int CompareValues(Value a, Value b, bool caseSensitive)
    {
        if (a is NullValue && b is NullValue) return 0;
        if (a is NullValue || b is NullValue) throw TemplateError.Runtime($"Cannot compare {a.TypeName} with {b.TypeName}");
        if (a is UndefinedValue && b is UndefinedValue) return 0;
        if (a is UndefinedValue || b is UndefinedValue) throw TemplateError.Runtime($"Cannot compare {a.TypeName} with {b.TypeName}");
        double? x = a switch { NumberValue n => n.Number, BooleanValue bo => bo.Value ? 1 : 0, _ => null };
        double? y = b switch { NumberValue n => n.Number, BooleanValue bo => bo.Value ? 1 : 0, _ => null };
        if (x is not null && y is not null) return x.Value.CompareTo(y.Value);
        if (a.TypeName != b.TypeName) throw TemplateError.Runtime($"Cannot compare different types: {a.TypeName} and {b.TypeName}");
        if (a is StringValue sa && b is StringValue sb)
        {
            string l = caseSensitive ? sa.Value : sa.Value.ToLowerInvariant(), r = caseSensitive ? sb.Value : sb.Value.ToLowerInvariant();
            return Math.Sign(string.CompareOrdinal(l, r));
        }
        throw TemplateError.Runtime($"Cannot compare type: {a.TypeName}");
    }
}
