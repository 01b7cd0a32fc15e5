using System.Text;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// The chat features of seco (messages data in tokenize, train and eval; generate --chat) through Program.Run on a
/// tiny random model whose tokenizer is byte-level (id = the byte) with ChatML's <c>&lt;|im_start|&gt;</c> (257) and
/// <c>&lt;|im_end|&gt;</c> (258) as added tokens and a ChatML chat template, so that the expected ids and trained marks
/// can be written down by hand.
/// </summary>
[TestClass]
public sealed class ChatCommandTests
{
    const int ImStart = 257, ImEnd = 258;

    // Qwen's ChatML without its default system message; a developer message makes the template raise.
    const string ChatML =
        "{%- for message in messages %}" +
        "{%- if message['role'] == 'developer' %}{{ raise_exception('developer messages are not supported') }}{%- endif %}" +
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
        "{%- endfor %}" +
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

    static string _root = "";
    static string _model = "";
    static string _plainModel = "";
    static string _data = "";

    sealed record Result(int ExitCode, string Out, string Error)
    {
        public List<JsonObject> JsonLines() =>
            Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";
    }

    static Result Seco(params string[] args)
    {
        var output = new StringWriter(CultureInfo.InvariantCulture);
        var error = new StringWriter(CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error);
        return new Result(code, output.ToString(), error.ToString());
    }

    static JsonObject Message(string role, string content) => new() { ["role"] = role, ["content"] = content };

    static JsonArray Conversation(params (string Role, string Content)[] messages) => new(messages.Select(m => (JsonNode?)Message(m.Role, m.Content)).ToArray());

    static readonly JsonArray TwoTurns = Conversation(
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "See you."));

    static string Line(JsonArray messages) => new JsonObject { ["messages"] = messages.DeepClone() }.ToJsonString();

    [ClassInitialize]
    public static void CreateModel(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-chat-tests-" + Guid.NewGuid().ToString("N"));
        _model = Path.Combine(_root, "tiny-chat");
        _plainModel = Path.Combine(_root, "tiny-plain");
        string[] shape = ["--layers", "1", "--hidden-size", "32", "--heads", "4", "--kv-heads", "2", "--intermediate-size", "64", "--seed", "1", "--no-tokenizer"];
        foreach (var dir in new[] { _model, _plainModel })
        {
            // 512 ids: the 256 bytes, end-of-text (256) and the two ChatML tokens fit.
            var r = Seco(["init-tiny", "--out", dir, .. shape]);
            Assert.AreEqual(0, r.ExitCode, r.ToString());
            TokenizerFiles.WriteBytes(dir);
        }
        AddChatML(_model);
        _data = Path.Combine(_root, "chat.jsonl");
        File.WriteAllLines(_data,
        [
            Line(TwoTurns),
            Line(Conversation(("user", "What is 2+2?"), ("assistant", "4"))),
        ]);
    }

    // <|im_start|> and <|im_end|> as added tokens, the template in tokenizer_config.json, <|im_end|> ending a reply.
    static void AddChatML(string dir)
    {
        string tokenizerPath = Path.Combine(dir, "tokenizer.json");
        var tokenizer = JsonNode.Parse(File.ReadAllText(tokenizerPath))!.AsObject();
        foreach (var (id, token) in new[] { (ImStart, "<|im_start|>"), (ImEnd, "<|im_end|>") })
        {
            tokenizer["added_tokens"]!.AsArray().Add(new JsonObject
            {
                ["id"] = id, ["content"] = token, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
            tokenizer["model"]!["vocab"]![token] = id;
        }
        File.WriteAllText(tokenizerPath, tokenizer.ToJsonString());
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["chat_template"] = ChatML;
        File.WriteAllText(configPath, config.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), $$"""{ "eos_token_id": [{{TokenizerFiles.BytesEndOfTextId}}, {{ImEnd}}] }""");
    }

    [ClassCleanup]
    public static void DeleteModel()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    static string Write(string name, params string[] lines)
    {
        string path = Path.Combine(_root, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    // The same ChatML with {% generation %} markers around an assistant's content and its <|im_end|>.
    const string ChatMLWithMarkers =
        "{%- for message in messages %}" +
        "{{ '<|im_start|>' + message['role'] + '\\n' }}" +
        "{%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}" +
        "{%- else %}{{ message['content'] + '<|im_end|>' }}{%- endif %}" +
        "{{ '\\n' }}" +
        "{%- endfor %}" +
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

    /// <summary>
    /// The expectation written by hand for ChatML over bytes: each message is &lt;|im_start|&gt; role \n content
    /// &lt;|im_end|&gt; \n, and the loss is on an assistant's content and its &lt;|im_end|&gt;; with
    /// <paramref name="newlineTrained"/> also on the \n the template writes after an assistant's &lt;|im_end|&gt;.
    /// </summary>
    static (string Text, int[] Ids, int[] Trained) ExpectedChatML(bool newlineTrained, params (string Role, string Content)[] messages)
    {
        var text = new StringBuilder();
        var ids = new List<int>();
        var trained = new List<int>();
        void Add(string piece, bool train)
        {
            text.Append(piece);
            var pieceIds = piece switch
            {
                "<|im_start|>" => [ImStart],
                "<|im_end|>" => [ImEnd],
                _ => Encoding.UTF8.GetBytes(piece).Select(b => (int)b).ToArray(),
            };
            ids.AddRange(pieceIds);
            trained.AddRange(pieceIds.Select(_ => train ? 1 : 0));
        }
        foreach (var (role, content) in messages)
        {
            bool assistant = role == "assistant";
            Add("<|im_start|>", false);
            Add(role + "\n", false);
            Add(content, assistant);
            Add("<|im_end|>", assistant);
            Add("\n", assistant && newlineTrained);
        }
        return (text.ToString(), ids.ToArray(), trained.ToArray());
    }

    /// <summary>
    /// Without {% generation %} markers the library finds an assistant turn as what rendering the conversation up to
    /// it adds after the generation prompt, which for ChatML is the content, &lt;|im_end|&gt; and the \n after it; with
    /// markers, exactly what they enclose (<see cref="TokenizeJsonWithGenerationMarkersTrainsExactlyWhatTheyEnclose"/>).
    /// </summary>
    const bool NewlineTrained = true;

    static int[] Ints(JsonNode? array) => array!.AsArray().Select(n => n!.GetValue<int>()).ToArray();

    [TestMethod]
    public void TokenizeJsonGivesTheTemplatesRenderingAndTrainsExactlyTheAssistantReplies()
    {
        var r = Seco("tokenize", "--model", _model, "--data", _data, "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var lines = r.JsonLines();
        Assert.AreEqual(2, lines.Count, r.Out);

        var expected = ExpectedChatML(NewlineTrained, ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "See you."));
        Assert.AreEqual("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
                        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nSee you.<|im_end|>\n", expected.Text, "the hand-written expectation");
        var template = ChatTemplate.FromModelDirectory(_model)!;
        Assert.AreEqual(template.Render(TwoTurns, addGenerationPrompt: false), lines[0]["rendered"]!.GetValue<string>());
        Assert.AreEqual(expected.Text, lines[0]["rendered"]!.GetValue<string>());
        CollectionAssert.AreEqual(expected.Ids, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(expected.Trained, Ints(lines[0]["trained"]), "trained: " + string.Join("", Ints(lines[0]["trained"])));
        Assert.AreEqual(expected.Ids.Length, lines[0]["count"]!.GetValue<int>());
        Assert.AreEqual("<|im_start|>", lines[0]["tokens"]![0]!.GetValue<string>());

        var second = ExpectedChatML(NewlineTrained, ("user", "What is 2+2?"), ("assistant", "4"));
        CollectionAssert.AreEqual(second.Ids, Ints(lines[1]["ids"]));
        CollectionAssert.AreEqual(second.Trained, Ints(lines[1]["trained"]));

        // --assistant-only-loss false trains on every token, as seco train's flag does.
        var all = Seco("tokenize", "--model", _model, "--data", _data, "--json", "--assistant-only-loss", "false").JsonLines();
        CollectionAssert.AreEqual(expected.Ids, Ints(all[0]["ids"]));
        Assert.IsTrue(Ints(all[0]["trained"]).All(t => t == 1));

        // The plain output names the line, the count of trained tokens and the rendering.
        r = Seco("tokenize", "--model", _model, "--data", _data);
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Out, $"document 1 (line 1): {expected.Ids.Length} tokens, {expected.Trained.Sum()} trained");
        StringAssert.Contains(r.Out, "rendered: \"<|im_start|>system\\nBe brief.<|im_end|>\\n");
        StringAssert.Contains(r.Out, "trained: " + string.Join(' ', expected.Trained));
    }

    [TestMethod]
    public void TokenizeJsonWithGenerationMarkersTrainsExactlyWhatTheyEnclose()
    {
        // A tokenizer-only directory: seco tokenize needs no weights.
        string dir = Path.Combine(_root, "markers");
        Directory.CreateDirectory(dir);
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(_model, name), Path.Combine(dir, name), overwrite: true);
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["chat_template"] = ChatMLWithMarkers;
        File.WriteAllText(configPath, config.ToJsonString());

        var lines = Seco("tokenize", "--model", dir, "--data", _data, "--json").JsonLines();
        var expected = ExpectedChatML(newlineTrained: false, ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "See you."));
        Assert.AreEqual(expected.Text, lines[0]["rendered"]!.GetValue<string>());
        CollectionAssert.AreEqual(expected.Ids, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(expected.Trained, Ints(lines[0]["trained"]), "trained: " + string.Join("", Ints(lines[0]["trained"])));
    }

    [TestMethod]
    public void TokenizeJsonMarksTheTrainedTokensOfEveryKind()
    {
        string data = Write("kinds.jsonl",
            JsonSerializer.Serialize(new { text = "ab" }),
            JsonSerializer.Serialize(new { prompt = "Q", response = "A" }),
            Line(Conversation(("user", "u"), ("assistant", "a"))));
        var lines = Seco("tokenize", "--model", _model, "--data", data, "--json").JsonLines();
        const int Eot = TokenizerFiles.BytesEndOfTextId;
        // Text: BOS, the text, EOS, every token trained; prompt/response: the response and EOS trained.
        Assert.AreEqual("ab", lines[0]["rendered"]!.GetValue<string>());
        CollectionAssert.AreEqual(new[] { Eot, 'a', 'b', Eot }, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(new[] { 1, 1, 1, 1 }, Ints(lines[0]["trained"]));
        Assert.AreEqual("QA", lines[1]["rendered"]!.GetValue<string>());
        CollectionAssert.AreEqual(new[] { Eot, 'Q', 'A', Eot }, Ints(lines[1]["ids"]));
        CollectionAssert.AreEqual(new[] { 0, 0, 1, 1 }, Ints(lines[1]["trained"]));
        var chat = ExpectedChatML(NewlineTrained, ("user", "u"), ("assistant", "a"));
        CollectionAssert.AreEqual(chat.Ids, Ints(lines[2]["ids"]));
        CollectionAssert.AreEqual(chat.Trained, Ints(lines[2]["trained"]));

        // Without special tokens the BOS and EOS training adds are left out; a conversation's come from its template.
        lines = Seco("tokenize", "--model", _model, "--data", data, "--json", "--no-special-tokens").JsonLines();
        CollectionAssert.AreEqual(new[] { (int)'a', 'b' }, Ints(lines[0]["ids"]));
        CollectionAssert.AreEqual(new[] { (int)'Q', 'A' }, Ints(lines[1]["ids"]));
        CollectionAssert.AreEqual(new[] { 0, 1 }, Ints(lines[1]["trained"]));
        CollectionAssert.AreEqual(chat.Ids, Ints(lines[2]["ids"]));
    }

    [TestMethod]
    public void TrainOnMessagesSavesAnAdapterAndEvalScoresTheAssistantTokens()
    {
        // The assistant tokens that have a token before them are scored: all of them here.
        int assistantTokens = Seco("tokenize", "--model", _model, "--data", _data, "--json").JsonLines().Sum(l => Ints(l["trained"]).Sum());
        var r = Seco("eval", "--model", _model, "--data", _data, "--chunk-size", "16", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var score = r.JsonLines().Single();
        Assert.AreEqual(assistantTokens, score["tokens"]!.GetValue<int>());
        Assert.AreEqual(2, score["sequences"]!.GetValue<int>());
        Assert.IsTrue(double.IsFinite(score["nll"]!.GetValue<double>()));
        // Every rendered token but the first is a target without the assistant-only mask.
        int allTokens = Seco("tokenize", "--model", _model, "--data", _data, "--json").JsonLines().Sum(l => l["count"]!.GetValue<int>() - 1);
        r = Seco("eval", "--model", _model, "--data", _data, "--assistant-only-loss", "false", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual(allTokens, r.JsonLines().Single()["tokens"]!.GetValue<int>());

        string output = Path.Combine(_root, "chat-run");
        r = Seco("train", "--model", _model, "--data", _data, "--output", output, "--chunk-size", "16", "--max-steps", "2", "--lr", "1e-2", "--json");
        if (r.ExitCode != 0 && r.Error.Contains("no column 'Text'", StringComparison.Ordinal))
            Assert.Inconclusive("The stage does not read MessagesColumnName on this branch yet (the ML.NET wiring is done elsewhere): " + r.Error);
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.IsTrue(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!.AsObject();
        Assert.IsTrue(config["assistantOnlyLoss"]!.GetValue<bool>());
        Assert.IsFalse(config.ContainsKey("messagesColumnName"), "the column comes from the data, not the configuration");

        r = Seco("eval", "--model", _model, "--adapter", Path.Combine(output, "adapter"), "--data", _data, "--chunk-size", "16", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var adapted = r.JsonLines().Single();
        Assert.AreEqual(assistantTokens, adapted["tokens"]!.GetValue<int>());
        double nll = adapted["nll"]!.GetValue<double>();
        Assert.IsTrue(double.IsFinite(nll) && nll != score["nll"]!.GetValue<double>(), "the adapter changes the scores");
    }

    [TestMethod]
    public void AssistantOnlyLossIsAFlagAndAConfigurationField()
    {
        var setting = TrainSetting.ByName(nameof(ChunkwiseLoraTrainer.Options.AssistantOnlyLoss));
        Assert.IsNotNull(setting);
        Assert.AreEqual("--assistant-only-loss", setting.Flag);
        Assert.AreEqual("assistantOnlyLoss", setting.ConfigName);
        Assert.IsNull(TrainSetting.ByName(nameof(ChunkwiseLoraTrainer.Options.MessagesColumnName)), "set from the data");
        StringAssert.Contains(Seco("train", "--help").Out, "--assistant-only-loss");
        // false makes a conversation without an assistant turn trainable, true refuses it before anything is written.
        string data = Write("no-assistant.jsonl", Line(Conversation(("user", "Hello"))));
        string output = Path.Combine(_root, "never-created");
        var r = Seco("train", "--model", _model, "--data", data, "--output", output, "--max-steps", "1");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, $"{data}, line 1: the conversation renders to nothing trainable");
        Assert.IsFalse(Directory.Exists(output));
    }

    [TestMethod]
    public void GenerateChatStreamsTheAssistantsReply()
    {
        var r = Seco("generate", "--chat", "--model", _model, "--system", "Be brief.", "--prompt", "Hi", "--max-new-tokens", "4", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var result = r.JsonLines().Single();
        // The prompt is the conversation as the template renders it with the generation prompt.
        var template = ChatTemplate.FromModelDirectory(_model)!;
        string prompt = template.Render(Conversation(("system", "Be brief."), ("user", "Hi")), addGenerationPrompt: true);
        Assert.AreEqual("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", prompt);
        Assert.AreEqual(ModelTokenizer.Load(_model).Encode(prompt, addBos: false).Count, result["prompt_tokens"]!.GetValue<int>());
        int generated = result["generated_tokens"]!.GetValue<int>();
        Assert.IsTrue(generated is >= 1 and <= 4, r.Out);

        // Without --json the reply is streamed to stdout, the same greedy reply.
        r = Seco("generate", "--chat", "--model", _model, "--system", "Be brief.", "--prompt", "Hi", "--max-new-tokens", "4");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual(result["completion"]!.GetValue<string>() + Environment.NewLine, r.Out);

        // A messages file (a bare array, or {"messages", "tools"}) gives the same prompt.
        string file = Path.Combine(_root, "conversation.json");
        File.WriteAllText(file, new JsonObject { ["messages"] = Conversation(("system", "Be brief."), ("user", "Hi")), ["tools"] = new JsonArray() }.ToJsonString());
        r = Seco("generate", "--chat", "--model", _model, "--messages", file, "--max-new-tokens", "4", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual(result.ToJsonString(), r.JsonLines().Single().ToJsonString());
        File.WriteAllText(file, Conversation(("system", "Be brief."), ("user", "Hi")).ToJsonString());
        r = Seco("generate", "--chat", "--model", _model, "--messages", file, "--max-new-tokens", "4", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
    }

    [TestMethod]
    public void GenerateChatErrorsNameTheModelTheFileAndTheTurn()
    {
        var r = Seco("generate", "--chat", "--model", _plainModel, "--prompt", "Hi");
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, _plainModel);
        StringAssert.Contains(r.Error, "chat_template");

        string file = Path.Combine(_root, "bad-conversation.json");
        File.WriteAllText(file, new JsonArray(Message("user", "Hi"), new JsonObject { ["role"] = "robot", ["content"] = "beep" }).ToJsonString());
        r = Seco("generate", "--chat", "--model", _model, "--messages", file);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.StartsWith(r.Error, $"seco: error: {file}, message 2: unknown role \"robot\"");

        File.WriteAllText(file, Conversation(("developer", "Be terse."), ("user", "Hi")).ToJsonString());
        r = Seco("generate", "--chat", "--model", _model, "--messages", file);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.StartsWith(r.Error, $"seco: error: {file}: the chat template failed");
        StringAssert.Contains(r.Error, "developer messages are not supported");

        foreach (var args in new[]
        {
            new[] { "--chat" },
            new[] { "--chat", "--prompt", "Hi", "--messages", file },
            new[] { "--chat", "--messages", file, "--system", "x" },
            new[] { "--prompt", "Hi", "--system", "x" },
        })
        {
            r = Seco(["generate", "--model", _model, .. args]);
            Assert.AreEqual(2, r.ExitCode, $"{string.Join(' ', args)}: {r}");
        }
        r = Seco("generate", "--chat", "--model", _model, "--messages", Path.Combine(_root, "absent.json"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "absent.json");
    }

    [TestMethod]
    public void MessagesDataErrorsNameTheFileLineAndTurnInEveryCommand()
    {
        string ok = Line(Conversation(("user", "Hi"), ("assistant", "Hello")));
        foreach (var (line, expected) in new[]
        {
            (new JsonObject { ["messages"] = new JsonArray(Message("user", "Hi"), new JsonObject { ["role"] = "robot", ["content"] = "x" }) }.ToJsonString(),
                "line 2, message 2: unknown role \"robot\""),
            (new JsonObject { ["messages"] = new JsonArray(Message("user", "Hi"), new JsonObject { ["role"] = "assistant" }) }.ToJsonString(),
                "line 2, message 2 (assistant): missing \"content\""),
            (Line(Conversation(("developer", "Be terse."), ("user", "Hi"), ("assistant", "Hello"))),
                "line 2: the chat template failed on this conversation"),
            (Line(Conversation(("user", "Hi"))),
                "line 2: the conversation renders to nothing trainable"),
        })
        {
            string data = Write("bad.jsonl", ok, line);
            string output = Path.Combine(_root, "bad-run");
            // A conversation without an assistant turn is training's error (tokenize shows what training does); eval
            // scores it as an empty text: nothing.
            bool trainingRule = expected.EndsWith("nothing trainable", StringComparison.Ordinal);
            if (trainingRule)
            {
                var scored = Seco("eval", "--model", _model, "--data", data, "--json");
                Assert.AreEqual(0, scored.ExitCode, scored.ToString());
                var alone = Seco("eval", "--model", _model, "--data", Write("ok.jsonl", ok), "--json");
                Assert.AreEqual(alone.JsonLines()[0].ToJsonString(), scored.JsonLines()[0].ToJsonString(), "the conversation adds no scored token");
            }
            foreach (var args in new[]
            {
                new[] { "tokenize", "--model", _model, "--data", data, "--json" },
                new[] { "eval", "--model", _model, "--data", data },
                new[] { "train", "--model", _model, "--data", data, "--output", output, "--max-steps", "1" },
            }.Where(a => !(trainingRule && a[0] == "eval")))
            {
                var r = Seco(args);
                Assert.AreEqual(2, r.ExitCode, $"{args[0]}: {r}");
                StringAssert.StartsWith(r.Error, $"seco: error: {data}, {expected}", args[0]);
                Assert.IsFalse(r.Error.Contains("   at ", StringComparison.Ordinal), "no stack trace without --verbose");
            }
            Assert.IsFalse(Directory.Exists(output), "train checks every conversation before it creates the output folder");
        }
    }
}
