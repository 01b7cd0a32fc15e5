namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>The kinds of token @huggingface/jinja's lexer produces.</summary>
internal enum TokenKind
{
    Text,
    NumericLiteral,
    StringLiteral,
    Identifier,
    Equals,
    OpenParen,
    CloseParen,
    OpenStatement,
    CloseStatement,
    OpenExpression,
    CloseExpression,
    OpenSquareBracket,
    CloseSquareBracket,
    OpenCurlyBracket,
    CloseCurlyBracket,
    Comma,
    Dot,
    Colon,
    Pipe,
    AdditiveBinaryOperator,
    MultiplicativeBinaryOperator,
    ExponentiationBinaryOperator,
    ComparisonBinaryOperator,
    UnaryOperator,
    Comment,
}

/// <summary>A token: its kind, its text (a string literal's unescaped value), where it starts in the source, and for text the generation markers inside it.</summary>
internal sealed class Token(TokenKind kind, string value, int sourceIndex)
{
    public TokenKind Kind { get; } = kind;
    public string Value { get; set; } = value;
    public int SourceIndex { get; } = sourceIndex;

    /// <summary>For text: (offset in <see cref="Value"/>, is end) of each generation tag inside or at the edges of it.</summary>
    public List<(int Offset, bool IsEnd, int SourceIndex)>? Markers { get; set; }

    public override string ToString() => $"{Kind} '{Value}'";
}
