using System.Text;

namespace Microsoft.ML.Seco.Tokenization;

/// <summary>
/// GPT-2's reversible byte ↔ printable-character mapping, used by every byte-level BPE vocabulary:
/// tokens in tokenizer.json are spelled with these characters, not with the raw UTF-8 bytes.
/// </summary>
internal static class ByteLevel
{
    /// <summary>The default split pattern of Hugging Face's ByteLevel pre-tokenizer (use_regex: true), i.e. GPT-2's.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> s_charToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        // Printable Latin-1 bytes keep their own code point; the rest are shifted past U+00FF in byte order,
        // exactly as bytes_to_unicode() in GPT-2's encoder.py does.
        var map = new char[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + shifted++);
        }
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) map[s_byteToChar[b]] = (byte)b;
        return map;
    }

    public static char ToChar(byte b) => s_byteToChar[b];

    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(s_byteToChar[b]);
        return sb.ToString();
    }

    /// <summary>The UTF-8 text <paramref name="text"/> spelled in byte-level characters.</summary>
    public static string EncodeText(string text) => Encode(Encoding.UTF8.GetBytes(text));

    /// <summary>Bytes of a byte-level token, or null when it holds a character outside the mapping.</summary>
    public static byte[]? Decode(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!s_charToByte.TryGetValue(token[i], out bytes[i])) return null;
        }
        return bytes;
    }
}
