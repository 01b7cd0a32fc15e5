using System.Globalization;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// Builds the syntax tree from tokens with @huggingface/jinja's grammar and precedence (lowest first): conditional
/// expression, <c>or</c>, <c>and</c>, <c>not</c>, comparison and membership, <c>+ - ~</c>, <c>* / // %</c>,
/// <c>**</c>, <c>is</c> tests, <c>|</c> filters, unary sign, member access and calls, primary.
/// </summary>
internal sealed class Parser
{
    private readonly List<Token> _tokens;
    private readonly int _endIndex;
    private int _current;

    private Parser(List<Token> tokens, int endIndex)
    {
        _tokens = tokens;
        _endIndex = endIndex;
    }

    /// <summary>The template's statements; <paramref name="endIndex"/> locates errors at the end of the input.</summary>
    public static List<Node> Parse(List<Token> tokens, int endIndex)
    {
        var parser = new Parser(tokens, endIndex);
        var body = new List<Node>();
        while (parser._current < tokens.Count) body.Add(parser.ParseAny());
        return body;
    }

    private Token? Peek(int offset = 0) => _current + offset < _tokens.Count ? _tokens[_current + offset] : null;

    private int Here => Peek()?.SourceIndex ?? _endIndex;

    private TemplateError Error(string message, int? at = null) => TemplateError.Syntax(message, at ?? Here);

    private Token Next() => Peek() is { } t ? _tokens[_current++] : throw Error("Unexpected end of template");

    private Token Expect(TokenKind kind, string error)
    {
        var t = Peek();
        if (t is null || t.Kind != kind) throw Error($"{error}, got {(t is null ? "end of template" : $"{t.Kind} '{t.Value}'")}");
        _current++;
        return t;
    }

    private bool Is(TokenKind kind) => Peek()?.Kind == kind;

    private bool IsIdentifier(string name, int offset = 0) => Peek(offset) is { Kind: TokenKind.Identifier } t && t.Value == name;

    private bool IsStatement(params string[] names) =>
        Is(TokenKind.OpenStatement) && Peek(1) is { Kind: TokenKind.Identifier } t && names.Contains(t.Value);

    private void ExpectIdentifier(string name)
    {
        if (!IsIdentifier(name)) throw Error($"Expected {name}");
        _current++;
    }

    private void ExpectEnd(string name)
    {
        Expect(TokenKind.OpenStatement, $"Expected {{% {name} %}}");
        ExpectIdentifier(name);
        Expect(TokenKind.CloseStatement, "Expected %}");
    }

    private List<Node> ParseUntil(params string[] names)
    {
        var body = new List<Node>();
        while (!IsStatement(names))
        {
            if (Peek() is null) throw Error($"Unexpected end of template: expected {{% {string.Join(" %} or {% ", names)} %}}");
            body.Add(ParseAny());
        }
        return body;
    }

    private Node ParseAny()
    {
        var t = Peek()!;
        switch (t.Kind)
        {
            case TokenKind.Comment:
                _current++;
                return new CommentNode(t.SourceIndex);
            case TokenKind.Text:
                _current++;
                return new TextNode(t.Value, t.Markers, t.SourceIndex);
            case TokenKind.OpenStatement:
                return ParseStatement();
            case TokenKind.OpenExpression:
            {
                _current++;
                var e = ParseExpression();
                Expect(TokenKind.CloseExpression, "Expected }}");
                return new OutputNode(e, t.SourceIndex);
            }
            default:
                throw Error($"Unexpected token {t.Kind} '{t.Value}'");
        }
    }

    private Node ParseStatement()
    {
        int at = Expect(TokenKind.OpenStatement, "Expected {%").SourceIndex;
        if (Peek() is not { Kind: TokenKind.Identifier } nameToken) throw Error($"Unknown statement, got {Peek()?.Kind.ToString() ?? "end of template"}");
        string name = nameToken.Value;
        _current++;
        switch (name)
        {
            case "set":
                return ParseSet(at);
            case "if":
            {
                var result = ParseIf(at);
                ExpectEnd("endif");
                return result;
            }
            case "macro":
            {
                var callee = ParsePrimary();
                if (callee is not IdentifierExpr id) throw Error("Expected identifier following macro statement", callee.SourceIndex);
                var parameters = ParseArguments(parameters: true);
                Expect(TokenKind.CloseStatement, "Expected %}");
                var body = ParseUntil("endmacro");
                ExpectEnd("endmacro");
                return new MacroNode(id.Name, parameters, body, at);
            }
            case "for":
            {
                var result = ParseFor(at);
                ExpectEnd("endfor");
                return result;
            }
            case "call":
            {
                IReadOnlyList<Expr> callerParameters = Is(TokenKind.OpenParen) ? ParseArguments(parameters: true) : [];
                var callee = ParsePrimary();
                if (callee is not IdentifierExpr) throw Error("Expected identifier following call statement", callee.SourceIndex);
                var args = ParseArguments(parameters: false);
                Expect(TokenKind.CloseStatement, "Expected %}");
                var body = ParseUntil("endcall");
                ExpectEnd("endcall");
                return new CallBlockNode(new CallExpr(callee, args, callee.SourceIndex), callerParameters, body, at);
            }
            case "break":
                Expect(TokenKind.CloseStatement, "Expected %}");
                return new BreakNode(at);
            case "continue":
                Expect(TokenKind.CloseStatement, "Expected %}");
                return new ContinueNode(at);
            case "filter":
            {
                var filter = ParsePrimary();
                if (filter is not IdentifierExpr id) throw Error("Expected identifier for the filter", filter.SourceIndex);
                IReadOnlyList<Expr> args = Is(TokenKind.OpenParen) ? ParseArguments(parameters: false) : [];
                Expect(TokenKind.CloseStatement, "Expected %}");
                var body = ParseUntil("endfilter");
                ExpectEnd("endfilter");
                return new FilterBlockNode(id.Name, args, body, at);
            }
            default:
                throw Error($"Unknown statement type: {name}", nameToken.SourceIndex);
        }
    }

    private SetNode ParseSet(int at)
    {
        var target = ParseExpressionSequence(primary: false);
        if (Is(TokenKind.Equals))
        {
            _current++;
            var value = ParseExpressionSequence(primary: false);
            Expect(TokenKind.CloseStatement, "Expected %}");
            return new SetNode(target, value, [], at);
        }
        Expect(TokenKind.CloseStatement, "Expected %}");
        var body = ParseUntil("endset");
        ExpectEnd("endset");
        return new SetNode(target, null, body, at);
    }

    private IfNode ParseIf(int at)
    {
        var test = ParseExpression();
        Expect(TokenKind.CloseStatement, "Expected %}");
        var body = ParseUntil("elif", "else", "endif");
        var alternate = new List<Node>();
        if (IsStatement("elif"))
        {
            int elifAt = Peek()!.SourceIndex;
            _current += 2;
            alternate.Add(ParseIf(elifAt));
        }
        else if (IsStatement("else"))
        {
            _current += 2;
            Expect(TokenKind.CloseStatement, "Expected %}");
            alternate.AddRange(ParseUntil("endif"));
        }
        return new IfNode(test, body, alternate, at);
    }

    private ForNode ParseFor(int at)
    {
        var target = ParseExpressionSequence(primary: true);
        if (target is not (IdentifierExpr or TupleExpr)) throw Error("Expected identifier/tuple for the loop variable", target.SourceIndex);
        if (!IsIdentifier("in")) throw Error("Expected `in` keyword following loop variable");
        _current++;
        var iterable = ParseExpression();
        Expect(TokenKind.CloseStatement, "Expected %}");
        var body = ParseUntil("endfor", "else");
        var elseBody = new List<Node>();
        if (IsStatement("else"))
        {
            _current += 2;
            Expect(TokenKind.CloseStatement, "Expected %}");
            elseBody.AddRange(ParseUntil("endfor"));
        }
        return new ForNode(target, iterable, body, elseBody, at);
    }

    private Expr ParseExpressionSequence(bool primary)
    {
        int at = Here;
        var first = primary ? ParsePrimary() : ParseExpression();
        if (!Is(TokenKind.Comma)) return first;
        var items = new List<Expr> { first };
        while (Is(TokenKind.Comma))
        {
            _current++;
            items.Add(primary ? ParsePrimary() : ParseExpression());
        }
        return new TupleExpr(items, at);
    }

    private Expr ParseExpression()
    {
        EnsureStack();
        return ParseIfExpression();
    }

    private void EnsureStack()
    {
        if (!System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack()) throw Error("The template nests too deeply");
    }

    private Expr ParseIfExpression()
    {
        var a = ParseOr();
        if (!IsIdentifier("if")) return a;
        _current++;
        var test = ParseOr();
        if (IsIdentifier("else"))
        {
            _current++;
            return new TernaryExpr(test, a, ParseIfExpression(), a.SourceIndex);
        }
        return new SelectExpr(a, test, a.SourceIndex);
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsIdentifier("or"))
        {
            _current++;
            left = new BinaryExpr("or", left, ParseAnd(), left.SourceIndex);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsIdentifier("and"))
        {
            _current++;
            left = new BinaryExpr("and", left, ParseNot(), left.SourceIndex);
        }
        return left;
    }

    private Expr ParseNot()
    {
        EnsureStack();
        if (IsIdentifier("not"))
        {
            int at = Next().SourceIndex;
            return new UnaryExpr("not", ParseNot(), at);
        }
        return ParseComparison();
    }

    private Expr ParseComparison()
    {
        var left = ParseAdditive();
        while (true)
        {
            string op;
            if (IsIdentifier("not") && IsIdentifier("in", 1))
            {
                op = "not in";
                _current += 2;
            }
            else if (IsIdentifier("in"))
            {
                op = "in";
                _current++;
            }
            else if (Is(TokenKind.ComparisonBinaryOperator))
            {
                op = Next().Value;
            }
            else
            {
                break;
            }
            left = new BinaryExpr(op, left, ParseAdditive(), left.SourceIndex);
        }
        return left;
    }

    private Expr ParseAdditive()
    {
        var left = ParseMultiplicative();
        while (Is(TokenKind.AdditiveBinaryOperator))
            left = new BinaryExpr(Next().Value, left, ParseMultiplicative(), left.SourceIndex);
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParsePower();
        while (Is(TokenKind.MultiplicativeBinaryOperator))
            left = new BinaryExpr(Next().Value, left, ParsePower(), left.SourceIndex);
        return left;
    }

    private Expr ParsePower()
    {
        var left = ParseTest();
        while (Is(TokenKind.ExponentiationBinaryOperator))
            left = new BinaryExpr(Next().Value, left, ParseTest(), left.SourceIndex);
        return left;
    }

    private Expr ParseTest()
    {
        var operand = ParseFilter();
        while (IsIdentifier("is"))
        {
            int at = Next().SourceIndex;
            bool negate = IsIdentifier("not");
            if (negate) _current++;
            var test = ParsePrimary();
            if (test is not IdentifierExpr id) throw Error("Expected identifier for the test", test.SourceIndex);
            IReadOnlyList<Expr> args = [];
            if (Is(TokenKind.OpenParen)) args = ParseArguments(parameters: false);
            else if (Peek() is { Kind: TokenKind.StringLiteral or TokenKind.NumericLiteral }) args = [ParsePrimary()];
            operand = new TestExpr(operand, negate, id.Name, args, at);
        }
        return operand;
    }

    private Expr ParseFilter()
    {
        var operand = ParseUnarySign();
        while (Is(TokenKind.Pipe))
        {
            int at = Next().SourceIndex;
            var filter = ParsePrimary();
            if (filter is not IdentifierExpr id) throw Error("Expected identifier for the filter", filter.SourceIndex);
            IReadOnlyList<Expr> args = [];
            if (Is(TokenKind.OpenParen)) args = ParseArguments(parameters: false);
            operand = new FilterExpr(operand, id.Name, args, at);
        }
        return operand;
    }

    private Expr ParseUnarySign()
    {
        EnsureStack();
        if (Peek() is { Kind: TokenKind.UnaryOperator or TokenKind.AdditiveBinaryOperator } t && t.Value is "-" or "+")
        {
            _current++;
            return new UnaryExpr(t.Value, ParseUnarySign(), t.SourceIndex);
        }
        return ParseCallMember();
    }

    private Expr ParseCallMember()
    {
        var member = ParseMember(ParsePrimary());
        return Is(TokenKind.OpenParen) ? ParseCall(member) : member;
    }

    private Expr ParseCall(Expr callee)
    {
        Expr e = new CallExpr(callee, ParseArguments(parameters: false), callee.SourceIndex);
        e = ParseMember(e);
        if (Is(TokenKind.OpenParen)) e = ParseCall(e);
        return e;
    }

    private List<Expr> ParseArguments(bool parameters)
    {
        Expect(TokenKind.OpenParen, "Expected opening parenthesis for arguments list");
        var args = new List<Expr>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        bool sawKeyword = false, sawSpread = false;
        while (!Is(TokenKind.CloseParen))
        {
            if (Peek() is null) throw Error("Expected closing parenthesis for arguments list");
            bool keywordSpread = Is(TokenKind.ExponentiationBinaryOperator);
            bool positionalSpread = Is(TokenKind.MultiplicativeBinaryOperator) && Peek()!.Value == "*";
            if (parameters && (keywordSpread || positionalSpread)) throw Error("Argument unpacking is not allowed in parameter declarations");
            if (keywordSpread)
            {
                int at = Next().SourceIndex;
                args.Add(new KeywordSpreadExpr(ParseExpression(), at));
                if (Is(TokenKind.Comma)) _current++;
                if (!Is(TokenKind.CloseParen)) throw Error("Expected closing parenthesis: `**` must be applied to the final argument");
                break;
            }
            Expr argument;
            if (positionalSpread)
            {
                if (sawSpread) throw Error("Only one `*` argument unpacking is allowed");
                sawSpread = true;
                int at = Next().SourceIndex;
                argument = new SpreadExpr(ParseExpression(), at);
            }
            else
            {
                argument = ParseExpression();
                if (Is(TokenKind.Equals))
                {
                    _current++;
                    if (argument is not IdentifierExpr key)
                        throw Error(parameters ? "Expected identifier for parameter declaration" : "Expected identifier for keyword argument", argument.SourceIndex);
                    argument = new KeywordArgExpr(key.Name, ParseExpression(), key.SourceIndex);
                }
                if (parameters)
                {
                    string parameterName = argument switch
                    {
                        IdentifierExpr i => i.Name,
                        KeywordArgExpr k => k.Name,
                        _ => throw Error("Expected identifier for parameter declaration", argument.SourceIndex),
                    };
                    if (!names.Add(parameterName)) throw Error($"Duplicate parameter name: {parameterName}", argument.SourceIndex);
                }
                if (argument is KeywordArgExpr) sawKeyword = true;
                else if (sawKeyword)
                    throw Error(parameters ? "Non-default argument follows default argument" : "Positional arguments must come before keyword arguments", argument.SourceIndex);
                else if (sawSpread) throw Error("Positional arguments must not follow `*` argument unpacking", argument.SourceIndex);
            }
            args.Add(argument);
            if (Is(TokenKind.Comma)) _current++;
        }
        Expect(TokenKind.CloseParen, "Expected closing parenthesis for arguments list");
        return args;
    }

    private Expr ParseSubscript(int at)
    {
        var parts = new List<Expr?>();
        bool isSlice = false;
        while (!Is(TokenKind.CloseSquareBracket))
        {
            if (Peek() is null) throw Error("Expected closing square bracket");
            if (Is(TokenKind.Colon))
            {
                parts.Add(null);
                _current++;
                isSlice = true;
            }
            else
            {
                parts.Add(ParseExpression());
                if (Is(TokenKind.Colon))
                {
                    _current++;
                    isSlice = true;
                }
            }
        }
        if (parts.Count == 0) throw Error("Expected at least one argument for member/slice expression");
        if (isSlice)
        {
            if (parts.Count > 3) throw Error("Expected 0-3 arguments for slice expression", at);
            return new SliceExpr(parts[0], parts.Count > 1 ? parts[1] : null, parts.Count > 2 ? parts[2] : null, at);
        }
        return parts[0]!;
    }

    private Expr ParseMember(Expr obj)
    {
        while (Is(TokenKind.Dot) || Is(TokenKind.OpenSquareBracket))
        {
            var op = Next();
            if (op.Kind == TokenKind.OpenSquareBracket)
            {
                var property = ParseSubscript(op.SourceIndex);
                Expect(TokenKind.CloseSquareBracket, "Expected closing square bracket");
                obj = new MemberExpr(obj, property, Computed: true, op.SourceIndex);
            }
            else
            {
                var property = ParsePrimary();
                if (property is not (IdentifierExpr or LiteralExpr { Value: IntegerValue }))
                    throw Error("Expected identifier or integer following dot operator", property.SourceIndex);
                obj = new MemberExpr(obj, property, Computed: false, op.SourceIndex);
            }
        }
        return obj;
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.NumericLiteral:
            {
                double v = double.Parse(t.Value, NumberStyles.Float, CultureInfo.InvariantCulture);
                return new LiteralExpr(t.Value.Contains('.') ? new FloatValue(v) : new IntegerValue(v), t.SourceIndex);
            }
            case TokenKind.StringLiteral:
            {
                string value = t.Value;
                while (Is(TokenKind.StringLiteral)) value += Next().Value;
                return new LiteralExpr(new StringValue(value), t.SourceIndex);
            }
            case TokenKind.Identifier:
                return new IdentifierExpr(t.Value, t.SourceIndex);
            case TokenKind.OpenParen:
            {
                var e = ParseExpressionSequence(primary: false);
                Expect(TokenKind.CloseParen, "Expected closing parenthesis");
                return e;
            }
            case TokenKind.OpenSquareBracket:
            {
                var items = new List<Expr>();
                while (!Is(TokenKind.CloseSquareBracket))
                {
                    if (Peek() is null) throw Error("Expected closing square bracket");
                    items.Add(ParseExpression());
                    if (Is(TokenKind.Comma)) _current++;
                }
                _current++;
                return new ArrayExpr(items, t.SourceIndex);
            }
            case TokenKind.OpenCurlyBracket:
            {
                var entries = new List<(Expr, Expr)>();
                while (!Is(TokenKind.CloseCurlyBracket))
                {
                    if (Peek() is null) throw Error("Expected closing curly bracket");
                    var key = ParseExpression();
                    Expect(TokenKind.Colon, "Expected colon between key and value in object literal");
                    entries.Add((key, ParseExpression()));
                    if (Is(TokenKind.Comma)) _current++;
                }
                _current++;
                return new ObjectExpr(entries, t.SourceIndex);
            }
            default:
                throw Error($"Unexpected token: {t.Kind} '{t.Value}'", t.SourceIndex);
        }
    }
}
