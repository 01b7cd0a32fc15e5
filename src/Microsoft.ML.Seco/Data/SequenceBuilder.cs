using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Data;

/// <summary>One training sequence: token ids and, position by position, the label (the id itself, or −100 for no loss).</summary>
/// <param name="Ids">Token ids.</param>
/// <param name="Labels">Labels, as long as <paramref name="Ids"/>; the model predicts label t+1 from positions ≤ t.</param>
public sealed record TrainingExample(int[] Ids, int[] Labels);

/// <summary>What <see cref="SequenceBuilder.FromText"/> does with a document longer than the maximum length.</summary>
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
    /// The sequences of one document: <see cref="FromText"/> when it has text, else <see cref="FromPromptResponse"/>.
    /// The one rule for turning a row into examples, shared by training, validation and scoring.
    /// </summary>
    public IEnumerable<TrainingExample> FromDocument(ModelTokenizer tokenizer, Document document) =>
        document.Text is not null ? FromText(tokenizer, document.Text) : FromPromptResponse(tokenizer, document.Prompt, document.Response);

    /// <summary>
    /// Plain language modelling on <paramref name="text"/>: BOS (when the tokenizer has one), the text, EOS (when it
    /// has one), loss on every token. Longer than <see cref="MaxSequenceLength"/>, the ids are split into consecutive
    /// windows (<see cref="SequenceOverflow.Split"/>; a last window of a single token is dropped, it has nothing to
    /// predict) or cut to the first window (<see cref="SequenceOverflow.Truncate"/>). Empty or whitespace text gives nothing.
    /// </summary>
    public IEnumerable<TrainingExample> FromText(ModelTokenizer tokenizer, string? text)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (string.IsNullOrWhiteSpace(text)) yield break;
        var ids = new List<int>(tokenizer.Encode(text, addBos: true));
        if (tokenizer.EosId is int eos) ids.Add(eos);
        for (int start = 0; start < ids.Count; start += MaxSequenceLength)
        {
            int length = Math.Min(MaxSequenceLength, ids.Count - start);
            if (length < 2) yield break;
            var window = ids.GetRange(start, length).ToArray();
            yield return new TrainingExample(window, (int[])window.Clone());
            if (Overflow == SequenceOverflow.Truncate) yield break;
        }
    }

    /// <summary>
    /// Supervised fine-tuning: BOS (when the tokenizer has one) and <paramref name="prompt"/> carry label −100, the
    /// response and EOS (when there is one) carry the loss. When the whole is longer than <see cref="MaxSequenceLength"/>,
    /// the PROMPT is truncated from the left (its beginning is dropped, BOS is kept) so the response stays whole and
    /// directly after the end of the prompt. When even BOS and the response alone do not fit, the first
    /// <see cref="MaxSequenceLength"/> tokens of BOS + prompt + response are kept with the same masking. A response that
    /// is empty or whitespace, or a result with no labelled token left to predict, gives nothing.
    /// </summary>
    public IEnumerable<TrainingExample> FromPromptResponse(ModelTokenizer tokenizer, string? prompt, string? response)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (string.IsNullOrWhiteSpace(response)) yield break;
        var head = tokenizer.BosId is int bos ? new List<int> { bos } : new List<int>();
        var promptIds = string.IsNullOrEmpty(prompt) ? Array.Empty<int>() : tokenizer.Encode(prompt, addBos: false);
        var responseIds = new List<int>(tokenizer.Encode(response, addBos: false));
        if (tokenizer.EosId is int eos) responseIds.Add(eos);

        int room = MaxSequenceLength - head.Count - responseIds.Count;
        IEnumerable<int> keptPrompt = room >= promptIds.Count ? promptIds
            : room >= 0 ? promptIds.Skip(promptIds.Count - room)
            : promptIds;
        var masked = head.Concat(keptPrompt).ToArray();
        var ids = masked.Concat(responseIds).Take(MaxSequenceLength).ToArray();
        var labels = ids.Select((id, t) => t < masked.Length ? (int)TokenBatch.IgnoreIndex : id).ToArray();
        // Label 0 is never a target (nothing precedes it), so a response that starts at position 0 still needs one more token.
        if (labels.Skip(1).All(l => l == TokenBatch.IgnoreIndex)) yield break;
        yield return new TrainingExample(ids, labels);
    }
}
