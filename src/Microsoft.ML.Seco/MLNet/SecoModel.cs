using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco;

/// <summary>
/// One-file persistence for pipelines that contain a <see cref="ChunkwiseLoraTransformer"/>.
/// </summary>
/// <remarks>
/// ML.NET's <c>Model.Save</c>/<c>Load</c> cannot persist transformers defined outside ML.NET's assemblies (the
/// save/load contexts and loadable-class registration are internal; dotnet/machinelearning#4911). A <c>.seco</c> file
/// is a zip holding <c>manifest.json</c> and one entry per run of stages: runs of ML.NET stages are saved by ML.NET
/// itself (<c>stage-N.zip</c>), and each chunk-wise stage as <c>stage-N/</c> with its settings, its adapter in PEFT's
/// layout (or full weights after full fine-tuning), and a fingerprint of the base model it was trained on. The base
/// model itself is referenced by path, not copied.
/// </remarks>
public static class SecoModel
{
    const string Format = "Microsoft.ML.Seco.Pipeline/1";
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>
    /// Saves a fitted stage, or a chain (TransformerChain) in which chunk-wise stages sit among ML.NET's own, to one
    /// file. <paramref name="inputSchema"/> is the schema of the data the pipeline reads (needed by ML.NET's stages;
    /// may be null when the model is a single chunk-wise stage). Written to a temporary file and renamed at the end.
    /// </summary>
    public static void Save(MLContext ml, ITransformer model, DataViewSchema? inputSchema, string path)
    {
        var stages = model is IEnumerable<ITransformer> chain && model is not ChunkwiseLoraTransformer ? chain.ToList() : new List<ITransformer> { model };
        if (stages.Any(s => s is not ChunkwiseLoraTransformer) && inputSchema is null)
            throw new ArgumentNullException(nameof(inputSchema), "The pipeline has ML.NET stages: pass the schema of its input data (e.g. data.Schema).");
        string full = Path.GetFullPath(path);
        AtomicFile.Write(full, "the model", file =>
        {
            using (var zip = new ZipArchive(file, ZipArchiveMode.Create, leaveOpen: true))
            {
                var manifest = new JsonArray();
                var schema = inputSchema;
                var run = new List<ITransformer>();
                void FlushMlNetRun()
                {
                    if (run.Count == 0) return;
                    string entry = $"stage-{manifest.Count}.zip";
                    var runChain = new TransformerChain<ITransformer>(run.ToArray());
                    using (var stream = zip.CreateEntry(entry, CompressionLevel.Fastest).Open())
                        ml.Model.Save(runChain, schema, stream);
                    schema = runChain.GetOutputSchema(schema!);
                    manifest.Add(new JsonObject { ["kind"] = "mlnet", ["entry"] = entry });
                    run.Clear();
                }
                foreach (var stage in stages)
                {
                    if (stage is not ChunkwiseLoraTransformer seco) { run.Add(stage); continue; }
                    FlushMlNetRun();
                    string prefix = $"stage-{manifest.Count}/";
                    WriteStage(zip, prefix, seco);
                    manifest.Add(new JsonObject { ["kind"] = "seco", ["entry"] = prefix });
                    if (schema is not null) schema = seco.GetOutputSchema(schema);
                }
                FlushMlNetRun();
                WriteText(zip, "manifest.json", new JsonObject { ["format"] = Format, ["stages"] = manifest }.ToJsonString(Json));
            }
        });
    }

    /// <summary>
    /// Loads what <see cref="Save"/> wrote: the single stage, or a TransformerChain of all stages. When the base model
    /// moved, pass its new location as <paramref name="baseModelPath"/>; a base model whose config or weights changed
    /// since training is refused.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file, or the base model it names, does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid pipeline, or the base model changed since training.</exception>
    /// <exception cref="NotSupportedException">A stage asks for something this library does not implement.</exception>
    public static ITransformer Load(MLContext ml, string path, string? baseModelPath = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Model file '{path}' does not exist.", path);
        using var zip = ZipFile.OpenRead(path);
        var manifest = ReadJson(zip, "manifest.json", path);
        if ((manifest["format"] is JsonValue f && f.TryGetValue(out string? format) ? format : null) != Format)
            throw new InvalidDataException($"{path} is not a Microsoft.ML.Seco pipeline (format '{manifest["format"]}', expected '{Format}').");
        var stages = new List<ITransformer>();
        try
        {
            var stageNodes = manifest["stages"] as JsonArray ?? throw new InvalidDataException($"{path}: manifest.json has no stages array.");
            foreach (var node in stageNodes)
            {
                string kind = Text(node, "kind", path), entry = Text(node, "entry", path);
                if (kind == "mlnet")
                {
                    using var buffer = new MemoryStream();
                    using (var stream = (zip.GetEntry(entry) ?? throw new InvalidDataException($"{path}: entry {entry} is missing.")).Open()) stream.CopyTo(buffer);
                    buffer.Position = 0;
                    stages.Add(ml.Model.Load(buffer, out _));
                }
                else if (kind == "seco") stages.Add(ReadStage(ml, zip, entry, path, baseModelPath));
                else throw new InvalidDataException($"{path}: unknown stage kind '{kind}'.");
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or ArgumentException)
        {
            foreach (var stage in stages.OfType<IDisposable>()) stage.Dispose();
            // A settings field of the wrong JSON type (JsonException from Deserialize, InvalidOperationException from
            // GetValue) or a key given twice (ArgumentException from JsonObject).
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
        catch
        {
            foreach (var stage in stages.OfType<IDisposable>()) stage.Dispose();
            throw;
        }
        return stages.Count == 1 ? stages[0] : new TransformerChain<ITransformer>(stages.ToArray());
    }

    /// <summary>
    /// A fingerprint of a base model directory: SHA-256 over config.json and every weight file's name, size and
    /// safetensors header (the header lists every tensor's dtype, shape and offsets; reading it is cheap).
    /// </summary>
    public static string Fingerprint(string modelDirectory)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(File.ReadAllBytes(Path.Combine(modelDirectory, "config.json")));
        foreach (var file in Directory.GetFiles(modelDirectory, "*.safetensors").OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal))
        {
            using var stream = File.OpenRead(file);
            var lengthBytes = new byte[8];
            stream.ReadExactly(lengthBytes);
            long headerLength = Math.Min(BitConverter.ToInt64(lengthBytes), stream.Length - 8);
            var header = new byte[headerLength];
            stream.ReadExactly(header);
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{Path.GetFileName(file)}:{stream.Length}:"));
            hash.AppendData(header);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    static void WriteStage(ZipArchive zip, string prefix, ChunkwiseLoraTransformer stage)
    {
        var settings = JsonSerializer.SerializeToNode(stage.Settings, Json)!.AsObject();
        settings["BaseModelFingerprint"] = Fingerprint(stage.Settings.ModelPath);
        WriteText(zip, prefix + "settings.json", settings.ToJsonString(Json));
        string scratch = Path.Combine(Path.GetTempPath(), "seco-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            if (stage.Settings.FullFineTuning) ModelDirectory.Save(stage.Model, scratch);
            else stage.SaveAdapter(scratch);
            foreach (var file in Directory.GetFiles(scratch))
                zip.CreateEntryFromFile(file, prefix + Path.GetFileName(file), CompressionLevel.Fastest);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }

    static ChunkwiseLoraTransformer ReadStage(MLContext ml, ZipArchive zip, string prefix, string path, string? baseModelPath)
    {
        var json = ReadJson(zip, prefix + "settings.json", path);
        var settings = json.Deserialize<ScoringSettings>(Json) ?? throw new InvalidDataException($"{path}: {prefix}settings.json is empty.");
        string fingerprint = (string?)json["BaseModelFingerprint"] ?? "";
        string modelPath = Path.GetFullPath(baseModelPath ?? settings.ModelPath);
        if (!File.Exists(Path.Combine(modelPath, "config.json")))
            throw new DirectoryNotFoundException($"The base model of {path} was at '{modelPath}', which no longer holds a model. Pass its new location: SecoModel.Load(ml, path, baseModelPath: ...).");
        if (Fingerprint(modelPath) != fingerprint)
            throw new InvalidDataException($"The base model at '{modelPath}' is not the one {path} was trained on: its config.json or weights changed.");
        settings = settings with { ModelPath = modelPath };

        string scratch = Path.Combine(Path.GetTempPath(), "seco-load-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(scratch);
        try
        {
            foreach (var entry in zip.Entries.Where(e => e.FullName.StartsWith(prefix, StringComparison.Ordinal) && e.Name.Length > 0))
                entry.ExtractToFile(Path.Combine(scratch, entry.Name));
            // A stage trained on a GPU loads on whatever GPU this machine has, or on the CPU.
            var device = TensorSettings.ResolveDevice(settings.Device.StartsWith("cuda", StringComparison.Ordinal) ? "auto" : settings.Device);
            var dtype = TensorSettings.ResolveDType(settings.DType, device);
            // The rotary settings the stage was trained with: the adapter's record of them, or a fully fine-tuned stage's config.json.
            var config = ModelConfig.Load(modelPath);
            string savedConfig = Path.Combine(scratch, "config.json");
            config = settings.FullFineTuning && File.Exists(savedConfig)
                ? config.WithRope(JsonNode.Parse(File.ReadAllText(savedConfig)) as JsonObject ?? throw new InvalidDataException($"{path}: {prefix}config.json is not a JSON object."), $"{path}: {prefix}config.json")
                : PeftAdapter.ConfigFor(config, scratch);
            var model = ModelDirectory.Load(modelPath, config, dtype, device);
            try
            {
                try
                {
                    if (settings.FullFineTuning) HuggingFaceCheckpoint.LoadInto(model, scratch, dtype, device);
                    else PeftAdapter.Load(model, scratch);
                }
                catch (FileNotFoundException e)
                {
                    // The weights come from the archive itself: a missing one means the archive is incomplete.
                    throw new InvalidDataException($"{path}: {prefix} lacks {Path.GetFileName(e.FileName)}.", e);
                }
                model.eval();
                // A messages stage renders with the base model's chat template, as it was trained.
                return new ChunkwiseLoraTransformer(model, ModelTokenizer.Load(modelPath), settings with { Device = device.ToString() }, null);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    static void WriteText(ZipArchive zip, string entry, string text)
    {
        using var writer = new StreamWriter(zip.CreateEntry(entry, CompressionLevel.Fastest).Open());
        writer.Write(text);
    }

    static string Text(JsonNode? node, string field, string path) =>
        node is JsonObject o && o[field] is JsonValue v && v.TryGetValue(out string? text)
            ? text : throw new InvalidDataException($"{path}: a stage in manifest.json lacks the string field '{field}'.");

    static JsonObject ReadJson(ZipArchive zip, string entry, string path)
    {
        var found = zip.GetEntry(entry) ?? throw new InvalidDataException($"{path}: entry {entry} is missing.");
        using var reader = new StreamReader(found.Open());
        try { return JsonNode.Parse(reader.ReadToEnd()) as JsonObject ?? throw new InvalidDataException($"{path}: {entry} is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: {entry} is not valid JSON ({e.Message}).", e); }
    }
}
