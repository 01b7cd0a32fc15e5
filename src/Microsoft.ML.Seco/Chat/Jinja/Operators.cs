namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// The binary operators with the reference's rules: <c>==</c> is JavaScript's loose equality of the underlying
/// values, <c>in</c> its strict equality, <c>~</c> and string <c>+</c> join the values' JavaScript strings, and
/// arithmetic keeps an integer an integer unless a float takes part (or <c>/</c>). Unlike the reference, a string
/// plus a list or dict is an error (as in Python), and <c>~</c> joins lists and dicts as they print.
/// </summary>
internal static class Operators
{
    public static Value Binary(string op, Value left, Value right)
    {
        switch (op)
        {
            case "==": return BooleanValue.Of(LooseEquals(left, right));
            case "!=": return BooleanValue.Of(!LooseEquals(left, right));
        }
        if (left is UndefinedValue || right is UndefinedValue)
        {
            if (right is UndefinedValue && op is "in" or "not in") return BooleanValue.Of(op == "not in");
            throw TemplateError.Runtime($"Cannot perform operation {op} on undefined values");
        }
        if (left is NullValue || right is NullValue) throw TemplateError.Runtime("Cannot perform operation on null values");
        if (op == "~") return new StringValue(ConcatString(left) + ConcatString(right));
        if (op == "**" && NumericLike(left, out double pa) && NumericLike(right, out double pb))
        {
            if (pa == 0 && pb < 0) throw TemplateError.Runtime("0.0 cannot be raised to a negative power");
            double r = Math.Pow(pa, pb);
            if (!double.IsFinite(r)) throw TemplateError.Runtime("Exponentiation result is not a finite real number");
            return left is FloatValue || right is FloatValue || pb < 0 ? new FloatValue(r) : new IntegerValue(r);
        }
        if (left is NumberValue ln && right is NumberValue rn)
        {
            double a = ln.Number, b = rn.Number;
            bool isFloat = left is FloatValue || right is FloatValue;
            switch (op)
            {
                case "+": return Number(a + b, isFloat);
                case "-": return Number(a - b, isFloat);
                case "*": return Number(a * b, isFloat);
                case "/": return new FloatValue(a / b);
                case "//": return Number(Math.Floor(a / b), isFloat);
                case "%": return Number(a % b, isFloat);
                case "<": return BooleanValue.Of(a < b);
                case ">": return BooleanValue.Of(a > b);
                case "<=": return BooleanValue.Of(a <= b);
                case ">=": return BooleanValue.Of(a >= b);
            }
        }
        else if (left is ArrayValue la && right is ArrayValue ra)
        {
            if (op == "+") return new ArrayValue([.. la.Items, .. ra.Items]);
        }
        else if (right is ArrayValue array)
        {
            if (op is "in" or "not in")
            {
                bool member = array.Items.Any(x => StrictEquals(x, left));
                return BooleanValue.Of(op == "in" ? member : !member);
            }
        }
        if ((left is StringValue || right is StringValue) && op == "+")
        {
            // The reference would join JavaScript's "[object Map]" or "1,2" into the text; Python raises, and so do we.
            var other = left is StringValue ? right : left;
            if (other is ArrayValue or ObjectValue or NamespaceValue or FunctionValue)
                throw TemplateError.Runtime($"Cannot add a string and a {Describe(other)} (convert it first, e.g. with |tojson)");
            return new StringValue(RawString(left) + RawString(right));
        }
        if (left is StringValue ls && right is StringValue rs && op is "in" or "not in")
        {
            bool found = rs.Value.Contains(ls.Value, StringComparison.Ordinal);
            return BooleanValue.Of(op == "in" ? found : !found);
        }
        if (left is StringValue key && right is ObjectValue obj && op is "in" or "not in")
        {
            bool has = obj.Entries.ContainsKey(key.Value);
            return BooleanValue.Of(op == "in" ? has : !has);
        }
        throw TemplateError.Runtime($"Unknown operator \"{op}\" between {left.TypeName} and {right.TypeName}");
    }

    private static Value Number(double v, bool isFloat) => isFloat ? new FloatValue(v) : new IntegerValue(v);

    private static bool NumericLike(Value v, out double d)
    {
        (bool ok, d) = v switch
        {
            NumberValue n => (true, n.Number),
            BooleanValue b => (true, b.Value ? 1 : 0),
            _ => (false, 0),
        };
        return ok;
    }

    /// <summary>Whether <paramref name="item"/> is in <paramref name="container"/>, as <c>item in container</c>.</summary>
    public static bool Contains(Value container, Value item) => Binary("in", item, container) is BooleanValue { Value: true };

    /// <summary>JavaScript's <c>a.value == b.value</c>.</summary>
    public static bool LooseEquals(Value a, Value b)
    {
        bool aNullish = a is NullValue or UndefinedValue, bNullish = b is NullValue or UndefinedValue;
        if (aNullish || bNullish) return aNullish && bNullish;
        if (a is StringValue sa && b is StringValue sb) return string.Equals(sa.Value, sb.Value, StringComparison.Ordinal);
        double? na = Primitive(a), nb = Primitive(b);
        if (na is not null && nb is not null) return na.Value == nb.Value;
        return SameReference(a, b);
    }

    // A number, boolean or string as a JavaScript number; null for objects.
    private static double? Primitive(Value v) => v switch
    {
        NumberValue n => n.Number,
        BooleanValue b => b.Value ? 1 : 0,
        StringValue s => JsCompat.ToNumber(s.Value),
        _ => null,
    };

    /// <summary>JavaScript's <c>a.value === b.value</c>.</summary>
    public static bool StrictEquals(Value a, Value b) => (a, b) switch
    {
        (UndefinedValue, UndefinedValue) or (NullValue, NullValue) => true,
        (NumberValue x, NumberValue y) => x.Number == y.Number,
        (StringValue x, StringValue y) => string.Equals(x.Value, y.Value, StringComparison.Ordinal),
        (BooleanValue x, BooleanValue y) => x.Value == y.Value,
        _ => SameReference(a, b),
    };

    private static bool SameReference(Value a, Value b) => (a, b) switch
    {
        (ArrayValue x, ArrayValue y) => ReferenceEquals(x.Items, y.Items),
        (ObjectValue x, ObjectValue y) => ReferenceEquals(x.Entries, y.Entries),
        (NamespaceValue x, NamespaceValue y) => ReferenceEquals(x.Entries, y.Entries),
        _ => ReferenceEquals(a, b),
    };

    /// <summary>A comparison test (<c>gt</c>, <c>lt</c>...): numbers only, as the reference's operators.</summary>
    public static bool Compare(string op, Value a, Value b) => Binary(op, a, b) is BooleanValue { Value: true };

    private static string Describe(Value v) => v switch
    {
        ArrayValue a => a.IsTuple ? "tuple" : "list",
        ObjectValue => "dict",
        NamespaceValue => "namespace",
        _ => "function",
    };

    // What ~ joins: a list or dict as {{ }} prints it (the reference's "[object Map]" helps no one).
    private static string ConcatString(Value v) => v is ArrayValue or ObjectValue or NamespaceValue ? v.ToOutput() : RawString(v);

    /// <summary>JavaScript's <c>value.value.toString()</c>: what string <c>+</c> joins.</summary>
    public static string RawString(Value v) => v switch
    {
        StringValue s => s.Value,
        NumberValue n => JsCompat.FormatNumber(n.Number),
        BooleanValue b => b.Value ? "true" : "false",
        ArrayValue a => string.Join(",", a.Items.Select(ElementString)),
        ObjectValue or NamespaceValue => "[object Map]",
        NullValue => "null",
        UndefinedValue => "undefined",
        _ => v.ToOutput(),
    };

    // RuntimeValue.toString() of an array element when the array is joined by JavaScript.
    private static string ElementString(Value v) => v switch
    {
        UndefinedValue => "undefined",
        NullValue => "null",
        _ => v.ToOutput(),
    };

    /// <summary>How <c>Array.prototype.join</c> shows an item's raw value (none and undefined as empty).</summary>
    public static string JoinString(Value v) => v is NullValue or UndefinedValue ? "" : RawString(v);
}
