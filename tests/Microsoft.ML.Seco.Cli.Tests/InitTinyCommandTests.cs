namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco init-tiny end to end. Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class InitTinyCommandTests : CliTestBase
{
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
        // The library's rules (TinyModelSpec.Validate), worded with the flags.
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--hidden-size", "30", "--heads", "4"], "seco: error: --heads (4) must divide --hidden-size (30)."),
            (["--kv-heads", "3"], "seco: error: --kv-heads (3) must be at least 1 and divide --heads (4)."),
            (["--layers", "0"], "seco: error: --layers must be at least 1; got 0."),
            (["--intermediate-size", "0"], "seco: error: --intermediate-size must be at least 1; got 0."),
            (["--shards", "0"], "seco: error: --shards must be at least 1; got 0."),
        })
        {
            r = Seco(["init-tiny", "--out", Output("bad"), .. args]);
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            Assert.AreEqual(message, r.Error.Trim(), r.ToString());
            Assert.IsFalse(Directory.Exists(Output("bad")), "nothing is written");
        }
        // From C# the same rules name the spec's properties.
        var e = Assert.ThrowsExactly<OptionException>(() => new Checkpoints.TinyModelSpec { HiddenSize = 30, Heads = 4 }.Validate());
        Assert.AreEqual("Heads", e.Option);
        Assert.AreEqual("Heads (4) must divide HiddenSize (30).", e.Message);
    }
}
