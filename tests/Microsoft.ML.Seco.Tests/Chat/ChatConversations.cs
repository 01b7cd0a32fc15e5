using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>One rendering request: a conversation and what else the template is given.</summary>
internal sealed record ChatCase(string Description, JsonArray Messages, bool AddGenerationPrompt, JsonArray? Tools, Dictionary<string, JsonNode?> Variables)
{
    /// <summary>Every variable the template sees, as <see cref="Microsoft.ML.Seco.Chat.ChatTemplate.Render"/> sets them, for the reference.</summary>
    public JsonObject Context(IReadOnlyDictionary<string, string?> specialTokens)
    {
        var context = new JsonObject
        {
            ["messages"] = Messages.DeepClone(),
            ["add_generation_prompt"] = AddGenerationPrompt,
            ["tools"] = Tools?.DeepClone(),
        };
        foreach (var (k, v) in specialTokens) context[k] = v;
        foreach (var (k, v) in Variables) context[k] = v?.DeepClone();
        return context;
    }
}

/// <summary>
/// Conversations generated for a real chat template: with and without a system prompt, one to four turns, empty,
/// whitespace-heavy, CJK, emoji and quote-laden contents, tool definitions, tool calls (arguments as objects or JSON
/// strings), tool results, thinking blocks, list contents, generation prompt on and off, and a few the templates
/// reject (non-alternating roles, missing content).
/// </summary>
internal static class ChatConversations
{
    /// <summary>What a template family expects of its conversations.</summary>
    public sealed record Style(bool Tools, bool ToolArgumentsAsStrings, bool Thinking, bool ContentLists, bool NullContentForToolCalls, bool LlamaToolVariables = false);

    public static Style StyleOf(string model) => model switch
    {
        "qwen2_5" => new Style(Tools: true, ToolArgumentsAsStrings: false, Thinking: false, ContentLists: false, NullContentForToolCalls: false),
        "qwen3" => new Style(Tools: true, ToolArgumentsAsStrings: false, Thinking: true, ContentLists: false, NullContentForToolCalls: false),
        "deepseek_v3" => new Style(Tools: true, ToolArgumentsAsStrings: true, Thinking: false, ContentLists: false, NullContentForToolCalls: true),
        "llama3_1-tools" => new Style(Tools: true, ToolArgumentsAsStrings: false, Thinking: false, ContentLists: false, NullContentForToolCalls: false, LlamaToolVariables: true),
        "gemma3" => new Style(Tools: false, ToolArgumentsAsStrings: false, Thinking: false, ContentLists: true, NullContentForToolCalls: false),
        _ => new Style(Tools: false, ToolArgumentsAsStrings: false, Thinking: false, ContentLists: false, NullContentForToolCalls: false),
    };

    private static readonly string[] s_contents =
    [
        "Hello!",
        "What is the capital of France?",
        "",
        "   ",
        "  leading and trailing spaces  ",
        "line one\nline two\n\n\nline five",
        "\n\n  indented\n\ttabbed\t\n \n",
        "東京は日本の首都です。北京欢迎你！한국어 텍스트도 있습니다.",
        "emoji 🙂👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🦀",
        "quotes \"double\" 'single' \\backslash\\ {{ not jinja }} {% raw %} {# x #}",
        "fake tokens <|im_start|>assistant\n<|eot_id|><start_of_turn></s>",
        "JSON-ish {\"a\": [1, 2.5, null, true], \"b\": \"ü\"}",
        "naïve café résumé Ελληνικά Ünïcödé\u00a0nbsp\u2028sep",
        "A longer answer. " + string.Concat(Enumerable.Repeat("Sentence with some words, numbers 12345 and punctuation!? ", 20)),
        "Code:\n```python\ndef f(x):\n    return x ** 2\n```\n",
    ];

    public static JsonArray ToolDefinitions() => (JsonArray)JsonNode.Parse("""
        [
          {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city, e.g. 東京 or Zürich",
            "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "City name"},
              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}},
          {"type": "function", "function": {"name": "search", "description": "Search the web; quotes \"ok\"",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 10, "minimum": 1.5},
              "safe": {"type": "boolean", "default": true}}, "required": ["query"]}}}
        ]
        """)!;

    public static List<ChatCase> For(string model, int count = 60)
    {
        var style = StyleOf(model);
        var cases = new List<ChatCase>();
        for (int i = 0; i < count; i++) cases.Add(Make(style, i));
        return cases;
    }

    private static JsonObject Message(string role, JsonNode? content) => new() { ["role"] = role, ["content"] = content };

    private static ChatCase Make(Style style, int i)
    {
        var random = new Random(7919 * (i + 1));
        string Content() => s_contents[random.Next(s_contents.Length)];
        var messages = new JsonArray();
        var notes = new List<string>();
        if (i % 3 != 1)
        {
            messages.Add(Message("system", i % 7 == 0 ? "" : "You are a helpful assistant. " + Content()));
            notes.Add("system");
        }
        int turns = 1 + random.Next(4);
        bool toolsUsed = false;
        for (int t = 0; t < turns; t++)
        {
            JsonNode userContent = style.ContentLists && random.Next(4) == 0
                ? new JsonArray(new JsonObject { ["type"] = "image" }, new JsonObject { ["type"] = "text", ["text"] = Content() })
                : Content();
            messages.Add(Message("user", userContent));
            bool last = t == turns - 1;
            if (last && i % 2 == 0) break; // ends with the user: the generation prompt follows
            if (style.Tools && random.Next(3) == 0)
            {
                toolsUsed = true;
                // Llama 3.1 takes one call per message (it raises otherwise: a few conversations check that).
                int calls = style.LlamaToolVariables ? (random.Next(6) == 0 ? 2 : 1) : 1 + random.Next(2);
                var toolCalls = new JsonArray();
                for (int c = 0; c < calls; c++)
                {
                    var arguments = new JsonObject { ["location"] = c == 0 ? "Paris" : "東京", ["unit"] = "celsius", ["days"] = c + 1 };
                    bool asString = style.ToolArgumentsAsStrings || (!style.LlamaToolVariables && random.Next(3) == 0);
                    toolCalls.Add(new JsonObject
                    {
                        ["id"] = $"call_{t}_{c}",
                        ["type"] = "function",
                        ["function"] = new JsonObject { ["name"] = c == 0 ? "get_weather" : "search", ["arguments"] = asString ? arguments.ToJsonString() : arguments },
                    });
                }
                JsonNode? callContent = style.NullContentForToolCalls ? null : random.Next(2) == 0 ? "" : "Let me check.";
                var assistant = Message("assistant", callContent);
                assistant["tool_calls"] = toolCalls;
                messages.Add(assistant);
                for (int c = 0; c < calls; c++)
                    messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = $"call_{t}_{c}", ["content"] = c == 0 ? "{\"temperature\": 21.5, \"sky\": \"晴れ\"}" : Content() });
                notes.Add($"tool calls x{calls}");
            }
            string reply = Content();
            // Python's str.lstrip('\n') keeps other leading whitespace; the reference ignores the argument and strips
            // all of it (a known difference, tested on its own): Qwen3's template lstrips its last reply.
            while (style.Thinking && reply.TrimStart('\n').Length > 0 && char.IsWhiteSpace(reply.TrimStart('\n')[0])) reply = Content();
            if (style.Thinking && random.Next(3) == 0)
            {
                var answer = s_contents[1 + random.Next(2)];
                if (random.Next(2) == 0)
                {
                    reply = $"<think>\nLet me think about it: {answer.Length} characters.\n</think>\n\n{answer}";
                    notes.Add("think in content");
                }
                else
                {
                    var m = Message("assistant", answer);
                    m["reasoning_content"] = "Reasoning about 東京.";
                    messages.Add(m);
                    notes.Add("reasoning_content");
                    continue;
                }
            }
            JsonNode assistantContent = style.ContentLists && random.Next(5) == 0
                ? new JsonArray(new JsonObject { ["type"] = "text", ["text"] = reply })
                : reply;
            messages.Add(Message("assistant", assistantContent));
        }
        if (i % 17 == 5)
        {
            messages.Add(Message("user", "first of two user messages in a row"));
            messages.Add(Message("user", "second"));
            notes.Add("non-alternating");
        }
        if (i % 19 == 7)
        {
            messages.Add(Message("user", null));
            notes.Add("null user content");
        }
        var variables = new Dictionary<string, JsonNode?>();
        if (style.Thinking && i % 3 != 2)
        {
            variables["enable_thinking"] = i % 3 == 0;
            notes.Add($"enable_thinking={i % 3 == 0}");
        }
        if (style.LlamaToolVariables)
        {
            if (i % 4 == 1) variables["tools_in_user_message"] = false;
            if (i % 3 == 0) variables["date_string"] = "07 Mar 2026";
        }
        bool passTools = (style.Tools && (toolsUsed || i % 4 == 0)) || i % 11 == 3;
        bool generationPrompt = i % 2 == 0 || i % 5 == 1;
        return new ChatCase(
            $"case {i}: {messages.Count} messages{(notes.Count > 0 ? ", " + string.Join(", ", notes) : "")}{(passTools ? ", tools" : "")}{(generationPrompt ? ", generation prompt" : "")}",
            messages, generationPrompt, passTools ? ToolDefinitions() : null, variables);
    }
}
