using System.Text.Json;

namespace Microsoft.ML.Seco.Data;

/// <summary>A row of <see cref="JsonlDocuments.LoadDataView"/> for a file of <c>text</c> lines.</summary>
internal sealed class JsonlTextRow
{
    /// <summary>The line's <c>text</c>.</summary>
    public string Text { get; set; } = "";
}

/// <summary>A row of <see cref="JsonlDocuments.LoadDataView"/> for a file of <c>prompt</c>/<c>response</c> lines.</summary>
internal sealed class JsonlPromptResponseRow
{
    /// <summary>The line's <c>prompt</c>.</summary>
    public string Prompt { get; set; } = "";
    /// <summary>The line's <c>response</c>.</summary>
    public string Response { get; set; } = "";
}

/// <summary>
/// Reads JSON-lines files: one JSON object per line with a string field <c>text</c>, or string fields <c>prompt</c>
/// and <c>response</c> (when <c>text</c> is present it is used and the others are ignored). Blank lines are skipped.
/// </summary>
public static class JsonlDocuments
{
    /// <summary>
    /// Streams the documents of <paramref name="path"/>, one line at a time.
    /// </summary>
    /// <exception cref="InvalidDataException">A line is not a JSON object, lacks the fields, or has a field that is not a
    /// string; the message names the file and the 1-based line number.</exception>
    public static IEnumerable<Document> Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"JSON-lines file '{path}' does not exist.", path);
        return ReadLines(path);
    }

    static IEnumerable<Document> ReadLines(string path)
    {
        using var reader = new StreamReader(path);
        int lineNumber = 0;
        while (reader.ReadLine() is string line)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return Parse(path, lineNumber, line);
        }
    }

    static Document Parse(string path, int lineNumber, string line)
    {
        InvalidDataException Error(string what, Exception? inner = null) => new($"{path}, line {lineNumber}: {what}", inner);
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw Error($"invalid JSON ({e.Message})", e);
        }
        using (json)
        {
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Error($"expected a JSON object, found {Describe(root.ValueKind)}.");
            string? Field(string name, bool required)
            {
                if (!root.TryGetProperty(name, out var value))
                    return required ? throw Error($"missing field \"{name}\" (each line needs \"text\", or \"prompt\" and \"response\").") : null;
                return value.ValueKind == JsonValueKind.String ? value.GetString()
                    : throw Error($"field \"{name}\" must be a string, found {Describe(value.ValueKind)}.");
            }
            if (root.TryGetProperty("text", out _)) return new Document(Field("text", true), null, null, lineNumber);
            if (!root.TryGetProperty("prompt", out _) && !root.TryGetProperty("response", out _))
                throw Error("missing field \"text\" (or \"prompt\" and \"response\").");
            return new Document(null, Field("prompt", true), Field("response", true), lineNumber);
        }
    }

    static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    /// <summary>
    /// An <see cref="IDataView"/> over the file with a string column <c>Text</c>, or string columns <c>Prompt</c> and
    /// <c>Response</c>, as decided by the first non-blank line; every later line must have the same kind. Nothing is
    /// held in memory: the file is read again by every cursor, so it must not change while the view is in use, and
    /// errors in later lines surface when a cursor reaches them.
    /// </summary>
    /// <exception cref="InvalidDataException">The first non-blank line is malformed, or the file has no document.</exception>
    public static IDataView LoadDataView(MLContext ml, string path)
    {
        ArgumentNullException.ThrowIfNull(ml);
        var first = Read(path).FirstOrDefault() ?? throw new InvalidDataException($"{path}: the file has no document (every line is blank).");
        return first.Text is not null
            ? ml.Data.LoadFromEnumerable(TextRows(path))
            : ml.Data.LoadFromEnumerable(PromptResponseRows(path));
    }

    static IEnumerable<JsonlTextRow> TextRows(string path)
    {
        foreach (var d in Read(path))
            yield return d.Text is string text ? new JsonlTextRow { Text = text }
                : throw new InvalidDataException($"{path}, line {d.Line}: expected \"text\" like the first line, found \"prompt\"/\"response\".");
    }

    static IEnumerable<JsonlPromptResponseRow> PromptResponseRows(string path)
    {
        foreach (var d in Read(path))
            yield return d.Text is null ? new JsonlPromptResponseRow { Prompt = d.Prompt!, Response = d.Response! }
                : throw new InvalidDataException($"{path}, line {d.Line}: expected \"prompt\" and \"response\" like the first line, found \"text\".");
    }
}
