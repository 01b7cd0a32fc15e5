using System.Globalization;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>
/// The study's figures (like the paper's Figure 6): seconds per step and peak memory against sequence length, one line
/// per strategy, both axes logarithmic (lengths double and the strategies differ by orders of magnitude).
/// </summary>
internal static class BenchmarkPlots
{
    /// <summary>Writes the time plot, and the memory plot where memory was measured; returns the files written.</summary>
    public static List<string> Write(string directory, string prefix, IReadOnlyList<BenchmarkPoint> points, string title)
    {
        Directory.CreateDirectory(directory);
        var written = new List<string>();
        string time = Path.Combine(directory, prefix + "time.png");
        if (Plot(time, points, p => p.SecondsPerStep, "seconds per step", $"Time per step — {title}", v => v.ToString("G3", CultureInfo.InvariantCulture)))
            written.Add(time);
        string memory = Path.Combine(directory, prefix + "memory.png");
        if (Plot(memory, points, p => p.PeakBytes is long b && b > 0 ? b / 1048576.0 : null, "peak memory of a step (MiB)", $"Peak memory per step — {title}",
            v => v.ToString(v >= 10 ? "N0" : "G2", CultureInfo.InvariantCulture)))
            written.Add(memory);
        return written;
    }

    static bool Plot(string path, IReadOnlyList<BenchmarkPoint> points, Func<BenchmarkPoint, double?> value, string yLabel, string title, Func<double, string> format)
    {
        var series = points.Where(p => value(p) is double v && v > 0).GroupBy(p => p.Strategy).ToList();
        if (series.Count == 0) return false;
        var plot = new ScottPlot.Plot();
        foreach (var line in series)
        {
            var ordered = line.OrderBy(p => p.Length).ToArray();
            var scatter = plot.Add.Scatter(ordered.Select(p => Math.Log2(p.Length)).ToArray(), ordered.Select(p => Math.Log10(value(p)!.Value)).ToArray());
            scatter.LegendText = line.Key;
            scatter.MarkerSize = 7;
            scatter.LineWidth = 2;
        }
        var lengths = points.Select(p => p.Length).Distinct().Order().ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            lengths.Select(l => Math.Log2(l)).ToArray(), lengths.Select(l => l.ToString("N0", CultureInfo.InvariantCulture)).ToArray());
        var values = series.SelectMany(g => g).Select(p => value(p)!.Value).ToArray();
        plot.Axes.Left.TickGenerator = LogTicks(values.Min(), values.Max(), format);
        plot.Title(title);
        plot.XLabel("sequence length (tokens, log scale)");
        plot.YLabel(yLabel + ", log scale");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SavePng(path, 900, 560);
        return true;
    }

    /// <summary>
    /// Ticks for a log10 axis: labelled at 1, 2 and 5 × 10^n (only at 10^n when the data span more than three decades),
    /// unlabelled at the other integers × 10^n, so that labels are round numbers whatever the range.
    /// </summary>
    static ScottPlot.TickGenerators.NumericManual LogTicks(double min, double max, Func<double, string> format)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        int low = (int)Math.Floor(Math.Log10(min)), high = (int)Math.Ceiling(Math.Log10(max));
        int[] labelled = high - low > 3 ? [1] : [1, 2, 5];
        for (int decade = low; decade <= high; decade++)
            for (int m = 1; m <= 9; m++)
            {
                double v = m * Math.Pow(10, decade);
                if (labelled.Contains(m)) ticks.AddMajor(Math.Log10(v), format(v));
                else ticks.AddMinor(Math.Log10(v));
            }
        return ticks;
    }
}
