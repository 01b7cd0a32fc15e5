using Microsoft.ML.Data;
using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco;

/// <summary>Reads the stage's columns from an IDataView with a cursor, row by row, never materialising the data.</summary>
internal static class DocumentRows
{
    /// <summary>The columns training reads: prompt + response when both are set, else the text column.</summary>
    public static string[] TrainingColumns(ChunkwiseLoraTrainer.Options options) =>
        options.HasPromptResponse ? new[] { options.PromptColumnName!, options.ResponseColumnName! } : new[] { options.TextColumnName };

    /// <summary>Throws when a column is missing or not text, naming it and the expected type (as ML.NET estimators do).</summary>
    public static void CheckText(SchemaShape schema, string column)
    {
        var found = schema.Cast<SchemaShape.Column?>().FirstOrDefault(c => c!.Value.Name == column)
            ?? throw new ArgumentOutOfRangeException(nameof(schema), $"Input schema has no column '{column}'; ChunkwiseLora expects a text column named '{column}'.");
        if (found.Kind != SchemaShape.Column.VectorKind.Scalar || found.ItemType is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Column '{column}' has type {(found.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : "vector of ")}{found.ItemType}; ChunkwiseLora expects Text (string).");
    }

    /// <summary>Same check on a concrete schema.</summary>
    public static void CheckText(DataViewSchema schema, string column)
    {
        var found = schema.GetColumnOrNull(column)
            ?? throw new ArgumentOutOfRangeException(nameof(schema), $"Input schema has no column '{column}'; ChunkwiseLora expects a text column named '{column}'.");
        if (found.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Column '{column}' has type {found.Type}; ChunkwiseLora expects Text (string).");
    }

    /// <summary>Streams the rows' text values as documents (Line = 1-based row).</summary>
    public static IEnumerable<Document> Read(IDataView data, ChunkwiseLoraTrainer.Options options)
    {
        var names = TrainingColumns(options);
        var columns = names.Select(n => data.Schema[n]).ToArray();
        using var cursor = data.GetRowCursor(columns);
        var getters = columns.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
        var value = default(ReadOnlyMemory<char>);
        int row = 0;
        while (cursor.MoveNext())
        {
            var texts = getters.Select(g => { g(ref value); return value.ToString(); }).ToArray();
            row++;
            yield return options.HasPromptResponse ? new PromptResponseDocument(texts[0], texts[1], row) { Source = "row" } : new TextDocument(texts[0], row) { Source = "row" };
        }
    }
}
