using System.Text.Json;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Tests.Tokenization;

/// <summary>
/// SentencePiece-style BPE from tokenizer.json (Llama 2, Mistral) on hand-written vocabularies whose results are worked
/// out by hand from Hugging Face tokenizers' rules; RealTokenizerTests checks the real files against an independent implementation.
/// </summary>
[TestClass]
public sealed class SentencePieceBpeTests
{
    // <unk> <s> </s>, the 256 byte tokens, then these pieces.
    private static readonly string[] s_pieces = ["▁", "h", "e", "l", "o", "▁h", "he", "ll", "▁he", "llo", "▁hello", "▁hell"];
    private const int FirstPiece = 3 + 256;

    private string _dir = "";

    [TestInitialize]
    public void CreateDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-spbpe-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [TestMethod]
    public void MergesApplyInTheOrderOfTheMergeList()
    {
        // ▁ h e l l o. Ranked "h e" first: ▁ he l l o → ▁ he ll o → ▁he ll o → ▁he llo → ▁hello.
        Write(Llama2Style(merges: ["h e", "l l", "▁ h", "▁ he", "ll o", "▁he llo"]));
        var tokenizer = ModelTokenizer.Load(_dir);
        Assert.IsInstanceOfType<SentencePieceBpeTokenizer>(tokenizer.Inner);
        CollectionAssert.AreEqual(new[] { P("▁hello") }, Plain(tokenizer, "hello"));

        // Ranked "▁ h" first: ▁h e l l o → ▁h e ll o → ▁h e llo; "h e" no longer applies and there is no "▁h e".
        Write(Llama2Style(merges: ["▁ h", "l l", "h e", "▁ he", "ll o", "▁he llo"]));
        CollectionAssert.AreEqual(new[] { P("▁h"), P("e"), P("llo") }, Plain(ModelTokenizer.Load(_dir), "hello"));
    }

    [TestMethod]
    public void EqualRanksMergeLeftmostFirst()
    {
        // l l l: the leftmost pair merges first → ll l.
        Write(Llama2Style(merges: ["l l"]));
        CollectionAssert.AreEqual(new[] { P("▁"), P("ll"), P("l") }, Plain(ModelTokenizer.Load(_dir), "lll"));
    }

    [TestMethod]
    public void CharactersOutsideTheVocabularyFallBackToBytesAndDecodeBack()
    {
        Write(Llama2Style(merges: ["h e", "l l", "▁ he", "ll o", "▁he llo"]));
        var tokenizer = ModelTokenizer.Load(_dir);
        // 'i' is not a piece: <0x69>. ' ' → '▁'. 'ü' is C3 BC. '🙂' is F0 9F 99 82.
        int[] expected = [P("▁he"), P("ll"), 3 + 'i', P("▁"), 3 + 0xC3, 3 + 0xBC, 3 + 0xF0, 3 + 0x9F, 3 + 0x99, 3 + 0x82];
        var ids = Plain(tokenizer, "helli ü🙂");
        CollectionAssert.AreEqual(expected, ids);
        Assert.AreEqual("<0xC3>", tokenizer.IdToToken(3 + 0xC3));
        Assert.AreEqual("helli ü🙂", tokenizer.Decode(ids));
        // A lone continuation byte is not UTF-8: the decoder writes U+FFFD for it, as tokenizers' ByteFallback does.
        Assert.AreEqual("he\uFFFD", tokenizer.Decode([P("▁he"), 3 + 0x9F]));
    }

    [TestMethod]
    public void WithoutByteFallbackUnknownCharactersBecomeOneFusedUnk()
    {
        var json = Llama2Style(merges: ["h e"]);
        var model = (Dictionary<string, object?>)json["model"]!;
        model["byte_fallback"] = false;
        Write(json);
        CollectionAssert.AreEqual(new[] { P("▁"), P("he"), 0, P("h") }, Plain(ModelTokenizer.Load(_dir), "hexyzh"));
        model["fuse_unk"] = false;
        Write(json);
        CollectionAssert.AreEqual(new[] { P("▁"), P("he"), 0, 0, 0, P("h") }, Plain(ModelTokenizer.Load(_dir), "hexyzh"));
    }

    [TestMethod]
    public void PrependAppliesToEveryTextSegmentBetweenAddedTokens()
    {
        // tokenizers normalizes each piece between added tokens separately, so "</s>" is followed by a new "▁".
        Write(Llama2Style(merges: ["h e", "▁ he"]));
        CollectionAssert.AreEqual(new[] { P("▁he"), 2, P("▁he") }, Plain(ModelTokenizer.Load(_dir), "he</s>he"));
    }

    [TestMethod]
    public void MetaspacePrependsOnlyToTheFirstSegmentAndSplitsOnSpaces()
    {
        var json = Llama2Style(merges: ["h e", "l l", "▁ he", "▁ h", "ll o", "▁he llo", "▁he ll"]);
        json["normalizer"] = null;
        json["pre_tokenizer"] = new { type = "Metaspace", replacement = "▁", prepend_scheme = "first", split = true };
        json["decoder"] = new { type = "Metaspace", replacement = "▁", prepend_scheme = "first", split = true };
        Write(json);
        var tokenizer = ModelTokenizer.Load(_dir);
        // "hello hello": ▁hello | ▁hello. After </s> the segment does not start the text: no ▁ → he llo.
        CollectionAssert.AreEqual(new[] { P("▁hello"), P("▁hello"), 2, P("he"), P("llo") }, Plain(tokenizer, "hello hello</s>hello"));
        // split: "▁hell" and "o" cannot merge across "▁", unlike the unsplit "▁hello".
        CollectionAssert.AreEqual(new[] { P("▁hell"), P("▁"), P("o") }, Plain(tokenizer, "hell o"));
        Assert.AreEqual("hello hello", tokenizer.Decode(Plain(tokenizer, "hello hello")));

        json["pre_tokenizer"] = new { type = "Metaspace", replacement = "▁", prepend_scheme = "always", split = false };
        Write(json);
        CollectionAssert.AreEqual(new[] { 2, P("▁hello") }, Plain(ModelTokenizer.Load(_dir), "</s>hello"));
    }

    [TestMethod]
    public void TemplateAndTokenizerConfigDecideTheSpecialTokens()
    {
        var json = Llama2Style(merges: ["h e", "▁ he"]);
        json["post_processor"] = new
        {
            type = "TemplateProcessing",
            single = new object[] { new { SpecialToken = new { id = "<s>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } }, new { SpecialToken = new { id = "</s>", type_id = 0 } } },
            special_tokens = new Dictionary<string, object> { ["<s>"] = new { id = "<s>", ids = new[] { 1 } }, ["</s>"] = new { id = "</s>", ids = new[] { 2 } } },
        };
        Write(json);
        var tokenizer = ModelTokenizer.Load(_dir);
        CollectionAssert.AreEqual(new[] { 1, P("▁he"), 2 }, tokenizer.EncodeWithSpecialTokens("he").ToArray());
        CollectionAssert.AreEqual(new[] { P("▁he") }, tokenizer.EncodeWithSpecialTokens("he", addSpecialTokens: false).ToArray());

        // transformers' LlamaTokenizerFast rebuilds the template from add_bos_token / add_eos_token when they are given.
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{ "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false, "add_eos_token": true }""");
        tokenizer = ModelTokenizer.Load(_dir);
        CollectionAssert.AreEqual(new[] { P("▁he"), 2 }, tokenizer.EncodeWithSpecialTokens("he").ToArray());
        Assert.AreEqual(1, tokenizer.BosId);
    }

    [TestMethod]
    public void TokenizerJsonWinsOverTokenizerModel()
    {
        // A tokenizer.model that is not a SentencePiece model at all: it must not even be read.
        File.WriteAllBytes(Path.Combine(_dir, "tokenizer.model"), [0xFF, 0xFF, 0xFF]);
        Write(Llama2Style(merges: ["h e"]));
        var tokenizer = ModelTokenizer.Load(_dir);
        Assert.IsInstanceOfType<SentencePieceBpeTokenizer>(tokenizer.Inner);
        CollectionAssert.AreEqual(new[] { P("▁"), P("he") }, Plain(tokenizer, "he"));
    }

    [TestMethod]
    public void UnsupportedComponentsAreNamed()
    {
        var json = Llama2Style(merges: []);
        json["normalizer"] = new { type = "Lowercase" };
        Write(json);
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(e.Message, "\"Lowercase\"");
        StringAssert.Contains(e.Message, Path.Combine(_dir, "tokenizer.json"));

        json = Llama2Style(merges: []);
        json["pre_tokenizer"] = new { type = "Whitespace" };
        Write(json);
        e = Assert.ThrowsExactly<NotSupportedException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(e.Message, "\"Whitespace\"");

        json = Llama2Style(merges: ["h x"]);
        Write(json);
        var bad = Assert.ThrowsExactly<InvalidDataException>(() => ModelTokenizer.Load(_dir));
        StringAssert.Contains(bad.Message, "\"x\"");
    }

    private static int P(string piece) => Array.IndexOf(s_pieces, piece) is int i and >= 0 ? FirstPiece + i : throw new ArgumentException(piece);

    private static int[] Plain(ModelTokenizer tokenizer, string text) => tokenizer.EncodeWithSpecialTokens(text, addSpecialTokens: false).ToArray();

    // The layout of Llama 2's tokenizer.json as transformers' converter writes it (the chat client's streaming tests use it too).
    internal static Dictionary<string, object?> Llama2Style(string[] merges)
    {
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = 3 + b;
        for (int i = 0; i < s_pieces.Length; i++) vocab[s_pieces[i]] = FirstPiece + i;
        return new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new object[]
            {
                new { id = 0, content = "<unk>", special = true, normalized = false },
                new { id = 1, content = "<s>", special = true, normalized = false },
                new { id = 2, content = "</s>", special = true, normalized = false },
            },
            ["normalizer"] = new
            {
                type = "Sequence",
                normalizers = new object[] { new { type = "Prepend", prepend = "▁" }, new { type = "Replace", pattern = new { String = " " }, content = "▁" } },
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = null,
            ["decoder"] = new
            {
                type = "Sequence",
                decoders = new object[]
                {
                    new { type = "Replace", pattern = new { String = "▁" }, content = " " },
                    new { type = "ByteFallback" },
                    new { type = "Fuse" },
                    new { type = "Strip", content = " ", start = 1, stop = 0 },
                },
            },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = "<unk>",
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = true,
                ["byte_fallback"] = true,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
    }

    private void Write(object json) => File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), JsonSerializer.Serialize(json));
}
