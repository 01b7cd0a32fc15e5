using Microsoft.ML.Data;
using Microsoft.ML.Seco.Inference;
using static Microsoft.ML.Seco.Tests.MLNet.TinyModelFixture;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>The columns Transform adds, with the types the README documents, and what Complete generates by default.</summary>
[TestClass]
public sealed class ScoringColumnsTests
{
    static ChunkwiseLoraTransformer FitOnPrompts(MLContext ml, int maxNewTokens) =>
        ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
        {
            ModelPath = ModelPath, PromptColumnName = nameof(PromptResponse.Prompt), ResponseColumnName = nameof(PromptResponse.Response),
            ChunkSize = 16, MaxSequenceLength = 64, MaxSteps = 1, Seed = 5, Device = "cpu", DType = "float32", MaxNewTokens = maxNewTokens,
        }).Fit(ml.Data.LoadFromEnumerable(Rows()));

    static PromptResponse[] Rows() => new[]
    {
        new PromptResponse { Prompt = "The contract shall", Response = " renew annually unless either party gives notice." },
        new PromptResponse { Prompt = "Notice must be given", Response = " in writing." },
    };

    [TestMethod]
    public void ScoringColumnsAreSingleSingleAndInt32AndCompletionIsOptIn()
    {
        var ml = new MLContext(seed: 1);
        var input = ml.Data.LoadFromEnumerable(Rows());
        using (var plain = FitOnPrompts(ml, maxNewTokens: 0))
        {
            var schema = plain.Transform(input).Schema;
            Assert.AreEqual(NumberDataViewType.Single, schema["Perplexity"].Type);
            Assert.AreEqual(NumberDataViewType.Single, schema["NegativeLogLikelihood"].Type);
            Assert.AreEqual(NumberDataViewType.Int32, schema["ScoredTokens"].Type);
            Assert.IsNull(schema.GetColumnOrNull("Completion"), "MaxNewTokens = 0 adds no Completion column");
            Assert.AreEqual(schema.Count, plain.GetOutputSchema(input.Schema).Count, "GetOutputSchema announces what Transform adds");
        }
        using var generating = FitOnPrompts(ml, maxNewTokens: 3);
        var scored = generating.Transform(input);
        Assert.IsInstanceOfType<TextDataViewType>(scored.Schema["Completion"].Type);
        string[] completions = scored.GetColumn<string>("Completion").ToArray();
        // The column holds exactly what Complete returns for the row's prompt.
        CollectionAssert.AreEqual(Rows().Select(r => generating.Complete(r.Prompt)).ToArray(), completions);
        Assert.IsTrue(completions.All(c => c.Length > 0), "three greedy tokens give text");

        // README's column table states these types ("| `Perplexity` | `Single` ...").
        string readme = File.ReadAllText(Packaging.RepositoryFiles.PathOf("README.md"));
        foreach (var name in new[] { "Perplexity", "NegativeLogLikelihood", "ScoredTokens", "Completion" })
            StringAssert.Contains(readme, $"| `{name}` | `{scored.Schema[name].Type}`", $"README's column table misstates {name}");
    }

    public sealed class Scores
    {
        public float Perplexity { get; set; }
        public float NegativeLogLikelihood { get; set; }
        public int ScoredTokens { get; set; }
        public string Completion { get; set; } = "";
    }

    [TestMethod]
    public void PredictionEngineAgreesWithTransformAndWithScore()
    {
        var ml = new MLContext(seed: 1);
        using var model = FitOnPrompts(ml, maxNewTokens: 2);
        Assert.IsTrue(model.IsRowToRowMapper);
        var rows = Rows();
        var scored = model.Transform(ml.Data.LoadFromEnumerable(rows));
        var perplexity = scored.GetColumn<float>("Perplexity").ToArray();
        var nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
        var tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
        var completions = scored.GetColumn<string>("Completion").ToArray();

        var engine = ml.Model.CreatePredictionEngine<PromptResponse, Scores>(model);
        for (int i = 0; i < rows.Length; i++)
        {
            var single = engine.Predict(rows[i]);
            Assert.AreEqual(perplexity[i], single.Perplexity, $"row {i}");
            Assert.AreEqual(nll[i], single.NegativeLogLikelihood, $"row {i}");
            Assert.AreEqual(tokens[i], single.ScoredTokens, $"row {i}");
            Assert.AreEqual(completions[i], single.Completion, $"row {i}");
            var score = model.Score(new Seco.Data.PromptResponseDocument(rows[i].Prompt, rows[i].Response));
            Assert.AreEqual(tokens[i], (int)score.Tokens, $"row {i}");
            Assert.AreEqual(nll[i], (float)score.MeanNll, $"row {i}");
        }
        Assert.IsTrue(tokens.All(t => t > 0) && perplexity.All(float.IsFinite), "the rows have responses to score");
    }

    [TestMethod]
    public void CompleteGeneratesSixtyFourTokensUnlessMaxNewTokensSaysOtherwise()
    {
        var ml = new MLContext(seed: 1);
        const string prompt = "The contract shall";
        using (var model = FitOnPrompts(ml, maxNewTokens: 0))
        {
            string completion = model.Complete(prompt);
            Assert.AreNotEqual("", completion, "Complete(prompt) must continue the prompt when no MaxNewTokens was set");
            Assert.AreEqual(Explicit(model, prompt, 64), completion);
        }
        using (var model = FitOnPrompts(ml, maxNewTokens: 5))
            Assert.AreEqual(Explicit(model, prompt, 5), model.Complete(prompt));
    }

    /// <summary>The same greedy generation spelled out: the stage's stop tokens and chunk size, a given token count.</summary>
    static string Explicit(ChunkwiseLoraTransformer model, string prompt, int tokens)
    {
        var ids = model.Tokenizer.Encode(prompt, addBos: true);
        var generated = TextGenerator.Generate(model.Model, ids, new GenerationOptions { MaxNewTokens = tokens, StopTokens = model.Tokenizer.EosIds, PrefillChunkSize = model.Settings.ChunkSize });
        Assert.IsTrue(generated.Count is > 0, "the tiny model generated nothing");
        return model.Tokenizer.Decode(generated);
    }
}
