using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// Attribute and subscript access (<c>x.name</c>, <c>x[key]</c>) and the methods values carry: the reference's
/// string methods (with Python's optional characters for <c>strip</c>/<c>lstrip</c>/<c>rstrip</c>, which the
/// reference ignores), plus <c>find</c>, <c>rsplit</c>, <c>splitlines</c>, <c>count</c>; dict <c>get</c>,
/// <c>items</c>, <c>keys</c>, <c>values</c>, <c>dictsort</c>; list and string <c>length</c>.
/// </summary>
internal static class Methods
{
    public static Value GetMember(Value obj, Value property)
    {
        switch (obj)
        {
            case ObjectValue o:
            {
                string key = property is StringValue s ? s.Value : throw TemplateError.Runtime($"Cannot access property with non-string: got {property.TypeName}");
                return o.Entries.TryGetValue(key, out var v) ? v : ObjectMethod(o, key) ?? UndefinedValue.Instance;
            }
            case NamespaceValue ns:
            {
                string key = property is StringValue s ? s.Value : throw TemplateError.Runtime($"Cannot access property with non-string: got {property.TypeName}");
                return ns.Entries.TryGetValue(key, out var v) ? v : UndefinedValue.Instance;
            }
            case ArrayValue a:
                if (property is IntegerValue ai) return At(a.Items.Count, ai.Number) is int i ? a.Items[i] : UndefinedValue.Instance;
                if (property is StringValue an) return an.Value == "length" ? new IntegerValue(a.Items.Count) : UndefinedValue.Instance;
                throw TemplateError.Runtime($"Cannot access property with non-string/non-number: got {property.TypeName}");
            case StringValue str:
                if (property is IntegerValue si) return At(str.Value.Length, si.Number) is int j ? new StringValue(str.Value[j].ToString()) : UndefinedValue.Instance;
                if (property is StringValue sn) return StringMethod(str.Value, sn.Value) ?? UndefinedValue.Instance;
                throw TemplateError.Runtime($"Cannot access property with non-string/non-number: got {property.TypeName}");
            default:
                if (property is not StringValue) throw TemplateError.Runtime($"Cannot access property with non-string: got {property.TypeName}");
                return UndefinedValue.Instance;
        }
    }

    // Array.prototype.at: negative indices count from the end.
    private static int? At(int length, double index)
    {
        if (!double.IsInteger(index)) return null;
        double i = index < 0 ? length + index : index;
        return i >= 0 && i < length ? (int)i : null;
    }

    private static FunctionValue Method(string name, Func<Arguments, Value> body) => new(name, (args, _) => body(args));

    private static Value? ObjectMethod(ObjectValue o, string name) => name switch
    {
        "get" => Method("get", args =>
        {
            var key = args.Positional.Count > 0 ? args.Positional[0] : UndefinedValue.Instance;
            if (key is not StringValue k) throw TemplateError.Runtime($"Object key must be a string: got {key.TypeName}");
            return o.Entries.TryGetValue(k.Value, out var v) ? v : args.Positional.Count > 1 ? args.Positional[1] : NullValue.Instance;
        }),
        "items" => Method("items", _ => Items(o)),
        "keys" => Method("keys", _ => new ArrayValue(o.Entries.Keys.Select(k => (Value)new StringValue(k)).ToList())),
        "values" => Method("values", _ => new ArrayValue(o.Entries.Values.ToList())),
        "dictsort" => Method("dictsort", args => DictSort(o, args)),
        _ => null,
    };

    public static ArrayValue Items(ObjectValue o) =>
        new(o.Entries.Select(p => (Value)new ArrayValue([new StringValue(p.Key), p.Value])).ToList());

    public static ArrayValue DictSort(ObjectValue o, Arguments args)
    {
        bool caseSensitive = args.Get(0, "case_sensitive") is BooleanValue { Value: true };
        string by = args.Get(1, "by") is StringValue b ? b.Value : "key";
        if (by is not ("key" or "value")) throw TemplateError.Runtime("by must be either 'key' or 'value'");
        bool reverse = args.Get(2, "reverse") is BooleanValue { Value: true };
        int index = by == "key" ? 0 : 1;
        var items = Items(o).Items.ToList();
        var sorted = items.OrderBy(x => x, Comparer<Value>.Create((x, y) =>
        {
            int r = Filters.CompareValues(((ArrayValue)x).Items[index], ((ArrayValue)y).Items[index], caseSensitive);
            return reverse ? -r : r;
        })).ToList();
        return new ArrayValue(sorted);
    }

    private static string? OptionalChars(Arguments args, string method)
    {
        var chars = args.Get(0, "chars");
        return chars switch
        {
            null or NullValue or UndefinedValue => null,
            StringValue s => s.Value,
            _ => throw TemplateError.Runtime($"{method}() argument must be a string or none"),
        };
    }

    private static Value? StringMethod(string s, string name) => name switch
    {
        "upper" => Method(name, _ => new StringValue(s.ToUpperInvariant())),
        "lower" => Method(name, _ => new StringValue(s.ToLowerInvariant())),
        "strip" => Method(name, a => new StringValue(OptionalChars(a, name) is { } c ? JsCompat.StripChars(s, c, true, true) : JsCompat.Trim(s))),
        "lstrip" => Method(name, a => new StringValue(OptionalChars(a, name) is { } c ? JsCompat.StripChars(s, c, true, false) : JsCompat.TrimStart(s))),
        "rstrip" => Method(name, a => new StringValue(OptionalChars(a, name) is { } c ? JsCompat.StripChars(s, c, false, true) : JsCompat.TrimEnd(s))),
        "title" => Method(name, _ => new StringValue(JsCompat.TitleCase(s))),
        "capitalize" => Method(name, _ => new StringValue(Capitalize(s))),
        "length" => new IntegerValue(s.Length),
        "startswith" => Method(name, a => BooleanValue.Of(Affix(s, a, name, start: true))),
        "endswith" => Method(name, a => BooleanValue.Of(Affix(s, a, name, start: false))),
        "split" => Method(name, a => Split(s, a)),
        "rsplit" => Method(name, a => RSplit(s, a)),
        "splitlines" => Method(name, a => SplitLines(s, a.Get(0, "keepends") is { IsTruthy: true })),
        "replace" => Method(name, a => new StringValue(Replace(s, a))),
        "find" => Method(name, a => new IntegerValue(a.Get(0, "sub") is StringValue sub ? s.IndexOf(sub.Value, StringComparison.Ordinal) : throw TemplateError.Runtime("find() argument must be a string"))),
        "rfind" => Method(name, a => new IntegerValue(a.Get(0, "sub") is StringValue sub ? s.LastIndexOf(sub.Value, StringComparison.Ordinal) : throw TemplateError.Runtime("rfind() argument must be a string"))),
        "count" => Method(name, a => new IntegerValue(a.Get(0, "sub") is StringValue sub ? CountOf(s, sub.Value) : throw TemplateError.Runtime("count() argument must be a string"))),
        _ => null,
    };

    public static string Capitalize(string s) => s.Length == 0 ? s : s[..1].ToUpperInvariant() + s[1..];

    private static int CountOf(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        int n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    private static bool Affix(string s, Arguments a, string name, bool start)
    {
        if (a.Positional.Count == 0) throw TemplateError.Runtime($"{name}() requires at least one argument");
        bool Test(string p) => start ? s.StartsWith(p, StringComparison.Ordinal) : s.EndsWith(p, StringComparison.Ordinal);
        return a.Positional[0] switch
        {
            StringValue p => Test(p.Value),
            ArrayValue arr => arr.Items.Any(i => i is StringValue p ? Test(p.Value) : throw TemplateError.Runtime($"{name}() tuple elements must be strings")),
            _ => throw TemplateError.Runtime($"{name}() argument must be a string or tuple of strings"),
        };
    }

    private static (string? Sep, int MaxSplit) SplitArgs(Arguments a)
    {
        var sep = a.Get(0, "sep") ?? NullValue.Instance;
        if (sep is not (StringValue or NullValue)) throw TemplateError.Runtime("sep argument must be a string or null");
        var max = a.Get(1, "maxsplit") ?? new IntegerValue(-1);
        if (max is not IntegerValue m) throw TemplateError.Runtime("maxsplit argument must be a number");
        string? s = (sep as StringValue)?.Value;
        if (s == "") throw TemplateError.Runtime("empty separator");
        return (s, (int)m.Number);
    }

    private static ArrayValue Strings(IEnumerable<string> parts) => new(parts.Select(p => (Value)new StringValue(p)).ToList());

    private static ArrayValue Split(string s, Arguments a)
    {
        var (sep, max) = SplitArgs(a);
        if (sep is null)
        {
            var result = new List<string>();
            string text = JsCompat.TrimStart(s);
            int i = 0;
            while (i < text.Length)
            {
                while (i < text.Length && JsCompat.IsWhitespace(text[i])) i++;
                if (i >= text.Length) break;
                if (max != -1 && result.Count >= max)
                {
                    result.Add(text[i..]);
                    break;
                }
                int start = i;
                while (i < text.Length && !JsCompat.IsWhitespace(text[i])) i++;
                result.Add(text[start..i]);
            }
            return Strings(result);
        }
        var parts = s.Split(sep).ToList();
        if (max != -1 && parts.Count > max)
        {
            var tail = string.Join(sep, parts.Skip(max));
            parts = [.. parts.Take(max), tail];
        }
        return Strings(parts);
    }

    private static ArrayValue RSplit(string s, Arguments a)
    {
        var (sep, max) = SplitArgs(a);
        if (sep is null)
        {
            var words = new List<string>();
            int end = s.Length;
            while (true)
            {
                while (end > 0 && JsCompat.IsWhitespace(s[end - 1])) end--;
                if (end == 0) break;
                if (max != -1 && words.Count >= max)
                {
                    words.Add(s[..end]);
                    break;
                }
                int start = end;
                while (start > 0 && !JsCompat.IsWhitespace(s[start - 1])) start--;
                words.Add(s[start..end]);
                end = start;
            }
            words.Reverse();
            return Strings(words);
        }
        var parts = s.Split(sep).ToList();
        if (max != -1 && parts.Count > max + 1)
        {
            int headCount = parts.Count - max;
            var head = string.Join(sep, parts.Take(headCount));
            parts = [head, .. parts.Skip(headCount)];
        }
        return Strings(parts);
    }

    private static ArrayValue SplitLines(string s, bool keepEnds)
    {
        var lines = new List<string>();
        int start = 0, i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
            {
                int end = i;
                i += c == '\r' && i + 1 < s.Length && s[i + 1] == '\n' ? 2 : 1;
                lines.Add(keepEnds ? s[start..i] : s[start..end]);
                start = i;
            }
            else i++;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return Strings(lines);
    }

    private static string Replace(string s, Arguments a)
    {
        if (a.Positional.Count < 2) throw TemplateError.Runtime("replace() requires at least two arguments");
        if (a.Positional[0] is not StringValue oldV || a.Positional[1] is not StringValue newV)
            throw TemplateError.Runtime("replace() arguments must be strings");
        var countValue = a.Get(2, "count") ?? NullValue.Instance;
        if (countValue is not (IntegerValue or NullValue)) throw TemplateError.Runtime("replace() count argument must be a number or null");
        return Replace(s, oldV.Value, newV.Value, countValue is IntegerValue c ? (int)c.Number : -1);
    }

    /// <summary>Python's <c>str.replace</c>; an empty <paramref name="old"/> inserts at every code point boundary.</summary>
    public static string Replace(string s, string old, string replacement, int count)
    {
        if (count == 0) return s;
        int remaining = count < 0 ? int.MaxValue : count;
        var sb = new StringBuilder();
        if (old.Length == 0)
        {
            int i = 0;
            while (true)
            {
                if (remaining-- > 0) sb.Append(replacement);
                if (i >= s.Length) break;
                int len = char.IsSurrogatePair(s, i) ? 2 : 1;
                sb.Append(s, i, len);
                i += len;
            }
            return sb.ToString();
        }
        int pos = 0;
        while (remaining > 0)
        {
            int found = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (found < 0) break;
            sb.Append(s, pos, found - pos).Append(replacement);
            pos = found + old.Length;
            remaining--;
        }
        sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }
}
