using System.Text.RegularExpressions;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// Hugging Face's first step of encoding: the added tokens of tokenizer.json (special or not) are cut out of the raw
/// text, and only the text between them is normalized, pre-tokenized and run through the model.
/// </summary>
internal sealed class AddedTokens
{
    private readonly Regex? _pattern;

    public AddedTokens(IEnumerable<string> tokens)
    {
        // Longest first so that alternation picks the longest token at a position, as HF's leftmost-longest matcher does.
        var alternatives = tokens.Where(t => t.Length > 0).Distinct().OrderByDescending(t => t.Length)
            .Select(Regex.Escape).ToList();
        _pattern = alternatives.Count == 0 ? null : new Regex(string.Join("|", alternatives), RegexOptions.CultureInvariant);
    }

    /// <summary>Appends the pieces of <paramref name="text"/> in order; <c>Added</c> marks an added token.</summary>
    public void Split(ReadOnlySpan<char> text, List<(int Offset, int Length, bool Added)> pieces)
    {
        int start = 0;
        if (_pattern is not null)
        {
            foreach (ValueMatch m in _pattern.EnumerateMatches(text))
            {
                if (m.Index > start) pieces.Add((start, m.Index - start, false));
                pieces.Add((m.Index, m.Length, true));
                start = m.Index + m.Length;
            }
        }
        if (text.Length > start) pieces.Add((start, text.Length - start, false));
    }
}
