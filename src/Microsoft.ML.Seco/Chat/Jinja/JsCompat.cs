using System.Globalization;
using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// The JavaScript string and number rules @huggingface/jinja (the reference interpreter) inherits from its host:
/// which characters are whitespace (<c>\s</c>, <c>trim</c>), how a number prints (<c>Number.prototype.toString</c>),
/// <c>parseInt</c>/<c>parseFloat</c>, and its ASCII-only title case.
/// </summary>
internal static class JsCompat
{
    /// <summary>JavaScript's <c>\s</c> and the characters <c>String.prototype.trim</c> removes.</summary>
    public static bool IsWhitespace(char c) => c switch
    {
        '\t' or '\n' or '\v' or '\f' or '\r' or ' ' or '\u00a0' or '\u1680' or '\u2028' or '\u2029' or '\u202f'
            or '\u205f' or '\u3000' or '\ufeff' => true,
        >= '\u2000' and <= '\u200a' => true,
        _ => false,
    };

    /// <summary>A line terminator for a multiline regular expression's <c>^</c>.</summary>
    public static bool IsLineTerminator(char c) => c is '\n' or '\r' or '\u2028' or '\u2029';

    public static string Trim(string s) => TrimEnd(TrimStart(s));

    public static string TrimStart(string s)
    {
        int i = 0;
        while (i < s.Length && IsWhitespace(s[i])) i++;
        return i == 0 ? s : s[i..];
    }

    public static string TrimEnd(string s)
    {
        int n = s.Length;
        while (n > 0 && IsWhitespace(s[n - 1])) n--;
        return n == s.Length ? s : s[..n];
    }

    /// <summary>Python's <c>str.strip(chars)</c> family: removes any of <paramref name="chars"/> from the chosen ends.</summary>
    public static string StripChars(string s, string chars, bool start, bool end)
    {
        int a = 0, b = s.Length;
        if (start) while (a < b && chars.Contains(s[a])) a++;
        if (end) while (b > a && chars.Contains(s[b - 1])) b--;
        return s[a..b];
    }

    /// <summary>An ASCII word character, JavaScript's <c>\w</c>.</summary>
    public static bool IsWordChar(char c) => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_';

    /// <summary><c>value.replace(/\b\w/g, c => c.toUpperCase())</c>.</summary>
    public static string TitleCase(string s)
    {
        var chars = s.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
            if (IsWordChar(chars[i]) && (i == 0 || !IsWordChar(chars[i - 1]))) chars[i] = char.ToUpperInvariant(chars[i]);
        return new string(chars);
    }

    /// <summary><c>Number.prototype.toString()</c>: the shortest round-trip digits, in JavaScript's layout.</summary>
    public static string FormatNumber(double value)
    {
        if (double.IsNaN(value)) return "NaN";
        if (double.IsPositiveInfinity(value)) return "Infinity";
        if (double.IsNegativeInfinity(value)) return "-Infinity";
        if (value == 0) return "0";
        string r = value.ToString("R", CultureInfo.InvariantCulture);
        bool negative = r.StartsWith('-');
        if (negative) r = r[1..];
        int exponent = 0;
        int e = r.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exponent = int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
            r = r[..e];
        }
        int dot = r.IndexOf('.');
        string digits = dot < 0 ? r : r[..dot] + r[(dot + 1)..];
        int pointPosition = (dot < 0 ? r.Length : dot) + exponent;
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') { lead++; pointPosition--; }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int k = digits.Length, n = pointPosition;
        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (k <= n && n <= 21) sb.Append(digits).Append('0', n - k);
        else if (0 < n && n <= 21) sb.Append(digits, 0, n).Append('.').Append(digits, n, k - n);
        else if (-6 < n && n <= 0) sb.Append("0.").Append('0', -n).Append(digits);
        else
        {
            sb.Append(digits[0]);
            if (k > 1) sb.Append('.').Append(digits, 1, k - 1);
            sb.Append('e').Append(n - 1 >= 0 ? "+" : "-").Append(Math.Abs(n - 1).ToString(CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary><c>parseInt(s, 10)</c>; NaN when no digits lead.</summary>
    public static double ParseInt(string s)
    {
        int i = 0;
        while (i < s.Length && IsWhitespace(s[i])) i++;
        bool negative = false;
        if (i < s.Length && (s[i] == '+' || s[i] == '-')) { negative = s[i] == '-'; i++; }
        int start = i;
        while (i < s.Length && s[i] is >= '0' and <= '9') i++;
        if (i == start) return double.NaN;
        double v = double.Parse(s[start..i], CultureInfo.InvariantCulture);
        return negative ? -v : v;
    }

    /// <summary><c>parseFloat(s)</c>; NaN when no number leads.</summary>
    public static double ParseFloat(string s)
    {
        int i = 0;
        while (i < s.Length && IsWhitespace(s[i])) i++;
        string rest = s[i..];
        if (rest.StartsWith("Infinity", StringComparison.Ordinal) || rest.StartsWith("+Infinity", StringComparison.Ordinal)) return double.PositiveInfinity;
        if (rest.StartsWith("-Infinity", StringComparison.Ordinal)) return double.NegativeInfinity;
        int j = 0;
        if (j < rest.Length && (rest[j] == '+' || rest[j] == '-')) j++;
        int digitsStart = j;
        while (j < rest.Length && char.IsAsciiDigit(rest[j])) j++;
        if (j < rest.Length && rest[j] == '.') { j++; while (j < rest.Length && char.IsAsciiDigit(rest[j])) j++; }
        if (j == digitsStart || (j == digitsStart + 1 && rest[digitsStart] == '.')) return double.NaN;
        if (j < rest.Length && (rest[j] == 'e' || rest[j] == 'E'))
        {
            int k = j + 1;
            if (k < rest.Length && (rest[k] == '+' || rest[k] == '-')) k++;
            int expStart = k;
            while (k < rest.Length && char.IsAsciiDigit(rest[k])) k++;
            if (k > expStart) j = k;
        }
        return double.Parse(rest[..j], NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    /// <summary>JavaScript's <c>Number(s)</c> for a string, as loose equality uses it (decimal forms only).</summary>
    public static double ToNumber(string s)
    {
        string t = Trim(s);
        if (t.Length == 0) return 0;
        if (t is "Infinity" or "+Infinity") return double.PositiveInfinity;
        if (t == "-Infinity") return double.NegativeInfinity;
        foreach (char c in t)
            if (!(char.IsAsciiDigit(c) || c is '.' or 'e' or 'E' or '+' or '-')) return double.NaN;
        return double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : double.NaN;
    }
}
