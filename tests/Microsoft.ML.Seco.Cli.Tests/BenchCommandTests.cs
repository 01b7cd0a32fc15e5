namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco bench end to end: the measured points, phases, memory in processes of their own, predictions, bad flags. Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class BenchCommandTests : CliTestBase
{
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
}
