using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// Finds tool calls in a generated reply written in the Hermes format that Qwen2.5-Instruct's and Qwen3's chat
/// templates ask for, <c>&lt;tool_call&gt;\n{"name": "...", "arguments": {...}}\n&lt;/tool_call&gt;</c> (any number
/// of them), and splits the reply into text and <see cref="FunctionCallContent"/>s, whether it comes whole or piece
/// by piece.
/// </summary>
/// <remarks>
/// Text that might still become an opening tag (a split <c>&lt;tool_</c>) is held back until the next piece shows
/// what it is, and so is the whitespace before it: the template writes a newline before each call and between
/// calls, which is formatting, not reply text. For the same reason whitespace right after a call's closing tag is
/// dropped. A call whose JSON does not parse, or has no name, is given back as the raw text it was, tags and
/// whitespace included; a call still open at the end of the reply is a call if its JSON is complete (as vLLM's
/// Hermes parser accepts it), otherwise raw text. Other formats are other classes (<see cref="LlamaJsonToolCalls"/>).
/// </remarks>
internal sealed class HermesToolCalls : ToolCallFormat
{
    internal const string OpenTag = "<tool_call>";
    internal const string CloseTag = "</tool_call>";

    readonly StringBuilder _held = new();
    readonly StringBuilder _call = new();
    string _lead = "";
    bool _inCall, _afterCall;

    /// <summary>Splits a whole reply: its text pieces (adjacent ones merged) and calls, in order.</summary>
    public static IReadOnlyList<AIContent> Parse(string reply) => ParseWhole(new HermesToolCalls(), reply);

    /// <inheritdoc/>
    public override IReadOnlyList<AIContent> Push(string text)
    {
        var output = new List<AIContent>();
        string rest = text;
        while (rest.Length > 0)
            rest = _inCall ? InCall(rest, output) : InText(rest, output);
        return output;
    }

    /// <summary>At the end of the reply: what was held back (or an unclosed call).</summary>
    public override IReadOnlyList<AIContent> Flush()
    {
        var output = new List<AIContent>();
        if (_inCall)
        {
            string body = _call.ToString();
            if (TryParseCall(body) is { } call) Called(call, output);
            else AddText(output, _lead + OpenTag + body);
            _inCall = false;
            _call.Clear();
        }
        else if (_held.Length > 0)
        {
            AddText(output, _held.ToString());
        }
        _held.Clear();
        return output;
    }

    // Returns what follows an opening tag (to be read in the call), or "" when all of it was consumed as text.
    string InText(string text, List<AIContent> output)
    {
        if (_afterCall)
        {
            text = text.TrimStart();
            if (text.Length == 0) return "";
            _afterCall = false;
        }
        _held.Append(text);
        string buffer = _held.ToString();
        _held.Clear();
        int open = buffer.IndexOf(OpenTag, StringComparison.Ordinal);
        if (open >= 0)
        {
            string before = buffer[..open];
            string trimmed = before.TrimEnd();
            AddText(output, trimmed);
            _lead = before[trimmed.Length..];
            _inCall = true;
            return buffer[(open + OpenTag.Length)..];
        }
        // Hold a suffix that may grow into the tag, and the whitespace before it.
        int partial = 0;
        for (int k = Math.Min(OpenTag.Length - 1, buffer.Length); k > 0; k--)
            if (buffer.AsSpan(buffer.Length - k).SequenceEqual(OpenTag.AsSpan(0, k))) { partial = k; break; }
        int keepFrom = buffer.Length - partial;
        while (keepFrom > 0 && char.IsWhiteSpace(buffer[keepFrom - 1])) keepFrom--;
        AddText(output, buffer[..keepFrom]);
        _held.Append(buffer, keepFrom, buffer.Length - keepFrom);
        return "";
    }

    // Returns what follows the closing tag, or "" while the call is still open.
    string InCall(string text, List<AIContent> output)
    {
        // The closing tag may straddle the pieces: search from where it could start.
        int from = Math.Max(0, _call.Length - (CloseTag.Length - 1));
        _call.Append(text);
        string buffer = _call.ToString();
        int close = buffer.IndexOf(CloseTag, from, StringComparison.Ordinal);
        if (close < 0) return "";
        string body = buffer[..close];
        _call.Clear();
        _inCall = false;
        if (TryParseCall(body) is { } call) Called(call, output);
        else AddText(output, _lead + OpenTag + body + CloseTag);
        _lead = "";
        return buffer[(close + CloseTag.Length)..];
    }

    void Called(FunctionCallContent call, List<AIContent> output)
    {
        output.Add(call);
        SawCall = true;
        _afterCall = true;
        _lead = "";
    }

    /// <summary>The call a tag's body holds, or null when it is not one: not JSON, no string name, arguments not an object.</summary>
    internal static FunctionCallContent? TryParseCall(string body) => TryParseNamedCall(body, root =>
    {
        var arguments = new Dictionary<string, object?>();
        if (!root.TryGetProperty("arguments", out var args)) return arguments;
        // Some fine-tunes write the arguments as a JSON string, as OpenAI's API carries them.
        if (args.ValueKind == JsonValueKind.String)
        {
            try
            {
                using var inner = JsonDocument.Parse(args.GetString()!);
                return Collect(inner.RootElement, arguments) ? arguments : null;
            }
            catch (JsonException)
            {
                return null;
            }
        }
        return args.ValueKind == JsonValueKind.Null || Collect(args, arguments) ? arguments : null;
    });
}
