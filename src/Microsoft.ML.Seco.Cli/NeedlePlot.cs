using System.Globalization;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// The heatmap people post for needle-in-a-haystack results: prompt length across, needle depth down (0 % at the top),
/// each cell coloured by the answer's mean log-probability per token (and marked EM where greedy decoding answered
/// exactly), with a colour bar. Lives in the CLI: the library stays free of a plotting dependency. The quality study
/// (examples/QualityStudy) compiles this file too, to draw its before/after maps on one colour scale.
/// </summary>
internal static class NeedlePlot
{
    public const string FileName = "needle.png";

    /// <summary>The heatmap as PNG bytes.</summary>
    /// <param name="result">The grid.</param>
    /// <param name="title">The title's first part.</param>
    /// <param name="range">The colour bar's (low, high) log-probability per token; null spans this grid's own values. Maps that are compared side by side share one.</param>
    public static byte[] Png(NeedleResult result, string title, (double Low, double High)? range = null)
    {
        int rows = result.Depths.Count, columns = result.Lengths.Count;
        var values = new double[rows, columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                values[r, c] = -result.Cells[c, r].AnswerNllPerToken; // mean log-probability per answer token
        var plot = new ScottPlot.Plot();
        var heatmap = plot.Add.Heatmap(values);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.Rectangle = new ScottPlot.CoordinateRect(-0.5, columns - 0.5, -0.5, rows - 0.5);
        var finite = values.Cast<double>().Where(double.IsFinite).ToArray();
        var span = range ?? (finite.Length > 0 ? (finite.Min(), finite.Max()) : null);
        if (span is (double low, double high))
            heatmap.ManualRange = new ScottPlot.Range(low, high > low ? high : low + 1e-9);
        var bar = plot.Add.ColorBar(heatmap);
        bar.Label = "answer log-probability per token (nats)";
        // Row 0 (depth 0) is drawn at the top of the heatmap.
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                if (result.Cells[c, r].ExactMatch)
                {
                    var mark = plot.Add.Text("EM", c, rows - 1 - r);
                    mark.LabelFontColor = ScottPlot.Colors.White;
                    mark.LabelFontSize = 16;
                    mark.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
                }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            Enumerable.Range(0, columns).Select(c => (double)c).ToArray(),
            result.Lengths.Select(l => l.ToString("N0", CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            Enumerable.Range(0, rows).Select(r => (double)(rows - 1 - r)).ToArray(),
            result.Depths.Select(d => (d * 100).ToString("0.#", CultureInfo.InvariantCulture) + " %").ToArray());
        plot.Axes.SetLimits(-0.5, columns - 0.5, -0.5, rows - 0.5);
        plot.Title($"{title} — exact match {result.Accuracy * 100:0.#} % (EM: answered exactly)");
        plot.XLabel("prompt length (tokens)");
        plot.YLabel("needle depth (% of the haystack)");
        using var image = plot.GetImage(Math.Max(640, 140 + 110 * columns), Math.Max(480, 140 + 40 * rows));
        return image.GetImageBytes(ScottPlot.ImageFormat.Png);
    }
}
