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
            // --fast with more documents and epochs: ~10 s of training on a 2-core machine, enough for the claim the
            // README makes (the model learns to fetch a key that only the first chunk holds) to show well above chance.
            Assert.AreEqual(0, QuickStartRun.Run(new[] { "--fast", "--documents", "80", "--epochs", "6", "--out", run }, output, out var outcome), output.ToString());
            string text = output.ToString();
            Assert.IsNotNull(outcome);
            Assert.IsLessThan(outcome.FirstLoss / 4, outcome.LastLoss, $"training loss should fall; output:\n{text}");
            Assert.IsLessThan(outcome.PerplexityBefore / 100, outcome.PerplexityAfter, $"answer perplexity should fall; output:\n{text}");
            // Chance is 10 %; a gradient that did not reach the first chunk's cache could not lift accuracy this far.
            Assert.IsGreaterThanOrEqualTo(0.5, outcome.AccuracyAfter, $"pass-key accuracy should be well above chance; output:\n{text}");
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
