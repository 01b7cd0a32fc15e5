using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// The tokenizer of a model directory in Hugging Face layout, with the special-token ids the rest of the library
/// needs. Wraps a Microsoft.ML.Tokenizers <see cref="Tokenizer"/>.
/// </summary>
public sealed class ModelTokenizer
{
    /// <summary>
    /// Hugging Face's fast-tokenizer file: byte-level BPE (GPT-2, Llama 3, Qwen2) or SentencePiece-style BPE with byte
    /// fallback (Llama 2, Mistral, TinyLlama).
    /// </summary>
    public const string TokenizerJsonFileName = "tokenizer.json";

    /// <summary>The SentencePiece model file of Llama 2 and Mistral.</summary>
    public const string SentencePieceFileName = "tokenizer.model";

    private const string TokenizerConfigFileName = "tokenizer_config.json";
    private const string ConfigFileName = "config.json";
    private const string GenerationConfigFileName = "generation_config.json";

    private readonly Func<string, int?> _lookup;
    private readonly string?[] _idToToken;
    private readonly (int[] Prefix, int[] Suffix)? _template;

    private ModelTokenizer(Tokenizer inner, int vocabularySize, Func<string, int?> lookup,
        IEnumerable<KeyValuePair<string, int>> tokens, (int[] Prefix, int[] Suffix)? template)
    {
        Inner = inner;
        VocabularySize = vocabularySize;
        _lookup = lookup;
        _idToToken = new string?[vocabularySize];
        foreach (var (token, id) in tokens) if ((uint)id < (uint)vocabularySize) _idToToken[id] = token;
        _template = template;
    }

    /// <summary>The Microsoft.ML.Tokenizers object doing the work; it never adds BOS or EOS by itself.</summary>
    public Tokenizer Inner { get; }

    /// <summary>
    /// Beginning-of-sequence id: tokenizer_config.json <c>bos_token</c> when that key is present (null there means
    /// the tokenizer uses none, as with Qwen2), else config.json <c>bos_token_id</c>, else the SentencePiece model's.
    /// </summary>
    public int? BosId { get; private set; }

    /// <summary>
    /// The id batches pad with: <see cref="PadId"/>, else <see cref="EosId"/>, else 0. Padded positions carry no label
    /// and come after every real token, so the value only has to be a valid id.
    /// </summary>
    public int PaddingId => PadId ?? EosId ?? 0;

    /// <summary>The first of <see cref="EosIds"/>, or null when there is none.</summary>
    public int? EosId => EosIds.Count > 0 ? EosIds[0] : null;

    /// <summary>
    /// Every id that ends a sequence, for stopping generation: config.json <c>eos_token_id</c> (an int or a list,
    /// in its order), then tokenizer_config.json <c>eos_token</c>, then generation_config.json <c>eos_token_id</c>,
    /// then the SentencePiece model's, without repeats.
    /// </summary>
    public IReadOnlyList<int> EosIds { get; private set; } = [];

    /// <summary>Padding id: tokenizer_config.json <c>pad_token</c>, else config.json <c>pad_token_id</c>, else null.</summary>
    public int? PadId { get; private set; }

    /// <summary>
    /// One more than the largest id the tokenizer can produce (vocabulary and added tokens). A model's embedding
    /// table may be larger (config.json <c>vocab_size</c> is often padded).
    /// </summary>
    public int VocabularySize { get; }

    /// <summary>Encodes <paramref name="text"/>; added/special tokens written in the text become their ids, as in Hugging Face.</summary>
    /// <param name="text">The text.</param>
    /// <param name="addBos">Prepend <see cref="BosId"/> (nothing is prepended when the tokenizer has none).</param>
    public IReadOnlyList<int> Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> ids = Inner.EncodeToIds(text);
        if (!addBos || BosId is not int bos) return ids;
        var result = new List<int>(ids.Count + 1) { bos };
        result.AddRange(ids);
        return result;
    }

    /// <summary>
    /// The special-token ids Hugging Face's tokenizer puts before the text when asked to add special tokens
    /// (<c>add_special_tokens=True</c>): tokenizer_config.json <c>add_bos_token</c> when present (BOS or nothing),
    /// else tokenizer.json's TemplateProcessing post-processor, else nothing; with only tokenizer.model, BOS unless
    /// <c>add_bos_token</c> is false (LlamaTokenizer's default).
    /// </summary>
    public IReadOnlyList<int> SpecialPrefixIds { get; private set; } = [];

    /// <summary>As <see cref="SpecialPrefixIds"/>, after the text (tokenizer_config.json <c>add_eos_token</c>: EOS).</summary>
    public IReadOnlyList<int> SpecialSuffixIds { get; private set; } = [];

    /// <summary>
    /// Encodes <paramref name="text"/> as Hugging Face's tokenizer does with <c>add_special_tokens</c> =
    /// <paramref name="addSpecialTokens"/>: <see cref="SpecialPrefixIds"/>, the text, <see cref="SpecialSuffixIds"/>.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="addSpecialTokens">Add the tokenizer's own special tokens around the text.</param>
    public IReadOnlyList<int> EncodeWithSpecialTokens(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> ids = Inner.EncodeToIds(text);
        if (!addSpecialTokens || (SpecialPrefixIds.Count == 0 && SpecialSuffixIds.Count == 0)) return ids;
        var result = new List<int>(ids.Count + SpecialPrefixIds.Count + SpecialSuffixIds.Count);
        result.AddRange(SpecialPrefixIds);
        result.AddRange(ids);
        result.AddRange(SpecialSuffixIds);
        return result;
    }

    /// <summary>
    /// Encodes <paramref name="text"/> as <see cref="EncodeWithSpecialTokens"/> does without the tokenizer's own special
    /// tokens (added tokens written in the text become their ids), with each token's characters in
    /// <paramref name="text"/>: [Start, End) in UTF-16 units, as Hugging Face's <c>return_offsets_mapping</c> gives them.
    /// Through a normalizer that replaces or prepends characters (SentencePiece's "▁"), offsets are mapped back to the
    /// text; a prepended character belongs to the token that holds it.
    /// </summary>
    /// <exception cref="NotSupportedException">The normalizer changed the text in a way that cannot be mapped back.</exception>
    public (IReadOnlyList<int> Ids, IReadOnlyList<(int Start, int End)> Offsets) EncodeWithOffsets(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tokens = Inner.EncodeToTokens(text, out string? normalized);
        var ids = new int[tokens.Count];
        var offsets = new (int Start, int End)[tokens.Count];
        int[]? toText = normalized is null ? null : Alignment(text, normalized);
        int length = normalized?.Length ?? text.Length;
        for (int i = 0; i < tokens.Count; i++)
        {
            var (start, count) = tokens[i].Offset.GetOffsetAndLength(length);
            ids[i] = tokens[i].Id;
            offsets[i] = toText is null ? (start, start + count) : (toText[start], toText[start + count]);
        }
        return (ids, offsets);
    }

    // For each index of the normalized text, the index of the text it came from: characters kept or replaced one for
    // one (" " → "▁") map to their source, inserted ones to the next source character.
    static int[] Alignment(string text, string normalized)
    {
        var map = new int[normalized.Length + 1];
        int i = 0;
        for (int j = 0; j < normalized.Length; j++)
        {
            map[j] = i;
            if (i < text.Length && (text[i] == normalized[j] || (text[i] == ' ' && normalized[j] == '\u2581'))) i++;
        }
        map[normalized.Length] = text.Length;
        if (i != text.Length)
            throw new NotSupportedException("This tokenizer's normalizer changes the text in a way token offsets cannot be mapped back through (only replacing or prepending characters can).");
        return map;
    }

    /// <summary>
    /// The token of <paramref name="id"/> as the vocabulary spells it (e.g. <c>▁Hello</c>, <c>&lt;0x0A&gt;</c>,
    /// <c>Ġworld</c>, <c>&lt;s&gt;</c>), or null when no token has that id.
    /// </summary>
    /// <param name="id">A token id.</param>
    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    /// <summary>Decodes ids to text; special tokens are kept as their text.</summary>
    /// <param name="ids">Token ids.</param>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return Inner.Decode(ids) ?? string.Empty;
    }

    /// <summary>The id of a token given by its text (an added/special token or a vocabulary entry), or null.</summary>
    /// <param name="token">The token's text, e.g. <c>&lt;|endoftext|&gt;</c>.</param>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _lookup(token);
    }

    /// <summary>Whether <paramref name="modelDirectory"/> holds a tokenizer file <see cref="Load"/> looks for.</summary>
    /// <param name="modelDirectory">A model directory in Hugging Face layout.</param>
    public static bool Exists(string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        return File.Exists(Path.Combine(modelDirectory, TokenizerJsonFileName))
            || File.Exists(Path.Combine(modelDirectory, SentencePieceFileName));
    }

    /// <summary>
    /// Loads the tokenizer of a model directory: tokenizer.json when there is one (as Hugging Face's fast tokenizers
    /// do), else the SentencePiece tokenizer.model; special-token ids come from tokenizer_config.json, config.json and
    /// generation_config.json.
    /// </summary>
    /// <param name="modelDirectory">A model directory in Hugging Face layout.</param>
    /// <exception cref="FileNotFoundException">Neither tokenizer file exists.</exception>
    /// <exception cref="NotSupportedException">The tokenizer's type or one of its components is not supported.</exception>
    /// <exception cref="InvalidDataException">A file is malformed, or names a special token the vocabulary lacks.</exception>
    public static ModelTokenizer Load(string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        string jsonPath = Path.Combine(modelDirectory, TokenizerJsonFileName);
        string spPath = Path.Combine(modelDirectory, SentencePieceFileName);
        bool hasJson = File.Exists(jsonPath), hasSp = File.Exists(spPath);
        if (!hasJson && !hasSp)
            throw new FileNotFoundException(
                $"No tokenizer in {Path.GetFullPath(modelDirectory)}: looked for {TokenizerJsonFileName} and {SentencePieceFileName}.",
                jsonPath);

        ModelTokenizer tokenizer;
        int? intrinsicBos = null, intrinsicEos = null;
        if (hasJson)
        {
            // Llama 2 and Mistral ship tokenizer.json next to tokenizer.model; tokenizer.json is what transformers
            // loads by default, and its SentencePiece-style BPE is checked id for id against an independent implementation.
            using JsonDocument json = ParseJson(jsonPath);
            try
            {
                var r = HuggingFaceTokenizerJson.Load(jsonPath, json.RootElement);
                tokenizer = new ModelTokenizer(r.Tokenizer, r.VocabularySize, token =>
                    r.AddedTokens.TryGetValue(token, out int id) || r.Vocabulary.TryGetValue(token, out id)
                    || r.Vocabulary.TryGetValue(ByteLevel.EncodeText(token), out id) ? id : null,
                    r.Vocabulary.Concat(r.AddedTokens), r.Template);
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or KeyNotFoundException or OverflowException)
            {
                // JsonElement's getters throw the first two for a value of the wrong kind or range; Microsoft.ML.Tokenizers
                // throws ArgumentException for a vocabulary or merges it cannot build on.
                throw new InvalidDataException($"{jsonPath}: {e.Message}", e);
            }
        }
        else
        {
            SentencePieceTokenizer sp;
            using (var stream = File.OpenRead(spPath))
            {
                try
                {
                    // BOS is added by Encode itself so that every tokenizer kind behaves alike.
                    sp = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
                }
                catch (Exception e) when (e is not IOException and not OutOfMemoryException)
                {
                    throw new NotSupportedException($"{spPath} could not be read as a SentencePiece model ({e.Message}); {HuggingFaceTokenizerJson.Supported}.", e);
                }
            }
            int size = sp.Vocabulary.Count == 0 ? 0 : sp.Vocabulary.Values.Max() + 1;
            if (sp.SpecialTokens is { Count: > 0 } specials) size = Math.Max(size, specials.Values.Max() + 1);
            tokenizer = new ModelTokenizer(sp, size, token =>
                sp.SpecialTokens is { } s && s.TryGetValue(token, out int id) || sp.Vocabulary.TryGetValue(token, out id) ? id : null,
                sp.Vocabulary.Concat(sp.SpecialTokens ?? new Dictionary<string, int>()), null);
            intrinsicBos = sp.BeginningOfSentenceId;
            intrinsicEos = sp.EndOfSentenceId;
        }

        tokenizer.ResolveSpecialIds(modelDirectory, intrinsicBos, intrinsicEos);
        return tokenizer;
    }

    private void ResolveSpecialIds(string modelDirectory, int? intrinsicBos, int? intrinsicEos)
    {
        string tokenizerConfigPath = Path.Combine(modelDirectory, TokenizerConfigFileName);
        string configPath = Path.Combine(modelDirectory, ConfigFileName);
        string generationPath = Path.Combine(modelDirectory, GenerationConfigFileName);
        using JsonDocument? tokenizerConfig = File.Exists(tokenizerConfigPath) ? ParseJson(tokenizerConfigPath) : null;
        using JsonDocument? config = File.Exists(configPath) ? ParseJson(configPath) : null;
        using JsonDocument? generation = File.Exists(generationPath) ? ParseJson(generationPath) : null;

        var (hasBosToken, bosFromTokenizer) = TokenFromConfig(tokenizerConfig, tokenizerConfigPath, "bos_token");
        BosId = hasBosToken ? bosFromTokenizer : IdsFromConfig(config, configPath, "bos_token_id").Select(i => (int?)i).FirstOrDefault(intrinsicBos);

        var eos = new List<int>();
        void Add(IEnumerable<int> ids) { foreach (int id in ids) if (!eos.Contains(id)) eos.Add(id); }
        Add(IdsFromConfig(config, configPath, "eos_token_id"));
        if (TokenFromConfig(tokenizerConfig, tokenizerConfigPath, "eos_token").Id is int eosFromTokenizer) Add([eosFromTokenizer]);
        Add(IdsFromConfig(generation, generationPath, "eos_token_id"));
        if (intrinsicEos is int e) Add([e]);
        EosIds = eos;

        var (hasPadToken, padFromTokenizer) = TokenFromConfig(tokenizerConfig, tokenizerConfigPath, "pad_token");
        PadId = hasPadToken && padFromTokenizer is not null
            ? padFromTokenizer
            : IdsFromConfig(config, configPath, "pad_token_id").Select(i => (int?)i).FirstOrDefault();

        // transformers rebuilds a Llama tokenizer's post-processor from add_bos_token / add_eos_token when they are
        // given; a slow LlamaTokenizer (tokenizer.model alone) adds BOS unless told otherwise.
        bool? addBos = FlagFromConfig(tokenizerConfig, tokenizerConfigPath, "add_bos_token");
        bool? addEos = FlagFromConfig(tokenizerConfig, tokenizerConfigPath, "add_eos_token");
        var (prefix, suffix) = _template ?? ([], []);
        if (_template is null && addBos is null && !File.Exists(Path.Combine(modelDirectory, TokenizerJsonFileName))) addBos = true;
        if (addBos is bool withBos) prefix = withBos && BosId is int bosId ? [bosId] : [];
        if (addEos is bool withEos) suffix = withEos && TokenFromConfig(tokenizerConfig, tokenizerConfigPath, "eos_token").Id is int eosId ? [eosId] : [];
        SpecialPrefixIds = prefix;
        SpecialSuffixIds = suffix;
    }

    private static bool? FlagFromConfig(JsonDocument? doc, string path, string key)
    {
        if (doc is null || !doc.RootElement.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"{path}: \"{key}\" is {value.GetRawText()}, not true or false."),
        };
    }

    // tokenizer_config.json names tokens by text, either "<s>" or {"content": "<s>", ...} (AddedToken form).
    private (bool Present, int? Id) TokenFromConfig(JsonDocument? doc, string path, string key)
    {
        if (doc is null || !doc.RootElement.TryGetProperty(key, out var value)) return (false, null);
        string? text = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object => HuggingFaceTokenizerJson.GetString(value, "content"),
            JsonValueKind.Null => null,
            _ => throw new InvalidDataException($"{path}: \"{key}\" is {value.GetRawText()}, neither a string nor {{\"content\": ...}}."),
        };
        if (text is null) return (true, null);
        int? id = _lookup(text)
            ?? throw new InvalidDataException($"{path}: {key} \"{text}\" is neither an added token nor in the vocabulary.");
        return (true, id);
    }

    // config.json writes ids as an int, a list of ints (Llama 3 Instruct's eos_token_id) or null.
    private static IReadOnlyList<int> IdsFromConfig(JsonDocument? doc, string path, string key)
    {
        if (doc is null || !doc.RootElement.TryGetProperty(key, out var value)) return [];
        return value.ValueKind switch
        {
            JsonValueKind.Number => [value.GetInt32()],
            JsonValueKind.Array => value.EnumerateArray().Select(v => v.GetInt32()).ToList(),
            JsonValueKind.Null => [],
            _ => throw new InvalidDataException($"{path}: \"{key}\" is {value.GetRawText()}, neither an int nor a list of ints."),
        };
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }
    }
}
