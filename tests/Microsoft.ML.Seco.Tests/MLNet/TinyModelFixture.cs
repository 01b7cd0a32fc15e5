using Microsoft.ML.Seco.Checkpoints;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>One tiny Hugging Face model directory (with GPT-2's tokenizer) shared by the ML.NET tests.</summary>
internal static class TinyModelFixture
{
    static readonly Lazy<string> Directory_ = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "seco-mlnet-tiny-" + Environment.ProcessId);
        if (!File.Exists(Path.Combine(dir, "config.json")))
            TinyModel.Write(dir, new TinyModelSpec { Layers = 2, HiddenSize = 32, Heads = 4, KeyValueHeads = 2, IntermediateSize = 64, Seed = 1 });
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        return dir;
    });

    public static string ModelPath => Directory_.Value;

    public sealed class Doc
    {
        public string Text { get; set; } = "";
    }

    public sealed class PromptResponse
    {
        public string Prompt { get; set; } = "";
        public string Response { get; set; } = "";
    }

    public static Doc[] Documents(int count, int seed = 0)
    {
        var random = new Random(seed);
        string[] words = { "the", "contract", "shall", "renew", "annually", "unless", "either", "party", "gives", "notice", "in", "writing" };
        return Enumerable.Range(0, count).Select(_ => new Doc
        {
            Text = string.Join(' ', Enumerable.Range(0, 40 + random.Next(60)).Select(i => words[(i + random.Next(2)) % words.Length])) + ".",
        }).ToArray();
    }

    public static string TempPath(string name) => Path.Combine(Path.GetTempPath(), $"seco-{name}-{Guid.NewGuid():N}");
}
