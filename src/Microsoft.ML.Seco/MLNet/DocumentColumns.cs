using Microsoft.ML.Data;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco;

/// <summary>The kind of document a stage's columns hold.</summary>
internal enum DocumentColumnKind
{
    /// <summary>One text column: language modelling on every token.</summary>
    Text,
    /// <summary>Prompt and response columns: the loss on the response.</summary>
    PromptResponse,
    /// <summary>One column of conversations as JSON, rendered by the model's chat template.</summary>
    Messages,
}

/// <summary>
/// Which columns a stage reads and what kind of document they make: the one place that decides it, for the trainer's
/// options and for the fitted stage's <see cref="ScoringSettings"/>. A messages column wins (the options refuse it
/// with a prompt column), then prompt + response when both are set, else the text column.
/// </summary>
/// <param name="Kind">The kind of document.</param>
/// <param name="Names">The columns read, in the order <see cref="Document"/> reads their values.</param>
internal sealed record DocumentColumns(DocumentColumnKind Kind, IReadOnlyList<string> Names)
{
    /// <summary>The columns of a stage's settings.</summary>
    public static DocumentColumns Of(string textColumn, string? promptColumn, string? responseColumn, string? messagesColumn) =>
        messagesColumn is not null ? new(DocumentColumnKind.Messages, [messagesColumn])
        : promptColumn is not null && responseColumn is not null ? new(DocumentColumnKind.PromptResponse, [promptColumn, responseColumn])
        : new(DocumentColumnKind.Text, [textColumn]);

    // What a column should be, for schema errors.
    string Expected => Kind == DocumentColumnKind.Messages
        ? "a messages column (Text: each row a JSON array of {\"role\", \"content\"} objects)"
        : "a text column";

    /// <summary>
    /// The encoder of every row of these columns: with the chat template of <paramref name="modelPath"/> for
    /// conversations (a model without one is refused, naming the directory), without one for the other kinds (a text
    /// run does not depend on the template).
    /// </summary>
    /// <exception cref="InvalidDataException">Conversations, and the model has no chat template.</exception>
    public DocumentEncoder Encoder(string modelPath, ModelTokenizer tokenizer, bool assistantOnlyLoss)
    {
        if (Kind != DocumentColumnKind.Messages) return new DocumentEncoder(tokenizer, null, assistantOnlyLoss);
        var encoder = DocumentEncoder.ForModel(modelPath, tokenizer, assistantOnlyLoss);
        if (encoder.ChatTemplate is null)
            throw new InvalidDataException(
                $"The messages column '{Names[0]}' holds conversations, which are rendered by the model's chat template, and the model directory " +
                $"'{modelPath}' has none: tokenizer_config.json has no \"chat_template\" (nor is there a chat_template.jinja or chat_template.json). " +
                "Add the template the model was trained with, or train on a text or prompt/response column.");
        return encoder;
    }

    /// <summary>The document of one row's values (<paramref name="row"/>: 1-based; 0 when unknown, as in scoring).</summary>
    /// <exception cref="InvalidDataException">A messages value that is not a conversation; the message names the row (or column) and the turn.</exception>
    public Document Document(IReadOnlyList<string> values, int row)
    {
        string? source = row > 0 ? Data.Document.DataViewRow : null;
        return Kind switch
        {
            // Scoring knows no row number: its errors name the column.
            DocumentColumnKind.Messages => ConversationDocument.FromJson(values[0], row > 0 ? $"row {row}" : $"column '{Names[0]}'", row) with { Source = source ?? $"column '{Names[0]}'" },
            DocumentColumnKind.PromptResponse => new PromptResponseDocument(values[0], values[1], row) { Source = source },
            _ => new TextDocument(values[0], row) { Source = source },
        };
    }

    /// <summary>Throws when a column is missing or not text, naming it and what it should hold (as ML.NET estimators do).</summary>
    public void Check(SchemaShape schema)
    {
        foreach (var column in Names)
        {
            var found = schema.Cast<SchemaShape.Column?>().FirstOrDefault(c => c!.Value.Name == column)
                ?? throw new ArgumentOutOfRangeException(nameof(schema), Missing(column));
            if (found.Kind != SchemaShape.Column.VectorKind.Scalar || found.ItemType is not TextDataViewType)
                throw new ArgumentOutOfRangeException(nameof(schema), WrongType(column, $"{(found.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : "vector of ")}{found.ItemType}"));
        }
    }

    /// <summary>Same check on a concrete schema.</summary>
    public void Check(DataViewSchema schema)
    {
        foreach (var column in Names)
        {
            var found = schema.GetColumnOrNull(column) ?? throw new ArgumentOutOfRangeException(nameof(schema), Missing(column));
            if (found.Type is not TextDataViewType) throw new ArgumentOutOfRangeException(nameof(schema), WrongType(column, $"{found.Type}"));
        }
    }

    string Missing(string column) => $"Input schema has no column '{column}'; ChunkwiseLora expects {Expected} named '{column}'.";

    string WrongType(string column, string type) => $"Column '{column}' has type {type}; ChunkwiseLora expects Text (string){(Kind == DocumentColumnKind.Messages ? ", each row a conversation as JSON" : "")}.";
}
