using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// Hugging Face's BPE model over characters, the form in which Llama 2, Mistral, TinyLlama and other SentencePiece
/// models ship tokenizer.json: spaces become '▁' (a Prepend + Replace normalizer, or a Metaspace pre-tokenizer),
/// characters outside the vocabulary become their UTF-8 bytes as &lt;0xXX&gt; tokens (byte_fallback), and pairs merge
/// in the order of model.merges.
/// </summary>
/// <remarks>
/// Written here because Microsoft.ML.Tokenizers 2.0.1 has no equivalent: <see cref="BpeTokenizer"/> has no byte
/// fallback (unknown characters become the unknown token), and <see cref="SentencePieceTokenizer"/> needs a
/// tokenizer.model and merges by piece score rather than by the merge list that tokenizer.json defines.
/// The merge loop follows tokenizers' <c>Word::merge_all</c>: a queue ordered by (merge rank, position), so a long
/// piece (a whole document when nothing splits it) costs O(n log n).
/// </remarks>
internal sealed class SentencePieceBpeTokenizer : Tokenizer
{
    private const int CacheablePieceLength = 64, CacheCapacity = 100_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly Dictionary<(int Left, int Right), (int Rank, int Id)> _merges;
    private readonly int[]? _byteIds;
    private readonly int? _unkId;
    private readonly bool _fuseUnk, _ignoreMerges;
    private readonly IReadOnlyDictionary<string, int> _added;
    private readonly AddedTokens _addedTokens;
    private readonly IReadOnlyList<Func<string, string>> _normalizers;
    private readonly Metaspace? _metaspace;
    private readonly IReadOnlyList<Func<List<string>, List<string>>> _decoders;
    private readonly Dictionary<string, (int Id, int Start, int Length)[]> _cache = new(StringComparer.Ordinal);

    /// <summary>Hugging Face's Metaspace pre-tokenizer: spaces become the replacement, which may also be prepended and split on.</summary>
    private sealed record Metaspace(string Replacement, string PrependScheme, bool Split);

    private SentencePieceBpeTokenizer(Dictionary<string, int> vocab, string?[] idToToken,
        Dictionary<(int, int), (int, int)> merges, int[]? byteIds, int? unkId, bool fuseUnk, bool ignoreMerges,
        IReadOnlyDictionary<string, int> added, IReadOnlyList<Func<string, string>> normalizers, Metaspace? metaspace,
        IReadOnlyList<Func<List<string>, List<string>>> decoders)
    {
        _vocab = vocab;
        _idToToken = idToToken;
        _merges = merges;
        _byteIds = byteIds;
        _unkId = unkId;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        _added = added;
        _addedTokens = new AddedTokens(added.Keys);
        _normalizers = normalizers;
        _metaspace = metaspace;
        _decoders = decoders;
    }

    /// <summary>Builds the tokenizer from tokenizer.json's model, normalizer, pre_tokenizer and decoder.</summary>
    internal static SentencePieceBpeTokenizer Create(string path, JsonElement root, JsonElement model,
        Dictionary<string, int> vocab, List<(string Left, string Right)> merges, Dictionary<string, int> added)
    {
        foreach (string affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (!string.IsNullOrEmpty(HuggingFaceTokenizerJson.GetString(model, affix)))
                throw new NotSupportedException($"{path}: model.{affix} is set, which SentencePiece-style BPE here does not support; {HuggingFaceTokenizerJson.Supported}.");
        }
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw new NotSupportedException($"{path}: model.dropout {dropout.GetRawText()} is not supported (encoding would be random).");

        int size = 0;
        foreach (int id in vocab.Values.Concat(added.Values))
        {
            if (id < 0) throw new InvalidDataException($"{path}: token id {id} is negative.");
            size = Math.Max(size, id + 1);
        }
        // Ids index an array: one far beyond the tokens listed would make a small file allocate gigabytes.
        long listed = vocab.Count + added.Count;
        if (size > 2 * listed + 1024) throw new InvalidDataException($"{path}: token id {size - 1} is far beyond the {listed} tokens listed.");
        var idToToken = new string?[size];
        foreach (var (token, id) in vocab) idToToken[id] = token;
        foreach (var (token, id) in added) idToToken[id] = token;

        var mergeMap = new Dictionary<(int, int), (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int l) || !vocab.TryGetValue(right, out int r))
                throw new InvalidDataException($"{path}: merge {rank} (\"{left}\", \"{right}\") names a token missing from model.vocab.");
            if (!vocab.TryGetValue(left + right, out int merged))
                throw new InvalidDataException($"{path}: merge {rank} (\"{left}\", \"{right}\") makes \"{left + right}\", which is missing from model.vocab.");
            // A repeated pair keeps its first rank, as tokenizers' loader does.
            mergeMap.TryAdd((l, r), (rank, merged));
        }

        int[]? byteIds = null;
        if (model.TryGetProperty("byte_fallback", out var fallback) && fallback.ValueKind == JsonValueKind.True)
        {
            byteIds = new int[256];
            for (int b = 0; b < 256; b++)
            {
                // A vocabulary without some <0xXX> token makes tokenizers fall back to the unknown token for that character.
                byteIds[b] = vocab.TryGetValue(ByteToken((byte)b), out int id) ? id : -1;
            }
        }

        int? unkId = null;
        if (HuggingFaceTokenizerJson.GetString(model, "unk_token") is { } unk)
        {
            unkId = vocab.TryGetValue(unk, out int id) ? id
                : throw new InvalidDataException($"{path}: model.unk_token \"{unk}\" is not in model.vocab.");
        }
        bool fuseUnk = model.TryGetProperty("fuse_unk", out var fuse) && fuse.ValueKind == JsonValueKind.True;
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;

        var normalizers = new List<Func<string, string>>();
        if (root.TryGetProperty("normalizer", out var normalizer)) ReadNormalizer(path, normalizer, normalizers);
        Metaspace? metaspace = root.TryGetProperty("pre_tokenizer", out var pre) ? ReadPreTokenizer(path, pre) : null;
        var decoders = new List<Func<List<string>, List<string>>>();
        if (root.TryGetProperty("decoder", out var decoder)) ReadDecoder(path, decoder, decoders);

        return new SentencePieceBpeTokenizer(vocab, idToToken, mergeMap, byteIds, unkId, fuseUnk, ignoreMerges, added,
            normalizers, metaspace, decoders);
    }

    /// <summary>The token of byte <paramref name="b"/> in a byte-fallback vocabulary, e.g. &lt;0x0A&gt;.</summary>
    internal static string ByteToken(byte b) => $"<0x{b:X2}>";

    /// <inheritdoc/>
    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> input = text is null ? textSpan : text.AsSpan();
        var tokens = new List<EncodedToken>();
        var normalized = new StringBuilder(input.Length + 8);
        var segments = new List<(int Offset, int Length, bool Added)>();
        _addedTokens.Split(input, segments);
        var pieces = new List<(int Start, int Length)>();
        int consumed = 0, normalizedConsumed = 0;
        bool truncated = false;
        foreach (var (offset, length, isAdded) in segments)
        {
            string segment = input.Slice(offset, length).ToString();
            int before = tokens.Count;
            if (isAdded)
            {
                tokens.Add(new EncodedToken(_added[segment], segment, new Range(normalized.Length, normalized.Length + segment.Length)));
                normalized.Append(segment);
            }
            else
            {
                if (settings.ConsiderNormalization)
                    foreach (var normalize in _normalizers) segment = normalize(segment);
                pieces.Clear();
                if (settings.ConsiderPreTokenization && _metaspace is not null)
                    segment = PreTokenize(_metaspace, segment, first: offset == 0, pieces);
                else if (segment.Length > 0)
                    pieces.Add((0, segment.Length));
                int baseOffset = normalized.Length;
                normalized.Append(segment);
                foreach (var (start, pieceLength) in pieces)
                {
                    foreach (var (id, tokenStart, tokenLength) in EncodePiece(segment.Substring(start, pieceLength)))
                    {
                        int from = baseOffset + start + tokenStart;
                        tokens.Add(new EncodedToken(id, _idToToken[id]!, new Range(from, from + tokenLength)));
                    }
                }
            }
            if (tokens.Count > settings.MaxTokenCount)
            {
                // Keep whole segments only: a cut inside one would change how its remainder encodes.
                tokens.RemoveRange(before, tokens.Count - before);
                truncated = true;
                break;
            }
            consumed = offset + length;
            normalizedConsumed = normalized.Length;
        }
        string normalizedText = truncated ? normalized.ToString(0, normalizedConsumed) : normalized.ToString();
        bool changed = !input[..consumed].SequenceEqual(normalizedText);
        return new EncodeResults<EncodedToken>
        {
            Tokens = tokens,
            NormalizedText = changed ? normalizedText : null,
            CharsConsumed = changed ? normalizedText.Length : consumed,
        };
    }

    // Metaspace replaces spaces, prepends the replacement ("always", or "first" for the text's first segment, unless
    // the segment already starts with it) and, with split, cuts before every replacement character.
    private static string PreTokenize(Metaspace m, string segment, bool first, List<(int Start, int Length)> pieces)
    {
        string s = segment.Replace(" ", m.Replacement, StringComparison.Ordinal);
        bool prepend = m.PrependScheme == "always" || (m.PrependScheme == "first" && first);
        if (prepend && !s.StartsWith(m.Replacement, StringComparison.Ordinal)) s = m.Replacement + s;
        if (!m.Split)
        {
            if (s.Length > 0) pieces.Add((0, s.Length));
            return s;
        }
        int start = 0;
        for (int i = s.IndexOf(m.Replacement, 1, StringComparison.Ordinal); i > 0; i = s.IndexOf(m.Replacement, i + m.Replacement.Length, StringComparison.Ordinal))
        {
            pieces.Add((start, i - start));
            start = i;
        }
        if (s.Length > start) pieces.Add((start, s.Length - start));
        return s;
    }

    /// <summary>The tokens of one pre-tokenized piece as (id, start, length) within it.</summary>
    private (int Id, int Start, int Length)[] EncodePiece(string piece)
    {
        if (_ignoreMerges && _vocab.TryGetValue(piece, out int whole)) return [(whole, 0, piece.Length)];
        bool cacheable = piece.Length <= CacheablePieceLength;
        if (cacheable)
        {
            lock (_cache)
            {
                if (_cache.TryGetValue(piece, out var cached)) return cached;
            }
        }
        var result = Merge(Split(piece));
        if (cacheable)
        {
            lock (_cache)
            {
                if (_cache.Count >= CacheCapacity) _cache.Clear();
                _cache[piece] = result;
            }
        }
        return result;
    }

    private struct Symbol
    {
        public int Id, Start, Length, Prev, Next;
        public bool Removed;
    }

    // tokenizers' BPE::merge_word: each character is its vocabulary token, else its bytes' <0xXX> tokens (when all
    // exist), else the unknown token (consecutive ones fused with fuse_unk), else it is dropped.
    private List<Symbol> Split(string piece)
    {
        var symbols = new List<Symbol>(piece.Length);
        (int Start, int Length)? unknown = null;
        Span<byte> utf8 = stackalloc byte[4];
        void Add(int id, int start, int length) =>
            symbols.Add(new Symbol { Id = id, Start = start, Length = length, Prev = symbols.Count - 1, Next = symbols.Count + 1 });
        void FlushUnknown()
        {
            if (unknown is { } u) Add(_unkId!.Value, u.Start, u.Length);
            unknown = null;
        }

        for (int i = 0; i < piece.Length;)
        {
            int length = char.IsSurrogatePair(piece, i) ? 2 : 1;
            if (_vocab.TryGetValue(piece.Substring(i, length), out int id))
            {
                FlushUnknown();
                Add(id, i, length);
            }
            else if (_byteIds is not null && Rune.DecodeFromUtf16(piece.AsSpan(i, length), out Rune rune, out _) == OperationStatus.Done
                && rune.EncodeToUtf8(utf8) is int byteCount && AllBytesKnown(utf8[..byteCount]))
            {
                FlushUnknown();
                foreach (byte b in utf8[..byteCount]) Add(_byteIds[b], i, length);
            }
            else if (_unkId is not null)
            {
                if (unknown is { } u && _fuseUnk) unknown = (u.Start, i + length - u.Start);
                else
                {
                    FlushUnknown();
                    unknown = (i, length);
                }
            }
            i += length;
        }
        FlushUnknown();
        if (symbols.Count > 0)
        {
            var last = symbols[^1];
            last.Next = -1;
            symbols[^1] = last;
        }
        return symbols;
    }

    private bool AllBytesKnown(ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes) if (_byteIds![b] < 0) return false;
        return true;
    }

    // tokenizers' Word::merge_all without dropout: always the pair of lowest rank, leftmost on ties.
    private (int Id, int Start, int Length)[] Merge(List<Symbol> list)
    {
        Symbol[] s = list.ToArray();
        var queue = new PriorityQueue<(int Position, int Id), (int Rank, int Position)>();
        for (int i = 0; i + 1 < s.Length; i++)
        {
            if (_merges.TryGetValue((s[i].Id, s[i + 1].Id), out var m)) queue.Enqueue((i, m.Id), (m.Rank, i));
        }
        while (queue.TryDequeue(out var top, out var priority))
        {
            int pos = top.Position;
            if (s[pos].Removed || s[pos].Next < 0) continue;
            int next = s[pos].Next;
            // The entry is stale when either side has merged since it was queued.
            if (!_merges.TryGetValue((s[pos].Id, s[next].Id), out var m) || m.Id != top.Id || m.Rank != priority.Rank) continue;

            s[pos].Id = m.Id;
            s[pos].Length = s[next].Start + s[next].Length - s[pos].Start;
            s[pos].Next = s[next].Next;
            s[next].Removed = true;
            if (s[pos].Next >= 0) s[s[pos].Next].Prev = pos;

            if (s[pos].Prev >= 0 && _merges.TryGetValue((s[s[pos].Prev].Id, s[pos].Id), out var left))
                queue.Enqueue((s[pos].Prev, left.Id), (left.Rank, s[pos].Prev));
            if (s[pos].Next >= 0 && _merges.TryGetValue((s[pos].Id, s[s[pos].Next].Id), out var right))
                queue.Enqueue((pos, right.Id), (right.Rank, pos));
        }
        var result = new List<(int, int, int)>(s.Length);
        foreach (var symbol in s) if (!symbol.Removed) result.Add((symbol.Id, symbol.Start, symbol.Length));
        return result.ToArray();
    }

    /// <summary>Decodes with tokenizer.json's decoder; ids outside the vocabulary are skipped, as tokenizers does.</summary>
    public override string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if ((uint)id < (uint)_idToToken.Length && _idToToken[id] is { } token) tokens.Add(token);
        }
        foreach (var decode in _decoders) tokens = decode(tokens);
        return string.Concat(tokens);
    }

    /// <inheritdoc/>
    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        // Decoders such as Strip and ByteFallback look across tokens, so only a whole decode is well defined.
        var list = ids as IReadOnlyCollection<int> ?? ids.ToList();
        string text = Decode(list);
        if (text.Length > destination.Length)
        {
            idsConsumed = charsWritten = 0;
            return OperationStatus.DestinationTooSmall;
        }
        text.AsSpan().CopyTo(destination);
        idsConsumed = list.Count;
        charsWritten = text.Length;
        return OperationStatus.Done;
    }

    private static void ReadNormalizer(string path, JsonElement n, List<Func<string, string>> steps)
    {
        if (n.ValueKind == JsonValueKind.Null) return;
        string? type = HuggingFaceTokenizerJson.GetString(n, "type");
        switch (type)
        {
            case "Sequence":
                foreach (var item in Items(path, n, "normalizers", "normalizer")) ReadNormalizer(path, item, steps);
                break;
            case "Prepend":
                string prepend = Required(path, n, "prepend", "normalizer Prepend");
                steps.Add(s => s.Length == 0 ? s : prepend + s);
                break;
            case "Replace":
                steps.Add(Replace(path, n, "normalizer"));
                break;
            case "NFC": steps.Add(s => s.Normalize(NormalizationForm.FormC)); break;
            case "NFD": steps.Add(s => s.Normalize(NormalizationForm.FormD)); break;
            case "NFKC": steps.Add(s => s.Normalize(NormalizationForm.FormKC)); break;
            case "NFKD": steps.Add(s => s.Normalize(NormalizationForm.FormKD)); break;
            default:
                throw new NotSupportedException($"Normalizer \"{type}\" in {path} is not supported; {HuggingFaceTokenizerJson.Supported}.");
        }
    }

    private static Metaspace? ReadPreTokenizer(string path, JsonElement pre)
    {
        if (pre.ValueKind == JsonValueKind.Null) return null;
        string? type = HuggingFaceTokenizerJson.GetString(pre, "type");
        if (type == "Sequence")
        {
            var items = Items(path, pre, "pretokenizers", "pre_tokenizer").ToList();
            if (items.Count == 0) return null;
            if (items.Count == 1) return ReadPreTokenizer(path, items[0]);
            type = "Sequence[" + string.Join(", ", items.Select(i => HuggingFaceTokenizerJson.GetString(i, "type"))) + "]";
        }
        if (type != "Metaspace")
            throw new NotSupportedException($"Pre-tokenizer \"{type}\" in {path} is not supported with SentencePiece-style BPE; {HuggingFaceTokenizerJson.Supported}.");
        string replacement = Required(path, pre, "replacement", "pre_tokenizer Metaspace");
        // Files written before prepend_scheme existed say add_prefix_space, which meant "always".
        string scheme = HuggingFaceTokenizerJson.GetString(pre, "prepend_scheme")
            ?? (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
        if (scheme is not ("always" or "first" or "never"))
            throw new InvalidDataException($"{path}: Metaspace prepend_scheme \"{scheme}\" is none of always, first, never.");
        bool split = !pre.TryGetProperty("split", out var sp) || sp.ValueKind != JsonValueKind.False;
        return new Metaspace(replacement, scheme, split);
    }

    private static void ReadDecoder(string path, JsonElement d, List<Func<List<string>, List<string>>> steps)
    {
        if (d.ValueKind == JsonValueKind.Null) return;
        string? type = HuggingFaceTokenizerJson.GetString(d, "type");
        switch (type)
        {
            case "Sequence":
                foreach (var item in Items(path, d, "decoders", "decoder")) ReadDecoder(path, item, steps);
                break;
            case "Replace":
                var replace = Replace(path, d, "decoder");
                steps.Add(tokens => tokens.Select(replace).ToList());
                break;
            case "Fuse":
                steps.Add(tokens => [string.Concat(tokens)]);
                break;
            case "ByteFallback":
                steps.Add(FuseBytes);
                break;
            case "Strip":
                string content = Required(path, d, "content", "decoder Strip");
                int start = d.TryGetProperty("start", out var st) ? st.GetInt32() : 0, stop = d.TryGetProperty("stop", out var sp) ? sp.GetInt32() : 0;
                if (content.Length != 1) throw new InvalidDataException($"{path}: decoder Strip content \"{content}\" is not one character.");
                steps.Add(tokens => tokens.Select(t => Strip(t, content[0], start, stop)).ToList());
                break;
            case "Metaspace":
                string replacement = Required(path, d, "replacement", "decoder Metaspace");
                string scheme = HuggingFaceTokenizerJson.GetString(d, "prepend_scheme")
                    ?? (d.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                // tokenizers drops the replacement characters of the first token (they stand for the prepended space)
                // and turns every other one into a space.
                steps.Add(tokens => tokens.Select((t, i) => t.Replace(replacement, i == 0 && scheme != "never" ? "" : " ", StringComparison.Ordinal)).ToList());
                break;
            default:
                throw new NotSupportedException($"Decoder \"{type}\" in {path} is not supported with SentencePiece-style BPE; {HuggingFaceTokenizerJson.Supported}.");
        }
    }

    // tokenizers' ByteFallback decoder: runs of <0xXX> tokens become their UTF-8 text, or one U+FFFD per byte when invalid.
    private static List<string> FuseBytes(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        void Flush()
        {
            if (bytes.Count == 0) return;
            try { result.Add(strict.GetString(bytes.ToArray())); }
            catch (DecoderFallbackException) { result.AddRange(Enumerable.Repeat("\uFFFD", bytes.Count)); }
            bytes.Clear();
        }
        foreach (string token in tokens)
        {
            if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            Flush();
            result.Add(token);
        }
        Flush();
        return result;
    }

    private static string Strip(string token, char content, int start, int stop)
    {
        int from = 0, to = token.Length;
        while (from < start && from < to && token[from] == content) from++;
        while (token.Length - to < stop && to > from && token[to - 1] == content) to--;
        return token[from..to];
    }

    private static Func<string, string> Replace(string path, JsonElement r, string where)
    {
        string content = Required(path, r, "content", $"{where} Replace");
        if (!r.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: {where} Replace has no pattern object.");
        if (HuggingFaceTokenizerJson.GetString(pattern, "String") is { } literal)
            return s => s.Replace(literal, content, StringComparison.Ordinal);
        if (HuggingFaceTokenizerJson.GetString(pattern, "Regex") is { } regex)
        {
            var compiled = new Regex(regex, RegexOptions.CultureInvariant);
            return s => compiled.Replace(s, content.Replace("$", "$$", StringComparison.Ordinal));
        }
        throw new InvalidDataException($"{path}: {where} Replace pattern {pattern.GetRawText()} is neither {{\"String\": …}} nor {{\"Regex\": …}}.");
    }

    private static string Required(string path, JsonElement e, string name, string where) =>
        HuggingFaceTokenizerJson.GetString(e, name) ?? throw new InvalidDataException($"{path}: {where} has no string \"{name}\".");

    private static IEnumerable<JsonElement> Items(string path, JsonElement e, string name, string where) =>
        e.TryGetProperty(name, out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray()
            : throw new InvalidDataException($"{path}: {where} Sequence has no \"{name}\" array.");
}
