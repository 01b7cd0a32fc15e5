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

    /// <summary>
    /// Whether a conversation with no token to train on (under <see cref="AssistantOnlyLoss"/>: no assistant turn with
    /// text) is an error naming it: true (the default) is training's rule, which refuses such a row before the first step
    /// because it is most likely a mistake in the data. False gives its encoding with no trained token, which scoring
    /// reports as it reports an empty text: nothing scored (<see cref="Training.Evaluation.ScoreDocument(Model.CausalLM, DocumentEncoder, Document, int, int, bool)"/>
    /// uses false).
    /// </summary>
    public bool RefuseUntrainedConversations { get; init; } = true;

    /// <summary>The document's token ids and which are trained on, before any cut to a maximum length.</summary>
    /// <exception cref="InvalidDataException">
    /// The document cannot be encoded (a conversation without a chat template, a template that raised, or, with
    /// <see cref="RefuseUntrainedConversations"/>, nothing trainable); the message names its file, line and turn.
    /// </exception>
    public EncodedDocument Encode(Document document)
    {
        ArgumentNullException.ThrowIfNull(document);
        return document.Encode(this);
    }
}
