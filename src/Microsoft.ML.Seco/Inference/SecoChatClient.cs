using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// A Microsoft.Extensions.AI <see cref="IChatClient"/> over a Seco model (a base checkpoint, with or without a LoRA
/// adapter): the conversation is rendered to a prompt by a chat-template renderer, the prompt is prefilled once into
/// a key/value cache and the reply is generated one token per step (<see cref="GenerationSession"/>).
/// </summary>
/// <remarks>
/// <para>
/// Prompt: <see cref="ToTemplateMessages"/> turns the messages (after <see cref="ChatOptions.Instructions"/> as a
/// first system message) into Hugging Face's message list, and the renderer returns the prompt text, generation prompt
/// included, as <c>tokenizer.apply_chat_template(messages, add_generation_prompt=True)</c> does. The text is encoded
/// without adding special tokens (transformers' <c>apply_chat_template</c> does the same: the template writes BOS).
/// </para>
/// <para>
/// Decoding: <see cref="ChatOptions.Temperature"/> null takes the client's <see cref="SecoChatClientOptions.Temperature"/>
/// (greedy unless the options say otherwise, e.g. from generation_config.json); 0 is greedy; above 0 samples, with
/// <see cref="ChatOptions.TopK"/> then <see cref="ChatOptions.TopP"/> (transformers' order), seeded by
/// <see cref="ChatOptions.Seed"/> (the same seed, conversation and settings give the same reply). A reply ends at a
/// stop token (<see cref="SecoChatClientOptions.StopTokenIds"/>: the tokenizer's end-of-sequence and end-of-turn
/// ids), or when its decoded text holds a stop sequence (cut before it), both <see cref="ChatFinishReason.Stop"/>; or
/// after <see cref="ChatOptions.MaxOutputTokens"/> tokens or at the context length, <see cref="ChatFinishReason.Length"/>.
/// Neither a stop token nor a stop sequence is part of the reply.
/// </para>
/// <para>
/// Streaming yields text as the tokens complete it: never half a character (a multi-byte UTF-8 character spread over
/// byte tokens waits for its last byte), never text that might still turn out to start a stop sequence. The updates'
/// texts concatenate to the non-streaming reply's text; the last update carries the finish reason and the usage.
/// </para>
/// <para>
/// Tools: a client rendering with a <see cref="ChatTemplate"/> (the <see cref="ChatTemplate"/> constructor,
/// <see cref="FromModelDirectory(string, string?, SecoChatClientOptions?, string, string)"/>) gives the template
/// <see cref="ChatOptions.Tools"/> as <c>tools</c> (<see cref="ToTemplateTools"/>), and reads tool calls out of the
/// reply in the format the template asks for, chosen from its source: the Hermes format where it writes
/// <c>&lt;tool_call&gt;</c> (Qwen2.5-Instruct, Qwen3: <c>&lt;tool_call&gt;\n{"name": ..., "arguments": {...}}\n&lt;/tool_call&gt;</c>,
/// any number, text around them kept), Llama 3.1's JSON where it asks for <c>{"name": function name, "parameters": ...}</c>
/// (Llama 3.1 to 3.3 Instruct: the whole reply one <c>{"name": ..., "parameters": {...}}</c> object, <c>"arguments"</c>
/// accepted too; anything else, the built-in tools' <c>&lt;|python_tag|&gt;</c> included, is text). Each call becomes a
/// <see cref="FunctionCallContent"/> with a generated call id and the finish reason is <see cref="ChatFinishReason.ToolCalls"/>. So
/// <c>FunctionInvokingChatClient</c> (<c>.UseFunctionInvocation()</c>) runs the functions and sends their results
/// back. Streaming holds back text from a <c>&lt;tool_call&gt;</c> tag on (Hermes) or while the reply could still be a
/// JSON call (Llama) and yields each complete call as one update; a call that does not parse is given back as its raw
/// text. Refused with <see cref="NotSupportedException"/>: tools with a renderer of messages only, with a template that
/// never reads <c>tools</c> or asks for another call format (Mistral's <c>[TOOL_CALLS]</c>, ...), tools that are not
/// functions, and <see cref="ChatToolMode.RequireAny"/> or a required function (the
/// client does not constrain decoding). <see cref="ChatToolMode.None"/> offers no tools and parses no calls.
/// </para>
/// <para>
/// The model's forward pass is not re-entrant: the client runs one reply at a time and queues concurrent requests.
/// Cancellation is checked before each prefill block and between tokens.
/// </para>
/// </remarks>
public sealed class SecoChatClient : IChatClient
{
    /// <summary>The provider name in <see cref="Metadata"/>.</summary>
    public const string ProviderName = "Microsoft.ML.Seco";

    // Exactly one of the two: a renderer of messages only, or a template that is also given the tools.
    readonly Func<JsonArray, string>? _renderPrompt;
    readonly ChatTemplate? _template;
    // The parser for the calls the template asks for; null where it asks for none this client knows.
    readonly Func<ToolCallFormat>? _toolCalls;
    readonly SemaphoreSlim _gate;
    readonly bool _ownsModel;
    bool _disposed;

    /// <summary>A client over a loaded model; disposing the client leaves the model to its owner.</summary>
    /// <param name="model">The model, in evaluation mode (e.g. from <see cref="PeftAdapter.LoadWithBase"/>).</param>
    /// <param name="tokenizer">The model's tokenizer (<see cref="ModelTokenizer.Load"/>).</param>
    /// <param name="renderPrompt">
    /// Renders Hugging Face chat messages (<see cref="ToTemplateMessages"/>) to the prompt text with the generation
    /// prompt, e.g. a Jinja chat template's <c>Render(messages, addGenerationPrompt: true)</c>.
    /// </param>
    /// <param name="options">Decoding defaults and the model id; null: <see cref="SecoChatClientOptions"/>' defaults.</param>
    /// <remarks>
    /// A renderer of messages only cannot show the model tool definitions: a request with <see cref="ChatOptions.Tools"/>
    /// is refused. To call tools, construct the client with the model's <see cref="ChatTemplate"/>.
    /// </remarks>
    public SecoChatClient(CausalLM model, ModelTokenizer tokenizer, Func<JsonArray, string> renderPrompt, SecoChatClientOptions? options = null)
        : this(model, tokenizer, renderPrompt, options, new SemaphoreSlim(1, 1), ownsModel: false)
    {
    }

    /// <summary>
    /// A client over a loaded model that renders conversations, and <see cref="ChatOptions.Tools"/>, with a chat
    /// template, as <c>tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True)</c> does;
    /// disposing the client leaves the model to its owner.
    /// </summary>
    /// <param name="model">The model, in evaluation mode.</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="template">The model's chat template (<see cref="ChatTemplate.FromModelDirectory"/>).</param>
    /// <param name="options">Decoding defaults and the model id; null: <see cref="SecoChatClientOptions"/>' defaults.</param>
    public SecoChatClient(CausalLM model, ModelTokenizer tokenizer, ChatTemplate template, SecoChatClientOptions? options = null)
        : this(model, tokenizer, template, options, new SemaphoreSlim(1, 1), ownsModel: false)
    {
    }

    internal SecoChatClient(CausalLM model, ModelTokenizer tokenizer, Func<JsonArray, string> renderPrompt, SecoChatClientOptions? options,
        SemaphoreSlim gate, bool ownsModel)
        : this(model, tokenizer, renderPrompt ?? throw new ArgumentNullException(nameof(renderPrompt)), null, options, gate, ownsModel)
    {
    }

    internal SecoChatClient(CausalLM model, ModelTokenizer tokenizer, ChatTemplate template, SecoChatClientOptions? options,
        SemaphoreSlim gate, bool ownsModel)
        : this(model, tokenizer, null, template ?? throw new ArgumentNullException(nameof(template)), options, gate, ownsModel)
    {
    }

    SecoChatClient(CausalLM model, ModelTokenizer tokenizer, Func<JsonArray, string>? renderPrompt, ChatTemplate? template,
        SecoChatClientOptions? options, SemaphoreSlim gate, bool ownsModel)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        Model = model;
        Tokenizer = tokenizer;
        _renderPrompt = renderPrompt;
        _template = template;
        _toolCalls = template is null ? null : ToolCallFormat.ForTemplate(template.Source);
        Options = options ?? new SecoChatClientOptions();
        _gate = gate;
        _ownsModel = ownsModel;
        // Out-of-range defaults fail here rather than on the first request.
        ToGenerationOptions(Options, null, 1);
        Metadata = new ChatClientMetadata(ProviderName, providerUri: null, defaultModelId: Options.ModelId);
    }

    /// <summary>The model.</summary>
    public CausalLM Model { get; }

    /// <summary>The model's tokenizer.</summary>
    public ModelTokenizer Tokenizer { get; }

    /// <summary>The client's defaults.</summary>
    public SecoChatClientOptions Options { get; }

    /// <summary>Provider <see cref="ProviderName"/>, the model id of <see cref="Options"/>.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <summary>
    /// Loads a model directory in Hugging Face layout (config.json, safetensors weights, tokenizer files), optionally
    /// with a PEFT LoRA adapter, and returns a client that owns it (disposing the client releases the model).
    /// </summary>
    /// <param name="modelDirectory">The base model directory.</param>
    /// <param name="adapterDirectory">A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), or null.</param>
    /// <param name="renderPrompt">The chat-template renderer (see the constructor).</param>
    /// <param name="options">
    /// Decoding defaults; null: <see cref="SecoChatClientOptions.FromGenerationConfig"/> of the model directory. A null
    /// <see cref="SecoChatClientOptions.ModelId"/> becomes the directory's name.
    /// </param>
    /// <param name="device">auto (CUDA when available), cpu, cuda or cuda:N.</param>
    /// <param name="dtype">auto (bfloat16 on CUDA, float32 on the CPU), float32, bfloat16, float16 or float64.</param>
    /// <exception cref="DirectoryNotFoundException">A directory does not exist.</exception>
    /// <exception cref="OptionException"><paramref name="device"/> or <paramref name="dtype"/> is not one of those (its <see cref="OptionException.Option"/> is <c>device</c> or <c>dtype</c>), or CUDA is asked for and absent.</exception>
    public static SecoChatClient FromModelDirectory(string modelDirectory, string? adapterDirectory, Func<JsonArray, string> renderPrompt,
        SecoChatClientOptions? options = null, string device = "auto", string dtype = "auto")
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        ArgumentNullException.ThrowIfNull(renderPrompt);
        var (model, tokenizer, resolved) = Load(modelDirectory, adapterDirectory, options, device, dtype);
        return new SecoChatClient(model, tokenizer, renderPrompt, resolved, new SemaphoreSlim(1, 1), ownsModel: true);
    }

    static (CausalLM Model, ModelTokenizer Tokenizer, SecoChatClientOptions Options) Load(string modelDirectory, string? adapterDirectory,
        SecoChatClientOptions? options, string device, string dtype)
    {
        if (!Directory.Exists(modelDirectory)) throw new DirectoryNotFoundException($"Model directory '{modelDirectory}' does not exist.");
        if (adapterDirectory is not null && !Directory.Exists(adapterDirectory))
            throw new DirectoryNotFoundException($"Adapter directory '{adapterDirectory}' does not exist.");
        var tokenizer = ModelTokenizer.Load(modelDirectory);
        options = WithModelId(options ?? SecoChatClientOptions.FromGenerationConfig(modelDirectory), modelDirectory);
        var resolvedDevice = TensorSettings.ResolveDevice(device, nameof(device));
        var resolvedDType = TensorSettings.ResolveDType(dtype, resolvedDevice, nameof(dtype));
        var model = PeftAdapter.LoadWithBase(modelDirectory, adapterDirectory, resolvedDType, resolvedDevice);
        model.eval();
        return (model, tokenizer, options);
    }

    /// <summary>
    /// Loads a model directory (optionally with a PEFT LoRA adapter) as the other overload does, and renders
    /// conversations with the directory's own chat template (<see cref="ChatTemplate.FromModelDirectory"/>:
    /// chat_template.jinja, chat_template.json or tokenizer_config.json's <c>chat_template</c>) with the generation
    /// prompt, as <c>tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True)</c> does (the
    /// template is given <see cref="ChatOptions.Tools"/>, so that tools can be called). Replies stop at the
    /// tokenizer's end-of-sequence ids, among them the template's end-of-turn token where generation_config.json (or
    /// config.json, tokenizer_config.json) lists it.
    /// </summary>
    /// <param name="modelDirectory">The base model directory.</param>
    /// <param name="adapterDirectory">A PEFT adapter directory, or null.</param>
    /// <param name="options">Decoding defaults; null: <see cref="SecoChatClientOptions.FromGenerationConfig"/> of the model directory.</param>
    /// <param name="device">auto (CUDA when available), cpu, cuda or cuda:N.</param>
    /// <param name="dtype">auto (bfloat16 on CUDA, float32 on the CPU), float32, bfloat16, float16 or float64.</param>
    /// <exception cref="DirectoryNotFoundException">A directory does not exist.</exception>
    /// <exception cref="OptionException"><paramref name="device"/> or <paramref name="dtype"/> is not one of those, or CUDA is asked for and absent (see the other overload).</exception>
    /// <exception cref="InvalidDataException">The model directory has no chat template: pass a renderer to the other overload.</exception>
    public static SecoChatClient FromModelDirectory(string modelDirectory, string? adapterDirectory = null, SecoChatClientOptions? options = null,
        string device = "auto", string dtype = "auto")
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        if (!Directory.Exists(modelDirectory)) throw new DirectoryNotFoundException($"Model directory '{modelDirectory}' does not exist.");
        var template = TemplateOf(modelDirectory, "FromModelDirectory(modelDirectory, adapterDirectory, render)");
        var (model, tokenizer, resolved) = Load(modelDirectory, adapterDirectory, options, device, dtype);
        return new SecoChatClient(model, tokenizer, template, resolved, new SemaphoreSlim(1, 1), ownsModel: true);
    }

    /// <summary>The chat template of a model directory, or an error naming it and what to do instead.</summary>
    /// <exception cref="InvalidDataException">The directory has no chat template.</exception>
    internal static ChatTemplate TemplateOf(string modelDirectory, string alternative) =>
        ChatTemplate.FromModelDirectory(modelDirectory) ?? throw new InvalidDataException(
            $"The model directory '{modelDirectory}' has no chat template: tokenizer_config.json has no \"chat_template\" (nor is there a " +
            $"chat_template.jinja or chat_template.json), so a conversation cannot be rendered to a prompt. Add the model's template, or pass a renderer: {alternative}.");

    /// <summary>The options with <see cref="SecoChatClientOptions.ModelId"/> set to the directory's name when it is null.</summary>
    internal static SecoChatClientOptions WithModelId(SecoChatClientOptions options, string modelDirectory) =>
        options.ModelId is not null ? options
            : options with { ModelId = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDirectory))) };

    /// <summary>
    /// Converts Microsoft.Extensions.AI messages to the message list Hugging Face chat templates read: one
    /// <c>{"role", "content"}</c> object per message (role <c>system</c>, <c>user</c>, <c>assistant</c>, <c>tool</c>
    /// or a custom role's value; content the message's text contents concatenated), with an assistant's
    /// <see cref="TextReasoningContent"/> as <c>reasoning_content</c>, its <see cref="FunctionCallContent"/>s as
    /// <c>tool_calls</c> (<c>{"id", "type": "function", "function": {"name", "arguments": {...}}}</c>), and each
    /// <see cref="FunctionResultContent"/> as a message of its own, <c>{"role": "tool", "tool_call_id", "content"}</c>
    /// (a result that is not a string written as JSON).
    /// </summary>
    /// <param name="messages">The conversation, at least one message.</param>
    /// <exception cref="ArgumentException">
    /// The list is empty, a message is null, or a message holds content that has no place in a chat template
    /// (images, files, ...), a function call outside an assistant message, or function results mixed with other
    /// content; the message's index and role are named.
    /// </exception>
    public static JsonArray ToTemplateMessages(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var result = new JsonArray();
        int index = 0;
        foreach (var message in messages)
        {
            if (message is null) throw new ArgumentException($"Message {index} is null.", nameof(messages));
            string role = message.Role.Value;
            var text = new StringBuilder();
            var reasoning = new StringBuilder();
            var toolCalls = new JsonArray();
            var toolResults = new List<JsonObject>();
            foreach (var content in message.Contents)
            {
                switch (content)
                {
                    case TextContent t:
                        text.Append(t.Text);
                        break;
                    case TextReasoningContent r when message.Role == ChatRole.Assistant:
                        reasoning.Append(r.Text);
                        break;
                    case FunctionCallContent call when message.Role == ChatRole.Assistant:
                        toolCalls.Add(new JsonObject
                        {
                            ["id"] = call.CallId,
                            ["type"] = "function",
                            ["function"] = new JsonObject
                            {
                                ["name"] = call.Name,
                                ["arguments"] = call.Arguments is null ? new JsonObject()
                                    : JsonSerializer.SerializeToNode(call.Arguments, CompactJson),
                            },
                        });
                        break;
                    case FunctionCallContent:
                        throw new ArgumentException($"Message {index} ({role}) holds a function call; only assistant messages may.", nameof(messages));
                    case FunctionResultContent functionResult:
                        toolResults.Add(new JsonObject
                        {
                            ["role"] = ChatRole.Tool.Value,
                            ["tool_call_id"] = functionResult.CallId,
                            ["content"] = ResultText(functionResult.Result),
                        });
                        break;
                    default:
                        throw new ArgumentException(
                            $"Message {index} ({role}) holds {content.GetType().Name}, which SecoChatClient cannot render: it renders text, " +
                            "an assistant's reasoning text and function calls, and function results.", nameof(messages));
                }
            }
            if (toolResults.Count > 0)
            {
                if (text.Length > 0 || reasoning.Length > 0 || toolCalls.Count > 0)
                    throw new ArgumentException($"Message {index} ({role}) mixes function results with other content; put them in messages of their own.", nameof(messages));
                foreach (var toolMessage in toolResults) result.Add(toolMessage);
            }
            else
            {
                var node = new JsonObject { ["role"] = role, ["content"] = text.ToString() };
                if (reasoning.Length > 0) node["reasoning_content"] = reasoning.ToString();
                if (toolCalls.Count > 0) node["tool_calls"] = toolCalls;
                result.Add(node);
            }
            index++;
        }
        if (index == 0) throw new ArgumentException("The conversation holds no message: pass at least one.", nameof(messages));
        return result;
    }

    static string ResultText(object? result) => result switch
    {
        null => "",
        string s => s,
        JsonElement { ValueKind: JsonValueKind.String } e => e.GetString()!,
        _ => JsonSerializer.Serialize(result, CompactJson.GetTypeInfo(result.GetType())),
    };

    // Microsoft.Extensions.AI's serializer settings, on one line: a result goes into a prompt.
    static readonly JsonSerializerOptions CompactJson = MakeCompact();

    static JsonSerializerOptions MakeCompact()
    {
        var options = new JsonSerializerOptions(AIJsonUtilities.DefaultOptions) { WriteIndented = false };
        options.MakeReadOnly();
        return options;
    }

    /// <summary>
    /// Converts tool definitions to the list Hugging Face chat templates read as <c>tools</c>, in the form transformers'
    /// <c>apply_chat_template(tools=...)</c> passes them: <c>{"type": "function", "function": {"name", "description",
    /// "parameters"}}</c> per function, <c>parameters</c> the function's JSON schema.
    /// </summary>
    /// <param name="tools">Functions (<see cref="AIFunctionDeclaration"/>, e.g. from <see cref="AIFunctionFactory"/>).</param>
    /// <exception cref="NotSupportedException">A tool is not a function (a hosted tool such as a code interpreter); it is named.</exception>
    public static JsonArray ToTemplateTools(IEnumerable<AITool> tools)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var result = new JsonArray();
        foreach (var tool in tools)
        {
            if (tool is not AIFunctionDeclaration function)
                throw new NotSupportedException(
                    $"Tool '{tool?.Name}' is a {tool?.GetType().Name ?? "null"}, which SecoChatClient cannot offer the model: it runs no hosted tools and offers functions only (AIFunctionDeclaration, e.g. AIFunctionFactory.Create).");
            result.Add(new JsonObject
            {
                ["type"] = "function",
                ["function"] = new JsonObject
                {
                    ["name"] = function.Name,
                    ["description"] = function.Description,
                    ["parameters"] = JsonNode.Parse(function.JsonSchema.GetRawText()),
                },
            });
        }
        return result;
    }

    /// <summary>
    /// The prompt text a request renders to (<see cref="ChatOptions.Instructions"/> first, as a system message, and
    /// <see cref="ChatOptions.Tools"/> as the template's <c>tools</c>), for inspection; <see cref="GetResponseAsync"/>
    /// encodes exactly this.
    /// </summary>
    /// <param name="messages">The conversation.</param>
    /// <param name="options">The request's options, or null.</param>
    /// <exception cref="NotSupportedException">The request's tools cannot be offered (the class's remarks say when).</exception>
    public string RenderPrompt(IEnumerable<ChatMessage> messages, ChatOptions? options = null) => Render(messages, options, ToolsOf(options));

    string Render(IEnumerable<ChatMessage> messages, ChatOptions? options, JsonArray? tools)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.Instructions is { Length: > 0 } instructions)
            messages = messages.Prepend(new ChatMessage(ChatRole.System, instructions));
        var templateMessages = ToTemplateMessages(messages);
        var rendered = _template is not null ? _template.Render(templateMessages, addGenerationPrompt: true, tools) : _renderPrompt!(templateMessages);
        return rendered ?? throw new InvalidOperationException("The prompt renderer returned null.");
    }

    /// <summary>The tools a request offers the model, null for none; refuses what the client cannot honour.</summary>
    JsonArray? ToolsOf(ChatOptions? options)
    {
        if (options?.Tools is not { Count: > 0 } tools || options.ToolMode is NoneChatToolMode) return null;
        if (options.ToolMode is RequiredChatToolMode required)
            throw new NotSupportedException(
                $"SecoChatClient cannot force a tool call (ChatOptions.ToolMode is {(required.RequiredFunctionName is { } name ? $"RequireSpecific(\"{name}\")" : "RequireAny")}): " +
                "it does not constrain decoding, so the model may always answer in text. Use ChatToolMode.Auto (or leave ToolMode null).");
        if (_template is null)
            throw new NotSupportedException(
                "SecoChatClient cannot offer ChatOptions.Tools here: it was constructed with a renderer of messages only (Func<JsonArray, string>), which " +
                "cannot show the model tool definitions. Construct it with the model's ChatTemplate, or use FromModelDirectory without a renderer.");
        if (!_template.ReadsTools)
            throw new NotSupportedException(
                $"The chat template of {(Options.ModelId is { } id ? $"'{id}'" : "this client")} never reads the 'tools' variable, so the model would not " +
                "see the tool definitions in ChatOptions.Tools: use a model whose template renders tools (e.g. Qwen2.5-Instruct), or leave ChatOptions.Tools empty.");
        // Offering tools whose calls would never be read back would leave the caller with raw call text for an answer.
        if (_toolCalls is null)
            throw new NotSupportedException(
                $"The chat template of {(Options.ModelId is { } model ? $"'{model}'" : "this client")} renders tools but asks for tool calls in a format " +
                "SecoChatClient does not parse: it reads Hermes calls (<tool_call>{...}</tool_call>, templates that write <tool_call>: Qwen2.5, Qwen3) and " +
                "Llama 3.1 JSON calls ({\"name\": ..., \"parameters\": {...}}, templates that ask for that format: Llama 3.1 to 3.3). Leave ChatOptions.Tools empty for this model.");
        return ToTemplateTools(tools);
    }

    /// <inheritdoc/>
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        // Validation and rendering happen here, so that a bad request throws at the call.
        Respond(Prepare(messages, options), cancellationToken);

    async Task<ChatResponse> Respond(Request request, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // The whole reply runs off the caller's thread; each step manages its own torch state (see GenerationSession).
            return await Task.Run(() =>
            {
                using var reply = new Reply(this, request, cancellationToken);
                var text = new StringBuilder();
                while (!reply.Finished) text.Append(reply.Step(cancellationToken));
                var (contents, finish) = ReplyContents(request, text.ToString(), reply.FinishReason);
                return new ChatResponse(new ChatMessage(ChatRole.Assistant, contents) { MessageId = request.MessageId, CreatedAt = request.CreatedAt })
                {
                    ResponseId = request.ResponseId,
                    ModelId = Options.ModelId,
                    CreatedAt = request.CreatedAt,
                    FinishReason = finish,
                    Usage = reply.Usage,
                };
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <inheritdoc/>
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default) =>
        // As GetResponseAsync: a bad request throws at the call rather than at the first MoveNextAsync.
        Stream(Prepare(messages, options), cancellationToken);

    async IAsyncEnumerable<ChatResponseUpdate> Stream(Request request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // The prefill (the long part for a long conversation) runs off the caller's thread; tokens run where the
            // consumer resumes, each step with its own torch state.
            using var reply = await Task.Run(() => new Reply(this, request, cancellationToken), cancellationToken).ConfigureAwait(false);
            var calls = request.ParseToolCalls ? _toolCalls!() : null;
            while (!reply.Finished)
            {
                string text = reply.Step(cancellationToken);
                if (calls is null)
                {
                    if (text.Length > 0) yield return Update(request, new TextContent(text));
                }
                else
                {
                    foreach (var content in calls.Push(text)) yield return Update(request, content);
                    if (reply.Finished)
                        foreach (var content in calls.Flush()) yield return Update(request, content);
                }
            }
            var last = Update(request, new UsageContent(reply.Usage));
            last.FinishReason = calls is { SawCall: true } ? ChatFinishReason.ToolCalls : reply.FinishReason;
            yield return last;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>A whole reply's contents and finish reason: its text, or with tools offered, its text and tool calls.</summary>
    (IList<AIContent> Contents, ChatFinishReason? Finish) ReplyContents(Request request, string text, ChatFinishReason? finish)
    {
        if (!request.ParseToolCalls) return ([new TextContent(text)], finish);
        var contents = ToolCallFormat.ParseWhole(_toolCalls!(), text).ToList();
        if (contents.Count == 0) contents.Add(new TextContent(text));
        return (contents, contents.Any(c => c is FunctionCallContent) ? ChatFinishReason.ToolCalls : finish);
    }

    ChatResponseUpdate Update(Request request, AIContent content) => new(ChatRole.Assistant, [content])
    {
        ResponseId = request.ResponseId,
        MessageId = request.MessageId,
        ModelId = Options.ModelId,
        CreatedAt = request.CreatedAt,
    };

    /// <summary>Everything a reply needs that can be checked before it runs: the prompt's ids and the decoding settings.</summary>
    sealed record Request(IReadOnlyList<int> PromptIds, GenerationOptions Generation, IReadOnlyList<string> StopSequences,
        bool ParseToolCalls, string ResponseId, string MessageId, DateTimeOffset CreatedAt);

    Request Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("SecoChatClient does not constrain replies to JSON: leave ChatOptions.ResponseFormat null or Text.");
        // Calls are looked for only when tools were offered: otherwise a <tool_call> in a reply is the model's text.
        var tools = ToolsOf(options);
        string prompt = Render(messages, options, tools);
        var ids = Tokenizer.Encode(prompt, addBos: false);
        if (ids.Count == 0) throw new ArgumentException("The rendered prompt is empty: the renderer returned no text for these messages.", nameof(messages));
        int context = Options.ContextLength ?? Model.Config.MaxPositionEmbeddings;
        if (ids.Count >= context)
            throw new ArgumentException($"The prompt is {ids.Count} tokens, which leaves no room for a reply in the context of {context} tokens.", nameof(messages));
        var generation = ToGenerationOptions(Options, options, context - ids.Count);
        var stops = Options.StopSequences.Concat(options?.StopSequences ?? []).ToArray();
        string id = Guid.NewGuid().ToString("N");
        return new Request(ids, generation, stops, tools is not null, "seco-" + id, "seco-msg-" + id, DateTimeOffset.UtcNow);
    }

    // The request's settings over the client's; ranges are checked with the option named as the caller wrote it.
    GenerationOptions ToGenerationOptions(SecoChatClientOptions defaults, ChatOptions? request, int room)
    {
        double temperature = request?.Temperature ?? defaults.Temperature;
        double topP = request?.TopP ?? defaults.TopP;
        int topK = request?.TopK ?? defaults.TopK;
        int maxOutput = request?.MaxOutputTokens ?? defaults.MaxOutputTokens;
        string Name(bool fromRequest, string option) => (fromRequest ? nameof(ChatOptions) : nameof(SecoChatClientOptions)) + "." + option;
        if (!(temperature >= 0))
            throw new ArgumentOutOfRangeException(Name(request?.Temperature is not null, nameof(ChatOptions.Temperature)), temperature, "The temperature must be >= 0 (0 = greedy).");
        if (!(topP > 0 && topP <= 1))
            throw new ArgumentOutOfRangeException(Name(request?.TopP is not null, nameof(ChatOptions.TopP)), topP, "TopP must be in (0, 1].");
        if (topK < 0)
            throw new ArgumentOutOfRangeException(Name(request?.TopK is not null, nameof(ChatOptions.TopK)), topK, "TopK must be >= 0 (0 = off).");
        if (maxOutput < 0)
            throw new ArgumentOutOfRangeException(Name(request?.MaxOutputTokens is not null, nameof(ChatOptions.MaxOutputTokens)), maxOutput, "MaxOutputTokens must be >= 0.");
        if (defaults.PrefillChunkSize <= 0)
            throw new ArgumentOutOfRangeException(Name(false, nameof(SecoChatClientOptions.PrefillChunkSize)), defaults.PrefillChunkSize, "PrefillChunkSize must be positive.");
        return new GenerationOptions
        {
            MaxNewTokens = Math.Min(maxOutput, room),
            Temperature = temperature,
            TopP = topP,
            TopK = topK,
            Seed = request?.Seed ?? defaults.Seed ?? Random.Shared.NextInt64(),
            StopTokens = defaults.StopTokenIds ?? Tokenizer.EosIds,
            PrefillChunkSize = defaults.PrefillChunkSize,
        };
    }

    /// <summary>One reply in progress: the generation session, the streaming decoder and the stop-sequence filter.</summary>
    sealed class Reply : IDisposable
    {
        readonly GenerationSession _session;
        readonly IncrementalDecoder _decoder;
        readonly StopSequenceFilter _stops;

        public Reply(SecoChatClient client, Request request, CancellationToken cancellationToken)
        {
            _session = GenerationSession.Start(client.Model, request.PromptIds, request.Generation, cancellationToken);
            _decoder = new IncrementalDecoder(client.Tokenizer);
            _stops = new StopSequenceFilter(request.StopSequences);
        }

        public bool Finished { get; private set; }

        public ChatFinishReason? FinishReason { get; private set; }

        public UsageDetails Usage => new()
        {
            InputTokenCount = _session.PromptTokenCount,
            OutputTokenCount = _session.Generated.Count,
            TotalTokenCount = _session.PromptTokenCount + _session.Generated.Count,
        };

        /// <summary>One token; returns the text it completes, possibly empty. At the end, what was held back.</summary>
        public string Step(CancellationToken cancellationToken)
        {
            if (Finished) return "";
            if (_session.TryNext(out int token, cancellationToken))
            {
                string text = _stops.Push(_decoder.Push(token));
                if (_stops.Stopped) Finish(ChatFinishReason.Stop);
                return text;
            }
            // The reply's end: what the decoder held (an incomplete character) may still complete a stop sequence.
            string rest = _stops.Push(_decoder.Flush());
            rest += _stops.Flush();
            Finish(_stops.Stopped || _session.StopReason == GenerationStopReason.StopToken ? ChatFinishReason.Stop : ChatFinishReason.Length);
            return rest;
        }

        void Finish(ChatFinishReason reason)
        {
            Finished = true;
            FinishReason = reason;
        }

        public void Dispose() => _session.Dispose();
    }

    /// <summary>
    /// <see cref="ChatClientMetadata"/>, this client (or any type it is), the <see cref="CausalLM"/> or the
    /// <see cref="ModelTokenizer"/>; null for anything else or with a service key.
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(Model)) return Model;
        if (serviceType.IsInstanceOfType(Tokenizer)) return Tokenizer;
        return null;
    }

    /// <summary>Releases the model when the client loaded it (<see cref="FromModelDirectory(string, string?, Func{JsonArray, string}, SecoChatClientOptions?, string, string)"/>); otherwise nothing.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsModel) Model.Dispose();
    }
}
