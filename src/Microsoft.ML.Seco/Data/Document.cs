namespace Microsoft.ML.Seco.Data;

/// <summary>
/// One document as training and scoring see it: either <see cref="Text"/>, or <see cref="Prompt"/> and
/// <see cref="Response"/>. A line of a JSON-lines file, a row of a data view or a text file.
/// </summary>
/// <param name="Text">The document, for plain language modelling.</param>
/// <param name="Prompt">The prompt, for supervised fine-tuning (no loss on it).</param>
/// <param name="Response">The response, for supervised fine-tuning.</param>
/// <param name="Line">1-based line (or row) in its source, for error messages; 0 when it has none.</param>
public sealed record Document(string? Text, string? Prompt = null, string? Response = null, int Line = 0);
