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
        Assert.AreEqual("TopP", Assert.ThrowsExactly<OptionException>(() => TextGenerator.Generate(model, prompt, new GenerationOptions { TopP = 0 })).ParamName);
    }

    [TestMethod]
    public void TopKOfOneAndATinyTopPAreGreedyAndTheSessionSaysWhyItStopped()
    {
        using var model = TestModels.Create(TestModels.Llama());
        var prompt = new[] { 4, 8, 15, 16, 23, 42 };
        var greedy = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 8 });
        foreach (var sampling in new[]
                 {
                     new GenerationOptions { MaxNewTokens = 8, Temperature = 2, TopK = 1, Seed = 1 },
                     new GenerationOptions { MaxNewTokens = 8, Temperature = 2, TopP = 1e-9, Seed = 2 },
                 })
            CollectionAssert.AreEqual(greedy.ToArray(), TextGenerator.Generate(model, prompt, sampling).ToArray(), sampling.ToString());
        var wide = new GenerationOptions { MaxNewTokens = 8, Temperature = 2, TopK = 5, Seed = 3 };
        CollectionAssert.AreEqual(TextGenerator.Generate(model, prompt, wide).ToArray(), TextGenerator.Generate(model, prompt, wide).ToArray());
        Assert.AreEqual("TopK", Assert.ThrowsExactly<OptionException>(() => TextGenerator.Generate(model, prompt, new GenerationOptions { TopK = -1 })).ParamName);

        using (var session = GenerationSession.Start(model, prompt, new GenerationOptions { MaxNewTokens = 3 }))
        {
            Assert.AreEqual(prompt.Length, session.PromptTokenCount);
            while (session.TryNext(out _)) Assert.AreEqual(GenerationStopReason.None, session.StopReason);
            Assert.AreEqual(GenerationStopReason.MaxNewTokens, session.StopReason);
            CollectionAssert.AreEqual(greedy.Take(3).ToArray(), session.Generated.ToArray());
            Assert.IsFalse(session.TryNext(out int none));
            Assert.AreEqual(0, none);
        }
        using (var session = GenerationSession.Start(model, prompt, new GenerationOptions { MaxNewTokens = 8, StopTokens = [greedy[1]] }))
        {
            while (session.TryNext(out _)) { }
            Assert.AreEqual(GenerationStopReason.StopToken, session.StopReason);
            CollectionAssert.AreEqual(greedy.Take(1).ToArray(), session.Generated.ToArray());
        }
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsExactly<OperationCanceledException>(() => TextGenerator.Generate(model, prompt, new GenerationOptions(), cancelled.Token));
    }
}
