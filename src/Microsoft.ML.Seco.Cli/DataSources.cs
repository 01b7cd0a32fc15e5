using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// What a --data path holds, as an ML.NET data view with a Text column, Prompt/Response columns, or a Messages column
/// (each row a conversation as JSON, <see cref="JsonlDocuments.MessagesJson"/>).
/// </summary>
internal sealed record DataSource(IDataView View, bool PromptResponse, bool Messages = false);

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
        return new DataSource(view, view.Schema.GetColumnOrNull("Prompt") is not null, view.Schema.GetColumnOrNull("Messages") is not null);
    }

    /// <summary>The documents of a --data path, in order (text documents, prompt + response pairs or conversations).</summary>
    public static IEnumerable<Document> Documents(string path, string flag)
    {
        if (Directory.Exists(path)) return TextFiles(path, flag).Select((f, i) => new TextDocument(File.ReadAllText(f), i + 1) { Source = f });
        if (!File.Exists(path)) throw new UsageException($"{flag} '{path}' does not exist (expected a .jsonl file, a .txt file or a folder of .txt files).");
        if (IsText(path)) return [new TextDocument(File.ReadAllText(path), 1) { Source = path }];
        return JsonlDocuments.Read(path);
    }

    /// <summary>
    /// The encoder of each document, as training encodes it (<see cref="DocumentEncoder"/>): conversations with the model's chat template
    /// (read from <paramref name="modelDirectory"/> when the first one comes, so that text data never needs one), the
    /// other kinds with the tokenizer alone, which is all they use.
    /// </summary>
    public static Func<Document, DocumentEncoder> Encoders(string modelDirectory, Tokenization.ModelTokenizer tokenizer, bool assistantOnlyLoss)
    {
        var plain = new DocumentEncoder(tokenizer, AssistantOnlyLoss: assistantOnlyLoss);
        DocumentEncoder? chat = null;
        return document => document is ConversationDocument ? chat ??= DocumentEncoder.ForModel(modelDirectory, tokenizer, assistantOnlyLoss) : plain;
    }

    static bool IsText(string path) => string.Equals(Path.GetExtension(path), ".txt", StringComparison.OrdinalIgnoreCase);

    static string[] TextFiles(string folder, string flag)
    {
        var files = Directory.GetFiles(folder, "*.txt").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        return files.Length > 0 ? files : throw new UsageException($"{flag} '{folder}' is a folder without .txt files.");
    }

    // Read lazily: only one document is in memory at a time, and each cursor reads the files again.
    static IEnumerable<TextRow> FolderRows(IReadOnlyList<string> files)
    {
        foreach (var file in files) yield return new TextRow { Text = File.ReadAllText(file) };
    }

    /// <summary>A row of a folder's data view: one file's text in the stage's default text column.</summary>
    sealed class TextRow
    {
        public string Text = "";
    }
}
