using System.Text;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// Turns generated tokens into text as they come, whole characters only: a token that ends inside a character (one
/// byte of a multi-byte UTF-8 character in a byte-level vocabulary, a SentencePiece <c>&lt;0xE2&gt;</c> byte-fallback
/// piece) yields nothing until the tokens that complete the character arrive.
/// </summary>
/// <remarks>
/// transformers' TextStreamer scheme: decode the tokens from <c>prefix</c> on, subtract the decoding of the tokens from
/// <c>prefix</c> to <c>read</c> (what was already given out), and give out the rest unless it ends in U+FFFD, the
/// replacement character decoders write for bytes that do not (yet) form a character. Decoding from a few tokens back
/// rather than from the token alone keeps what decoders do at the start of a text (SentencePiece drops the leading
/// space of the first piece) out of the middle of the reply, and keeps each step's decoding short. A reply's pieces
/// concatenate to the decoding of all its tokens.
/// </remarks>
internal sealed class IncrementalDecoder
{
    readonly ModelTokenizer _tokenizer;
    readonly List<int> _ids = new();
    int _prefix, _read;

    public IncrementalDecoder(ModelTokenizer tokenizer) => _tokenizer = tokenizer;

    /// <summary>Adds a token; returns the text it completes (possibly empty).</summary>
    public string Push(int id)
    {
        _ids.Add(id);
        string given = Decode(_prefix, _read), all = Decode(_prefix, _ids.Count);
        if (all.Length <= given.Length || all.EndsWith('\uFFFD') || !all.StartsWith(given, StringComparison.Ordinal)) return "";
        _prefix = _read;
        _read = _ids.Count;
        return all[given.Length..];
    }

    /// <summary>The text still held back (an incomplete character at the end of the reply decodes as U+FFFD).</summary>
    public string Flush()
    {
        string given = Decode(_prefix, _read), all = Decode(_prefix, _ids.Count);
        _prefix = _read = _ids.Count;
        // Normally all starts with given; a decoder that rewrites earlier text (a clean-up rule) cannot be streamed exactly.
        return all.Length > given.Length ? all[given.Length..] : "";
    }

    string Decode(int from, int to) => from == to ? "" : _tokenizer.Decode(_ids.Skip(from).Take(to - from));
}

/// <summary>
/// Cuts a streamed reply at the first occurrence of any stop sequence (which is not part of the reply), holding back
/// text that could be the start of one until the next text shows whether it is.
/// </summary>
internal sealed class StopSequenceFilter
{
    readonly string[] _stops;
    readonly StringBuilder _held = new();

    public StopSequenceFilter(IEnumerable<string>? stops) =>
        _stops = stops?.Where(s => !string.IsNullOrEmpty(s)).Distinct(StringComparer.Ordinal).ToArray() ?? [];

    /// <summary>Whether a stop sequence was found; nothing more is given out after it.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds text; returns what can be given out now.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        if (_stops.Length == 0) return text;
        _held.Append(text);
        string held = _held.ToString();
        // Everything given out so far holds no stop sequence and ends with no start of one (that is held), so the
        // earliest occurrence starts in what is held.
        int first = -1;
        foreach (string stop in _stops)
        {
            int at = held.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            Stopped = true;
            _held.Clear();
            return held[..first];
        }
        int keep = 0;
        foreach (string stop in _stops)
            for (int k = Math.Min(stop.Length - 1, held.Length); k > keep; k--)
                if (held.AsSpan(held.Length - k).SequenceEqual(stop.AsSpan(0, k))) { keep = k; break; }
        _held.Remove(0, held.Length - keep);
        return held[..^keep];
    }

    /// <summary>What is held back, at the end of the reply.</summary>
    public string Flush()
    {
        string held = _held.ToString();
        _held.Clear();
        return Stopped ? "" : held;
    }
}
