namespace Microsoft.ML.Seco.Data;

/// <summary>A document's token ids and, token by token, whether the loss is taken on it.</summary>
/// <param name="Ids">Token ids, special tokens included.</param>
/// <param name="Trained">As long as <paramref name="Ids"/>: true where the model is trained to predict the token.</param>
/// <param name="Rendered">The text the ids encode when it is not the document's own (a chat template's rendering), else null.</param>
public sealed record EncodedDocument(int[] Ids, bool[] Trained, string? Rendered = null)
{
    /// <summary>Labels as training reads them: the id where <see cref="Trained"/>, else <see cref="TokenBatch.IgnoreIndex"/>.</summary>
    public int[] Labels() => Ids.Select((id, t) => Trained[t] ? id : (int)TokenBatch.IgnoreIndex).ToArray();
}
