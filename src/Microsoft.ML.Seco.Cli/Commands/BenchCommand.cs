using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Cli.Benchmarks;
using Microsoft.ML.Seco.Model;
using Spectre.Console;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco bench: time and peak memory per training step of each strategy at growing lengths, in one run.</summary>
internal static class BenchCommand
{
    public static Command Create(CliContext context)
    {
        var lengths = new Option<string>("--lengths") { Description = "Comma-separated sequence lengths.", DefaultValueFactory = _ => "1024,2048,4096,8192" };
        var strategies = new Option<string>("--strategies") { Description = "Comma-separated: full, checkpoint, seco, spaco, inference.", DefaultValueFactory = _ => "full,checkpoint,seco,spaco,inference" };
        var baselinesUpTo = new Option<int>("--baselines-up-to") { Description = "Longest length at which the whole-sequence baselines (full, checkpoint) run: their memory and time grow fastest.", DefaultValueFactory = _ => 4096 };
        var chunkSize = new Option<int>("--chunk-size") { Description = "Tokens per chunk.", DefaultValueFactory = _ => 128 };
        var sampled = new Option<int>("--sampled-chunks") { Description = "SpaCO's t (Bernoulli sampler).", DefaultValueFactory = _ => 8 };
        var layers = new Option<int>("--layers") { Description = "Decoder layers of the random benchmark model.", DefaultValueFactory = _ => 4 };
        var hidden = new Option<int>("--hidden-size") { Description = "Hidden size.", DefaultValueFactory = _ => 256 };
        var heads = new Option<int>("--heads") { Description = "Query heads.", DefaultValueFactory = _ => 8 };
        var kvHeads = new Option<int>("--kv-heads") { Description = "Key/value heads.", DefaultValueFactory = _ => 2 };
        var vocab = new Option<int>("--vocab") { Description = "Vocabulary size (kept small by default so that, as in a real LLM, the decoder layers and not the output layer dominate).", DefaultValueFactory = _ => 4096 };
        var steps = new Option<int>("--steps") { Description = "Timed steps per point (after one warm-up step; the median is reported). Memory is measured on one more step.", DefaultValueFactory = _ => 1 };
        var dtype = new Option<string>("--dtype") { Description = "float32, bfloat16 or float64.", DefaultValueFactory = _ => "float32" };
        var csv = new Option<string?>("--csv") { Description = "Also write the points to this CSV file. Default: none." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per point, then a summary, and nothing else." };

        var command = new Command("bench", "Measure time and peak memory per training step of full backprop, layer checkpointing, SeCO and SpaCO (and chunked inference) at growing lengths, on a random LoRA model built in memory.")
        {
            lengths, strategies, baselinesUpTo, chunkSize, sampled, layers, hidden, heads, kvHeads, vocab, steps, dtype, csv, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            var lengthList = ParseList(parse.GetValue(lengths)!, "--lengths").Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 2
                ? n : throw new UsageException($"--lengths: '{s}' is not a length of at least 2.")).ToArray();
            var strategyList = ParseList(parse.GetValue(strategies)!, "--strategies");
            foreach (var s in strategyList.Where(s => !EfficiencyBenchmark.Strategies.Contains(s)))
                throw new UsageException($"--strategies: unknown strategy '{s}'; use {string.Join(", ", EfficiencyBenchmark.Strategies)}.");
            int h = parse.GetValue(hidden), nh = parse.GetValue(heads), kv = parse.GetValue(kvHeads);
            if (h <= 0 || nh <= 0 || h % nh != 0 || kv <= 0 || nh % kv != 0)
                throw new UsageException($"--hidden-size ({h}), --heads ({nh}) and --kv-heads ({kv}) must be positive, heads dividing the hidden size and kv heads dividing heads.");
            if (parse.GetValue(steps) < 1) throw new UsageException("--steps must be at least 1.");
            if (parse.GetValue(chunkSize) < 1 || parse.GetValue(sampled) < 1) throw new UsageException("--chunk-size and --sampled-chunks must be at least 1.");
            var type = TensorSettings.ResolveDType(parse.GetValue(dtype)!, global::TorchSharp.torch.CPU, "--dtype");
            bool asJson = parse.GetValue(json);

            using var model = EfficiencyBenchmark.Model(parse.GetValue(layers), h, nh, kv, parse.GetValue(vocab), type);
            if (!asJson)
                context.Out.WriteLine($"Random LoRA model: {parse.GetValue(layers)} layers, hidden {h}, {nh} heads / {kv} kv heads, vocabulary {parse.GetValue(vocab)}, {TensorSettings.Name(type)}, CPU; chunk {parse.GetValue(chunkSize)}, SpaCO t = {parse.GetValue(sampled)}.");
            var points = new List<BenchmarkPoint>();
            foreach (int length in lengthList)
                foreach (var strategy in strategyList)
                {
                    if (strategy is "full" or "checkpoint" && length > parse.GetValue(baselinesUpTo)) continue;
                    context.CancellationToken.ThrowIfCancellationRequested();
                    var point = EfficiencyBenchmark.Measure(model, strategy, length, parse.GetValue(chunkSize), parse.GetValue(sampled), parse.GetValue(steps));
                    points.Add(point);
                    if (asJson) context.Out.WriteLine(PointJson(point).ToJsonString());
                    else context.Out.WriteLine($"  {strategy,-10} {length,7} tokens  {point.SecondsPerStep,8:F3} s/step  {(point.PeakBytes is long p ? $"{p / 1048576.0,8:F1} MiB" : "       n/a")}");
                }
            if (parse.GetValue(csv) is { } path)
                File.WriteAllLines(path, points.Select(p => string.Create(CultureInfo.InvariantCulture,
                    $"{p.Strategy},{p.Length},{p.SecondsPerStep:R},{p.PeakBytes},{p.Loss:R}")).Prepend("strategy,length,seconds_per_step,peak_bytes,loss"));
            if (asJson) context.Out.WriteLine(new JsonObject { ["event"] = "summary", ["points"] = points.Count }.ToJsonString());
            else WriteRatios(context, points, lengthList);
            return ExitCodes.Success;
        }));
        return command;
    }

    /// <summary>The paper's comparisons at each length: time against SeCO and inference, memory against checkpointing.</summary>
    static void WriteRatios(CliContext context, List<BenchmarkPoint> points, int[] lengths)
    {
        var table = new Table().AddColumns("length", "SeCO / full (time)", "SpaCO / SeCO (time)", "SpaCO / inference (time)", "checkpoint / SeCO (memory)", "full / SeCO (memory)");
        string Ratio(double? a, double? b) => a is double x && b is double y && y > 0 ? (x / y).ToString("F2", CultureInfo.InvariantCulture) : "–";
        foreach (int length in lengths)
        {
            BenchmarkPoint? Get(string s) => points.FirstOrDefault(p => p.Strategy == s && p.Length == length);
            table.AddRow(length.ToString(CultureInfo.InvariantCulture),
                Ratio(Get("seco")?.SecondsPerStep, Get("full")?.SecondsPerStep),
                Ratio(Get("spaco")?.SecondsPerStep, Get("seco")?.SecondsPerStep),
                Ratio(Get("spaco")?.SecondsPerStep, Get("inference")?.SecondsPerStep),
                Ratio(Get("checkpoint")?.PeakBytes, Get("seco")?.PeakBytes),
                Ratio(Get("full")?.PeakBytes, Get("seco")?.PeakBytes));
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(context.Out), Ansi = AnsiSupport.No });
        console.Write(table);
    }

    static JsonObject PointJson(BenchmarkPoint p) => new()
    {
        ["event"] = "point", ["strategy"] = p.Strategy, ["length"] = p.Length, ["seconds_per_step"] = p.SecondsPerStep,
        ["peak_bytes"] = p.PeakBytes, ["loss"] = p.Loss,
    };

    static string[] ParseList(string value, string option)
    {
        var items = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return items.Length > 0 ? items : throw new UsageException($"{option} needs at least one value.");
    }
}
