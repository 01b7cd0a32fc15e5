using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Cli.Commands;

/// <summary>
/// seco generate --chat: the conversation rendered by the model's chat template with its generation prompt, the
/// assistant's reply streamed through <see cref="SecoChatClient"/> (the library's IChatClient).
/// </summary>
internal static class ChatGeneration
{
    /// <summary>What the command line asks for; the generation settings are already checked.</summary>
    internal sealed record Request(string Model, string? Adapter, string? Prompt, string? System, string? MessagesPath,
        GenerationOptions Generation, string DType, string Device, bool Json);

    public static int Run(CliContext context, Request r)
    {
        var template = ChatTemplate.FromModelDirectory(r.Model) ?? throw new UsageException(
            $"--model '{r.Model}' has no chat template (tokenizer_config.json \"chat_template\", chat_template.jinja or chat_template.json), " +
            "which generate --chat renders the conversation with; without --chat, --prompt is continued as plain text.");
        string where = r.MessagesPath ?? "--prompt";
        JsonArray? tools = null;
        List<ChatMessage> conversation;
        if (r.MessagesPath is string path)
        {
            var document = ReadConversation(path);
            tools = document.Tools;
            conversation = ToChatMessages(document.Messages, path);
        }
        else
        {
            conversation = [];
            if (r.System is string system) conversation.Add(new ChatMessage(ChatRole.System, system));
            conversation.Add(new ChatMessage(ChatRole.User, r.Prompt));
        }

        // The tools of a messages file go to the template as they are; the client itself never calls tools.
        string Render(JsonArray messages)
        {
            try { return template.Render(messages, addGenerationPrompt: true, tools); }
            catch (ChatTemplateException e) { throw new InvalidDataException($"{where}: the chat template failed on this conversation: {e.Message}", e); }
        }

        var tokenizer = ModelTokenizer.Load(r.Model);
        using var model = ModelLoading.Load(r.Model, r.Adapter, r.DType, r.Device);
        var g = r.Generation;
        var clientOptions = new SecoChatClientOptions
        {
            ModelId = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(r.Model))),
            PrefillChunkSize = g.PrefillChunkSize,
        };
        using var client = new SecoChatClient(model, tokenizer, Render, clientOptions);
        var options = new ChatOptions
        {
            MaxOutputTokens = g.MaxNewTokens,
            Temperature = (float)g.Temperature,
            TopP = (float)g.TopP,
            Seed = g.Seed,
        };

        var reply = new StringBuilder();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        // Validation and rendering happen at the call, so a bad conversation fails before anything is printed.
        var updates = client.GetStreamingResponseAsync(conversation, options, context.CancellationToken);
        async Task Stream()
        {
            await foreach (var update in updates.ConfigureAwait(false))
            {
                string text = update.Text;
                reply.Append(text);
                if (!r.Json && text.Length > 0)
                {
                    context.Out.Write(text);
                    context.Out.Flush();
                }
                finish = update.FinishReason ?? finish;
                if (update.Contents.OfType<UsageContent>().FirstOrDefault() is { } u) usage = u.Details;
            }
        }
        Stream().GetAwaiter().GetResult();

        if (r.Json)
        {
            Json.WriteLine(context.Out, new JsonObject
            {
                ["completion"] = reply.ToString(),
                ["prompt_tokens"] = usage?.InputTokenCount,
                ["generated_tokens"] = usage?.OutputTokenCount,
                ["finish_reason"] = finish?.Value,
            });
        }
        else context.Out.WriteLine();
        return ExitCodes.Success;
    }

    /// <summary>A --messages file: a messages array, or {"messages", "tools"}; errors name the file and the message.</summary>
    static ConversationDocument ReadConversation(string path)
    {
        if (Directory.Exists(path)) throw new UsageException($"--messages '{path}' is a folder; expected a JSON file.");
        if (!File.Exists(path)) throw new UsageException($"--messages '{path}' does not exist.");
        return ConversationDocument.FromJson(File.ReadAllText(path), path);
    }

    /// <summary>
    /// Hugging Face messages (validated by <see cref="ConversationDocument.Parse"/>) as Microsoft.Extensions.AI
    /// messages, which <see cref="SecoChatClient.ToTemplateMessages"/> turns back into the same list: role and text
    /// content (a list of parts: their texts), an assistant's <c>reasoning_content</c> and <c>tool_calls</c>, a tool
    /// message's <c>tool_call_id</c>. Other fields of a message are not passed on.
    /// </summary>
    internal static List<ChatMessage> ToChatMessages(JsonArray messages, string where)
    {
        var result = new List<ChatMessage>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i]!.AsObject();
            string role = message["role"]!.GetValue<string>();
            string turn = $"{where}, message {i + 1} ({role})";
            string text = ContentText(message["content"], turn);
            var contents = new List<AIContent>();
            if (role == "tool" && message["tool_call_id"] is JsonValue callId)
                contents.Add(new FunctionResultContent(callId.ToString(), text));
            else
            {
                if (role == "assistant" && message["reasoning_content"] is JsonValue reasoning && reasoning.GetValueKind() == JsonValueKind.String)
                    contents.Add(new TextReasoningContent(reasoning.GetValue<string>()));
                if (text.Length > 0) contents.Add(new TextContent(text));
                if (role == "assistant" && message["tool_calls"] is JsonArray calls)
                    for (int c = 0; c < calls.Count; c++) contents.Add(ToolCall(calls[c], $"{turn}, tool call {c + 1}"));
            }
            result.Add(new ChatMessage(new ChatRole(role), contents));
        }
        return result;
    }

    static string ContentText(JsonNode? content, string turn)
    {
        if (content is null) return "";
        if (content is JsonValue value) return value.GetValue<string>();
        var text = new StringBuilder();
        foreach (var part in content.AsArray())
        {
            if (part is JsonObject o && o["type"]?.GetValueKind() == JsonValueKind.String && o["type"]!.GetValue<string>() == "text"
                && o["text"] is JsonValue t && t.GetValueKind() == JsonValueKind.String)
                text.Append(t.GetValue<string>());
            else
                throw new InvalidDataException($"{turn}: generate --chat sends text only; a content part must be {{\"type\": \"text\", \"text\": \"...\"}}, found {part?.ToJsonString() ?? "null"}.");
        }
        return text.ToString();
    }

    static FunctionCallContent ToolCall(JsonNode? call, string where)
    {
        if (call is not JsonObject o || o["function"] is not JsonObject function || function["name"] is not JsonValue name || name.GetValueKind() != JsonValueKind.String)
            throw new InvalidDataException($"{where}: expected {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}.");
        JsonNode? arguments = function["arguments"];
        if (arguments is JsonValue s && s.GetValueKind() == JsonValueKind.String)
        {
            try { arguments = JsonNode.Parse(s.GetValue<string>()); }
            catch (JsonException e) { throw new InvalidDataException($"{where}: \"arguments\" is a string that is not JSON ({e.Message}).", e); }
        }
        if (arguments is not null and not JsonObject) throw new InvalidDataException($"{where}: \"arguments\" must be an object.");
        var values = arguments is JsonObject args
            ? args.ToDictionary(p => p.Key, p => (object?)(p.Value is null ? null : Element(p.Value)))
            : null;
        return new FunctionCallContent(o["id"]?.ToString() ?? "", name.GetValue<string>(), values);
    }

    static JsonElement Element(JsonNode node)
    {
        using var document = JsonDocument.Parse(node.ToJsonString());
        return document.RootElement.Clone();
    }
}
