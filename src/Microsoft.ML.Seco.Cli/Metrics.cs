using System.Globalization;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Cli;

/// <summary>One row of metrics.csv.</summary>
internal sealed record MetricsRow(int Step, double Loss, double LearningRate, double TokensPerSecond, double Seconds, long PeakMemoryBytes, double? ValidationLoss)
{
    public static MetricsRow From(TrainingProgress p, double secondsOffset) =>
        new(p.Step, p.Loss, p.LearningRate, p.TokensPerSecond, secondsOffset + p.Elapsed.TotalSeconds, p.PeakMemoryBytes, p.ValidationLoss);
}

/// <summary>metrics.csv (one row per optimizer step, kept across --resume) and the loss curve loss.png.</summary>
internal static class Metrics
{
    public const string CsvName = "metrics.csv";
    public const string PlotName = "loss.png";
    const string Header = "step,loss,learning_rate,tokens_per_second,seconds,peak_memory_bytes,validation_loss";
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Rows of an earlier run in the same output folder (for --resume); empty when there is none or it is unreadable.</summary>
    public static List<MetricsRow> ReadExisting(string path)
    {
        var rows = new List<MetricsRow>();
        if (!File.Exists(path)) return rows;
        foreach (var line in File.ReadLines(path).Skip(1))
        {
            var f = line.Split(',');
            if (f.Length != 7 || !int.TryParse(f[0], Invariant, out int step)) continue;
            static double D(string s) => double.TryParse(s, NumberStyles.Float, Invariant, out double d) ? d : double.NaN;
            rows.Add(new MetricsRow(step, D(f[1]), D(f[2]), D(f[3]), D(f[4]), long.TryParse(f[5], Invariant, out long m) ? m : 0,
                f[6].Length == 0 ? null : D(f[6])));
        }
        return rows;
    }

    public static void WriteCsv(string path, IEnumerable<MetricsRow> rows)
    {
        using var writer = new StreamWriter(path);
        writer.WriteLine(Header);
        foreach (var r in rows)
            writer.WriteLine(string.Join(',', r.Step.ToString(Invariant), Num(r.Loss), Num(r.LearningRate), Num(r.TokensPerSecond), Num(r.Seconds),
                r.PeakMemoryBytes.ToString(Invariant), r.ValidationLoss is double v ? Num(v) : ""));
    }

    static string Num(double value) => value.ToString("R", Invariant);

    public static void WritePlot(string path, IReadOnlyList<MetricsRow> rows)
    {
        var plot = new ScottPlot.Plot();
        var train = rows.Where(r => double.IsFinite(r.Loss)).ToArray();
        if (train.Length > 0)
        {
            var line = plot.Add.Scatter(train.Select(r => (double)r.Step).ToArray(), train.Select(r => r.Loss).ToArray());
            line.LegendText = "training loss";
        }
        var validation = rows.Where(r => r.ValidationLoss is double v && double.IsFinite(v)).ToArray();
        if (validation.Length > 0)
        {
            var points = plot.Add.Scatter(validation.Select(r => (double)r.Step).ToArray(), validation.Select(r => r.ValidationLoss!.Value).ToArray());
            points.LegendText = "validation loss";
            points.LineWidth = 0;
            points.MarkerSize = 8;
        }
        plot.Title("Loss");
        plot.XLabel("optimizer step");
        plot.YLabel("loss (nats per token)");
        plot.ShowLegend();
        plot.SavePng(path, 900, 540);
    }
}
