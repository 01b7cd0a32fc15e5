using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// Peak resident memory of a piece of work on the CPU, for benchmarks and memory tests (Linux with glibc; elsewhere
/// every reading is null). <see cref="Settle"/> returns freed memory to the system and restarts the kernel's peak
/// counter; <see cref="PeakAbove"/> then reads how far the peak rose above the settled level. With
/// <see cref="TrackLargeAllocations"/> every allocation over 16 KB gets its own mapping, so that resident memory
/// follows live tensors rather than the allocator's history.
/// </summary>
public static partial class ResidentMemory
{
    const int TrimThreshold = -1; // glibc's M_TRIM_THRESHOLD
    const int MmapThreshold = -3; // glibc's M_MMAP_THRESHOLD

    /// <summary>
    /// true: allocations over 16 KB are mapped and unmapped one by one (resident memory tracks live tensors; slower). Small
    /// chunks make many tensors of tens of KB, and glibc's heap would keep their fragments (docs/BENCHMARKS.md, Memory).
    /// false: glibc reuses freed blocks of up to 32 MB and keeps up to 64 MB free at the top of its heaps, where its
    /// dynamic thresholds settle in a process that frees large tensors (the setting to time with).
    /// </summary>
    public static void TrackLargeAllocations(bool track)
    {
        if (!OperatingSystem.IsLinux()) return;
        _ = MallOpt(MmapThreshold, track ? 16 << 10 : 32 << 20);
        // Setting one threshold freezes glibc's dynamic adjustment of both, leaving the trim threshold at 128 KB: every
        // free at the top of a heap would then hand its pages back and the next tensor fault them in again, a cost a
        // user's process (dynamic thresholds) never pays and that falls hardest on many mid-sized chunk tensors.
        _ = MallOpt(TrimThreshold, track ? 128 << 10 : 64 << 20);
    }

    /// <summary>Collects garbage, returns freed heap memory to the system and resets the peak; the resident bytes now, or null.</summary>
    public static long? Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        // glibc keeps freed blocks in its heap: without the trim, the next piece of work reuses memory an earlier one
        // freed, and its rise above the settled level understates what it needs.
        ReleaseFreed();
        return ResetPeak();
    }

    /// <summary>
    /// Returns the native heap's free memory to the system (glibc's malloc_trim over every arena; nothing elsewhere).
    /// The training loop calls it after each optimizer step: glibc serves tensors under its dynamic mmap threshold
    /// (up to 32 MB) from per-thread arenas and keeps what they free, so without it resident memory climbs over the
    /// first steps to a plateau that grows with the number of threads.
    /// </summary>
    public static void ReleaseFreed()
    {
        if (OperatingSystem.IsLinux()) _ = MallocTrim(0);
    }

    /// <summary>Restarts the kernel's peak counter without collecting or trimming (cheap: once per training step); the resident bytes now, or null.</summary>
    public static long? ResetPeak()
    {
        // Writing 5 to clear_refs resets VmHWM (Linux 4.0 and later).
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return Read("VmRSS");
    }

    /// <summary>The peak resident bytes since the last <see cref="ResetPeak"/> or <see cref="Settle"/> (since the start without one), or null.</summary>
    public static long? Peak() => Read("VmHWM");

    /// <summary>The resident bytes now, or null.</summary>
    public static long? Current() => Read("VmRSS");

    /// <summary>The peak resident bytes since the last <see cref="Settle"/> above <paramref name="settled"/>, or null.</summary>
    public static long? PeakAbove(long? settled) =>
        Read("VmHWM") is long peak && settled is long level ? Math.Max(0, peak - level) : null;

    static long? Read(string field)
    {
        try
        {
            var match = StatusField().Match(File.ReadAllText("/proc/self/status"));
            while (match.Success && match.Groups[1].Value != field) match = match.NextMatch();
            return match.Success ? long.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture) * 1024 : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    [GeneratedRegex(@"^(\w+):\s+(\d+) kB", RegexOptions.Multiline)]
    private static partial Regex StatusField();

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int MallOpt(int parameter, int value);

    /// <summary>Memory the system can still give this process (MemAvailable in /proc/meminfo), or null where unknown.</summary>
    public static long? Available()
    {
        try
        {
            var match = Regex.Match(File.ReadAllText("/proc/meminfo"), @"MemAvailable:\s+(\d+) kB");
            return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) * 1024 : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
