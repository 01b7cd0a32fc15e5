using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

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
    }
}
