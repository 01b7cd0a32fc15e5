using System.Globalization;

namespace Microsoft.ML.Seco.Training;

/// <summary>A change of one option that makes the run fit, with the peak predicted after it.</summary>
/// <param name="Option">The stage's option (<see cref="ChunkwiseLoraTrainer.Options"/> field name), e.g. <c>MaxSequenceLength</c>.</param>
/// <param name="Value">The value that fits.</param>
/// <param name="PredictedBytes">The predicted peak with that value.</param>
public sealed record MemoryRemedy(string Option, object Value, long PredictedBytes);

/// <summary>
/// A training run does not fit in its device's memory: said before the first step when the predicted peak of the run's
/// longest sequence exceeds what the device has free (or the memory budget), or after a step that ran out of memory
/// anyway. Carries the numbers and the changes that would fit as data; <see cref="Describe"/> words them with the names a
/// front end uses for the options (the stage's field names, <c>seco train</c>'s flags).
/// </summary>
public sealed class InsufficientDeviceMemoryException : Exception
{
    /// <summary>Creates the exception; <see cref="Exception.Message"/> names the stage's options.</summary>
    public InsufficientDeviceMemoryException(string device, long length, int batchSize, int chunkSize, long? predictedBytes, long? availableBytes,
        int? step, IReadOnlyList<MemoryRemedy> remedies, Exception? innerException = null)
        : base(Compose(device, length, batchSize, chunkSize, predictedBytes, availableBytes, step, remedies, name => name), innerException)
    {
        Device = device;
        Length = length;
        BatchSize = batchSize;
        ChunkSize = chunkSize;
        PredictedBytes = predictedBytes;
        AvailableBytes = availableBytes;
        Step = step;
        Remedies = remedies;
    }

    /// <summary>The device, e.g. <c>cuda:0</c>.</summary>
    public string Device { get; }
    /// <summary>Tokens of the longest sequence (or of the batch that failed).</summary>
    public long Length { get; }
    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize { get; }
    /// <summary>Tokens per chunk.</summary>
    public int ChunkSize { get; }
    /// <summary>The predicted peak, when known.</summary>
    public long? PredictedBytes { get; }
    /// <summary>What the device had free (or the budget), when known.</summary>
    public long? AvailableBytes { get; }
    /// <summary>The optimizer step that ran out of memory; null when the pre-flight check refused the run.</summary>
    public int? Step { get; }
    /// <summary>Changes of one option each that are predicted to fit.</summary>
    public IReadOnlyList<MemoryRemedy> Remedies { get; }

    /// <summary>The same with more remedies (a front end that knows the run's options adds them to a step's failure).</summary>
    public InsufficientDeviceMemoryException WithRemedies(IReadOnlyList<MemoryRemedy> remedies, long? predictedBytes, long? availableBytes) =>
        new(Device, Length, BatchSize, ChunkSize, predictedBytes ?? PredictedBytes, availableBytes ?? AvailableBytes, Step, remedies, InnerException);

    /// <summary>The message, naming each option as <paramref name="optionName"/> spells it.</summary>
    public string Describe(Func<string, string> optionName) =>
        Compose(Device, Length, BatchSize, ChunkSize, PredictedBytes, AvailableBytes, Step, Remedies, optionName);

    static string Compose(string device, long length, int batchSize, int chunkSize, long? predicted, long? available, int? step,
        IReadOnlyList<MemoryRemedy> remedies, Func<string, string> optionName)
    {
        var text = new System.Text.StringBuilder();
        var culture = CultureInfo.InvariantCulture;
        string sequences = batchSize > 1 ? string.Create(culture, $"{batchSize} sequences of {length:N0} tokens") : string.Create(culture, $"a sequence of {length:N0} tokens");
        text.Append(step is int s
            ? string.Create(culture, $"Step {s} ran out of memory on {device} with {sequences} in chunks of {chunkSize:N0}")
            : string.Create(culture, $"The run does not fit on {device}: the longest batch, {sequences} in chunks of {chunkSize:N0}, needs about {Format(predicted)}"));
        if (step is not null && predicted is long p) text.Append(CultureInfo.InvariantCulture, $" (predicted {Format(p)})");
        if (available is long a) text.Append(CultureInfo.InvariantCulture, $"; {Format(a)} {(step is null ? "are" : "were")} available");
        text.Append('.');
        if (remedies.Count > 0)
            text.Append(" Would fit: ").Append(string.Join("; or ", remedies.Select(r =>
                string.Create(CultureInfo.InvariantCulture, $"{optionName(r.Option)} {Value(r.Value)} (about {Format(r.PredictedBytes)})")))).Append('.');
        else text.Append(" No single change of ").Append(string.Join(", ", RemedyOptions.Select(optionName))).Append(" is predicted to fit.");
        if (step is not null) text.Append(" The last saved checkpoint is unchanged.");
        return text.ToString();
    }

    /// <summary>The options a remedy may change, in the order they are tried.</summary>
    internal static readonly string[] RemedyOptions = ["RecomputeLayers", "ChunkSize", "BatchSize", "MaxSequenceLength"];

    static string Value(object value) => value switch
    {
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    static string Format(long? bytes) => bytes is long b ? ByteSize.Format(b, mebibyteDecimals: 0) : "an unknown amount";
}
