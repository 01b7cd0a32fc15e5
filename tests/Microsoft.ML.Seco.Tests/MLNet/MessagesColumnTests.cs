using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Examples.ChatWithYourModel;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>
/// Conversations through the ML.NET stage: a messages column rendered by the base model's chat template (a tiny ChatML
/// model), the loss and the scores on what <see cref="DocumentEncoder"/> marks as trained, its errors, persistence, and
/// the chat client that uses the model's own template.
/// </summary>
[TestClass]
public sealed class MessagesColumnTests
{
    static readonly Lazy<string> ChatModel = new(() => Model("chat", TinyChatModel.ChatTemplate));
    static readonly Lazy<string> BaseModel = new(() => Model("base", null));

    static string Model(string name, string? template)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"seco-messages-{name}-{Environment.ProcessId}");
        TinyChatModel.Write(dir, hiddenSize: 32, chatTemplate: template);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        return dir;
    }

    public sealed class Row
    {
        public string Messages { get; set; } = "";
    }

    sealed class Numbers
    {
        public float Messages { get; set; }
    }

    static Row[] Rows(int count, int seed) => CapitalsTask.Conversations(count, seed).Select(m => new Row { Messages = m.ToJsonString() }).ToArray();

    static ChunkwiseLoraTrainer.Options Options(string? modelPath = null, int steps = 20, bool assistantOnly = true) => new()
    {
        ModelPath = modelPath ?? ChatModel.Value, MessagesColumnName = nameof(Row.Messages), AssistantOnlyLoss = assistantOnly,
        ChunkSize = 32, MaxSequenceLength = 256, FullFineTuning = true, LearningRate = 3e-3, WarmupSteps = 2, BatchSize = 4,
        MaxSteps = steps, Seed = 1, Device = "cpu", DType = "float32",
    };

    // One trained stage shared by the tests that only read it.
    static readonly Lazy<(MLContext Ml, ChunkwiseLoraTransformer Stage)> Trained = new(() =>
    {
        var ml = new MLContext(seed: 1);
        return (ml, ml.Transforms.Text.ChunkwiseLora(Options(steps: 30)).Fit(ml.Data.LoadFromEnumerable(Rows(96, seed: 1))));
    });

    [ClassCleanup]
    public static void DisposeStage()
    {
        if (Trained.IsValueCreated) Trained.Value.Stage.Dispose();
    }

    [TestMethod]
    public void TheMessagesColumnTrainsAndItsLossFalls()
    {
        var stage = Trained.Value.Stage;
        var history = stage.TrainingSummary!.History;
        Assert.IsLessThan(history[0].Loss / 2, history[^1].Loss, $"assistant-turn loss {history[0].Loss:F3} -> {history[^1].Loss:F3}");
        Assert.AreEqual(nameof(Row.Messages), stage.Settings.MessagesColumnName);
        Assert.IsTrue(stage.Settings.AssistantOnlyLoss);
        Assert.IsNotNull(stage.Encoder.ChatTemplate, "the stage encodes with the model's chat template");
        Assert.AreEqual(TinyChatModel.ChatTemplate, stage.Encoder.ChatTemplate.Source);
    }

    [TestMethod]
    public void ScoringAMessagesColumnScoresTheTokensTheEncoderTrains()
    {
        var (ml, stage) = Trained.Value;
        var rows = Rows(4, seed: 5);
        var scored = stage.Transform(ml.Data.LoadFromEnumerable(rows));
        int[] tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
        float[] nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
        var encoder = DocumentEncoder.ForModel(ChatModel.Value, stage.Tokenizer);
        for (int i = 0; i < rows.Length; i++)
        {
            var conversation = ConversationDocument.FromJson(rows[i].Messages, "test");
            var encoded = encoder.Encode(conversation);
            var (_, spans) = ConversationDocument.AssistantTurns(encoder.ChatTemplate!, conversation.Messages);
            Assert.IsNotEmpty(spans);
            // Label 0 is never a target; every other trained token is scored, and nothing else.
            Assert.AreEqual(encoded.Trained.Skip(1).Count(t => t), tokens[i], $"row {i}");
            Assert.IsLessThan(encoded.Ids.Length - 1, tokens[i], "the user's turns are not scored");
            // The examples training builds carry the same mask.
            var example = new SequenceBuilder(256).FromDocument(stage.Encoder, conversation).Single();
            CollectionAssert.AreEqual(encoded.Labels(), example.Labels);
            var score = stage.Score(conversation);
            Assert.AreEqual(score.MeanNll, nll[i], 1e-4 * Math.Max(1, score.MeanNll));
            Assert.IsTrue(float.IsFinite(nll[i]));
        }
    }

    [TestMethod]
    public void AConversationWithoutAnAssistantTurnIsScoredAsARowWithNothingToScore()
    {
        // As an empty text or response: no token scored, NaN NLL and perplexity; the other rows are scored as ever.
        var (ml, stage) = Trained.Value;
        var rows = Rows(3, seed: 7);
        rows[1] = new Row { Messages = new JsonArray(CapitalsTask.Message("system", "Be brief."), CapitalsTask.Message("user", "Anyone there?")).ToJsonString() };
        var scored = stage.Transform(ml.Data.LoadFromEnumerable(rows));
        int[] tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
        float[] nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
        float[] perplexity = scored.GetColumn<float>("Perplexity").ToArray();
        Assert.AreEqual((0, true, true), (tokens[1], float.IsNaN(nll[1]), float.IsNaN(perplexity[1])));
        foreach (int i in new[] { 0, 2 })
            Assert.IsTrue(tokens[i] > 0 && float.IsFinite(nll[i]) && float.IsFinite(perplexity[i]), $"row {i}");

        var score = stage.Score(ConversationDocument.FromJson(rows[1].Messages, "test"));
        Assert.AreEqual((0L, 0), (score.Tokens, score.Sequences), "no window holds a token to score");
        Assert.IsTrue(double.IsNaN(score.MeanNll) && double.IsNaN(score.Perplexity));
        var empty = Evaluation.ScoreDocument(stage.Model, stage.Tokenizer, new TextDocument(""), 32);
        Assert.AreEqual(0L, empty.Tokens, "the convention it follows: an empty text");
        Assert.IsTrue(double.IsNaN(empty.Perplexity));

        // Training keeps its rule: such a row is refused before the first step, naming it.
        var refused = Assert.ThrowsExactly<InvalidDataException>(() => stage.Encoder.Encode(ConversationDocument.FromJson(rows[1].Messages, "row 2")));
        StringAssert.Contains(refused.Message, "nothing trainable");
    }

    [TestMethod]
    public void AssistantOnlyLossFalseTrainsAndScoresEveryToken()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(8, seed: 3);
        using var stage = ml.Transforms.Text.ChunkwiseLora(Options(steps: 2, assistantOnly: false)).Fit(ml.Data.LoadFromEnumerable(rows));
        Assert.IsFalse(stage.Settings.AssistantOnlyLoss);
        Assert.IsFalse(stage.Encoder.AssistantOnlyLoss);
        int[] tokens = stage.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<int>("ScoredTokens").ToArray();
        var encoder = DocumentEncoder.ForModel(ChatModel.Value, stage.Tokenizer, assistantOnlyLoss: false);
        for (int i = 0; i < rows.Length; i++)
        {
            var encoded = encoder.Encode(ConversationDocument.FromJson(rows[i].Messages, "test"));
            Assert.IsTrue(encoded.Trained.All(t => t));
            Assert.AreEqual(encoded.Ids.Length - 1, tokens[i], $"row {i}: every token after the first");
        }
    }

    [TestMethod]
    public void SaveAndLoadKeepTheMessagesColumnAndAssistantOnlyLoss()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(8, seed: 4);
        string path = TinyModelFixture.TempPath("messages") + ".seco";
        try
        {
            using (var stage = ml.Transforms.Text.ChunkwiseLora(Options(steps: 2, assistantOnly: false)).Fit(ml.Data.LoadFromEnumerable(rows)))
            {
                var before = stage.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<float>("Perplexity").ToArray();
                SecoModel.Save(ml, stage, null, path);
                using var loaded = (ChunkwiseLoraTransformer)SecoModel.Load(ml, path);
                Assert.AreEqual(nameof(Row.Messages), loaded.Settings.MessagesColumnName);
                Assert.IsFalse(loaded.Settings.AssistantOnlyLoss);
                Assert.IsFalse(loaded.Encoder.AssistantOnlyLoss);
                Assert.IsNotNull(loaded.Encoder.ChatTemplate);
                CollectionAssert.AreEqual(before, loaded.Transform(ml.Data.LoadFromEnumerable(rows)).GetColumn<float>("Perplexity").ToArray());
            }
        }
        finally
        {
            if (File.Exists(path)) File.Delete(path);
        }
    }

    [TestMethod]
    public void ColumnErrorsNameTheColumn()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Rows(2, seed: 1));
        var options = Options(steps: 1);
        options.MessagesColumnName = "Chat";
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.Text.ChunkwiseLora(options).Fit(data));
        StringAssert.Contains(e.Message, "'Chat'");
        StringAssert.Contains(e.Message, "messages column");

        var numbers = ml.Data.LoadFromEnumerable(new[] { new Numbers { Messages = 1 } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.Text.ChunkwiseLora(Options(steps: 1)).Fit(numbers));
        StringAssert.Contains(e.Message, "'Messages'");
        StringAssert.Contains(e.Message, "expects Text");
        // The fitted stage checks the same on the data it scores.
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Trained.Value.Stage.Transform(numbers));
        StringAssert.Contains(e.Message, "'Messages'");
    }

    [TestMethod]
    public void BadRowsStopFitBeforeTheFirstStepNamingTheRowAndTurn()
    {
        var ml = new MLContext(seed: 1);
        string Fails(Row[] rows)
        {
            var steps = new List<int>();
            var options = Options(steps: 1);
            options.Progress = new Recorder(p => steps.Add(p.Step));
            var e = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.Text.ChunkwiseLora(options).Fit(ml.Data.LoadFromEnumerable(rows)));
            Assert.IsEmpty(steps, "the data is checked before step 1");
            return e.Message;
        }
        var rows = Rows(4, seed: 1);
        rows[2] = new Row { Messages = "[{\"role\": \"user\", \"content\": \"hi\"" };
        string message = Fails(rows);
        StringAssert.Contains(message, "row 3");
        StringAssert.Contains(message, "not valid JSON");

        rows = Rows(4, seed: 1);
        rows[1] = new Row { Messages = new JsonArray(CapitalsTask.Message("user", "hi"), CapitalsTask.Message("robot", "beep")).ToJsonString() };
        message = Fails(rows);
        StringAssert.Contains(message, "row 2, message 2");
        StringAssert.Contains(message, "unknown role \"robot\"");

        rows = Rows(4, seed: 1);
        rows[3] = new Row { Messages = new JsonArray(CapitalsTask.Message("user", "Anyone there?")).ToJsonString() };
        message = Fails(rows);
        StringAssert.Contains(message, "row 4");
        StringAssert.Contains(message, "nothing trainable");
    }

    [TestMethod]
    public void AModelWithoutAChatTemplateIsRefusedAtFitNamingItsDirectory()
    {
        var ml = new MLContext(seed: 1);
        var steps = new List<int>();
        var options = Options(BaseModel.Value, steps: 1);
        options.Progress = new Recorder(p => steps.Add(p.Step));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.Text.ChunkwiseLora(options).Fit(ml.Data.LoadFromEnumerable(Rows(2, seed: 1))));
        StringAssert.Contains(e.Message, BaseModel.Value);
        StringAssert.Contains(e.Message, "chat_template");
        Assert.IsEmpty(steps);

        // Nor can a chat client render with a template the model does not have.
        e = Assert.ThrowsExactly<InvalidDataException>(() => SecoChatClient.FromModelDirectory(BaseModel.Value, device: "cpu", dtype: "float32"));
        StringAssert.Contains(e.Message, BaseModel.Value);
        StringAssert.Contains(e.Message, "chat_template");
        var text = Options(BaseModel.Value, steps: 1);
        text.MessagesColumnName = null;
        text.TextColumnName = nameof(Row.Messages);
        using var stage = ml.Transforms.Text.ChunkwiseLora(text).Fit(ml.Data.LoadFromEnumerable(Rows(2, seed: 1)));
        e = Assert.ThrowsExactly<InvalidDataException>(() => stage.AsIChatClient());
        StringAssert.Contains(e.Message, "chat_template");
    }

    [TestMethod]
    public async Task AsIChatClientAnswersWithTheModelsOwnTemplate()
    {
        var stage = Trained.Value.Stage;
        using var chat = stage.AsIChatClient();
        var client = (SecoChatClient)chat;
        var question = new[] { new ChatMessage(ChatRole.User, CapitalsTask.Question("Peru")) };
        var template = ChatTemplate.FromModelDirectory(ChatModel.Value)!;
        Assert.AreEqual(template.Render(SecoChatClient.ToTemplateMessages(question), addGenerationPrompt: true), client.RenderPrompt(question));
        StringAssert.EndsWith(client.RenderPrompt(question), "<|im_start|>assistant\n");
        // generation_config.json lists <|im_end|>, the template's end of turn: a reply stops there.
        CollectionAssert.Contains(stage.Tokenizer.EosIds.ToArray(), TinyChatModel.ImEndId);
        var response = await chat.GetResponseAsync(question, new ChatOptions { MaxOutputTokens = 12 });
        Assert.IsNotNull(response.FinishReason);
        Assert.IsGreaterThan(0L, response.Usage!.OutputTokenCount ?? 0);
        Assert.DoesNotContain("<|im_end|>", response.Text);
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(question, new ChatOptions { MaxOutputTokens = 12 })) streamed.Append(update.Text);
        Assert.AreEqual(response.Text, streamed.ToString());

        // The same from a model directory, with no renderer.
        using var fromDirectory = SecoChatClient.FromModelDirectory(ChatModel.Value, device: "cpu", dtype: "float32");
        Assert.AreEqual(client.RenderPrompt(question), fromDirectory.RenderPrompt(question));
    }

    [TestMethod]
    public async Task TheChatExampleImprovesTheAssistantTurnLossAndAnswers()
    {
        string run = TinyModelFixture.TempPath("chat-example");
        try
        {
            var output = new StringWriter();
            var (code, outcome) = await ChatRun.RunWithOutcomeAsync(["--conversations", "160", "--epochs", "2", "--out", run], output);
            string text = output.ToString();
            Assert.AreEqual(0, code, text);
            Assert.IsLessThan(outcome.LossBefore / 4, outcome.LossAfter, $"held-out assistant-turn loss should fall; output:\n{text}");
            Assert.IsLessThan(outcome.FirstLoss, outcome.LastLoss, text);
            Assert.IsFalse(string.IsNullOrWhiteSpace(outcome.Reply), text);
            Assert.AreEqual(outcome.Reply, outcome.StreamedReply, text);
            StringAssert.Contains(text, "After fine-tuning:");
            Assert.IsTrue(File.Exists(Path.Combine(run, "model.seco")), text);
        }
        finally
        {
            if (Directory.Exists(run)) Directory.Delete(run, true);
        }
    }

    sealed class Recorder(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
