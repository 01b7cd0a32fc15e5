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
/// Tool calling through <see cref="SecoChatClient"/> with Llama 3.1's JSON calls: tools, a call and its result rendered
/// into the carried llama3_1-tools template (checked against @huggingface/jinja), the refusal of a template whose call
/// format is unknown, and a reply that is one JSON call, written by a bigram model over a byte vocabulary with a few
/// whole-chunk tokens.
/// </summary>
[TestClass]
public sealed class LlamaToolCallingTests
{
    const int EndOfText = TokenizerFiles.BytesEndOfTextId;
    const int First = EndOfText + 1;

    // The reply's tokens after "\n": a call split inside its JSON; after "=": the answer.
    static readonly string[] Chunks =
    [
        "{\"name\": \"get_weather\", ",
        "\"parameters\": {\"city\": \"Oslo\"}}",
        "It is sunny in Oslo.",
    ];

    static readonly (int, int)[] Table =
    [
        ('\n', First), (First, First + 1), (First + 1, EndOfText),
        ('=', First + 2), (First + 2, EndOfText),
    ];

    // Asks for calls in Llama 3.1's words and writes them back as Llama 3.1's template does; its generation prompt ends
    // in "=" after a tool result, "\n" otherwise.
    const string TestTemplate =
        "{%- if tools %}[Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.{% for t in tools %}{{ t.function.name }};{% endfor %}]{% endif %}" +
        "{%- for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}{{ '{\"name\": \"' + m.tool_calls[0].function.name + '\", \"parameters\": ' }}{{ m.tool_calls[0].function.arguments | tojson }}{{ '}' }}{% else %}{{ m.content }}{% endif %}{% endfor %}" +
        "{%- if add_generation_prompt %}<|assistant|>{% if messages[-1].role == 'tool' %}={% else %}{{ '\\n' }}{% endif %}{% endif %}";

    static readonly ChatMessage[] Question = [new(ChatRole.User, "Weather in Oslo?")];

    string _dir = "";
    ModelTokenizer _tokenizer = null!;

    [TestInitialize]
    public void WriteTokenizer()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-llama-tools-" + Guid.NewGuid().ToString("N"));
        TokenizerFiles.WriteBytes(_dir);
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

    static ChatTemplate Llama31Tools() =>
        new(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates", "llama3_1-tools.jinja")),
            new Dictionary<string, string?> { ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>" });

    [FunctionDescription("Current weather in a city")]
    static string GetWeather([FunctionDescription("City name, e.g. Zürich")] string city, [FunctionDescription("celsius or fahrenheit")] string unit = "celsius") => $"sunny in {city} ({unit})";

    static AIFunction Weather() => AIFunctionFactory.Create(GetWeather, "get_weather");

    [TestMethod]
    public void TheLlamaPromptWithToolsACallAndItsResultIsWhatHuggingFaceJinjaRenders()
    {
        try
        {
            _ = RealTokenizerFiles.Extract(JinjaReference.Package, JinjaReference.Version, "package/dist/", ["index.cjs"]);
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        var template = Llama31Tools();
        using var model = Model();
        using var client = new SecoChatClient(model, _tokenizer, template);
        ChatMessage[] history =
        [
            new(ChatRole.User, "Weather in Zürich?"),
            new(ChatRole.Assistant, [new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Zürich", ["unit"] = "celsius" })]),
            new(ChatRole.Tool, [new FunctionResultContent("call_1", new { sky = "clear", degrees = 21 })]),
            new(ChatRole.Assistant, "Clear, 21 degrees."),
            new(ChatRole.User, "And in Oslo?"),
            new(ChatRole.Assistant, [new FunctionCallContent("call_2", "get_weather", new Dictionary<string, object?> { ["city"] = "Oslo" })]),
            new(ChatRole.Tool, [new FunctionResultContent("call_2", "sunny")]),
        ];
        var options = new ChatOptions { Tools = [Weather()], Instructions = "You are terse." };
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
        Assert.IsNull(results.Single().Error);
        Assert.AreEqual(results.Single().Text, prompt);
        StringAssert.StartsWith(prompt, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n");
        StringAssert.Contains(prompt, "You are terse.<|eot_id|>");
        StringAssert.Contains(prompt, "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.");
        StringAssert.Contains(prompt, "\"name\": \"get_weather\",\n        \"description\": \"Current weather in a city\"");
        // The calls as the model writes them, and the results in ipython turns.
        StringAssert.Contains(prompt, "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich\", \"unit\": \"celsius\"}}<|eot_id|>");
        StringAssert.Contains(prompt, "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}<|eot_id|>");
        StringAssert.Contains(prompt, "<|start_header_id|>ipython<|end_header_id|>\n\n");
        StringAssert.Contains(prompt, "clear");
        StringAssert.EndsWith(prompt, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }

    [TestMethod]
    public void AToolReadingTemplateWithAnUnknownCallFormatIsRefused()
    {
        using var model = Model();
        var template = new ChatTemplate("{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}{{ '\\n' }}");
        Assert.IsTrue(template.ReadsTools);
        using var client = new SecoChatClient(model, _tokenizer, template, new SecoChatClientOptions { ModelId = "mystery-model" });
        var tools = new ChatOptions { Tools = [Weather()] };
        var e = Assert.ThrowsExactly<NotSupportedException>(() => client.GetResponseAsync(Question, tools));
        StringAssert.Contains(e.Message, "'mystery-model'");
        StringAssert.Contains(e.Message, "does not parse");
        Assert.ThrowsExactly<NotSupportedException>(() => client.GetStreamingResponseAsync(Question, tools));
        Assert.ThrowsExactly<NotSupportedException>(() => client.RenderPrompt(Question, tools));
        // Without tools the client serves the model as before.
        Assert.AreEqual("Weather in Oslo?\n", client.RenderPrompt(Question));
    }

    [TestMethod]
    public async Task AReplyThatIsOneJsonCallBecomesAFunctionCallStreamedOrNot()
    {
        using var model = Model();
        using var client = new SecoChatClient(model, _tokenizer, new ChatTemplate(TestTemplate), new SecoChatClientOptions { ModelId = "tiny-llama-tools" });
        var options = new ChatOptions { Tools = [Weather()] };

        var response = await client.GetResponseAsync(Question, options);
        Assert.AreEqual(ChatFinishReason.ToolCalls, response.FinishReason);
        var call = (FunctionCallContent)response.Messages.Single().Contents.Single();
        Assert.AreEqual("get_weather", call.Name);
        Assert.AreEqual("Oslo", ((JsonElement)call.Arguments!["city"]!).GetString());
        StringAssert.StartsWith(call.CallId, "call_");
        Assert.AreEqual(2, response.Usage!.OutputTokenCount);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Question, options)) updates.Add(update);
        CollectionAssert.AreEqual(new[] { "FunctionCallContent:get_weather", "UsageContent:" },
            updates.SelectMany(u => u.Contents).Select(c => c.GetType().Name + ":" + c switch { TextContent t => t.Text, FunctionCallContent f => f.Name, _ => "" }).ToArray());
        Assert.AreEqual(ChatFinishReason.ToolCalls, updates[^1].FinishReason);

        // Without tools offered the same reply is the model's text.
        var text = await client.GetResponseAsync(Question);
        Assert.AreEqual(Chunks[0] + Chunks[1], text.Text);
        Assert.AreEqual(ChatFinishReason.Stop, text.FinishReason);
    }

    [TestMethod]
    public async Task FunctionInvocationRunsTheCallAndTheModelAnswersFromItsResult()
    {
        using var model = Model();
        using var seco = new SecoChatClient(model, _tokenizer, new ChatTemplate(TestTemplate), new SecoChatClientOptions { ModelId = "tiny-llama-tools" });
        var cities = new List<string>();
        var weather = AIFunctionFactory.Create((string city) => { cities.Add(city); return "sunny"; }, "get_weather", "Current weather in a city");
        using var chat = seco.AsBuilder().UseFunctionInvocation().Build();
        var options = new ChatOptions { Tools = [weather] };

        var response = await chat.GetResponseAsync(Question, options);
        CollectionAssert.AreEqual(new[] { "Oslo" }, cities);
        Assert.AreEqual("It is sunny in Oslo.", response.Messages[^1].Text);
        Assert.AreEqual(ChatFinishReason.Stop, response.FinishReason);
        string prompt = seco.RenderPrompt(Question.Concat(response.Messages.Take(response.Messages.Count - 1)), options);
        StringAssert.Contains(prompt, "<|assistant|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}<|tool|>sunny<|assistant|>=");

        cities.Clear();
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in chat.GetStreamingResponseAsync(Question, options)) updates.Add(update);
        CollectionAssert.AreEqual(new[] { "Oslo" }, cities);
        Assert.AreEqual("It is sunny in Oslo.", updates.ToChatResponse().Messages[^1].Text);
    }
}
