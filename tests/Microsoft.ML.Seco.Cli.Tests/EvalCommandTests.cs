namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco eval end to end. Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class EvalCommandTests : CliTestBase
{
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
}
