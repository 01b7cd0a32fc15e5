using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Training;
using static Microsoft.ML.Seco.Tests.MLNet.TinyModelFixture;

namespace Microsoft.ML.Seco.Tests.Reliability;

/// <summary>The whole data source is validated before the first step, however few steps the run takes.</summary>
[TestClass]
public sealed class DataValidationTests
{
    sealed class Counter : IProgress<TrainingProgress>
    {
        public int Reports;
        public void Report(TrainingProgress value) => Reports++;
    }

    [TestMethod]
    [DataRow("{\"text\": 5}", "field \"text\" must be a string")]
    [DataRow("{\"txt\": \"late\"}", "missing field \"text\"")]
    [DataRow("{\"text\": \"unterminated", "invalid JSON")]
    [DataRow("[\"text\"]", "expected a JSON object")]
    [DataRow("{\"prompt\": \"a\", \"response\": \"b\"}", "expected \"text\" like the first line")]
    public void ABadLineFarBeyondMaxStepsStopsTheRunBeforeTheFirstStep(string badLine, string expected)
    {
        string path = TempPath("late-bad-line") + ".jsonl";
        // 30 good lines, a blank one, then the bad one at line 32: a run of one step reads only the first batch.
        var lines = Documents(30).Select(d => System.Text.Json.JsonSerializer.Serialize(new { text = d.Text })).Append("").Append(badLine);
        File.WriteAllLines(path, lines);
        try
        {
            var ml = new MLContext(seed: 1);
            var counter = new Counter();
            var stage = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
            {
                ModelPath = ModelPath, ChunkSize = 16, MaxSequenceLength = 64, MaxSteps = 1, Device = "cpu", Progress = counter,
            });
            var e = Assert.ThrowsExactly<InvalidDataException>(() => stage.Fit(JsonlDocuments.LoadDataView(ml, path)));
            StringAssert.Contains(e.Message, $"{path}, line 32");
            StringAssert.Contains(e.Message, expected);
            Assert.AreEqual(0, counter.Reports, "no optimizer step may run before the data is known to be valid");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void ABadValidationFileIsFoundBeforeTheFirstStepToo()
    {
        string train = TempPath("train") + ".jsonl", validation = TempPath("validation") + ".jsonl";
        File.WriteAllLines(train, Documents(4).Select(d => System.Text.Json.JsonSerializer.Serialize(new { text = d.Text })));
        File.WriteAllLines(validation, new[] { "{\"text\": \"fine\"}", "{\"text\": null}" });
        try
        {
            var ml = new MLContext(seed: 1);
            var counter = new Counter();
            var stage = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
            {
                ModelPath = ModelPath, ChunkSize = 16, MaxSequenceLength = 64, MaxSteps = 2, Device = "cpu", Progress = counter,
                ValidationSet = JsonlDocuments.LoadDataView(ml, validation),
            });
            var e = Assert.ThrowsExactly<InvalidDataException>(() => stage.Fit(JsonlDocuments.LoadDataView(ml, train)));
            StringAssert.Contains(e.Message, $"{validation}, line 2");
            Assert.AreEqual(0, counter.Reports);
        }
        finally
        {
            File.Delete(train);
            File.Delete(validation);
        }
    }
}
