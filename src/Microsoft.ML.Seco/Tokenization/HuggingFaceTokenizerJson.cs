using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// Builds a Microsoft.ML.Tokenizers tokenizer from a Hugging Face tokenizer.json of BPE type: byte-level (GPT-2,
/// Llama 3, Qwen2) or SentencePiece-style over characters with byte fallback (Llama 2, Mistral).
/// </summary>
internal static class HuggingFaceTokenizerJson
{
    internal const string Supported =
        "supported: tokenizer.json with model.type \"BPE\" and a ByteLevel pre-tokenizer (GPT-2, Llama 3, Qwen2), " +
        "optionally preceded by Split(regex, behavior Isolated) stages, normalizer none or NFC; " +
        "tokenizer.json with model.type \"BPE\" over characters (Llama 2, Mistral, TinyLlama: byte_fallback, normalizers " +
        "Prepend, Replace, NFC/NFD/NFKC/NFKD, pre-tokenizer none or Metaspace, decoders Replace, ByteFallback, Fuse, Strip, Metaspace); " +
        "or a SentencePiece tokenizer.model (Llama 2, Mistral)";

    /// <summary>
    /// What was read from tokenizer.json: the tokenizer, model.vocab, added_tokens, one more than the largest id, and
    /// the special-token ids the post_processor (TemplateProcessing) puts before and after a single sequence, or null
    /// when it declares none.
    /// </summary>
    internal sealed record Result(Tokenizer Tokenizer, IReadOnlyDictionary<string, int> Vocabulary,
        IReadOnlyDictionary<string, int> AddedTokens, int VocabularySize, (int[] Prefix, int[] Suffix)? Template);

    private static bool HasByteLevel(JsonElement pre)
    {
        if (pre.ValueKind != JsonValueKind.Object) return false;
        string? type = GetString(pre, "type");
        if (type == "ByteLevel") return true;
        return type == "Sequence" && pre.TryGetProperty("pretokenizers", out var list)
            && list.ValueKind == JsonValueKind.Array && list.EnumerateArray().Any(HasByteLevel);
    }

    internal static Result Load(string path, JsonElement root)
    {
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path} has no \"model\" object; it is not a Hugging Face tokenizer.json.");
        // Older files omit model.type for BPE; HF's own loader then infers BPE from the presence of merges.
        string type = GetString(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "(missing)");
        if (type != "BPE")
            throw new NotSupportedException($"Tokenizer model type \"{type}\" in {path} is not supported; {Supported}.");
        var vocab = ReadVocabulary(path, model);
        var merges = ReadMerges(path, model);
        var added = ReadAddedTokens(root);
        var template = ReadTemplate(path, root);
        int size = 0;
        foreach (int id in vocab.Values) size = Math.Max(size, id + 1);
        foreach (int id in added.Values) size = Math.Max(size, id + 1);

        if (!root.TryGetProperty("pre_tokenizer", out var pre) || !HasByteLevel(pre))
        {
            var sentencePiece = SentencePieceBpeTokenizer.Create(path, root, model, vocab, merges, added);
            return new Result(sentencePiece, vocab, added, size, template);
        }
        if (model.TryGetProperty("byte_fallback", out var fallback) && fallback.ValueKind == JsonValueKind.True)
            throw new NotSupportedException($"{path}: byte-level BPE with byte_fallback is not supported; {Supported}.");
        foreach (string affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (!string.IsNullOrEmpty(GetString(model, affix)))
                throw new NotSupportedException($"{path}: model.{affix} is set, which byte-level BPE here does not support; {Supported}.");
        }

        Normalizer? normalizer = ReadNormalizer(path, root);
        var stages = new List<Regex>();
        ReadPreTokenizer(path, pre, stages);
        var preTokenizer = new HuggingFacePreTokenizer(stages, new AddedTokens(added.Keys));
        var special = new Dictionary<string, int>(added);

        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        Tokenizer tokenizer = ignoreMerges
            ? CreateTiktoken(path, vocab, preTokenizer, normalizer, special)
            : CreateBpe(path, vocab, merges, preTokenizer, normalizer, special);
        return new Result(tokenizer, vocab, added, size, template);
    }

    // BpeTokenizer applies merges by their position in model.merges, which is precisely Hugging Face's BPE; a
    // tiktoken tokenizer would merge by token id instead, which agrees only for vocabularies converted from
    // tiktoken. Measured: on GPT-2's vocabulary this path matches TiktokenTokenizer.CreateForModel("gpt2") id for id.
    private static BpeTokenizer CreateBpe(string path, Dictionary<string, int> vocab, List<(string Left, string Right)> merges,
        PreTokenizer preTokenizer, Normalizer? normalizer, Dictionary<string, int> special)
    {
        var options = new BpeOptions(vocab)
        {
            // BpeOptions only takes the "a b" form; byte-level tokens never contain a space (it is spelled 'Ġ').
            Merges = merges.Select(m => m.Left.Contains(' ') || m.Right.Contains(' ')
                ? throw new NotSupportedException($"{path}: merge [\"{m.Left}\", \"{m.Right}\"] has a token containing a space, which byte-level BPE never produces.")
                : m.Left + " " + m.Right),
            ByteLevel = true,
            PreTokenizer = preTokenizer,
            Normalizer = normalizer,
            SpecialTokens = special,
        };
        return BpeTokenizer.Create(options);
    }

    // ignore_merges (Llama 3) means "a piece that is itself a vocabulary entry is emitted whole, before any merge",
    // which BpeTokenizer cannot express but is exactly how tiktoken encodes. Such vocabularies were converted from
    // tiktoken (ids are the tiktoken ranks, merges derived from them), so merging by id reproduces HF's result.
    private static TiktokenTokenizer CreateTiktoken(string path, Dictionary<string, int> vocab,
        PreTokenizer preTokenizer, Normalizer? normalizer, Dictionary<string, int> special)
    {
        var text = new StringBuilder(vocab.Count * 16);
        foreach (var (token, id) in vocab.OrderBy(p => p.Value))
        {
            if (special.ContainsKey(token)) continue;
            byte[] bytes = ByteLevel.Decode(token)
                ?? throw new InvalidDataException($"{path}: vocabulary entry \"{token}\" (id {id}) is not byte-level encoded.");
            text.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
        }
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text.ToString()));
        return TiktokenTokenizer.Create(stream, preTokenizer, normalizer, special);
    }

    private static Dictionary<string, int> ReadVocabulary(string path, JsonElement model)
    {
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: model.vocab is missing or not an object of token → id.");
        var result = new Dictionary<string, int>();
        foreach (var p in vocab.EnumerateObject()) result[p.Name] = p.Value.GetInt32();
        return result;
    }

    private static List<(string Left, string Right)> ReadMerges(string path, JsonElement model)
    {
        var result = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var merges) || merges.ValueKind != JsonValueKind.Array) return result;
        foreach (var m in merges.EnumerateArray())
        {
            // tokenizers < 0.20 writes "a b"; newer versions write ["a", "b"] so that tokens may contain spaces.
            if (m.ValueKind == JsonValueKind.String && m.GetString()!.Split(' ') is [var left, var right])
                result.Add((left, right));
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                result.Add((m[0].GetString()!, m[1].GetString()!));
            else
                throw new InvalidDataException($"{path}: model.merges entry {m.GetRawText()} is neither \"a b\" nor [\"a\", \"b\"].");
        }
        return result;
    }

    // TemplateProcessing's "single" template, alone or inside a Sequence of processors (Llama 3.1 pairs it with ByteLevel):
    // the SpecialToken items before $A are the prefix, those after it the suffix.
    private static (int[] Prefix, int[] Suffix)? ReadTemplate(string path, JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var post)) return null;
        if (GetString(post, "type") == "Sequence" && post.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array)
            post = list.EnumerateArray().FirstOrDefault(p => GetString(p, "type") == "TemplateProcessing");
        if (GetString(post, "type") != "TemplateProcessing") return null;
        if (!post.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: post_processor TemplateProcessing has no \"single\" array.");
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool afterSequence = false;
        foreach (var item in single.EnumerateArray())
        {
            if (item.TryGetProperty("Sequence", out _)) { afterSequence = true; continue; }
            if (!item.TryGetProperty("SpecialToken", out var special) || GetString(special, "id") is not { } name)
                throw new InvalidDataException($"{path}: post_processor template item {item.GetRawText()} is neither a Sequence nor a SpecialToken.");
            if (!post.TryGetProperty("special_tokens", out var specials) || !specials.TryGetProperty(name, out var entry)
                || !entry.TryGetProperty("ids", out var ids) || ids.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{path}: post_processor special_tokens has no ids for \"{name}\".");
            (afterSequence ? suffix : prefix).AddRange(ids.EnumerateArray().Select(i => i.GetInt32()));
        }
        return (prefix.ToArray(), suffix.ToArray());
    }

    private static Dictionary<string, int> ReadAddedTokens(JsonElement root)
    {
        var result = new Dictionary<string, int>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind != JsonValueKind.Array) return result;
        foreach (var t in added.EnumerateArray())
        {
            // Special or not, HF cuts every added token out of the text before pre-tokenization, so all of them
            // must be whole tokens here too.
            if (GetString(t, "content") is { } content && t.TryGetProperty("id", out var id)) result[content] = id.GetInt32();
        }
        return result;
    }

    private static Normalizer? ReadNormalizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null) return null;
        string? type = GetString(n, "type");
        if (type == "NFC") return NfcNormalizer.Instance;
        if (type == "Sequence" && n.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            var types = list.EnumerateArray().Select(x => GetString(x, "type")).ToList();
            if (types.Count == 0) return null;
            if (types.All(t => t == "NFC")) return NfcNormalizer.Instance;
            type = "Sequence[" + string.Join(", ", types) + "]";
        }
        throw new NotSupportedException($"Normalizer \"{type}\" in {path} is not supported; {Supported}.");
    }

    private static void ReadPreTokenizer(string path, JsonElement pre, List<Regex> stages)
    {
        string? type = GetString(pre, "type");
        switch (type)
        {
            case "Sequence":
                foreach (var p in pre.GetProperty("pretokenizers").EnumerateArray()) ReadPreTokenizer(path, p, stages);
                break;
            case "ByteLevel":
                if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                    throw new NotSupportedException($"{path}: ByteLevel with add_prefix_space true is not supported; {Supported}.");
                if (!pre.TryGetProperty("use_regex", out var useRegex) || useRegex.ValueKind != JsonValueKind.False)
                    stages.Add(CreateRegex(ByteLevel.Gpt2Pattern));
                break;
            case "Split":
                stages.Add(ReadSplit(path, pre));
                break;
            default:
                throw new NotSupportedException($"Pre-tokenizer \"{type}\" in {path} is not supported; {Supported}.");
        }
    }

    private static Regex ReadSplit(string path, JsonElement split)
    {
        string behavior = GetString(split, "behavior") ?? "Isolated";
        if (behavior != "Isolated")
            throw new NotSupportedException($"{path}: Split behavior \"{behavior}\" is not supported (only Isolated); {Supported}.");
        if (split.TryGetProperty("invert", out var invert) && invert.ValueKind == JsonValueKind.True)
            throw new NotSupportedException($"{path}: Split with invert true is not supported; {Supported}.");
        if (!split.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: Split has no pattern object.");
        if (GetString(pattern, "Regex") is { } regex) return CreateRegex(regex);
        if (GetString(pattern, "String") is { } literal) return CreateRegex(Regex.Escape(literal));
        throw new InvalidDataException($"{path}: Split pattern {pattern.GetRawText()} is neither {{\"Regex\": …}} nor {{\"String\": …}}.");
    }

    // The patterns (GPT-2, Llama 3, Qwen2) use only \p{..} classes, (?i:..) groups and lookahead, which mean the same
    // in .NET as in Oniguruma, the engine HF uses; Compiled pays off because every piece of every text runs them.
    private static Regex CreateRegex(string pattern) => new(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    internal static string? GetString(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString() : null;
}
