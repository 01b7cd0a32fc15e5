using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Examples.QualityStudy;

/// <summary>A row of the training data view.</summary>
public sealed class Document
{
    /// <summary>The text.</summary>
    public string Text = "";
}

/// <summary>Mean NLL of held-out windows, within the base model's training length and beyond it, and per position bucket.</summary>
/// <param name="Within">Mean NLL (nats/token) of tokens at positions 1 to PretrainLength − 1.</param>
/// <param name="Beyond">Mean NLL of tokens at positions PretrainLength and later.</param>
/// <param name="Buckets">Mean NLL per bucket of <see cref="StudyRuns.BucketSize"/> positions.</param>
public sealed record HeldOutNll(double Within, double Beyond, double[] Buckets);

/// <summary>What one (method, learning rate, seed) run measured; written as JSON when the run completes.</summary>
public sealed record RunResult(string Method, double LearningRate, int Seed, int Updates, double TrainSeconds,
    double[] Loss, double[] Seconds, HeldOutNll Sotu, HeldOutNll MobyDick)
{
    /// <summary>Mean training loss over the last quarter of updates: every update sees a new window, so it is a held-out estimate too.</summary>
    [JsonIgnore]
    public double FinalLoss => Loss.Skip(Loss.Length - Math.Max(1, Loss.Length / 4)).Average();
}

/// <summary>The base model, the extension runs and the held-out evaluation, all through the library's public API.</summary>
public static class StudyRuns
{
    /// <summary>Positions per bucket of the per-position curves.</summary>
    public const int BucketSize = 256;
    /// <summary>The result files' JSON settings: a diverged run's losses and scores are NaN, which JSON has no number for, so they are written as "NaN".</summary>
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>File name of a run's results.</summary>
    public static string RunId(Method method, double learningRate, int seed) =>
        $"{method.Id}_lr{learningRate.ToString("0.####", CultureInfo.InvariantCulture)}_s{seed}";

    /// <summary>
    /// The pretrained base model: a random tiny Llama (the library's <see cref="TinyModel"/>) with the byte-level
    /// tokenizer, fully fine-tuned by the ML.NET stage on short windows. Cached under <paramref name="cache"/> by the
    /// settings' key; pretraining resumes from its checkpoint when a previous piece was stopped by the time budget.
    /// Returns null when stopped before the end.
    /// </summary>
    public static string? EnsureBaseModel(StudySettings s, StudyData data, string cache, string output, CancellationToken budget, TextWriter log)
    {
        string directory = Path.Combine(cache, "base-" + s.BaseModelKey);
        string work = directory + ".work", init = Path.Combine(work, "init"), checkpoints = Path.Combine(work, "checkpoints");
        var curve = Path.Combine(work, "pretrain.csv");
        if (File.Exists(Path.Combine(directory, "config.json")))
        {
            CopyCurve(curve, Path.Combine(output, "pretrain.csv"));
            return directory;
        }
        if (!File.Exists(Path.Combine(init, "config.json")))
        {
            TinyModel.Write(init, new TinyModelSpec
            {
                Layers = s.Layers, HiddenSize = s.HiddenSize, Heads = s.Heads, KeyValueHeads = s.Heads,
                IntermediateSize = s.IntermediateSize, WithTokenizer = false, Seed = 0,
            });
            TokenizerFiles.WriteBytes(init);
        }
        log.WriteLine($"Pretraining the base model ({s.Layers} layers, hidden {s.HiddenSize}, context {s.PretrainLength}, " +
            $"{s.PretrainSteps} steps of {s.PretrainBatch} sequences; resumable) ...");
        var ml = new MLContext(seed: 0);
        var progress = new Recorder(p =>
        {
            File.AppendAllText(curve, string.Create(CultureInfo.InvariantCulture, $"{p.Step},{p.Loss:F5},{p.LearningRate:E3}\n"));
            if (p.Step % 50 == 0) log.WriteLine($"  pretraining step {p.Step}/{p.TotalSteps} loss {p.Loss:F3} ({p.Elapsed:mm\\:ss} this piece)");
        });
        using var stage = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
        {
            ModelPath = init, FullFineTuning = true, Device = "cpu",
            MaxSequenceLength = s.PretrainLength, ChunkSize = s.PretrainLength, BatchSize = s.PretrainBatch,
            MaxSteps = s.PretrainSteps, LearningRate = s.PretrainLearningRate, WarmupRatio = 0.05,
            FinalLearningRateRatio = 0.1, Beta2 = 0.95, WeightDecay = 0.05, MaxGradNorm = 1.0, Seed = 0,
            CheckpointDirectory = checkpoints, CheckpointEverySteps = 50,
            Progress = progress, CancellationToken = budget,
        }).Fit(ml.Data.LoadFromEnumerable(data.Pretraining.Select(t => new Document { Text = t })));
        if (stage.TrainingSummary is { Cancelled: true }) return null;
        string staging = directory + ".staging";
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        stage.SaveMerged(staging);
        Directory.Move(staging, directory);
        CopyCurve(curve, Path.Combine(output, "pretrain.csv"));
        return directory;
    }

    // Pretraining that resumed from a checkpoint reports the steps after it again: the last report of a step wins.
    static void CopyCurve(string curve, string target)
    {
        if (!File.Exists(curve) || File.Exists(target)) return;
        var byStep = new SortedDictionary<int, string>();
        foreach (string line in File.ReadLines(curve))
            byStep[int.Parse(line[..line.IndexOf(',')], CultureInfo.InvariantCulture)] = line;
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.WriteAllLines(target, byStep.Values.Prepend("step,loss,learning_rate"));
    }

    /// <summary>
    /// Per-position NLL of <paramref name="windows"/> (each exactly Length tokens with BOS) under
    /// <paramref name="model"/>, chunk by chunk through <see cref="Evaluation.TokenNll"/>.
    /// </summary>
    public static HeldOutNll Evaluate(CausalLM model, ModelTokenizer tokenizer, IReadOnlyList<string> windows, StudySettings s)
    {
        var builder = new SequenceBuilder(s.Length, SequenceOverflow.Truncate);
        var sums = new double[s.Length];
        var counts = new long[s.Length];
        var examples = windows.SelectMany(w => builder.FromText(tokenizer, w));
        foreach (var batch in Batching.Batches(examples, 2, tokenizer.PadId ?? tokenizer.EosId ?? 0, model.Device))
        {
            using (batch)
            {
                foreach (var row in Evaluation.TokenNll(model, batch, s.ChunkSize))
                    for (int i = 0; i < row.Length; i++)
                    {
                        sums[i + 1] += row[i]; // entry i predicts the token at position i + 1
                        counts[i + 1]++;
                    }
            }
        }
        double Mean(int from, int to) => Enumerable.Range(from, to - from).Sum(p => sums[p]) / Math.Max(1, Enumerable.Range(from, to - from).Sum(p => counts[p]));
        var buckets = Enumerable.Range(0, s.Length / BucketSize).Select(b => Mean(Math.Max(1, b * BucketSize), (b + 1) * BucketSize)).ToArray();
        return new HeldOutNll(Mean(1, s.PretrainLength), Mean(s.PretrainLength, s.Length), buckets);
    }

    /// <summary>
    /// The base model on the held-out windows (no training), cached as base.json in the output folder. Its Loss holds
    /// the base model's mean NLL on each extension window, in training order: a run's loss at update i minus it is what
    /// the run has gained on that very window, which takes the windows' differing difficulty out of the curves.
    /// </summary>
    public static RunResult BaseResult(string baseModel, StudyData data, StudySettings s, string output)
    {
        string path = Path.Combine(output, "base.json");
        if (File.Exists(path)) return JsonSerializer.Deserialize<RunResult>(File.ReadAllText(path), Json)!;
        var tokenizer = ModelTokenizer.Load(baseModel);
        using var model = ModelDirectory.Load(baseModel, ScalarType.Float32, CPU);
        var builder = new SequenceBuilder(s.Length, SequenceOverflow.Truncate);
        var windowLoss = new List<double>();
        foreach (var batch in Batching.Batches(data.Extension.SelectMany(w => builder.FromText(tokenizer, w)), 2, tokenizer.PadId ?? tokenizer.EosId ?? 0, model.Device))
        {
            using (batch)
            {
                var (sums, tokens) = Evaluation.SequenceNll(model, batch, s.ChunkSize);
                windowLoss.AddRange(sums.Zip(tokens, (sum, n) => sum / n));
            }
        }
        var result = new RunResult("base", 0, 0, 0, 0, windowLoss.ToArray(), [],
            Evaluate(model, tokenizer, data.HeldOutSotu, s), Evaluate(model, tokenizer, data.HeldOutMobyDick, s));
        Write(path, result);
        return result;
    }

    /// <summary>
    /// One extension run: LoRA (r 8, α 16 on q_proj and v_proj, the paper's) through the ML.NET stage with the paper's
    /// optimiser settings (docs/PAPER-SETTINGS.md), batch 1, one update per window, the same windows in the same order
    /// for every run; then the held-out evaluation of the fitted stage's model. Writes the loss curve (CSV) and the
    /// result (JSON, last, so that its presence marks the run as complete).
    /// </summary>
    public static RunResult Run(string baseModel, StudyData data, StudySettings s, Method method, double learningRate, int seed, string output, TextWriter log)
    {
        string id = RunId(method, learningRate, seed);
        var loss = new List<double>();
        var seconds = new List<double>();
        var ml = new MLContext(seed: seed);
        ChunkwiseLoraTransformer stage;
        try
        {
            stage = Fit(ml, baseModel, data, s, method, learningRate, seed, loss, seconds);
        }
        catch (TrainingDivergedException e)
        {
            // Too high a rate for this method: recorded as diverged (NaN), so the grid picks another rate.
            log.WriteLine($"  {id}: diverged at update {e.Step} ({e.Reason}).");
            var nan = new HeldOutNll(double.NaN, double.NaN, Enumerable.Repeat(double.NaN, s.Length / BucketSize).ToArray());
            var diverged = new RunResult(method.Id, learningRate, seed, loss.Count, seconds.LastOrDefault(), [.. loss, double.NaN], [.. seconds, double.NaN], nan, nan);
            Write(Path.Combine(output, id + ".json"), diverged);
            return diverged;
        }
        using var _ = stage;
        var result = new RunResult(method.Id, learningRate, seed, loss.Count, seconds.LastOrDefault(), loss.ToArray(), seconds.ToArray(),
            Evaluate(stage.Model, stage.Tokenizer, data.HeldOutSotu, s), Evaluate(stage.Model, stage.Tokenizer, data.HeldOutMobyDick, s));
        var csv = new StringBuilder("update,loss,elapsed_seconds\n");
        for (int i = 0; i < loss.Count; i++) csv.Append(CultureInfo.InvariantCulture, $"{i + 1},{loss[i]:F5},{seconds[i]:F2}\n");
        File.WriteAllText(Path.Combine(output, id + ".csv"), csv.ToString());
        Write(Path.Combine(output, id + ".json"), result);
        log.WriteLine($"  {id}: final loss {result.FinalLoss:F4}, {result.TrainSeconds:F0} s training, held-out NLL beyond {s.PretrainLength}: " +
            $"SOTU {result.Sotu.Beyond:F4}, Moby-Dick {result.MobyDick.Beyond:F4} ({DateTime.UtcNow:HH:mm:ss} UTC)");
        return result;
    }

    /// <summary>
    /// Fits the stage for one run (the settings of <see cref="Run"/>), recording each update's loss and elapsed
    /// seconds; <paramref name="rope"/>, when given, sets the run's rotary scaling.
    /// </summary>
    public static ChunkwiseLoraTransformer Fit(MLContext ml, string baseModel, StudyData data, StudySettings s, Method method, double learningRate, int seed,
        List<double> loss, List<double> seconds, RopeArm? rope = null)
    {
        var options = new ChunkwiseLoraTrainer.Options
        {
            ModelPath = baseModel, Device = "cpu",
            MaxSequenceLength = s.Length, Overflow = SequenceOverflow.Truncate, ChunkSize = s.ChunkSize,
            SampledChunks = method.SampledChunks(s.Chunks), Sampler = method.Sampler, Compensation = method.Compensation,
            CrossChunkGradients = method.CrossChunkGradients,
            LoraRank = 8, LoraAlpha = 16, LoraTargetModules = ["q_proj", "v_proj"],
            MaxSteps = s.Updates, LearningRate = learningRate, WarmupRatio = 0.01,
            Beta1 = 0.9, Beta2 = 0.95, Epsilon = 1e-8, WeightDecay = 0.05, MaxGradNorm = null, Seed = seed,
            Progress = new Recorder(p => { loss.Add(p.Loss); seconds.Add(p.Elapsed.TotalSeconds); }),
        };
        rope?.Apply(options, s);
        return ml.Transforms.Text.ChunkwiseLora(options).Fit(ml.Data.LoadFromEnumerable(data.Extension.Select(t => new Document { Text = t })));
    }

    /// <summary>The completed run with this id, or null.</summary>
    public static RunResult? Completed(string output, string id)
    {
        string path = Path.Combine(output, id + ".json");
        return File.Exists(path) ? JsonSerializer.Deserialize<RunResult>(File.ReadAllText(path), Json) : null;
    }

    /// <summary>Writes <paramref name="result"/> as JSON through a temporary file.</summary>
    public static void Write<T>(string path, T result)
    {
        // Through a temporary file: a run killed by the time limit leaves no result that looks complete.
        File.WriteAllText(path + ".tmp", JsonSerializer.Serialize(result, Json));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>Progress reports handled synchronously on the training thread (Progress&lt;T&gt; would post them elsewhere).</summary>
    sealed class Recorder(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
