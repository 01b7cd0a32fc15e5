using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// One way models write tool calls in a reply, read whole or piece by piece: a new instance per reply, fed with
/// <see cref="Push"/> as the text comes and closed with <see cref="Flush"/>; what they return, in order, is the reply
/// as text and <see cref="FunctionCallContent"/>s. One class per format (<see cref="HermesToolCalls"/>,
/// <see cref="LlamaJsonToolCalls"/>); <see cref="ForTemplate"/> picks the one a chat template asks the model for.
/// </summary>
internal abstract class ToolCallFormat
{
    /// <summary>Whether a call was parsed so far.</summary>
    public bool SawCall { get; protected set; }

    /// <summary>Adds the next piece of the reply; returns the text and calls it completes, in order.</summary>
    public abstract IReadOnlyList<AIContent> Push(string text);

    /// <summary>At the end of the reply: what was held back.</summary>
    public abstract IReadOnlyList<AIContent> Flush();

    /// <summary>A whole reply through a fresh parser: its text pieces (adjacent ones merged) and calls, in order.</summary>
    public static IReadOnlyList<AIContent> ParseWhole(ToolCallFormat fresh, string reply)
    {
        var contents = new List<AIContent>();
        foreach (var content in fresh.Push(reply).Concat(fresh.Flush()))
        {
            if (content is TextContent t && contents is [.., TextContent last])
                contents[^1] = new TextContent(last.Text + t.Text);
            else
                contents.Add(content);
        }
        return contents;
    }

    // Llama 3.1's, 3.2's and 3.3's templates all ask for calls with this sentence; the quotes may be escaped where a
    // template writes it inside a double-quoted string.
    internal const string LlamaJsonMarker = "{\"name\": function name, \"parameters\"";

    /// <summary>
    /// The parser factory for the calls a chat template asks for, from the template's source: Hermes where it writes
    /// <c>&lt;tool_call&gt;</c> (Qwen2.5, Qwen3, Hermes), Llama JSON where it asks for
    /// <c>{"name": function name, "parameters": ...}</c> (Llama 3.1 to 3.3); null for any other template.
    /// </summary>
    public static Func<ToolCallFormat>? ForTemplate(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Contains(HermesToolCalls.OpenTag, StringComparison.Ordinal)) return () => new HermesToolCalls();
        if (source.Replace("\\\"", "\"", StringComparison.Ordinal).Contains(LlamaJsonMarker, StringComparison.Ordinal)) return () => new LlamaJsonToolCalls();
        return null;
    }

    protected static void AddText(List<AIContent> output, string text)
    {
        if (text.Length > 0) output.Add(new TextContent(text));
    }

    /// <summary>
    /// The call a JSON object names, or null: not JSON, not an object, or no non-empty string "name". The format's own
    /// rule reads the arguments from the object (<paramref name="arguments"/>; null when they are not a call's).
    /// </summary>
    protected static FunctionCallContent? TryParseNamedCall(string json, Func<JsonElement, Dictionary<string, object?>?> arguments)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException)
        {
            return null;
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString() is not { Length: > 0 } functionName)
                return null;
            return arguments(root) is { } values ? new FunctionCallContent(NewCallId(), functionName, values) : null;
        }
    }

    // Values stay JsonElements (cloned out of the document), as Microsoft.Extensions.AI's own clients give them.
    protected static bool Collect(JsonElement arguments, Dictionary<string, object?> into)
    {
        if (arguments.ValueKind != JsonValueKind.Object) return false;
        foreach (var property in arguments.EnumerateObject()) into[property.Name] = property.Value.Clone();
        return true;
    }

    // The model writes no ids; the result message must name its call, so every call gets one.
    protected static string NewCallId() => "call_" + Guid.NewGuid().ToString("N");
}
