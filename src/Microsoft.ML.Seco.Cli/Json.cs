using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Cli;

/// <summary>JSON output helpers: one compact object per line; non-finite numbers become null.</summary>
internal static class Json
{
    static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    public static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static JsonNode? Number(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;
    public static JsonNode? Number(double? value) => value is double v ? Number(v) : null;

    public static void WriteLine(TextWriter writer, JsonObject value)
    {
        writer.WriteLine(value.ToJsonString(Compact));
        writer.Flush();
    }

    public static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
