using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Examples.QualityStudy;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.MLNet;

/// <summary>
/// examples/QualityStudy's whole path (pretraining, extension runs, held-out scoring, report) at toy size on synthetic
/// text, so it needs no download; docs/QUALITY.md's numbers come from the same code at full size.
/// </summary>
[TestClass]
public sealed class QualityStudyTests
{
    [TestMethod]
    public void TheStudyRunsEndToEndAndSplitsTheHeldOutNllByPosition()
    {
        string root = TinyModelFixture.TempPath("quality");
        try
        {
            var s = new StudySettings
            {
                Name = "test", Layers = 1, HiddenSize = 32, Heads = 2, IntermediateSize = 64,
                PretrainLength = 32, PretrainBatch = 2, PretrainSteps = 3, Length = 512, ChunkSize = 64, Updates = 2,
                LearningRates = [3e-3], Seeds = [0], HeldOutWindows = 1,
            };
            var random = new Random(5);
            string Text(int length) => new(Enumerable.Range(0, length).Select(_ => "etaoin shrdlu,."[random.Next(15)]).ToArray());
            var data = new StudyData
            {
                Pretraining = Enumerable.Range(0, 6).Select(_ => Text(s.PretrainLength - 1)).ToList(),
                Extension = Enumerable.Range(0, 2).Select(_ => Text(s.Length - 1)).ToList(),
                HeldOutSotu = [Text(s.Length - 1)], HeldOutMobyDick = [Text(s.Length - 1)], Addresses = (1, 1, 1),
            };
            string runs = Path.Combine(root, "out", "runs");
            Directory.CreateDirectory(runs);
            string baseModel = StudyRuns.EnsureBaseModel(s, data, Path.Combine(root, "cache"), Path.Combine(root, "out"), CancellationToken.None, TextWriter.Null)!;
            Assert.AreEqual(baseModel, StudyRuns.EnsureBaseModel(s, data, Path.Combine(root, "cache"), Path.Combine(root, "out"), CancellationToken.None, TextWriter.Null),
                "the cached base model is reused");
            var baseResult = StudyRuns.BaseResult(baseModel, data, s, runs);

            // The split by position must account for every held-out token: its token-weighted mean is the plain mean NLL.
            var tokenizer = ModelTokenizer.Load(baseModel);
            using (var model = ModelDirectory.Load(baseModel, ScalarType.Float32, CPU))
            {
                var examples = new SequenceBuilder(s.Length, SequenceOverflow.Truncate).FromText(tokenizer, data.HeldOutSotu[0]);
                var (sum, tokens) = Evaluation.MeanNll(model, Batching.Batches(examples, 1, 0, CPU), s.ChunkSize);
                Assert.AreEqual((long)(s.Length - 1), tokens);
                double split = (baseResult.Sotu.Within * (s.PretrainLength - 1) + baseResult.Sotu.Beyond * (s.Length - s.PretrainLength)) / tokens;
                Assert.AreEqual(sum / tokens, split, 1e-9);
            }
            Assert.AreEqual(data.Extension.Count, baseResult.Loss.Length);

            foreach (var method in Method.All.Where(m => m.Id is "fixed8-loss" or "detached"))
            {
                var result = StudyRuns.Run(baseModel, data, s, method, 3e-3, 0, runs, TextWriter.Null);
                Assert.AreEqual(s.Updates, result.Loss.Length);
                Assert.IsTrue(result.Seconds.Zip(result.Seconds.Skip(1)).All(p => p.Second >= p.First), "elapsed seconds go forward");
                Assert.IsNotNull(StudyRuns.Completed(runs, StudyRuns.RunId(method, 3e-3, 0)), "a completed run is found again, so a rerun skips it");
                // Update 1 is scored before any update: the run's first loss is the base model's loss on that window.
                Assert.AreEqual(baseResult.Loss[0], result.Loss[0], 1e-4);
            }
            StudyReport.Write(Path.Combine(root, "out"), runs, s, data, partial: true);
            string summary = File.ReadAllText(Path.Combine(root, "out", "summary.md"));
            StringAssert.Contains(summary, "| Ablation: detached prefix | 0.003 | 1 |");
            StringAssert.Contains(summary, "PARTIAL");
            foreach (var png in new[] { "loss-vs-updates.png", "loss-vs-seconds.png", "gain-vs-seconds.png", "nll-by-position-sotu.png" })
                Assert.IsTrue(new FileInfo(Path.Combine(root, "out", png)).Length > 1000, png);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }
}
