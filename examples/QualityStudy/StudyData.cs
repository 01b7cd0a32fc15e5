using System.Text;
using Microsoft.ML.Seco.Data;

namespace Microsoft.ML.Seco.Examples.QualityStudy;

/// <summary>
/// The study's text, all fetched by the library's <see cref="LongTextCorpus"/> (npm tarballs under .cache/datasets):
/// the State of the Union addresses split by address into pretraining, extension and held-out parts, and Moby-Dick,
/// held out. Text is folded to ASCII so that, with the byte-level tokenizer, one character is one token and a window of
/// n − 1 characters is exactly n tokens with BOS.
/// </summary>
public sealed class StudyData
{
    /// <summary>Pretraining sequences (each PretrainLength − 1 characters), in training order.</summary>
    public required IReadOnlyList<string> Pretraining { get; init; }
    /// <summary>Extension sequences (each Length − 1 characters), in training order (the same for every run).</summary>
    public required IReadOnlyList<string> Extension { get; init; }
    /// <summary>Held-out windows from addresses never trained on.</summary>
    public required IReadOnlyList<string> HeldOutSotu { get; init; }
    /// <summary>Held-out windows of Moby-Dick.</summary>
    public required IReadOnlyList<string> HeldOutMobyDick { get; init; }
    /// <summary>Addresses in each part, for the report.</summary>
    public required (int Pretraining, int Extension, int HeldOut) Addresses { get; init; }
    /// <summary>The held-out addresses whole (the context-extension study's needle haystack comes from them).</summary>
    public required IReadOnlyList<string> HeldOutAddresses { get; init; }
    /// <summary>Moby-Dick, one text.</summary>
    public required string MobyDickText { get; init; }

    /// <summary>
    /// <paramref name="count"/> held-out windows of <paramref name="length"/> − 1 characters from each corpus: the
    /// opening of addresses long enough, spread over the years, and windows spread over Moby-Dick.
    /// </summary>
    public (IReadOnlyList<string> Sotu, IReadOnlyList<string> MobyDick) HeldOutWindows(int length, int count) =>
        HeldOutWindows(HeldOutAddresses, MobyDickText, length, count);

    static (IReadOnlyList<string> Sotu, IReadOnlyList<string> MobyDick) HeldOutWindows(IReadOnlyList<string> addresses, string moby, int length, int count) =>
        (Spread(addresses.Where(d => d.Length >= length - 1).Select(d => d[..(length - 1)]).ToList(), count),
         Spread(Windows(moby, length - 1).ToList(), count));

    /// <summary>
    /// Addresses in chronological order go to three parts by index: i mod 10 = 9 held out, i mod 10 = 4 extension,
    /// the rest pretraining — so every part spans the two centuries and no held-out address is ever trained on.
    /// </summary>
    public static StudyData Load(StudySettings settings, string cacheDirectory)
    {
        var addresses = LongTextCorpus.StateOfTheUnion(cacheDirectory).Select(d => Ascii(d.Text)).ToList();
        var pretrainDocs = addresses.Where((_, i) => i % 10 is not 4 and not 9).ToList();
        var extensionDocs = addresses.Where((_, i) => i % 10 == 4).ToList();
        var heldOutDocs = addresses.Where((_, i) => i % 10 == 9).ToList();
        string moby = string.Join("\n\n", LongTextCorpus.MobyDick(cacheDirectory).Select(d => Ascii(d.Text)));

        int pretrainNeeded = settings.PretrainSteps * settings.PretrainBatch;
        var pretraining = Shuffle(pretrainDocs.SelectMany(d => Windows(d, settings.PretrainLength - 1)), seed: 1);
        var extension = Shuffle(extensionDocs.SelectMany(d => Windows(d, settings.Length - 1)), seed: 2);
        if (pretraining.Count < pretrainNeeded)
            throw new InvalidOperationException($"Pretraining needs {pretrainNeeded} windows; the training addresses give {pretraining.Count}.");
        if (extension.Count < settings.Updates)
            throw new InvalidOperationException($"The extension runs need {settings.Updates} windows of {settings.Length} tokens; the extension addresses give {extension.Count}.");
        // An address's first window (its opening is part of the test), from addresses spread over the years.
        var (sotu, mobyDick) = HeldOutWindows(heldOutDocs, moby, settings.Length, settings.HeldOutWindows);
        return new StudyData
        {
            Pretraining = pretraining.Take(pretrainNeeded).ToList(),
            Extension = extension.Take(settings.Updates).ToList(),
            HeldOutSotu = sotu,
            HeldOutMobyDick = mobyDick,
            Addresses = (pretrainDocs.Count, extensionDocs.Count, heldOutDocs.Count),
            HeldOutAddresses = heldOutDocs,
            MobyDickText = moby,
        };
    }

    /// <summary>Accents dropped (é → e), other non-ASCII characters removed, line endings normalised.</summary>
    static string Ascii(string text)
    {
        var builder = new StringBuilder(text.Length);
        foreach (char c in text.Replace("\r\n", "\n").Normalize(NormalizationForm.FormD))
        {
            if (c < 128) builder.Append(c);
            else if (c is '\u2018' or '\u2019') builder.Append('\'');
            else if (c is '\u201C' or '\u201D') builder.Append('"');
            else if (c is '\u2013' or '\u2014') builder.Append('-');
        }
        return builder.ToString();
    }

    static IEnumerable<string> Windows(string text, int size)
    {
        for (int start = 0; start + size <= text.Length; start += size) yield return text.Substring(start, size);
    }

    static List<string> Shuffle(IEnumerable<string> items, int seed)
    {
        var list = items.ToList();
        var random = new Random(seed);
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
        return list;
    }

    static List<string> Spread(List<string> items, int count)
    {
        if (items.Count < count) throw new InvalidOperationException($"Only {items.Count} held-out windows available; {count} asked for.");
        return Enumerable.Range(0, count).Select(i => items[(int)((i + 0.5) * items.Count / count)]).ToList();
    }
}
