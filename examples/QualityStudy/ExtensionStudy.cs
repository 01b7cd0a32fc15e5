using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Examples.QualityStudy;

/// <summary>
/// A rotary setting of the context-extension study: none, or linear / YaRN scaling by the extension's factor
/// (extension length / pretraining length), YaRN with the pretraining length as its original context.
/// </summary>
/// <param name="Id">File-name slug.</param>
/// <param name="Label">Table and legend label.</param>
/// <param name="Scaling">What the stage's <see cref="ChunkwiseLoraTrainer.Options.RopeScaling"/> is set to.</param>
public sealed record RopeArm(string Id, string Label, RopeScalingType Scaling)
{
    /// <summary>The study's rotary settings, in table order.</summary>
    public static readonly IReadOnlyList<RopeArm> All =
    [
        new("none", "no scaling", RopeScalingType.None),
        new("linear", "linear", RopeScalingType.Linear),
        new("yarn", "YaRN", RopeScalingType.Yarn),
    ];

    /// <summary>The scaling factor: how many times the pretraining length the extension trains at.</summary>
    public static double Factor(StudySettings s) => (double)s.Length / s.PretrainLength;

    /// <summary>Sets the stage's rotary options for this arm.</summary>
    public void Apply(ChunkwiseLoraTrainer.Options options, StudySettings s)
    {
        options.RopeScaling = Scaling;
        options.RopeFactor = Scaling == RopeScalingType.None ? null : Factor(s);
        options.RopeOriginalMaxPositionEmbeddings = Scaling == RopeScalingType.Yarn ? s.PretrainLength : null;
    }

    /// <summary>The base model's config with this arm's scaling, exactly as the stage would train it: the "before" model of the arm.</summary>
    public ModelConfig Config(string baseModel, StudySettings s)
    {
        var options = new ChunkwiseLoraTrainer.Options { ModelPath = baseModel, MaxSequenceLength = s.EvaluationLength };
        Apply(options, s);
        return options.ApplyRope(ModelConfig.Load(baseModel)).Config;
    }
}

/// <summary>One model of the context-extension study: a rotary setting, and a training method or none (the base model with that setting).</summary>
/// <param name="Rope">The rotary setting.</param>
/// <param name="Method">The extension's method; null = no training.</param>
public sealed record ExtensionArm(RopeArm Rope, Method? Method)
{
    /// <summary>The methods each rotary setting is extended with: SeCO, and the best SpaCO variant of the main study (1/4 fixed, loss-only).</summary>
    public static IReadOnlyList<Method> Methods => [.. Method.All.Where(m => m.Id is "seco" or "fixed4-loss")];

    /// <summary>The study's models, in table order: for each rotary setting the base model, then each method.</summary>
    public static IReadOnlyList<ExtensionArm> All =>
        [.. RopeArm.All.SelectMany(r => Methods.Select(m => new ExtensionArm(r, m)).Prepend(new ExtensionArm(r, null)))];

    /// <summary>File-name slug.</summary>
    public string Id => $"{Rope.Id}_{Method?.Id ?? "base"}";

    /// <summary>Table and legend label.</summary>
    public string Label => $"{Rope.Label}, {(Method is null ? "before (base model)" : Method.Label)}";
}

/// <summary>What one model of the context-extension study measured; written as JSON last, so its presence marks it complete.</summary>
/// <param name="Id">The arm's id.</param>
/// <param name="LearningRate">The extension's learning rate (0 for the base model).</param>
/// <param name="Updates">Updates run.</param>
/// <param name="TrainSeconds">Training time.</param>
/// <param name="Loss">Training loss per update.</param>
/// <param name="Sotu">Held-out SOTU NLL at <see cref="StudySettings.EvaluationLength"/>.</param>
/// <param name="MobyDick">Moby-Dick NLL at <see cref="StudySettings.EvaluationLength"/>.</param>
public sealed record ExtensionResult(string Id, double LearningRate, int Updates, double TrainSeconds, double[] Loss, HeldOutNll Sotu, HeldOutNll MobyDick)
{
    /// <summary>Mean training loss over the last quarter of updates (NaN for the base model).</summary>
    public double FinalLoss => Loss.Length == 0 ? double.NaN : Loss.Skip(Loss.Length - Math.Max(1, Loss.Length / 4)).Average();
}

/// <summary>
/// The context-extension study (issue #26, docs/QUALITY.md): the base model pretrained at
/// <see cref="StudySettings.PretrainLength"/> is extended to <see cref="StudySettings.Length"/> with each rotary setting
/// of <see cref="RopeArm.All"/> by SeCO and by SpaCO, and every model, before and after, is scored by position on
/// held-out text at twice the extension's length and on a needle-in-a-haystack grid whose haystack is the held-out
/// addresses.
/// </summary>
public static class ExtensionStudy
{
    /// <summary>The extensions' learning rate: the best of the main study's grid for both methods (no grid is run here).</summary>
    public const double LearningRate = 1e-2;

    /// <summary>The arm's needle results file.</summary>
    public static string NeedlePath(string output, ExtensionArm arm) => Path.Combine(output, arm.Id + "-needle.json");

    /// <summary>The completed result of <paramref name="arm"/>, or null.</summary>
    public static ExtensionResult? Completed(string output, ExtensionArm arm)
    {
        string path = Path.Combine(output, arm.Id + ".json");
        return File.Exists(path) ? JsonSerializer.Deserialize<ExtensionResult>(File.ReadAllText(path), StudyRuns.Json) : null;
    }

    /// <summary>
    /// Trains (unless the arm is a base model) and scores one arm, writing its needle grid (JSON, CSV) and then its
    /// result. A completed arm is skipped.
    /// </summary>
    public static void Run(string baseModel, StudyData data, StudySettings s, ExtensionArm arm, string output, TextWriter log)
    {
        if (Completed(output, arm) is not null) return;
        var loss = new List<double>();
        var seconds = new List<double>();
        ChunkwiseLoraTransformer? stage = null;
        CausalLM? baseWithRope = null;
        try
        {
            CausalLM model;
            ModelTokenizer tokenizer;
            if (arm.Method is { } method)
            {
                log.WriteLine($"  {arm.Id}: extending to {s.Length} tokens ({s.Updates} updates, lr {LearningRate}) ...");
                stage = StudyRuns.Fit(new MLContext(seed: 0), baseModel, data, s, method, LearningRate, seed: 0, loss, seconds, arm.Rope);
                (model, tokenizer) = (stage.Model, stage.Tokenizer);
            }
            else
            {
                baseWithRope = ModelDirectory.Load(baseModel, arm.Rope.Config(baseModel, s), ScalarType.Float32, CPU);
                (model, tokenizer) = (baseWithRope, ModelTokenizer.Load(baseModel));
            }
            var evaluation = s with { Length = s.EvaluationLength };
            var (sotu, moby) = data.HeldOutWindows(s.EvaluationLength, s.HeldOutWindows);
            var needle = NeedleStudy.Run(model, tokenizer, string.Join("\n\n", data.HeldOutAddresses), new NeedleStudyOptions
            {
                Lengths = s.NeedleLengths, Depths = s.NeedleDepths, Variant = NeedleVariant.Needle, Seed = 0, ChunkSize = s.ChunkSize,
            });
            needle.WriteJson(NeedlePath(output, arm));
            needle.WriteCsv(Path.ChangeExtension(NeedlePath(output, arm), ".csv"));
            var result = new ExtensionResult(arm.Id, arm.Method is null ? 0 : LearningRate, loss.Count, seconds.LastOrDefault(), [.. loss],
                StudyRuns.Evaluate(model, tokenizer, sotu, evaluation), StudyRuns.Evaluate(model, tokenizer, moby, evaluation));
            StudyRuns.Write(Path.Combine(output, arm.Id + ".json"), result);
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {arm.Id}: SOTU NLL {result.Sotu.Within:F3} (positions < {s.PretrainLength}) / {Range(result.Sotu, s.PretrainLength, s.Length):F3} / {Range(result.Sotu, s.Length, s.EvaluationLength):F3} (≥ {s.Length}); " +
                $"needle exact match {needle.Accuracy:P0} ({DateTime.UtcNow:HH:mm:ss} UTC)"));
        }
        finally
        {
            stage?.Dispose();
            baseWithRope?.Dispose();
        }
    }

    /// <summary>
    /// Mean NLL of positions [<paramref name="from"/>, <paramref name="to"/>) from the per-bucket means: exact, as every
    /// scored window has the same length, so every position of a bucket has the same number of tokens; both bounds
    /// are multiples of <see cref="StudyRuns.BucketSize"/>.
    /// </summary>
    public static double Range(HeldOutNll nll, int from, int to)
    {
        int size = StudyRuns.BucketSize;
        if (from % size != 0 || to % size != 0) throw new ArgumentException($"Range bounds must be multiples of {size}; got [{from}, {to}).");
        // Bucket 0 scores positions 1 to size − 1: position 0 has no prediction.
        double weighted = 0, positions = 0;
        for (int b = from / size; b < to / size; b++)
        {
            int n = b == 0 ? size - 1 : size;
            weighted += nll.Buckets[b] * n;
            positions += n;
        }
        return weighted / positions;
    }
}
