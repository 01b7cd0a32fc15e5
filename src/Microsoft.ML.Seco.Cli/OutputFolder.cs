using Microsoft.ML.Seco.Checkpoints;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// The output folder of <c>seco train</c>, held for the run: a lock file open with no sharing (an OS lock, released
/// when the process ends however it ends) keeps a second run out, and every artifact is written whole or not at all.
/// </summary>
internal sealed class OutputFolder : IDisposable
{
    public const string LockName = ".seco-train.lock";

    /// <summary>What a run leaves in its folder; one of them present means the folder holds a run.</summary>
    public static readonly IReadOnlyList<string> Artifacts =
        [TrainConfig.FileName, Metrics.CsvName, Metrics.PlotName, "model.seco", "adapter", "merged", "checkpoints"];

    readonly FileStream _lock;

    OutputFolder(string path, bool created, FileStream lockFile)
    {
        Path = path;
        Created = created;
        _lock = lockFile;
    }

    public string Path { get; }
    /// <summary>Whether this run created the folder (and may remove it when it fails before writing anything).</summary>
    public bool Created { get; }

    /// <summary>The artifacts of a run in <paramref name="path"/>, by name.</summary>
    public static List<string> RunArtifacts(string path) =>
        Directory.Exists(path) ? Artifacts.Where(a => File.Exists(System.IO.Path.Combine(path, a)) || Directory.Exists(System.IO.Path.Combine(path, a))).ToList() : [];

    /// <summary>Creates the folder when needed and takes its lock; a folder another run holds is a usage error naming it.</summary>
    public static OutputFolder Open(string path)
    {
        bool created = !Directory.Exists(path);
        Directory.CreateDirectory(path);
        try
        {
            // FileShare.None is an exclusive OS lock (flock on Unix): a second process, or a second open here, fails.
            var lockFile = new FileStream(System.IO.Path.Combine(path, LockName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            return new OutputFolder(path, created, lockFile);
        }
        catch (IOException)
        {
            if (created) TryDelete(path);
            throw new UsageException($"--output '{path}' is in use by another seco train (it holds {LockName} open); wait for that run to end or choose another --output.");
        }
    }

    /// <summary>Removes an earlier run's artifacts (--overwrite); other files in the folder stay.</summary>
    public void RemoveRun()
    {
        foreach (var name in Artifacts)
        {
            string full = System.IO.Path.Combine(Path, name);
            if (Directory.Exists(full)) Directory.Delete(full, recursive: true);
            else if (File.Exists(full)) File.Delete(full);
        }
    }

    /// <summary>Writes a file whole: through a temporary file renamed into place.</summary>
    public static void WriteFile(string path, byte[] content) => AtomicFile.Write(path, content);

    /// <summary>Writes a folder whole (see <see cref="AtomicFile.WriteDirectory"/>).</summary>
    public static void WriteDirectory(string path, Action<string> write) => AtomicFile.WriteDirectory(path, write);

    public void Dispose() => _lock.Dispose();

    /// <summary>Releases the lock and removes the folder this run created (a run that failed before its first step).</summary>
    public void DisposeAndRemove()
    {
        _lock.Dispose();
        if (Created) TryDelete(Path);
    }

    static void TryDelete(string directory)
    {
        try { Directory.Delete(directory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
