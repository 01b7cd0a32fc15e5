using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Training;

/// <summary>NeedleStudy: prompts, scoring pieces against hand computations, the grid and its writers, on a tiny random model.</summary>
[TestClass]
public sealed class NeedleStudyTests
{
    static string _root = "";
    static CausalLM _model = null!;
    static ModelTokenizer _tokenizer = null!;
    static readonly string Text = string.Join(' ', Enumerable.Range(0, 200).Select(i =>
        $"Sentence {i} tells of the {(i % 3 == 0 ? "whale" : "sea")} and the ship."));

    [ClassInitialize]
    public static void CreateModel(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-needle-tests-" + Guid.NewGuid().ToString("N"));
        string dir = Path.Combine(_root, "tiny");
        TinyModel.Write(dir, new TinyModelSpec { HiddenSize = 32, IntermediateSize = 64, Seed = 3 });
        _model = ModelDirectory.Load(dir, ModelConfig.Load(dir), ScalarType.Float64, CPU);
        _model.eval();
        _tokenizer = ModelTokenizer.Load(dir);
    }

    [ClassCleanup]
    public static void Delete()
    {
        _model?.Dispose();
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    [TestMethod]
    public void TheNeedleSitsAtTheAskedDepthAndThePromptHasTheAskedLength()
    {
        int longestSentence = NeedleStudy.Sentences(Text).Max(s => _tokenizer.Encode(" " + s, addBos: false).Count);
        foreach (double depth in new[] { 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1 })
        {
            var p = NeedleStudy.BuildPrompt(_tokenizer, Text, 256, depth, NeedleVariant.Needle, seed: 5);
            Assert.AreEqual(256, p.PromptIds.Count, $"depth {depth}");
            int bos = _tokenizer.BosId is null ? 0 : 1;
            double expected = bos + depth * p.HaystackTokens;
            Assert.IsTrue(Math.Abs(p.NeedlePosition - expected) <= longestSentence, $"depth {depth}: needle at {p.NeedlePosition}, expected {expected} ± {longestSentence}");
            var needle = _tokenizer.Encode($" The secret code of the library is {p.Answer}.", addBos: false);
            CollectionAssert.AreEqual(needle.ToArray(), p.PromptIds.Skip(p.NeedlePosition).Take(needle.Count).ToArray(), $"depth {depth}");
            // At a sentence boundary: what precedes the needle ends a sentence (or is the start).
            if (p.NeedlePosition > bos && p.NeedlePosition < bos + p.HaystackTokens)
                StringAssert.EndsWith(_tokenizer.Decode(p.PromptIds.Take(p.NeedlePosition).Skip(bos)).TrimEnd(), ".");
            StringAssert.EndsWith(_tokenizer.Decode(p.PromptIds), "The secret code of the library is");
        }
        var start = NeedleStudy.BuildPrompt(_tokenizer, Text, 256, 0, NeedleVariant.Needle, seed: 5);
        Assert.AreEqual(_tokenizer.BosId is null ? 0 : 1, start.NeedlePosition);
    }

    [TestMethod]
    public void AHaystackTooShortIsRefusedNamingIt()
    {
        var e = Assert.ThrowsExactly<OptionException>(() => NeedleStudy.BuildPrompt(_tokenizer, "One sentence. Two sentences.", 512, 0.5, NeedleVariant.Needle, 0));
        Assert.AreEqual(("haystack", (object?)null), (e.Option, e.Value));
        StringAssert.StartsWith(e.Message, "haystack is too short: its 2 sentences hold ");
        StringAssert.StartsWith(e.Describe(_ => "--haystack 'notes.txt'"), "--haystack 'notes.txt' is too short: its 2 sentences hold ", "a caller names the text as it knows it");
        Assert.AreEqual("haystack has no sentence.", Assert.ThrowsExactly<OptionException>(() => NeedleStudy.BuildPrompt(_tokenizer, "  ", 512, 0.5, NeedleVariant.Needle, 0)).Message);
        var depth = Assert.ThrowsExactly<OptionException>(() => NeedleStudy.BuildPrompt(_tokenizer, Text, 512, 1.5, NeedleVariant.Needle, 0));
        Assert.AreEqual("depth must be in [0, 1]; got 1.5.", depth.Message);
        Assert.ThrowsExactly<OptionException>(() => new NeedleStudyOptions { Depths = [0.5, 1.5] }.Validate());
    }

    [TestMethod]
    public void TheAnswerLogProbIsTheSumOfTheAnswersTokenNll()
    {
        var p = NeedleStudy.BuildPrompt(_tokenizer, null, 96, 0.5, NeedleVariant.PassKey, seed: 1);
        double logProb = NeedleStudy.AnswerLogProb(_model, p.PromptIds, p.AnswerIds, chunkSize: 16);
        var all = p.PromptIds.Concat(p.AnswerIds).ToArray();
        using var batch = TokenBatch.FromSequences([all], null, 0, CPU);
        var nll = Evaluation.TokenNll(_model, batch, chunkSize: 1000)[0]; // one pass, every token scored
        double expected = -nll.Skip(p.PromptIds.Count - 1).Take(p.AnswerIds.Count).Sum();
        Assert.AreEqual(expected, logProb, 1e-9);
        Assert.IsTrue(logProb < 0);
    }

    [TestMethod]
    public void ExactMatchComparesTheGreedyTokensWithTheAnswers()
    {
        Assert.IsTrue(NeedleStudy.ExactMatch([5, 6, 7], [5, 6]));
        Assert.IsFalse(NeedleStudy.ExactMatch([5], [5, 6]));
        Assert.IsFalse(NeedleStudy.ExactMatch([5, 7], [5, 6]));
        // A "model" that copies: make the answer what the model greedily continues with, and the cell matches.
        var p = NeedleStudy.BuildPrompt(_tokenizer, null, 64, 0.5, NeedleVariant.PassKey, seed: 2);
        var greedy = NeedleStudy.Greedy(_model, p.PromptIds, 3, chunkSize: 16);
        var copying = p with { AnswerIds = greedy.ToArray(), Answer = _tokenizer.Decode(greedy) };
        var cell = NeedleStudy.Score(_model, _tokenizer, copying, 64, 0.5, chunkSize: 16);
        Assert.IsTrue(cell.ExactMatch);
        // Greedy and teacher forcing agree: each greedy token is the argmax, so its log-prob is the best the model gives.
        Assert.IsTrue(cell.AnswerLogProb >= NeedleStudy.AnswerLogProb(_model, p.PromptIds, p.AnswerIds, 16) || !p.AnswerIds.SequenceEqual(greedy));
        // Chunked generation gives the tokens of an unchunked prefill.
        CollectionAssert.AreEqual(greedy.ToArray(), NeedleStudy.Greedy(_model, p.PromptIds, 3, chunkSize: 1000).ToArray());
    }

    [TestMethod]
    public void TheGridHasOneCellPerLengthAndDepthIsDeterministicAndIsWritten()
    {
        var options = new NeedleStudyOptions { Lengths = [64, 96], Depths = [0, 0.5, 1], Variant = NeedleVariant.Needle, Seed = 4, ChunkSize = 32 };
        var a = NeedleStudy.Run(_model, _tokenizer, Text, options);
        var b = NeedleStudy.Run(_model, _tokenizer, Text, options);
        Assert.AreEqual(2, a.Cells.GetLength(0));
        Assert.AreEqual(3, a.Cells.GetLength(1));
        CollectionAssert.AreEqual(a.AllCells().ToArray(), b.AllCells().ToArray());
        Assert.AreEqual(96, a.Cells[1, 2].Length);
        Assert.AreEqual(0.5, a.Cells[0, 1].Depth);
        Assert.IsTrue(a.AllCells().All(c => c.Answer.Length == 4 && double.IsFinite(c.AnswerLogProb)));
        var other = NeedleStudy.Run(_model, _tokenizer, Text, options with { Seed = 5 });
        CollectionAssert.AreNotEqual(a.AllCells().Select(c => c.Answer).ToArray(), other.AllCells().Select(c => c.Answer).ToArray());

        var lines = a.ToCsv().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.AreEqual(7, lines.Length);
        Assert.AreEqual("variant,length,depth,needle_position,answer,answer_tokens,generated,exact_match,answer_logprob,answer_nll_per_token", lines[0]);
        var c12 = a.Cells[1, 2];
        StringAssert.StartsWith(lines[6], $"needle,96,1,{c12.NeedlePosition},\"{c12.Answer}\",{c12.AnswerTokens},");
        StringAssert.EndsWith(lines[6], $",{(c12.ExactMatch ? 1 : 0)},{c12.AnswerLogProb:R},{c12.AnswerNllPerToken:R}");

        var json = JsonNode.Parse(a.ToJson().ToJsonString())!.AsObject();
        Assert.AreEqual("needle", (string?)json["variant"]);
        Assert.AreEqual(2, json["exact_match"]!.AsArray().Count);
        Assert.AreEqual(3, json["answer_logprob"]![1]!.AsArray().Count);
        Assert.AreEqual(c12.AnswerLogProb, (double)json["answer_logprob"]![1]![2]!, 1e-12);
        Assert.AreEqual(6, json["cells"]!.AsArray().Count);
        Assert.AreEqual(c12.Answer, (string?)json["cells"]![5]!["answer"]);
    }

    [TestMethod]
    public void WrittenResultsReadBackCellForCell()
    {
        var options = new NeedleStudyOptions { Lengths = [64, 80], Depths = [0, 1], Variant = NeedleVariant.PassKey, Seed = 2, ChunkSize = 32 };
        var written = NeedleStudy.Run(_model, _tokenizer, null, options);
        string path = Path.Combine(Path.GetTempPath(), $"needle-{Guid.NewGuid():N}.json");
        try
        {
            written.WriteJson(path);
            var read = NeedleResult.ReadJson(path);
            Assert.AreEqual(NeedleVariant.PassKey, read.Variant);
            CollectionAssert.AreEqual(written.Lengths.ToArray(), read.Lengths.ToArray());
            CollectionAssert.AreEqual(written.Depths.ToArray(), read.Depths.ToArray());
            CollectionAssert.AreEqual(written.AllCells().ToArray(), read.AllCells().ToArray());
            Assert.AreEqual(written.ToCsv(), read.ToCsv());
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void ResultsThatDoNotFillTheGridAreRefusedNamingTheSourceAndField()
    {
        static JsonObject Parse(string text) => JsonNode.Parse(text)!.AsObject();
        const string cell = """{"length": 64, "depth": 0, "needle_position": 3, "answer": "1234", "answer_tokens": 2, "generated": "1234", "exact_match": true, "answer_logprob": null}""";
        var one = NeedleResult.FromJson(Parse($$"""{"variant": "needle", "lengths": [64], "depths": [0], "cells": [{{cell}}]}"""));
        Assert.IsTrue(double.IsNaN(one.Cells[0, 0].AnswerLogProb), "a null log-probability reads as NaN");
        Assert.AreEqual(1.0, one.Accuracy);

        var missing = Assert.ThrowsExactly<InvalidDataException>(() => NeedleResult.FromJson(Parse($$"""{"variant": "needle", "lengths": [64, 96], "depths": [0], "cells": [{{cell}}]}"""), "grid.json"));
        StringAssert.Contains(missing.Message, "grid.json");
        StringAssert.Contains(missing.Message, "\"cells\" has 1 entries");
        var misplaced = Assert.ThrowsExactly<InvalidDataException>(() => NeedleResult.FromJson(Parse($$"""{"variant": "needle", "lengths": [96], "depths": [0], "cells": [{{cell}}]}""")));
        StringAssert.Contains(misplaced.Message, "cells[0] is length 64");
        var variant = Assert.ThrowsExactly<InvalidDataException>(() => NeedleResult.FromJson(Parse($$"""{"variant": "haystack", "lengths": [64], "depths": [0], "cells": [{{cell}}]}""")));
        StringAssert.Contains(variant.Message, "'haystack'");
        var field = Assert.ThrowsExactly<InvalidDataException>(() => NeedleResult.FromJson(Parse($$"""{"variant": "needle", "lengths": [64], "depths": [0], "cells": [{{cell.Replace("\"answer_tokens\": 2", "\"answer_tokens\": \"two\"")}}]}""")));
        StringAssert.Contains(field.Message, "cells[0] \"answer_tokens\" is not a Int32");
    }
}
