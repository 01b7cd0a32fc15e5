using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Seco;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Examples.QuickStart;

/// <summary>What the pass-key run measured on its test documents, and its first and last training losses.</summary>
public sealed record PassKeyOutcome(double AccuracyBefore, double AccuracyAfter, double PerplexityBefore, double PerplexityAfter, double FirstLoss, double LastLoss);

/// <summary>The example's logic, callable from tests.</summary>
public static class QuickStartRun
{
    /// <summary>Runs the example; returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter output) => Run(args, output, out _);

    /// <summary>Runs the example; <paramref name="outcome"/> holds the pass-key figures (null for --model/--data runs).</summary>
    public static int Run(string[] args, TextWriter output, out PassKeyOutcome? outcome)
    {
        outcome = null;
        string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
        bool fast = args.Contains("--fast");
        string runDirectory = Path.GetFullPath(Arg("--out") ?? Path.Combine("runs", "quickstart"));
        string? modelPath = Arg("--model"), dataPath = Arg("--data");
        if ((modelPath is null) != (dataPath is null))
        {
            Console.Error.WriteLine("--model and --data go together: a Hugging Face model directory and a JSONL file (text, or prompt + response).");
            return 2;
        }
        Directory.CreateDirectory(runDirectory);
        if (modelPath is not null) return RealData(modelPath, dataPath!, runDirectory, output);
        outcome = PassKey(runDirectory, fast, args, Arg, output);
        return 0;
    }

    static PassKeyOutcome PassKey(string runDirectory, bool fast, string[] args, Func<string, string?> Arg, TextWriter output)
    {
        string modelPath = Path.Combine(runDirectory, "tiny-model");
        output.WriteLine($"Writing a random tiny Llama (2 layers, GQA, GPT-2 tokenizer) to {modelPath} ...");
        int hidden = int.Parse(Arg("--hidden-size") ?? "64");
        TinyModel.Write(modelPath, new TinyModelSpec { Layers = 2, HiddenSize = hidden, Heads = 4, KeyValueHeads = 2, IntermediateSize = 2 * hidden, Seed = 1 });

        int sentences = int.Parse(Arg("--sentences") ?? (fast ? "12" : "20"));
        var train = PassKeyTask.Documents(int.Parse(Arg("--documents") ?? (fast ? "24" : "200")), sentences, seed: 1);
        var test = PassKeyTask.Documents(fast ? 10 : 50, sentences, seed: 2);
        var ml = new MLContext(seed: 1);
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info && e.Source.StartsWith("ChunkwiseLora", StringComparison.Ordinal)) output.WriteLine("  " + e.Message); };

        var options = new ChunkwiseLoraTrainer.Options
        {
            ModelPath = modelPath,
            PromptColumnName = nameof(PassKeyDocument.Prompt),
            ResponseColumnName = nameof(PassKeyDocument.Response),
            ChunkSize = int.Parse(Arg("--chunk-size") ?? "32"),
            SampledChunks = int.Parse(Arg("--sampled-chunks") ?? "3"), // SpaCO: that many chunks per document get backpropagated
            Sampler = ChunkSampler.Bernoulli,        // exactly unbiased estimate (see docs/ALGORITHM.md)
            LoraRank = int.Parse(Arg("--lora-rank") ?? "16"),
            // A random tiny model knows nothing for a low-rank adapter to adapt, so the demo trains every weight;
            // --lora shows the adapter path (the stage's default, and the right choice for real checkpoints).
            FullFineTuning = !args.Contains("--lora"),
            LoraAlpha = 32,
            LoraTargetModules = new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
            MaxSequenceLength = 2048,
            LearningRate = double.Parse(Arg("--lr") ?? "3e-3", System.Globalization.CultureInfo.InvariantCulture),
            WarmupSteps = 10,
            MaxEpoch = int.Parse(Arg("--epochs") ?? (fast ? "1" : "12")),
            BatchSize = 4,
            Device = "auto",
            MaxNewTokens = 1,
        };
        var tokenizer = ModelTokenizer.Load(modelPath);
        int chunks = (int)Math.Ceiling(tokenizer.Encode(test[0].Prompt + test[0].Response, addBos: true).Count / (double)options.ChunkSize);
        output.WriteLine($"Task: {train.Length} training documents of ~{chunks} chunks of {options.ChunkSize} tokens; the pass key sits in chunk 1, " +
                         $"the question at the end. Chance accuracy {PassKeyTask.ChanceAccuracy:P0}.");

        var (accuracyBefore, perplexityBefore) = Measure(modelPath, tokenizer, test);
        output.WriteLine($"Before fine-tuning: pass-key accuracy {accuracyBefore:P0}, answer perplexity {perplexityBefore:F1}");

        var pipeline = ml.Transforms.Text.ChunkwiseLora(options);
        using var model = pipeline.Fit(ml.Data.LoadFromEnumerable(train));

        var scored = model.Transform(ml.Data.LoadFromEnumerable(test));
        var completions = scored.GetColumn<string>("Completion").ToArray();
        double accuracyAfter = KeyAccuracy(model.Model, tokenizer, test);
        var nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
        var tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
        double perplexityAfter = Math.Exp(nll.Zip(tokens).Sum(p => p.First * p.Second) / tokens.Sum());
        output.WriteLine($"After fine-tuning:  pass-key accuracy {accuracyAfter:P0}, answer perplexity {perplexityAfter:F1}");
        output.WriteLine($"Example: ...{test[0].Prompt[^60..]} -> \"{completions[0]}\" (key: {test[0].Key})");

        Report(model, ml, runDirectory, output);
        var history = model.TrainingSummary!.History;
        return new PassKeyOutcome(accuracyBefore, accuracyAfter, perplexityBefore, perplexityAfter, history[0].Loss, history[^1].Loss);
    }

    /// <summary>The base model's pass-key accuracy and its perplexity on the answers (before any training).</summary>
    static (double Accuracy, double Perplexity) Measure(string modelPath, ModelTokenizer tokenizer, PassKeyDocument[] documents)
    {
        using var model = ModelDirectory.Load(modelPath, global::TorchSharp.torch.ScalarType.Float32, TensorSettings.ResolveDevice("auto"));
        double nll = 0;
        long count = 0;
        foreach (var document in documents)
        {
            var score = Evaluation.ScoreDocument(model, tokenizer, new PromptResponseDocument(document.Prompt, document.Response), chunkSize: 64, maxSequenceLength: 4096);
            nll += score.SumNll;
            count += score.Tokens;
        }
        return (KeyAccuracy(model, tokenizer, documents), Math.Exp(nll / count));
    }

    /// <summary>
    /// How often the model ranks the right key first among the ten candidates after the question: a multiple-choice
    /// reading of the next-token distribution, which isolates retrieval from the tiny model's other weaknesses.
    /// </summary>
    static double KeyAccuracy(CausalLM model, ModelTokenizer tokenizer, PassKeyDocument[] documents)
    {
        var keyIds = PassKeyTask.KeyWords.Select(k => tokenizer.Encode(" " + k, addBos: false).Single()).ToArray();
        using var candidates = global::TorchSharp.torch.tensor(keyIds.Select(i => (long)i).ToArray(), device: model.Device);
        int correct = 0;
        foreach (var document in documents)
        {
            using var scope = global::TorchSharp.torch.NewDisposeScope();
            using var _ = global::TorchSharp.torch.no_grad();
            var ids = tokenizer.Encode(document.Prompt, addBos: true);
            using var cache = new KvCache(model.Config, 1, ids.Count, model.DType, model.Device);
            var input = global::TorchSharp.torch.tensor(ids.Select(t => (long)t).ToArray(), new long[] { 1, ids.Count }, device: model.Device);
            global::TorchSharp.torch.Tensor? last = null;
            foreach (var chunk in model.Prefill(input, cache, blockSize: 64))
                last = chunk.Hidden.narrow(1, chunk.Length - 1, 1).MoveToOuterDisposeScope();
            long choice = model.Logits(last!).reshape(-1).index_select(0, candidates).argmax().item<long>();
            if (PassKeyTask.KeyWords[(int)choice] == document.Key) correct++;
        }
        return correct / (double)documents.Length;
    }

    static int RealData(string modelPath, string dataPath, string runDirectory, TextWriter output)
    {
        var ml = new MLContext(seed: 1);
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info && e.Source.StartsWith("ChunkwiseLora", StringComparison.Ordinal)) output.WriteLine("  " + e.Message); };
        var data = JsonlDocuments.LoadDataView(ml, dataPath);
        bool promptResponse = data.Schema.GetColumnOrNull("Prompt") is not null;
        var split = ml.Data.TrainTestSplit(data, testFraction: 0.1, seed: 1);
        var options = new ChunkwiseLoraTrainer.Options
        {
            ModelPath = modelPath,
            TextColumnName = "Text",
            PromptColumnName = promptResponse ? "Prompt" : null,
            ResponseColumnName = promptResponse ? "Response" : null,
            ChunkSize = 128,
            SampledChunks = 8,
            MaxCompensation = 2,
            MaxSequenceLength = 16384,
            LearningRate = 1e-4,
            GradientAccumulationSteps = 4,
            ValidationSet = split.TestSet,
        };
        using var model = ml.Transforms.Text.ChunkwiseLora(options).Fit(split.TrainSet);
        var perplexity = model.Transform(split.TestSet).GetColumn<float>("Perplexity").Where(float.IsFinite).DefaultIfEmpty(float.NaN).Average();
        output.WriteLine($"Held-out mean perplexity: {perplexity:F2}");
        Report(model, ml, runDirectory, output);
        return 0;
    }

    static void Report(ChunkwiseLoraTransformer model, MLContext ml, string runDirectory, TextWriter output)
    {
        var history = model.TrainingSummary!.History;
        output.WriteLine($"Loss curve ({history.Count} steps): {Sparkline(history.Select(h => h.Loss).ToArray())}  {history[0].Loss:F3} -> {history[^1].Loss:F3}");
        string curve = Path.Combine(runDirectory, "loss.csv");
        File.WriteAllLines(curve, history.Select(h => $"{h.Step},{h.Loss:R},{h.LearningRate:R},{h.TokensPerSecond:F1}").Prepend("step,loss,learning_rate,tokens_per_second"));
        string saved = Path.Combine(runDirectory, "model.seco"), adapter = Path.Combine(runDirectory, "adapter");
        model.Save(ml, saved);
        if (model.Settings.FullFineTuning)
        {
            adapter = Path.Combine(runDirectory, "merged");
            model.SaveMerged(adapter);
        }
        else model.SaveAdapter(adapter);
        output.WriteLine($"Saved: {saved} (SecoModel.Load), {(model.Settings.FullFineTuning ? "Hugging Face checkpoint" : "PEFT adapter")}: {adapter}, loss curve: {curve}");
    }

    static string Sparkline(double[] values)
    {
        const string bars = "▁▂▃▄▅▆▇█";
        int width = Math.Min(60, values.Length);
        double min = values.Min(), max = values.Max();
        return new string(Enumerable.Range(0, width).Select(i =>
        {
            double v = values[(int)((long)i * values.Length / width)];
            return bars[max > min ? (int)Math.Round((v - min) / (max - min) * (bars.Length - 1)) : 0];
        }).ToArray());
    }
}
