namespace Microsoft.ML.Seco.Data;

/// <summary>
/// Supervised fine-tuning on a prompt and its response: BOS (when the tokenizer has one) and the prompt carry no loss,
/// the response and EOS (when there is one) do. A response that is empty or whitespace gives nothing to train on.
/// </summary>
/// <param name="Prompt">The prompt (no loss on it).</param>
/// <param name="Response">The response.</param>
/// <param name="Line">1-based line (or row) in its source; 0 when it has none.</param>
public sealed record PromptResponseDocument(string Prompt, string Response, int Line = 0) : Document(Line)
{
    /// <inheritdoc/>
    public override string Kind => "prompt/response";

    internal override EncodedDocument Encode(DocumentEncoder encoder)
    {
        var (head, prompt, response) = Parts(encoder);
        var ids = head.Concat(prompt).Concat(response).ToArray();
        return new EncodedDocument(ids, ids.Select((_, t) => t >= head.Count + prompt.Count).ToArray());
    }

    /// <summary>
    /// When the whole is longer than the maximum length, the PROMPT is truncated from the left (its beginning is
    /// dropped, BOS is kept) so the response stays whole and directly after the end of the prompt. When even BOS and
    /// the response alone do not fit, the first maximum-length tokens of BOS + prompt + response are kept with the same
    /// masking. A result with no labelled token left to predict gives nothing.
    /// </summary>
    internal override IEnumerable<TrainingExample> Sequences(DocumentEncoder encoder, SequenceBuilder builder)
    {
        var (head, prompt, response) = Parts(encoder);
        if (response.Count == 0) yield break;
        int room = builder.MaxSequenceLength - head.Count - response.Count;
        IEnumerable<int> keptPrompt = room >= prompt.Count ? prompt
            : room >= 0 ? prompt.Skip(prompt.Count - room)
            : prompt;
        var masked = head.Concat(keptPrompt).ToArray();
        var ids = masked.Concat(response).Take(builder.MaxSequenceLength).ToArray();
        var labels = ids.Select((id, t) => t < masked.Length ? (int)TokenBatch.IgnoreIndex : id).ToArray();
        // Label 0 is never a target (nothing precedes it), so a response that starts at position 0 still needs one more token.
        if (labels.Skip(1).All(l => l == TokenBatch.IgnoreIndex)) yield break;
        yield return new TrainingExample(ids, labels);
    }

    (IReadOnlyList<int> Head, IReadOnlyList<int> Prompt, List<int> Response) Parts(DocumentEncoder encoder)
    {
        var tokenizer = encoder.Tokenizer;
        if (string.IsNullOrWhiteSpace(Response)) return ([], [], []);
        IReadOnlyList<int> head = tokenizer.BosId is int bos ? [bos] : [];
        var prompt = string.IsNullOrEmpty(Prompt) ? [] : tokenizer.Encode(Prompt, addBos: false);
        var response = new List<int>(tokenizer.Encode(Response, addBos: false));
        if (tokenizer.EosId is int eos) response.Add(eos);
        return (head, prompt, response);
    }
}
