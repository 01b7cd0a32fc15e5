using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Reliability;

/// <summary>
/// Seeded, bounded fuzzing of every reader of files a user hands the library: mutated copies of valid files written by
/// the project's own writers (bit flips, byte edits, truncations, insertions, length-field and number edits, swapped
/// JSON tokens) must be read or refused with a documented exception, and never make a reader allocate more than the
/// file can back. CI runs the default counts (≥ 10,000 inputs in all); <c>SECO_FUZZ_SCALE=20 SECO_FUZZ_SEED=n</c>
/// multiplies them for the long run (docs/RELIABILITY.md).
/// </summary>
[TestClass]
public sealed class FuzzTests
{
    static readonly int Scale = int.Parse(Environment.GetEnvironmentVariable("SECO_FUZZ_SCALE") ?? "1", CultureInfo.InvariantCulture);
    static readonly int Seed = int.Parse(Environment.GetEnvironmentVariable("SECO_FUZZ_SEED") ?? "20261126", CultureInfo.InvariantCulture);

    static string _root = "";

    [ClassInitialize]
    public static void Create(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-fuzz-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
    }

    [ClassCleanup]
    public static void Remove()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, true);
    }

    /// <summary>
    /// Feeds <paramref name="count"/> mutants of <paramref name="valid"/> to <paramref name="read"/> (which gets the
    /// path of a file holding the mutant) and fails on any exception outside <paramref name="documented"/> or any
    /// managed allocation beyond a bound proportional to the file's size. Returns how many mutants were accepted.
    /// </summary>
    static int Fuzz(string name, byte[] valid, int count, Action<string> read, Func<byte[], Random, byte[]>? structured = null, params Type[] documented) =>
        Fuzz(name, valid, count, read, 0, structured, documented);

    /// <param name="referencedBytes">Bytes of other files the input names and an accepted input loads (a .seco archive's base model).</param>
    static int Fuzz(string name, byte[] valid, int count, Action<string> read, long referencedBytes, Func<byte[], Random, byte[]>? structured, params Type[] documented)
    {
        // string.GetHashCode is randomised per process: a fixed hash of the name keeps every run of a seed identical.
        var random = new Random(Seed ^ name.Aggregate(17, (h, c) => unchecked(h * 31 + c)) & 0x7fffffff);
        string folder = Path.Combine(_root, name);
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, name);
        read(Write(path, valid)); // the unmutated file must be accepted, or the fuzzing proves nothing
        int accepted = 0;
        for (int i = 0; i < count * Scale; i++)
        {
            byte[] mutant = structured is not null && random.Next(2) == 0 ? structured(valid, random) : Mutate(valid, random);
            Write(path, mutant);
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                read(path);
                accepted++;
            }
            catch (Exception e) when (documented.Any(t => t.IsInstanceOfType(e)))
            {
            }
            catch (Exception e)
            {
                File.WriteAllBytes(path + ".failing", mutant);
                Assert.Fail($"{name} mutant {i} (seed {Seed}, kept at {path}.failing) threw an undocumented {e.GetType().Name}: {e}");
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            long bound = 64L * (mutant.Length + referencedBytes) + (16 << 20);
            Assert.IsTrue(allocated <= bound, $"{name} mutant {i} (seed {Seed}) allocated {allocated:N0} bytes for a {mutant.Length:N0}-byte file");
        }
        return accepted;
    }

    static string Write(string path, byte[] bytes)
    {
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>One to four generic edits.</summary>
    static byte[] Mutate(byte[] valid, Random random)
    {
        var bytes = new List<byte>(valid);
        int edits = 1 + random.Next(4);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(7))
            {
                case 0: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                case 1: bytes[at] = (byte)random.Next(256); break;
                case 2: bytes.RemoveRange(at, bytes.Count - at); break;
                case 3: bytes.RemoveRange(at, Math.Min(bytes.Count - at, 1 + random.Next(16))); break;
                case 4: bytes.InsertRange(at, Enumerable.Range(0, 1 + random.Next(16)).Select(_ => (byte)random.Next(256))); break;
                case 5: bytes[at] = "{}[]\",:-0 9eE.\\n"u8[random.Next(16)]; break;
                default:
                    int from = random.Next(bytes.Count), length = Math.Min(bytes.Count - from, 1 + random.Next(64));
                    bytes.InsertRange(at, bytes.GetRange(from, length));
                    break;
            }
        }
        return bytes.ToArray();
    }

    static readonly string[] Replacements =
    {
        "0", "-1", "1e308", "-1e308", "18446744073709551615", "9223372036854775807", "2147483648", "4294967296", "1.5", "NaN",
        "null", "true", "\"\"", "\"x\"", "[]", "{}", "[1,2,3]", "[18446744073709551615]", "[9223372036854775807,9223372036854775807]",
        "\"F64\"", "\"BOOL\"", "\"LORA\"", "\"llama\"", "[0,1099511627776]", "[1099511627776,1099511627776]",
    };

    /// <summary>Replaces one JSON number, string, array or literal with a hostile value (huge sizes, wrong types).</summary>
    static string MutateJson(string json, Random random)
    {
        var spans = new List<(int Start, int Length)>();
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json));
        try
        {
            while (reader.Read())
                if (reader.TokenType is JsonTokenType.Number or JsonTokenType.String or JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null)
                    spans.Add(((int)reader.TokenStartIndex, (int)(reader.BytesConsumed - reader.TokenStartIndex)));
        }
        catch (JsonException)
        {
        }
        if (spans.Count == 0) return json;
        var bytes = Encoding.UTF8.GetBytes(json);
        var (start, length) = spans[random.Next(spans.Count)];
        string replacement = Replacements[random.Next(Replacements.Length)];
        return Encoding.UTF8.GetString(bytes, 0, start) + replacement + Encoding.UTF8.GetString(bytes, start + length, bytes.Length - start - length);
    }

    static Func<byte[], Random, byte[]> JsonMutator => (valid, random) =>
    {
        string json = Encoding.UTF8.GetString(valid);
        for (int i = 1 + random.Next(3); i > 0; i--) json = MutateJson(json, random);
        return Encoding.UTF8.GetBytes(json);
    };

    static Tensor Arange(int count, ScalarType type) => arange(count, dtype: ScalarType.Float64).to(type);

    [TestMethod]
    public void SafetensorsHeadersAndData()
    {
        string source = Path.Combine(_root, "source.safetensors");
        using (var a = Arange(12, ScalarType.Float32).reshape(3, 4))
        using (var b = Arange(5, ScalarType.BFloat16))
        using (var c = Arange(6, ScalarType.Int64).reshape(2, 3))
            SafeTensorsFile.Write(source, new[] { ("a", a), ("b", b), ("c", c) }, new Dictionary<string, string> { ["format"] = "pt" });
        byte[] valid = File.ReadAllBytes(source);
        int headerLength = (int)BitConverter.ToUInt64(valid, 0);

        byte[] Structured(byte[] file, Random random)
        {
            if (random.Next(4) == 0)
            {
                // The length prefix: zero, huge, one off, or past the end.
                var copy = (byte[])file.Clone();
                ulong[] lengths = { 0, ulong.MaxValue, (ulong)headerLength + 1, (ulong)headerLength - 1, (ulong)file.Length, 1UL << 40, 100_000_001 };
                BitConverter.GetBytes(lengths[random.Next(lengths.Length)]).CopyTo(copy, 0);
                return copy;
            }
            string header = MutateJson(Encoding.UTF8.GetString(file, 8, headerLength), random);
            var headerBytes = Encoding.UTF8.GetBytes(header);
            return BitConverter.GetBytes((ulong)headerBytes.Length).Concat(headerBytes).Concat(file.Skip(8 + headerLength)).ToArray();
        }

        int accepted = Fuzz("model.safetensors", valid, 3000, path =>
        {
            long length = new FileInfo(path).Length;
            using var file = SafeTensorsFile.Open(path);
            foreach (var name in file.TensorNames)
            {
                var info = file.GetInfo(name);
                long bytes = info.Shape.Aggregate(1L, (p, d) => p * d) * SafeTensorsDType.SizeOf(info.DType);
                // Checked before the tensor is allocated: a header may not promise more bytes than the file holds.
                Assert.IsTrue(bytes <= length, $"'{name}' claims {bytes:N0} bytes in a {length:N0}-byte file and was accepted");
                using var tensor = file.ReadTensor(name);
            }
        }, Structured, typeof(InvalidDataException));
        Console.WriteLine($"safetensors: {3000 * Scale} mutants, {accepted} accepted");
    }

    [TestMethod]
    public void ConfigJson()
    {
        string model = Path.Combine(_root, "config-model");
        TinyModel.Write(model, new TinyModelSpec { Layers = 1, HiddenSize = 16, Heads = 2, KeyValueHeads = 1, IntermediateSize = 32, Seed = 1 });
        byte[] valid = File.ReadAllBytes(Path.Combine(model, "config.json"));
        int accepted = Fuzz("config.json", valid, 2000, path => ModelConfig.Load(Path.GetDirectoryName(path)!), JsonMutator,
            typeof(InvalidDataException), typeof(NotSupportedException));
        Console.WriteLine($"config.json: {2000 * Scale} mutants, {accepted} accepted");
    }

    [TestMethod]
    public void AdapterConfigJson()
    {
        byte[] valid = Encoding.UTF8.GetBytes(PeftAdapter.ConfigJson(new LoraConfig { Rank = 8, Alpha = 16 }, "base").ToJsonString());
        int accepted = Fuzz("adapter_config.json", valid, 2000, path => PeftAdapter.ReadConfig(Path.GetDirectoryName(path)!), JsonMutator,
            typeof(InvalidDataException), typeof(NotSupportedException));
        Console.WriteLine($"adapter_config.json: {2000 * Scale} mutants, {accepted} accepted");
    }

    [TestMethod]
    public void TokenizerJson()
    {
        string[] tokens = ["l", "o", "w", "e", "r", "s", "t", "Ġ", "lo", "low", "er", "Ġlow", "<s>", "</s>"];
        var json = new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new[] { new { id = 12, content = "<s>", special = true }, new { id = 13, content = "</s>", special = true } },
            ["normalizer"] = null,
            ["pre_tokenizer"] = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            ["decoder"] = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = tokens.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i),
                ["merges"] = new[] { "l o", "lo w", "e r", "Ġ low" },
            },
        };
        byte[] valid = JsonSerializer.SerializeToUtf8Bytes(json);
        int accepted = Fuzz("tokenizer.json", valid, 1500, path =>
        {
            var tokenizer = ModelTokenizer.Load(Path.GetDirectoryName(path)!);
            _ = tokenizer.Encode("lower slow", addBos: true);
        }, JsonMutator, typeof(InvalidDataException), typeof(NotSupportedException));
        Console.WriteLine($"tokenizer.json: {1500 * Scale} mutants, {accepted} accepted");
    }

    [TestMethod]
    public void JsonLines()
    {
        byte[] valid = Encoding.UTF8.GetBytes(string.Join('\n',
            "{\"text\": \"first document\"}", "", "{\"text\": \"second \\u00e9 document\", \"extra\": 1}", "{\"text\": \"third\"}") + "\n");
        int accepted = Fuzz("data.jsonl", valid, 2000, path => _ = JsonlDocuments.Read(path).ToList(), JsonMutator, typeof(InvalidDataException));
        byte[] pairs = Encoding.UTF8.GetBytes("{\"prompt\": \"q\", \"response\": \"a\"}\n{\"prompt\": \"\", \"response\": \"b\"}\n");
        accepted += Fuzz("pairs.jsonl", pairs, 1000, path =>
        {
            var ml = new MLContext(seed: 1);
            var view = JsonlDocuments.LoadDataView(ml, path);
            using var cursor = view.GetRowCursor(view.Schema);
            while (cursor.MoveNext()) { }
        }, JsonMutator, typeof(InvalidDataException));
        Console.WriteLine($"JSON lines: {3000 * Scale} mutants, {accepted} accepted");
    }

    /// <summary>.seco archives: raw byte mutations (mostly caught by the zip's CRCs) and re-zipped archives whose JSON entries are mutated.</summary>
    [TestMethod]
    public void SecoArchives()
    {
        string archive = Path.Combine(_root, "source.seco");
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MLNet.TinyModelFixture.Documents(2));
        using (var model = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
               { ModelPath = MLNet.TinyModelFixture.ModelPath, ChunkSize = 16, MaxSequenceLength = 32, MaxSteps = 1, Device = "cpu", Seed = 1 }).Fit(data))
            model.Save(ml, archive);
        byte[] valid = File.ReadAllBytes(archive);

        byte[] Structured(byte[] file, Random random)
        {
            using var input = new ZipArchive(new MemoryStream(file), ZipArchiveMode.Read);
            var entries = input.Entries.Select(e => (e.FullName, Bytes: ReadAll(e))).ToList();
            var jsonEntries = entries.Select((e, i) => (e, i)).Where(p => p.e.FullName.EndsWith(".json", StringComparison.Ordinal)).ToList();
            var (target, index) = jsonEntries[random.Next(jsonEntries.Count)];
            entries[index] = (target.FullName, random.Next(3) == 0 ? Mutate(target.Bytes, random) : JsonMutator(target.Bytes, random));
            using var output = new MemoryStream();
            using (var zip = new ZipArchive(output, ZipArchiveMode.Create, leaveOpen: true))
                foreach (var (name, bytes) in entries)
                    using (var stream = zip.CreateEntry(name).Open()) stream.Write(bytes);
            return output.ToArray();
        }

        // An accepted archive loads its base model: those files back what it allocates too.
        long baseModelBytes = Directory.GetFiles(MLNet.TinyModelFixture.ModelPath).Sum(f => new FileInfo(f).Length);
        int accepted = Fuzz("model.seco", valid, 400, path =>
        {
            var loaded = SecoModel.Load(ml, path, MLNet.TinyModelFixture.ModelPath);
            (loaded as IDisposable)?.Dispose();
        }, baseModelBytes, Structured, typeof(InvalidDataException), typeof(NotSupportedException));
        Console.WriteLine($".seco: {400 * Scale} mutants, {accepted} accepted");
    }

    static byte[] ReadAll(ZipArchiveEntry entry)
    {
        using var stream = entry.Open();
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return buffer.ToArray();
    }
}
