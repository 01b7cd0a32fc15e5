namespace Microsoft.ML.Seco.Chat;

/// <summary>A rendered conversation and the spans of it written inside <c>{% generation %}</c> blocks, in order.</summary>
/// <param name="Text">The rendered text, identical to <see cref="ChatTemplate.Render"/>'s.</param>
/// <param name="GenerationSpans">
/// The spans; only blocks whose text goes straight to the output are tracked (one inside a macro or a block
/// <c>set</c> renders but records no span).
/// </param>
public sealed record ChatRendering(string Text, IReadOnlyList<GenerationSpan> GenerationSpans);
