using System.Text;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Tests.Tokenization;

/// <summary>
/// Real tokenizer.json files (Llama 2 style SentencePiece BPE with byte fallback, Llama 3 and Qwen3 byte-level BPE)
/// against an independent JavaScript implementation run at test time: ids, tokens and decoded text must be identical.
/// Inconclusive only when npm or the registry is unavailable.
/// </summary>
[TestClass]
public sealed class RealTokenizerTests
{
    private static readonly string[] s_hardTexts =
    [
        "",
        " ",
        "Hello world",
        "   three leading spaces, two trailing  ",
        "runs     of      spaces\t\ttabs\t \n\n\nnewlines \r\n CRLF\n",
        "\n\n\t  \n",
        "Digits: 1 12 123 1234 12345 123456 1234567890123 3.14159 0007 12,345,678 -42 1e-9 2024-03-17 ٣٤٥",
        "東京は日本の首都です。北京欢迎你！한국어 텍스트도 있습니다. ｆｕｌｌｗｉｄｔｈ",
        "emoji 🙂👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🦀🦀🦀",
        "naïve café résumé Ελληνικά Ünïcödé Ångström",
        "combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323",
        "def f(x):\n    return x**2  # square\n\nif __name__ == \"__main__\":\n\tprint(f(3))\n",
        "for (int i = 0; i < n; ++i) { sum += a[i] << 2; } // done\n    }\n}",
        "I'm, you're, we've, they'll, he'd. DON'T SHOUT'S",
        "nbsp\u00a0em\u2003zero\u200bwidth soft\u00adhyphen",
        "<s>Hello</s> <unk> x</s>y",
        "<|begin_of_text|>Hi<|end_of_text|>",
        "<|im_start|>user\nHi<|im_end|>\n",
    ];

    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void IdsTokensAndDecodingMatchTheJavaScriptReference(string model)
    {
        string directory;
        List<string> texts = [.. s_hardTexts];
        try
        {
            directory = RealTokenizerFiles.ModelDirectory(model);
            // Real prose at length: several chapters of Moby-Dick as one document (over 50K characters).
            texts.Add(string.Join("\n\n", LongTextCorpus.MobyDick(LongTextCorpus.DefaultCacheDirectory()).Take(12).Select(d => d.Text)));
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        Assert.IsGreaterThan(50_000, texts[^1].Length);
        var reference = RealTokenizerFiles.RunReference(directory, texts);
        var tokenizer = ModelTokenizer.Load(directory);

        for (int i = 0; i < texts.Count; i++)
        {
            string what = $"{model}, text {i} \"{Shorten(texts[i])}\"";
            var plain = tokenizer.EncodeWithSpecialTokens(texts[i], addSpecialTokens: false).ToArray();
            AssertSameIds(reference.IdsPlain[i], plain, what);
            AssertSameIds(reference.Ids[i], tokenizer.EncodeWithSpecialTokens(texts[i]).ToArray(), what + " with special tokens");
            CollectionAssert.AreEqual(reference.TokensPlain[i], plain.Select(tokenizer.IdToToken).ToArray(), what);
            Assert.AreEqual(reference.DecodedPlain[i], tokenizer.Decode(plain), what);
        }
    }

    [TestMethod]
    public void MetaspacePreTokenizerMatchesTheJavaScriptReference()
    {
        // Newer conversions of the same vocabulary (legacy: false) replace the Prepend + Replace normalizer with a
        // Metaspace pre-tokenizer that prepends '▁' only to the text's first segment, not after added tokens.
        string directory;
        try
        {
            directory = RealTokenizerFiles.ModelDirectory("llama2");
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        string variant = Path.Combine(Path.GetTempPath(), "seco-metaspace-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(variant);
        try
        {
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(directory, "tokenizer.json")))!.AsObject();
            json["normalizer"] = null;
            // split false, since the reference does not implement Metaspace splitting (it ignores the flag).
            json["pre_tokenizer"] = new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false, ["add_prefix_space"] = true,
            };
            File.WriteAllText(Path.Combine(variant, "tokenizer.json"), json.ToJsonString());
            File.Copy(Path.Combine(directory, "tokenizer_config.json"), Path.Combine(variant, "tokenizer_config.json"));

            var reference = RealTokenizerFiles.RunReference(variant, s_hardTexts);
            var tokenizer = ModelTokenizer.Load(variant);
            for (int i = 0; i < s_hardTexts.Length; i++)
            {
                AssertSameIds(reference.IdsPlain[i], tokenizer.EncodeWithSpecialTokens(s_hardTexts[i], addSpecialTokens: false).ToArray(),
                    $"Metaspace, text {i} \"{Shorten(s_hardTexts[i])}\"");
            }
            // The difference from the Prepend normalizer, so that the comparison above is not vacuous.
            var prepend = ModelTokenizer.Load(directory);
            CollectionAssert.AreNotEqual(prepend.EncodeWithSpecialTokens("x</s>y", false).ToArray(), tokenizer.EncodeWithSpecialTokens("x</s>y", false).ToArray());
        }
        finally
        {
            Directory.Delete(variant, recursive: true);
        }
    }

    [TestMethod]
    [DataRow("llama2")]
    [DataRow("llama3")]
    [DataRow("qwen3")]
    public void DecodingRoundTripsTextWithoutAddedTokens(string model)
    {
        string directory;
        try
        {
            directory = RealTokenizerFiles.ModelDirectory(model);
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        var tokenizer = ModelTokenizer.Load(directory);
        foreach (string text in s_hardTexts.Where(t => !t.Contains('<', StringComparison.Ordinal)))
        {
            // Qwen3 declares an NFC normalizer, so combining sequences come back composed.
            string expected = model == "qwen3" ? text.Normalize(NormalizationForm.FormC) : text;
            Assert.AreEqual(expected, tokenizer.Decode(tokenizer.EncodeWithSpecialTokens(text, addSpecialTokens: false)), $"{model}: \"{Shorten(text)}\"");
        }
    }

    [TestMethod]
    public void Llama2StyleFileUsesByteFallbackAndAddsBos()
    {
        string directory;
        try
        {
            directory = RealTokenizerFiles.ModelDirectory("llama2");
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        var tokenizer = ModelTokenizer.Load(directory);
        Assert.IsInstanceOfType<SentencePieceBpeTokenizer>(tokenizer.Inner);
        Assert.AreEqual(1, tokenizer.BosId);
        Assert.AreEqual(2, tokenizer.EosId);
        CollectionAssert.AreEqual(new[] { 1 }, tokenizer.SpecialPrefixIds.ToArray());
        Assert.AreEqual(0, tokenizer.SpecialSuffixIds.Count);
        // A tab is not in the vocabulary: it becomes its byte token.
        var ids = tokenizer.EncodeWithSpecialTokens("a\tb", addSpecialTokens: false);
        CollectionAssert.Contains(ids.Select(tokenizer.IdToToken).ToList(), "<0x09>");
    }

    private static void AssertSameIds(int[] expected, int[] actual, string what)
    {
        if (expected.SequenceEqual(actual)) return;
        int at = 0;
        while (at < expected.Length && at < actual.Length && expected[at] == actual[at]) at++;
        Assert.Fail($"{what}: ids differ at {at} of {expected.Length} (reference) / {actual.Length} (ours): " +
            $"reference [{string.Join(", ", expected.Skip(Math.Max(0, at - 3)).Take(8))}], ours [{string.Join(", ", actual.Skip(Math.Max(0, at - 3)).Take(8))}].");
    }

    private static string Shorten(string text) =>
        (text.Length > 40 ? text[..40] + "…" : text).Replace("\n", "\\n", StringComparison.Ordinal).Replace("\t", "\\t", StringComparison.Ordinal);
}
