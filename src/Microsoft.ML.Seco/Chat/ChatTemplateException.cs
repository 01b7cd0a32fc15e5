namespace Microsoft.ML.Seco.Chat;

/// <summary>
/// A chat template could not be parsed or rendered. <see cref="TemplateMessage"/> is the message alone (for
/// <c>raise_exception</c>, exactly the template's text); <see cref="Line"/> and <see cref="Column"/> locate it in the
/// template source. Callers add their own context (data file, line, conversation turn) by wrapping it.
/// </summary>
public sealed class ChatTemplateException : Exception
{
    /// <summary>Creates the exception; <paramref name="line"/> and <paramref name="column"/> are 1-based, 0 when unknown.</summary>
    public ChatTemplateException(string templateMessage, ChatTemplateErrorKind kind, int line, int column, Exception? innerException = null)
        : base(Describe(templateMessage, kind, line, column), innerException)
    {
        TemplateMessage = templateMessage;
        Kind = kind;
        Line = line;
        Column = column;
    }

    /// <summary>The message without location: the argument of <c>raise_exception</c>, or the interpreter's description.</summary>
    public string TemplateMessage { get; }

    /// <summary>Whether the template's source is invalid, rendering failed, or the template raised the error itself.</summary>
    public ChatTemplateErrorKind Kind { get; }

    /// <summary>1-based line in the template source where the failing tag or expression starts; 0 when unknown.</summary>
    public int Line { get; }

    /// <summary>1-based column (in UTF-16 units) in that line; 0 when unknown.</summary>
    public int Column { get; }

    private static string Describe(string message, ChatTemplateErrorKind kind, int line, int column)
    {
        string what = kind switch
        {
            ChatTemplateErrorKind.Syntax => "Chat template syntax error",
            ChatTemplateErrorKind.Runtime => "Chat template error",
            _ => "Chat template raised an exception",
        };
        return line > 0 ? $"{what} at line {line}, column {column}: {message}" : $"{what}: {message}";
    }
}
