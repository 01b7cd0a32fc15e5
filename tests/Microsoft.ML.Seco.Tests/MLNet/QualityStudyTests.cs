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
                HeldOutAddresses = [Text(s.Length - 1)], MobyDickText = Text(s.Length - 1),
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

    [TestMethod]
    public void TheContextExtensionStudyScoresEachRotarySettingBeforeAndAfterAndDrawsItsMaps()
    {
        string root = TinyModelFixture.TempPath("extension");
        try
        {
            // Bucket bounds are multiples of 256 positions, so the lengths are too.
            var s = new StudySettings
            {
                Name = "test", Layers = 1, HiddenSize = 32, Heads = 2, IntermediateSize = 64,
                PretrainLength = 256, PretrainBatch = 2, PretrainSteps = 2, Length = 512, ChunkSize = 128, Updates = 2,
                HeldOutWindows = 1, NeedleLengths = [200, 600], NeedleDepths = [0, 1],
            };
            var random = new Random(7);
            string Text(int length) => new(Enumerable.Range(0, length).Select(_ => "etaoin shrdlu,. "[random.Next(16)]).ToArray());
            var data = new StudyData
            {
                Pretraining = Enumerable.Range(0, 4).Select(_ => Text(s.PretrainLength - 1)).ToList(),
                Extension = Enumerable.Range(0, 2).Select(_ => Text(s.Length - 1)).ToList(),
                HeldOutSotu = [], HeldOutMobyDick = [], Addresses = (1, 1, 1),
                HeldOutAddresses = [Text(4000)], MobyDickText = Text(3000),
            };
            string output = Path.Combine(root, "out");
            Directory.CreateDirectory(output);
            string baseModel = StudyRuns.EnsureBaseModel(s, data, Path.Combine(root, "cache"), output, CancellationToken.None, TextWriter.Null)!;

            var yarn = RopeArm.All.Single(r => r.Id == "yarn");
            var config = yarn.Config(baseModel, s);
            Assert.AreEqual("yarn", config.RopeScaling!.Type);
            Assert.AreEqual(2.0, config.RopeScaling.Factor);
            Assert.AreEqual(256, config.RopeScaling.OriginalMaxPositionEmbeddings);
            Assert.IsNull(RopeArm.All.Single(r => r.Id == "none").Config(baseModel, s).RopeScaling);

            var arms = ExtensionArm.All.Where(a => a.Id is "none_base" or "yarn_base" or "yarn_seco").ToList();
            Assert.AreEqual(3, arms.Count);
            foreach (var arm in arms) ExtensionStudy.Run(baseModel, data, s, arm, output, TextWriter.Null);
            var results = arms.ToDictionary(a => a.Id, a => ExtensionStudy.Completed(output, a)!);
            Assert.AreEqual(s.Updates, results["yarn_seco"].Loss.Length);
            Assert.AreEqual(0, results["yarn_base"].Loss.Length);
            Assert.AreNotEqual(results["none_base"].Sotu.Beyond, results["yarn_base"].Sotu.Beyond, "the scaling reaches the scored model");
            Assert.AreNotEqual(results["yarn_base"].Sotu.Beyond, results["yarn_seco"].Sotu.Beyond, "the extension changed the model");

            // Ranges of buckets are exact: over every position they give the token-weighted mean of the whole windows.
            var tokenizer = ModelTokenizer.Load(baseModel);
            var (sotu, _) = data.HeldOutWindows(s.EvaluationLength, 1);
            using (var model = ModelDirectory.Load(baseModel, ScalarType.Float32, CPU))
            {
                var examples = new SequenceBuilder(s.EvaluationLength, SequenceOverflow.Truncate).FromText(tokenizer, sotu[0]);
                var (sum, tokens) = Evaluation.MeanNll(model, Batching.Batches(examples, 1, 0, CPU), s.ChunkSize);
                Assert.AreEqual(sum / tokens, ExtensionStudy.Range(results["none_base"].Sotu, 0, s.EvaluationLength), 1e-9);
            }
            Assert.ThrowsExactly<ArgumentException>(() => ExtensionStudy.Range(results["none_base"].Sotu, 100, 512));

            var needle = NeedleResult.ReadJson(ExtensionStudy.NeedlePath(output, arms[2]));
            CollectionAssert.AreEqual(new[] { 200, 600 }, needle.Lengths.ToArray());
            DateTime written = File.GetLastWriteTimeUtc(Path.Combine(output, "yarn_seco.json"));
            ExtensionStudy.Run(baseModel, data, s, arms[2], output, TextWriter.Null);
            Assert.AreEqual(written, File.GetLastWriteTimeUtc(Path.Combine(output, "yarn_seco.json")), "a completed arm is skipped");

            ExtensionReport.Write(output, s, partial: true);
            string summary = File.ReadAllText(Path.Combine(output, "summary.md"));
            StringAssert.Contains(summary, "PARTIAL");
            StringAssert.Contains(summary, "| YaRN, SeCO (exact) | ");
            StringAssert.Contains(summary, "| no scaling, before (base model) | – | – | ");
            foreach (var png in new[] { "nll-by-position-sotu.png", "needle-none_base.png", "needle-yarn_seco.png" })
                Assert.IsTrue(new FileInfo(Path.Combine(output, png)).Length > 1000, png);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }
}
