using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tests.MLNet;
using Microsoft.ML.Seco.Tokenization;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Inference;

[TestClass]
public sealed class ChatClientTests
{
    const int EndOfText = TokenizerFiles.BytesEndOfTextId;
    static readonly ChatMessage[] Conversation =
    {
        new(ChatRole.System, "You are terse."),
        new(ChatRole.User, "Say hi."),
    };

    string _dir = "";
    ModelTokenizer _bytes = null!;

    [TestInitialize]
    public void WriteTokenizer()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-chat-" + Guid.NewGuid().ToString("N"));
        TokenizerFiles.WriteBytes(_dir);
        _bytes = ModelTokenizer.Load(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A hand-written ChatML renderer (what Qwen2's template writes), generation prompt included.</summary>
    static string ChatML(JsonArray messages)
    {
        var text = new StringBuilder();
        foreach (var message in messages)
            text.Append("<|im_start|>").Append((string)message!["role"]!).Append('\n').Append((string?)message["content"]).Append("<|im_end|>\n");
        return text.Append("<|im_start|>assistant\n").ToString();
    }

    /// <summary>A random model over the byte vocabulary (256 bytes + end-of-text).</summary>
    static CausalLM RandomModel() => TestModels.Create(TestModels.Llama(vocab: EndOfText + 1));

    /// <summary>
    /// A model whose next token depends only on the last one, by a table: attention and MLP write nothing into the
    /// residual stream, each source token embeds as a basis vector and lm_head maps it to its successor.
    /// </summary>
    static CausalLM BigramModel(params (int From, int To)[] table) => BigramModel(EndOfText + 1, table);

    /// <summary>As the other overload, over a vocabulary of <paramref name="vocab"/> ids.</summary>
    internal static CausalLM BigramModel(int vocab, params (int From, int To)[] table)
    {
        var model = TestModels.Create(TestModels.Llama(vocab: vocab));
        using var _ = no_grad();
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        foreach (var (name, p) in parameters)
            if (name.EndsWith("o_proj.weight", StringComparison.Ordinal) || name.EndsWith("down_proj.weight", StringComparison.Ordinal)) p.zero_();
        parameters["model.norm.weight"].fill_(1);
        var embed = parameters["model.embed_tokens.weight"];
        var head = parameters["lm_head.weight"];
        // Several tokens may share a successor: its row is cleared once, then gains a feature per source.
        foreach (int to in table.Select(t => t.To).Distinct()) head[to].zero_();
        for (int i = 0; i < table.Length; i++)
        {
            embed[table[i].From].zero_();
            embed[table[i].From, i].fill_(1);
            head[table[i].To, i].fill_(10);
        }
        return model;
    }

    // After ChatML's "assistant\n": "Hi €!" and end-of-text; € is E2 82 AC in UTF-8, three byte tokens.
    static CausalLM HiEuro() => BigramModel(('\n', 'H'), ('H', 'i'), ('i', ' '), (' ', 0xE2), (0xE2, 0x82), (0x82, 0xAC), (0xAC, '!'), ('!', EndOfText));

    static int[] PromptIds(ModelTokenizer tokenizer, IEnumerable<ChatMessage> messages) =>
        tokenizer.Encode(ChatML(SecoChatClient.ToTemplateMessages(messages)), addBos: false).ToArray();

    static async Task<List<ChatResponseUpdate>> Updates(IChatClient client, IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options, cancellationToken)) updates.Add(update);
        return updates;
    }

    [TestMethod]
    public async Task GreedyReplyIsTheFullForwardArgmaxOfTheRenderedPrompt()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { ModelId = "tiny", StopTokenIds = [], PrefillChunkSize = 16 });
        var response = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 10 });

        // TextGenerator's greedy continuation of the rendered prompt, and independently the argmax of a full forward
        // recomputed for every token without a cache.
        var prompt = PromptIds(_bytes, Conversation);
        var generated = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 10 });
        var sequence = prompt.ToList();
        using (no_grad())
            for (int i = 0; i < 10; i++)
            {
                var ids = tensor(sequence.Select(t => (long)t).ToArray(), new long[] { 1, sequence.Count });
                var (hidden, _) = model.ForwardChunk(ids, 0, null);
                sequence.Add((int)model.Logits(hidden).select(1, sequence.Count - 1).argmax().item<long>());
            }
        CollectionAssert.AreEqual(sequence.Skip(prompt.Length).ToArray(), generated.ToArray());
        Assert.AreEqual(_bytes.Decode(generated), response.Text);

        Assert.AreEqual(ChatFinishReason.Length, response.FinishReason);
        Assert.AreEqual("tiny", response.ModelId);
        Assert.AreEqual(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.AreEqual(prompt.Length, response.Usage!.InputTokenCount);
        Assert.AreEqual(10, response.Usage.OutputTokenCount);
        Assert.AreEqual(prompt.Length + 10, response.Usage.TotalTokenCount);
    }

    [TestMethod]
    public async Task StreamedUpdatesConcatenateToTheReplyAndEndWithReasonAndUsage()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { StopTokenIds = [] });
        foreach (var options in new[]
                 {
                     new ChatOptions { MaxOutputTokens = 24 },
                     new ChatOptions { MaxOutputTokens = 24, Temperature = 1.3f, TopP = 0.95f, TopK = 40, Seed = 3 },
                 })
        {
            var response = await client.GetResponseAsync(Conversation, options);
            var updates = await Updates(client, Conversation, options);
            Assert.AreEqual(response.Text, string.Concat(updates.Select(u => u.Text)));
            Assert.IsTrue(updates.Take(updates.Count - 1).All(u => u.FinishReason is null && u.Text.Length > 0));
            var last = updates[^1];
            Assert.AreEqual(ChatFinishReason.Length, last.FinishReason);
            var usage = last.Contents.OfType<UsageContent>().Single().Details;
            Assert.AreEqual(response.Usage!.InputTokenCount, usage.InputTokenCount);
            Assert.AreEqual(24, usage.OutputTokenCount);
            Assert.IsTrue(updates.All(u => u.ResponseId == updates[0].ResponseId && u.Role == ChatRole.Assistant));

            var combined = updates.ToChatResponse();
            Assert.AreEqual(response.Text, combined.Text);
            Assert.AreEqual(ChatFinishReason.Length, combined.FinishReason);
            Assert.AreEqual(response.Usage.TotalTokenCount, combined.Usage!.TotalTokenCount);
        }
    }

    [TestMethod]
    public async Task AMultiByteCharacterSpreadOverTokensIsYieldedWhole()
    {
        using var model = HiEuro();
        using var client = new SecoChatClient(model, _bytes, ChatML);
        var updates = await Updates(client, Conversation);
        CollectionAssert.AreEqual(new[] { "H", "i", " ", "€", "!" }, updates.Where(u => u.Text.Length > 0).Select(u => u.Text).ToArray());
        Assert.IsFalse(updates.Any(u => u.Text.Contains('\uFFFD')));

        // The decoder itself, byte by byte.
        var decoder = new IncrementalDecoder(_bytes);
        var pieces = "a€b"u8.ToArray().Select(b => decoder.Push(b)).ToArray();
        CollectionAssert.AreEqual(new[] { "a", "", "", "€", "b" }, pieces);
        // An incomplete character at the very end of a reply is what the tokenizer decodes it to.
        Assert.AreEqual("", decoder.Push(0xE2));
        Assert.AreEqual(_bytes.Decode(new[] { 0xE2 }), decoder.Flush());
    }

    [TestMethod]
    public void ByteFallbackPiecesWaitForTheirCharacterAndTheFirstPiecesSpaceIsKept()
    {
        // Llama 2's layout: ids 3..258 are <0x00>..<0xFF>; 'i' is not a piece, ü is C3 BC, 🙂 is F0 9F 99 82. The
        // decoder strips the text's leading space, which must not eat the space before ü when decoding resumes there.
        string dir = Path.Combine(_dir, "sentencepiece");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), System.Text.Json.JsonSerializer.Serialize(
            Tokenization.SentencePieceBpeTests.Llama2Style(merges: ["h e", "l l", "▁ he", "ll o", "▁he llo"])));
        var tokenizer = ModelTokenizer.Load(dir);
        var ids = tokenizer.EncodeWithSpecialTokens("helli ü🙂", addSpecialTokens: false);
        Assert.AreEqual(10, ids.Count, "he, ll, <0x69>, ▁, two bytes of ü, four of 🙂");
        var decoder = new IncrementalDecoder(tokenizer);
        var pieces = ids.Select(decoder.Push).ToArray();
        CollectionAssert.AreEqual(new[] { "he", "ll", "i", " ", "", "ü", "", "", "", "🙂" }, pieces);
        Assert.AreEqual(tokenizer.Decode(ids), string.Concat(pieces) + decoder.Flush());
    }

    [TestMethod]
    public async Task AReplyStopsAtTheEndOfTextIdAndAtGenerationConfigsEndOfTurnIds()
    {
        using var model = HiEuro();
        using (var client = new SecoChatClient(model, _bytes, ChatML))
        {
            var response = await client.GetResponseAsync(Conversation);
            Assert.AreEqual("Hi €!", response.Text);
            Assert.AreEqual(ChatFinishReason.Stop, response.FinishReason);
            Assert.AreEqual(7, response.Usage!.OutputTokenCount, "H i space, three bytes of €, !; the end-of-text token is not counted");
        }

        // A chat model lists its end-of-turn token in generation_config.json; the tokenizer gathers it into EosIds.
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{ "eos_token_id": [256, 33] }""");
        var tokenizer = ModelTokenizer.Load(_dir);
        CollectionAssert.Contains(tokenizer.EosIds.ToArray(), 33);
        using (var client = new SecoChatClient(model, tokenizer, ChatML))
        {
            var response = await client.GetResponseAsync(Conversation);
            Assert.AreEqual("Hi €", response.Text);
            Assert.AreEqual(ChatFinishReason.Stop, response.FinishReason);
            Assert.AreEqual(6, response.Usage!.OutputTokenCount);
        }
    }

    [TestMethod]
    public async Task AStopSequenceCutsTheReplyAndIsNotPartOfIt()
    {
        using var model = HiEuro();
        using var client = new SecoChatClient(model, _bytes, ChatML);
        foreach (var (stop, expected, tokens) in new[] { ("i €", "H", 6), ("€!", "Hi ", 7), ("H", "", 1), ("!x", "Hi €!", 7) })
        {
            var options = new ChatOptions { StopSequences = [stop] };
            var response = await client.GetResponseAsync(Conversation, options);
            Assert.AreEqual(expected, response.Text, stop);
            Assert.AreEqual(tokens, response.Usage!.OutputTokenCount, stop);
            Assert.AreEqual(ChatFinishReason.Stop, response.FinishReason, stop);
            var updates = await Updates(client, Conversation, options);
            Assert.AreEqual(expected, string.Concat(updates.Select(u => u.Text)), stop);
        }

        // On a random model: the reply up to a stop sequence taken from its own unstopped reply.
        using var random = RandomModel();
        using var randomClient = new SecoChatClient(random, _bytes, ChatML, new SecoChatClientOptions { StopTokenIds = [], MaxOutputTokens = 40 });
        string full = (await randomClient.GetResponseAsync(Conversation)).Text;
        int at = Enumerable.Range(3, full.Length - 6).First(i => full.Substring(i, 3).All(c => c != '\uFFFD' && !char.IsSurrogate(c)));
        string sequence = full.Substring(at, 3);
        var stopped = await randomClient.GetResponseAsync(Conversation, new ChatOptions { StopSequences = ["never there", sequence] });
        Assert.AreEqual(full[..full.IndexOf(sequence, StringComparison.Ordinal)], stopped.Text);
        Assert.AreEqual(ChatFinishReason.Stop, stopped.FinishReason);
        Assert.AreEqual(stopped.Text, string.Concat((await Updates(randomClient, Conversation, new ChatOptions { StopSequences = [sequence] })).Select(u => u.Text)));
    }

    [TestMethod]
    public async Task MaxOutputTokensEndsTheReplyWithLengthAfterThatManyTokens()
    {
        using var model = HiEuro();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { MaxOutputTokens = 5 });
        var response = await client.GetResponseAsync(Conversation);
        Assert.AreEqual(ChatFinishReason.Length, response.FinishReason);
        Assert.AreEqual(5, response.Usage!.OutputTokenCount);
        Assert.AreEqual("Hi " + _bytes.Decode(new[] { 0xE2, 0x82 }), response.Text, "the reply ends inside €: what is there is what the tokenizer decodes");

        response = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 2 });
        Assert.AreEqual("Hi", response.Text);
        Assert.AreEqual(ChatFinishReason.Length, response.FinishReason);
        Assert.AreEqual(2, response.Usage!.OutputTokenCount);

        // The model's context bounds the reply too.
        int prompt = PromptIds(_bytes, Conversation).Length;
        using var bounded = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { ContextLength = prompt + 3 });
        response = await bounded.GetResponseAsync(Conversation);
        Assert.AreEqual("Hi ", response.Text);
        Assert.AreEqual(ChatFinishReason.Length, response.FinishReason);
        using var full = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { ContextLength = prompt });
        await Assert.ThrowsExactlyAsync<ArgumentException>(() => full.GetResponseAsync(Conversation));
    }

    [TestMethod]
    public async Task ASeedMakesSamplingReproducible()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { StopTokenIds = [], MaxOutputTokens = 16 });
        var options = new ChatOptions { Temperature = 1.5f, TopK = 50, TopP = 0.9f, Seed = 11 };
        string first = (await client.GetResponseAsync(Conversation, options)).Text;
        Assert.AreEqual(first, (await client.GetResponseAsync(Conversation, options)).Text);
        Assert.AreEqual(first, string.Concat((await Updates(client, Conversation, options)).Select(u => u.Text)));
        Assert.AreNotEqual(first, (await client.GetResponseAsync(Conversation, new ChatOptions { Temperature = 1.5f, TopK = 50, TopP = 0.9f, Seed = 12 })).Text);
        string greedy = (await client.GetResponseAsync(Conversation)).Text;
        Assert.AreNotEqual(greedy, first, "sampling at temperature 1.5 is not the greedy reply");
        Assert.AreEqual(greedy, (await client.GetResponseAsync(Conversation, new ChatOptions { Temperature = 0, Seed = 5 })).Text, "temperature 0 is greedy");

        // A client seed stands in for a request's.
        using var seeded = new SecoChatClient(model, _bytes, ChatML, client.Options with { Seed = 11, Temperature = 1.5, TopK = 50, TopP = 0.9 });
        Assert.AreEqual(first, (await seeded.GetResponseAsync(Conversation)).Text);
    }

    [TestMethod]
    public async Task CancellationThrowsAndReleasesTheModel()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { StopTokenIds = [], MaxOutputTokens = 50 });
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAsync<OperationCanceledException>(() => client.GetResponseAsync(Conversation, cancellationToken: cancelled.Token));

        using var midway = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync(Conversation, null, midway.Token))
                if (++received == 3) midway.Cancel();
        });
        Assert.AreEqual(3, received, "no update after the cancellation");

        // The client is free again.
        Assert.AreEqual(50, (await client.GetResponseAsync(Conversation)).Usage!.OutputTokenCount);
    }

    [TestMethod]
    public void MessagesBecomeHuggingFaceChatMessages()
    {
        var messages = new List<ChatMessage>
        {
            new(ChatRole.System, "sys"),
            new(ChatRole.User, [new TextContent("two "), new TextContent("parts")]),
            new(ChatRole.Assistant, [new TextContent("Let me look."), new FunctionCallContent("call-1", "weather", new Dictionary<string, object?> { ["city"] = "Oslo", ["days"] = 2 })]),
            new(ChatRole.Tool, [new FunctionResultContent("call-1", "sunny"), new FunctionResultContent("call-2", new { temperature = 21 })]),
            new(new ChatRole("developer"), "custom role"),
        };
        var json = SecoChatClient.ToTemplateMessages(messages);
        Assert.AreEqual(
            """[{"role":"system","content":"sys"},{"role":"user","content":"two parts"},""" +
            """{"role":"assistant","content":"Let me look.","tool_calls":[{"id":"call-1","type":"function","function":{"name":"weather","arguments":{"city":"Oslo","days":2}}}]},""" +
            """{"role":"tool","tool_call_id":"call-1","content":"sunny"},{"role":"tool","tool_call_id":"call-2","content":"{\u0022temperature\u0022:21}"},""" +
            """{"role":"developer","content":"custom role"}]""",
            json.ToJsonString());
    }

    [TestMethod]
    public async Task BadRequestsAreRefusedNamingTheMessage()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML);
        var empty = Assert.ThrowsExactly<ArgumentException>(() => client.GetResponseAsync([]));
        StringAssert.Contains(empty.Message, "no message");
        Assert.ThrowsExactly<ArgumentException>(() => client.GetStreamingResponseAsync([]));

        var image = Assert.ThrowsExactly<ArgumentException>(() => client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, "hi"), new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2 }, "image/png")])]));
        StringAssert.Contains(image.Message, "Message 1 (user)");
        StringAssert.Contains(image.Message, nameof(DataContent));

        var call = Assert.ThrowsExactly<ArgumentException>(() => SecoChatClient.ToTemplateMessages(
            [new ChatMessage(ChatRole.User, [new FunctionCallContent("c", "f")])]));
        StringAssert.Contains(call.Message, "Message 0 (user)");
        var mixed = Assert.ThrowsExactly<ArgumentException>(() => SecoChatClient.ToTemplateMessages(
            [new ChatMessage(ChatRole.Tool, [new FunctionResultContent("c", "r"), new TextContent("and text")])]));
        StringAssert.Contains(mixed.Message, "Message 0 (tool)");

        Assert.AreEqual("ChatOptions.Temperature", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => client.GetResponseAsync(Conversation, new ChatOptions { Temperature = -1 })).ParamName);
        Assert.AreEqual("ChatOptions.TopP", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => client.GetResponseAsync(Conversation, new ChatOptions { TopP = 0 })).ParamName);
        var tools = Assert.ThrowsExactly<NotSupportedException>(() => client.GetResponseAsync(Conversation, new ChatOptions { Tools = [AIFunctionFactory.Create(() => 1, "one")] }));
        StringAssert.Contains(tools.Message, "renderer of messages only", "a renderer of messages only cannot show tools");
        Assert.AreEqual("SecoChatClientOptions.TopK", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { TopK = -1 })).ParamName);
        await Task.CompletedTask;
    }

    [TestMethod]
    public void GetServiceGivesMetadataAndTheClient()
    {
        using var model = RandomModel();
        using var client = new SecoChatClient(model, _bytes, ChatML, new SecoChatClientOptions { ModelId = "tiny-bytes" });
        IChatClient chat = client;
        var metadata = chat.GetService<ChatClientMetadata>()!;
        Assert.AreEqual(SecoChatClient.ProviderName, metadata.ProviderName);
        Assert.AreEqual("tiny-bytes", metadata.DefaultModelId);
        Assert.AreSame(client, chat.GetService<IChatClient>());
        Assert.AreSame(client, chat.GetService<SecoChatClient>());
        Assert.AreSame(model, chat.GetService<CausalLM>());
        Assert.AreSame(_bytes, chat.GetService<ModelTokenizer>());
        Assert.IsNull(chat.GetService(typeof(IChatClient), "key"));
        Assert.IsNull(chat.GetService<string>());
    }

    [TestMethod]
    public void GenerationConfigSetsTheDefaultsAsTransformersReadsThem()
    {
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{ "do_sample": true, "temperature": 0.7, "top_p": 0.8, "max_new_tokens": 99 }""");
        var sampling = SecoChatClientOptions.FromGenerationConfig(_dir);
        Assert.AreEqual(0.7, sampling.Temperature);
        Assert.AreEqual(0.8, sampling.TopP);
        Assert.AreEqual(50, sampling.TopK, "transformers' default top_k");
        Assert.AreEqual(99, sampling.MaxOutputTokens);
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{ "temperature": 0.7, "top_p": 0.8 }""");
        Assert.AreEqual(0, SecoChatClientOptions.FromGenerationConfig(_dir).Temperature, "without do_sample, greedy");
        File.Delete(Path.Combine(_dir, "generation_config.json"));
        Assert.AreEqual(new SecoChatClientOptions().MaxOutputTokens, SecoChatClientOptions.FromGenerationConfig(_dir).MaxOutputTokens);
    }

    [TestMethod]
    public async Task FactoriesLoadAModelDirectoryWithItsAdapterAndWrapAFittedStage()
    {
        string modelPath = TinyModelFixture.ModelPath;
        string adapter = TinyModelFixture.TempPath("chat-adapter");
        try
        {
            using (var trained = TestModels.WithLora(ModelDirectory.Load(modelPath, ScalarType.Float32, CPU)))
                PeftAdapter.Save(trained, adapter, modelPath);
            var tokenizer = ModelTokenizer.Load(modelPath);
            var options = new ChatOptions { MaxOutputTokens = 6 };
            var prompt = PromptIds(tokenizer, Conversation);

            // The stage owns (and disposes) the model.
            var model = ModelDirectory.Load(modelPath, ScalarType.Float32, CPU);
            using var stage = new ChunkwiseLoraTransformer(model, tokenizer,
                new ScoringSettings { ModelPath = modelPath, Device = "cpu", DType = "float32", Lora = new LoraConfig(), ChunkSize = 8 }, null);
            PeftAdapter.Load(model, adapter);
            string expected = tokenizer.Decode(TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 6, StopTokens = tokenizer.EosIds }));

            using (var client = SecoChatClient.FromModelDirectory(modelPath, adapter, ChatML, device: "cpu", dtype: "float32"))
            {
                var response = await client.GetResponseAsync(Conversation, options);
                Assert.AreEqual(expected, response.Text);
                Assert.AreEqual(Path.GetFileName(modelPath), response.ModelId);
                Assert.IsNotNull(LoraAdapters.ConfigOf(client.Model), "the adapter is attached");
            }
            Assert.ThrowsExactly<DirectoryNotFoundException>(() => SecoChatClient.FromModelDirectory(modelPath, adapter + "-missing", ChatML));

            using var stageClient = stage.AsIChatClient(ChatML);
            var fromStage = await stageClient.GetResponseAsync(Conversation, options);
            Assert.AreEqual(expected, fromStage.Text);
            Assert.AreEqual(Path.GetFileName(modelPath), fromStage.ModelId);
            Assert.IsTrue(stage.Perplexity("the contract shall renew") > 0, "the stage still scores after the client used its model");
        }
        finally
        {
            if (Directory.Exists(adapter)) Directory.Delete(adapter, recursive: true);
        }
    }
}
