using System.Globalization;
using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// The <c>tojson</c> filter and the printed form of lists and dicts, as the reference writes them: Python
/// <c>json.dumps</c>'s separators (<c>", "</c> and <c>": "</c>; <c>","</c> between items when indenting), empty
/// containers as <c>[]</c> and <c>{}</c>, non-ASCII kept unless <c>ensure_ascii</c>, strings escaped as
/// <c>JSON.stringify</c> does.
/// </summary>
internal static class JsonText
{
    /// <summary>The filter's options; an indent of 0 or none does not indent (the reference treats 0 as false).</summary>
    public sealed record Options(int Indent = 0, bool EnsureAscii = false, string? ItemSeparator = null, string? KeySeparator = null, bool SortKeys = false);

    public static string Write(Value value, Options options, bool undefinedAsNull = true)
    {
        var sb = new StringBuilder();
        Write(sb, value, options, 0, undefinedAsNull);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, Value value, Options o, int depth, bool undefinedAsNull)
    {
        string itemSep = o.ItemSeparator ?? (o.Indent > 0 ? "," : ", ");
        string keySep = o.KeySeparator ?? ": ";
        switch (value)
        {
            case NullValue:
                sb.Append("null");
                return;
            case UndefinedValue:
                sb.Append(undefinedAsNull ? "null" : "undefined");
                return;
            case BooleanValue b:
                sb.Append(b.Value ? "true" : "false");
                return;
            case NumberValue n:
                sb.Append(double.IsFinite(n.Number) ? JsCompat.FormatNumber(n.Number) : "null");
                return;
            case StringValue s:
                Quote(sb, s.Value, o.EnsureAscii);
                return;
            case ArrayValue a:
            {
                if (a.Items.Count == 0 || o.Indent <= 0)
                {
                    sb.Append('[');
                    for (int i = 0; i < a.Items.Count; i++)
                    {
                        if (i > 0) sb.Append(itemSep);
                        Write(sb, a.Items[i], o, depth + 1, undefinedAsNull);
                    }
                    sb.Append(']');
                    return;
                }
                sb.Append('[');
                for (int i = 0; i < a.Items.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, o.Indent, depth + 1);
                    Write(sb, a.Items[i], o, depth + 1, undefinedAsNull);
                }
                NewLine(sb, o.Indent, depth);
                sb.Append(']');
                return;
            }
            case ObjectValue or NamespaceValue:
            {
                var entries = (value is ObjectValue ov ? ov.Entries : ((NamespaceValue)value).Entries).ToList();
                if (o.SortKeys) entries.Sort((x, y) => string.Compare(x.Key, y.Key, StringComparison.InvariantCulture));
                sb.Append('{');
                for (int i = 0; i < entries.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    if (o.Indent > 0) NewLine(sb, o.Indent, depth + 1);
                    Quote(sb, entries[i].Key, o.EnsureAscii);
                    sb.Append(keySep);
                    Write(sb, entries[i].Value, o, depth + 1, undefinedAsNull);
                }
                if (o.Indent > 0 && entries.Count > 0) NewLine(sb, o.Indent, depth);
                sb.Append('}');
                return;
            }
            default:
                throw TemplateError.Runtime($"Cannot convert to JSON: {value.TypeName}");
        }
    }

    private static void NewLine(StringBuilder sb, int indent, int depth) => sb.Append('\n').Append(' ', indent * depth);

    /// <summary><c>JSON.stringify</c> of a string; with <paramref name="ensureAscii"/> every UTF-16 unit from U+007F up becomes <c>\uXXXX</c>.</summary>
    public static void Quote(StringBuilder sb, string s, bool ensureAscii)
    {
        sb.Append('"');
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            switch (c)
            {
                case '"': sb.Append("\\\""); continue;
                case '\\': sb.Append("\\\\"); continue;
                case '\b': sb.Append("\\b"); continue;
                case '\f': sb.Append("\\f"); continue;
                case '\n': sb.Append("\\n"); continue;
                case '\r': sb.Append("\\r"); continue;
                case '\t': sb.Append("\\t"); continue;
            }
            bool loneSurrogate = char.IsHighSurrogate(c) ? !(i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                : char.IsLowSurrogate(c) && !(i > 0 && char.IsHighSurrogate(s[i - 1]));
            if (c < 0x20 || loneSurrogate || (ensureAscii && c >= 0x7f))
                sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else
                sb.Append(c);
        }
        sb.Append('"');
    }
}
