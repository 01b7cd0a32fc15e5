using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Chat;
using Microsoft.ML.Seco.Tests.Tokenization;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>
/// Small templates, one interpreter feature each (whitespace control, loops, macros, filters, tests, slicing,
/// namespaces, operators, printing of values), rendered by <see cref="ChatTemplate"/> and by @huggingface/jinja: the
/// texts, or the error messages, must be identical. Inconclusive only when npm or the registry is unavailable.
/// </summary>
[TestClass]
public sealed class JinjaFeatureReferenceTests
{
    // Each template is rendered with these messages; the variable x is {"a": 1, "b": [1, 2, 3], "s": " Hi There "}.
    internal static readonly string[] Templates =
    [
        "  {% if true %}\n  yes\n  {% endif %}\nafter\n",
        "a  {%- if true -%}  b  {%- endif -%}  c",
        "a  {{- 'b' -}}  c {{ 'd' }}  e",
        "{# comment #}x{#- trimmed -#}  y\n{# c #}\nz",
        "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }};{% endfor %}",
        "{% for m in messages %}[{{ loop.previtem.role if loop.previtem is defined else '-' }}>{{ m.role }}>{{ loop.nextitem.role if loop.nextitem is defined else '-' }}]{% endfor %}",
        "{% for m in [] %}x{% else %}empty{% endfor %}|{% for m in messages if m.role == 'user' %}{{ m.content }}{{ loop.index }}{% endfor %}",
        "{% for k, v in x.items() %}{{ k }}={{ v }};{% endfor %}{% for k in x %}{{ k }}{% endfor %}",
        "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet(name='Cy', greeting='Yo') }}",
        "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }} {{ ns.s }}",
        "{% set t %}block {{ 1 + 2 }}{% endset %}[{{ t }}]{% set a, b = 1, 2 %}{{ a }}{{ b }}",
        "{{ messages[::-1][0].role }} {{ [1,2,3,4][1:] }} {{ [1,2,3,4][:-1] }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::2] }} {{ 'héllo🙂'[::-1] }} {{ [1,2,3][-1] }}",
        "{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ -3 }} {{ 1.5 + 1 }} {{ 4 / 2 }} {{ 10 - 2.5 }} {{ 3 * 1.0 }}",
        "{{ 'a' ~ 1 ~ 2.0 ~ true }} {{ 'a' + 'b' }} {{ 'x' in 'xyz' }} {{ 'q' not in 'xyz' }} {{ 2 in [1, 2] }} {{ 'a' in x }} {{ 'zz' in x }}",
        "{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ none == none }} {{ undefined_thing == none }} {{ 1 < 2 and 2 <= 2 }} {{ not true or false }} {{ 3 > 2 > 1 }}",
        "{{ 'yes' if messages else 'no' }} {{ 'a' if false else 'b' if false else 'c' }} [{{ 'x' if false }}]",
        "{{ true }} {{ false }} {{ none }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v', 'n': [1]} }} {{ x }} {{ -0.0 }}",
        "{{ x.s|trim }}|{{ x.s|upper }}|{{ x.s|lower }}|{{ x.s|title }}|{{ 'hello world'|capitalize }}|{{ x.s|length }}|{{ x.b|length }}|{{ x|length }}",
        "{{ x|tojson }}|{{ x|tojson(indent=2) }}|{{ 'é\"\\n😀'|tojson }}|{{ 'é😀'|tojson(ensure_ascii=true) }}|{{ [] |tojson(indent=2) }}|{{ {'b': 1, 'a': {}}|tojson(sort_keys=true) }}",
        "{{ x.b|join(', ') }}|{{ x.b|first }}|{{ x.b|last }}|{{ x.b|reverse }}|{{ [3, 1, 2]|sort }}|{{ ['b', 'A', 'c']|sort }}|{{ [1, 1, 2, 1]|unique }}|{{ x.b|list }}",
        "{{ undefined_thing|default('dflt') }}|{{ ''|default('e', true) }}|{{ ''|default('e') }}|{{ '42'|int + 1 }}|{{ '3.5'|float }}|{{ 'abc'|int }}|{{ 3.7|int }}|{{ -5|abs }}",
        "{{ messages|map(attribute='role')|join(',') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|join }}",
        "{{ 'a b  c'.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x', 'c')) }}",
        "{{ 'aaa'.replace('a', 'b') }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc'|replace('b', 'x') }}|{{ 'ab'.replace('', '-') }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'hello world'.title() }}",
        "{{ x.get('a') }}|{{ x.get('zz', 'd') }}|{{ x.get('zz') }}|{{ x.keys()|list }}|{{ x.values()|list|length }}|{{ x|items|list|length }}|{{ x|dictsort|first }}",
        "{{ x is mapping }} {{ x.b is iterable }} {{ x.b is sequence }} {{ x.s is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.5 is integer }} {{ true is boolean }} {{ none is none }}",
        "{{ y is defined }} {{ y is undefined }} {{ x is defined }} {{ 3 is odd }} {{ 4 is even }} {{ true is true }} {{ false is false }} {{ 1 is not string }} {{ x.zz is defined }}",
        "{{ y }}|{{ y.z }}|{{ x.zz }}|{{ x.s.zz }}|{{ messages[10] }}|{% if y %}t{% else %}f{% endif %}|{{ y|default('u') }}",
        "{{ range(3)|list }} {{ range(1, 4)|list }} {{ range(5, 0, -2)|list }}{% for i in range(2) %}{{ i }}{% endfor %}",
        "{{ 'a\\tb\\nc\\'d\\\"e\\\\f\\x41\\u00e9' }}|{{ \"double 'quoted'\" }}|{{ 'con' 'cat' }}",
        "{{ 'line1\\nline2\\n\\nline4'|indent }}|{{ 'a\\nb'|indent(2, true) }}",
        "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{% if loop.index == 3 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
        "{% if messages|length > 2 %}many{% elif messages|length > 0 %}some{% else %}none{% endif %}",
        "{{ raise_exception('Roles must alternate: ' ~ messages[0].role) }}",
        "{{ 'a' + none }}",
        "{{ undefined_thing + 1 }}",
        "{{ x.b|nosuchfilter }}",
        "{% for m in 'abc' %}{{ m }}{% endfor %}",
        "{{ messages[0].content|tojson }}{{ messages[1]['role'] }}{{ messages[0]['content'].split('\\n')|length }}",
        "{% set content = messages[0].content %}{% if '</think>' in content %}{{ content.split('</think>')[-1] }}{% endif %}{{ content.split('</think>')[0]|length }}",
        "{% macro m() %}{{ varargs|length }}{{ kwargs|length }}{% endmacro %}{{ m(1, 2, k=3) }}",
        "{% filter upper %}shout {{ 'this' }}{% endfilter %}",
        "{{ messages|selectattr('content')|list|length }} {{ messages|length is even }} {{ x.b|sort(reverse=true) }} {{ messages|sort(attribute='role')|map(attribute='role')|join }}",
        "  {{ 'expr lines keep indent' }}\n{{ 'x' }}\n  {% if true %}\r\n\tcrlf\r\n  {% endif %}\r\n\t{# c #}\n.",
        "{% for k in o %}{{ k }},{% endfor %} {{ o }} {{ o|tojson }}",
        "{% generation %}  a  {% endgeneration %}|{%- generation -%}  b  {%- endgeneration -%}|\n  {% generation %}\nc\n  {% endgeneration %}\nd",
        "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inner {{ 1 }}{% endcall %}",
        "{{ ' a \n b '.split() }}|{{ 'a  b'.split(' ') }}",
        "{{ messages[-1].content }}{{ messages[1:3]|length }}{{ (messages|last).role }}{{ messages|first|tojson }}",
        "{%- set ns = namespace(found=false) -%}\n{%- for m in messages -%}\n  {%- if m.role == 'assistant' -%}\n    {%- set ns.found = true -%}\n  {%- endif -%}\n{%- endfor -%}\n{{ ns.found }}",
        "{{ {'a': 1}['a'] }} {{ {'a': {'b': 2}}.a.b }} {{ [[1, 2], [3]][0][1] }} {{ (1, 2)[0] }} {{ x['s'] }}",
    ];

    internal static JsonArray Messages() => (JsonArray)JsonNode.Parse("""
        [{"role": "system", "content": "Be brief.\n</think>tail"}, {"role": "user", "content": "Hi 🙂"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "东京?"}]
        """)!;

    internal static Dictionary<string, JsonNode?> Variables() => new()
    {
        ["x"] = JsonNode.Parse("""{"a": 1, "b": [1, 2, 3], "s": " Hi There "}"""),
        ["o"] = JsonNode.Parse("""{"b": 1, "2": 2, "1": [3.5, 1e300, 0.000001, 1e-7, 123456789012345678901234], "01": "x"}"""),
    };

    [TestMethod]
    public void FeatureTemplatesRenderLikeHuggingFaceJinja()
    {
        try
        {
            _ = RealTokenizerFiles.Extract(JinjaReference.Package, JinjaReference.Version, "package/dist/", ["index.cjs"]);
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        var chatCase = new ChatCase("features", Messages(), AddGenerationPrompt: true, Tools: null, Variables());
        var failures = new List<string>();
        foreach (var source in Templates)
        {
            var template = new ChatTemplate(source);
            var (parseError, results) = JinjaReference.Render(source, [chatCase.Context(template.SpecialTokens)]);
            Assert.IsNull(parseError, source);
            string? text = null, error = null;
            try
            {
                text = template.Render(chatCase.Messages, chatCase.AddGenerationPrompt, chatCase.Tools, chatCase.Variables);
            }
            catch (ChatTemplateException e)
            {
                error = e.TemplateMessage;
            }
            var expected = results[0];
            if (expected.Text != text || expected.Error != error)
                failures.Add($"{source.ReplaceLineEndings("\\n")}\n    reference: {Show(expected.Text, expected.Error)}\n    ours:      {Show(text, error)}");
        }
        Assert.IsEmpty(failures, $"{failures.Count} of {Templates.Length} differ:\n" + string.Join("\n", failures));
    }

    private static string Show(string? text, string? error) =>
        error is not null ? $"error \"{error}\"" : $"\"{text!.ReplaceLineEndings("\\n")}\"";
}
