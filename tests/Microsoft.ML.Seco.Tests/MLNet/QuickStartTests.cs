using Microsoft.ML.Seco.Examples.QuickStart;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>The README's main command, in its fast mode.</summary>
[TestClass]
public sealed class QuickStartTests
{
    [TestMethod]
    public void RunsEndToEndAndWritesItsArtifacts()
    {
        string run = TinyModelFixture.TempPath("quickstart");
        try
        {
            var output = new StringWriter();
            Assert.AreEqual(0, QuickStartRun.Run(new[] { "--fast", "--out", run }, output), output.ToString());
            string text = output.ToString();
            StringAssert.Contains(text, "Before fine-tuning: pass-key accuracy");
            StringAssert.Contains(text, "After fine-tuning:  pass-key accuracy");
            foreach (var file in new[] { "model.seco", "loss.csv", "merged/config.json", "merged/model.safetensors", "merged/tokenizer.json", "tiny-model/config.json" })
                Assert.IsTrue(File.Exists(Path.Combine(run, file)), $"{file} missing; output:\n{text}");
        }
        finally
        {
            if (Directory.Exists(run)) Directory.Delete(run, true);
        }
    }
}
