using System.Globalization;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Seco.Training;

/// <summary>Sizes as people write them: 8GiB, 512MiB, 16GB, 1.5G or a byte count.</summary>
public static partial class ByteSize
{
    /// <summary>What a size looks like, for error messages.</summary>
    public const string Examples = "8GiB, 512MiB or 16GB";

    /// <summary>
    /// Parses a size: binary prefixes for KiB/MiB/GiB/TiB and a bare K/M/G/T, decimal for KB/MB/GB/TB, bytes without a
    /// unit; false for anything else, or a size under one byte or beyond a long.
    /// </summary>
    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        var match = SizePattern().Match(text?.Trim() ?? "");
        if (!match.Success || !double.TryParse(match.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) return false;
        string prefix = match.Groups[2].Value.ToUpperInvariant();
        bool decimalUnit = match.Groups[3].Value.Length == 0 && match.Groups[4].Value.Length > 0;
        double unit = prefix.Length == 0 ? 1 : Math.Pow(decimalUnit ? 1000 : 1024, "KMGT".IndexOf(prefix, StringComparison.Ordinal) + 1);
        double size = value * unit;
        if (size is not (>= 1 and < long.MaxValue)) return false;
        bytes = (long)size;
        return true;
    }

    /// <summary>Bytes as GiB (two decimals) from 1 GiB up, else as MiB with <paramref name="mebibyteDecimals"/> decimals.</summary>
    public static string Format(double bytes, int mebibyteDecimals = 1) => bytes >= 1L << 30
        ? (bytes / (1L << 30)).ToString("F2", CultureInfo.InvariantCulture) + " GiB"
        : (bytes / (1 << 20)).ToString("F" + mebibyteDecimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) + " MiB";

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)$", RegexOptions.IgnoreCase)]
    private static partial Regex SizePattern();
}
