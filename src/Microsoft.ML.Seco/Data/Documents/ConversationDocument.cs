using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;

namespace Microsoft.ML.Seco.Data;

/// <summary>
/// A conversation in Hugging Face's <c>messages</c> form (<c>{"role", "content"}</c> objects, optionally with
/// <c>tool_calls</c>), rendered by the model's chat template (<see cref="DocumentEncoder.ChatTemplate"/>) and trained,
/// by default, on the assistant's turns only (<see cref="DocumentEncoder.AssistantOnlyLoss"/>; where they are:
/// <see cref="AssistantTurns"/>). The template writes the special tokens itself (BOS included), so none are added.
/// </summary>
/// <param name="Messages">The messages, validated by <see cref="Parse"/>.</param>
/// <param name="Tools">The tool definitions the template is given, or null.</param>
/// <param name="Line">1-based line (or row) in its source; 0 when it has none.</param>
public sealed record ConversationDocument(JsonArray Messages, JsonArray? Tools = null, int Line = 0) : Document(Line)
{
    /// <summary>The roles a message may have: those Hugging Face's templates read.</summary>
    public static readonly IReadOnlyList<string> Roles = ["system", "developer", "user", "assistant", "tool", "ipython"];

    /// <inheritdoc/>
    public override string Kind => "messages";

    /// <summary>
    /// Validates <paramref name="messages"/> (and <paramref name="tools"/>) as a conversation: an array of objects, each
    /// with a known <c>role</c> (<see cref="Roles"/>) and a <c>content</c> that is a string or a list of parts, which
    /// only an assistant message with <c>tool_calls</c> may leave out or set to null.
    /// </summary>
    /// <param name="messages">The <c>messages</c> value.</param>
    /// <param name="tools">The <c>tools</c> value, or null.</param>
    /// <param name="where">Where the conversation is ("file, line 3"), the start of every error.</param>
    /// <param name="line">The line to record.</param>
    /// <exception cref="InvalidDataException">Not a conversation; the message names <paramref name="where"/> and the turn.</exception>
    public static ConversationDocument Parse(JsonNode? messages, JsonNode? tools, string where, int line = 0)
    {
        if (messages is not JsonArray list) throw new InvalidDataException($"{where}: \"messages\" must be an array of {{\"role\", \"content\"}} objects, found {Describe(messages)}.");
        if (list.Count == 0) throw new InvalidDataException($"{where}: \"messages\" is empty.");
        for (int i = 0; i < list.Count; i++)
        {
            string turn = $"{where}, message {i + 1}";
            if (list[i] is not JsonObject message) throw new InvalidDataException($"{turn}: expected a {{\"role\", \"content\"}} object, found {Describe(list[i])}.");
            if (message["role"] is not JsonValue roleValue || roleValue.GetValueKind() != JsonValueKind.String)
                throw new InvalidDataException($"{turn}: missing \"role\" (a string: {string.Join(", ", Roles)}).");
            string role = roleValue.GetValue<string>();
            if (!Roles.Contains(role)) throw new InvalidDataException($"{turn}: unknown role \"{role}\" (expected {string.Join(", ", Roles)}).");
            bool toolCalls = message["tool_calls"] is JsonArray { Count: > 0 };
            switch (message.TryGetPropertyValue("content", out var content) ? content : null)
            {
                case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                case JsonArray:
                    break;
                case null when role == "assistant" && toolCalls:
                    break;
                case null:
                    throw new InvalidDataException($"{turn} ({role}): missing \"content\" (a string{(role == "assistant" ? ", or null with \"tool_calls\"" : "")}).");
                default:
                    throw new InvalidDataException($"{turn} ({role}): \"content\" must be a string or a list of parts, found {Describe(content)}.");
            }
        }
        if (tools is not null and not JsonArray) throw new InvalidDataException($"{where}: \"tools\" must be an array, found {Describe(tools)}.");
        return new ConversationDocument(list, (JsonArray?)tools, line);
    }

    /// <summary>
    /// A conversation from JSON text, as a messages column holds it (<see cref="JsonlDocuments.MessagesJson"/>): the
    /// messages array, or an object with <c>messages</c> and optionally <c>tools</c>; validated by <see cref="Parse"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">Not JSON, or not a conversation; the message names <paramref name="where"/>.</exception>
    public static ConversationDocument FromJson(string json, string where, int line = 0)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: the messages are not valid JSON ({e.Message}).", e); }
        return node is JsonObject wrapper && wrapper.ContainsKey("messages")
            ? Parse(wrapper["messages"]?.DeepClone(), wrapper["tools"]?.DeepClone(), where, line)
            : Parse(node, null, where, line);
    }

    internal override EncodedDocument Encode(DocumentEncoder encoder)
    {
        var template = encoder.ChatTemplate ?? throw new InvalidDataException(
            $"{Where}: a conversation needs the model's chat template, and the tokenizer has none (tokenizer_config.json \"chat_template\", or chat_template.jinja).");
        // The rendering's tokens, computed once: for the mask, and for the end-of-turn token of a turn found by its content.
        (string Text, (IReadOnlyList<int> Ids, IReadOnlyList<(int Start, int End)> Offsets) Tokens)? tokenized = null;
        (IReadOnlyList<int> Ids, IReadOnlyList<(int Start, int End)> Offsets) Tokenize(string rendering)
        {
            if (tokenized?.Text != rendering) tokenized = (rendering, encoder.Tokenizer.EncodeWithOffsets(rendering));
            return tokenized.Value.Tokens;
        }
        int EndOfTurnLength(string rendering, int position)
        {
            var (tokenIds, tokenOffsets) = Tokenize(rendering);
            for (int t = 0; t < tokenIds.Count; t++)
                if (tokenOffsets[t].Start == position) return encoder.Tokenizer.EosIds.Contains(tokenIds[t]) ? tokenOffsets[t].End - position : 0;
            return 0;
        }

        string text;
        IReadOnlyList<GenerationSpan> assistant;
        try
        {
            (text, assistant) = encoder.AssistantOnlyLoss
                ? AssistantTurns(template, Messages, Tools, encoder.ChatTemplateVariables, EndOfTurnLength)
                : (template.Render(Messages, addGenerationPrompt: false, Tools, encoder.ChatTemplateVariables), []);
        }
        catch (ChatTemplateException e)
        {
            throw new InvalidDataException($"{Where}: the chat template failed on this conversation: {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{Where}, {e.Message}", e);
        }
        var (ids, offsets) = Tokenize(text);
        var trained = new bool[ids.Count];
        for (int t = 0, s = 0; t < ids.Count; t++)
        {
            if (!encoder.AssistantOnlyLoss) { trained[t] = true; continue; }
            var (start, end) = offsets[t];
            while (s < assistant.Count && assistant[s].End <= start) s++;
            trained[t] = s < assistant.Count && assistant[s].Start < Math.Max(end, start + 1);
        }
        if (encoder.AssistantOnlyLoss && encoder.RefuseUntrainedConversations && !trained.Any(x => x))
            throw new InvalidDataException($"{Where}: the conversation renders to nothing trainable: it has no assistant turn with text (the loss is on the assistant's turns; AssistantOnlyLoss = false trains on every token).");
        return new EncodedDocument(ids.ToArray(), trained, text);
    }

    /// <summary>
    /// The rendered conversation and the characters of its assistant turns. With <c>{% generation %}</c> markers in
    /// the template, the marked characters. Without, turn by turn as TRL and transformers find them: a turn starts
    /// where the conversation before it, rendered with the generation prompt, stops agreeing with the whole rendering,
    /// and it is what rendering the conversation up to it adds after that, less what a template writes only into a
    /// last turn (Qwen3's empty thinking block): the longest tail of it that the whole rendering continues with. Where
    /// a template writes the generation prompt whatever it is asked (Llama 3's always ends with the assistant's header),
    /// or a turn does not appear in the whole rendering as it renders as the last one, the turn is
    /// found as axolotl finds it instead: the content is where the rendering changes when the content is replaced by a
    /// placeholder, and the turn is the content and the end-of-turn token right after it
    /// (<paramref name="endOfTurnLength"/>).
    /// </summary>
    /// <param name="template">The chat template.</param>
    /// <param name="messages">The conversation.</param>
    /// <param name="tools">Tool definitions, or null.</param>
    /// <param name="variables">Extra template variables, or null.</param>
    /// <param name="endOfTurnLength">
    /// Given the rendering and a position in it, the length of the end-of-turn (or end-of-sequence) token that starts
    /// there, else 0; null: none is recognised.
    /// </param>
    /// <exception cref="ChatTemplateException">The template raised.</exception>
    /// <exception cref="InvalidDataException">A turn cannot be found in the whole rendering (the message names it).</exception>
    public static (string Text, IReadOnlyList<GenerationSpan> Spans) AssistantTurns(ChatTemplate template, JsonArray messages, JsonArray? tools = null,
        IReadOnlyDictionary<string, JsonNode?>? variables = null, Func<string, int, int>? endOfTurnLength = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(messages);
        var whole = template.RenderWithGenerationSpans(messages, addGenerationPrompt: false, tools, variables);
        if (template.HasGenerationMarkers) return (whole.Text, whole.GenerationSpans);
        string text = whole.Text;
        var spans = new List<GenerationSpan>();
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i]?["role"]?.GetValue<string>() != "assistant") continue;
            string before = RenderPrefix(template, messages, i, addGenerationPrompt: true, tools, variables);
            // A template that writes the generation prompt whatever add_generation_prompt says also writes it after a last turn.
            bool ignoresGenerationPrompt = i > 0 && before == RenderPrefix(template, messages, i, addGenerationPrompt: false, tools, variables);
            int start = CommonPrefix(before, text);
            string through = RenderPrefix(template, messages, i + 1, addGenerationPrompt: false, tools, variables);
            var turn = through.AsSpan(CommonPrefix(before, through));
            int skip = 0;
            while (skip < turn.Length && !text.AsSpan(start).StartsWith(turn[skip..], StringComparison.Ordinal)) skip++;
            var span = !ignoresGenerationPrompt && (turn.Length == 0 || skip < turn.Length)
                ? new GenerationSpan(start, turn.Length - skip)
                : ContentAndEndOfTurn(template, messages, i, text, tools, variables, endOfTurnLength);
            if (span.Length > 0) spans.Add(span);
        }
        return (text, spans);
    }

    const string Placeholder = "\uE000";

    // The content of assistant message i in the whole rendering `text`: where the rendering with that content replaced
    // by a private-use placeholder differs from it; then the end-of-turn token right after it.
    static GenerationSpan ContentAndEndOfTurn(ChatTemplate template, JsonArray messages, int i, string text, JsonArray? tools,
        IReadOnlyDictionary<string, JsonNode?>? variables, Func<string, int, int>? endOfTurnLength)
    {
        InvalidDataException Unfound(string why) => new($"message {i + 1} (assistant): {why}, so its tokens cannot be found; a template with {{% generation %}} markers, or AssistantOnlyLoss = false, trains it.");
        if (messages[i]?["content"] is not JsonValue content || content.GetValueKind() != System.Text.Json.JsonValueKind.String)
            throw Unfound("the chat template renders this turn differently once later messages follow and it has no text content to look for");
        var marked = new JsonArray(messages.Select(m => m?.DeepClone()).ToArray());
        marked[i]!["content"] = Placeholder;
        string other = template.Render(marked, addGenerationPrompt: false, tools, variables);
        int start = CommonPrefix(text, other);
        int tail = 0;
        while (tail < text.Length - start && tail < other.Length - start && text[^(tail + 1)] == other[^(tail + 1)]) tail++;
        int end = text.Length - tail;
        if (other.Length - tail != start + Placeholder.Length || end < start)
            throw Unfound("the chat template changes more than this turn's content when the content changes");
        return new GenerationSpan(start, end - start + (endOfTurnLength?.Invoke(text, end) ?? 0));
    }

    // The first `count` messages rendered; a template that cannot render an empty conversation starts the first turn at 0.
    static string RenderPrefix(ChatTemplate template, JsonArray messages, int count, bool addGenerationPrompt, JsonArray? tools,
        IReadOnlyDictionary<string, JsonNode?>? variables)
    {
        var prefix = new JsonArray(messages.Take(count).Select(m => m?.DeepClone()).ToArray());
        try
        {
            return template.Render(prefix, addGenerationPrompt, tools, variables);
        }
        catch (ChatTemplateException) when (count == 0)
        {
            return "";
        }
    }

    static int CommonPrefix(string a, string b) => a.AsSpan().CommonPrefixLength(b);

    static string Describe(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "an object",
        JsonArray => "an array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            _ => "a value",
        },
        _ => "a value",
    };
}
