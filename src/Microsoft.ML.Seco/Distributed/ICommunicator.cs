namespace Microsoft.ML.Seco.Distributed;

/// <summary>
/// The few collective operations data-parallel training needs, over the processes ("ranks") of one job. Every rank
/// must make the same calls in the same order with buffers of the same length; a rank that cannot go on calls
/// <see cref="Abort"/> so that the others do not wait for it forever.
/// </summary>
public interface ICommunicator
{
    /// <summary>This process's index in the job, 0 to <see cref="Size"/> − 1; rank 0 writes the run's files.</summary>
    int Rank { get; }

    /// <summary>Processes in the job.</summary>
    int Size { get; }

    /// <summary>This process's index among the job's processes on the same machine: it picks the GPU.</summary>
    int LocalRank { get; }

    /// <summary>Replaces <paramref name="values"/> on every rank by their element-wise sum over all ranks.</summary>
    void AllReduceSum(Span<float> values);

    /// <summary>Replaces <paramref name="values"/> on every rank by their element-wise sum over all ranks.</summary>
    void AllReduceSum(Span<double> values);

    /// <summary>Copies <paramref name="bytes"/> of rank <paramref name="root"/> into the same buffer of every other rank.</summary>
    void Broadcast(Span<byte> bytes, int root);

    /// <summary>Ends the whole job (every rank) with <paramref name="exitCode"/> after writing <paramref name="message"/> to stderr; does not return.</summary>
    void Abort(string message, int exitCode);
}

/// <summary>The communicator of a process that runs alone: every collective is the identity.</summary>
public sealed class SingleProcessCommunicator : ICommunicator
{
    /// <summary>The one instance.</summary>
    public static SingleProcessCommunicator Instance { get; } = new();

    SingleProcessCommunicator() { }

    /// <inheritdoc/>
    public int Rank => 0;
    /// <inheritdoc/>
    public int Size => 1;
    /// <inheritdoc/>
    public int LocalRank => 0;
    /// <inheritdoc/>
    public void AllReduceSum(Span<float> values) { }
    /// <inheritdoc/>
    public void AllReduceSum(Span<double> values) { }
    /// <inheritdoc/>
    public void Broadcast(Span<byte> bytes, int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), root, "A single process has rank 0 only.");
    }
    /// <inheritdoc/>
    public void Abort(string message, int exitCode)
    {
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        Environment.Exit(exitCode);
    }
}

/// <summary>The job this process belongs to: MPI under <c>mpirun</c> with more than one rank, else a single process.</summary>
public static class Communicator
{
    static readonly Lazy<ICommunicator> _world = new(Create, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// The process's communicator, created on first use: <see cref="MpiCommunicator"/> when Open MPI's <c>mpirun</c>
    /// started this process with more than one rank (it sets <c>OMPI_COMM_WORLD_SIZE</c>), else
    /// <see cref="SingleProcessCommunicator.Instance"/>. A single process never loads libmpi, so needs no MPI installed.
    /// </summary>
    /// <exception cref="NotSupportedException">Another launcher (MPICH's or Intel MPI's, which set PMI_SIZE) started the process.</exception>
    /// <exception cref="DllNotFoundException">Under mpirun, Open MPI's libmpi.so.40 cannot be loaded.</exception>
    public static ICommunicator World => _world.Value;

    /// <summary>Ranks in the job as the launcher's environment says, before anything is loaded (1 outside mpirun).</summary>
    public static int LaunchedSize => EnvironmentInt("OMPI_COMM_WORLD_SIZE") ?? 1;

    static ICommunicator Create()
    {
        if (LaunchedSize > 1) return MpiCommunicator.Initialize();
        if (EnvironmentInt("PMI_SIZE") is > 1)
            throw new NotSupportedException("This process was started by an MPI launcher other than Open MPI's mpirun (PMI_SIZE is set): " +
                "seco binds Open MPI (libmpi.so.40) only; start it with Open MPI's mpirun.");
        return SingleProcessCommunicator.Instance;
    }

    internal static int? EnvironmentInt(string name) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int value) ? value : null;
}
