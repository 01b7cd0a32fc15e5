using System.Text;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Seco.Tests.Tokenization;

/// <summary>A Llama 2 style tokenizer.model, written byte by byte as the SentencePiece ModelProto it is.</summary>
[TestClass]
public sealed class SentencePieceTokenizerTests
{
    // After <unk> <s> </s> and the 256 byte pieces; SentencePiece BPE merges toward the highest-scoring piece.
    private static readonly string[] s_pieces = ["▁h", "ll", "▁he", "llo", "▁hello", "▁", "h", "e", "l", "o", "w", "r", "d"];
    private const int FirstPiece = 3 + 256;

    private string _dir = "";

    [TestInitialize]
    public void CreateDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-sp-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        File.WriteAllBytes(Path.Combine(_dir, "tokenizer.model"), BuildModel());
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{ "bos_token": "<s>", "eos_token": "</s>", "pad_token": null }""");
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [TestMethod]
    public void EncodesByScoresWithByteFallbackAndBos()
    {
        var tokenizer = ModelTokenizer.Load(_dir);
        Assert.IsInstanceOfType<LlamaTokenizer>(tokenizer.Inner);
        Assert.AreEqual(1, tokenizer.BosId);
        Assert.AreEqual(2, tokenizer.EosId);
        Assert.IsNull(tokenizer.PadId);
        Assert.AreEqual(FirstPiece + s_pieces.Length, tokenizer.VocabularySize);

        // "▁hello" by merges ▁h → ▁he, ll → llo → ▁hello; " world" has no merges; 'i' and 'ü' fall back to bytes.
        int[] expected = [1, P("▁hello"), P("▁"), P("w"), P("o"), P("r"), P("l"), P("d")];
        var ids = tokenizer.Encode("hello world", addBos: true);
        CollectionAssert.AreEqual(expected, ids.ToArray());
        Assert.AreEqual("hello world", tokenizer.Decode(ids.Skip(1)));

        var fallback = tokenizer.Encode("hi ü", addBos: false);
        CollectionAssert.AreEqual(new[] { P("▁h"), 3 + 'i', P("▁"), 3 + 0xC3, 3 + 0xBC }, fallback.ToArray());
        Assert.AreEqual("hi ü", tokenizer.Decode(fallback));
    }

    private static int P(string piece) => FirstPiece + Array.IndexOf(s_pieces, piece);

    private static byte[] BuildModel()
    {
        var pieces = new List<(string Text, float Score, int Type)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, 6));
        for (int i = 0; i < s_pieces.Length; i++) pieces.Add((s_pieces[i], -i, 1));

        var model = new List<byte>();
        foreach (var (text, score, type) in pieces)
        {
            var piece = new List<byte>();
            Bytes(piece, 1, Encoding.UTF8.GetBytes(text));
            Float(piece, 2, score);
            Int(piece, 3, type);
            Bytes(model, 1, piece.ToArray());
        }
        var trainer = new List<byte>();
        Int(trainer, 3, 2);               // model_type BPE
        Int(trainer, 4, pieces.Count);    // vocab_size
        Int(trainer, 35, 1);              // byte_fallback
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new List<byte>();
        Bytes(normalizer, 1, Encoding.UTF8.GetBytes("identity"));
        Int(normalizer, 3, 1);            // add_dummy_prefix
        Int(normalizer, 4, 0);            // remove_extra_whitespaces
        Int(normalizer, 5, 1);            // escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static void Varint(List<byte> b, ulong v)
    {
        for (; v >= 0x80; v >>= 7) b.Add((byte)(v | 0x80));
        b.Add((byte)v);
    }

    private static void Tag(List<byte> b, int field, int wireType) => Varint(b, (ulong)((field << 3) | wireType));

    private static void Bytes(List<byte> b, int field, byte[] data)
    {
        Tag(b, field, 2);
        Varint(b, (ulong)data.Length);
        b.AddRange(data);
    }

    private static void Int(List<byte> b, int field, long v)
    {
        Tag(b, field, 0);
        Varint(b, (ulong)v);
    }

    private static void Float(List<byte> b, int field, float v)
    {
        Tag(b, field, 5);
        b.AddRange(BitConverter.GetBytes(v));
    }
}
