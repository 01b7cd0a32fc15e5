using System.Buffers.Binary;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a UTF-8 JSON header that maps
/// tensor names to dtype, shape and byte range, then the raw tensor bytes.
/// </summary>
/// <remarks>
/// <see cref="Open"/> reads and validates only the header; tensor bytes are read one tensor at a time, so loading a
/// checkpoint never needs more host memory than its largest tensor. Reads use positional I/O, so one open file may
/// serve several threads. Errors in the file are reported as <see cref="InvalidDataException"/> built by <see cref="CheckpointErrors"/>.
/// </remarks>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>The header key that holds free-form string metadata rather than a tensor.</summary>
    public const string MetadataKey = "__metadata__";

    // The reference implementation refuses headers above 100 MB; a larger value is far more likely to be garbage
    // than a real header, and honouring it would allocate that much before failing.
    private const long MaxHeaderLength = 100_000_000;

    /// <summary>
    /// Bytes moved per read or write call by default: span lengths are ints, and a single multi-GB embedding matrix
    /// must still load, so tensor bytes move in slices.
    /// </summary>
    public const long DefaultSliceBytes = 64L << 20;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;
    private readonly long _bufferStart;
    private readonly long _sliceBytes;

    private SafeTensorsFile(string path, SafeFileHandle handle, long bufferStart, Dictionary<string, SafeTensorInfo> tensors,
        IReadOnlyDictionary<string, string> metadata, long sliceBytes)
    {
        FilePath = path;
        _handle = handle;
        _bufferStart = bufferStart;
        _sliceBytes = sliceBytes;
        _tensors = tensors;
        Metadata = metadata;
        TensorNames = tensors.Values.OrderBy(t => t.DataBegin).ThenBy(t => t.Name, StringComparer.Ordinal).Select(t => t.Name).ToList();
    }

    /// <summary>The full path of the file.</summary>
    public string FilePath { get; }

    /// <summary>The header's <c>__metadata__</c> entries; empty when the header has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensor names, in the order their bytes appear in the file.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>Every tensor's header entry, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    /// <summary>Whether the file holds a tensor of that name.</summary>
    /// <param name="name">The tensor name.</param>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of one tensor.</summary>
    /// <param name="name">The tensor name.</param>
    /// <exception cref="KeyNotFoundException">The file holds no tensor of that name.</exception>
    public SafeTensorInfo GetInfo(string name) =>
        _tensors.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{FilePath} holds no tensor named '{name}'.");

    /// <summary>Opens a safetensors file and validates its header without reading the tensor bytes.</summary>
    /// <param name="path">The file to open.</param>
    /// <param name="sliceBytes">Bytes read per call when a tensor is read (<see cref="DefaultSliceBytes"/>).</param>
    /// <returns>The open file; dispose it to close the handle.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static SafeTensorsFile Open(string path, long sliceBytes = DefaultSliceBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sliceBytes);
        EnsureLittleEndianHost();
        string fullPath = Path.GetFullPath(path);
        var handle = File.OpenHandle(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            var (tensors, metadata, bufferStart) = ReadHeader(fullPath, handle);
            return new SafeTensorsFile(fullPath, handle, bufferStart, tensors, metadata, sliceBytes);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads one tensor's bytes into a new tensor, then converts it to the requested element type and device.
    /// </summary>
    /// <param name="name">The tensor name.</param>
    /// <param name="dtype">The element type of the result; the file's own when <see langword="null"/>.</param>
    /// <param name="device">The device of the result; the CPU when <see langword="null"/>.</param>
    /// <returns>A new tensor the caller owns.</returns>
    /// <exception cref="KeyNotFoundException">The file holds no tensor of that name.</exception>
    /// <exception cref="InvalidDataException">The file ends before the tensor's bytes do.</exception>
    public Tensor ReadTensor(string name, ScalarType? dtype = null, Device? device = null)
    {
        var info = GetInfo(name);
        var raw = empty(info.Shape.ToArray(), info.DType, CPU);
        try
        {
            ReadBytes(info, raw);
            bool sameType = dtype is null || dtype == info.DType;
            bool onCpu = device is null || device.type == DeviceType.CPU;
            if (sameType && onCpu) return raw;
            // One call does both steps, and on an accelerator the conversion runs there rather than on the host.
            var converted = raw.to(dtype ?? info.DType, device ?? CPU);
            raw.Dispose();
            return converted;
        }
        catch
        {
            raw.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads one tensor into an existing tensor of the same shape, converting element type and device as needed.
    /// </summary>
    /// <remarks>
    /// A contiguous CPU destination of the file's element type receives the bytes directly, with no temporary copy.
    /// Gradients are not tracked.
    /// </remarks>
    /// <param name="name">The tensor name.</param>
    /// <param name="destination">The tensor to overwrite.</param>
    /// <exception cref="KeyNotFoundException">The file holds no tensor of that name.</exception>
    /// <exception cref="InvalidDataException">The shapes differ, or the file ends before the tensor's bytes do.</exception>
    public void ReadInto(string name, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        var info = GetInfo(name);
        if (!info.Shape.SequenceEqual(destination.shape))
        {
            throw CheckpointErrors.Format(FilePath,
                $"Tensor '{name}' in {FilePath} has shape {FormatShape(info.Shape)} but the destination expects {FormatShape(destination.shape)}.", name);
        }
        using var noGrad = no_grad();
        if (destination.device_type == DeviceType.CPU && destination.dtype == info.DType && destination.is_contiguous())
        {
            ReadBytes(info, destination);
            return;
        }
        using var source = ReadTensor(name, device: destination.device);
        destination.copy_(source);
    }

    /// <summary>
    /// Writes tensors to a safetensors file. The file appears complete or not at all: bytes go to a temporary file in
    /// the same folder that is renamed over <paramref name="path"/> at the end.
    /// </summary>
    /// <remarks>
    /// Tensors may live on any device and need not be contiguous; each is copied to the host in turn, so the extra
    /// host memory is one tensor at a time. Tensors are laid out largest element size first, so every tensor starts
    /// at a multiple of its element size, as in the reference implementation.
    /// </remarks>
    /// <param name="path">The file to write; replaced if it exists.</param>
    /// <param name="tensors">Names and tensors; names must be unique, non-empty and not <c>__metadata__</c>.</param>
    /// <param name="metadata">String metadata for the header's <c>__metadata__</c> entry, if any.</param>
    /// <param name="sliceBytes">Bytes written per call (<see cref="DefaultSliceBytes"/>).</param>
    /// <exception cref="ArgumentException">A name is invalid or repeated, or an element type cannot be stored.</exception>
    public static void Write(string path, IEnumerable<(string name, Tensor tensor)> tensors, IDictionary<string, string>? metadata = null, long sliceBytes = DefaultSliceBytes) =>
        Write(path, tensors, metadata, floatingDType: null, sliceBytes);

    /// <summary>As the public overload; floating-point tensors are converted to <paramref name="floatingDType"/> when it is set.</summary>
    /// <returns>The number of tensor bytes written.</returns>
    internal static long Write(string path, IEnumerable<(string name, Tensor tensor)> tensors, IDictionary<string, string>? metadata,
        ScalarType? floatingDType, long sliceBytes = DefaultSliceBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sliceBytes);
        ArgumentNullException.ThrowIfNull(tensors);
        EnsureLittleEndianHost();
        string fullPath = Path.GetFullPath(path);

        var entries = new List<(string Name, Tensor Tensor, ScalarType Type, long[] Shape, long Bytes)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name)) throw new ArgumentException("A tensor name is empty.", nameof(tensors));
            if (name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved and cannot name a tensor.", nameof(tensors));
            if (!seen.Add(name)) throw new ArgumentException($"Tensor name '{name}' appears twice.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            var type = floatingDType is { } f && tensor.is_floating_point() ? f : tensor.dtype;
            int size;
            try
            {
                size = SafeTensorsDType.SizeOf(type);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"Tensor '{name}': {e.Message}", nameof(tensors), e);
            }
            entries.Add((name, tensor, type, tensor.shape, checked(tensor.numel() * size)));
        }
        entries = entries
            .OrderByDescending(e => SafeTensorsDType.SizeOf(e.Type))
            .ThenBy(e => e.Name, StringComparer.Ordinal)
            .ToList();

        byte[] header = BuildHeader(entries.Select(e => (e.Name, e.Type, e.Shape, e.Bytes)), metadata);

        long total = 0;
        AtomicFile.Write(fullPath, "the safetensors file", stream =>
        {
            Span<byte> lengthPrefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)header.Length);
            stream.Write(lengthPrefix);
            stream.Write(header);
            using var noGrad = no_grad();
            foreach (var entry in entries)
            {
                WriteTensorBytes(stream, entry.Tensor, entry.Type, sliceBytes);
                total += entry.Bytes;
            }
        });
        return total;
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();

    internal static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    private static void WriteTensorBytes(Stream stream, Tensor tensor, ScalarType type, long sliceBytes)
    {
        if (tensor.numel() == 0) return;
        using var scope = NewDisposeScope();
        var t = tensor;
        if (t.dtype != type) t = t.to(type);
        if (t.device_type != DeviceType.CPU) t = t.cpu();
        if (!t.is_contiguous()) t = t.contiguous();
        var flat = t.reshape(-1);
        long count = flat.numel();
        long chunk = Math.Max(1, sliceBytes / flat.element_size());
        for (long start = 0; start < count; start += chunk)
        {
            using var part = flat.narrow(0, start, Math.Min(chunk, count - start));
            stream.Write(part.bytes);
        }
    }

    private void ReadBytes(SafeTensorInfo info, Tensor destination)
    {
        long count = info.ElementCount;
        if (count == 0) return;
        using var flat = destination.view(-1);
        long elementSize = flat.element_size();
        long chunk = Math.Max(1, _sliceBytes / elementSize);
        long offset = _bufferStart + info.DataBegin;
        for (long start = 0; start < count; start += chunk)
        {
            using var part = flat.narrow(0, start, Math.Min(chunk, count - start));
            Span<byte> span = part.bytes;
            while (span.Length > 0)
            {
                int read = RandomAccess.Read(_handle, span, offset);
                if (read == 0)
                {
                    throw CheckpointErrors.Format(FilePath,
                        $"{FilePath} ends inside the bytes of tensor '{info.Name}' (was the file truncated or changed after it was opened?).", info.Name);
                }
                offset += read;
                span = span[read..];
            }
        }
    }

    private static byte[] BuildHeader(IEnumerable<(string Name, ScalarType Type, long[] Shape, long Bytes)> entries, IDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        // Relaxed escaping keeps non-ASCII names readable; the output is still valid JSON.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, type, shape, bytes) in entries)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", SafeTensorsDType.NameOf(type));
                json.WriteStartArray("shape");
                foreach (long d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        // Padding to 8 bytes keeps the buffer aligned for memory-mapping readers; spaces keep the JSON valid.
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    private static (Dictionary<string, SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata, long BufferStart) ReadHeader(
        string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8)
        {
            throw CheckpointErrors.Format(path, $"{path} is {fileLength} bytes long, too short to hold the 8-byte safetensors header length.");
        }
        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(path, handle, prefix, 0);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength == 0 || headerLength > (ulong)(fileLength - 8))
        {
            throw CheckpointErrors.Format(path,
                $"{path} declares a {headerLength}-byte header but only {fileLength - 8} bytes follow the length prefix (truncated or not a safetensors file).");
        }
        if (headerLength > MaxHeaderLength)
        {
            throw CheckpointErrors.Format(path, $"{path} declares a {headerLength}-byte header, above the {MaxHeaderLength}-byte limit.");
        }
        var headerBytes = new byte[(int)headerLength];
        ReadExactly(path, handle, headerBytes, 8);
        long bufferStart = 8 + (long)headerLength;
        long bufferLength = fileLength - bufferStart;

        // JsonDocument checks string contents only when they are read, which would surface as a stray
        // InvalidOperationException later on.
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes))
        {
            throw CheckpointErrors.Format(path, $"The header of {path} is not valid UTF-8.");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw CheckpointErrors.Format(path, $"The header of {path} is not valid UTF-8 JSON: {e.Message}", inner: e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw CheckpointErrors.Format(path, $"The header of {path} is a JSON {root.ValueKind}, not an object.");
            }
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
            bool sawMetadata = false;
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    if (sawMetadata) throw CheckpointErrors.Format(path, $"The header of {path} has two '{MetadataKey}' entries.");
                    sawMetadata = true;
                    metadata = ParseMetadata(path, property.Value);
                    continue;
                }
                if (tensors.ContainsKey(property.Name))
                {
                    throw CheckpointErrors.Format(path, $"The header of {path} lists tensor '{property.Name}' twice.", property.Name);
                }
                tensors.Add(property.Name, ParseTensor(path, property.Name, property.Value, bufferLength));
            }
            CheckNoOverlap(path, tensors.Values);
            return (tensors, metadata, bufferStart);
        }
    }

    private static Dictionary<string, string> ParseMetadata(string path, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw CheckpointErrors.Format(path, $"'{MetadataKey}' in {path} is a JSON {value.ValueKind}, not an object of strings.");
        }
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw CheckpointErrors.Format(path, $"'{MetadataKey}' entry '{entry.Name}' in {path} is a JSON {entry.Value.ValueKind}, not a string.");
            }
            metadata[entry.Name] = entry.Value.GetString()!;
        }
        return metadata;
    }

    private static SafeTensorInfo ParseTensor(string path, string name, JsonElement value, long bufferLength)
    {
        InvalidDataException Fail(string what) => CheckpointErrors.Format(path, $"Tensor '{name}' in {path}: {what}", name);

        if (value.ValueKind != JsonValueKind.Object) throw Fail($"the entry is a JSON {value.ValueKind}, not an object.");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw Fail("'dtype' is missing or not a string.");
        }
        string dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDType.TryParse(dtypeName, out var dtype, out int elementSize))
        {
            string kind = SafeTensorsDType.IsKnownUnsupported(dtypeName) ? "unsupported" : "unknown";
            throw Fail($"{kind} dtype '{dtypeName}' (supported: {string.Join(", ", SafeTensorsDType.SupportedNames)}).");
        }

        var shape = ReadIntegers(value, "shape", Fail);
        var offsets = ReadIntegers(value, "data_offsets", Fail);
        if (offsets.Length != 2) throw Fail($"'data_offsets' has {offsets.Length} entries, not 2.");
        long begin = offsets[0], end = offsets[1];
        if (end < begin) throw Fail($"'data_offsets' [{begin}, {end}] ends before it begins.");

        long expectedBytes;
        try
        {
            expectedBytes = elementSize;
            foreach (long d in shape) expectedBytes = checked(expectedBytes * d);
        }
        catch (OverflowException)
        {
            throw Fail($"shape {FormatShape(shape)} is too large.");
        }
        if (expectedBytes != end - begin)
        {
            throw Fail($"shape {FormatShape(shape)} of {dtypeName} needs {expectedBytes} bytes but 'data_offsets' [{begin}, {end}] span {end - begin}.");
        }
        if (end > bufferLength)
        {
            throw Fail($"'data_offsets' [{begin}, {end}] reach past the end of the {bufferLength}-byte data buffer (truncated file?).");
        }
        return new SafeTensorInfo(name, dtypeName, dtype, shape, begin, end);
    }

    private static long[] ReadIntegers(JsonElement entry, string property, Func<string, InvalidDataException> fail)
    {
        if (!entry.TryGetProperty(property, out var array) || array.ValueKind != JsonValueKind.Array)
        {
            throw fail($"'{property}' is missing or not an array.");
        }
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v) || v < 0)
            {
                throw fail($"'{property}' holds {item.GetRawText()}, not a non-negative integer.");
            }
            values[i++] = v;
        }
        return values;
    }

    private static void CheckNoOverlap(string path, IEnumerable<SafeTensorInfo> tensors)
    {
        // Empty tensors occupy no bytes, so they cannot overlap anything, wherever their offsets point.
        SafeTensorInfo? previous = null;
        foreach (var t in tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.DataBegin))
        {
            if (previous is not null && t.DataBegin < previous.DataEnd)
            {
                throw CheckpointErrors.Format(path,
                    $"Tensors '{previous.Name}' [{previous.DataBegin}, {previous.DataEnd}] and '{t.Name}' [{t.DataBegin}, {t.DataEnd}] in {path} overlap.",
                    t.Name);
            }
            previous = t;
        }
    }

    private static void ReadExactly(string path, SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        while (buffer.Length > 0)
        {
            int read = RandomAccess.Read(handle, buffer, offset);
            if (read == 0) throw CheckpointErrors.Format(path, $"{path} ended while its header was being read.");
            offset += read;
            buffer = buffer[read..];
        }
    }

    private static void EnsureLittleEndianHost()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors stores little-endian bytes; big-endian hosts are not supported.");
        }
    }
}
