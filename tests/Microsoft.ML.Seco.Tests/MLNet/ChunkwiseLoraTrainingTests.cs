using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Tokenization;
using static Microsoft.ML.Seco.Tests.MLNet.TinyModelFixture;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>Training behaviour of the stage: learning, reproducibility, prompt/response data, persistence errors.</summary>
[TestClass]
public sealed class ChunkwiseLoraTrainingTests
{
    [TestMethod]
    public void LossGoesDownAndTheSameSeedGivesTheSameAdapter()
    {
        ChunkwiseLoraTransformer Fit()
        {
            var ml = new MLContext(seed: 7);
            var data = ml.Data.LoadFromEnumerable(Documents(2).Concat(Documents(2)).ToArray());
            return ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
            {
                ModelPath = ModelPath, ChunkSize = 16, SampledChunks = 3, MaxSequenceLength = 64, LoraRank = 8,
                LearningRate = 5e-2, MaxEpoch = 8, Device = "cpu", LoraTargetModules = new[] { "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj" },
            }).Fit(data);
        }
        using var first = Fit();
        using var second = Fit();
        var history = first.TrainingSummary!.History;
        Assert.IsTrue(history[^1].Loss < history[0].Loss - 0.5, $"loss {history[0].Loss:F3} -> {history[^1].Loss:F3}");
        foreach (var ((name, a), (_, b)) in TrainableParameters.Of(first.Model).Zip(TrainableParameters.Of(second.Model)))
            Assert.IsTrue(a.equal(b).all().item<bool>(), $"{name} differs between two fits with MLContext(seed: 7)");
    }

    /// <summary>Keeps the last t chunks, and remembers every draw it was asked for.</summary>
    sealed class LastChunksSampler : ChunkSamplerBase
    {
        public List<(int Chunks, int Sampled)> Draws { get; } = new();
        public override string Name => "last";
        public override string Description => "the last t chunks";

        protected override bool[] SampleCore(int chunks, int sampled, Random random, IReadOnlyList<bool>? labelledChunks)
        {
            Draws.Add((chunks, sampled));
            return Enumerable.Range(0, chunks).Select(j => j >= chunks - sampled).ToArray();
        }

        protected override double SelectionCountCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) => 1;

        protected override IEnumerable<(bool[] Keep, double Probability)> LawCore(int chunks, int sampled, IReadOnlyList<bool>? labelledChunks) =>
            [(Enumerable.Range(0, chunks).Select(j => j >= chunks - sampled).ToArray(), 1.0)];
    }

    [TestMethod]
    public void TheStageTrainsWithACustomSampler()
    {
        var ml = new MLContext(seed: 3);
        var data = ml.Data.LoadFromEnumerable(Documents(2));
        var sampler = new LastChunksSampler();
        using var model = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
        {
            ModelPath = ModelPath, ChunkSize = 8, SampledChunks = 2, Sampler = ChunkSampler.Stratified, CustomSampler = sampler,
            MaxSequenceLength = 48, MaxSteps = 3, Device = "cpu",
        }).Fit(data);
        Assert.AreEqual(3, sampler.Draws.Count, "one draw per step, from the custom sampler (it overrides Sampler)");
        Assert.IsTrue(sampler.Draws.All(d => d.Sampled == 2 && d.Chunks > 2), string.Join(", ", sampler.Draws));
        Assert.AreEqual(3, model.TrainingSummary!.History.Count);
    }

    [TestMethod]
    public void PromptResponseDataScoresOnlyTheResponse()
    {
        var ml = new MLContext(seed: 1);
        var rows = new[]
        {
            new PromptResponse { Prompt = "Summarise: the contract renews every year unless cancelled.", Response = " It renews yearly." },
            new PromptResponse { Prompt = "Who may cancel?", Response = " Either party, in writing." },
        };
        var data = ml.Data.LoadFromEnumerable(rows);
        using var model = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
        {
            ModelPath = ModelPath, PromptColumnName = "Prompt", ResponseColumnName = "Response", ChunkSize = 8, MaxSteps = 2, Device = "cpu",
        }).Fit(data);
        var scored = model.Transform(data).GetColumn<int>("ScoredTokens").ToArray();
        var tokenizer = ModelTokenizer.Load(ModelPath);
        // The response's tokens and the end-of-text token after it are predicted; prompt tokens are not.
        var expected = rows.Select(r => tokenizer.Encode(r.Response, addBos: false).Count + 1).ToArray();
        CollectionAssert.AreEqual(expected, scored);
    }

    [TestMethod]
    public void AMovedOrChangedBaseModelIsReportedOnLoad()
    {
        string moved = TempPath("moved-base"), path = TempPath("saved") + ".seco";
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Documents(2));
        CopyDirectory(ModelPath, moved);
        try
        {
            using (var model = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options { ModelPath = moved, ChunkSize = 16, MaxSteps = 1, Device = "cpu" }).Fit(data))
                model.Save(ml, path);
            string elsewhere = moved + "-new";
            Directory.Move(moved, elsewhere);
            var e = Assert.ThrowsExactly<DirectoryNotFoundException>(() => SecoModel.Load(ml, path));
            StringAssert.Contains(e.Message, "baseModelPath");
            using (var reloaded = (ChunkwiseLoraTransformer)SecoModel.Load(ml, path, baseModelPath: elsewhere))
                Assert.IsTrue(reloaded.Perplexity("the contract shall renew") > 1);
            string config = Path.Combine(elsewhere, "config.json");
            File.WriteAllText(config, File.ReadAllText(config).Replace("\"rms_norm_eps\": 1E-06", "\"rms_norm_eps\": 1E-05"));
            var changed = Assert.ThrowsExactly<InvalidDataException>(() => SecoModel.Load(ml, path, baseModelPath: elsewhere));
            StringAssert.Contains(changed.Message, "changed");
            Directory.Delete(elsewhere, true);
        }
        finally
        {
            File.Delete(path);
            if (Directory.Exists(moved)) Directory.Delete(moved, true);
        }
    }

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }
}
