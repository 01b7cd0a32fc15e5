using System.Diagnostics;
using Microsoft.ML.Seco.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// <c>mpirun -np 2 seco train</c> against one process (docs/SCALING.md): equal adapters, resume, a failing rank. They
/// need Open MPI's mpirun on the PATH (.ci/run installs it where it can) and are inconclusive (skipped) without it.
/// </summary>
[TestClass]
public sealed class MpiTrainTests
{
    static string _root = "";
    static string _model = "";
    static string _data = "";
    static string? _mpirun;

    sealed record Result(int ExitCode, string Out, string Error)
    {
        /// <summary>The JSON lines of stdout (a terminal-mode escape the launcher's pty may put before the first is skipped).</summary>
        public List<JsonObject> JsonLines() => Out.Split('\n').Select(l => l.IndexOf('{', StringComparison.Ordinal) is int i and >= 0 ? l[i..].Trim() : "")
            .Where(l => l.Length > 0).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";
    }

    [ClassInitialize]
    public static void CreateModel(TestContext _)
    {
        _mpirun = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
            .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);
        if (_mpirun is null) return;
        _root = Path.Combine(Path.GetTempPath(), "seco-mpi-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
        _model = Path.Combine(_root, "tiny");
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(["init-tiny", "--out", _model, "--layers", "2", "--hidden-size", "32", "--heads", "4", "--kv-heads", "2", "--intermediate-size", "64", "--seed", "1"],
            TextWriter.Null, error);
        Assert.AreEqual(0, code, error.ToString());
        _data = Path.Combine(_root, "data.jsonl");
        // Documents of different lengths: the ranks' shares have different labelled-token counts.
        File.WriteAllLines(_data, Enumerable.Range(0, 7).Select(i =>
            JsonSerializer.Serialize(new { text = $"Document {i}: " + string.Concat(Enumerable.Repeat("the quick brown fox jumps over the lazy dog. ", 1 + i % 3)) })));
    }

    [ClassCleanup]
    public static void Delete()
    {
        if (_root.Length > 0 && Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    static void RequireMpirun()
    {
        if (_mpirun is null) Assert.Inconclusive("mpirun is not on the PATH: install Open MPI (apt-get install openmpi-bin libopenmpi-dev) to run the data-parallel tests.");
    }

    static string[] TrainArgs(string output, params string[] more) => TrainArgs(_data, output, more);

    static string[] TrainArgs(string data, string output, string[] more) =>
        ["train", "--model", _model, "--data", data, "--output", output, "--chunk-size", "8", "--max-seq-len", "24", "--lr", "1e-3", "--seed", "3",
         "--schedule", "constant", "--json", .. more];

    /// <summary>One process, in this test process.</summary>
    static Result Alone(params string[] args)
    {
        var output = new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error);
        return new Result(code, output.ToString(), error.ToString());
    }

    /// <summary>The command line of seco (this build's) with <paramref name="args"/>.</summary>
    static string[] Seco(string[] args) =>
        [Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet", Path.Combine(AppContext.BaseDirectory, "seco.dll"), .. args];

    /// <summary>mpirun running seco with <paramref name="args"/> on <paramref name="ranks"/> ranks.</summary>
    static Result Mpirun(int ranks, string[] args) => Mpirun((ranks, Seco(args)));

    /// <summary>mpirun with the given application contexts (one per rank group: -np n and the command), as its own process.</summary>
    static Result Mpirun(params (int Ranks, string[] Command)[] contexts)
    {
        var start = new ProcessStartInfo(_mpirun!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // More ranks than cores is fine for these tiny runs; as root (CI containers) Open MPI wants both variables.
        start.ArgumentList.Add("--oversubscribe");
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        // One torch thread per rank: two ranks on a 2-core machine would otherwise oversubscribe it many times over.
        start.Environment["OMP_NUM_THREADS"] = "1";
        for (int c = 0; c < contexts.Length; c++)
        {
            if (c > 0) start.ArgumentList.Add(":");
            foreach (var a in new[] { "-np", contexts[c].Ranks.ToString(CultureInfo.InvariantCulture) }.Concat(contexts[c].Command)) start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(4)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"mpirun did not end within 4 minutes (a rank waiting for another?).\nstdout:\n{output.Result}\nstderr:\n{error.Result}");
        }
        return new Result(process.ExitCode, output.Result, error.Result);
    }

    static Dictionary<string, float[]> Adapter(string output)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(output, "adapter", "adapter_model.safetensors"));
        return file.TensorNames.ToDictionary(n => n, n =>
        {
            using var t = file.ReadTensor(n, ScalarType.Float32);
            return t.data<float>().ToArray();
        });
    }

    static void AssertSameAdapter(string expected, string actual)
    {
        var a = Adapter(expected);
        var b = Adapter(actual);
        CollectionAssert.AreEquivalent(a.Keys.ToList(), b.Keys.ToList());
        foreach (var (name, values) in a)
            for (int i = 0; i < values.Length; i++)
                Assert.AreEqual(values[i], b[name][i], 1e-5, $"{name}[{i}]");
    }

    static JsonObject Summary(Result r)
    {
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var summaries = r.JsonLines().Where(l => (string?)l["event"] == "summary").ToList();
        Assert.HasCount(1, summaries, $"rank 0 alone prints: {r}");
        return summaries[0];
    }

    [TestMethod]
    [DataRow(new string[0], DisplayName = "SeCO")]
    [DataRow(new[] { "--sampled-chunks", "1", "--grad-accum", "2" }, DisplayName = "SpaCO t=1, accumulation 2")]
    public void TwoRanksWithBatchOneEqualOneProcessWithBatchTwo(string[] more)
    {
        RequireMpirun();
        string alone = Path.Combine(_root, "alone-" + more.Length), ranks = Path.Combine(_root, "ranks-" + more.Length);
        var one = Alone(TrainArgs(alone, [.. more, "--batch-size", "2", "--epochs", "2"]));
        var expected = Summary(one);
        var two = Mpirun(2, TrainArgs(ranks, [.. more, "--batch-size", "1", "--epochs", "2"]));
        var actual = Summary(two);

        Assert.AreEqual(2, (int)actual["ranks"]!);
        Assert.AreEqual((int)expected["steps"]!, (int)actual["steps"]!);
        Assert.AreEqual((double)expected["final_loss"]!, (double)actual["final_loss"]!, 1e-5, "rank 0 reports the global batch's loss");
        AssertSameAdapter(alone, ranks);
        Assert.AreEqual(File.ReadAllLines(Path.Combine(alone, "metrics.csv")).Length, File.ReadAllLines(Path.Combine(ranks, "metrics.csv")).Length, "one metrics row per step, written once");
    }

    [TestMethod]
    public void AResumedTwoRankRunEqualsAnUninterruptedProcess()
    {
        RequireMpirun();
        string alone = Path.Combine(_root, "resume-alone"), ranks = Path.Combine(_root, "resume-ranks");
        Summary(Alone(TrainArgs(alone, "--batch-size", "2", "--max-steps", "5", "--sampled-chunks", "1")));
        var first = Summary(Mpirun(2, TrainArgs(ranks, "--batch-size", "1", "--max-steps", "2", "--sampled-chunks", "1")));
        Assert.AreEqual(2, (int)first["steps"]!);
        var resumed = Summary(Mpirun(2, TrainArgs(ranks, "--batch-size", "1", "--max-steps", "5", "--sampled-chunks", "1", "--resume")));
        Assert.IsTrue((bool)resumed["resumed"]!);
        Assert.AreEqual(3, (int)resumed["steps_this_run"]!);
        AssertSameAdapter(alone, ranks);
    }

    [TestMethod]
    public void ARankThatFailsEndsTheJobWithItsError()
    {
        RequireMpirun();
        string output = Path.Combine(_root, "failing");
        var clock = Stopwatch.StartNew();
        var r = Mpirun((1, Seco(TrainArgs(output, "--max-steps", "1000"))),
                       (1, Seco(TrainArgs(Path.Combine(_root, "missing.jsonl"), output, ["--max-steps", "1000"]))));
        Assert.AreNotEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "missing.jsonl' does not exist", r.ToString());
        StringAssert.Contains(r.Error, "rank 1 of 2 failed", r.ToString());
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromMinutes(2), "the job ends, it does not wait for the failed rank");
    }

    [TestMethod]
    public void ARankThatDiesEndsTheJob()
    {
        RequireMpirun();
        if (!File.Exists("/usr/bin/timeout")) Assert.Inconclusive("coreutils' timeout is needed to kill a rank.");
        string output = Path.Combine(_root, "dying");
        var clock = Stopwatch.StartNew();
        // Rank 1 is killed (SIGKILL, no chance to say anything) after 15 s, in the middle of a run far longer than that.
        string[] train = Seco(TrainArgs(output, "--max-steps", "1000000"));
        var r = Mpirun((1, train), (1, ["/usr/bin/timeout", "-s", "KILL", "15", .. train]));
        Assert.AreNotEqual(0, r.ExitCode, r.ToString());
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromMinutes(2), $"the job ends, it does not wait for the dead rank: {r}");
        StringAssert.Contains(r.Error, "rank 1", r.ToString());
    }
}
