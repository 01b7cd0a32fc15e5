using System.Globalization;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// <see cref="GradientCheck"/> would enumerate more of a sampler's selections than its limit. The error is data, as an
/// <see cref="OptionException"/> is: the chunk count, the sampler, the number of selections and the limit, so that a
/// front end says which of its own settings to change (a command line names its sequence-length, chunk-size and limit
/// flags). <see cref="Exception.Message"/> says it in the check's own terms.
/// </summary>
/// <remarks>
/// It derives from <see cref="ArgumentOutOfRangeException"/> (parameter <c>chunks</c>), which the check threw before, so
/// that code catching that keeps catching it.
/// </remarks>
public sealed class TooManySelectionsException : ArgumentOutOfRangeException
{
    /// <summary>Creates the error.</summary>
    /// <param name="chunks">The chunks of the sequence (k).</param>
    /// <param name="sampler">The sampler's name (<see cref="Chunkwise.Samplers.IChunkSampler.Name"/>).</param>
    /// <param name="selections">How many selections its law has, at least (a double: 2^k overflows integers).</param>
    /// <param name="limit">The most the check enumerates.</param>
    public TooManySelectionsException(int chunks, string sampler, double selections, int limit)
        : base(nameof(chunks), chunks, null)
    {
        ArgumentException.ThrowIfNullOrEmpty(sampler);
        Chunks = chunks;
        Sampler = sampler;
        Selections = selections;
        Limit = limit;
    }

    /// <summary>The chunks of the sequence (k).</summary>
    public int Chunks { get; }

    /// <summary>The sampler's name.</summary>
    public string Sampler { get; }

    /// <summary>How many selections the sampler's law has (at least this many).</summary>
    public double Selections { get; }

    /// <summary>The most selections the check enumerates.</summary>
    public int Limit { get; }

    /// <summary>One sentence: the chunks, the selections, the limit and what shortens the enumeration.</summary>
    public override string Message => string.Create(CultureInfo.InvariantCulture,
        $"{Chunks} chunks give {Selections:N0} selections of the {Sampler} sampler to enumerate, more than the limit of {Limit:N0}; use a shorter sequence or a larger chunk size.");
}
