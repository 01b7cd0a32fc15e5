using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>
/// Loads and saves model weights laid out as Hugging Face does: one <c>model.safetensors</c>, or shards
/// <c>model-00001-of-0000N.safetensors</c> named by <c>model.safetensors.index.json</c>.
/// </summary>
public static class HuggingFaceCheckpoint
{
    /// <summary>The file name of an unsharded checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The file name of the index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private const int ListedNames = 20;

    /// <summary>
    /// Loads a checkpoint into a module's parameters and persistent buffers, matching them by name
    /// (<c>model.layers.0.self_attn.q_proj.weight</c>), one tensor at a time.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Every file header is read and every name and shape checked before any value is written, so a checkpoint that
    /// does not fit leaves the module untouched. Values are copied into the existing tensors under
    /// <c>no_grad</c>, so no second copy of the model is made; host memory beyond the model is at most one tensor.
    /// </para>
    /// <para>
    /// Floating-point tensors are converted to <paramref name="dtype"/> (integer and boolean tensors keep their type)
    /// and moved to <paramref name="device"/>, then copied into the module's tensor, which keeps its own element type
    /// and device. Build the module with <paramref name="dtype"/> on <paramref name="device"/> for the values to
    /// arrive unchanged; a checkpoint stored in bfloat16 and loaded with <see cref="ScalarType.Float32"/> is exact.
    /// </para>
    /// <para><c>model.safetensors</c> is used when present, otherwise <c>model.safetensors.index.json</c> and its shards.</para>
    /// </remarks>
    /// <param name="module">The module to fill.</param>
    /// <param name="directory">The folder that holds the checkpoint.</param>
    /// <param name="dtype">The element type floating-point tensors are converted to on the way in.</param>
    /// <param name="device">The device tensors are moved to on the way in.</param>
    /// <param name="optional">
    /// Module names that may be missing from the checkpoint and then keep their current values: a tied
    /// <c>lm_head.weight</c>, adapter parameters. <see langword="null"/>: every name is required.
    /// </param>
    /// <param name="ignore">
    /// Checkpoint names the module need not have, skipped without reading: <c>rotary_emb.inv_freq</c> in older
    /// checkpoints. <see langword="null"/>: every checkpoint tensor must have a place in the module.
    /// </param>
    /// <returns>Which names were loaded, left missing, and skipped.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder holds no safetensors checkpoint, or the index names a shard that is absent.</exception>
    /// <exception cref="InvalidDataException">
    /// A file or the index is malformed, or the checkpoint does not fit the module: missing, unexpected or
    /// wrongly shaped tensors, all listed in one message (full lists in <see cref="Exception.Data"/>, see <see cref="CheckpointErrors"/>).
    /// </exception>
    public static CheckpointLoadReport LoadInto(nn.Module module, string directory, ScalarType dtype, Device device,
        Func<string, bool>? optional = null, Func<string, bool>? ignore = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(device);
        string fullDirectory = Path.GetFullPath(directory);

        var files = new List<SafeTensorsFile>();
        try
        {
            var sources = OpenCheckpoint(fullDirectory, files);
            var targets = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (name, parameter) in module.named_parameters()) targets[name] = parameter;
            // Non-persistent buffers (rotary tables and the like) are computed, never stored, in PyTorch checkpoints.
            foreach (var (name, buffer) in module.named_buffers(include_nonpersistent: false)) targets.TryAdd(name, buffer);

            var missing = new List<string>();
            var missingOptional = new List<string>();
            var unexpected = new List<string>();
            var ignored = new List<string>();
            var shapeErrors = new List<string>();
            foreach (var name in targets.Keys.Order(StringComparer.Ordinal))
            {
                if (sources.ContainsKey(name)) continue;
                (optional?.Invoke(name) == true ? missingOptional : missing).Add(name);
            }
            foreach (var (name, (file, info)) in sources.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                if (!targets.TryGetValue(name, out var target))
                {
                    (ignore?.Invoke(name) == true ? ignored : unexpected).Add(name);
                    continue;
                }
                if (!info.Shape.SequenceEqual(target.shape))
                {
                    shapeErrors.Add($"'{name}': module expects {SafeTensorsFile.FormatShape(target.shape)}, " +
                        $"{Path.GetFileName(file.FilePath)} holds {SafeTensorsFile.FormatShape(info.Shape)}");
                }
            }
            if (missing.Count + unexpected.Count + shapeErrors.Count > 0)
            {
                throw MismatchError(fullDirectory, missing, unexpected, shapeErrors);
            }

            var loaded = new List<string>();
            using (no_grad())
            {
                foreach (var (name, (file, info)) in sources.OrderBy(kv => kv.Value.File.FilePath, StringComparer.Ordinal).ThenBy(kv => kv.Value.Info.DataBegin))
                {
                    if (!targets.TryGetValue(name, out var target)) continue;
                    var arrivingType = IsFloating(info.DType) ? dtype : info.DType;
                    if (arrivingType == target.dtype && SameDevice(device, target.device))
                    {
                        file.ReadInto(name, target);
                    }
                    else
                    {
                        using var value = file.ReadTensor(name, arrivingType, device);
                        target.copy_(value);
                    }
                    loaded.Add(name);
                }
            }
            loaded.Sort(StringComparer.Ordinal);
            return new CheckpointLoadReport(loaded, missingOptional, ignored, files.Select(f => f.FilePath).ToList());
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    /// <summary>
    /// Saves tensors as Hugging Face does: one <c>model.safetensors</c>, or, when their total size exceeds
    /// <paramref name="maxShardBytes"/>, shards <c>model-00001-of-0000N.safetensors</c> and a
    /// <c>model.safetensors.index.json</c> holding <c>metadata.total_size</c> and <c>weight_map</c>.
    /// </summary>
    /// <remarks>
    /// Tensors fill shards in the order given; a shard is closed when the next tensor would take it past the limit,
    /// and a tensor larger than the limit gets a shard of its own (the <c>huggingface_hub</c> rule). Every file is
    /// written to a temporary name and renamed, the index last; checkpoint files of an earlier save in the folder
    /// that this save does not replace (<c>model.safetensors</c>, older shards, the index) are deleted afterwards.
    /// Each file's header carries <c>{"format": "pt"}</c>.
    /// </remarks>
    /// <param name="tensors">Names and tensors, on any device; enumerated once.</param>
    /// <param name="directory">The folder to write to; created if absent.</param>
    /// <param name="dtype">Floating-point tensors are stored in this element type when set; others keep theirs.</param>
    /// <param name="maxShardBytes">The largest shard size in tensor bytes; <see langword="null"/> for a single file.</param>
    /// <returns>The full paths of the files written: the shards in order, then the index if any.</returns>
    public static IReadOnlyList<string> Save(IEnumerable<(string name, Tensor tensor)> tensors, string directory,
        ScalarType? dtype = null, long? maxShardBytes = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (maxShardBytes is <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "The shard size must be positive.");
        string fullDirectory = Path.GetFullPath(directory);
        Directory.CreateDirectory(fullDirectory);

        var entries = new List<(string name, Tensor tensor)>();
        var sizes = new List<long>();
        long totalBytes = 0;
        foreach (var entry in tensors)
        {
            ArgumentNullException.ThrowIfNull(entry.tensor, nameof(tensors));
            var type = dtype is { } d && entry.tensor.is_floating_point() ? d : entry.tensor.dtype;
            long bytes = checked(entry.tensor.numel() * SafeTensorsDType.SizeOf(type));
            totalBytes += bytes;
            entries.Add(entry);
            sizes.Add(bytes);
        }
        var shards = PlanShards(sizes, maxShardBytes).Select(shard => shard.Select(i => entries[i]).ToList()).ToList();

        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        var written = new List<string>();
        if (shards.Count == 1)
        {
            string path = Path.Combine(fullDirectory, SingleFileName);
            SafeTensorsFile.Write(path, shards[0], metadata, dtype);
            written.Add(path);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string fileName = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                string path = Path.Combine(fullDirectory, fileName);
                SafeTensorsFile.Write(path, shards[i], metadata, dtype);
                foreach (var (name, _) in shards[i])
                {
                    if (!weightMap.TryAdd(name, fileName)) throw new ArgumentException($"Tensor name '{name}' appears twice.", nameof(tensors));
                }
                written.Add(path);
            }
            string indexPath = Path.Combine(fullDirectory, IndexFileName);
            AtomicFile.Write(indexPath, BuildIndex(totalBytes, weightMap));
            written.Add(indexPath);
        }
        DeleteStaleFiles(fullDirectory, written);
        return written;
    }

    private static Dictionary<string, (SafeTensorsFile File, SafeTensorInfo Info)> OpenCheckpoint(string directory, List<SafeTensorsFile> opened)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"The checkpoint folder {directory} does not exist.");
        var sources = new Dictionary<string, (SafeTensorsFile, SafeTensorInfo)>(StringComparer.Ordinal);

        string single = Path.Combine(directory, SingleFileName);
        if (File.Exists(single))
        {
            var file = SafeTensorsFile.Open(single);
            opened.Add(file);
            foreach (var info in file.Tensors.Values) sources.Add(info.Name, (file, info));
            return sources;
        }

        string indexPath = Path.Combine(directory, IndexFileName);
        if (!File.Exists(indexPath)) throw NoCheckpointError(directory);

        var weightMap = ReadIndex(indexPath);
        var byShard = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (var (name, shard) in weightMap)
        {
            if (!byShard.TryGetValue(shard, out var file))
            {
                string shardPath = Path.Combine(directory, shard);
                if (!File.Exists(shardPath))
                {
                    throw new FileNotFoundException($"{indexPath} maps tensor '{name}' to shard {shard}, which is not in {directory}.", shardPath);
                }
                file = SafeTensorsFile.Open(shardPath);
                opened.Add(file);
                byShard.Add(shard, file);
            }
            if (!file.Tensors.TryGetValue(name, out var info))
            {
                throw CheckpointErrors.Format(file.FilePath, $"{indexPath} maps tensor '{name}' to {file.FilePath}, which does not hold it.", name);
            }
            sources.Add(name, (file, info));
        }
        return sources;
    }

    /// <summary>
    /// Hugging Face's sharding rule over tensor sizes in order: a tensor larger than the limit gets a shard of its own;
    /// otherwise a new shard starts when the next tensor would exceed the limit. Returns the tensor indices per shard.
    /// </summary>
    public static List<List<int>> PlanShards(IReadOnlyList<long> sizes, long? maxShardBytes)
    {
        var shards = new List<List<int>>();
        var current = new List<int>();
        long currentBytes = 0;
        for (int i = 0; i < sizes.Count; i++)
        {
            if (maxShardBytes is { } max)
            {
                if (sizes[i] > max)
                {
                    shards.Add([i]);
                    continue;
                }
                if (currentBytes + sizes[i] > max)
                {
                    shards.Add(current);
                    current = [];
                    currentBytes = 0;
                }
            }
            current.Add(i);
            currentBytes += sizes[i];
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);
        return shards;
    }

    private static List<(string Name, string Shard)> ReadIndex(string indexPath)
    {
        byte[] bytes = File.ReadAllBytes(indexPath);
        // JsonDocument checks string contents only when they are read; fail here with the file named instead.
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw CheckpointErrors.Format(indexPath, $"{indexPath} is not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw CheckpointErrors.Format(indexPath, $"{indexPath} is not valid JSON: {e.Message}", inner: e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
            {
                throw CheckpointErrors.Format(indexPath, $"{indexPath} has no 'weight_map' object.");
            }
            var entries = new List<(string, string)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw CheckpointErrors.Format(indexPath, $"'weight_map' entry '{entry.Name}' in {indexPath} is not a file name.", entry.Name);
                }
                string shard = entry.Value.GetString()!;
                // The index is data from elsewhere: it must not steer reads outside the checkpoint folder.
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or "..")
                {
                    throw CheckpointErrors.Format(indexPath, $"'weight_map' in {indexPath} maps '{entry.Name}' to '{shard}', which is not a plain file name.", entry.Name);
                }
                if (!seen.Add(entry.Name))
                {
                    throw CheckpointErrors.Format(indexPath, $"'weight_map' in {indexPath} lists '{entry.Name}' twice.", entry.Name);
                }
                entries.Add((entry.Name, shard));
            }
            return entries;
        }
    }

    private static FileNotFoundException NoCheckpointError(string directory)
    {
        var message = new StringBuilder($"No {SingleFileName} or {IndexFileName} in {directory}.");
        if (File.Exists(Path.Combine(directory, "pytorch_model.bin")) || File.Exists(Path.Combine(directory, "pytorch_model.bin.index.json")))
        {
            message.Append(" The folder holds pytorch_model.bin, a pickled PyTorch checkpoint, which is not supported: convert it to safetensors " +
                "(in Python: model.save_pretrained(folder, safe_serialization=True)).");
        }
        var others = Directory.EnumerateFiles(directory, "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).Take(5).ToList();
        if (others.Count > 0) message.Append($" Other safetensors files there: {string.Join(", ", others)}.");
        return new FileNotFoundException(message.ToString(), Path.Combine(directory, SingleFileName));
    }

    private static InvalidDataException MismatchError(string directory, List<string> missing, List<string> unexpected, List<string> shapeErrors)
    {
        var parts = new List<string>();
        if (missing.Count > 0) parts.Add($"{missing.Count} missing (in the module, not in the checkpoint): {Listed(missing)}");
        if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected (in the checkpoint, not in the module): {Listed(unexpected)}");
        if (shapeErrors.Count > 0) parts.Add($"{shapeErrors.Count} shape mismatch(es): {Listed(shapeErrors)}");
        var e = CheckpointErrors.Format(directory, $"The checkpoint in {directory} does not fit the module. " + string.Join("; ", parts) + ".");
        e.Data[CheckpointErrors.MissingKey] = missing.ToArray();
        e.Data[CheckpointErrors.UnexpectedKey] = unexpected.ToArray();
        return e;
    }

    private static string Listed(List<string> names) =>
        string.Join(", ", names.Take(ListedNames)) + (names.Count > ListedNames ? $", ... ({names.Count - ListedNames} more)" : "");

    private static byte[] BuildIndex(long totalBytes, SortedDictionary<string, string> weightMap)
    {
        // Same shape as transformers' json.dumps(index, indent=2, sort_keys=True) + "\n".
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions
        {
            Indented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalBytes);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap) json.WriteString(name, file);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    private static void DeleteStaleFiles(string directory, List<string> written)
    {
        var keep = new HashSet<string>(written, StringComparer.Ordinal);
        var stale = Directory.EnumerateFiles(directory, "model-*-of-*.safetensors")
            .Where(p => System.Text.RegularExpressions.Regex.IsMatch(Path.GetFileName(p), @"^model-\d{5}-of-\d{5}\.safetensors$"))
            .Append(Path.Combine(directory, SingleFileName))
            .Append(Path.Combine(directory, IndexFileName))
            .Where(p => !keep.Contains(p) && File.Exists(p));
        foreach (var path in stale.ToList()) File.Delete(path);
    }

    private static bool IsFloating(ScalarType type) =>
        type is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    private static bool SameDevice(Device a, Device b) =>
        a.type == b.type && (a.type == DeviceType.CPU || Math.Max(a.index, 0) == Math.Max(b.index, 0));
}
