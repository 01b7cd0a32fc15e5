namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// What the end-to-end tests of the seco commands share: tiny random models (one with GPT-2's tokenizer, one without)
/// and a small data file, written by init-tiny for each test class, and the in-process runner (Program.Run).
/// </summary>
public abstract class CliTestBase
{
    protected static string _root = "";
    protected static string _model = "";
    protected static string _modelWithoutTokenizer = "";
    protected static string _data = "";

    protected sealed record Result(int ExitCode, string Out, string Error)
    {
        public IReadOnlyList<JsonObject> JsonLines() =>
            Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";
    }

    protected static Result Seco(params string[] args) => Seco(CancellationToken.None, null, args);

    protected static Result Seco(CancellationToken token, TextWriter? stdout, params string[] args)
    {
        var output = stdout ?? new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error, token);
        return new Result(code, output.ToString() ?? "", error.ToString());
    }

    [ClassInitialize(InheritanceBehavior.BeforeEachDerivedClass)]
    public static void CreateModels(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-cli-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
        _model = Path.Combine(_root, "tiny");
        _modelWithoutTokenizer = Path.Combine(_root, "tiny-ids");
        string[] shape = ["--layers", "2", "--hidden-size", "32", "--heads", "4", "--kv-heads", "2", "--intermediate-size", "64", "--seed", "1"];
        var r = Seco(["init-tiny", "--out", _model, .. shape]);
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        r = Seco(["init-tiny", "--out", _modelWithoutTokenizer, "--no-tokenizer", "--model-type", "qwen2", .. shape]);
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        _data = Path.Combine(_root, "data.jsonl");
        File.WriteAllLines(_data, Enumerable.Range(0, 8).Select(i =>
            JsonSerializer.Serialize(new { text = $"Document {i}: " + string.Concat(Enumerable.Repeat("the quick brown fox jumps over the lazy dog. ", 2 + i % 3)) })));
    }

    [ClassCleanup(InheritanceBehavior.BeforeEachDerivedClass)]
    public static void DeleteModels()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    protected static string Output(string name) => Path.Combine(_root, name);

    protected static string[] TrainArgs(string output, params string[] more) =>
        ["train", "--model", _model, "--data", _data, "--output", output, "--chunk-size", "8", "--max-seq-len", "24", "--lr", "1e-3", "--json", .. more];
}
