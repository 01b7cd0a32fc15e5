using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// End-to-end tests of the seco commands through the real entry point (Program.Run, in process) on tiny random models
/// written once per class by init-tiny.
/// </summary>
[TestClass]
public sealed class CliTests
{
    static string _root = "";
    static string _model = "";
    static string _modelWithoutTokenizer = "";
    static string _data = "";

    sealed record Result(int ExitCode, string Out, string Error)
    {
        public IReadOnlyList<JsonObject> JsonLines() =>
            Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";
    }

    static Result Seco(params string[] args) => Seco(CancellationToken.None, null, args);

    static Result Seco(CancellationToken token, TextWriter? stdout, params string[] args)
    {
        var output = stdout ?? new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error, token);
        return new Result(code, output.ToString() ?? "", error.ToString());
    }

    [ClassInitialize]
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

    [ClassCleanup]
    public static void DeleteModels()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    string Output(string name) => Path.Combine(_root, name);

    static string[] TrainArgs(string output, params string[] more) =>
        ["train", "--model", _model, "--data", _data, "--output", output, "--chunk-size", "8", "--max-seq-len", "24", "--lr", "1e-3", "--json", .. more];

    [TestMethod]
    public void InitTinyWritesAHuggingFaceLayoutAndRefusesBadShapes()
    {
        Assert.IsTrue(File.Exists(Path.Combine(_model, "config.json")));
        Assert.IsTrue(File.Exists(Path.Combine(_model, "model.safetensors")));
        Assert.IsTrue(File.Exists(Path.Combine(_model, "tokenizer.json")));
        Assert.IsFalse(File.Exists(Path.Combine(_modelWithoutTokenizer, "tokenizer.json")));
        var r = Seco("init-tiny", "--out", Output("bad"), "--hidden-size", "30", "--heads", "4");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--heads");
        r = Seco("init-tiny", "--out", Output("bad"), "--model-type", "gpt2");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--model-type");
    }

    [TestMethod]
    public void HelpShowsEveryOptionWithItsDefault()
    {
        foreach (var (command, expected) in new[]
        {
            ("init-tiny", new[] { "--layers", "[default: 2]", "--hidden-size", "[default: 64]" }),
            ("train", new[] { "--chunk-size", "Default: 128", "--lr", "Default: 1e-4", "--resume", "--json", "--config" }),
            ("eval", new[] { "--input-ids", "--per-token", "[default: 128]" }),
            ("generate", new[] { "--max-new-tokens", "[default: 64]", "--top-p" }),
            ("gradcheck", new[] { "--strategy", "[default: seco]", "B matrices randomised", "--dtype", "[default: float64]", "--device" }),
            ("bench", new[] { "--shape", "qwen2.5-0.5b", "--quick", "--memory-budget", "--sampler", "[default: fixed]", "--steps", "[default: 3]", "--plots" }),
        })
        {
            var r = Seco(command, "--help");
            Assert.AreEqual(0, r.ExitCode, r.ToString());
            foreach (var text in expected) StringAssert.Contains(r.Out, text, $"{command} --help");
        }
    }

    [TestMethod]
    public void BadArgumentsExitWithTwoAndNameTheFlag()
    {
        var r = Seco("eval", "--model", _model, "--input-ids", "1,2", "--chunk-size", "lots");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--chunk-size");
        r = Seco("frobnicate");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        r = Seco("eval", "--model", Output("missing-model"), "--input-ids", "1,2");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "missing-model");
        Assert.IsFalse(r.Error.Contains("   at ", StringComparison.Ordinal), "no stack trace without --verbose");
        r = Seco("bench", "--strategies", "seco,magic");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "magic");
    }

    [TestMethod]
    public void BenchMeasuresEveryStrategyOnOneRun()
    {
        string csv = Output("bench.csv");
        // --quick's tiny shape with shorter lengths and one timed step: the test checks the outputs, not the timings.
        var r = Seco("bench", "--quick", "--lengths", "64,128", "--chunk-size", "32", "--sampled-chunks", "2", "--steps", "1",
            "--memory-budget", "1TiB", "--json", "--csv", csv);
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var events = r.JsonLines();
        var points = events.Where(o => (string?)o["event"] == "point").ToList();
        Assert.AreEqual(10, points.Count, r.Out);
        foreach (var length in new[] { 64, 128 })
        {
            var atLength = points.Where(p => (int)p["length"]! == length).ToList();
            CollectionAssert.AreEquivalent(new[] { "full", "checkpoint", "seco", "spaco", "inference" }, atLength.Select(p => (string?)p["strategy"]).ToArray());
            Assert.IsTrue(atLength.All(p => (string?)p["status"] == "measured" && (double)p["seconds_per_step"]! > 0 && (int)p["chunks"]! == length / 32));
            // Operations dispatched: counted for every point; a chunk-wise step dispatches more than plain training's.
            long Operations(string strategy) => (long)atLength.Single(p => (string?)p["strategy"] == strategy)["operations"]!;
            Assert.IsTrue(atLength.All(p => (long)p["operations"]! > 0 && (double)p["operations_per_chunk_layer"]! > 0), r.Out);
            Assert.IsTrue(Operations("seco") > Operations("full") && Operations("full") > 0, r.Out);
            // Every training strategy computes the same exact loss at a length; inference reports it too.
            double loss = (double)atLength[0]["loss"]!;
            Assert.IsTrue(atLength.All(p => Math.Abs((double)p["loss"]! - loss) <= 1e-4 * loss), r.Out);
            // Model FLOPs: a training step costs more than the inference pass at the same length; SeCO's Stage 1 adds a
            // forward to full; SpaCO with t = 2 is SeCO at 2 chunks and cheaper beyond.
            double Flops(string s) => (double)atLength.Single(p => (string?)p["strategy"] == s)["model_flops"]!;
            Assert.IsTrue(Flops("full") > Flops("inference") && Flops("seco") > Flops("full"), r.Out);
            Assert.IsTrue(length / 32 > 2 ? Flops("spaco") < Flops("seco") : Flops("spaco") == Flops("seco"), r.Out);
        }

        var summary = events.Single(o => (string?)o["event"] == "summary");
        // The tiny preset: 2 layers, 2 kv heads of 16 dims, float32: keys and values, 4 bytes each.
        Assert.AreEqual(2 * 2 * 2 * 16 * 4, (int)summary["kv_bytes_per_token"]!);
        Assert.IsTrue((double)summary["matmul_peak_flops_per_second"]! > 0);
        var strategies = summary["strategies"]!.AsArray().Select(n => n!.AsObject()).ToList();
        Assert.AreEqual(5, strategies.Count);
        if (OperatingSystem.IsLinux())
        {
            foreach (var row in strategies)
            {
                // The slope is the least-squares fit through the points' peaks; with two lengths, the line through them.
                var peaks = points.Where(p => (string?)p["strategy"] == (string?)row["strategy"]).OrderBy(p => (int)p["length"]!).Select(p => (double)p["peak_bytes"]!).ToArray();
                double slope = (peaks[1] - peaks[0]) / (128 - 64);
                Assert.AreEqual(slope, (double)row["memory_slope_bytes_per_token"]!, 1e-6 * Math.Abs(slope) + 1e-9, r.Out);
                Assert.AreEqual(slope / (2 * 2 * 2 * 16 * 4), (double)row["memory_slope_over_kv_bytes_per_token"]!, 1e-6 * Math.Abs(slope) + 1e-9);
                // A terabyte holds far more than the measured 128 tokens: the figure is extrapolated beyond them.
                Assert.IsTrue((long)row["longest_length_within_budget"]! > 128, r.Out);
                StringAssert.Matches((string)row["budget_basis"]!, new System.Text.RegularExpressions.Regex("^(extrapolated|search-limit)$"));
            }
        }

        Assert.AreEqual(11, File.ReadAllLines(csv).Length);
        var summaryCsv = File.ReadAllLines(Output("bench-summary.csv"));
        Assert.AreEqual(6, summaryCsv.Length);
        StringAssert.StartsWith(summaryCsv[0], "strategy,measured_points,memory_slope_bytes_per_token,kv_bytes_per_token,memory_slope_over_kv_bytes_per_token");
        foreach (var png in new[] { "bench-time.png", "bench-memory.png" })
        {
            var bytes = File.ReadAllBytes(Output(png));
            CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes.Take(4).ToArray(), png);
        }
    }

    [TestMethod]
    public void BenchPhasesSayWhereAChunkwiseStepsTimeGoes()
    {
        var r = Seco("bench", "--quick", "--lengths", "256", "--chunk-size", "32", "--strategies", "full,seco", "--steps", "1", "--phases", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var points = r.JsonLines().Where(o => (string?)o["event"] == "point").ToDictionary(o => (string)o["strategy"]!);
        Assert.IsNull(points["full"]["phases"], "plain training is not phased");
        var phases = points["seco"]["phases"]!.AsObject();
        double P(string name) => (double)phases[name]!;
        foreach (var name in new[] { "stage1", "stage2_forward", "stage2_backward", "attention_forward", "attention_backward", "step" })
            Assert.IsTrue(P(name) > 0, $"{name}: {phases}");
        // The stages are disjoint and inside the step; the attention is part of the stages it ran in.
        Assert.IsTrue(P("stage1") + P("stage2_forward") + P("stage2_backward") <= P("step"), phases.ToJsonString());
        Assert.IsTrue(P("attention_forward") <= P("stage1") + P("stage2_forward") && P("attention_backward") <= P("stage2_backward"), phases.ToJsonString());
    }

    [TestMethod]
    public void BenchMeasuresEachPointsMemoryInAProcessOfItsOwnWhenAsked()
    {
        // What CUDA always does (libtorch's cache cannot be emptied in process), exercised here on the CPU: every point's
        // memory comes from a fresh seco process started by this one, then the timed steps run here.
        var r = Seco("bench", "--quick", "--lengths", "64,128", "--chunk-size", "32", "--sampled-chunks", "2", "--steps", "1", "--isolate-memory", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var points = r.JsonLines().Where(o => (string?)o["event"] == "point").ToList();
        Assert.AreEqual(10, points.Count, r.Out);
        Assert.IsTrue(points.All(p => (string?)p["status"] == "measured" && (double)p["seconds_per_step"]! > 0), r.Out);
        if (OperatingSystem.IsLinux()) Assert.IsTrue(points.All(p => (long)p["peak_bytes"]! > 0), r.Out);

        // The child's side: one JSON line for the one point it is asked about, and a clear error for a malformed one.
        var child = Seco("bench", "--quick", "--memory-point", "seco@128");
        Assert.AreEqual(0, child.ExitCode, child.ToString());
        var reading = child.JsonLines().Single();
        Assert.AreEqual(("memory", "seco", 128, "measured"), ((string?)reading["event"], (string?)reading["strategy"], (int)reading["length"]!, (string?)reading["status"]));
        var bad = Seco("bench", "--quick", "--memory-point", "seco");
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "--memory-point");
    }

    [TestMethod]
    public void BenchPredictsMemoryWithoutRunningAnythingEvenForADeviceThisMachineLacks()
    {
        // The paper's headline: Llama-3-8B with LoRA, 16K tokens, SeCO in chunks of 1,024, within a 24 GB card.
        var r = Seco("bench", "--predict", "--shape", "llama-3-8b", "--dtype", "bfloat16", "--device", "cuda", "--chunk-size", "1024",
            "--lengths", "16384", "--strategies", "full,seco", "--recompute-layers", "--memory-budget", "24GiB", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var lines = r.JsonLines().ToList();
        var seco = lines.Single(o => (string?)o["event"] == "prediction" && (string?)o["strategy"] == "seco");
        long total = (long)seco["total_bytes"]!;
        Assert.AreEqual(total, new[] { "weights_bytes", "adapters_bytes", "training_state_bytes", "cache_bytes", "cache_gradient_bytes", "activations_bytes", "head_bytes" }
            .Sum(k => (long)seco[k]!), "the terms add up to the total");
        Assert.AreEqual(2L * 32 * 8 * 128 * 2 * 16384, (long)seco["cache_bytes"]!, "Llama-3-8B's bfloat16 cache at 16K");
        var budget = lines.Single(o => (string?)o["event"] == "budget")["longest_length_within_budget"]!;
        Assert.IsTrue((long)budget["seco"]! >= 16384, r.Out);
        Assert.IsTrue((long)budget["full"]! < 4096, r.Out);

        var table = Seco("bench", "--predict", "--shape", "qwen2.5-0.5b", "--lengths", "2048", "--chunk-size", "1024", "--strategies", "seco,inference");
        Assert.AreEqual(0, table.ExitCode, table.ToString());
        StringAssert.Contains(table.Out, "nothing was run");
        StringAssert.Contains(table.Out, "cache + gradient");
    }

    [TestMethod]
    public void BenchRefusesBadShapesDevicesAndSizesNamingTheFlag()
    {
        foreach (var (args, flag) in new[]
        {
            (new[] { "--shape", "gpt-5" }, "--shape"),
            (new[] { "--quick", "--memory-budget", "lots" }, "--memory-budget"),
            (new[] { "--quick", "--sampler", "stratified" }, "--sampler"),
            (new[] { "--quick", "--hidden-size", "30", "--heads", "4" }, "--heads"),
            (new[] { "--quick", "--device", "tpu" }, "--device"),
        })
        {
            var r = Seco(["bench", .. args]);
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, flag);
        }
    }

    [TestMethod]
    public void TrainWritesEveryArtifactAndResumeContinuesFromTheCheckpoint()
    {
        string output = Output("train");
        var r = Seco(TrainArgs(output, "--max-steps", "3"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var lines = r.JsonLines();
        Assert.AreEqual(4, lines.Count, r.Out);
        for (int i = 0; i < 3; i++)
        {
            Assert.AreEqual("progress", (string?)lines[i]["event"]);
            Assert.AreEqual(i + 1, (int)lines[i]["step"]!);
            Assert.IsTrue(double.IsFinite((double)lines[i]["loss"]!));
            Assert.IsTrue((double)lines[i]["tokens_per_second"]! > 0);
        }
        var summary = lines[^1];
        Assert.AreEqual("summary", (string?)summary["event"]);
        Assert.AreEqual(3, (int)summary["steps"]!);
        Assert.IsFalse((bool)summary["cancelled"]!);
        // Device memory is a CUDA figure: present in the schema, null on the CPU.
        Assert.IsTrue(summary.ContainsKey("device_memory_bytes") && summary["device_memory_bytes"] is null, r.Out);
        foreach (var file in new[] { "seco-config.json", "metrics.csv", "loss.png", "model.seco", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/trainer-state.bin" })
            Assert.IsTrue(File.Exists(Path.Combine(output, file)), $"{file} is missing");
        var png = File.ReadAllBytes(Path.Combine(output, "loss.png"));
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png.Take(4).ToArray());
        var csv = File.ReadAllLines(Path.Combine(output, "metrics.csv"));
        Assert.AreEqual("step,loss,learning_rate,tokens_per_second,seconds,peak_memory_bytes,validation_loss", csv[0]);
        Assert.AreEqual(4, csv.Length);

        // --resume reads OUTPUT/seco-config.json and the checkpoint: steps 4 and 5 only.
        r = Seco("train", "--output", output, "--resume", "--max-steps", "5", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        lines = r.JsonLines();
        CollectionAssert.AreEqual(new[] { 4, 5 }, lines.Where(l => (string?)l["event"] == "progress").Select(l => (int)l["step"]!).ToArray());
        Assert.AreEqual(5, (int)lines[^1]["steps"]!);
        Assert.IsTrue((bool)lines[^1]["resumed"]!);
        csv = File.ReadAllLines(Path.Combine(output, "metrics.csv"));
        CollectionAssert.AreEqual(new[] { "1", "2", "3", "4", "5" }, csv.Skip(1).Select(l => l.Split(',')[0]).ToArray());

        // The trained adapter and the saved pipeline load back.
        r = Seco("eval", "--model", _model, "--adapter", Path.Combine(output, "adapter"), "--data", _data, "--chunk-size", "8", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.IsTrue((long)r.JsonLines()[0]["tokens"]! > 0);
        using (var loaded = (ChunkwiseLoraTransformer)SecoModel.Load(new MLContext(), Path.Combine(output, "model.seco")))
            Assert.IsTrue(double.IsFinite(loaded.Perplexity("the quick brown fox")));
        r = Seco("generate", "--model", _model, "--adapter", Path.Combine(output, "adapter"), "--prompt", "The quick brown", "--max-new-tokens", "5", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var generated = r.JsonLines()[0];
        Assert.AreEqual(5, (int)generated["generated_tokens"]!);
        Assert.IsFalse(string.IsNullOrEmpty((string?)generated["completion"]));
    }

    [TestMethod]
    public void TrainAppliesRopeScalingAndTheAdapterCarriesIt()
    {
        string output = Output("rope-yarn");
        var r = Seco(TrainArgs(output, "--max-steps", "1", "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-original-length", "16"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "seco: note: --rope-scaling yarn: rope_scaling yarn");
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!.AsObject();
        Assert.AreEqual(("yarn", 4.0, 16), ((string?)effective["ropeScaling"], (double)effective["ropeFactor"]!, (int)effective["ropeOriginalMaxPositionEmbeddings"]!));
        Assert.IsNull(effective["ropeTheta"]);
        string adapter = Path.Combine(output, "adapter"), record = Path.Combine(adapter, "seco_rope.json");
        var scaling = JsonNode.Parse(File.ReadAllText(record))!["rope_scaling"]!;
        Assert.AreEqual(("yarn", 4.0, 16.0), ((string?)scaling["rope_type"], (double)scaling["factor"]!, (double)scaling["original_max_position_embeddings"]!));

        // eval builds the model with the adapter's scaling: without the record the same weights score differently.
        double Nll() => (double)Seco("eval", "--model", _model, "--adapter", adapter, "--data", _data, "--chunk-size", "8", "--json").JsonLines()[0]["nll"]!;
        double withYarn = Nll();
        using (var loaded = (ChunkwiseLoraTransformer)SecoModel.Load(new MLContext(), Path.Combine(output, "model.seco")))
            Assert.IsTrue(double.IsFinite(loaded.Perplexity("the quick brown fox")), "model.seco loads with its scaling");
        File.Delete(record);
        Assert.AreNotEqual(withYarn, Nll(), "the record decides the rotary scaling of the loaded model");
    }

    [TestMethod]
    public void BadRopeFlagsAndFieldsAreNamed()
    {
        void Refused(string[] flags, params string[] says)
        {
            // TrainArgs' --max-seq-len 24 unless the flags give another.
            var r = flags.Contains("--max-seq-len")
                ? Seco(["train", "--model", _model, "--data", _data, "--output", Output("rope-bad"), "--chunk-size", "8", "--max-steps", "1", .. flags])
                : Seco(TrainArgs(Output("rope-bad"), ["--max-steps", "1", .. flags]));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            foreach (var text in says) StringAssert.Contains(r.Error, text, r.ToString());
            Assert.IsFalse(Directory.Exists(Output("rope-bad")), "nothing is written");
        }
        Refused(["--rope-factor", "4"], "--rope-factor is set but --rope-scaling is model");
        Refused(["--rope-scaling", "yarn"], "--rope-scaling yarn needs --rope-factor");
        Refused(["--rope-scaling", "yarn", "--rope-factor", "0.5"], "--rope-factor must be at least 1; got 0.5.");
        Refused(["--rope-scaling", "linear", "--rope-factor", "2", "--rope-original-length", "64"], "--rope-original-length applies to --rope-scaling yarn and llama3 only");
        Refused(["--rope-scaling", "longrope"], "--rope-scaling", "'longrope' not recognized", "'model', 'none', 'linear', 'dynamic', 'yarn', 'llama3'");
        Refused(["--rope-theta", "-1"], "--rope-theta must be positive");
        Refused(["--rope-scaling", "dynamic", "--rope-factor", "2", "--max-seq-len", "40000"], "--max-seq-len (40000) must be at most the base model's max_position_embeddings (32768) with --rope-scaling dynamic");
        string config = Output("rope-bad.json");
        File.WriteAllText(config, """{"ropeScaling": "yarn", "ropeFactor": 0}""");
        Refused(["--config", config], "field 'ropeFactor'", "must be at least 1");
        File.Delete(config);
    }

    [TestMethod]
    public void ConfigFileIsReadAndFlagsOverrideIt()
    {
        string output = Output("config-run");
        string config = Path.Combine(_root, "run.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new
        {
            modelPath = _model, data = _data, output, chunkSize = 4, learningRate = 0.005, maxSequenceLength = 16, maxSteps = 1,
            sampledChunks = 2, sampler = "fixed", maxCompensation = 2.0, loraRank = 2,
        }));
        var r = Seco("train", "--config", config, "--chunk-size", "8", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!;
        Assert.AreEqual(8, (int)effective["chunkSize"]!, "the flag wins over the file");
        Assert.AreEqual(0.005, (double)effective["learningRate"]!);
        Assert.AreEqual(2, (int)effective["loraRank"]!);
        Assert.AreEqual("fixed", (string?)effective["sampler"]);
        Assert.AreEqual(1, (int)effective["maxSteps"]!);
        Assert.AreEqual(16, (int)effective["maxSequenceLength"]!);
        Assert.AreEqual(16.0, (double)effective["loraAlpha"]!, "fields not given keep the library's defaults");
    }

    [TestMethod]
    public void PaperSettingsAreFlagsAndOldConfigsStillLoad()
    {
        // A configuration written before compensation had modes: "compensate": false means none.
        string output = Output("paper-run");
        string config = Path.Combine(_root, "old.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new { modelPath = _model, data = _data, output, sampledChunks = 2, compensate = false, maxSteps = 1 }));
        var r = Seco("train", "--config", config, "--chunk-size", "8", "--max-seq-len", "24", "--beta1", "0.85", "--beta2", "0.95", "--epsilon", "1e-6",
            "--weight-decay", "0.05", "--warmup-ratio", "0.01", "--max-grad-norm", "none", "--lora-targets", "q_proj,v_proj", "--grad-accum", "2", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!.AsObject();
        Assert.AreEqual("none", (string?)effective["compensation"]);
        Assert.IsFalse(effective.ContainsKey("compensate"), "the earlier name is read, not written");
        Assert.AreEqual(0.85, (double)effective["beta1"]!);
        Assert.AreEqual(0.95, (double)effective["beta2"]!);
        Assert.AreEqual(1e-6, (double)effective["epsilon"]!);
        Assert.AreEqual(0.05, (double)effective["weightDecay"]!);
        Assert.AreEqual(0.01, (double)effective["warmupRatio"]!);
        Assert.IsTrue(effective.ContainsKey("maxGradNorm") && effective["maxGradNorm"] is null, "none = no clipping = null");
        CollectionAssert.AreEqual(new[] { "q_proj", "v_proj" }, effective["loraTargetModules"]!.AsArray().Select(v => (string?)v).ToArray());
        Assert.AreEqual(2, (int)effective["gradientAccumulationSteps"]!);

        // The written configuration reads back, and a flag replaces the earlier name.
        r = Seco("train", "--config", Path.Combine(output, "seco-config.json"), "--output", Output("paper-run-2"), "--compensation", "cache", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual("cache", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(Output("paper-run-2"), "seco-config.json")))!["compensation"]);

        File.WriteAllText(config, JsonSerializer.Serialize(new { modelPath = _model, data = _data, output, compensate = true, compensation = "loss" }));
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "compensate");

        foreach (var (flags, named) in new[]
        {
            (new[] { "--sampled-chunks", "2", "--sampler", "stratified" }, "--compensation"),
            (new[] { "--max-grad-norm", "0" }, "--max-grad-norm must be positive"),
            (new[] { "--max-grad-norm", "big" }, "--max-grad-norm 'big' is not a number or none"),
            (new[] { "--beta2", "1" }, "--beta2 must be in [0, 1)"),
            (new[] { "--warmup-ratio", "0.1", "--warmup-steps", "3" }, "--warmup-ratio cannot be combined with --warmup-steps"),
        })
        {
            r = Seco(TrainArgs(Output("paper-bad"), flags));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, named, string.Join(" ", flags));
        }
    }

    [TestMethod]
    public void ARunThatWillNotFitItsMemoryBudgetStopsBeforeTheFirstStepNamingTheFlags()
    {
        string output = Output("over-budget");
        var r = Seco(TrainArgs(output, "--memory-budget", "1KiB"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "seco: error: The run does not fit on cpu: the longest batch, a sequence of 24 tokens in chunks of 8, needs about");
        StringAssert.Contains(r.Error, "No single change of --recompute-layers, --chunk-size, --batch-size, --max-seq-len is predicted to fit.");
        Assert.IsFalse(Directory.Exists(Path.Combine(output, "adapter")), "no adapter is written");

        r = Seco(TrainArgs(Output("within-budget"), "--memory-budget", "64GiB", "--max-steps", "1", "--recompute-layers"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        r = Seco(TrainArgs(Output("bad-budget"), "--memory-budget", "lots"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--memory-budget");
    }

    [TestMethod]
    public void BadConfigFieldsAreNamedWithExitCodeTwo()
    {
        string config = Path.Combine(_root, "bad.json");
        File.WriteAllText(config, "{\n  \"modelPath\": \"x\",\n  \"chunkSzie\": 64\n}\n");
        var r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "chunkSzie");
        StringAssert.Contains(r.Error, "line 3");

        File.WriteAllText(config, "{ \"chunkSize\": \"big\" }");
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "chunkSize");
        StringAssert.Contains(r.Error, "integer");

        File.WriteAllText(config, "{\n  \"modelPath\": " + JsonSerializer.Serialize(_model) + ",\n  \"data\": " + JsonSerializer.Serialize(_data) +
            ",\n  \"output\": " + JsonSerializer.Serialize(Output("bad-run")) + ",\n  \"chunkSize\": 0\n}");
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        // The range error names the file's field and where it is, not the options' property.
        StringAssert.Contains(r.Error, $"{config}: field 'chunkSize' (line 5, column 3) must be at least 1; got 0.");
        Assert.IsFalse(Directory.Exists(Output("bad-run")), "nothing is created before the settings are valid");

        r = Seco("train", "--model", _model, "--data", Path.Combine(_root, "nope.jsonl"), "--output", Output("bad-run"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "nope.jsonl");
    }

    [TestMethod]
    public void CancellationStopsAtAStepBoundaryAndSavesWhatWasLearnt()
    {
        string output = Output("cancelled");
        using var cancellation = new CancellationTokenSource();
        using var stdout = new CancelOnProgress(cancellation, Path.Combine(output, "metrics.csv"));
        var r = Seco(cancellation.Token, stdout, TrainArgs(output, "--max-steps", "50"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "cancelled");
        var summary = r.JsonLines()[^1];
        Assert.IsTrue((bool)summary["cancelled"]!);
        Assert.IsTrue((int)summary["steps"]! < 50);
        Assert.IsTrue(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")));
        Assert.IsTrue(File.Exists(Path.Combine(output, "checkpoints", "trainer-state.bin")));
        // metrics.csv held step 1 while the run was still going (what a second Ctrl+C, which ends the process, leaves),
        // and holds every completed step now.
        CollectionAssert.AreEqual(new[] { "1" }, stdout.MetricsAtFirstProgress!.Skip(1).Select(l => l.Split(',')[0]).ToArray());
        var steps = File.ReadAllLines(Path.Combine(output, "metrics.csv")).Skip(1).Select(l => int.Parse(l.Split(',')[0], CultureInfo.InvariantCulture)).ToArray();
        CollectionAssert.AreEqual(Enumerable.Range(1, (int)summary["steps"]!).ToArray(), steps);
        Assert.IsFalse(Directory.EnumerateFileSystemEntries(output, "*.tmp").Any(), "no temporary is left behind");
    }

    /// <summary>
    /// Cancels the token as soon as the first progress event is written (what Ctrl+C does in the process), and reads
    /// metrics.csv at that moment.
    /// </summary>
    sealed class CancelOnProgress(CancellationTokenSource cancellation, string? metrics = null) : StringWriter(CultureInfo.InvariantCulture)
    {
        public string[]? MetricsAtFirstProgress { get; private set; }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.Contains("\"event\":\"progress\"", StringComparison.Ordinal) == true)
            {
                if (metrics is not null && MetricsAtFirstProgress is null) MetricsAtFirstProgress = File.ReadAllLines(metrics);
                cancellation.Cancel();
            }
        }
    }

    [TestMethod]
    public void EvalPerTokenValuesAverageToTheNll()
    {
        var totals = Seco("eval", "--model", _model, "--data", _data, "--chunk-size", "8", "--json");
        Assert.AreEqual(0, totals.ExitCode, totals.ToString());
        var perToken = Seco("eval", "--model", _model, "--data", _data, "--chunk-size", "5", "--per-token", "--json");
        Assert.AreEqual(0, perToken.ExitCode, perToken.ToString());
        var a = totals.JsonLines()[0];
        var b = perToken.JsonLines()[0];
        Assert.IsNull(a["per_token_nll"], "the list only with --per-token");
        var values = b["per_token_nll"]!.AsArray().Select(v => (double)v!).ToArray();
        Assert.AreEqual((long)b["tokens"]!, values.Length);
        Assert.AreEqual((long)a["tokens"]!, (long)b["tokens"]!);
        Assert.AreEqual((double)b["nll"]!, values.Average(), 1e-6);
        Assert.AreEqual((double)a["nll"]!, (double)b["nll"]!, 1e-5, "chunked totals (Evaluation) and per-token values agree");
        Assert.AreEqual(Math.Exp((double)a["nll"]!), (double)a["perplexity"]!, 1e-6 * (double)a["perplexity"]!);

        var table = Seco("eval", "--model", _model, "--data", _data);
        Assert.AreEqual(0, table.ExitCode, table.ToString());
        StringAssert.Contains(table.Out, "perplexity");
    }

    [TestMethod]
    public void EvalInputIdsNeedsNoTokenizer()
    {
        var r = Seco("eval", "--model", _modelWithoutTokenizer, "--input-ids", "5,17,3,99,250,7,7,1", "--chunk-size", "3", "--per-token", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var result = r.JsonLines()[0];
        Assert.AreEqual(7, (long)result["tokens"]!);
        var values = result["per_token_nll"]!.AsArray().Select(v => (double)v!).ToArray();
        Assert.AreEqual(7, values.Length);
        Assert.AreEqual((double)result["nll"]!, values.Average(), 1e-6);

        r = Seco("eval", "--model", _modelWithoutTokenizer, "--input-ids", "1,600");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--input-ids");
        r = Seco("eval", "--model", _modelWithoutTokenizer, "--data", _data);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "tokenizer");
    }

    [TestMethod]
    public void GradcheckPassesItsThresholdsAndRefusesTooManyChunks()
    {
        foreach (var strategy in new[] { new[] { "seco" }, new[] { "checkpoint" }, new[] { "spaco-bernoulli", "--sampled-chunks", "2" } })
        {
            var r = Seco(["gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", .. strategy, "--json"]);
            Assert.AreEqual(0, r.ExitCode, r.ToString());
            var result = r.JsonLines()[0];
            Assert.AreEqual(strategy[0], (string?)result["strategy"]);
            Assert.AreEqual("cpu", (string?)result["device"]);
            Assert.IsTrue((int)result["parameters"]! > 0);
            Assert.IsTrue((double)result["max_rel_error"]! <= 1e-8, r.Out);
            Assert.IsTrue((double)result["max_abs_error"]! >= 0);
            Assert.IsTrue(result["groups"]!.AsArray().Count > 0);
        }
        // Without --compensation every mode is reported; only Bernoulli with both is unbiased.
        var modes = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-bernoulli", "--sampled-chunks", "2", "--json");
        Assert.AreEqual(0, modes.ExitCode, modes.ToString());
        var byMode = modes.JsonLines()[0]["modes"]!.AsArray().ToDictionary(m => (string)m!["compensation"]!, m => (double)m!["max_rel_error"]!);
        CollectionAssert.AreEquivalent(new[] { "both", "loss", "cache", "none" }, byMode.Keys.ToArray());
        Assert.IsTrue(byMode["both"] <= 1e-8, modes.Out);
        foreach (var mode in new[] { "loss", "cache", "none" }) Assert.IsTrue(byMode[mode] > 1e-3, $"{mode} is biased: {modes.Out}");
        var cacheOnly = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-bernoulli", "--sampled-chunks", "2", "--compensation", "cache");
        Assert.AreEqual(0, cacheOnly.ExitCode, cacheOnly.ToString());
        StringAssert.Contains(cacheOnly.Out, "not judged");
        var capped = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-bernoulli", "--sampled-chunks", "2",
            "--compensation", "both", "--max-compensation", "1.2", "--json");
        Assert.AreEqual(0, capped.ExitCode, capped.ToString());
        Assert.IsFalse((bool)capped.JsonLines()[0]["judged"]!, "a cap below k/t biases even the Bernoulli sampler");
        Assert.IsTrue((double)capped.JsonLines()[0]["max_rel_error"]! > 1e-3);

        var fixedBudget = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-fixed", "--sampled-chunks", "2", "--json");
        Assert.AreEqual(0, fixedBudget.ExitCode, fixedBudget.ToString());
        Assert.IsTrue((double)fixedBudget.JsonLines()[0]["max_rel_error"]! > 1e-6, "the paper's sampler is biased for chains through the cache");

        var tooMany = Seco("gradcheck", "--model", _model, "--seq-len", "200", "--chunk-size", "4", "--strategy", "spaco-bernoulli", "--sampled-chunks", "2");
        Assert.AreEqual(2, tooMany.ExitCode, tooMany.ToString());
        StringAssert.Contains(tooMany.Error, "limit");
    }

    [TestMethod]
    public void GradcheckAndBenchNameTheSamplersFromTheRegistry()
    {
        // Every registered sampler is a gradcheck strategy; the stratified one runs with the one mode it accepts.
        var help = Seco("gradcheck", "--help");
        foreach (var name in Chunkwise.Samplers.ChunkSamplers.Names) StringAssert.Contains(help.Out, "spaco-" + name);
        var stratified = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-stratified", "--sampled-chunks", "2", "--json");
        Assert.AreEqual(0, stratified.ExitCode, stratified.ToString());
        var result = stratified.JsonLines()[0];
        Assert.AreEqual("spaco-stratified", (string?)result["strategy"]);
        CollectionAssert.AreEqual(new[] { "none" }, result["modes"]!.AsArray().Select(m => (string)m!["compensation"]!).ToArray());
        Assert.IsFalse((bool)result["judged"]!, "without compensation the stratified sampler is biased");
        Assert.AreEqual(3, (int)result["runs"]!, "every chunk is labelled: the C(3, 2) subsets");
        var refused = Seco("gradcheck", "--model", _model, "--seq-len", "20", "--chunk-size", "7", "--strategy", "spaco-stratified", "--sampled-chunks", "2", "--compensation", "both");
        Assert.AreEqual(2, refused.ExitCode, refused.ToString());
        StringAssert.Contains(refused.Error, "--compensation");

        // The bench takes the registry's spellings and lists the samplers it runs.
        StringAssert.Contains(Seco("bench", "--help").Out, "bernoulli (");
        var unknown = Seco("bench", "--quick", "--sampler", "uniform");
        Assert.AreEqual(2, unknown.ExitCode, unknown.ToString());
        StringAssert.Contains(unknown.Error, "'uniform'");
        StringAssert.Contains(unknown.Error, "bernoulli or fixed");
        var predicted = Seco("bench", "--predict", "--shape", "tiny", "--lengths", "256", "--chunk-size", "64", "--sampler", "fixed-budget", "--strategies", "spaco", "--json");
        Assert.AreEqual(0, predicted.ExitCode, predicted.ToString());
    }

    [TestMethod]
    public void GenerateContinuesAPrompt()
    {
        var r = Seco("generate", "--model", _model, "--prompt", "Once upon a time", "--max-new-tokens", "6", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.IsFalse(string.IsNullOrWhiteSpace(r.Out));
        r = Seco("generate", "--model", _model, "--prompt", "x", "--top-p", "0");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--top-p");
    }

    [TestMethod]
    public void EveryOptionOfTheStageHasAFlagAndAConfigurationField()
    {
        string help = Seco("train", "--help").Out;
        var members = typeof(ChunkwiseLoraTrainer.Options).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name)
            .Concat(typeof(ChunkwiseLoraTrainer.Options).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name))
            .ToList();
        Assert.IsTrue(members.Count > 30, "the options were enumerated");
        foreach (var name in members)
        {
            if (TrainSetting.SetElsewhere.ContainsKey(name)) continue;
            var setting = TrainSetting.ByName(name);
            Assert.IsNotNull(setting, $"ChunkwiseLoraTrainer.Options.{name} has no flag and no configuration field (give it a supported type or list it in TrainSetting.SetElsewhere).");
            Assert.IsTrue(TrainSetting.HasWrittenHelp(setting), $"{setting.Flag} ({name}) needs a help line in TrainSetting's HelpTexts.");
            object? value = NonDefault(setting);
            string text = TrainSetting.Display(value);

            // The flag sets the option, and the error would name the flag.
            var fromFlag = Configure(["train", setting.Flag, text]);
            Assert.AreEqual(text, TrainSetting.Display(fromFlag[setting]), setting.Flag);
            Assert.AreEqual(setting.Flag, fromFlag.Where(setting));

            // The configuration file's field sets it too, and the effective configuration writes it back under that name.
            string file = Path.Combine(_root, $"field-{setting.ConfigName}.json");
            File.WriteAllText(file, new JsonObject { [setting.ConfigName] = setting.ToJson(value) }.ToJsonString());
            var fromFile = TrainConfig.Load(file);
            Assert.AreEqual(text, TrainSetting.Display(fromFile[setting]), setting.ConfigName);
            StringAssert.StartsWith(fromFile.Where(setting), $"{file}: field '{setting.ConfigName}' (line 1, column 2)");
            var written = JsonNode.Parse(fromFile.ToJson())!.AsObject();
            Assert.IsTrue(written.ContainsKey(setting.ConfigName), setting.ConfigName);
            Assert.AreEqual(text, TrainSetting.Display(TrainConfig.Load(WriteTemp(written.ToJsonString()))[setting]), $"{setting.ConfigName} round trip");

            // --help shows the flag with the options' own default.
            object? defaultValue = setting.Field.GetValue(new ChunkwiseLoraTrainer.Options());
            StringAssert.Contains(help, setting.Flag);
            StringAssert.Contains(help, $"Default: {TrainSetting.Display(defaultValue)}.", setting.Flag);
        }
    }

    [TestMethod]
    public void ReadmeListsEveryTrainFlagAndConfigurationField()
    {
        string readme = File.ReadAllText(Microsoft.ML.Seco.Tests.Packaging.RepositoryFiles.PathOf("README.md"));
        int start = readme.IndexOf("**train**", StringComparison.Ordinal), end = readme.IndexOf("**eval**", StringComparison.Ordinal);
        Assert.IsTrue(start >= 0 && end > start, "README has the train paragraph");
        string section = readme[start..end];
        foreach (var setting in TrainSetting.All)
        {
            StringAssert.Contains(section, $"`{setting.Flag}", $"README's train flags miss {setting.Flag}");
            StringAssert.Contains(section, $"`{setting.ConfigName}`", $"README's configuration fields miss {setting.ConfigName}");
        }
        foreach (var flag in new[] { "--config", "--data", "--validation-data", "--output", "--resume", "--overwrite", "--json" })
            StringAssert.Contains(section, $"`{flag}", $"README's train flags miss {flag}");
    }

    static string WriteTemp(string text)
    {
        string path = Path.Combine(_root, Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>The configuration a train command line gives, without training.</summary>
    static TrainConfig Configure(string[] args)
    {
        TrainConfig? captured = null;
        var context = new CliContext(TextWriter.Null, TextWriter.Null, CancellationToken.None);
        var root = new System.CommandLine.RootCommand { Cli.Commands.TrainCommand.Create(context, (c, _, _, _) => { captured = c; return 0; }) };
        var parse = root.Parse(args);
        Assert.AreEqual(0, parse.Errors.Count, string.Join("; ", parse.Errors.Select(e => e.Message)));
        Assert.AreEqual(0, parse.Invoke());
        return captured!;
    }

    /// <summary>A value other than the options' default, of the setting's type.</summary>
    static object? NonDefault(TrainSetting setting)
    {
        object? d = setting.Default;
        var type = setting.ValueType;
        if (type == typeof(int)) return d is int i ? i + 3 : 3;
        if (type == typeof(double)) return d is double x ? x + 0.25 : 0.25;
        if (type == typeof(bool)) return !(bool)d!;
        if (type == typeof(string)) return "changed";
        if (type == typeof(string[])) return new[] { "v_proj", "up_proj" };
        if (type.IsEnum) return Enum.GetValues(type).Cast<object>().First(v => !v.Equals(d));
        throw new AssertFailedException($"{setting.Name}: no test value for {type}");
    }

    [TestMethod]
    public void ErrorsNameTheFlagOrFieldAndNothingIsCreatedBeforeTheInputIsValid()
    {
        string output = Output("never-created");
        foreach (var (flags, expected) in new[]
        {
            (new[] { "--chunk-size", "0" }, "--chunk-size must be at least 1; got 0."),
            (new[] { "--lora-rank", "0" }, "--lora-rank must be at least 1; got 0."),
            (new[] { "--final-lr-ratio", "2" }, "--final-lr-ratio must be in [0, 1]"),
            (new[] { "--batch-size", "0" }, "--batch-size must be at least 1"),
            (new[] { "--lora-targets", "nope_proj" }, "--lora-targets"),
            (new[] { "--sampled-chunks", "many" }, "--sampled-chunks 'many' is not an integer or none."),
            (new[] { "--dtype", "int4" }, "--dtype 'int4'"),
            (new[] { "--resume", "--overwrite" }, "--resume continues the run in --output and --overwrite replaces it"),
        })
        {
            var r = Seco(["train", "--model", _model, "--data", _data, "--output", output, .. flags]);
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, expected, string.Join(" ", flags));
            Assert.IsFalse(System.Text.RegularExpressions.Regex.IsMatch(r.Error, @"\b(ChunkSize|LoraRank|FinalLearningRateRatio|MinLearningRateRatio|BatchSize|TargetModules|DType)\b"), r.Error);
            Assert.IsFalse(Directory.Exists(output), $"{string.Join(" ", flags)} created the output folder");
        }

        // Bad data is found before the output folder exists, too.
        string badData = Path.Combine(_root, "bad-data.jsonl");
        File.WriteAllText(badData, "{\"text\": \"fine\"}\n{\"text\": \n");
        var bad = Seco("train", "--model", _model, "--data", badData, "--output", output);
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "bad-data.jsonl");
        Assert.IsFalse(Directory.Exists(output));

        bad = Seco("train", "--model", Output("no-such-model"), "--data", _data, "--output", output);
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "--model '" + Output("no-such-model") + "': the directory does not exist.");
        Assert.IsFalse(Directory.Exists(output));

        bad = Seco("generate", "--model", Output("no-such-model"), "--prompt", "hello");
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "--model '" + Output("no-such-model") + "': the directory does not exist.");
        bad = Seco("tokenize", "--model", Output("no-such-model"), "--text", "hello");
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "the directory does not exist");
    }

    [TestMethod]
    public void AnOutputFolderWithARunNeedsResumeOrOverwriteAndIsLockedWhileARunWritesIt()
    {
        string output = Output("reused");
        // t at or above the chunk count (24 / 8 = 3 chunks) is exact SeCO, and the command says so.
        var r = Seco(TrainArgs(output, "--max-steps", "2", "--sampled-chunks", "3"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--sampled-chunks 3 is at or above the chunk count (3 chunks");
        StringAssert.Contains(r.Error, "exact SeCO");
        string csv = Path.Combine(output, "metrics.csv");
        var before = File.ReadAllText(csv);

        r = Seco(TrainArgs(output, "--max-steps", "1"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--resume");
        StringAssert.Contains(r.Error, "--overwrite");
        Assert.AreEqual(before, File.ReadAllText(csv), "the earlier run is untouched");

        // While another run holds the folder, a second one is refused (the lock is the OS's: a second open fails).
        using (new FileStream(Path.Combine(output, OutputFolder.LockName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            r = Seco(TrainArgs(output, "--max-steps", "1", "--overwrite"));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, "is in use by another seco train");
            Assert.AreEqual(before, File.ReadAllText(csv));
        }

        // --resume with nothing left to do says so and changes nothing.
        r = Seco("train", "--output", output, "--resume", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "nothing left to do");
        Assert.IsTrue((bool)r.JsonLines()[^1]["nothing_to_do"]!);
        Assert.AreEqual(before, File.ReadAllText(csv));

        r = Seco(TrainArgs(output, "--max-steps", "1", "--overwrite"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual(2, File.ReadAllLines(csv).Length, "the replaced run's rows are gone");
        Assert.IsFalse(File.ReadAllText(Path.Combine(output, "seco-config.json")).Contains("\"sampledChunks\": 3", StringComparison.Ordinal));
    }

    [TestMethod]
    public void ARunWithoutStepsWritesNoEmptyPlot()
    {
        Assert.IsNull(Metrics.Plot([]), "no rows, no plot");
        Assert.IsNull(Metrics.Plot([new MetricsRow(1, double.NaN, 1e-4, 1, 1, 1, null)]), "no finite loss, no plot");
        var png = Metrics.Plot([new MetricsRow(1, 2.5, 1e-4, 1, 1, 1, null), new MetricsRow(2, 2.0, 1e-4, 1, 2, 1, 2.2)]);
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png!.Take(4).ToArray());

        // Cancelled before the first step: the stage is saved, but there is no metrics row and so no loss.png.
        string output = Output("no-steps");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var r = Seco(cancelled.Token, null, TrainArgs(output, "--max-steps", "3"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        var summary = r.JsonLines()[^1];
        Assert.AreEqual(0, (int)summary["steps"]!);
        Assert.IsFalse(summary["artifacts"]!.AsObject().ContainsKey("loss_plot"));
        Assert.IsFalse(File.Exists(Path.Combine(output, "loss.png")));
    }
}
