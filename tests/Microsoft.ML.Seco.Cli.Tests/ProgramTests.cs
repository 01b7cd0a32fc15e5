namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco as a whole: --help of every command, and bad command lines (exit code 2, the flag named). Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class ProgramTests : CliTestBase
{
    [TestMethod]
    public void HelpShowsEveryOptionWithItsDefault()
    {
        foreach (var (command, expected) in new[]
        {
            ("init-tiny", new[] { "--layers", "[default: 2]", "--hidden-size", "[default: 64]" }),
            ("train", new[] { "--chunk-size", "[default: 128]", "--lr", "[default: 1e-4]", "--resume", "--json", "--config", "[default: none]" }),
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
        // One form for a default in every command's help: the one System.CommandLine gives a value set with WithDefault.
        foreach (var command in Program.BuildRoot(new CliContext(TextWriter.Null, TextWriter.Null, CancellationToken.None)).Subcommands)
        {
            string help = Seco(command.Name, "--help").Out;
            Assert.IsFalse(help.Contains("Default:", StringComparison.Ordinal), $"{command.Name} --help writes a default otherwise than [default: ...]");
            StringAssert.Contains(help, "[default: ", command.Name);
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
}
