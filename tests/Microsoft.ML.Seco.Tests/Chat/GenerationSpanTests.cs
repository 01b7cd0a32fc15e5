using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Tests.Tokenization;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>
/// <c>{% generation %}</c> blocks (transformers' markers for <c>return_assistant_tokens_mask</c>) around the
/// assistant's replies of a ChatML template: the spans cover exactly the replies, and the text is the same as without
/// spans and as @huggingface/jinja's (which renders the blocks' bodies and drops the tags).
/// </summary>
[TestClass]
public sealed class GenerationSpanTests
{
    /// <summary>A ChatML template with generation markers around the assistant's replies.</summary>
    internal const string ChatMl = """
        {%- for message in messages %}
            {{- '<|im_start|>' + message.role + '\n' }}
            {%- if message.role == 'assistant' %}
                {% generation %}{{- message.content + '<|im_end|>' }}{% endgeneration %}
            {%- else %}
                {{- message.content + '<|im_end|>' }}
            {%- endif %}
            {{- '\n' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}
        """;

    private static JsonArray Conversation() => (JsonArray)JsonNode.Parse("""
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello! 🙂"}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "  4\n"}, {"role": "user", "content": "Thanks"}]
        """)!;

    [TestMethod]
    public void SpansCoverExactlyTheAssistantReplies()
    {
        var template = new ChatTemplate(ChatMl);
        var messages = Conversation();
        var rendering = template.RenderWithGenerationSpans(messages, addGenerationPrompt: true);

        Assert.AreEqual(template.Render(messages, addGenerationPrompt: true), rendering.Text);
        Assert.AreEqual(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! 🙂<|im_end|>\n"
            + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n  4\n<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n",
            rendering.Text);
        CollectionAssert.AreEqual(
            new[] { "Hello! 🙂<|im_end|>", "  4\n<|im_end|>" },
            rendering.GenerationSpans.Select(s => rendering.Text.Substring(s.Start, s.Length)).ToArray());
    }

    [TestMethod]
    public void SpansSurviveWhitespaceControlAroundTheTags()
    {
        var template = new ChatTemplate("{% for m in messages %}{{ m.role }}:\n  {%- generation -%}\n  {{ m.content }}  \n  {%- endgeneration -%}\n|{% endfor %}");
        var rendering = template.RenderWithGenerationSpans((JsonArray)JsonNode.Parse("""[{"role": "a", "content": "x"}, {"role": "b", "content": ""}]""")!, false);
        Assert.AreEqual("a:x|b:|", rendering.Text);
        Assert.HasCount(2, rendering.GenerationSpans);
        Assert.AreEqual(new GenerationSpan(2, 1), rendering.GenerationSpans[0]);
        Assert.AreEqual(new GenerationSpan(6, 0), rendering.GenerationSpans[1]);
    }

    [TestMethod]
    public void TextMatchesHuggingFaceJinja()
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
        var template = new ChatTemplate(ChatMl);
        var chatCase = new ChatCase("generation", Conversation(), AddGenerationPrompt: false, Tools: null, []);
        var (parseError, results) = JinjaReference.Render(ChatMl, [chatCase.Context(template.SpecialTokens)]);
        Assert.IsNull(parseError);
        Assert.AreEqual(results[0].Text, template.RenderWithGenerationSpans(chatCase.Messages, addGenerationPrompt: false).Text);
    }
}
