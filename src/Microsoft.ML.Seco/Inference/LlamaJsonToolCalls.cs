using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// Finds the tool call in a reply written as Llama 3.1's, 3.2's and 3.3's templates ask for custom tools: the whole
/// assistant message is one JSON object, <c>{"name": "...", "parameters": {...}}</c> (<c>"arguments"</c> is accepted
/// as well, as some fine-tunes write it), whether the reply comes whole or piece by piece.
/// </summary>
/// <remarks>
/// Only a reply whose trimmed text is exactly one such object is a call; anything else (prose, JSON that is not a
/// call, an object followed by more text, the built-in tools' <c>&lt;|python_tag|&gt;</c> calls) is the reply's text,
/// unchanged. Streaming therefore holds the text back while the reply so far, trimmed, is empty or a prefix of a JSON
/// object, and releases all of it, in order, as soon as it cannot become a call any more, or at the end.
/// </remarks>
internal sealed class LlamaJsonToolCalls : ToolCallFormat
{
    readonly StringBuilder _held = new();
    bool _isText;
    FunctionCallContent? _call;

    /// <summary>Splits a whole reply: the call, or its text.</summary>
    public static IReadOnlyList<AIContent> Parse(string reply) => ParseWhole(new LlamaJsonToolCalls(), reply);

    /// <inheritdoc/>
    public override IReadOnlyList<AIContent> Push(string text)
    {
        var output = new List<AIContent>();
        if (text.Length == 0) return output;
        if (_isText)
        {
            AddText(output, text);
            return output;
        }
        _held.Append(text);
        if (!CouldBeCall()) Release(output);
        return output;
    }

    /// <inheritdoc/>
    public override IReadOnlyList<AIContent> Flush()
    {
        var output = new List<AIContent>();
        if (!_isText && _call is { } call)
        {
            output.Add(call);
            SawCall = true;
            _held.Clear();
        }
        else
        {
            Release(output);
        }
        return output;
    }

    void Release(List<AIContent> output)
    {
        AddText(output, _held.ToString());
        _held.Clear();
        _call = null;
        _isText = true;
    }

    // Re-reads the held text on every piece: a reply that may be a call is one short object, so this stays cheap.
    bool CouldBeCall()
    {
        string held = _held.ToString();
        int start = 0;
        while (start < held.Length && char.IsWhiteSpace(held[start])) start++;
        if (start == held.Length) return true;
        if (held[start] != '{') return false;
        byte[] bytes = Encoding.UTF8.GetBytes(held[start..]);
        var reader = new Utf8JsonReader(bytes, isFinalBlock: false, state: default);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 0)
                {
                    // The object is complete: only whitespace may follow, and it must be a call.
                    int end = (int)reader.BytesConsumed;
                    if (!string.IsNullOrWhiteSpace(Encoding.UTF8.GetString(bytes, end, bytes.Length - end))) return false;
                    _call ??= TryParseCall(Encoding.UTF8.GetString(bytes, 0, end));
                    return _call is not null;
                }
            }
        }
        catch (JsonException)
        {
            return false;
        }
        // The reader stopped for more input inside the object: it may still become a call.
        return true;
    }

    /// <summary>The call a JSON object is, or null: no string name, or no object "parameters" / "arguments".</summary>
    internal static FunctionCallContent? TryParseCall(string json) => TryParseNamedCall(json, root =>
    {
        // A name alone is too likely to be ordinary JSON the user asked for; Meta's format always writes the parameters.
        if (!root.TryGetProperty("parameters", out var args) && !root.TryGetProperty("arguments", out args)) return null;
        var arguments = new Dictionary<string, object?>();
        return Collect(args, arguments) ? arguments : null;
    });
}
