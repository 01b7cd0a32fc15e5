namespace Microsoft.ML.Seco.Chat.Jinja;

// The syntax tree of a template. Every node keeps the index in the template source where it starts, for errors.

/// <summary>A node of the syntax tree.</summary>
internal abstract record Node(int SourceIndex);

/// <summary>Literal text; <paramref name="Markers"/> are the generation tags at offsets of it.</summary>
internal sealed record TextNode(string Text, IReadOnlyList<(int Offset, bool IsEnd, int SourceIndex)>? Markers, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{{ expression }}</c>.</summary>
internal sealed record OutputNode(Expr Expression, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{# ... #}</c>.</summary>
internal sealed record CommentNode(int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% set target = value %}</c>, or the block form whose value is its rendered body.</summary>
internal sealed record SetNode(Expr Target, Expr? Value, IReadOnlyList<Node> Body, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% if %}</c>; an <c>elif</c> is an <see cref="IfNode"/> alone in <paramref name="Alternate"/>.</summary>
internal sealed record IfNode(Expr Test, IReadOnlyList<Node> Body, IReadOnlyList<Node> Alternate, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% for target in iterable %}</c>; a filtered loop has a <see cref="SelectExpr"/> as its iterable.</summary>
internal sealed record ForNode(Expr Target, Expr Iterable, IReadOnlyList<Node> Body, IReadOnlyList<Node> Else, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% macro name(parameters) %}</c>; a parameter is an <see cref="IdentifierExpr"/> or a <see cref="KeywordArgExpr"/> with its default.</summary>
internal sealed record MacroNode(string Name, IReadOnlyList<Expr> Parameters, IReadOnlyList<Node> Body, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% call(callerParameters) macro(args) %}body{% endcall %}</c>.</summary>
internal sealed record CallBlockNode(CallExpr Call, IReadOnlyList<Expr> CallerParameters, IReadOnlyList<Node> Body, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% filter name(args) %}body{% endfilter %}</c>.</summary>
internal sealed record FilterBlockNode(string Filter, IReadOnlyList<Expr> Arguments, IReadOnlyList<Node> Body, int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% break %}</c>.</summary>
internal sealed record BreakNode(int SourceIndex) : Node(SourceIndex);

/// <summary><c>{% continue %}</c>.</summary>
internal sealed record ContinueNode(int SourceIndex) : Node(SourceIndex);

/// <summary>An expression.</summary>
internal abstract record Expr(int SourceIndex) : Node(SourceIndex);

/// <summary>A string, integer or float literal.</summary>
internal sealed record LiteralExpr(Value Value, int SourceIndex) : Expr(SourceIndex);

internal sealed record IdentifierExpr(string Name, int SourceIndex) : Expr(SourceIndex);

internal sealed record ArrayExpr(IReadOnlyList<Expr> Items, int SourceIndex) : Expr(SourceIndex);

internal sealed record TupleExpr(IReadOnlyList<Expr> Items, int SourceIndex) : Expr(SourceIndex);

internal sealed record ObjectExpr(IReadOnlyList<(Expr Key, Expr Value)> Entries, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>object.property</c> (not computed) or <c>object[property]</c> (computed; the property may be a <see cref="SliceExpr"/>).</summary>
internal sealed record MemberExpr(Expr Object, Expr Property, bool Computed, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>[start:stop:step]</c>, each part optional.</summary>
internal sealed record SliceExpr(Expr? Start, Expr? Stop, Expr? Step, int SourceIndex) : Expr(SourceIndex);

internal sealed record CallExpr(Expr Callee, IReadOnlyList<Expr> Arguments, int SourceIndex) : Expr(SourceIndex);

internal sealed record BinaryExpr(string Operator, Expr Left, Expr Right, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>not</c>, unary <c>-</c> and <c>+</c>.</summary>
internal sealed record UnaryExpr(string Operator, Expr Operand, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>operand | name(arguments)</c>.</summary>
internal sealed record FilterExpr(Expr Operand, string Name, IReadOnlyList<Expr> Arguments, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>operand is [not] name(arguments)</c>.</summary>
internal sealed record TestExpr(Expr Operand, bool Negate, string Name, IReadOnlyList<Expr> Arguments, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>value if test</c> without else: undefined when the test fails (a loop's filter when it is the iterable).</summary>
internal sealed record SelectExpr(Expr Value, Expr Test, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>whenTrue if condition else whenFalse</c>.</summary>
internal sealed record TernaryExpr(Expr Condition, Expr WhenTrue, Expr WhenFalse, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>name=value</c> in a call, or a parameter with its default.</summary>
internal sealed record KeywordArgExpr(string Name, Expr Value, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>*expression</c> in a call.</summary>
internal sealed record SpreadExpr(Expr Operand, int SourceIndex) : Expr(SourceIndex);

/// <summary><c>**expression</c> in a call.</summary>
internal sealed record KeywordSpreadExpr(Expr Operand, int SourceIndex) : Expr(SourceIndex);
