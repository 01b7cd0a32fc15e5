using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat.Jinja;

namespace Microsoft.ML.Seco.Chat;

/// <summary>
/// A Hugging Face chat template (Jinja) parsed once and rendered for conversations, by an interpreter of this library
/// that follows @huggingface/jinja (the renderer transformers.js uses), with transformers' settings
/// <c>trim_blocks</c> and <c>lstrip_blocks</c>. Templates see <c>messages</c>, <c>add_generation_prompt</c>,
/// <c>tools</c>, the special tokens and any extra variables (e.g. <c>enable_thinking</c>).
/// </summary>
/// <remarks>
/// Values print as the reference prints them (<c>true</c>, <c>false</c>; none and undefined as nothing). Where the
/// reference departs from Python Jinja by ignoring an argument or losing output, Python's meaning is kept:
/// <c>strip</c>/<c>lstrip</c>/<c>rstrip</c> with characters strip only those, and <c>break</c>/<c>continue</c> keep
/// what the iteration already wrote; a string plus a list or dict is an error (the reference writes JavaScript's
/// "[object Map]" into the text). Beyond the reference, Jinja's <c>select</c>, <c>reject</c>, <c>count</c>,
/// <c>wordcount</c>, <c>round</c>, <c>escape</c>, <c>sum</c>, <c>min</c>, <c>max</c>, <c>batch</c>, <c>map</c> with a
/// filter name, tests with arguments (<c>divisibleby(3)</c>, <c>eq(x)</c>...) and the string methods <c>find</c>,
/// <c>rfind</c>, <c>rsplit</c>, <c>splitlines</c>, <c>count</c> work. Not supported: <c>include</c>,
/// <c>extends</c>, <c>raw</c>, <c>loop.cycle</c>.
/// </remarks>
public sealed class ChatTemplate
{
    private static readonly string[] s_specialTokenNames = ["bos_token", "eos_token", "pad_token", "unk_token"];

    private readonly List<Node> _body;
    private readonly IReadOnlyDictionary<string, string?> _specialTokens;

    /// <summary>Parses <paramref name="source"/>.</summary>
    /// <param name="source">The template's Jinja text.</param>
    /// <param name="specialTokens">Variables such as <c>bos_token</c> the template sees (a null value is <c>none</c>).</param>
    /// <exception cref="ChatTemplateException">The source is not a valid template (with its line and column).</exception>
    public ChatTemplate(string source, IReadOnlyDictionary<string, string?>? specialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        Source = source;
        _specialTokens = specialTokens is null ? new Dictionary<string, string?>() : new Dictionary<string, string?>(specialTokens);
        try
        {
            var pre = Preprocessor.Run(source);
            var tokens = Lexer.Tokenize(pre);
            // From the tokens, not the text: "tools" inside literal text, a string or as an attribute (message.tools) is no read.
            ReadsTools = tokens.Where((t, i) => t.Kind == TokenKind.Identifier && t.Value == "tools" && (i == 0 || tokens[i - 1].Kind != TokenKind.Dot)).Any();
            _body = Parser.Parse(tokens, source.Length);
        }
        catch (TemplateError e)
        {
            throw ToPublic(e);
        }
    }

    /// <summary>The template's Jinja text.</summary>
    public string Source { get; }

    /// <summary>
    /// True when the template refers to the <c>tools</c> variable anywhere in its code: a template that does not can
    /// show a model no tool definitions (tool calling needs a template written for it).
    /// </summary>
    public bool ReadsTools { get; }

    /// <summary>
    /// True when the template marks the assistant's replies with <c>{% generation %}</c> blocks (transformers'
    /// assistant-token masks), so that <see cref="RenderWithGenerationSpans"/> says which characters are trained on.
    /// </summary>
    public bool HasGenerationMarkers => GenerationTag.IsMatch(Source);

    static readonly System.Text.RegularExpressions.Regex GenerationTag = new(@"\{%-?\s*generation\s*[-+]?%\}", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>The special tokens given to the template.</summary>
    public IReadOnlyDictionary<string, string?> SpecialTokens => _specialTokens;

    /// <summary>The clock <c>strftime_now</c> reads (local time); the system clock unless set, e.g. for reproducible tests.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// The chat template of a tokenizer_config.json: <c>chat_template</c> as a string, or a list of
    /// <c>{"name", "template"}</c> from which <paramref name="name"/> (else "default") is taken; with the
    /// config's <c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c> and <c>unk_token</c> (a string or an AddedToken
    /// object's <c>content</c>; unset or null ones are left out, as transformers leaves them out).
    /// </summary>
    /// <returns>Null when the file has no chat template.</returns>
    /// <exception cref="InvalidDataException">The file is not valid JSON, or the named template is not in its list.</exception>
    /// <exception cref="ChatTemplateException">The template does not parse.</exception>
    public static ChatTemplate? FromTokenizerConfig(string tokenizerConfigPath, string? name = null)
    {
        var config = ReadObject(tokenizerConfigPath);
        string? source = TemplateSource(config["chat_template"], name, tokenizerConfigPath);
        return source is null ? null : new ChatTemplate(source, SpecialTokensOf(config));
    }

    /// <summary>
    /// The chat template of a model directory: <c>chat_template.jinja</c> when present (newer transformers save the
    /// template there), else <c>chat_template.json</c>'s <c>chat_template</c>, else tokenizer_config.json's; the
    /// special tokens come from tokenizer_config.json when the directory has one.
    /// </summary>
    /// <returns>Null when the directory has no chat template.</returns>
    public static ChatTemplate? FromModelDirectory(string directory, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string configPath = Path.Combine(directory, "tokenizer_config.json");
        JsonObject? config = File.Exists(configPath) ? ReadObject(configPath) : null;
        var specials = config is null ? new Dictionary<string, string?>() : SpecialTokensOf(config);
        string jinjaPath = Path.Combine(directory, "chat_template.jinja");
        if (File.Exists(jinjaPath)) return new ChatTemplate(File.ReadAllText(jinjaPath), specials);
        string jsonPath = Path.Combine(directory, "chat_template.json");
        if (File.Exists(jsonPath) && TemplateSource(ReadObject(jsonPath)["chat_template"], name, jsonPath) is { } fromJson)
            return new ChatTemplate(fromJson, specials);
        return config is not null && TemplateSource(config["chat_template"], name, configPath) is { } source
            ? new ChatTemplate(source, specials) : null;
    }

    /// <summary>Renders a conversation.</summary>
    /// <param name="messages">Hugging Face style messages: objects with <c>role</c>, <c>content</c>, and e.g. <c>tool_calls</c>.</param>
    /// <param name="addGenerationPrompt">Whether to end with the header of an assistant turn.</param>
    /// <param name="tools">Tool definitions (JSON schema objects); the template sees <c>none</c> when null.</param>
    /// <param name="variables">Extra variables, e.g. <c>enable_thinking</c>; they override the others of the same name.</param>
    /// <exception cref="ChatTemplateException">Rendering failed or the template raised an exception.</exception>
    public string Render(JsonArray messages, bool addGenerationPrompt, JsonArray? tools = null, IReadOnlyDictionary<string, JsonNode?>? variables = null) =>
        RenderWithGenerationSpans(messages, addGenerationPrompt, tools, variables).Text;

    /// <summary>
    /// Renders a conversation as <see cref="Render"/> does and returns the spans of the text written inside
    /// <c>{% generation %}...{% endgeneration %}</c> blocks (the assistant's replies in templates that mark them).
    /// </summary>
    /// <exception cref="ChatTemplateException">Rendering failed or the template raised an exception.</exception>
    public ChatRendering RenderWithGenerationSpans(JsonArray messages, bool addGenerationPrompt, JsonArray? tools = null, IReadOnlyDictionary<string, JsonNode?>? variables = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        try
        {
            var scope = new Scope(Globals.Create(TimeProvider));
            scope.Set("messages", Value.FromJson(messages));
            scope.Set("add_generation_prompt", BooleanValue.Of(addGenerationPrompt));
            scope.Set("tools", tools is null ? NullValue.Instance : Value.FromJson(tools));
            foreach (var (key, token) in _specialTokens) scope.Set(key, token is null ? NullValue.Instance : new StringValue(token));
            if (variables is not null)
                foreach (var (key, v) in variables) scope.Set(key, Value.FromJson(v));
            var (text, spans) = Interpreter.Render(_body, scope);
            return new ChatRendering(text, spans.Select(s => new GenerationSpan(s.Start, s.End - s.Start)).ToList());
        }
        catch (TemplateError e)
        {
            throw ToPublic(e);
        }
    }

    private ChatTemplateException ToPublic(TemplateError e)
    {
        if (e.SourceIndex < 0) return new ChatTemplateException(e.Message, e.Kind, 0, 0, e);
        int index = Math.Min(e.SourceIndex, Source.Length);
        int line = 1, lineStart = 0;
        for (int i = 0; i < index; i++)
        {
            if (Source[i] == '\n')
            {
                line++;
                lineStart = i + 1;
            }
        }
        return new ChatTemplateException(e.Message, e.Kind, line, index - lineStart + 1, e);
    }

    private static JsonObject ReadObject(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }
    }

    private static string? TemplateSource(JsonNode? node, string? name, string path)
    {
        switch (node)
        {
            case null:
                return null;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                return v.GetValue<string>();
            case JsonArray list:
            {
                var named = list.OfType<JsonObject>()
                    .Where(o => o["name"]?.GetValueKind() == JsonValueKind.String && o["template"]?.GetValueKind() == JsonValueKind.String)
                    .ToDictionary(o => o["name"]!.GetValue<string>(), o => o["template"]!.GetValue<string>(), StringComparer.Ordinal);
                string wanted = name ?? "default";
                if (named.TryGetValue(wanted, out var template)) return template;
                throw new InvalidDataException($"{path} has no chat template named '{wanted}' (it has: {string.Join(", ", named.Keys)}).");
            }
            default:
                throw new InvalidDataException($"{path}: chat_template is neither a string nor a list of named templates.");
        }
    }

    private static Dictionary<string, string?> SpecialTokensOf(JsonObject config)
    {
        var tokens = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var key in s_specialTokenNames)
        {
            string? content = config[key] switch
            {
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                JsonObject o when o["content"] is JsonValue c && c.GetValueKind() == JsonValueKind.String => c.GetValue<string>(),
                _ => null,
            };
            if (content is not null) tokens[key] = content;
        }
        return tokens;
    }
}
