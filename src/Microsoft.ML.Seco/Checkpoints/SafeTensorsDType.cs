using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>Maps between safetensors dtype names and TorchSharp element types.</summary>
internal static class SafeTensorsDType
{
    private static readonly Dictionary<string, (ScalarType Type, int Size)> ByName = new(StringComparer.Ordinal)
    {
        ["F64"] = (ScalarType.Float64, 8),
        ["F32"] = (ScalarType.Float32, 4),
        ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2),
        ["I64"] = (ScalarType.Int64, 8),
        ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2),
        ["I8"] = (ScalarType.Int8, 1),
        ["U8"] = (ScalarType.Byte, 1),
        ["BOOL"] = (ScalarType.Bool, 1),
    };

    // Valid in the format but without a TorchSharp counterpart we can read bit-exactly; named separately so the
    // error says "unsupported" rather than "unknown".
    private static readonly HashSet<string> KnownUnsupported = new(StringComparer.Ordinal)
    {
        "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
    };

    public static IEnumerable<string> SupportedNames => ByName.Keys;

    public static bool TryParse(string name, out ScalarType type, out int size)
    {
        if (ByName.TryGetValue(name, out var entry))
        {
            (type, size) = entry;
            return true;
        }
        type = default;
        size = 0;
        return false;
    }

    public static bool IsKnownUnsupported(string name) => KnownUnsupported.Contains(name);

    public static string NameOf(ScalarType type) => type switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new ArgumentException($"Element type {type} cannot be stored in a safetensors file.", nameof(type)),
    };

    public static int SizeOf(ScalarType type) => ByName[NameOf(type)].Size;
}
