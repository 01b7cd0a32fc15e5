using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// Memory of a CUDA device as this process holds it, for benchmarks: the counterpart of <see cref="ResidentMemory"/>
/// on a GPU. TorchSharp 0.107 exposes none of libtorch's CUDA allocator statistics (no memory_reserved, no
/// empty_cache), so this asks the CUDA driver itself (libcuda.so.1 or nvcuda.dll, installed wherever a CUDA device
/// works) how much of the device is in use. What it reads covers every process on the device: a benchmark reads
/// differences, on a device nothing else uses.
/// </summary>
/// <remarks>
/// libtorch's caching allocator keeps the blocks a step frees, so after a step the device's use stands at the highest
/// level the allocator reached during it: <see cref="PeakAbove"/> reads that after <see cref="Settle"/> has handed
/// the cached blocks back. That is the allocator's reserved peak, what nvidia-smi shows: at least the peak of live
/// tensors (blocks are rounded up, split and cached), so an upper bound of what the step needs on a smaller device,
/// where the allocator frees its cache and retries before it reports out of memory. <see cref="Settle"/> frees only
/// the cached segments no live tensor splits: in a process that ran larger steps before, a step can reuse what
/// survived and read low, which is why the benchmark measures each CUDA point in a process of its own.
/// </remarks>
public static unsafe class DeviceMemory
{
    const int Success = 0; // CUDA_SUCCESS

    /// <summary>
    /// Hands libtorch's cached free blocks on <paramref name="device"/> back to the driver and returns the bytes in use
    /// on the device now, or null where no CUDA driver answers.
    /// </summary>
    public static long? Settle(Device device)
    {
        if (Query(device) is not var (_, total)) return null;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        // TorchSharp has no empty_cache. libtorch's allocator, before it reports out of memory, frees every cached
        // block that is not split and retries (CUDACachingAllocator.cpp, DeviceCachingAllocator::malloc): asking for
        // more than the device holds runs exactly that path, then fails, and nothing is allocated.
        try { empty(total + (1L << 30), dtype: ScalarType.Byte, device: device).Dispose(); }
        catch (Exception e) when (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)) { }
        return InUse(device);
    }

    /// <summary>Bytes in use on the device above <paramref name="before"/> (a <see cref="Settle"/> reading), or null.</summary>
    public static long? PeakAbove(Device device, long? before) =>
        before is long b && InUse(device) is long now ? Math.Max(0, now - b) : null;

    /// <summary>Bytes in use on the device (its total less what the driver reports free), or null where no CUDA driver answers.</summary>
    public static long? InUse(Device device) => Query(device) is var (free, total) ? total - free : null;

    /// <summary>Bytes the driver reports free on the device, or null where no CUDA driver answers.</summary>
    public static long? Free(Device device) => Query(device)?.Free;

    /// <summary>
    /// (free, total) bytes of the device through cuMemGetInfo, inside the device's primary context: the one libtorch's
    /// runtime calls use, made current here explicitly because the calling thread need not have it current.
    /// </summary>
    static (long Free, long Total)? Query(Device device)
    {
        if (device.type != DeviceType.CUDA || Driver.Value is not { } d) return null;
        int ordinal = device.index < 0 ? 0 : device.index;
        int cuDevice;
        nint context;
        if (d.Init(0) != Success || d.DeviceGet(&cuDevice, ordinal) != Success || d.PrimaryCtxRetain(&context, cuDevice) != Success) return null;
        try
        {
            if (d.CtxPushCurrent(context) != Success) return null;
            nuint free, total;
            int status = d.MemGetInfo(&free, &total);
            nint popped;
            _ = d.CtxPopCurrent(&popped);
            return status == Success ? ((long)free, (long)total) : null;
        }
        finally
        {
            _ = d.PrimaryCtxRelease(cuDevice);
        }
    }

    /// <summary>The few driver entry points used here, or null where the driver library is missing.</summary>
    sealed class DriverApi
    {
        public delegate* unmanaged<uint, int> Init;
        public delegate* unmanaged<int*, int, int> DeviceGet;
        public delegate* unmanaged<nint*, int, int> PrimaryCtxRetain;
        public delegate* unmanaged<int, int> PrimaryCtxRelease;
        public delegate* unmanaged<nint, int> CtxPushCurrent;
        public delegate* unmanaged<nint*, int> CtxPopCurrent;
        public delegate* unmanaged<nuint*, nuint*, int> MemGetInfo;
    }

    static readonly Lazy<DriverApi?> Driver = new(() =>
    {
        string name = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
        if (!NativeLibrary.TryLoad(name, out nint library)) return null;
        nint Export(string symbol) => NativeLibrary.TryGetExport(library, symbol, out nint address) ? address : 0;
        // The _v2 names are the ones the driver has exported since CUDA 3.2 (11.0 for the primary-context release).
        nint[] entries =
        {
            Export("cuInit"), Export("cuDeviceGet"), Export("cuDevicePrimaryCtxRetain"), Export("cuDevicePrimaryCtxRelease_v2"),
            Export("cuCtxPushCurrent_v2"), Export("cuCtxPopCurrent_v2"), Export("cuMemGetInfo_v2"),
        };
        if (entries.Contains(0)) return null;
        return new DriverApi
        {
            Init = (delegate* unmanaged<uint, int>)entries[0],
            DeviceGet = (delegate* unmanaged<int*, int, int>)entries[1],
            PrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)entries[2],
            PrimaryCtxRelease = (delegate* unmanaged<int, int>)entries[3],
            CtxPushCurrent = (delegate* unmanaged<nint, int>)entries[4],
            CtxPopCurrent = (delegate* unmanaged<nint*, int>)entries[5],
            MemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)entries[6],
        };
    });
}
