namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco generate end to end (plain continuation; --chat is in ChatCommandTests). Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class GenerateCommandTests : CliTestBase
{
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
}
