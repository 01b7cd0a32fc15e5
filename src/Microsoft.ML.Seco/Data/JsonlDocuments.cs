using System.Text.Json;
using System.Text.Json.Nodes;

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

/// <summary>A row of <see cref="JsonlDocuments.LoadDataView"/> for a file of <c>messages</c> lines: the conversation as JSON text.</summary>
internal sealed class JsonlMessagesRow
{
    /// <summary>The line's <c>messages</c> array as JSON (with <c>tools</c> when the line has them: <c>{"messages", "tools"}</c>).</summary>
    public string Messages { get; set; } = "";
}

/// <summary>
/// Reads JSON-lines files: one JSON object per line with a string field <c>text</c>; or string fields <c>prompt</c>
/// and <c>response</c>; or a <c>messages</c> array of <c>{"role", "content"}</c> objects (with an optional
/// <c>tools</c> array), as Hugging Face's chat datasets hold them (<see cref="ConversationDocument"/>). The first
/// field found in that order decides the kind. Blank lines are skipped.
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
                    return required ? throw Error($"missing field \"{name}\" (each line needs \"text\", or \"prompt\" and \"response\", or \"messages\").") : null;
                return value.ValueKind == JsonValueKind.String ? value.GetString()
                    : throw Error($"field \"{name}\" must be a string, found {Describe(value.ValueKind)}.");
            }
            if (root.TryGetProperty("text", out _)) return new TextDocument(Field("text", true)!, lineNumber) { Source = path };
            if (root.TryGetProperty("messages", out var messages))
            {
                var tools = root.TryGetProperty("tools", out var t) && t.ValueKind != JsonValueKind.Null ? JsonNode.Parse(t.GetRawText()) : null;
                return ConversationDocument.Parse(JsonNode.Parse(messages.GetRawText()), tools, $"{path}, line {lineNumber}", lineNumber) with { Source = path };
            }
            if (!root.TryGetProperty("prompt", out _) && !root.TryGetProperty("response", out _))
                throw Error("missing field \"text\" (or \"prompt\" and \"response\", or \"messages\").");
            return new PromptResponseDocument(Field("prompt", true)!, Field("response", true)!, lineNumber) { Source = path };
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
    /// An <see cref="IDataView"/> over the file with a string column <c>Text</c>; or string columns <c>Prompt</c> and
    /// <c>Response</c>; or a string column <c>Messages</c> holding each conversation as JSON (what
    /// the stage's <c>MessagesColumnName</c> reads), as decided by the first non-blank line;
    /// every later line must have the same kind. Nothing is held in memory: the file is read again by every cursor, so
    /// it must not change while the view is in use, and errors in later lines surface when a cursor reaches them.
    /// </summary>
    /// <exception cref="InvalidDataException">The first non-blank line is malformed, or the file has no document.</exception>
    public static IDataView LoadDataView(MLContext ml, string path)
    {
        ArgumentNullException.ThrowIfNull(ml);
        var first = Read(path).FirstOrDefault() ?? throw new InvalidDataException($"{path}: the file has no document (every line is blank).");
        return first switch
        {
            TextDocument => ml.Data.LoadFromEnumerable(Rows(path, first, d => new JsonlTextRow { Text = ((TextDocument)d).Text })),
            PromptResponseDocument => ml.Data.LoadFromEnumerable(Rows(path, first, d => new JsonlPromptResponseRow { Prompt = ((PromptResponseDocument)d).Prompt, Response = ((PromptResponseDocument)d).Response })),
            _ => ml.Data.LoadFromEnumerable(Rows(path, first, d => new JsonlMessagesRow { Messages = MessagesJson((ConversationDocument)d) })),
        };
    }

    /// <summary>A conversation as the messages column holds it: its messages array, or <c>{"messages", "tools"}</c> when it has tools.</summary>
    public static string MessagesJson(ConversationDocument conversation) =>
        conversation.Tools is null ? conversation.Messages.ToJsonString()
            : new JsonObject { ["messages"] = conversation.Messages.DeepClone(), ["tools"] = conversation.Tools.DeepClone() }.ToJsonString();

    static IEnumerable<TRow> Rows<TRow>(string path, Document first, Func<Document, TRow> row)
    {
        foreach (var d in Read(path))
            yield return d.GetType() == first.GetType() ? row(d)
                : throw new InvalidDataException($"{path}, line {d.Line}: expected {Fields(first)} like the first line, found {Fields(d)}.");
    }

    static string Fields(Document d) => d switch
    {
        TextDocument => "\"text\"",
        PromptResponseDocument => "\"prompt\" and \"response\"",
        _ => "\"messages\"",
    };
}
