namespace Microsoft.ML.Seco.Chat.Jinja;

/// <summary>
/// A scope of variables. As in the reference, a for loop and a macro call open one; <c>set</c> writes to the
/// current scope, and a lookup walks outward; an unknown name is undefined.
/// </summary>
internal sealed class Scope(Scope? parent = null)
{
    private readonly Dictionary<string, Value> _variables = new(StringComparer.Ordinal);

    public Scope? Parent { get; } = parent;

    public void Set(string name, Value value) => _variables[name] = value;

    public Value Lookup(string name)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s._variables.TryGetValue(name, out var v)) return v;
        return UndefinedValue.Instance;
    }
}
