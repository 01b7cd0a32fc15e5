using System.Buffers.Binary;
using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Checkpoints;

/// <summary>A decoder-shaped toy whose names look like a Hugging Face Llama's: <c>model.layers.0.self_attn.q_proj.weight</c>.</summary>
internal sealed class TinyLm : nn.Module
{
    // Field names become parameter names, hence the snake case.
#pragma warning disable IDE1006
    private readonly TinyBody model;
    private readonly Linear lm_head;
#pragma warning restore IDE1006

    public TinyLm(int vocab = 7, int hidden = 4, int layers = 2, bool withHead = true) : base(nameof(TinyLm))
    {
        model = new TinyBody(vocab, hidden, layers);
        lm_head = nn.Linear(hidden, withHead ? vocab : 1, hasBias: false);
        RegisterComponents();
    }

    /// <summary>Parameters and persistent buffers, as a checkpoint holds them.</summary>
    public List<(string name, Tensor tensor)> Weights() =>
        named_parameters().Select(p => (p.name, (Tensor)p.parameter))
            .Concat(named_buffers(include_nonpersistent: false).Select(b => (b.name, b.buffer)))
            .ToList();
}

internal sealed class TinyBody : nn.Module
{
#pragma warning disable IDE1006
    private readonly Embedding embed_tokens;
    private readonly ModuleList<TinyLayer> layers;
    private readonly Parameter norm_weight;
#pragma warning restore IDE1006

    public TinyBody(int vocab, int hidden, int count) : base(nameof(TinyBody))
    {
        embed_tokens = nn.Embedding(vocab, hidden);
        layers = nn.ModuleList(Enumerable.Range(0, count).Select(_ => new TinyLayer(hidden)).ToArray());
        norm_weight = nn.Parameter(randn(hidden));
        RegisterComponents();
        register_buffer("step", tensor(new long[] { 3, 1 }));
        // Recomputed at start-up in real models, never stored: must not be expected in a checkpoint.
        register_buffer("inv_freq", ones(2), persistent: false);
    }
}

internal sealed class TinyLayer : nn.Module
{
#pragma warning disable IDE1006
    private readonly TinyAttention self_attn;
#pragma warning restore IDE1006

    public TinyLayer(int hidden) : base(nameof(TinyLayer))
    {
        self_attn = new TinyAttention(hidden);
        RegisterComponents();
    }
}

internal sealed class TinyAttention : nn.Module
{
#pragma warning disable IDE1006
    private readonly Linear q_proj;
    private readonly Linear o_proj;
#pragma warning restore IDE1006

    public TinyAttention(int hidden) : base(nameof(TinyAttention))
    {
        q_proj = nn.Linear(hidden, hidden, hasBias: true);
        o_proj = nn.Linear(hidden, 3, hasBias: false);
        RegisterComponents();
    }
}

internal static class CheckpointTestSupport
{
    /// <summary>A safetensors file built byte by byte from the specification, independent of the writer under test.</summary>
    public static byte[] RawFile(string headerJson, byte[] buffer, ulong? declaredHeaderLength = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + buffer.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredHeaderLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        buffer.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    public static byte[] Floats(params float[] values)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]);
        return bytes;
    }

    public static byte[] UInt16s(params ushort[] values)
    {
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), values[i]);
        return bytes;
    }

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    public static byte[] RawBytes(Tensor t)
    {
        using var cpu = t.detach().cpu().contiguous();
        return cpu.bytes.ToArray();
    }

    public static void AssertSameWeights(TinyLm expected, TinyLm actual)
    {
        var a = expected.Weights();
        var b = actual.Weights().ToDictionary(w => w.name, w => w.tensor);
        Assert.HasCount(a.Count, b);
        foreach (var (name, t) in a)
        {
            Assert.IsTrue(b.ContainsKey(name), $"'{name}' missing after load");
            Assert.AreEqual(t.dtype, b[name].dtype, name);
            CollectionAssert.AreEqual(t.shape, b[name].shape, name);
            CollectionAssert.AreEqual(RawBytes(t), RawBytes(b[name]), $"'{name}' differs after the round trip");
        }
    }
}
