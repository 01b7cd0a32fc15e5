using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Chat.Jinja;

// The runtime values of @huggingface/jinja: undefined, none, booleans, integers and floats (JavaScript numbers: a
// double either way), strings, lists (and tuples), dicts, namespaces and functions.

/// <summary>A runtime value.</summary>
internal abstract class Value
{
    /// <summary>The reference's name of the type, used in error messages.</summary>
    public abstract string TypeName { get; }

    /// <summary>Python's truthiness.</summary>
    public virtual bool IsTruthy => true;

    /// <summary>What <c>{{ value }}</c> prints (undefined and none print nothing).</summary>
    public abstract string ToOutput();

    public override string ToString() => ToOutput();

    /// <summary>
    /// A JSON value as the reference sees it after <c>JSON.parse</c>: an integral number is an integer, objects keep
    /// JavaScript's property order (integer-like keys first, ascending, then the others as written).
    /// </summary>
    public static Value FromJson(JsonNode? node)
    {
        switch (node)
        {
            case null:
                return NullValue.Instance;
            case JsonArray array:
                return new ArrayValue(array.Select(FromJson).ToList());
            case JsonObject obj:
            {
                var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
                var indexLike = obj.Where(p => IsArrayIndex(p.Key)).OrderBy(p => uint.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture));
                foreach (var (key, v) in indexLike.Concat(obj.Where(p => !IsArrayIndex(p.Key)))) entries[key] = FromJson(v);
                return new ObjectValue(entries);
            }
            case JsonValue value:
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String:
                        return new StringValue(value.TryGetValue(out string? text) ? text : JsonSerializer.Deserialize<string>(value.ToJsonString())!);
                    case JsonValueKind.True: return BooleanValue.True;
                    case JsonValueKind.False: return BooleanValue.False;
                    case JsonValueKind.Null: return NullValue.Instance;
                    case JsonValueKind.Number:
                    {
                        double d = value.TryGetValue(out double x) ? x : double.Parse(value.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);
                        return double.IsInteger(d) ? new IntegerValue(d) : new FloatValue(d);
                    }
                    default:
                        throw TemplateError.Runtime($"Cannot convert to runtime value: {value.ToJsonString()}");
                }
            default:
                throw TemplateError.Runtime($"Cannot convert to runtime value: {node.ToJsonString()}");
        }
    }

    private static bool IsArrayIndex(string key) =>
        key.Length > 0 && key.All(char.IsAsciiDigit) && (key == "0" || key[0] != '0')
        && uint.TryParse(key, System.Globalization.CultureInfo.InvariantCulture, out uint i) && i != uint.MaxValue;
}

internal sealed class UndefinedValue : Value
{
    public static readonly UndefinedValue Instance = new();
    private UndefinedValue() { }
    public override string TypeName => "UndefinedValue";
    public override bool IsTruthy => false;
    public override string ToOutput() => "";
}

internal sealed class NullValue : Value
{
    public static readonly NullValue Instance = new();
    private NullValue() { }
    public override string TypeName => "NullValue";
    public override bool IsTruthy => false;
    public override string ToOutput() => "";
}

internal sealed class BooleanValue : Value
{
    public static readonly BooleanValue True = new(true);
    public static readonly BooleanValue False = new(false);
    private BooleanValue(bool value) => Value = value;
    public bool Value { get; }
    public static BooleanValue Of(bool value) => value ? True : False;
    public override string TypeName => "BooleanValue";
    public override bool IsTruthy => Value;
    public override string ToOutput() => Value ? "true" : "false";
}

/// <summary>An integer or a float; both hold a double, as JavaScript does.</summary>
internal abstract class NumberValue(double value) : Value
{
    public double Number { get; } = value;
    public override bool IsTruthy => Number != 0 && !double.IsNaN(Number);
}

internal sealed class IntegerValue(double value) : NumberValue(value)
{
    public override string TypeName => "IntegerValue";
    public override string ToOutput() => JsCompat.FormatNumber(Number);
}

internal sealed class FloatValue(double value) : NumberValue(value)
{
    public override string TypeName => "FloatValue";

    public override string ToOutput()
    {
        if (Number == 0 && double.IsNegative(Number)) return "-0.0";
        return double.IsInteger(Number) && Math.Abs(Number) < 1e21 ? JsCompat.FormatNumber(Number) + ".0" : JsCompat.FormatNumber(Number);
    }
}

internal sealed class StringValue(string value) : Value
{
    public static readonly StringValue Empty = new("");
    public string Value { get; } = value;
    public override string TypeName => "StringValue";
    public override bool IsTruthy => Value.Length > 0;
    public override string ToOutput() => Value;
}

/// <summary>A list; a tuple is a list marked as such.</summary>
internal sealed class ArrayValue(List<Value> items, bool isTuple = false) : Value
{
    public List<Value> Items { get; } = items;
    public bool IsTuple { get; } = isTuple;
    public override string TypeName => IsTuple ? "TupleValue" : "ArrayValue";
    public override bool IsTruthy => Items.Count > 0;
    public override string ToOutput() => JsonText.Write(this, new JsonText.Options(), undefinedAsNull: false);
}

/// <summary>A dict; keyword arguments gathered for a call are one too.</summary>
internal sealed class ObjectValue(OrderedDictionary<string, Value> entries) : Value
{
    public ObjectValue() : this(new OrderedDictionary<string, Value>(StringComparer.Ordinal)) { }
    public OrderedDictionary<string, Value> Entries { get; } = entries;
    public override string TypeName => "ObjectValue";
    public override bool IsTruthy => Entries.Count > 0;
    public override string ToOutput() => JsonText.Write(this, new JsonText.Options(), undefinedAsNull: false);
}

/// <summary><c>namespace(...)</c>: attributes that <c>set ns.attr = ...</c> may change from inside loops.</summary>
internal sealed class NamespaceValue(OrderedDictionary<string, Value> entries) : Value
{
    public OrderedDictionary<string, Value> Entries { get; } = entries;
    public override string TypeName => "NamespaceValue";
    public override string ToOutput() => JsonText.Write(this, new JsonText.Options(), undefinedAsNull: false);
}

/// <summary>A callable: a macro, a global function or a method bound to its value.</summary>
internal sealed class FunctionValue(string name, Func<Arguments, Scope, Value> invoke) : Value
{
    public string Name { get; } = name;
    public Func<Arguments, Scope, Value> Invoke { get; } = invoke;
    public override string TypeName => "FunctionValue";
    public override string ToOutput() => $"<function {Name}>";
}

/// <summary>The evaluated arguments of a call: positional in order, then keyword by name.</summary>
internal sealed class Arguments(List<Value> positional, OrderedDictionary<string, Value> keyword)
{
    public List<Value> Positional { get; } = positional;
    public OrderedDictionary<string, Value> Keyword { get; } = keyword;

    /// <summary>The argument at <paramref name="index"/>, else the keyword <paramref name="name"/>, else null.</summary>
    public Value? Get(int index, string name) =>
        index < Positional.Count ? Positional[index] : Keyword.TryGetValue(name, out var v) ? v : null;
}
