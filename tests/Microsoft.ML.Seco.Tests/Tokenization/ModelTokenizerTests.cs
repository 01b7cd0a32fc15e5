using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tests.Tokenization;

[TestClass]
public sealed class ModelTokenizerTests
{
    private const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private const string EnglishText =
        "The quick brown fox jumps over the lazy dog. It's 10:45 a.m. on 2024-03-17, and the temperature is 21.5°C!\n\n" +
        "Tokenizers split text into pieces; they shouldn't lose anything: \"quotes\", (parentheses), [brackets], {braces}, " +
        "emails like someone@example.com, URLs like https://example.org/a?b=c&d=e, and   runs   of   spaces.\n" +
        "\tTabs, trailing spaces   \r\nWindows line endings, and unicode: naïve café — 東京, Ελληνικά, emoji 🙂👍🏽.\n" +
        "Numbers: 1234567890, 3.14159, -42, 1e-9; contractions: I'm, you're, we've, they'll, he'd.   ";

    private string _dir = "";

    [TestInitialize]
    public void CreateDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [TestMethod]
    public void Gpt2RoundTripMatchesTiktokenReference()
    {
        var clock = Stopwatch.StartNew();
        TokenizerFiles.WriteGpt2(_dir);
        clock.Stop();
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromSeconds(5), $"WriteGpt2 took {clock.Elapsed}");

        Assert.IsTrue(ModelTokenizer.Exists(_dir));
        var tokenizer = ModelTokenizer.Load(_dir);
        var reference = TiktokenTokenizer.CreateForModel("gpt2");

        IReadOnlyList<int> ids = tokenizer.Encode(EnglishText, addBos: false);
        CollectionAssert.AreEqual(reference.EncodeToIds(EnglishText).ToArray(), ids.ToArray());
        Assert.AreEqual(EnglishText, tokenizer.Decode(ids));
        Assert.AreEqual(50257, tokenizer.VocabularySize);
        Assert.IsInstanceOfType<BpeTokenizer>(tokenizer.Inner);
    }

    [TestMethod]
    public void BytesTokenizerGivesTheUtf8BytesWithEndOfTextAsBosAndEos()
    {
        TokenizerFiles.WriteBytes(_dir);
        var tokenizer = ModelTokenizer.Load(_dir);
        IReadOnlyList<int> ids = tokenizer.Encode(EnglishText, addBos: true);
        // The reference is .NET's own UTF-8 encoder, not the byte-level alphabet the file is spelled in.
        CollectionAssert.AreEqual(new[] { TokenizerFiles.BytesEndOfTextId }.Concat(System.Text.Encoding.UTF8.GetBytes(EnglishText).Select(b => (int)b)).ToArray(), ids.ToArray());
        Assert.AreEqual(EnglishText, tokenizer.Decode(ids.Skip(1)));
        Assert.AreEqual(257, tokenizer.VocabularySize);
        Assert.AreEqual(TokenizerFiles.BytesEndOfTextId, tokenizer.EosId);
    }

    [TestMethod]
    public void Gpt2EndOfTextIsSpecialAndIsBosAndEos()
    {
        TokenizerFiles.WriteGpt2(_dir);
        var tokenizer = ModelTokenizer.Load(_dir);

        Assert.AreEqual(50256, tokenizer.BosId);
        Assert.AreEqual(50256, tokenizer.EosId);
        CollectionAssert.AreEqual(new[] { 50256 }, tokenizer.EosIds.ToArray());
        Assert.IsNull(tokenizer.PadId);
        Assert.AreEqual(50256, tokenizer.TokenToId("<|endoftext|>"));

        var ids = tokenizer.Encode("Hello world<|endoftext|>", addBos: true);
        CollectionAssert.AreEqual(new[] { 50256, 15496, 995, 50256 }, ids.ToArray());
        Assert.AreEqual("<|endoftext|>Hello world<|endoftext|>", tokenizer.Decode(ids));
    }

    [TestMethod]
    public void EosTokenIdListInConfigIsKeptInOrder()
    {
        TokenizerFiles.WriteGpt2(_dir);
        File.WriteAllText(Path.Combine(_dir, "config.json"), """{ "bos_token_id": 50256, "eos_token_id": [198, 50256, 13], "pad_token_id": null }""");
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{ "eos_token_id": [13, 0] }""");
        var tokenizer = ModelTokenizer.Load(_dir);

        Assert.AreEqual(198, tokenizer.EosId);
        CollectionAssert.AreEqual(new[] { 198, 50256, 13, 0 }, tokenizer.EosIds.ToArray());
        Assert.IsNull(tokenizer.PadId);
    }

    [TestMethod]
    public void HandWrittenBpeEncodesByItsMerges()
    {
        // l o w e r → (l o) → (lo w) → (e r): "lower" = low + er; the leading space is 'Ġ' in byte-level spelling.
        WriteTokenizerJson(TinyBpe(stringMerges: true));
        var tokenizer = ModelTokenizer.Load(_dir);

        CollectionAssert.AreEqual(new[] { Id("low"), Id("er") }, tokenizer.Encode("lower", addBos: false).ToArray());
        CollectionAssert.AreEqual(new[] { Id("Ġlow"), Id("e"), Id("s"), Id("t") }, tokenizer.Encode(" lowest", addBos: false).ToArray());
        Assert.AreEqual("lower lowest", tokenizer.Decode(tokenizer.Encode("lower lowest", addBos: false)));
    }

    [TestMethod]
    public void MergesAsPairsEncodeLikeMergesAsStrings()
    {
        WriteTokenizerJson(TinyBpe(stringMerges: true));
        var fromStrings = ModelTokenizer.Load(_dir).Encode("lower lowest slow", addBos: false);
        WriteTokenizerJson(TinyBpe(stringMerges: false));
        var fromPairs = ModelTokenizer.Load(_dir).Encode("lower lowest slow", addBos: false);

        CollectionAssert.AreEqual(fromStrings.ToArray(), fromPairs.ToArray());
        Assert.IsTrue(fromPairs.Contains(Id("Ġlow")));
    }

    [TestMethod]
    public void SplitRegexPreTokenizerIsHonoured()
    {
        // Llama 3's pattern cuts digits in groups of three: "12345" → "123" "45" → [123, 45]. GPT-2's keeps "12345"
        // whole, and merge "3 4" (ranked before "12 3") then wins: [12, 34, 5].
        var digits = new Dictionary<string, int> { ["1"] = 0, ["2"] = 1, ["3"] = 2, ["4"] = 3, ["5"] = 4, ["12"] = 5, ["34"] = 6, ["45"] = 7, ["123"] = 8 };
        string[] merges = ["1 2", "3 4", "4 5", "12 3"];

        WriteTokenizerJson(BpeJson(digits, merges, new
        {
            type = "Sequence",
            pretokenizers = new object[]
            {
                new { type = "Split", pattern = new { Regex = Llama3Pattern }, behavior = "Isolated", invert = false },
                new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = false },
            },
        }));
        CollectionAssert.AreEqual(new[] { 8, 7 }, ModelTokenizer.Load(_dir).Encode("12345", addBos: false).ToArray());

        WriteTokenizerJson(BpeJson(digits, merges, new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true }));
        CollectionAssert.AreEqual(new[] { 5, 6, 4 }, ModelTokenizer.Load(_dir).Encode("12345", addBos: false).ToArray());
    }

    [TestMethod]
    public void IgnoreMergesEmitsWholeVocabularyWords()
    {
        // Llama 3 sets ignore_merges: a piece found whole in the vocabulary is one token even when no merge makes it.
        var vocab = new Dictionary<string, int> { ["a"] = 0, ["b"] = 1, ["c"] = 2, ["ab"] = 3, ["abc"] = 4 };
        WriteTokenizerJson(BpeJson(vocab, new[] { "a b" }, ByteLevelPre(), ignoreMerges: false));
        CollectionAssert.AreEqual(new[] { 3, 2 }, ModelTokenizer.Load(_dir).Encode("abc", addBos: false).ToArray());

        WriteTokenizerJson(BpeJson(vocab, new[] { "a b" }, ByteLevelPre(), ignoreMerges: true));
        var tokenizer = ModelTokenizer.Load(_dir);
        CollectionAssert.AreEqual(new[] { 4 }, tokenizer.Encode("abc", addBos: false).ToArray());
        CollectionAssert.AreEqual(new[] { 3, 0 }, tokenizer.Encode("aba", addBos: false).ToArray());
        Assert.AreEqual("abcaba", tokenizer.Decode([4, 3, 0]));
    }

    [TestMethod]
    public void AddedTokensOutsideTheVocabularyResolveBosAndEos()
    {
        // Llama 3 keeps <|begin_of_text|> etc. only in added_tokens; tokenizer_config names them, sometimes as objects.
        var json = TinyBpe(stringMerges: true);
        json["added_tokens"] = new object[]
        {
            new { id = 100, content = "<|begin_of_text|>", special = true },
            new { id = 101, content = "<|end_of_text|>", special = true },
            new { id = 102, content = "<|pad|>", special = true },
        };
        WriteTokenizerJson(json);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"),
            """{ "bos_token": { "content": "<|begin_of_text|>", "special": true }, "eos_token": "<|end_of_text|>", "pad_token": "<|pad|>" }""");
        var tokenizer = ModelTokenizer.Load(_dir);

        Assert.AreEqual(100, tokenizer.BosId);
        Assert.AreEqual(101, tokenizer.EosId);
        Assert.AreEqual(102, tokenizer.PadId);
        Assert.AreEqual(103, tokenizer.VocabularySize);
        CollectionAssert.AreEqual(new[] { 100, Id("low"), 101, Id("er") },
            tokenizer.Encode("low<|end_of_text|>er", addBos: true).ToArray());
    }

    [TestMethod]
    public void NullBosTokenMeansNoBos()
    {
        // Qwen2: tokenizer_config has "bos_token": null although config.json carries a bos_token_id.
        WriteTokenizerJson(TinyBpe(stringMerges: true));
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{ "bos_token": null, "eos_token": "er" }""");
        File.WriteAllText(Path.Combine(_dir, "config.json"), """{ "bos_token_id": 3, "eos_token_id": 12 }""");
        var tokenizer = ModelTokenizer.Load(_dir);

        Assert.IsNull(tokenizer.BosId);
        CollectionAssert.AreEqual(new[] { Id("low") }, tokenizer.Encode("low", addBos: true).ToArray());
        CollectionAssert.AreEqual(new[] { 12, Id("er") }, tokenizer.EosIds.ToArray());
    }

    [TestMethod]
    public void NfcNormalizerComposesBeforeEncoding()
    {
        // Qwen2 declares NFC: "e" + combining acute must encode as the precomposed "é" (UTF-8 C3 A9 = "Ã©").
        var vocab = new Dictionary<string, int> { ["e"] = 0, ["Ã"] = 1, ["©"] = 2, ["Ì"] = 3, ["ģ"] = 4, ["Ã©"] = 5 };
        var json = BpeJson(vocab, new[] { "Ã ©" }, ByteLevelPre());
        json["normalizer"] = new { type = "NFC" };
        WriteTokenizerJson(json);

        CollectionAssert.AreEqual(new[] { 5 }, ModelTokenizer.Load(_dir).Encode("e\u0301", addBos: false).ToArray());
    }

    [TestMethod]
    [DataRow("WordPiece")]
    [DataRow("Unigram")]
    public void UnsupportedModelTypeIsNamed(string type)
    {
        WriteTokenizerJson(new Dictionary<string, object?> { ["model"] = new { type, vocab = new { a = 0 } } });
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(e.Message, $"\"{type}\"");
        StringAssert.Contains(e.Message, Path.Combine(_dir, "tokenizer.json"));
        StringAssert.Contains(e.Message, "supported:");
        StringAssert.Contains(e.Message, "tokenizer.model");
    }

    [TestMethod]
    public void UnsupportedPreTokenizerIsNamed()
    {
        // (Without ByteLevel the file is SentencePiece-style BPE: SentencePieceBpeTests covers its components.)
        var json = TinyBpe(stringMerges: true);
        json["pre_tokenizer"] = new { type = "Sequence", pretokenizers = new object[] { new { type = "Digits" }, ByteLevelPre() } };
        WriteTokenizerJson(json);
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(e.Message, "\"Digits\"");
    }

    [TestMethod]
    public void MissingFilesAreNamed()
    {
        Assert.IsFalse(ModelTokenizer.Exists(_dir));
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(e.Message, _dir);
        StringAssert.Contains(e.Message, "tokenizer.json");
        StringAssert.Contains(e.Message, "tokenizer.model");
    }

    [TestMethod]
    public void WriteGpt2WritesHuggingFaceLayout()
    {
        TokenizerFiles.WriteGpt2(_dir);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(_dir, "tokenizer.json")));
        var model = doc.RootElement.GetProperty("model");
        Assert.AreEqual("BPE", model.GetProperty("type").GetString());
        Assert.AreEqual(50257, model.GetProperty("vocab").EnumerateObject().Count());
        Assert.AreEqual(50000, model.GetProperty("merges").GetArrayLength());
        // The first merges of Hugging Face's gpt2 merges.txt.
        Assert.AreEqual("Ġ t", model.GetProperty("merges")[0].GetString());
        Assert.AreEqual("Ġ a", model.GetProperty("merges")[1].GetString());
        Assert.AreEqual(50256, doc.RootElement.GetProperty("added_tokens")[0].GetProperty("id").GetInt32());
        Assert.AreEqual("ByteLevel", doc.RootElement.GetProperty("decoder").GetProperty("type").GetString());
        Assert.IsTrue(File.Exists(Path.Combine(_dir, "tokenizer_config.json")));
    }

    private static readonly string[] s_tinyTokens = ["l", "o", "w", "e", "r", "s", "t", "Ġ", "lo", "low", "er", "Ġlow"];

    private static int Id(string token) => Array.IndexOf(s_tinyTokens, token) is int i and >= 0 ? i : throw new ArgumentException(token);

    private static Dictionary<string, object?> TinyBpe(bool stringMerges)
    {
        string[][] merges = [["l", "o"], ["lo", "w"], ["e", "r"], ["Ġ", "low"]];
        var vocab = s_tinyTokens.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i);
        return stringMerges
            ? BpeJson(vocab, merges.Select(m => m[0] + " " + m[1]).ToArray(), ByteLevelPre())
            : BpeJson(vocab, merges, ByteLevelPre());
    }

    private static object ByteLevelPre() => new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true };

    private static Dictionary<string, object?> BpeJson(Dictionary<string, int> vocab, object merges, object preTokenizer, bool ignoreMerges = false) => new()
    {
        ["version"] = "1.0",
        ["added_tokens"] = Array.Empty<object>(),
        ["normalizer"] = null,
        ["pre_tokenizer"] = preTokenizer,
        ["decoder"] = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
        ["model"] = new Dictionary<string, object?>
        {
            ["type"] = "BPE",
            ["dropout"] = null,
            ["unk_token"] = null,
            ["fuse_unk"] = false,
            ["byte_fallback"] = false,
            ["ignore_merges"] = ignoreMerges,
            ["vocab"] = vocab,
            ["merges"] = merges,
        },
    };

    private void WriteTokenizerJson(object json) =>
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), JsonSerializer.Serialize(json));
}
