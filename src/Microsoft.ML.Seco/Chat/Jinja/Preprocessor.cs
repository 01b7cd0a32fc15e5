using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>A <c>{% generation %}</c> or <c>{% endgeneration %}</c> tag, removed from the text and kept as a position.</summary>
/// <param name="Position">Index in the preprocessed text where the tag stood.</param>
/// <param name="IsEnd">True for <c>endgeneration</c>.</param>
/// <param name="SourceIndex">Index of the tag's <c>{%</c> in the original source.</param>
internal readonly record struct GenerationMarker(int Position, bool IsEnd, int SourceIndex);

/// <summary>
/// The text rewriting @huggingface/jinja does before lexing, with the settings Hugging Face renders chat templates with:
/// a single trailing newline is dropped; <c>lstrip_blocks</c> removes spaces and tabs from a line's start up to
/// <c>{%</c>, <c>{#</c> (or <c>{-</c>); <c>trim_blocks</c> removes the newline right after <c>%}</c>, <c>#}</c> or
/// <c>-}</c>; <c>{% generation %}</c> tags are cut out (keeping the whitespace around them unless the tag has
/// <c>-</c>) and remembered as markers. Every character of the result maps back to its index in the source.
/// </summary>
internal sealed class Preprocessor
{
    private Preprocessor(string text, int[] map, List<GenerationMarker> markers)
    {
        Text = text;
        SourceIndex = map;
        Markers = markers;
    }

    /// <summary>The rewritten text the lexer reads.</summary>
    public string Text { get; }

    /// <summary>For each index of <see cref="Text"/> (and one past its end), the index in the original source.</summary>
    public int[] SourceIndex { get; }

    /// <summary>The generation tags in text order.</summary>
    public IReadOnlyList<GenerationMarker> Markers { get; }

    public static Preprocessor Run(string source)
    {
        var text = source;
        var map = Enumerable.Range(0, source.Length + 1).ToArray();
        if (text.EndsWith('\n')) (text, map) = (text[..^1], map[..^1]);
        (text, map) = LstripBlocks(text, map);
        (text, map) = TrimBlocks(text, map);
        var markers = new List<GenerationMarker>();
        (text, map) = CutGenerationTags(text, map, markers);
        return new Preprocessor(text, map, markers);
    }

    // template.replace(/^[ \t]*({[#%-])/gm, "$1")
    private static (string, int[]) LstripBlocks(string text, int[] map)
    {
        var keep = new bool[text.Length];
        Array.Fill(keep, true);
        for (int i = 0; i < text.Length; i++)
        {
            if (i > 0 && !JsCompat.IsLineTerminator(text[i - 1])) continue;
            int j = i;
            while (j < text.Length && (text[j] == ' ' || text[j] == '\t')) j++;
            if (j > i && j + 1 < text.Length && text[j] == '{' && text[j + 1] is '#' or '%' or '-')
                for (int k = i; k < j; k++) keep[k] = false;
        }
        return Filter(text, map, keep);
    }

    // template.replace(/([#%-]})\n/g, "$1")
    private static (string, int[]) TrimBlocks(string text, int[] map)
    {
        var keep = new bool[text.Length];
        Array.Fill(keep, true);
        for (int i = 0; i + 2 < text.Length; i++)
        {
            if (text[i] is '#' or '%' or '-' && text[i + 1] == '}' && text[i + 2] == '\n')
            {
                keep[i + 2] = false;
                i += 2;
            }
        }
        return Filter(text, map, keep);
    }

    private static (string, int[]) Filter(string text, int[] map, bool[] keep)
    {
        var sb = new StringBuilder(text.Length);
        var newMap = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            if (!keep[i]) continue;
            sb.Append(text[i]);
            newMap.Add(map[i]);
        }
        newMap.Add(map[text.Length]);
        return (sb.ToString(), newMap.ToArray());
    }

    // template.replace(/(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs, ...): the tag goes, and the whitespace
    // before (after) it goes too when the tag opens (closes) with a hyphen.
    private static (string, int[]) CutGenerationTags(string text, int[] map, List<GenerationMarker> markers)
    {
        var sb = new StringBuilder(text.Length);
        var newMap = new List<int>(text.Length + 1);
        int i = 0, copied = 0;
        while (i < text.Length)
        {
            int open = text.IndexOf("{%", i, StringComparison.Ordinal);
            if (open < 0) break;
            if (!MatchTag(text, open, out bool lstrip, out bool rstrip, out bool isEnd, out int close))
            {
                i = open + 1;
                continue;
            }
            int before = open;
            while (before > copied && JsCompat.IsWhitespace(text[before - 1])) before--;
            int after = close;
            while (after < text.Length && JsCompat.IsWhitespace(text[after])) after++;
            Copy(text, map, copied, lstrip ? before : open, sb, newMap);
            markers.Add(new GenerationMarker(sb.Length, isEnd, map[open]));
            copied = rstrip ? after : close;
            i = after;
            if (!rstrip)
            {
                Copy(text, map, close, after, sb, newMap);
                copied = after;
            }
        }
        Copy(text, map, copied, text.Length, sb, newMap);
        newMap.Add(map[text.Length]);
        return (sb.ToString(), newMap.ToArray());
    }

    private static void Copy(string text, int[] map, int from, int to, StringBuilder sb, List<int> newMap)
    {
        for (int k = from; k < to; k++)
        {
            sb.Append(text[k]);
            newMap.Add(map[k]);
        }
    }

    private static bool At(string text, int p, string word) =>
        p <= text.Length && text.AsSpan(p).StartsWith(word, StringComparison.Ordinal);

    private static bool MatchTag(string text, int open, out bool lstrip, out bool rstrip, out bool isEnd, out int close)
    {
        lstrip = rstrip = isEnd = false;
        close = -1;
        int p = open + 2;
        if (p < text.Length && text[p] == '-') { lstrip = true; p++; }
        while (p < text.Length && JsCompat.IsWhitespace(text[p])) p++;
        if (At(text, p, "endgeneration"))
        {
            isEnd = true;
            p += 3;
        }
        if (!At(text, p, "generation")) return false;
        p += 10;
        while (p < text.Length && JsCompat.IsWhitespace(text[p])) p++;
        if (p < text.Length && text[p] == '-') { rstrip = true; p++; }
        if (p + 1 >= text.Length || text[p] != '%' || text[p + 1] != '}') return false;
        close = p + 2;
        return true;
    }
}
