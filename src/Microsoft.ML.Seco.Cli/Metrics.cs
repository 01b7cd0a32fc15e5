using System.Globalization;
using System.Text;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Cli;

/// <summary>One row of metrics.csv.</summary>
internal sealed record MetricsRow(int Step, double Loss, double LearningRate, double TokensPerSecond, double Seconds, long PeakMemoryBytes, double? ValidationLoss)
{
    public static MetricsRow From(TrainingProgress p, double secondsOffset) =>
        new(p.Step, p.Loss, p.LearningRate, p.TokensPerSecond, secondsOffset + p.Elapsed.TotalSeconds, p.PeakMemoryBytes, p.ValidationLoss);
}

/// <summary>
/// metrics.csv (one row per optimizer step, kept across --resume) and the loss curve loss.png. The CSV is rewritten
/// after every step through a temporary file renamed into place, so an interrupted run leaves a whole file holding
/// every completed step.
/// </summary>
internal sealed class Metrics
{
    public const string CsvName = "metrics.csv";
    public const string PlotName = "loss.png";
    const string Header = "step,loss,learning_rate,tokens_per_second,seconds,peak_memory_bytes,validation_loss";
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    readonly string _csv;
    readonly List<MetricsRow> _rows;
    readonly StringBuilder _text = new();
    bool _firstOfRun = true;
    double _offset;

    /// <param name="folder">The output folder.</param>
    /// <param name="keepEarlier">Keep the rows of an earlier run in the folder (--resume).</param>
    public Metrics(string folder, bool keepEarlier)
    {
        _csv = Path.Combine(folder, CsvName);
        PlotPath = Path.Combine(folder, PlotName);
        _rows = keepEarlier ? ReadExisting(_csv) : [];
    }

    public string CsvPath => _csv;
    public string PlotPath { get; }
    public IReadOnlyList<MetricsRow> Rows => _rows;

    /// <summary>Adds this run's step and rewrites the file; an earlier run's rows from this step on are dropped (they were not kept in its checkpoint).</summary>
    public void Add(TrainingProgress progress)
    {
        if (_firstOfRun)
        {
            _firstOfRun = false;
            _rows.RemoveAll(r => r.Step >= progress.Step);
            _offset = _rows.Count > 0 ? _rows[^1].Seconds : 0;
            _text.Clear().AppendLine(Header);
            foreach (var row in _rows) Append(row);
        }
        var added = MetricsRow.From(progress, _offset);
        _rows.Add(added);
        Append(added);
        AtomicFile.Write(_csv, Encoding.UTF8.GetBytes(_text.ToString()));
    }

    void Append(MetricsRow r) =>
        _text.Append(string.Join(',', r.Step.ToString(Invariant), Num(r.Loss), Num(r.LearningRate), Num(r.TokensPerSecond), Num(r.Seconds),
            r.PeakMemoryBytes.ToString(Invariant), r.ValidationLoss is double v ? Num(v) : "")).Append('\n');

    /// <summary>Rows of an earlier run (for --resume); empty when there is none. Lines that are not rows are skipped.</summary>
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

    static string Num(double value) => value.ToString("R", Invariant);

    /// <summary>Writes loss.png (atomically) when there is at least one finite loss; returns whether it did.</summary>
    public bool WritePlot()
    {
        byte[]? png = Plot(_rows);
        if (png is null) return false;
        AtomicFile.Write(PlotPath, png);
        return true;
    }

    /// <summary>The loss curve as PNG bytes, or null when no step has a finite loss (no empty plot).</summary>
    public static byte[]? Plot(IReadOnlyList<MetricsRow> rows)
    {
        var train = rows.Where(r => double.IsFinite(r.Loss)).ToArray();
        if (train.Length == 0) return null;
        var plot = new ScottPlot.Plot();
        var line = plot.Add.Scatter(train.Select(r => (double)r.Step).ToArray(), train.Select(r => r.Loss).ToArray());
        line.LegendText = "training loss";
        var validation = rows.Where(r => r.ValidationLoss is double v && double.IsFinite(v)).ToArray();
        if (validation.Length > 0)
        {
            var points = plot.Add.Scatter(validation.Select(r => (double)r.Step).ToArray(), validation.Select(r => r.ValidationLoss!.Value).ToArray());
            points.LegendText = "validation loss";
            points.LineWidth = 0;
            points.MarkerSize = 8;
        }
        // Steps are whole numbers: no 1.5 ticks on short runs.
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Title("Loss");
        plot.XLabel("optimizer step");
        plot.YLabel("loss (nats per token)");
        // Beside the data area rather than over it, so the legend hides no point.
        plot.ShowLegend(ScottPlot.Edge.Right);
        using var image = plot.GetImage(900, 540);
        return image.GetImageBytes(ScottPlot.ImageFormat.Png);
    }
}
