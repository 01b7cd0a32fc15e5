using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>The interpreter's features with hand-written expected outputs (no reference needed).</summary>
[TestClass]
public sealed class JinjaInterpreterTests
{
    private static readonly JsonArray s_messages = (JsonArray)JsonNode.Parse("""
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
        """)!;

    private static string Render(string source, string? variablesJson = null, bool addGenerationPrompt = false)
    {
        var variables = variablesJson is null ? null
            : JsonNode.Parse(variablesJson)!.AsObject().ToDictionary(p => p.Key, p => p.Value?.DeepClone());
        return new ChatTemplate(source, new Dictionary<string, string?> { ["bos_token"] = "<s>" })
            .Render(s_messages, addGenerationPrompt, variables: variables);
    }

    [TestMethod]
    public void WhitespaceControlAndHuggingFaceBlockSettings()
    {
        Assert.AreEqual("abc", Render("a  {%- if true -%}  b  {%- endif -%}  c"));
        Assert.AreEqual("abc", Render("a \n {{- 'b' -}} \n c"));
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it; expressions keep both.
        Assert.AreEqual("x\n  y\nz", Render("{% if true %}\nx\n  {% endif %}\n  {{ 'y' }}\nz"));
        Assert.AreEqual("ab", Render("a{# note #}\nb"));
        Assert.AreEqual("a", Render("a\n"), "a single trailing newline is dropped");
    }

    [TestMethod]
    public void LoopVariablesElseFilteringAndUnpacking()
    {
        Assert.AreEqual("1.0.4.T.F|2.1.3.F.F|3.2.2.F.F|4.3.1.F.T|",
            Render("{% for m in messages %}{{ loop.index }}.{{ loop.index0 }}.{{ loop.revindex }}.{{ 'T' if loop.first else 'F' }}.{{ 'T' if loop.last else 'F' }}|{% endfor %}"));
        Assert.AreEqual("-:U1:A1 U1:A1:U2 A1:U2: ", Render("{% for m in messages[1:] %}{{ loop.previtem.content if loop.previtem is defined else '-' }}:{{ m.content }}:{{ loop.nextitem.content if loop.nextitem is defined else '' }} {% endfor %}"));
        Assert.AreEqual("U1 U2 (2)", Render("{% for m in messages if m.role == 'user' %}{{ m.content }} {% endfor %}({{ messages|selectattr('role', 'eq', 'user')|list|length }})"));
        Assert.AreEqual("none", Render("{% for m in [] %}x{% else %}none{% endfor %}"));
        Assert.AreEqual("a=1;b=2;", Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", """{"d": {"a": 1, "b": 2}}"""));
        Assert.AreEqual("0 1 3", Render("{% for i in range(5) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{{ ' ' if not loop.last }}{% endfor %}").Trim());
    }

    [TestMethod]
    public void MacrosNamespacesAndBlockSet()
    {
        Assert.AreEqual("Hello, Ann! Hi, Bob!", Render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }}"));
        Assert.AreEqual("[x]", Render("{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}x{% endcall %}"));
        Assert.AreEqual("4 SUAU", Render("{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s + m.role[0]|upper %}{% endfor %}{{ ns.n }} {{ ns.s }}"));
        Assert.AreEqual("outer", Render("{% set v = 'outer' %}{% for m in messages %}{% set v = 'inner' %}{% endfor %}{{ v }}"), "a loop's set does not leak");
        Assert.AreEqual("<b>3</b>", Render("{% set t %}<b>{{ 1 + 2 }}</b>{% endset %}{{ t }}"));
    }

    [TestMethod]
    public void FiltersAndMethods()
    {
        Assert.AreEqual("x|X Y|Hello world|3|a, b|c|b", Render("{{ '  x '|trim }}|{{ 'x y'|upper }}|{{ 'hello world'|capitalize }}|{{ [1,2,3]|length }}|{{ ['a','b']|join(', ') }}|{{ ['a','c']|last }}|{{ 'abc'|replace('a', '')|first }}"));
        Assert.AreEqual("{\"a\": [1, 2.5, null], \"é\": true}", Render("{{ v|tojson }}", """{"v": {"a": [1, 2.5, null], "é": true}}"""));
        Assert.AreEqual("{\n  \"a\": [\n    1\n  ],\n  \"\\u00e9\": {}\n}", Render("{{ v|tojson(indent=2, ensure_ascii=true) }}", """{"v": {"a": [1], "é": {}}}"""));
        Assert.AreEqual("dflt||e|43|3.5|0|3|5", Render("{{ nope|default('dflt') }}|{{ ''|default('e') }}|{{ ''|default('e', true) }}|{{ '42'|int + 1 }}|{{ '3.5'|float }}|{{ 'x'|int }}|{{ 3.7|int }}|{{ -5|abs }}"));
        Assert.AreEqual("system,user,assistant,user|[1, 2]|[\"A\", \"b\", \"c\"]|[3, 2, 1]|2.5|3|&lt;a&gt;", Render("{{ messages|map(attribute='role')|join(',') }}|{{ [1, 1, 2]|unique }}|{{ ['c', 'A', 'b']|sort }}|{{ [1, 2, 3]|reverse }}|{{ 2.49|round(1) }}|{{ 'one two  three'|wordcount }}|{{ '<a>'|e }}"));
        Assert.AreEqual("a\n    b|[\"a\", \"b\", \"c\"]|[\"a\", \"b,c\"]", Render("{{ 'a\\nb'|indent }}|{{ 'a b  c'.split() }}|{{ 'a,b,c'.split(',', 1) }}"));
        Assert.AreEqual("1|d|none|2|1", Render("{{ d.get('a') }}|{{ d.get('z', 'd') }}|{{ 'none' if d.get('z') is none }}|{{ d|length }}|{{ d.keys()|first|length }}", """{"d": {"a": 1, "b": 2}}"""));
        Assert.AreEqual("2|-1|[\"a\", \"b\"]|[\"a b\", \"c\"]|2", Render("{{ 'abc'.find('c') }}|{{ 'abc'.find('z') }}|{{ 'a\\nb'.splitlines() }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ 'aXbX'.count('X') }}"));
        Assert.AreEqual("[1, \"a\"]|2", Render("{{ [0, 1, '', 'a']|select|list }}|{{ [1, 2, 3, 4]|reject('odd')|list|length }}"));
    }

    [TestMethod]
    public void StripWithCharactersFollowsPython()
    {
        // Python's str.strip(chars): only those characters. @huggingface/jinja ignores the argument and strips all
        // whitespace; transformers (Python) is what models were trained with, so Python's meaning is kept.
        Assert.AreEqual("[  x  ]|[  x\n]|[\n  x]|[a]", Render("[{{ '\\n  x  \\n'.strip('\\n') }}]|[{{ '\\n  x\\n'.lstrip('\\n') }}]|[{{ '\\n  x\\n'.rstrip('\\n') }}]|[{{ 'xxaxyy'.strip('xy') }}]"));
    }

    [TestMethod]
    public void TestsAndOperators()
    {
        Assert.AreEqual("TTTTTTTT", Render("{{ 'T' if d is mapping }}{{ 'T' if [1] is iterable }}{{ 'T' if 's' is string }}{{ 'T' if 1 is integer }}{{ 'T' if 1.5 is number }}{{ 'T' if nope is undefined }}{{ 'T' if none is none }}{{ 'T' if 3 is odd and 4 is even }}", """{"d": {}}"""));
        Assert.AreEqual("TTTTT", Render("{{ 'T' if true is true and false is false }}{{ 'T' if 1 is eq(1) }}{{ 'T' if 9 is divisibleby(3) }}{{ 'T' if true is boolean }}{{ 'T' if d is defined and d.x is defined and d.y is not defined }}", """{"d": {"x": null}}"""));
        Assert.AreEqual("7 3 1 3.5 1024 a12.5 True", Render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 'a' ~ 1 ~ 2.5 }} {{ 'True' if 'b' in 'abc' and 2 in [1, 2] and 'k' in {'k': 1} and 'z' not in 'abc' }}"));
        Assert.AreEqual("c [4, 3, 2, 1] [2, 3] ab 🙂olléh", Render("{{ 'a' if false else 'b' if false else 'c' }} {{ [1, 2, 3, 4][::-1] }} {{ [1, 2, 3][1:] }} {{ 'abc'[:2] }} {{ 'héllo🙂'[::-1] }}"));
        Assert.AreEqual("true false 1.0 [1, \"a\", null]", Render("{{ true }} {{ false }} {{ 1.0 }} {{ [1, 'a', none] }}"), "values print as @huggingface/jinja prints them");
    }

    [TestMethod]
    public void AStringPlusADictIsAnErrorNotJavaScriptText()
    {
        // DeepSeek V3's template adds tool['function']['arguments'] to strings: with arguments given as an object the
        // reference writes "[object Map]" into the prompt; Python raises, and so does ChatTemplate.
        var e = Assert.ThrowsExactly<ChatTemplateException>(() => Render("{{ 'args: ' + d }}", """{"d": {"a": 1}}"""));
        StringAssert.Contains(e.TemplateMessage, "Cannot add a string and a dict");
        Assert.AreEqual("n=1 [1, 2] {\"a\": 1}", Render("{{ 'n=' + 1 }} {{ [1, 2] ~ ' ' ~ d }}", """{"d": {"a": 1}}"""));
    }

    [TestMethod]
    public void UndefinedValuesPrintEmptyAndAreFalsy()
    {
        Assert.AreEqual("[][][]F", Render("[{{ nope }}][{{ nope.attr }}][{{ none }}]{{ 'T' if nope else 'F' }}"));
        var e = Assert.ThrowsExactly<ChatTemplateException>(() => Render("{{ nope + 1 }}"));
        Assert.AreEqual(ChatTemplateErrorKind.Runtime, e.Kind);
        Assert.AreEqual("Cannot perform operation + on undefined values", e.TemplateMessage);
    }

    [TestMethod]
    public void StrftimeNowReadsTheInjectedClock()
    {
        var template = new ChatTemplate("{{ strftime_now('%d %b %Y, %H:%M') }} {{ strftime_now('%B %-d') }}")
        {
            TimeProvider = new FixedClock(new DateTimeOffset(2026, 3, 7, 9, 5, 0, TimeSpan.Zero)),
        };
        Assert.AreEqual("07 Mar 2026, 09:05 March 7", template.Render([], addGenerationPrompt: false));
    }

    [TestMethod]
    public void RaiseExceptionCarriesTheTemplatesMessageAndLocation()
    {
        var e = Assert.ThrowsExactly<ChatTemplateException>(() => Render("line one\n{% if messages[1].role == 'user' %}\n  {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n{% endif %}"));
        Assert.AreEqual(ChatTemplateErrorKind.Raised, e.Kind);
        Assert.AreEqual("Conversation roles must alternate user/assistant/user/assistant/...", e.TemplateMessage);
        Assert.AreEqual(3, e.Line);
        Assert.AreEqual(6, e.Column);
        StringAssert.Contains(e.Message, "line 3, column 6");
    }

    [TestMethod]
    public void SyntaxAndRuntimeErrorsHaveLineAndColumn()
    {
        var syntax = Assert.ThrowsExactly<ChatTemplateException>(() => new ChatTemplate("ok\n{% if x %}\n  {% frobnicate %}\n{% endif %}"));
        Assert.AreEqual(ChatTemplateErrorKind.Syntax, syntax.Kind);
        Assert.AreEqual((3, 6), (syntax.Line, syntax.Column), syntax.Message);

        var unclosed = Assert.ThrowsExactly<ChatTemplateException>(() => new ChatTemplate("{% for m in messages %}\nx"));
        Assert.AreEqual(ChatTemplateErrorKind.Syntax, unclosed.Kind);
        Assert.AreEqual(2, unclosed.Line);

        var character = Assert.ThrowsExactly<ChatTemplateException>(() => new ChatTemplate("ab\n  {{ 1 ; 2 }}"));
        Assert.AreEqual((2, 8), (character.Line, character.Column), character.Message);

        // Located after lstrip_blocks and trim_blocks removed characters: positions are the original source's.
        var runtime = Assert.ThrowsExactly<ChatTemplateException>(() => Render("{% for m in messages %}\n    {% if true %}\n{{ m.content|nosuchfilter }}{% endif %}{% endfor %}"));
        Assert.AreEqual(ChatTemplateErrorKind.Runtime, runtime.Kind);
        Assert.AreEqual((3, 13), (runtime.Line, runtime.Column), runtime.Message);
        Assert.AreEqual("Unknown StringValue filter: nosuchfilter", runtime.TemplateMessage);
    }

    [TestMethod]
    public void RunawayRecursionDeepNestingAndHugeRangesFailAsTemplateErrors()
    {
        var recursion = Assert.ThrowsExactly<ChatTemplateException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
        StringAssert.Contains(recursion.TemplateMessage, "nest deeper");
        Assert.AreEqual("120", Render("{% macro fact(n) %}{{ n * fact(n - 1)|int if n > 1 else 1 }}{% endmacro %}{{ fact(5) }}"));
        var nested = Assert.ThrowsExactly<ChatTemplateException>(() => new ChatTemplate("{{ " + new string('(', 100_000) + "1" + new string(')', 100_000) + " }}"));
        Assert.AreEqual(ChatTemplateErrorKind.Syntax, nested.Kind);
        var range = Assert.ThrowsExactly<ChatTemplateException>(() => Render("{{ range(1000000000)|length }}"));
        StringAssert.Contains(range.TemplateMessage, "Range too big");
    }

    [TestMethod]
    public void LoadsFromTokenizerConfigAndModelDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "seco-chat-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string config = Path.Combine(dir, "tokenizer_config.json");
            File.WriteAllText(config, """
                {"bos_token": {"__type": "AddedToken", "content": "<bos>"}, "eos_token": "</s>", "pad_token": null,
                 "chat_template": [{"name": "default", "template": "{{ bos_token }}D{{ eos_token }}{{ pad_token is defined }}"}, {"name": "tool_use", "template": "T"}]}
                """);
            Assert.AreEqual("<bos>D</s>false", ChatTemplate.FromTokenizerConfig(config)!.Render([], false));
            Assert.AreEqual("T", ChatTemplate.FromTokenizerConfig(config, "tool_use")!.Render([], false));
            Assert.ThrowsExactly<InvalidDataException>(() => ChatTemplate.FromTokenizerConfig(config, "missing"));
            Assert.AreEqual("<bos>D</s>false", ChatTemplate.FromModelDirectory(dir)!.Render([], false));

            File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "J{{ bos_token }}\n");
            Assert.AreEqual("J<bos>", ChatTemplate.FromModelDirectory(dir)!.Render([], false), "chat_template.jinja wins");

            File.WriteAllText(config, """{"eos_token": "</s>"}""");
            Assert.IsNull(ChatTemplate.FromTokenizerConfig(config));
            File.Delete(Path.Combine(dir, "chat_template.jinja"));
            Assert.IsNull(ChatTemplate.FromModelDirectory(dir));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }
}
