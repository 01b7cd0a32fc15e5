using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="FormatDType">The dtype as the file spells it (<c>F32</c>, <c>BF16</c>, ...).</param>
/// <param name="DType">The TorchSharp element type the bytes are read as.</param>
/// <param name="Shape">The shape, row-major.</param>
/// <param name="DataBegin">Offset of the first byte, relative to the start of the byte buffer.</param>
/// <param name="DataEnd">Offset one past the last byte, relative to the start of the byte buffer.</param>
public sealed record SafeTensorInfo(string Name, string FormatDType, ScalarType DType, IReadOnlyList<long> Shape, long DataBegin, long DataEnd)
{
    /// <summary>The number of bytes the tensor occupies.</summary>
    public long ByteLength => DataEnd - DataBegin;

    /// <summary>The number of elements.</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (long d in Shape) count *= d;
            return count;
        }
    }
}
