namespace Microsoft.ML.Seco.Data;

/// <summary>
/// Plain language modelling: BOS (when the tokenizer has one), the text, EOS (when it has one), the loss on every
/// token. Empty or whitespace text gives nothing to train on.
/// </summary>
/// <param name="Text">The document.</param>
/// <param name="Line">1-based line (or row) in its source; 0 when it has none.</param>
public sealed record TextDocument(string Text, int Line = 0) : Document(Line)
{
    /// <inheritdoc/>
    public override string Kind => "text";

    internal override EncodedDocument Encode(DocumentEncoder encoder)
    {
        if (string.IsNullOrWhiteSpace(Text)) return new EncodedDocument([], []);
        var ids = new List<int>(encoder.Tokenizer.Encode(Text, addBos: true));
        if (encoder.Tokenizer.EosId is int eos) ids.Add(eos);
        return new EncodedDocument(ids.ToArray(), Enumerable.Repeat(true, ids.Count).ToArray());
    }
}
