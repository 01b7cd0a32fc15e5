using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Inference;

namespace Microsoft.ML.Seco.Tests.Inference;

/// <summary>Hermes / Qwen2.5 tool calls out of a reply, whole and streamed in pieces.</summary>
[TestClass]
public sealed class HermesToolCallsTests
{
    const string Weather = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 2}}\n</tool_call>";
    const string Time = "<tool_call>\n{\"name\": \"time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>";

    static string Describe(IEnumerable<AIContent> contents) => string.Join(" | ", contents.Select(c => c switch
    {
        TextContent t => "text " + JsonSerializer.Serialize(t.Text),
        FunctionCallContent f => $"call {f.Name} {JsonSerializer.Serialize(f.Arguments)}",
        _ => c.GetType().Name,
    }));

    /// <summary>The pieces' output, adjacent texts merged (how they are cut is the parser's business).</summary>
    static List<AIContent> Streamed(IEnumerable<string> pieces, out List<AIContent> raw)
    {
        var parser = new HermesToolCalls();
        raw = pieces.SelectMany(parser.Push).ToList();
        raw.AddRange(parser.Flush());
        var merged = new List<AIContent>();
        foreach (var content in raw)
            if (content is TextContent t && merged is [.., TextContent last]) merged[^1] = new TextContent(last.Text + t.Text);
            else merged.Add(content);
        return merged;
    }

    [TestMethod]
    public void OneCallBecomesAFunctionCallWithAnIdAndItsArguments()
    {
        var contents = HermesToolCalls.Parse(Weather);
        var call = (FunctionCallContent)contents.Single();
        Assert.AreEqual("weather", call.Name);
        StringAssert.StartsWith(call.CallId, "call_");
        Assert.AreEqual("Oslo", ((JsonElement)call.Arguments!["city"]!).GetString());
        Assert.AreEqual(2, ((JsonElement)call.Arguments["days"]!).GetInt32());
    }

    [TestMethod]
    public void TwoCallsBecomeTwoFunctionCallsWithDistinctIdsAndTheNewlinesBetweenAreFormatting()
    {
        var contents = HermesToolCalls.Parse(Weather + "\n" + Time);
        Assert.AreEqual("""call weather {"city":"Oslo","days":2} | call time {"zone":"CET"}""", Describe(contents));
        var ids = contents.Cast<FunctionCallContent>().Select(c => c.CallId).ToArray();
        Assert.AreNotEqual(ids[0], ids[1]);
    }

    [TestMethod]
    public void TextAroundTheCallsStaysText()
    {
        var contents = HermesToolCalls.Parse("Let me check.\n" + Weather + "\n" + Time + "\nThen I answer <b>bold</b>.");
        Assert.AreEqual("""text "Let me check." | call weather {"city":"Oslo","days":2} | call time {"zone":"CET"} | text "Then I answer \u003Cb\u003Ebold\u003C/b\u003E." """.TrimEnd(),
            Describe(contents));
        Assert.AreEqual("No tools here, just a < sign and <tool_ thoughts.", ((TextContent)HermesToolCalls.Parse("No tools here, just a < sign and <tool_ thoughts.").Single()).Text);
    }

    [TestMethod]
    public void TagsSplitAcrossStreamedPiecesAreHeldBackAndGiveTheSameResult()
    {
        string reply = "Sure.\n" + Weather + "\n" + Time + "\nDone.";
        string whole = Describe(HermesToolCalls.Parse(reply));
        var random = new Random(5);
        var cuts = new List<IEnumerable<string>> { reply.Select(c => c.ToString()) };
        for (int i = 0; i < 50; i++)
        {
            var pieces = new List<string>();
            for (int at = 0; at < reply.Length;)
            {
                int length = Math.Min(reply.Length - at, random.Next(1, 9));
                pieces.Add(reply.Substring(at, length));
                at += length;
            }
            cuts.Add(pieces);
        }
        foreach (var pieces in cuts)
        {
            var merged = Streamed(pieces, out var raw);
            Assert.AreEqual(whole, Describe(merged), string.Join("·", pieces));
            // Nothing of a tag ever reaches the text: it was held until the call was complete.
            Assert.IsFalse(raw.OfType<TextContent>().Any(t => t.Text.Contains('<') || t.Text.Contains('{')), string.Join("·", pieces));
        }

        // Text that only looked like the start of a tag is given out once it is clear, and the rest at the end.
        var parser = new HermesToolCalls();
        Assert.AreEqual("a", ((TextContent)parser.Push("a <tool").Single()).Text);
        Assert.AreEqual(" <tools> b", string.Concat(parser.Push("s> b").OfType<TextContent>().Select(t => t.Text)));
        Assert.IsEmpty(parser.Push(" <tool_c"));
        Assert.AreEqual(" <tool_c", ((TextContent)parser.Flush().Single()).Text);
        Assert.IsFalse(parser.SawCall);
    }

    [TestMethod]
    public void MalformedJsonInsideTheTagsIsKeptAsText()
    {
        foreach (string bad in new[]
                 {
                     "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": }\n</tool_call>",
                     "<tool_call>\nnot json at all\n</tool_call>",
                     "<tool_call>\n{\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
                     "<tool_call>\n{\"name\": \"weather\", \"arguments\": [1, 2]}\n</tool_call>",
                     "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Os",
                 })
        {
            string reply = "Before.\n" + bad + "\nAfter.";
            var contents = HermesToolCalls.Parse(reply);
            Assert.AreEqual(reply, ((TextContent)contents.Single()).Text, bad);
            var streamed = Streamed(reply.Select(c => c.ToString()), out _);
            Assert.AreEqual(reply, ((TextContent)streamed.Single()).Text, bad);
        }

        // A good call next to a bad one is still a call.
        var mixed = HermesToolCalls.Parse("<tool_call>\n{oops}\n</tool_call>\n" + Weather);
        Assert.AreEqual("""text "\u003Ctool_call\u003E\n{oops}\n\u003C/tool_call\u003E" | call weather {"city":"Oslo","days":2}""", Describe(mixed));
    }

    [TestMethod]
    public void NestedJsonArgumentsArriveWhole()
    {
        const string arguments = """{"filter": {"tags": ["a", {"b": [1, 2, {"c": null}]}], "range": {"from": 1.5, "to": "}"}}, "limit": 3, "text": "</tool\u005Fcall> is only text here"}""";
        var call = (FunctionCallContent)HermesToolCalls.Parse("<tool_call>\n{\"name\": \"search\", \"arguments\": " + arguments + "}\n</tool_call>").Single();
        Assert.AreEqual("search", call.Name);
        using var expected = JsonDocument.Parse(arguments);
        Assert.AreEqual(JsonSerializer.Serialize(expected.RootElement), JsonSerializer.Serialize(call.Arguments));
        Assert.AreEqual("}", ((JsonElement)call.Arguments!["filter"]!).GetProperty("range").GetProperty("to").GetString());
    }

    [TestMethod]
    public void ArgumentsAsAJsonStringOrMissingAndAnUnclosedCompleteCallAreAccepted()
    {
        var asString = (FunctionCallContent)HermesToolCalls.Parse("<tool_call>\n{\"name\": \"weather\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\"}\"}\n</tool_call>").Single();
        Assert.AreEqual("Oslo", ((JsonElement)asString.Arguments!["city"]!).GetString());
        var none = (FunctionCallContent)HermesToolCalls.Parse("<tool_call>\n{\"name\": \"now\"}\n</tool_call>").Single();
        Assert.IsEmpty(none.Arguments!);
        // The reply ended (an end-of-turn token) before the closing tag, the JSON complete.
        var unclosed = HermesToolCalls.Parse("<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n");
        Assert.AreEqual("now", ((FunctionCallContent)unclosed.Single()).Name);
    }
}
