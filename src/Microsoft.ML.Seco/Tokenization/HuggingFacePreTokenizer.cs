using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// Hugging Face's pre-tokenization for byte-level BPE: added tokens are cut out first, then each regex stage
/// (Split with behavior Isolated, or ByteLevel's GPT-2 pattern) splits every piece of the previous stage.
/// </summary>
/// <remarks>
/// Written here rather than using <see cref="RegexPreTokenizer"/> / <see cref="CompositePreTokenizer"/> because,
/// measured on Microsoft.ML.Tokenizers 2.0.1, RegexPreTokenizer drops the text between matches (Hugging Face's
/// Isolated behaviour keeps it as pieces) and CompositePreTokenizer does not re-split the first stage's pieces.
/// </remarks>
internal sealed class HuggingFacePreTokenizer : PreTokenizer
{
    private readonly AddedTokens _addedTokens;
    private readonly IReadOnlyList<Regex> _stages;

    public HuggingFacePreTokenizer(IReadOnlyList<Regex> stages, AddedTokens addedTokens)
    {
        _stages = stages;
        _addedTokens = addedTokens;
    }

    public IReadOnlyList<Regex> Stages => _stages;

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        if (string.IsNullOrEmpty(text)) return [];
        return Split(text.AsSpan());
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty) return [];
        return Split(text);
    }

    private List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var result = new List<(int, int)>();
        var pieces = new List<(int Offset, int Length)>();
        var next = new List<(int Offset, int Length)>();
        var segments = new List<(int Offset, int Length, bool Added)>();
        _addedTokens.Split(text, segments);
        foreach (var (offset, length, added) in segments)
        {
            if (added) result.Add((offset, length));
            else SplitPlain(text, offset, length, pieces, next, result);
        }
        return result;
    }

    private void SplitPlain(ReadOnlySpan<char> text, int offset, int length,
        List<(int Offset, int Length)> pieces, List<(int Offset, int Length)> next, List<(int, int)> result)
    {
        if (length == 0) return;
        pieces.Clear();
        pieces.Add((offset, length));
        foreach (Regex stage in _stages)
        {
            next.Clear();
            foreach (var (pieceOffset, pieceLength) in pieces)
            {
                // Matching on the slice, not the whole text, keeps lookarounds such as \s+(?!\S) inside the piece,
                // which is how HF applies each stage to each piece independently.
                ReadOnlySpan<char> piece = text.Slice(pieceOffset, pieceLength);
                int position = 0;
                foreach (ValueMatch m in stage.EnumerateMatches(piece))
                {
                    if (m.Length == 0) continue;
                    if (m.Index > position) next.Add((pieceOffset + position, m.Index - position));
                    next.Add((pieceOffset + m.Index, m.Length));
                    position = m.Index + m.Length;
                }
                if (position < pieceLength) next.Add((pieceOffset + position, pieceLength - position));
            }
            pieces.Clear();
            pieces.AddRange(next);
        }
        foreach (var p in pieces) result.Add(p);
    }
}

/// <summary>Unicode NFC, the normalizer Qwen2's tokenizer.json declares.</summary>
internal sealed class NfcNormalizer : Normalizer
{
    public static readonly NfcNormalizer Instance = new();

    public override string Normalize(string original) => original.Normalize(NormalizationForm.FormC);

    public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(NormalizationForm.FormC);
}
