using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Data;

/// <summary>One training sequence: token ids and, position by position, the label (the id itself, or −100 for no loss).</summary>
/// <param name="Ids">Token ids.</param>
/// <param name="Labels">Labels, as long as <paramref name="Ids"/>; the model predicts label t+1 from positions ≤ t.</param>
public sealed record TrainingExample(int[] Ids, int[] Labels);

/// <summary>What <see cref="SequenceBuilder"/> does with a document longer than the maximum length.</summary>
public enum SequenceOverflow
{
    /// <summary>Cut the document into consecutive windows of the maximum length: every token is trained on.</summary>
    Split,
    /// <summary>Keep the first window only.</summary>
    Truncate,
}

/// <summary>Turns documents into training sequences of at most <see cref="MaxSequenceLength"/> tokens.</summary>
public sealed class SequenceBuilder
{
    /// <summary>The longest sequence produced.</summary>
    public int MaxSequenceLength { get; }
    /// <summary>What happens to text beyond <see cref="MaxSequenceLength"/>.</summary>
    public SequenceOverflow Overflow { get; }

    /// <summary>Creates the builder.</summary>
    /// <param name="maxSequenceLength">The longest sequence produced, at least 2 (one token to predict from, one to predict).</param>
    /// <param name="overflow">What happens to text beyond the maximum length.</param>
    public SequenceBuilder(int maxSequenceLength, SequenceOverflow overflow = SequenceOverflow.Split)
    {
        if (maxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, "MaxSequenceLength must be at least 2.");
        if (!Enum.IsDefined(overflow)) throw new ArgumentOutOfRangeException(nameof(overflow), overflow, "Unknown overflow handling.");
        MaxSequenceLength = maxSequenceLength;
        Overflow = overflow;
    }

    /// <summary>
    /// The sequences of one document, of whatever kind, through <paramref name="encoder"/>: the one rule for turning a
    /// row into examples, shared by training, validation and scoring. Text and conversations are cut into windows
    /// (<see cref="Windows"/>); a prompt/response keeps its response whole (<see cref="PromptResponseDocument"/>).
    /// </summary>
    public IEnumerable<TrainingExample> FromDocument(DocumentEncoder encoder, Document document)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(document);
        return document.Sequences(encoder, this);
    }

    /// <summary>As <see cref="FromDocument(DocumentEncoder, Document)"/> with a tokenizer and no chat template.</summary>
    public IEnumerable<TrainingExample> FromDocument(ModelTokenizer tokenizer, Document document) => FromDocument(new DocumentEncoder(tokenizer), document);

    /// <summary>Plain language modelling on <paramref name="text"/> (<see cref="TextDocument"/>), cut into windows.</summary>
    public IEnumerable<TrainingExample> FromText(ModelTokenizer tokenizer, string? text)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return FromDocument(tokenizer, new TextDocument(text ?? ""));
    }

    /// <summary>Supervised fine-tuning on a prompt and a response (<see cref="PromptResponseDocument"/>).</summary>
    public IEnumerable<TrainingExample> FromPromptResponse(ModelTokenizer tokenizer, string? prompt, string? response)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return FromDocument(tokenizer, new PromptResponseDocument(prompt ?? "", response ?? ""));
    }

    /// <summary>
    /// An encoding longer than <see cref="MaxSequenceLength"/> cut into consecutive windows of that length
    /// (<see cref="SequenceOverflow.Split"/>; a window may start inside a conversation's turn, and its first token is
    /// then context only) or to the first window (<see cref="SequenceOverflow.Truncate"/>: a conversation loses its
    /// later turns). A window with no trained token left to predict (label 0 never is one) is dropped, and so is a
    /// last window of a single token.
    /// </summary>
    public IEnumerable<TrainingExample> Windows(EncodedDocument encoded)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        var labels = encoded.Labels();
        for (int start = 0; start < encoded.Ids.Length; start += MaxSequenceLength)
        {
            int length = Math.Min(MaxSequenceLength, encoded.Ids.Length - start);
            if (length < 2) yield break;
            var windowLabels = labels.AsSpan(start, length);
            if (windowLabels[1..].ContainsAnyExcept((int)TokenBatch.IgnoreIndex))
                yield return new TrainingExample(encoded.Ids.AsSpan(start, length).ToArray(), windowLabels.ToArray());
            if (Overflow == SequenceOverflow.Truncate) yield break;
        }
    }
}
