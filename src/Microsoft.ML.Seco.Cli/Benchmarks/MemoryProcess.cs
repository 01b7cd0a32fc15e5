using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>
/// Measures one point's memory in a fresh <c>seco bench</c> process of its own. On CUDA this is the only clean reading:
/// TorchSharp cannot empty libtorch's caching allocator, and releasing it by an oversized request (what
/// <see cref="Diagnostics.DeviceMemory.Settle"/> does) frees only the segments no live tensor splits, so a point measured
/// after a larger one reuses what survived and reads low (docs/BENCHMARKS.md, *On a GPU*, has the H200 readings).
/// </summary>
internal static class MemoryProcess
{
    /// <summary>The hidden option through which the parent names the one point a child measures (STRATEGY@LENGTH).</summary>
    public const string PointOption = "--memory-point";

    /// <summary>What a child measured: the peak, or that the step ran out of memory.</summary>
    public sealed record Reading(long? PeakBytes, bool RanOutOfMemory);

    /// <summary>
    /// Runs <c>seco bench ARGUMENTS --memory-point STRATEGY@LENGTH</c> and reads the JSON line it prints. A child the
    /// system killed for memory (exit 137) counts as out of memory; any other failure is an error naming the point.
    /// </summary>
    public static Reading Measure(IEnumerable<string> benchArguments, string strategy, int length, CancellationToken token)
    {
        var start = SelfStartInfo();
        foreach (var argument in benchArguments.Append(PointOption).Append($"{strategy}@{length}")) start.ArgumentList.Add(argument);
        using var child = Process.Start(start) ?? throw new InvalidOperationException($"Could not start '{start.FileName}' to measure {strategy} at {length} tokens.");
        var output = child.StandardOutput.ReadToEndAsync(token);
        var error = child.StandardError.ReadToEndAsync(token);
        try
        {
            child.WaitForExitAsync(token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            child.Kill(entireProcessTree: true);
            throw;
        }
        var line = output.GetAwaiter().GetResult().Split('\n').LastOrDefault(l => l.StartsWith('{'));
        if (child.ExitCode == 0 && line is not null && JsonNode.Parse(line) is JsonObject reading && (string?)reading["event"] == "memory")
            return new Reading((long?)reading["peak_bytes"], (string?)reading["status"] == "oom");
        if (child.ExitCode == 137) return new Reading(null, RanOutOfMemory: true);
        string tail = error.GetAwaiter().GetResult().Trim();
        throw new InvalidOperationException($"Measuring the memory of {strategy} at {length} tokens in its own process failed (exit code {child.ExitCode}): "
            + (tail.Length > 600 ? tail[^600..] : tail));
    }

    /// <summary>The JSON line a child prints for its point.</summary>
    public static JsonObject Json(string strategy, int length, long? peakBytes, bool ranOutOfMemory) => new()
    {
        ["event"] = "memory", ["strategy"] = strategy, ["length"] = length, ["status"] = ranOutOfMemory ? "oom" : "measured", ["peak_bytes"] = peakBytes,
    };

    /// <summary>
    /// How to start this same tool: through the running dotnet host when it runs seco.dll (dotnet seco.dll, the tests),
    /// else the seco executable beside the assembly, else this process's own executable (a single-file publish).
    /// </summary>
    static ProcessStartInfo SelfStartInfo()
    {
        string assembly = typeof(MemoryProcess).Assembly.Location; // empty in a single-file publish
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("The path of this process is unknown; cannot start a measuring process.");
        var start = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string apphost = assembly.Length > 0 ? Path.Combine(Path.GetDirectoryName(assembly)!, OperatingSystem.IsWindows() ? "seco.exe" : "seco") : "";
        if (assembly.Length > 0 && Path.GetFileNameWithoutExtension(host).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            start.FileName = host;
            start.ArgumentList.Add(assembly);
        }
        else start.FileName = File.Exists(apphost) ? apphost : host;
        start.ArgumentList.Add("bench");
        return start;
    }
}
