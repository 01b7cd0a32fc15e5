namespace Microsoft.ML.Seco.Data;

/// <summary>
/// One document as training, evaluation and scoring see it, of one kind: <see cref="TextDocument"/> (language
/// modelling on every token), <see cref="PromptResponseDocument"/> (loss on the response) or
/// <see cref="ConversationDocument"/> (chat messages rendered by the model's chat template, loss on the assistant's
/// turns). A kind owns how it becomes token ids and which of them are trained on (<see cref="DocumentEncoder"/>), and
/// how it is cut to the maximum length (<see cref="SequenceBuilder"/>): a new format is one more kind.
/// </summary>
/// <param name="Line">1-based line (or row) in its source, for error messages; 0 when it has none.</param>
public abstract record Document(int Line)
{
    /// <summary>
    /// Where the document came from, for error messages: a file path (errors say "file, line N"),
    /// <see cref="DataViewRow"/> (they say "row N"), or null when unknown.
    /// </summary>
    public string? Source { get; init; }

    /// <summary>The <see cref="Source"/> of a data view's row: <see cref="Line"/> is then the row's 1-based index.</summary>
    public const string DataViewRow = "row";

    /// <summary>The kind's name as errors and reports say it: "text", "prompt/response" or "messages".</summary>
    public abstract string Kind { get; }

    /// <summary>The whole document's token ids and which of them are trained on, before any cut to a maximum length.</summary>
    internal abstract EncodedDocument Encode(DocumentEncoder encoder);

    /// <summary>
    /// The training sequences of this document: by default the encoding cut into windows as
    /// <see cref="SequenceBuilder.Overflow"/> says (<see cref="SequenceBuilder.Windows"/>).
    /// </summary>
    internal virtual IEnumerable<TrainingExample> Sequences(DocumentEncoder encoder, SequenceBuilder builder) => builder.Windows(Encode(encoder));

    /// <summary>"file, line N", "row N" (or "line N", or the kind alone) for error messages.</summary>
    internal string Where => (Source, Line) switch
    {
        (DataViewRow, > 0) => $"row {Line}",
        (string source, > 0) => $"{source}, line {Line}",
        (null, > 0) => $"line {Line}",
        (string source, _) => source,
        _ => $"a {Kind} document",
    };
}
