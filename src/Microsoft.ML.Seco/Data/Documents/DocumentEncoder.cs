using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Data;

/// <summary>
/// The one step from a <see cref="Document"/> of any kind to token ids and, token by token, whether the loss is taken
/// on it: what training, evaluation, scoring and <c>seco tokenize</c> share.
/// </summary>
/// <param name="Tokenizer">The model's tokenizer.</param>
/// <param name="ChatTemplate">The model's chat template, which <see cref="ConversationDocument"/>s need; null when it has none.</param>
/// <param name="AssistantOnlyLoss">Conversations: the loss on the assistant's turns only (default), or on every token.</param>
/// <param name="ChatTemplateVariables">Extra variables the chat template sees (e.g. Qwen3's <c>enable_thinking</c>), or null.</param>
public sealed record DocumentEncoder(ModelTokenizer Tokenizer, ChatTemplate? ChatTemplate = null, bool AssistantOnlyLoss = true,
    IReadOnlyDictionary<string, JsonNode?>? ChatTemplateVariables = null)
{
    /// <summary>An encoder for <paramref name="tokenizer"/> with the chat template of <paramref name="modelDirectory"/>, when it has one.</summary>
    public static DocumentEncoder ForModel(string modelDirectory, ModelTokenizer tokenizer, bool assistantOnlyLoss = true) =>
        new(tokenizer, ChatTemplate.FromModelDirectory(modelDirectory), assistantOnlyLoss);

    /// <summary>The document's token ids and which are trained on, before any cut to a maximum length.</summary>
    /// <exception cref="InvalidDataException">The document cannot be encoded (a conversation without a chat template, a template that raised, nothing trainable); the message names its file, line and turn.</exception>
    public EncodedDocument Encode(Document document)
    {
        ArgumentNullException.ThrowIfNull(document);
        return document.Encode(this);
    }
}
