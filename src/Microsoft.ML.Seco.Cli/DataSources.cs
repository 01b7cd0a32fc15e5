using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco.Cli;

/// <summary>What a --data path holds, as an ML.NET data view with a Text column or Prompt/Response columns.</summary>
internal sealed record DataSource(IDataView View, bool PromptResponse);

/// <summary>Reads training and evaluation data: a JSON-lines file, a .txt file (one document) or a folder of .txt files.</summary>
internal static class DataSources
{
    public static DataSource Load(MLContext ml, string path, string flag)
    {
        if (Directory.Exists(path))
        {
            var files = TextFiles(path, flag);
            return new DataSource(ml.Data.LoadFromEnumerable(FolderRows(files)), false);
        }
        if (!File.Exists(path)) throw new UsageException($"{flag} '{path}' does not exist (expected a .jsonl file, a .txt file or a folder of .txt files).");
        if (IsText(path))
            return new DataSource(ml.Data.LoadFromEnumerable(FolderRows([path])), false);
        var view = JsonlDocuments.LoadDataView(ml, path);
        return new DataSource(view, view.Schema.GetColumnOrNull("Prompt") is not null);
    }

    /// <summary>The documents of a --data path, in order (text documents, or prompt + response pairs).</summary>
    public static IEnumerable<Document> Documents(string path, string flag)
    {
        if (Directory.Exists(path)) return TextFiles(path, flag).Select((f, i) => new TextDocument(File.ReadAllText(f), i + 1) { Source = f });
        if (!File.Exists(path)) throw new UsageException($"{flag} '{path}' does not exist (expected a .jsonl file, a .txt file or a folder of .txt files).");
        if (IsText(path)) return [new TextDocument(File.ReadAllText(path), 1) { Source = path }];
        return JsonlDocuments.Read(path);
    }

    static bool IsText(string path) => string.Equals(Path.GetExtension(path), ".txt", StringComparison.OrdinalIgnoreCase);

    static string[] TextFiles(string folder, string flag)
    {
        var files = Directory.GetFiles(folder, "*.txt").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        return files.Length > 0 ? files : throw new UsageException($"{flag} '{folder}' is a folder without .txt files.");
    }

    // Read lazily: only one document is in memory at a time, and each cursor reads the files again.
    static IEnumerable<JsonlTextRow> FolderRows(IReadOnlyList<string> files)
    {
        foreach (var file in files) yield return new JsonlTextRow { Text = File.ReadAllText(file) };
    }
}
