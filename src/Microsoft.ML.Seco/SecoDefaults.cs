namespace Microsoft.ML.Seco;

/// <summary>
/// Defaults that several parts of the library (and the <c>seco</c> command line) share, defined once: the options
/// records, the fitted stage's scoring settings, <see cref="Training.Evaluation"/> and the catalog's shortcut take them
/// from here.
/// </summary>
public static class SecoDefaults
{
    /// <summary>Tokens per chunk: 128 (the paper finds gains flatten above 128).</summary>
    public const int ChunkSize = 128;

    /// <summary>Longest token sequence trained on or scored at once: 16,384 tokens.</summary>
    public const int MaxSequenceLength = 16384;

    /// <summary>The shortest <see cref="ChunkwiseLoraTrainer.Options.MaxSequenceLength"/> allowed: 2 tokens (one to predict from, one to predict).</summary>
    public const int MinSequenceLengthLimit = 2;

    /// <summary>The longest <see cref="ChunkwiseLoraTrainer.Options.MaxSequenceLength"/> allowed: 1,048,576 tokens.</summary>
    public const int MaxSequenceLengthLimit = 1 << 20;
}
