using System.Runtime.InteropServices;

namespace Microsoft.ML.Seco.Distributed;

/// <summary>
/// <see cref="ICommunicator"/> over Open MPI's C library (libmpi.so.40, Open MPI 4.x and 5.x), bound by hand: the
/// MPI.NET package on NuGet is built for Microsoft MPI on Windows only, and data-parallel training needs eight
/// functions. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are the addresses of exported globals
/// (<c>ompi_mpi_comm_world</c>, ...); MPICH-derived libraries use integer handles instead and are not supported.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    const int ThreadSerialized = 2; // MPI_THREAD_SERIALIZED: calls come from one thread at a time (Finalize from the exit handler)
    static readonly void* InPlace = (void*)1; // Open MPI's MPI_IN_PLACE

    readonly delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int> _allreduce;
    readonly delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int> _bcast;
    readonly delegate* unmanaged<IntPtr, int, int> _abort;
    readonly delegate* unmanaged<int> _finalize;
    readonly delegate* unmanaged<int*, int> _finalized;
    readonly IntPtr _world, _byte, _float, _double, _sum;

    /// <inheritdoc/>
    public int Rank { get; }
    /// <inheritdoc/>
    public int Size { get; }
    /// <inheritdoc/>
    public int LocalRank { get; }

    MpiCommunicator(IntPtr library)
    {
        IntPtr Export(string name) => NativeLibrary.TryGetExport(library, name, out var address) ? address
            : throw new EntryPointNotFoundException($"The MPI library has no '{name}': seco binds Open MPI's libmpi.so.40 (Open MPI 4 or 5).");
        _world = Export("ompi_mpi_comm_world");
        _byte = Export("ompi_mpi_byte");
        _float = Export("ompi_mpi_float");
        _double = Export("ompi_mpi_double");
        _sum = Export("ompi_mpi_op_sum");
        var initThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        var commRank = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_rank");
        var commSize = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_size");
        _allreduce = (delegate* unmanaged<void*, void*, int, IntPtr, IntPtr, IntPtr, int>)Export("MPI_Allreduce");
        _bcast = (delegate* unmanaged<void*, int, IntPtr, int, IntPtr, int>)Export("MPI_Bcast");
        _abort = (delegate* unmanaged<IntPtr, int, int>)Export("MPI_Abort");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        _finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized");

        int provided, rank, size;
        Check(initThread(null, null, ThreadSerialized, &provided), "MPI_Init_thread");
        Check(commRank(_world, &rank), "MPI_Comm_rank");
        Check(commSize(_world, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        LocalRank = Communicator.EnvironmentInt("OMPI_COMM_WORLD_LOCAL_RANK") ?? 0;
        // A rank that returns from Main has finished its collectives; MPI wants MPI_Finalize before the process ends.
        AppDomain.CurrentDomain.ProcessExit += (_, _) => FinalizeMpi();
    }

    /// <summary>Loads libmpi (path in SECO_MPI_LIBRARY, else libmpi.so.40) and initialises MPI; once per process (see <see cref="Communicator.World"/>).</summary>
    internal static MpiCommunicator Initialize()
    {
        string name = Environment.GetEnvironmentVariable("SECO_MPI_LIBRARY") is { Length: > 0 } path ? path : "libmpi.so.40";
        // RTLD_GLOBAL: Open MPI loads its components (mca_*.so) with dlopen, and they resolve libmpi's symbols globally;
        // NativeLibrary.Load opens libraries RTLD_LOCAL, which leaves them unresolved.
        IntPtr handle = OperatingSystem.IsLinux() ? dlopen(name, RtldNow | RtldGlobal) : IntPtr.Zero;
        if (handle == IntPtr.Zero && !NativeLibrary.TryLoad(name, out handle))
            throw new DllNotFoundException($"seco runs under mpirun ({Communicator.LaunchedSize} ranks) but cannot load Open MPI's '{name}'" +
                $"{(OperatingSystem.IsLinux() ? $" ({Marshal.PtrToStringAnsi(dlerror())})" : "")}: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or set SECO_MPI_LIBRARY to its libmpi.so.40.");
        return new MpiCommunicator(handle);
    }

    const int RtldNow = 2, RtldGlobal = 0x100;

    [DllImport("libc.so.6", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    static extern IntPtr dlopen(string file, int mode);

    [DllImport("libc.so.6")]
    static extern IntPtr dlerror();

    /// <inheritdoc/>
    public void AllReduceSum(Span<float> values)
    {
        fixed (float* buffer = values) Check(_allreduce(InPlace, buffer, values.Length, _float, _sum, _world), "MPI_Allreduce");
    }

    /// <inheritdoc/>
    public void AllReduceSum(Span<double> values)
    {
        fixed (double* buffer = values) Check(_allreduce(InPlace, buffer, values.Length, _double, _sum, _world), "MPI_Allreduce");
    }

    /// <inheritdoc/>
    public void Broadcast(Span<byte> bytes, int root)
    {
        fixed (byte* buffer = bytes) Check(_bcast(buffer, bytes.Length, _byte, root, _world), "MPI_Bcast");
    }

    /// <inheritdoc/>
    public void Abort(string message, int exitCode)
    {
        Console.Out.Flush();
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        _abort(_world, exitCode);
        Environment.Exit(exitCode); // MPI_Abort does not return; in case an implementation does
    }

    void FinalizeMpi()
    {
        int finalized;
        if (_finalized(&finalized) == 0 && finalized == 0) _finalize();
    }

    // The default error handler (MPI_ERRORS_ARE_FATAL) ends the job before a failing call returns; this is for the others.
    static void Check(int code, string function)
    {
        if (code != 0) throw new InvalidOperationException($"{function} failed with MPI error code {code}.");
    }
}
