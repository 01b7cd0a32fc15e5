namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>
/// Writes a file through a temporary file in the same folder, flushed to disk and renamed over the target, so a
/// crash, a full disk or a folder that turned read-only never leaves half a file and never touches the previous one.
/// </summary>
public static class AtomicFile
{
    /// <summary>
    /// Writes <paramref name="path"/> with <paramref name="write"/>. A storage failure throws an <see cref="IOException"/>
    /// that names <paramref name="what"/> and the path and says the previous file is unchanged; other exceptions from
    /// <paramref name="write"/> pass through. The temporary file is removed either way (when the system allows).
    /// </summary>
    public static void Write(string path, string what, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(full) ?? ".";
        string temp = Path.Combine(directory, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(directory);
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                // Without this, a power loss after the rename could leave a complete-looking name over missing data.
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new IOException($"Could not write {what} '{full}': {e.Message} " +
                (File.Exists(full) ? "The previous file there is unchanged." : "Nothing was written there."), e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Writes <paramref name="path"/> whole from bytes (see <see cref="Write(string, string, Action{Stream})"/>).</summary>
    public static void Write(string path, byte[] content) => Write(path, Path.GetFileName(path), stream => stream.Write(content));

    /// <summary>
    /// Writes a folder whole: <paramref name="write"/> fills a temporary folder beside it (a path it must create), which
    /// then replaces the old folder by renames, so at any instant the folder is the old one, the new one, or absent,
    /// never partly written. A failure leaves the old folder and removes the temporary one.
    /// </summary>
    public static void WriteDirectory(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full)!, name = Path.GetFileName(full);
        string temporary = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.tmp");
        string? old = null;
        try
        {
            write(temporary);
            if (Directory.Exists(full))
            {
                old = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.old");
                Directory.Move(full, old);
            }
            Directory.Move(temporary, full);
        }
        finally
        {
            if (Directory.Exists(temporary)) TryDeleteDirectory(temporary);
        }
        if (old is not null) TryDeleteDirectory(old);
    }

    static void TryDeleteDirectory(string directory)
    {
        try { Directory.Delete(directory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    static void TryDelete(string temp)
    {
        // On a read-only or failing file system the clean-up can fail too; that must not hide the first error.
        try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
