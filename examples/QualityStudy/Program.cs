// The quality study of docs/QUALITY.md: a miniature of the SeCO/SpaCO paper's Figure 7 on public-domain text.
// A tiny Llama pretrained at a short context is extended to a long one with LoRA by SeCO, SpaCO (fixed budget with
// loss-only and loss-and-cache compensation, Bernoulli) and an ablation without cross-chunk gradients; every run goes
// through the library's ML.NET stage, and is scored on held-out addresses and on Moby-Dick position by position.
// --context-extension runs the second study instead: the same base model extended with and without linear/YaRN RoPE
// scaling by SeCO and SpaCO, scored by position and on needle-in-a-haystack grids before and after (ExtensionStudy).
//
//   dotnet run --project examples/QualityStudy -c Release [-- --quick] [--context-extension] [--budget-minutes M] [--output DIR] [--report-only]
//
// Resumable: each (method, learning rate, seed) run writes its results when it completes and a rerun skips it;
// --budget-minutes stops starting runs (and pauses pretraining at a checkpoint) once that much time has passed.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Examples.QualityStudy;

var settings = StudySettings.Full;
string? output = null;
double? budgetMinutes = null;
bool reportOnly = false;
bool contextExtension = false;
for (int i = 0; i < args.Length; i++)
{
    string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
    switch (args[i])
    {
        case "--quick": settings = StudySettings.Quick; break;
        case "--output": output = Value(); break;
        case "--budget-minutes":
            string text = Value();
            budgetMinutes = double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double m) && m > 0 ? m
                : throw new ArgumentException($"--budget-minutes must be a positive number of minutes; got '{text}'.");
            break;
        case "--report-only": reportOnly = true; break;
        case "--context-extension": contextExtension = true; break;
        default:
            Console.Error.WriteLine($"Unknown argument '{args[i]}'. Usage: QualityStudy [--quick] [--context-extension] [--budget-minutes M] [--output DIR] [--report-only]");
            return 2;
    }
}

string datasets = LongTextCorpus.DefaultCacheDirectory(); // <repository>/.cache/datasets
string root = Path.GetDirectoryName(Path.GetDirectoryName(datasets)!)!;
string cache = Path.Combine(root, ".cache", "quality-study");
// The full study's results are committed under docs/quality; a quick run's stay in the ignored cache.
output ??= settings.Name == "full" ? Path.Combine(root, "docs", "quality") : Path.Combine(cache, "quick-results");
output = Path.GetFullPath(output);
string runs = Path.Combine(output, "runs");
Directory.CreateDirectory(runs);

var clock = Stopwatch.StartNew();
using var budget = new CancellationTokenSource();
if (budgetMinutes is double minutes) budget.CancelAfter(TimeSpan.FromMinutes(minutes));
bool OutOfTime(double nextRunSeconds) =>
    budgetMinutes is double limit && clock.Elapsed.TotalSeconds + nextRunSeconds > limit * 60;

Console.WriteLine($"Quality study ({settings.Name}): results in {output}");
var data = StudyData.Load(settings, datasets);
Console.WriteLine($"Data: {data.Addresses.Pretraining} addresses for pretraining ({data.Pretraining.Count} windows of {settings.PretrainLength} tokens), " +
    $"{data.Addresses.Extension} for the extension ({data.Extension.Count} windows of {settings.Length}), {data.Addresses.HeldOut} held out " +
    $"({data.HeldOutSotu.Count} windows scored); Moby-Dick: {data.HeldOutMobyDick.Count} windows scored.");

string? EnsureBaseModel()
{
    string? directory = StudyRuns.EnsureBaseModel(settings, data, cache, output, budget.Token, Console.Out);
    if (directory is null) Console.WriteLine("Time budget reached during pretraining; run the same command again to resume from its checkpoint.");
    return directory;
}

if (contextExtension)
{
    string extension = Path.Combine(output, "extension");
    Directory.CreateDirectory(extension);
    bool complete = true;
    if (!reportOnly)
    {
        if (EnsureBaseModel() is not string baseModel) return 0;
        foreach (var arm in ExtensionArm.All)
        {
            // A base model's arm takes seconds; an extension, about as long as the main study's run of its method.
            if (ExtensionStudy.Completed(extension, arm) is null && arm.Method is not null && OutOfTime(240)) { complete = false; break; }
            ExtensionStudy.Run(baseModel, data, settings, arm, extension, Console.Out);
        }
    }
    ExtensionReport.Write(extension, settings, partial: !complete || ExtensionArm.All.Any(a => ExtensionStudy.Completed(extension, a) is null));
    Console.WriteLine(complete
        ? $"Report: {Path.Combine(extension, "summary.md")} ({clock.Elapsed:mm\\:ss})."
        : $"Time budget reached after {clock.Elapsed:mm\\:ss}; run the same command again to continue (completed arms are kept).");
    return 0;
}

if (!reportOnly)
{
    if (EnsureBaseModel() is not string baseModel) return 0;
    StudyRuns.BaseResult(baseModel, data, settings, runs);

    // The grid on the first seed, then the other seeds at each method's best rate (by final training loss).
    var durations = new Dictionary<string, double>();
    double Estimate(Method m) => durations.TryGetValue(m.Id, out double d) ? d : durations.Values.DefaultIfEmpty(0).Max();
    bool RunOrSkip(Method method, double lr, int seed)
    {
        string id = StudyRuns.RunId(method, lr, seed);
        if (StudyRuns.Completed(runs, id) is { } done)
        {
            durations.TryAdd(method.Id, done.TrainSeconds * 1.3 + 10);
            return true;
        }
        if (OutOfTime(Estimate(method))) return false;
        var started = clock.Elapsed;
        StudyRuns.Run(baseModel, data, settings, method, lr, seed, runs, Console.Out);
        durations[method.Id] = (clock.Elapsed - started).TotalSeconds;
        return true;
    }
    bool complete = true;
    foreach (double lr in settings.LearningRates)
        foreach (var method in Method.All)
            complete &= RunOrSkip(method, lr, settings.Seeds[0]);
    foreach (int seed in settings.Seeds.Skip(1))
        foreach (var method in Method.All)
        {
            if (StudyReport.BestLearningRate(runs, method, settings) is not double best) { complete = false; continue; }
            complete &= RunOrSkip(method, best, seed);
        }
    if (!complete)
    {
        Console.WriteLine($"Time budget reached after {clock.Elapsed:mm\\:ss}; run the same command again to continue (completed runs are kept).");
        StudyReport.Write(output, runs, settings, data, partial: true);
        return 0;
    }
}
StudyReport.Write(output, runs, settings, data, partial: false);
Console.WriteLine($"Report: {Path.Combine(output, "summary.md")} ({clock.Elapsed:mm\\:ss}).");
return 0;
