using System.Text;

namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// Runs a parsed template: statements write to an output buffer, expressions evaluate to values. Scoping follows the
/// reference: a for loop and a macro call open a scope, <c>set</c> writes to the current one, a macro sees the scope
/// it is called from. Text inside <c>{% generation %}</c> is recorded as spans when it is written to the final output.
/// </summary>
internal sealed class Interpreter
{
    private enum Flow { Normal, Break, Continue }

    /// <summary>How deep macro calls may nest before rendering fails (instead of overflowing the stack).</summary>
    public const int MaxCallDepth = 100;

    private readonly StringBuilder _root = new();
    private int _callDepth;
    private readonly List<(int Start, int End)> _spans = [];
    private int _openSpan = -1;

    /// <summary>Renders <paramref name="body"/> in <paramref name="scope"/>; the text and the generation spans (start, end).</summary>
    public static (string Text, List<(int Start, int End)> Spans) Render(IReadOnlyList<Node> body, Scope scope)
    {
        var interpreter = new Interpreter();
        interpreter.Exec(body, scope, interpreter._root);
        return (interpreter._root.ToString(), interpreter._spans);
    }

    private Flow Exec(IReadOnlyList<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            Flow flow;
            try
            {
                flow = ExecOne(node, scope, output);
            }
            catch (TemplateError e) when (e.SourceIndex < 0)
            {
                throw e.At(node.SourceIndex);
            }
            catch (Exception e) when (e is not TemplateError and not OutOfMemoryException)
            {
                throw TemplateError.Runtime(e.Message).At(node.SourceIndex);
            }
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private string Capture(IReadOnlyList<Node> nodes, Scope scope)
    {
        var sb = new StringBuilder();
        Exec(nodes, scope, sb);
        return sb.ToString();
    }

    private Flow ExecOne(Node node, Scope scope, StringBuilder output)
    {
        switch (node)
        {
            case TextNode t:
                if (t.Markers is { } markers && ReferenceEquals(output, _root))
                {
                    foreach (var (offset, isEnd, _) in markers)
                    {
                        int at = output.Length + offset;
                        if (!isEnd && _openSpan < 0) _openSpan = at;
                        else if (isEnd && _openSpan >= 0)
                        {
                            _spans.Add((_openSpan, at));
                            _openSpan = -1;
                        }
                    }
                }
                output.Append(t.Text);
                return Flow.Normal;
            case OutputNode o:
            {
                var v = Eval(o.Expression, scope);
                if (v is not (NullValue or UndefinedValue)) output.Append(v.ToOutput());
                return Flow.Normal;
            }
            case CommentNode:
                return Flow.Normal;
            case SetNode s:
                ExecSet(s, scope);
                return Flow.Normal;
            case IfNode i:
                return Exec(Eval(i.Test, scope).IsTruthy ? i.Body : i.Alternate, scope, output);
            case ForNode f:
                ExecFor(f, scope, output);
                return Flow.Normal;
            case MacroNode m:
                scope.Set(m.Name, MakeMacro(m.Name, m.Parameters, m.Body, definingScope: null));
                return Flow.Normal;
            case CallBlockNode c:
            {
                var caller = MakeMacro("caller", c.CallerParameters, c.Body, definingScope: scope);
                var args = EvalArguments(c.Call.Arguments, scope);
                if (Eval(c.Call.Callee, scope) is not FunctionValue fn) throw TemplateError.Runtime("Cannot call something that is not a function");
                var callScope = new Scope(scope);
                callScope.Set("caller", caller);
                var result = fn.Invoke(args, callScope);
                if (result is not (NullValue or UndefinedValue)) output.Append(result.ToOutput());
                return Flow.Normal;
            }
            case FilterBlockNode fb:
            {
                var text = new StringValue(Capture(fb.Body, scope));
                output.Append(Filters.Apply(fb.Filter, text, EvalArguments(fb.Arguments, scope)).ToOutput());
                return Flow.Normal;
            }
            case BreakNode:
                return Flow.Break;
            case ContinueNode:
                return Flow.Continue;
            default:
                throw TemplateError.Runtime($"Unknown node type: {node.GetType().Name}");
        }
    }

    private void ExecSet(SetNode s, Scope scope)
    {
        var rhs = s.Value is not null ? Eval(s.Value, scope) : new StringValue(Capture(s.Body, scope));
        switch (s.Target)
        {
            case IdentifierExpr id:
                scope.Set(id.Name, rhs);
                break;
            case TupleExpr tuple:
                Unpack(tuple, rhs, scope, "in set");
                break;
            case MemberExpr { Computed: false, Property: IdentifierExpr property } member:
                if (Eval(member.Object, scope) is not NamespaceValue ns) throw TemplateError.Runtime("cannot assign attribute on non-namespace object");
                ns.Entries[property.Name] = rhs;
                break;
            case MemberExpr:
                throw TemplateError.Runtime("Cannot assign to member with non-identifier property");
            default:
                throw TemplateError.Runtime("Invalid LHS inside assignment expression");
        }
    }

    private static void Unpack(TupleExpr tuple, Value value, Scope scope, string where)
    {
        if (value is not ArrayValue array) throw TemplateError.Runtime($"Cannot unpack non-iterable type {where}: {value.TypeName}");
        if (array.Items.Count != tuple.Items.Count)
            throw TemplateError.Runtime($"Too {(tuple.Items.Count > array.Items.Count ? "few" : "many")} items to unpack {where}".TrimEnd());
        for (int i = 0; i < tuple.Items.Count; i++)
        {
            if (tuple.Items[i] is not IdentifierExpr id) throw TemplateError.Runtime($"Cannot unpack to non-identifier {where}");
            scope.Set(id.Name, array.Items[i]);
        }
    }

    private static void Assign(Expr target, Value value, Scope scope)
    {
        if (target is IdentifierExpr id) scope.Set(id.Name, value);
        else Unpack((TupleExpr)target, value, scope, "");
    }

    private void ExecFor(ForNode f, Scope outer, StringBuilder output)
    {
        var scope = new Scope(outer);
        var (source, test) = f.Iterable is SelectExpr select ? (select.Value, select.Test) : (f.Iterable, (Expr?)null);
        var iterable = Eval(source, scope);
        List<Value> all = iterable switch
        {
            ArrayValue a => a.Items,
            ObjectValue o => o.Entries.Keys.Select(k => (Value)new StringValue(k)).ToList(),
            _ => throw TemplateError.Runtime($"Expected iterable or object type in for loop: got {iterable.TypeName}"),
        };
        var items = new List<Value>();
        foreach (var item in all)
        {
            if (test is not null)
            {
                var testScope = new Scope(scope);
                Assign(f.Target, item, testScope);
                if (!Eval(test, testScope).IsTruthy) continue;
            }
            items.Add(item);
        }
        for (int i = 0; i < items.Count; i++)
        {
            var loop = new OrderedDictionary<string, Value>(StringComparer.Ordinal)
            {
                ["index"] = new IntegerValue(i + 1),
                ["index0"] = new IntegerValue(i),
                ["revindex"] = new IntegerValue(items.Count - i),
                ["revindex0"] = new IntegerValue(items.Count - i - 1),
                ["first"] = BooleanValue.Of(i == 0),
                ["last"] = BooleanValue.Of(i == items.Count - 1),
                ["length"] = new IntegerValue(items.Count),
                ["previtem"] = i > 0 ? items[i - 1] : UndefinedValue.Instance,
                ["nextitem"] = i < items.Count - 1 ? items[i + 1] : UndefinedValue.Instance,
            };
            scope.Set("loop", new ObjectValue(loop));
            Assign(f.Target, items[i], scope);
            if (Exec(f.Body, scope, output) == Flow.Break) break;
        }
        if (items.Count == 0) Exec(f.Else, scope, output);
    }

    // A macro runs in a scope opened on the caller's (the reference's dynamic scoping); a call block's caller() on the
    // scope of its {% call %}. Extra positional and keyword arguments land in varargs and kwargs.
    private FunctionValue MakeMacro(string name, IReadOnlyList<Expr> parameters, IReadOnlyList<Node> body, Scope? definingScope) =>
        new(name, (args, callScope) =>
        {
            var scope = new Scope(definingScope ?? callScope);
            var keyword = new OrderedDictionary<string, Value>(args.Keyword, StringComparer.Ordinal);
            var pending = new List<(string, Expr)>();
            for (int i = 0; i < parameters.Count; i++)
            {
                var (pname, fallback) = parameters[i] switch
                {
                    IdentifierExpr id => (id.Name, (Expr?)null),
                    KeywordArgExpr k => (k.Name, k.Value),
                    _ => throw TemplateError.Runtime("Expected identifier for parameter declaration"),
                };
                Value? value = i < args.Positional.Count ? args.Positional[i] : null;
                if (value is null && keyword.Remove(pname, out var kv)) value = kv;
                if (value is null && fallback is not null) pending.Add((pname, fallback));
                scope.Set(pname, value ?? UndefinedValue.Instance);
            }
            scope.Set("varargs", new ArrayValue(args.Positional.Skip(parameters.Count).ToList()));
            scope.Set("kwargs", new ObjectValue(keyword));
            foreach (var (pname, fallback) in pending) scope.Set(pname, Eval(fallback, scope));
            if (_callDepth >= MaxCallDepth) throw TemplateError.Runtime($"Macro calls nest deeper than {MaxCallDepth} (runaway recursion in '{name}')");
            _callDepth++;
            try
            {
                return new StringValue(Capture(body, scope));
            }
            finally
            {
                _callDepth--;
            }
        });

    private Arguments EvalArguments(IReadOnlyList<Expr> args, Scope scope)
    {
        var positional = new List<Value>();
        var keyword = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
        foreach (var a in args)
        {
            if (a is SpreadExpr spread)
            {
                if (Eval(spread.Operand, scope) is not ArrayValue items) throw TemplateError.Runtime("Cannot unpack non-iterable type");
                positional.AddRange(items.Items);
            }
            else if (a is not (KeywordArgExpr or KeywordSpreadExpr)) positional.Add(Eval(a, scope));
        }
        foreach (var a in args)
        {
            if (a is KeywordArgExpr k)
            {
                if (!keyword.TryAdd(k.Name, Eval(k.Value, scope))) throw TemplateError.Runtime($"Got multiple values for keyword argument '{k.Name}'");
            }
            else if (a is KeywordSpreadExpr ks)
            {
                if (Eval(ks.Operand, scope) is not ObjectValue o) throw TemplateError.Runtime("Argument after ** must be a mapping");
                foreach (var (key, v) in o.Entries)
                    if (!keyword.TryAdd(key, v)) throw TemplateError.Runtime($"Got multiple values for keyword argument '{key}'");
            }
        }
        return new Arguments(positional, keyword);
    }

    private Value Eval(Expr e, Scope scope)
    {
        if (!System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw TemplateError.Runtime("The template nests too deeply").At(e.SourceIndex);
        try
        {
            return EvalCore(e, scope);
        }
        catch (TemplateError error) when (error.SourceIndex < 0)
        {
            throw error.At(e.SourceIndex);
        }
    }

    private Value EvalCore(Expr e, Scope scope)
    {
        switch (e)
        {
            case LiteralExpr l:
                return l.Value;
            case IdentifierExpr id:
                return scope.Lookup(id.Name);
            case ArrayExpr a:
                return new ArrayValue(a.Items.Select(x => Eval(x, scope)).ToList());
            case TupleExpr t:
                return new ArrayValue(t.Items.Select(x => Eval(x, scope)).ToList(), isTuple: true);
            case ObjectExpr o:
            {
                var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
                foreach (var (k, v) in o.Entries)
                {
                    if (Eval(k, scope) is not StringValue key) throw TemplateError.Runtime("Object keys must be strings");
                    entries[key.Value] = Eval(v, scope);
                }
                return new ObjectValue(entries);
            }
            case MemberExpr m:
            {
                var obj = Eval(m.Object, scope);
                if (m.Computed && m.Property is SliceExpr slice) return Slice(obj, slice, scope);
                Value property = m.Computed ? Eval(m.Property, scope)
                    : m.Property is IdentifierExpr pid ? new StringValue(pid.Name) : ((LiteralExpr)m.Property).Value;
                return Methods.GetMember(obj, property);
            }
            case CallExpr c:
            {
                var args = EvalArguments(c.Arguments, scope);
                var fn = Eval(c.Callee, scope);
                if (fn is not FunctionValue f) throw TemplateError.Runtime($"Cannot call something that is not a function: got {fn.TypeName}");
                return f.Invoke(args, scope);
            }
            case BinaryExpr b:
            {
                var left = Eval(b.Left, scope);
                return b.Operator switch
                {
                    "and" => left.IsTruthy ? Eval(b.Right, scope) : left,
                    "or" => left.IsTruthy ? left : Eval(b.Right, scope),
                    _ => Operators.Binary(b.Operator, left, Eval(b.Right, scope)),
                };
            }
            case UnaryExpr u:
            {
                var v = Eval(u.Operand, scope);
                if (u.Operator == "not") return BooleanValue.Of(!v.IsTruthy);
                double sign = u.Operator == "-" ? -1 : 1;
                return v switch
                {
                    FloatValue fv => new FloatValue(sign * fv.Number),
                    IntegerValue iv => new IntegerValue(sign * iv.Number),
                    BooleanValue bv => new IntegerValue(sign * (bv.Value ? 1 : 0)),
                    _ => throw TemplateError.Runtime($"Unknown operator \"{u.Operator}\" for {v.TypeName}"),
                };
            }
            case FilterExpr f:
                return Filters.Apply(f.Name, Eval(f.Operand, scope), EvalArguments(f.Arguments, scope));
            case TestExpr t:
            {
                var operand = Eval(t.Operand, scope);
                if (!Predicates.Exists(t.Name)) throw TemplateError.Runtime($"Unknown test: {t.Name}");
                var args = EvalArguments(t.Arguments, scope).Positional;
                return BooleanValue.Of(Predicates.Apply(t.Name, operand, args) != t.Negate);
            }
            case SelectExpr s:
                return Eval(s.Test, scope).IsTruthy ? Eval(s.Value, scope) : UndefinedValue.Instance;
            case TernaryExpr t:
                return Eval(t.Condition, scope).IsTruthy ? Eval(t.WhenTrue, scope) : Eval(t.WhenFalse, scope);
            default:
                throw TemplateError.Runtime($"Unexpected {e.GetType().Name} in an expression");
        }
    }

    private Value Slice(Value obj, SliceExpr s, Scope scope)
    {
        if (obj is not (ArrayValue or StringValue)) throw TemplateError.Runtime("Slice object must be an array or string");
        double? Part(Expr? x, string what) => x is null ? null : Eval(x, scope) switch
        {
            IntegerValue i => i.Number,
            UndefinedValue => null,
            _ => throw TemplateError.Runtime($"Slice {what} must be numeric or undefined"),
        };
        double? start = Part(s.Start, "start"), stop = Part(s.Stop, "stop"), step = Part(s.Step, "step");
        if (obj is ArrayValue a) return new ArrayValue(SliceIndices(a.Items.Count, start, stop, step).Select(i => a.Items[i]).ToList());
        var chars = new List<string>();
        var text = ((StringValue)obj).Value;
        for (int i = 0; i < text.Length; i++)
        {
            int len = char.IsSurrogatePair(text, i) ? 2 : 1;
            chars.Add(text.Substring(i, len));
            i += len - 1;
        }
        return new StringValue(string.Concat(SliceIndices(chars.Count, start, stop, step).Select(i => chars[i])));
    }

    // The reference's slice(): Python's rules for start, stop and step.
    private static IEnumerable<int> SliceIndices(int length, double? startArg, double? stopArg, double? stepArg)
    {
        double step = stepArg ?? 1;
        if (step == 0) throw TemplateError.Runtime("slice step cannot be zero");
        double start, stop;
        if (step > 0)
        {
            start = startArg ?? 0;
            start = start < 0 ? Math.Max(length + start, 0) : Math.Min(start, length);
            stop = stopArg ?? length;
            stop = stop < 0 ? Math.Max(length + stop, 0) : Math.Min(stop, length);
        }
        else
        {
            start = startArg ?? length - 1;
            start = start < 0 ? Math.Max(length + start, -1) : Math.Min(start, length - 1);
            stop = stopArg ?? -1;
            stop = stop < -1 ? Math.Max(length + stop, -1) : Math.Min(stop, length - 1);
        }
        int direction = Math.Sign(step);
        for (double i = start; direction * i < direction * stop; i += step) yield return (int)i;
    }
}
