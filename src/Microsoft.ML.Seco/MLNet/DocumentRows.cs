using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco;

/// <summary>Reads the stage's columns from an IDataView with a cursor, row by row, never materialising the data.</summary>
internal static class DocumentRows
{
    /// <summary>
    /// Streams the rows' values as documents of the columns' kind (Line = 1-based row; a messages value is parsed by
    /// <see cref="ConversationDocument.FromJson"/>, so a malformed one names "row N" and the turn).
    /// </summary>
    public static IEnumerable<Document> Read(IDataView data, DocumentColumns documentColumns)
    {
        var columns = documentColumns.Names.Select(n => data.Schema[n]).ToArray();
        using var cursor = data.GetRowCursor(columns);
        var getters = columns.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
        var value = default(ReadOnlyMemory<char>);
        int row = 0;
        while (cursor.MoveNext())
        {
            var texts = getters.Select(g => { g(ref value); return value.ToString(); }).ToArray();
            row++;
            yield return documentColumns.Document(texts, row);
        }
    }
}
