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
            StringAssert.Contains(text, "Before fine-tuning: accuracy");
            StringAssert.Contains(text, "After fine-tuning:  accuracy");
            foreach (var file in new[] { "model.seco", "loss.csv", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tiny-model/config.json" })
                Assert.IsTrue(File.Exists(Path.Combine(run, file)), $"{file} missing; output:\n{text}");
        }
        finally
        {
            if (Directory.Exists(run)) Directory.Delete(run, true);
        }
    }
}
