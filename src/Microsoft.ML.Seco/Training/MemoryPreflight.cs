using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Training;

/// <summary>
/// The check a run makes before its first step: the predicted peak of its longest batch (<see cref="StepMemory"/>)
/// against the memory budget, or what its device has free, and the single-option changes that would fit.
/// </summary>
public static class MemoryPreflight
{
    /// <summary>
    /// The bytes the run may still take and how much of <see cref="StepMemoryEstimate.Total"/> is already allocated: a
    /// budget counts the whole run; a device's free memory is measured with the model already loaded. Null where the
    /// device says nothing (the check is then skipped).
    /// </summary>
    internal static (long Available, long Allocated)? Available(Device device, long? budget, StepMemoryEstimate estimate)
    {
        if (budget is long b) return (b, 0);
        long? free = device.type == TorchSharp.DeviceType.CUDA ? DeviceMemory.Free(device) : ResidentMemory.Available();
        return free is long f ? (f, estimate.Weights + estimate.Adapters) : null;
    }

    /// <summary>
    /// Throws <see cref="InsufficientDeviceMemoryException"/> when <paramref name="query"/> is predicted not to fit; returns
    /// the capacity it checked against (the budget, or free memory plus what the run already holds), null when unknown.
    /// </summary>
    internal static long? Ensure(StepMemoryQuery query, Device device, long? budget)
    {
        var estimate = StepMemory.Predict(query);
        if (Available(device, budget, estimate) is not var (available, allocated)) return null;
        if (estimate.Total - allocated <= available) return available + allocated;
        throw new InsufficientDeviceMemoryException(device.ToString(), query.Length, query.BatchSize, query.ChunkSize, estimate.Total,
            available + allocated, null, Remedies(query, available + allocated));
    }

    /// <summary>
    /// Changes of one option each after which the predicted total fits in <paramref name="capacity"/> bytes: recompute
    /// inside chunks, the largest smaller chunk (halving), the largest smaller batch, the longest length (a whole number of
    /// chunks).
    /// </summary>
    internal static IReadOnlyList<MemoryRemedy> Remedies(StepMemoryQuery query, long capacity)
    {
        var remedies = new List<MemoryRemedy>();
        long Total(StepMemoryQuery q) => StepMemory.Predict(q).Total;
        bool chunkwise = query.Strategy is MemoryStrategy.Seco or MemoryStrategy.Spaco;
        if (chunkwise && !query.RecomputeLayers && Total(query with { RecomputeLayers = true }) is var recomputed && recomputed <= capacity)
            remedies.Add(new MemoryRemedy("RecomputeLayers", true, recomputed));
        for (int chunk = query.ChunkSize / 2; chunkwise && chunk >= 16; chunk /= 2)
            if (Total(query with { ChunkSize = chunk }) is var smaller && smaller <= capacity)
            {
                remedies.Add(new MemoryRemedy("ChunkSize", chunk, smaller));
                break;
            }
        for (int batch = query.BatchSize - 1; batch >= 1; batch--)
            if (Total(query with { BatchSize = batch }) is var fewer && fewer <= capacity)
            {
                remedies.Add(new MemoryRemedy("BatchSize", batch, fewer));
                break;
            }
        long longest = StepMemory.LongestWithin(query, capacity, query.ChunkSize, query.Length);
        if (longest >= 2) remedies.Add(new MemoryRemedy("MaxSequenceLength", (int)longest, Total(query with { Length = longest })));
        return remedies;
    }

    /// <summary>Whether libtorch's error is an allocator running out of memory (CUDA's, or the CPU's when it says so).</summary>
    public static bool IsOutOfMemory(Exception e) =>
        e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) ||
        e.Message.Contains("can't allocate memory", StringComparison.OrdinalIgnoreCase);
}
