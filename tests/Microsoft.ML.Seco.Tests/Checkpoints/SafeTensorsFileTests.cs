using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Seco.Checkpoints;
using TorchSharp;
using static Microsoft.ML.Seco.Tests.Checkpoints.CheckpointTestSupport;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Checkpoints;

[TestClass]
public sealed class SafeTensorsFileTests
{
    private string _dir = "";

    [TestInitialize]
    public void Setup() => _dir = Directory.CreateTempSubdirectory("seco-st-").FullName;

    [TestCleanup]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private string Put(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static InvalidDataException OpenFails(string path)
    {
        var e = Assert.ThrowsExactly<InvalidDataException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message, "the error must name the file");
        return e;
    }

    [TestMethod]
    public void HandBuiltFileOfEveryDTypeReadsBack()
    {
        // Laid out by hand from the specification, header deliberately not padded, tensors listed out of order.
        const string header = """
            {"b":{"dtype":"I64","shape":[2],"data_offsets":[12,28]},
             "a":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]},
             "__metadata__":{"format":"pt","note":"hand-made"},
             "h":{"dtype":"F16","shape":[3],"data_offsets":[28,34]},
             "g":{"dtype":"BF16","shape":[3],"data_offsets":[34,40]},
             "f":{"dtype":"BOOL","shape":[2],"data_offsets":[40,42]},
             "u":{"dtype":"U8","shape":[1],"data_offsets":[42,43]},
             "i":{"dtype":"I8","shape":[1],"data_offsets":[43,44]},
             "w":{"dtype":"I32","shape":[1],"data_offsets":[44,48]},
             "d":{"dtype":"F64","shape":[],"data_offsets":[48,56]},
             "e":{"dtype":"F32","shape":[0,5],"data_offsets":[56,56]}}
            """;
        var longs = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(longs, -5);
        BinaryPrimitives.WriteInt64LittleEndian(longs.AsSpan(8), long.MaxValue);
        var int32 = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(int32, -123456);
        var f64 = new byte[8];
        BinaryPrimitives.WriteDoubleLittleEndian(f64, Math.PI);
        var buffer = Concat(
            Floats(1f, -2.5f, 3.25f), longs,
            UInt16s(0x3E00, 0xC080, 0x2E66),   // F16: 1.5, -2.25, 0.0999755859375
            UInt16s(0x3FC0, 0xC010, 0x3DCD),   // BF16: 1.5, -2.25, 0.10009765625
            [1, 0], [200], [unchecked((byte)-7)], int32, f64);
        string path = Put("hand.safetensors", RawFile(header, buffer));

        using var file = SafeTensorsFile.Open(path);
        Assert.AreEqual("hand-made", file.Metadata["note"]);
        CollectionAssert.AreEqual(new[] { "a", "b", "h", "g", "f", "u", "i", "w", "d", "e" }, file.TensorNames.ToArray());
        Assert.AreEqual(ScalarType.BFloat16, file.GetInfo("g").DType);

        using (var a = file.ReadTensor("a"))
        {
            CollectionAssert.AreEqual(new long[] { 1, 3 }, a.shape);
            CollectionAssert.AreEqual(new[] { 1f, -2.5f, 3.25f }, a.data<float>().ToArray());
        }
        using (var b = file.ReadTensor("b")) CollectionAssert.AreEqual(new[] { -5L, long.MaxValue }, b.data<long>().ToArray());
        using (var h = file.ReadTensor("h", ScalarType.Float32))
            CollectionAssert.AreEqual(new[] { 1.5f, -2.25f, 0.0999755859375f }, h.data<float>().ToArray());
        using (var g = file.ReadTensor("g", ScalarType.Float32))
            CollectionAssert.AreEqual(new[] { 1.5f, -2.25f, 0.10009765625f }, g.data<float>().ToArray());
        using (var g = file.ReadTensor("g")) CollectionAssert.AreEqual(UInt16s(0x3FC0, 0xC010, 0x3DCD), RawBytes(g), "bf16 bits must survive");
        using (var f = file.ReadTensor("f")) CollectionAssert.AreEqual(new[] { true, false }, f.data<bool>().ToArray());
        using (var u = file.ReadTensor("u")) Assert.AreEqual((byte)200, u.data<byte>()[0]);
        using (var i = file.ReadTensor("i")) Assert.AreEqual((sbyte)-7, i.data<sbyte>()[0]);
        using (var w = file.ReadTensor("w")) Assert.AreEqual(-123456, w.data<int>()[0]);
        using (var d = file.ReadTensor("d"))
        {
            Assert.AreEqual(0, d.dim());
            Assert.AreEqual(Math.PI, d.item<double>());
        }
        using (var e = file.ReadTensor("e")) CollectionAssert.AreEqual(new long[] { 0, 5 }, e.shape);
    }

    [TestMethod]
    public void WriterFollowsTheSpecification()
    {
        string path = Path.Combine(_dir, "w.safetensors");
        using var a = tensor(new[] { 1f, -2.25f, 0.1f });
        using var bf = tensor(new[] { 1.5f, -2.25f, 0.1f }).to(ScalarType.BFloat16);
        using var ids = tensor(new long[] { 7, -8 });
        SafeTensorsFile.Write(path, [("x.a", a), ("x.bf", bf), ("ids", ids)], new Dictionary<string, string> { ["format"] = "pt" });

        // Parse the bytes without the reader under test.
        byte[] bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.AreEqual(0, (8 + n) % 8, "the header is padded so the buffer starts 8-aligned");
        string json = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.AreEqual(json.TrimEnd(' '), json.TrimEnd(' ').Trim(), "padding is trailing spaces");
        using var header = JsonDocument.Parse(json);
        Assert.AreEqual("pt", header.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
        byte[] buffer = bytes[(int)(8 + n)..];
        byte[] Slice(string name)
        {
            var e = header.RootElement.GetProperty(name);
            var off = e.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            return buffer[off[0]..off[1]];
        }
        Assert.AreEqual("BF16", header.RootElement.GetProperty("x.bf").GetProperty("dtype").GetString());
        Assert.AreEqual("I64", header.RootElement.GetProperty("ids").GetProperty("dtype").GetString());
        CollectionAssert.AreEqual(Floats(1f, -2.25f, 0.1f), Slice("x.a"));
        CollectionAssert.AreEqual(UInt16s(0x3FC0, 0xC010, 0x3DCD), Slice("x.bf"));
        var idBytes = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(idBytes, 7);
        BinaryPrimitives.WriteInt64LittleEndian(idBytes.AsSpan(8), -8);
        CollectionAssert.AreEqual(idBytes, Slice("ids"));
        Assert.AreEqual(bytes.Length, 8 + n + 3 * 4 + 3 * 2 + 16, "no stray bytes");
        Assert.HasCount(1, Directory.GetFiles(_dir), "the temporary file is gone");
    }

    [TestMethod]
    public void NonContiguousTensorsAreWrittenRowMajor()
    {
        string path = Path.Combine(_dir, "t.safetensors");
        using var m = arange(6, ScalarType.Float64).reshape(2, 3);
        using var t = m.t();
        SafeTensorsFile.Write(path, [("t", t)], null);
        using var file = SafeTensorsFile.Open(path);
        using var back = file.ReadTensor("t");
        CollectionAssert.AreEqual(new long[] { 3, 2 }, back.shape);
        CollectionAssert.AreEqual(new double[] { 0, 3, 1, 4, 2, 5 }, back.data<double>().ToArray());
    }

    [TestMethod]
    public void TensorsLargerThanOneSliceMoveInPieces()
    {
        const long slice = 12; // 3 floats, 1.5 doubles: slices end mid-tensor and the last one is short
        string path = Path.Combine(_dir, "sliced.safetensors");
        using var f = arange(11, ScalarType.Float32).reshape(11, 1);
        using var d = arange(5, ScalarType.Float64) * 0.5;
        SafeTensorsFile.Write(path, [("f", f), ("d", d)], null, sliceBytes: slice);
        using var file = SafeTensorsFile.Open(path, sliceBytes: slice);
        using var f2 = file.ReadTensor("f");
        using var d2 = file.ReadTensor("d");
        CollectionAssert.AreEqual(RawBytes(f), RawBytes(f2));
        CollectionAssert.AreEqual(RawBytes(d), RawBytes(d2));
    }

    [TestMethod]
    public void ReadIntoAndConversionsKeepValues()
    {
        string path = Path.Combine(_dir, "c.safetensors");
        using var a = tensor(new[] { 1.5f, -2.25f, 0.1f, 8f }).reshape(2, 2);
        SafeTensorsFile.Write(path, [("a", a)], null);
        using var file = SafeTensorsFile.Open(path);
        using var direct = zeros(2, 2);
        file.ReadInto("a", direct);
        CollectionAssert.AreEqual(RawBytes(a), RawBytes(direct));
        using var asDouble = zeros(new long[] { 2, 2 }, ScalarType.Float64);
        file.ReadInto("a", asDouble);
        CollectionAssert.AreEqual(new[] { 1.5, -2.25, (double)0.1f, 8 }, asDouble.data<double>().ToArray());
        using var wrong = zeros(4);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => file.ReadInto("a", wrong));
        Assert.Contains("'a'", e.Message);
        Assert.Contains("[2, 2]", e.Message);
        Assert.Contains("[4]", e.Message);
    }

    [TestMethod]
    public void ShortFileIsRejected() =>
        OpenFails(Put("short.safetensors", [1, 2, 3]));

    [TestMethod]
    public void HeaderLengthBeyondTheFileIsRejected()
    {
        string path = Put("long.safetensors", RawFile("{}", [], declaredHeaderLength: 1000));
        Assert.Contains("1000", OpenFails(path).Message);
    }

    [TestMethod]
    public void InvalidJsonIsRejected()
    {
        Assert.Contains("JSON", OpenFails(Put("json.safetensors", RawFile("{\"a\": {\"dtype\": ", []))).Message);
        OpenFails(Put("array.safetensors", RawFile("[1, 2]", [])));
        // {"\xFF":1}: well-formed JSON around a byte that is not UTF-8.
        byte[] badUtf8 = [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D];
        var lengthPrefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)badUtf8.Length);
        OpenFails(Put("utf8.safetensors", Concat(lengthPrefix, badUtf8)));
    }

    [TestMethod]
    public void TruncatedFileIsRejectedNamingTheTensor()
    {
        string good = Path.Combine(_dir, "good.safetensors");
        using var a = ones(4);
        using var b = ones(8);
        SafeTensorsFile.Write(good, [("layer.a", a), ("layer.b", b)], null);
        byte[] bytes = File.ReadAllBytes(good);
        string cut = Put("cut.safetensors", bytes[..^3]);
        var e = OpenFails(cut);
        Assert.Contains("layer.", e.Message);
        Assert.AreEqual(cut, e.Data[CheckpointErrors.FileKey]);
    }

    [TestMethod]
    public void UnknownDTypeIsRejected()
    {
        string path = Put("dtype.safetensors", RawFile("""{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}""", new byte[4]));
        var e = OpenFails(path);
        Assert.Contains("'w'", e.Message);
        Assert.Contains("F33", e.Message);
        Assert.AreEqual("w", e.Data[CheckpointErrors.TensorKey]);
        string unsupported = Put("u32.safetensors", RawFile("""{"w":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}}""", new byte[4]));
        Assert.Contains("unsupported", OpenFails(unsupported).Message);
    }

    [TestMethod]
    public void ShapeThatDisagreesWithTheOffsetsIsRejected()
    {
        string path = Put("shape.safetensors", RawFile("""{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}""", new byte[24]));
        var e = OpenFails(path);
        Assert.Contains("'w'", e.Message);
        Assert.Contains("24", e.Message);
        OpenFails(Put("neg.safetensors", RawFile("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", new byte[4])));
        OpenFails(Put("frac.safetensors", RawFile("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", new byte[4])));
        OpenFails(Put("huge.safetensors", RawFile("""{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}""", new byte[4])));
    }

    [TestMethod]
    public void OffsetsOutsideTheBufferAreRejected()
    {
        string path = Put("range.safetensors", RawFile("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", new byte[8]));
        var e = OpenFails(path);
        Assert.Contains("'w'", e.Message);
        Assert.Contains("[4, 12]", e.Message);
        OpenFails(Put("backwards.safetensors", RawFile("""{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}""", new byte[8])));
        OpenFails(Put("three.safetensors", RawFile("""{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}}""", new byte[8])));
    }

    [TestMethod]
    public void OverlappingTensorsAreRejected()
    {
        string path = Put("overlap.safetensors", RawFile(
            """{"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", new byte[12]));
        var e = OpenFails(path);
        Assert.Contains("'first'", e.Message);
        Assert.Contains("'second'", e.Message);
        Assert.Contains("overlap", e.Message);
    }

    [TestMethod]
    public void MalformedMetadataAndDuplicatesAreRejected()
    {
        OpenFails(Put("meta.safetensors", RawFile("""{"__metadata__":{"format":1}}""", [])));
        OpenFails(Put("dup.safetensors", RawFile(
            """{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}""", new byte[2])));
    }
}
