using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Tests.Tokenization;

namespace Microsoft.ML.Seco.Tests.Chat;

/// <summary>
/// @huggingface/jinja 0.5.11 (npm), the JavaScript Jinja interpreter transformers.js renders chat templates with, run by
/// node through reference-render.js. Its self-contained CommonJS build <c>dist/index.cjs</c> is extracted into the
/// ignored cache with the tokenizer tests' helper.
/// </summary>
internal static class JinjaReference
{
    public const string Package = "@huggingface/jinja";
    public const string Version = "0.5.11";

    /// <summary>The reference's rendering of one context: the text, or the message of the error it threw.</summary>
    public sealed record Result(string? Text, string? Error);

    /// <summary>Renders <paramref name="template"/> for every context; a parse error is returned instead of results.</summary>
    /// <exception cref="InvalidOperationException">npm or the registry is unavailable, or node failed.</exception>
    public static (string? ParseError, IReadOnlyList<Result> Results) Render(string template, IReadOnlyList<JsonObject> contexts)
    {
        string index = Path.Combine(RealTokenizerFiles.Extract(Package, Version, "package/dist/", ["index.cjs"]), "index.cjs");
        string script = Path.Combine(AppContext.BaseDirectory, "Chat", "reference-render.js");
        var input = new JsonObject { ["template"] = template, ["contexts"] = new JsonArray([.. contexts.Select(c => c.DeepClone())]) };
        var output = JsonNode.Parse(RealTokenizerFiles.RunNode(script, [index], input.ToJsonString()))!.AsObject();
        string? parseError = output["parse_error"]?.GetValue<string>();
        var results = output["results"]!.AsArray()
            .Select(r => new Result(r!["text"]?.GetValue<string>(), r["error"]?.GetValue<string>()))
            .ToList();
        return (parseError, results);
    }
}
