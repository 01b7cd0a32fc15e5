namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>The <c>is</c> tests: the reference's set, plus Jinja's comparison tests and <c>divisibleby</c>.</summary>
internal static class Predicates
{
    public static bool Exists(string name) => name is "boolean" or "callable" or "odd" or "even" or "false" or "true" or "none"
        or "string" or "number" or "integer" or "float" or "iterable" or "mapping" or "sequence" or "lower" or "upper"
        or "defined" or "undefined" or "equalto" or "eq" or "==" or "ne" or "!=" or "gt" or "greaterthan" or ">"
        or "ge" or ">=" or "lt" or "lessthan" or "<" or "le" or "<=" or "divisibleby" or "in" or "sameas";

    public static bool Apply(string name, Value operand, IReadOnlyList<Value> args)
    {
        Value Arg() => args.Count > 0 ? args[0] : UndefinedValue.Instance;
        switch (name)
        {
            case "boolean": return operand is BooleanValue;
            case "callable": return operand is FunctionValue;
            case "odd": return Integer(operand, name) % 2 != 0;
            case "even": return Integer(operand, name) % 2 == 0;
            case "false": return operand is BooleanValue { Value: false };
            case "true": return operand is BooleanValue { Value: true };
            case "none": return operand is NullValue;
            case "string": return operand is StringValue;
            case "number": return operand is NumberValue;
            case "integer": return operand is IntegerValue;
            case "float": return operand is FloatValue;
            case "iterable": return operand is ArrayValue or StringValue;
            case "mapping": return operand is ObjectValue;
            case "sequence": return operand is ArrayValue or ObjectValue or StringValue;
            case "lower": return operand is StringValue ls && ls.Value == ls.Value.ToLowerInvariant();
            case "upper": return operand is StringValue us && us.Value == us.Value.ToUpperInvariant();
            case "defined": return operand is not UndefinedValue;
            case "undefined": return operand is UndefinedValue;
            case "equalto" or "eq" or "==": return Operators.StrictEquals(operand, Arg());
            case "ne" or "!=": return !Operators.StrictEquals(operand, Arg());
            case "sameas": return ReferenceEquals(operand, Arg()) || Operators.StrictEquals(operand, Arg());
            case "gt" or "greaterthan" or ">": return Operators.Compare(">", operand, Arg());
            case "ge" or ">=": return Operators.Compare(">=", operand, Arg());
            case "lt" or "lessthan" or "<": return Operators.Compare("<", operand, Arg());
            case "le" or "<=": return Operators.Compare("<=", operand, Arg());
            case "in": return Operators.Contains(Arg(), operand);
            case "divisibleby":
            {
                double d = Arg() is NumberValue n ? n.Number : throw TemplateError.Runtime("divisibleby needs a number");
                return operand is NumberValue x ? x.Number % d == 0 : throw TemplateError.Runtime($"cannot divisibleby on {operand.TypeName}");
            }
            default: throw TemplateError.Runtime($"Unknown test: {name}");
        }
    }

    private static double Integer(Value operand, string test) =>
        operand is IntegerValue i ? i.Number : throw TemplateError.Runtime($"cannot {test} on {operand.TypeName}");
}
