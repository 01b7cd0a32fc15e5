using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Inference;

[TestClass]
public sealed class GenerationTests
{
    [TestMethod]
    public void GreedyGenerationWithChunkedPrefillFollowsTheFullForwardArgmax()
    {
        using var model = TestModels.Create(TestModels.Llama());
        var prompt = new[] { 5, 17, 3, 42, 8, 9, 30, 11, 2, 7, 19 };
        var generated = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 6, PrefillChunkSize = 4 });
        Assert.AreEqual(6, generated.Count);

        // Reference: recompute the whole sequence each time and take the argmax of the last position.
        var sequence = prompt.ToList();
        using var _ = no_grad();
        for (int i = 0; i < 6; i++)
        {
            var ids = tensor(sequence.Select(t => (long)t).ToArray(), new long[] { 1, sequence.Count });
            var (hidden, _) = model.ForwardChunk(ids, 0, null);
            int next = (int)model.Logits(hidden).select(1, sequence.Count - 1).argmax().item<long>();
            Assert.AreEqual(next, generated[i], $"token {i}");
            sequence.Add(next);
        }
    }

    [TestMethod]
    public void GenerationStopsAtAStopTokenAndSamplingIsSeeded()
    {
        using var model = TestModels.Create(TestModels.Llama());
        var prompt = new[] { 1, 2, 3 };
        var greedy = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 5 });
        var stopped = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 5, StopTokens = new[] { greedy[2] } });
        CollectionAssert.AreEqual(greedy.TakeWhile(t => t != greedy[2]).ToArray(), stopped.ToArray());
        var sampling = new GenerationOptions { MaxNewTokens = 8, Temperature = 1.5, TopP = 0.9, Seed = 4 };
        CollectionAssert.AreEqual(TextGenerator.Generate(model, prompt, sampling).ToArray(), TextGenerator.Generate(model, prompt, sampling).ToArray());
        Assert.AreEqual("TopP", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => TextGenerator.Generate(model, prompt, new GenerationOptions { TopP = 0 })).ParamName);
    }
}
