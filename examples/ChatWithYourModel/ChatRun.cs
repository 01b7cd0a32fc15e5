using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Examples.ChatWithYourModel;

/// <summary>What the run measured before and after fine-tuning.</summary>
/// <param name="AccuracyBefore">Share of the fact table's questions the untrained model answered exactly.</param>
/// <param name="AccuracyAfter">The same after fine-tuning.</param>
/// <param name="LossBefore">Mean NLL per assistant-turn token on held-out conversations, untrained.</param>
/// <param name="LossAfter">The same after fine-tuning (the stage's NegativeLogLikelihood column).</param>
/// <param name="FirstLoss">Training loss of the first step.</param>
/// <param name="LastLoss">Training loss of the last step.</param>
/// <param name="Reply">The fine-tuned model's reply to the first question.</param>
/// <param name="StreamedReply">The same question's reply, streamed and concatenated.</param>
public sealed record ChatOutcome(double AccuracyBefore, double AccuracyAfter, double LossBefore, double LossAfter, double FirstLoss, double LastLoss,
    string Reply, string StreamedReply);

/// <summary>The example's logic, callable from tests.</summary>
public static class ChatRun
{
    /// <summary>Runs the example; returns the process exit code.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output) => (await RunWithOutcomeAsync(args, output)).ExitCode;

    /// <summary>Runs the example; returns the exit code and what it measured.</summary>
    public static async Task<(int ExitCode, ChatOutcome Outcome)> RunWithOutcomeAsync(string[] args, TextWriter output)
    {
        string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
        int Int(string name, int fallback) => Arg(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        bool fast = args.Contains("--fast");
        string run = Path.GetFullPath(Arg("--out") ?? Path.Combine("runs", "chat-with-your-model"));
        Directory.CreateDirectory(run);

        // 1. A chat model: a random tiny model whose tokenizer_config.json carries a ChatML chat template.
        string modelPath = Path.Combine(run, "tiny-chat-model");
        TinyChatModel.Write(modelPath, hiddenSize: Int("--hidden-size", 64));
        output.WriteLine($"Wrote a random tiny chat model (2 layers, byte-level tokenizer, ChatML template) to {modelPath}");

        // 2. Conversations as JSON lines of {"messages": [...]}, the layout of Hugging Face's chat datasets.
        string trainPath = Path.Combine(run, "train.jsonl"), heldOutPath = Path.Combine(run, "held-out.jsonl");
        WriteJsonl(trainPath, CapitalsTask.Conversations(Int("--conversations", fast ? 64 : 240), seed: 1));
        WriteJsonl(heldOutPath, CapitalsTask.Conversations(fast ? 8 : 32, seed: 2));
        output.WriteLine($"Task: answer \"{CapitalsTask.Question("X")}\" from a table of {CapitalsTask.Facts.Count} capitals; data in {trainPath}");

        var ml = new MLContext(seed: 1);
        IDataView train = JsonlDocuments.LoadDataView(ml, trainPath), heldOut = JsonlDocuments.LoadDataView(ml, heldOutPath); // a "Messages" column
        var conversations = JsonlDocuments.Read(heldOutPath).Cast<ConversationDocument>().ToList();

        // 3. Before: the base model through a chat client that renders with the model's own template.
        double accuracyBefore, lossBefore;
        using (var baseClient = SecoChatClient.FromModelDirectory(modelPath, adapterDirectory: null, device: "auto", dtype: "auto"))
        {
            accuracyBefore = await Accuracy(baseClient);
            var encoder = DocumentEncoder.ForModel(modelPath, baseClient.Tokenizer); // assistant turns only, as training
            var scores = conversations.Select(c => Evaluation.ScoreDocument(baseClient.Model, encoder, c, chunkSize: 32)).ToList();
            lossBefore = scores.Sum(s => s.SumNll) / scores.Sum(s => s.Tokens);
        }
        output.WriteLine($"Before fine-tuning: accuracy {accuracyBefore:P0}, held-out assistant-turn loss {lossBefore:F3} nats/token");

        // 4. Fine-tune on the messages column: the chat template renders each conversation, the loss is on the assistant's turns.
        var losses = new List<double>();
        int everySteps = fast ? 8 : 15;
        var options = new ChunkwiseLoraTrainer.Options
        {
            ModelPath = modelPath,
            MessagesColumnName = "Messages",
            AssistantOnlyLoss = true,
            ChunkSize = 32, MaxSequenceLength = 512,                 // a conversation is 2 to 5 chunks; SeCO, exact gradients
            FullFineTuning = true,                                     // a random model has nothing for an adapter to adapt
            LearningRate = 3e-3, WarmupSteps = 10, BatchSize = 8,
            MaxEpoch = Int("--epochs", fast ? 2 : 3), Seed = 1, Device = "auto",
            Progress = new Recorder(p =>
            {
                losses.Add(p.Loss);
                if (p.Step % everySteps == 0 || p.Step == p.TotalSteps)
                    output.WriteLine($"  step {p.Step}/{p.TotalSteps} loss {p.Loss:F3} ({p.TokensPerSecond:F0} tokens/s)");
            }),
        };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var model = ml.Transforms.Text.ChunkwiseLora(options).Fit(train);
        output.WriteLine($"Trained {losses.Count} steps in {watch.Elapsed.TotalSeconds:F0} s");

        // 5. After: score the held-out messages column (NLL over the assistant's tokens), then chat.
        var scored = model.Transform(heldOut);
        float[] nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
        int[] tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
        double lossAfter = nll.Zip(tokens, (n, t) => (double)n * t).Sum() / tokens.Sum();

        using IChatClient chat = model.AsIChatClient(); // renders with the base model's chat template; stops at <|im_end|>
        double accuracyAfter = await Accuracy(chat);
        output.WriteLine($"After fine-tuning:  accuracy {accuracyAfter:P0}, held-out assistant-turn loss {lossAfter:F3} nats/token");

        var (country, _) = CapitalsTask.Facts[0];
        var question = new List<ChatMessage> { new(ChatRole.System, "You answer geography questions."), new(ChatRole.User, CapitalsTask.Question(country)) };
        var response = await chat.GetResponseAsync(question);
        output.WriteLine($"user: {CapitalsTask.Question(country)}");
        output.WriteLine($"assistant (GetResponseAsync): {response.Text}   [{response.FinishReason}, {response.Usage?.OutputTokenCount} tokens]");
        output.Write("assistant (streaming):        ");
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(question))
        {
            output.Write(update.Text);
            streamed.Append(update.Text);
        }
        output.WriteLine();

        // A second turn: the reply joins the history, and the next question is answered in context.
        question.AddRange(response.Messages);
        question.Add(new ChatMessage(ChatRole.User, CapitalsTask.Question(CapitalsTask.Facts[1].Country)));
        output.WriteLine($"user: {CapitalsTask.Question(CapitalsTask.Facts[1].Country)}");
        output.WriteLine($"assistant: {(await chat.GetResponseAsync(question)).Text}");

        string saved = Path.Combine(run, "model.seco");
        SecoModel.Save(ml, model, train.Schema, saved); // the messages column and AssistantOnlyLoss are saved with it
        output.WriteLine($"Saved the stage to {saved}");
        return (0, new ChatOutcome(accuracyBefore, accuracyAfter, lossBefore, lossAfter, losses.FirstOrDefault(double.NaN), losses.LastOrDefault(double.NaN),
            response.Text, streamed.ToString()));
    }

    /// <summary>Share of the fact table answered exactly, one single-turn conversation per country, greedy.</summary>
    static async Task<double> Accuracy(IChatClient chat)
    {
        int right = 0;
        foreach (var (country, capital) in CapitalsTask.Facts)
        {
            var reply = await chat.GetResponseAsync(CapitalsTask.Question(country), new ChatOptions { MaxOutputTokens = 16 });
            if (reply.Text.Trim() == CapitalsTask.Answer(capital)) right++;
        }
        return right / (double)CapitalsTask.Facts.Count;
    }

    static void WriteJsonl(string path, IEnumerable<JsonArray> conversations) =>
        File.WriteAllLines(path, conversations.Select(messages => new JsonObject { ["messages"] = messages }.ToJsonString()));

    /// <summary>Reports progress synchronously, in step order (Progress&lt;T&gt; would post to the thread pool).</summary>
    sealed class Recorder(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
