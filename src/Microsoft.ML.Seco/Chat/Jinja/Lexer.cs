namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// Splits preprocessed template text into tokens, as @huggingface/jinja's <c>tokenize</c> does: text outside tags,
/// comments, and the tokens inside <c>{{ }}</c> and <c>{% %}</c>, applying the <c>-</c> whitespace controls.
/// </summary>
internal sealed class Lexer
{
    private static readonly (string Sequence, TokenKind Kind)[] s_table =
    [
        ("{%", TokenKind.OpenStatement), ("%}", TokenKind.CloseStatement),
        ("{{", TokenKind.OpenExpression), ("}}", TokenKind.CloseExpression),
        ("(", TokenKind.OpenParen), (")", TokenKind.CloseParen),
        ("{", TokenKind.OpenCurlyBracket), ("}", TokenKind.CloseCurlyBracket),
        ("[", TokenKind.OpenSquareBracket), ("]", TokenKind.CloseSquareBracket),
        (",", TokenKind.Comma), (".", TokenKind.Dot), (":", TokenKind.Colon), ("|", TokenKind.Pipe),
        ("<=", TokenKind.ComparisonBinaryOperator), (">=", TokenKind.ComparisonBinaryOperator),
        ("==", TokenKind.ComparisonBinaryOperator), ("!=", TokenKind.ComparisonBinaryOperator),
        ("<", TokenKind.ComparisonBinaryOperator), (">", TokenKind.ComparisonBinaryOperator),
        ("+", TokenKind.AdditiveBinaryOperator), ("-", TokenKind.AdditiveBinaryOperator), ("~", TokenKind.AdditiveBinaryOperator),
        ("**", TokenKind.ExponentiationBinaryOperator),
        ("*", TokenKind.MultiplicativeBinaryOperator), ("//", TokenKind.MultiplicativeBinaryOperator),
        ("/", TokenKind.MultiplicativeBinaryOperator), ("%", TokenKind.MultiplicativeBinaryOperator),
        ("=", TokenKind.Equals),
    ];

    private readonly string _src;
    private readonly int[] _map;
    private readonly IReadOnlyList<GenerationMarker> _markers;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _nextMarker;

    private Lexer(Preprocessor pre)
    {
        _src = pre.Text;
        _map = pre.SourceIndex;
        _markers = pre.Markers;
    }

    public static List<Token> Tokenize(Preprocessor pre) => new Lexer(pre).Run();

    private int Src(int position) => _map[Math.Min(position, _map.Length - 1)];

    private char At(int i) => i < _src.Length ? _src[i] : '\0';

    private bool StartsWith(string s) => _src.AsSpan(Math.Min(_pos, _src.Length)).StartsWith(s, StringComparison.Ordinal);

    private TemplateError Error(string message) => TemplateError.Syntax(message, Src(_pos));

    private void Add(TokenKind kind, string value, int position) => _tokens.Add(new Token(kind, value, Src(position)));

    private List<Token> Run()
    {
        int curlyDepth = 0;
        int regionStart = 0;
        while (_pos < _src.Length)
        {
            var last = _tokens.Count > 0 ? _tokens[^1].Kind : (TokenKind?)null;
            if (last is null or TokenKind.CloseStatement or TokenKind.CloseExpression or TokenKind.Comment)
            {
                int start = _pos;
                while (_pos < _src.Length && !(_src[_pos] == '{' && At(_pos + 1) is '%' or '{' or '#')) _pos++;
                var markers = TakeMarkers(regionStart, start, _pos);
                if (_pos > start || markers is not null)
                {
                    _tokens.Add(new Token(TokenKind.Text, _src[start.._pos], Src(start)) { Markers = markers });
                    continue;
                }
            }

            if (StartsWith("{#"))
            {
                int open = _pos;
                _pos += 2;
                bool stripBefore = At(_pos) == '-';
                if (stripBefore) _pos++;
                int commentStart = _pos;
                while (At(_pos) != '#' || At(_pos + 1) != '}')
                {
                    if (_pos + 2 >= _src.Length) throw Error("Missing end of comment tag");
                    _pos++;
                }
                string comment = _src[commentStart.._pos];
                bool stripAfter = comment.EndsWith('-');
                if (stripAfter) comment = comment[..^1];
                if (stripBefore) StripTrailingWhitespace();
                Add(TokenKind.Comment, comment, open);
                _pos += 2;
                regionStart = _pos;
                if (stripAfter) SkipLeadingWhitespace();
                continue;
            }

            if (StartsWith("{%-"))
            {
                StripTrailingWhitespace();
                Add(TokenKind.OpenStatement, "{%", _pos);
                _pos += 3;
                continue;
            }
            if (StartsWith("{{-"))
            {
                StripTrailingWhitespace();
                Add(TokenKind.OpenExpression, "{{", _pos);
                curlyDepth = 0;
                _pos += 3;
                continue;
            }

            ConsumeWhile(JsCompat.IsWhitespace);

            if (StartsWith("-%}"))
            {
                Add(TokenKind.CloseStatement, "%}", _pos);
                _pos += 3;
                regionStart = _pos;
                SkipLeadingWhitespace();
                continue;
            }
            if (StartsWith("-}}"))
            {
                Add(TokenKind.CloseExpression, "}}", _pos);
                _pos += 3;
                regionStart = _pos;
                SkipLeadingWhitespace();
                continue;
            }

            char c = At(_pos);
            if (c is '-' or '+')
            {
                var lastKind = _tokens.Count > 0 ? _tokens[^1].Kind : (TokenKind?)null;
                if (lastKind is null or TokenKind.Text) throw Error($"Unexpected character: {c}");
                if (lastKind is not (TokenKind.Identifier or TokenKind.NumericLiteral or TokenKind.StringLiteral
                    or TokenKind.CloseParen or TokenKind.CloseSquareBracket))
                {
                    int start = _pos;
                    _pos++;
                    string num = ConsumeWhile(char.IsAsciiDigit);
                    if (num.Length > 0 && At(_pos) == '.' && char.IsAsciiDigit(At(_pos + 1)))
                    {
                        _pos++;
                        num = $"{num}.{ConsumeWhile(char.IsAsciiDigit)}";
                    }
                    Add(num.Length > 0 ? TokenKind.NumericLiteral : TokenKind.UnaryOperator, c + num, start);
                    continue;
                }
            }

            bool matched = false;
            foreach (var (seq, kind) in s_table)
            {
                if (seq == "}}" && curlyDepth > 0) continue;
                if (!StartsWith(seq)) continue;
                Add(kind, seq, _pos);
                if (kind == TokenKind.OpenExpression) curlyDepth = 0;
                else if (kind == TokenKind.OpenCurlyBracket) curlyDepth++;
                else if (kind == TokenKind.CloseCurlyBracket) curlyDepth--;
                _pos += seq.Length;
                if (kind is TokenKind.CloseStatement or TokenKind.CloseExpression) regionStart = _pos;
                matched = true;
                break;
            }
            if (matched) continue;

            if (c is '\'' or '"')
            {
                int start = _pos;
                _pos++;
                string s = ConsumeWhile(ch => ch != c);
                _pos++;
                Add(TokenKind.StringLiteral, s, start);
                continue;
            }
            if (char.IsAsciiDigit(c))
            {
                int start = _pos;
                string num = ConsumeWhile(char.IsAsciiDigit);
                if ((_tokens.Count == 0 || _tokens[^1].Kind != TokenKind.Dot) && At(_pos) == '.' && char.IsAsciiDigit(At(_pos + 1)))
                {
                    _pos++;
                    num = $"{num}.{ConsumeWhile(char.IsAsciiDigit)}";
                }
                Add(TokenKind.NumericLiteral, num, start);
                continue;
            }
            if (JsCompat.IsWordChar(c))
            {
                int start = _pos;
                Add(TokenKind.Identifier, ConsumeWhile(JsCompat.IsWordChar), start);
                continue;
            }
            throw Error($"Unexpected character: {c}");
        }

        if (_nextMarker < _markers.Count)
        {
            if (_tokens.Count > 0 && _tokens[^1].Kind == TokenKind.Text)
            {
                var t = _tokens[^1];
                t.Markers ??= [];
                while (_nextMarker < _markers.Count)
                {
                    var m = _markers[_nextMarker++];
                    t.Markers.Add((t.Value.Length, m.IsEnd, m.SourceIndex));
                }
            }
            else
            {
                var rest = TakeMarkers(regionStart, _src.Length, _src.Length) ?? [];
                while (_nextMarker < _markers.Count)
                {
                    var m = _markers[_nextMarker++];
                    rest.Add((0, m.IsEnd, m.SourceIndex));
                }
                _tokens.Add(new Token(TokenKind.Text, "", Src(_src.Length)) { Markers = rest });
            }
        }
        return _tokens;
    }

    // The generation markers of the text region [regionStart, end]; the text itself starts at textStart.
    private List<(int, bool, int)>? TakeMarkers(int regionStart, int textStart, int end)
    {
        List<(int, bool, int)>? result = null;
        while (_nextMarker < _markers.Count && _markers[_nextMarker].Position <= end && _markers[_nextMarker].Position >= Math.Min(regionStart, textStart))
        {
            var m = _markers[_nextMarker++];
            (result ??= []).Add((Math.Max(0, m.Position - textStart), m.IsEnd, m.SourceIndex));
        }
        return result;
    }

    private void StripTrailingWhitespace()
    {
        if (_tokens.Count == 0 || _tokens[^1].Kind != TokenKind.Text) return;
        var t = _tokens[^1];
        t.Value = JsCompat.TrimEnd(t.Value);
        if (t.Markers is not null)
            for (int i = 0; i < t.Markers.Count; i++)
                t.Markers[i] = (Math.Min(t.Markers[i].Offset, t.Value.Length), t.Markers[i].IsEnd, t.Markers[i].SourceIndex);
        if (t.Value.Length == 0 && t.Markers is null) _tokens.RemoveAt(_tokens.Count - 1);
    }

    private void SkipLeadingWhitespace()
    {
        while (_pos < _src.Length && JsCompat.IsWhitespace(_src[_pos])) _pos++;
    }

    private string ConsumeWhile(Func<char, bool> predicate)
    {
        var sb = new System.Text.StringBuilder();
        while (_pos < _src.Length && predicate(_src[_pos]))
        {
            if (_src[_pos] == '\\')
            {
                _pos++;
                if (_pos >= _src.Length) throw Error("Unexpected end of input");
                char escaped = _src[_pos++];
                if (escaped is 'x' or 'u')
                {
                    int length = escaped == 'x' ? 2 : 4;
                    string hex = _pos + length <= _src.Length ? _src.Substring(_pos, length) : _src[_pos..];
                    if (hex.Length != length || !hex.All(char.IsAsciiHexDigit))
                        throw Error($"Invalid hexadecimal escape sequence: \\{escaped}{hex}");
                    sb.Append((char)Convert.ToInt32(hex, 16));
                    _pos += length;
                    continue;
                }
                sb.Append(escaped switch
                {
                    'n' => '\n', 't' => '\t', 'r' => '\r', 'b' => '\b', 'f' => '\f', 'v' => '\v',
                    '\'' => '\'', '"' => '"', '\\' => '\\',
                    _ => throw Error($"Unexpected escaped character: {escaped}"),
                });
                continue;
            }
            sb.Append(_src[_pos++]);
            if (_pos >= _src.Length) throw Error("Unexpected end of input");
        }
        return sb.ToString();
    }
}
