namespace Microsoft.ML.Seco.Chat;

/// <summary>
/// The characters of a rendering that a <c>{% generation %}...{% endgeneration %}</c> block wrote: the text the
/// model is trained to produce (transformers' <c>return_assistant_tokens_mask</c>).
/// </summary>
/// <param name="Start">Index of the first character in the rendered text.</param>
/// <param name="Length">Number of characters (UTF-16 units).</param>
public readonly record struct GenerationSpan(int Start, int Length)
{
    /// <summary>Index just past the last character.</summary>
    public int End => Start + Length;
}
