namespace Microsoft.ML.Seco.Tests.Packaging;

/// <summary>Paths in the source tree that the tests were built from.</summary>
internal static class RepositoryFiles
{
    static readonly Lazy<string> Root_ = new(() =>
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
            if (File.Exists(Path.Combine(directory.FullName, "Microsoft.ML.Seco.sln"))) return directory.FullName;
        throw new InvalidOperationException($"No Microsoft.ML.Seco.sln above {AppContext.BaseDirectory}: these tests read the repository they were built from.");
    });

    /// <summary>The folder holding Microsoft.ML.Seco.sln.</summary>
    public static string Root => Root_.Value;

    /// <summary>A path relative to the repository root, with '/' separators.</summary>
    public static string PathOf(string relative) => Path.Combine(Root, relative.Replace('/', Path.DirectorySeparatorChar));
}
