using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// seco tokenize through Program.Run on a directory holding only GPT-2's tokenizer files (no config.json, no weights),
/// against Microsoft.ML.Tokenizers' own GPT-2 tiktoken tokenizer as the reference.
/// </summary>
[TestClass]
public sealed class TokenizeCommandTests
{
    private const string Text = "Hello world! Numbers 12345, tabs\tand  spaces, café 東京 🙂\n";

    private string _dir = "";

    [TestInitialize]
    public void CreateTokenizerOnlyDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-tokenize-" + Guid.NewGuid().ToString("N"));
        TokenizerFiles.WriteGpt2(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static (int ExitCode, string Out, string Error) Seco(params string[] args)
    {
        var output = new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static List<JsonObject> JsonLines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    [TestMethod]
    public void JsonGivesIdsTokensAndCountOfTheReferenceTokenizer()
    {
        var r = Seco("tokenize", "--model", _dir, "--text", Text, "--json");
        Assert.AreEqual(0, r.ExitCode, r.Error);
        var line = JsonLines(r.Out).Single();
        int[] expected = TiktokenTokenizer.CreateForModel("gpt2").EncodeToIds(Text).ToArray();
        CollectionAssert.AreEqual(expected, line["ids"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray());
        Assert.AreEqual(expected.Length, line["count"]!.GetValue<int>());
        var tokens = line["tokens"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();
        Assert.AreEqual(expected.Length, tokens.Count);
        // GPT-2 spells a leading space 'Ġ' in its vocabulary: " world" is the token "Ġworld".
        Assert.AreEqual("Hello", tokens[0]);
        Assert.AreEqual("Ġworld", tokens[1]);
    }

    [TestMethod]
    public void SpecialTokensFollowTheTokenizerConfigAndCanBeLeftOut()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{ "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": true }""");
        var with = JsonLines(Seco("tokenize", "--model", _dir, "--text", "Hello world", "--json").Out).Single();
        var without = JsonLines(Seco("tokenize", "--model", _dir, "--text", "Hello world", "--json", "--no-special-tokens").Out).Single();
        CollectionAssert.AreEqual(new[] { 50256, 15496, 995 }, with["ids"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray());
        Assert.AreEqual("<|endoftext|>", with["tokens"]![0]!.GetValue<string>());
        CollectionAssert.AreEqual(new[] { 15496, 995 }, without["ids"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray());
        Assert.AreEqual(2, without["count"]!.GetValue<int>());
    }

    [TestMethod]
    public void DataGivesOneResultPerDocumentInOrder()
    {
        string data = Path.Combine(_dir, "docs.jsonl");
        File.WriteAllLines(data, [JsonSerializer.Serialize(new { text = "Hello world" }), "", JsonSerializer.Serialize(new { prompt = "Hi", response = " there" })]);
        var r = Seco("tokenize", "--model", _dir, "--data", data, "--json");
        Assert.AreEqual(0, r.ExitCode, r.Error);
        var lines = JsonLines(r.Out);
        Assert.AreEqual(2, lines.Count);
        // Documents are encoded as training encodes them: BOS, the text, EOS (GPT-2's <|endoftext|> is both), every
        // token trained; a prompt and its response one after the other, the response and EOS trained.
        CollectionAssert.AreEqual(new[] { 50256, 15496, 995, 50256 }, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(new[] { 1, 1, 1, 1 }, Ints(lines[0]["trained"]));
        Assert.AreEqual("Hello world", lines[0]["rendered"]!.GetValue<string>());
        CollectionAssert.AreEqual(new[] { 50256, 17250, 612, 50256 }, Ints(lines[1]["ids"]));
        CollectionAssert.AreEqual(new[] { 0, 0, 1, 1 }, Ints(lines[1]["trained"]));
        Assert.AreEqual("Hi there", lines[1]["rendered"]!.GetValue<string>());

        // Without special tokens: the text's own ids, "Hi" + " there".
        lines = JsonLines(Seco("tokenize", "--model", _dir, "--data", data, "--json", "--no-special-tokens").Out);
        CollectionAssert.AreEqual(new[] { 15496, 995 }, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(new[] { 17250, 612 }, Ints(lines[1]["ids"]));
        CollectionAssert.AreEqual(new[] { 0, 1 }, Ints(lines[1]["trained"]));

        r = Seco("tokenize", "--model", _dir, "--data", data, "--no-special-tokens");
        Assert.AreEqual(0, r.ExitCode, r.Error);
        StringAssert.Contains(r.Out, "document 1 (line 1): 2 tokens, 2 trained");
        StringAssert.Contains(r.Out, "document 2 (line 3): 2 tokens, 1 trained");
        StringAssert.Contains(r.Out, "ids:    15496 995");
        StringAssert.Contains(r.Out, "tokens: \"Hello\" \"Ġworld\"");
        StringAssert.Contains(r.Out, "trained: 0 1");
        r = Seco("tokenize", "--model", _dir, "--data", data);
        StringAssert.Contains(r.Out, "document 1 (line 1): 4 tokens, 4 trained");
        StringAssert.Contains(r.Out, "ids:    50256 15496 995 50256");
    }

    private static int[] Ints(JsonNode? array) => array!.AsArray().Select(n => n!.GetValue<int>()).ToArray();

    [TestMethod]
    public void BadInputExitsWithTwoAndNamesIt()
    {
        var r = Seco("tokenize", "--model", _dir);
        Assert.AreEqual(2, r.ExitCode, r.Error);
        StringAssert.Contains(r.Error, "--text");
        StringAssert.Contains(r.Error, "--data");
        r = Seco("tokenize", "--model", _dir, "--text", "x", "--data", "y.jsonl");
        Assert.AreEqual(2, r.ExitCode, r.Error);
        r = Seco("tokenize", "--model", Path.Combine(_dir, "missing"), "--text", "x");
        Assert.AreEqual(2, r.ExitCode, r.Error);
        StringAssert.Contains(r.Error, "missing");
        r = Seco("tokenize", "--model", _dir, "--data", Path.Combine(_dir, "absent.jsonl"));
        Assert.AreEqual(2, r.ExitCode, r.Error);
        StringAssert.Contains(r.Error, "absent.jsonl");
        r = Seco("tokenize", "--help");
        Assert.AreEqual(0, r.ExitCode, r.Error);
        foreach (string flag in new[] { "--model", "--text", "--data", "--no-special-tokens", "--json" }) StringAssert.Contains(r.Out, flag);
    }
}
