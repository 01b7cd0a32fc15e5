namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco needle end to end on the built-in tiny model (init-tiny), in process.</summary>
[TestClass]
public sealed class NeedleCommandTests
{
    static string _root = "";
    static string _model = "";
    static string _haystack = "";

    static (int Code, string Out, string Error) Seco(params string[] args)
    {
        var output = new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [ClassInitialize]
    public static void CreateModel(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-needle-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
        _model = Path.Combine(_root, "tiny");
        var r = Seco("init-tiny", "--out", _model, "--layers", "2", "--hidden-size", "32", "--heads", "4", "--kv-heads", "2", "--intermediate-size", "64", "--seed", "1");
        Assert.AreEqual(0, r.Code, r.Error);
        _haystack = Path.Combine(_root, "haystack.txt");
        File.WriteAllText(_haystack, string.Join(' ', Enumerable.Range(0, 100).Select(i => $"Call me Ishmael, said sailor number {i}.")));
    }

    [ClassCleanup]
    public static void Delete()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    [TestMethod]
    public void QuickRunWritesCsvJsonAndHeatmap()
    {
        foreach (var (variant, extra) in new[] { ("passkey", Array.Empty<string>()), ("needle", new[] { "--haystack", _haystack }) })
        {
            string output = Path.Combine(_root, "out-" + variant);
            var r = Seco(["needle", "--model", _model, "--quick", "--variant", variant, "--output", output, .. extra]);
            Assert.AreEqual(0, r.Code, r.Error + r.Out);
            StringAssert.Contains(r.Out, "exact match");
            var csv = File.ReadAllLines(Path.Combine(output, "needle.csv"));
            Assert.AreEqual(1 + 2 * 3, csv.Length); // --quick: lengths 64,128 × depths 0,0.5,1
            Assert.IsTrue(csv.Skip(1).All(l => l.StartsWith(variant + ",", StringComparison.Ordinal)));
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "needle.json")))!.AsObject();
            Assert.AreEqual(2, json["lengths"]!.AsArray().Count);
            Assert.AreEqual(3, json["depths"]!.AsArray().Count);
            var png = File.ReadAllBytes(Path.Combine(output, "needle.png"));
            CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png.Take(4).ToArray());
        }
        var j = Seco("needle", "--model", _model, "--quick", "--variant", "passkey", "--lengths", "64", "--depths", "0.5", "--output", Path.Combine(_root, "json"), "--json");
        Assert.AreEqual(0, j.Code, j.Error);
        var line = JsonNode.Parse(j.Out.Trim())!.AsObject();
        Assert.AreEqual("passkey", (string?)line["variant"]);
        Assert.AreEqual(1, line["cells"]!.AsArray().Count);
    }

    [TestMethod]
    public void BadFlagsExitWithTwoAndNameTheFlag()
    {
        string output = Path.Combine(_root, "bad");
        var r = Seco("needle", "--model", _model, "--variant", "passkey", "--depths", "0,1.5", "--output", output);
        Assert.AreEqual(2, r.Code, r.Error);
        StringAssert.Contains(r.Error, "--depths");
        r = Seco("needle", "--model", _model, "--variant", "passkey", "--lengths", "10", "--output", output);
        Assert.AreEqual(2, r.Code, r.Error);
        StringAssert.Contains(r.Error, "--lengths");
        r = Seco("needle", "--model", _model, "--haystack", _haystack, "--lengths", "4096", "--depths", "0", "--output", output);
        Assert.AreEqual(2, r.Code, r.Error);
        Assert.AreEqual($"seco: error: --haystack '{_haystack}' is too short: its 100 sentences hold 1100 tokens, and a prompt of 4096 tokens needs 4069 " +
            "around the needle and the question. Give a longer file or shorter --lengths.", r.Error.Trim());
        r = Seco("needle", "--model", _model, "--haystack", Path.Combine(_root, "missing.txt"), "--output", output);
        Assert.AreEqual(2, r.Code, r.Error);
        StringAssert.Contains(r.Error, "--haystack");
        r = Seco("needle", "--model", _model, "--variant", "magic");
        Assert.AreEqual(2, r.Code, r.Error);
        StringAssert.Contains(r.Error, "--variant");
    }
}
