namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// An error inside the interpreter, located (when known) by its index in the template source; the public
/// <see cref="ChatTemplateException"/> is made from it with line and column.
/// </summary>
internal sealed class TemplateError(string message, ChatTemplateErrorKind kind, int sourceIndex = -1) : Exception(message)
{
    public ChatTemplateErrorKind Kind { get; } = kind;
    public int SourceIndex { get; } = sourceIndex;

    public static TemplateError Syntax(string message, int sourceIndex) => new(message, ChatTemplateErrorKind.Syntax, sourceIndex);

    public static TemplateError Runtime(string message) => new(message, ChatTemplateErrorKind.Runtime);

    /// <summary>This error, located at <paramref name="sourceIndex"/> unless it already has a location.</summary>
    public TemplateError At(int sourceIndex) => SourceIndex >= 0 || sourceIndex < 0 ? this : new TemplateError(Message, Kind, sourceIndex);
}
