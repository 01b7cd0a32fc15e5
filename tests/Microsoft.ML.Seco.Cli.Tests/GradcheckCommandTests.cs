namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco gradcheck end to end. Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class GradcheckCommandTests : CliTestBase
{
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
        Assert.AreEqual("seco: error: --seq-len 200 in chunks of --chunk-size 4 makes 50 chunks: 1,125,899,906,842,624 selections of the bernoulli sampler " +
            "to enumerate, more than --max-patterns 4096; use a shorter --seq-len or a larger --chunk-size.", tooMany.Error.Trim());
        // The stratified sampler's law depends on the batch's labels, so the limit is found once the model is loaded: the same line.
        var tooManyLabelled = Seco("gradcheck", "--model", _model, "--seq-len", "200", "--chunk-size", "4", "--strategy", "spaco-stratified", "--sampled-chunks", "8", "--max-patterns", "10");
        Assert.AreEqual(2, tooManyLabelled.ExitCode, tooManyLabelled.ToString());
        StringAssert.StartsWith(tooManyLabelled.Error, "seco: error: --seq-len 200 in chunks of --chunk-size 4 makes 50 chunks: ");
        StringAssert.EndsWith(tooManyLabelled.Error.Trim(), " selections of the stratified sampler to enumerate, more than --max-patterns 10; use a shorter --seq-len or a larger --chunk-size.");
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
}
