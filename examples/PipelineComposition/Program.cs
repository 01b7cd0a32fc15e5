// PipelineComposition: the chunk-wise stage among ML.NET's own transforms. Documents come from a text file, ML.NET
// normalises them, the stage fine-tunes on the training split, held-out rows are scored, and the whole pipeline is
// saved to one file and loaded back. Usage: [--model DIR] [--out DIR] (default: a random tiny model, no downloads).
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Text;
using Microsoft.ML.Seco;
using Microsoft.ML.Seco.Checkpoints;

string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
string runDirectory = Path.GetFullPath(Arg("--out") ?? Path.Combine("runs", "pipeline-composition"));
Directory.CreateDirectory(runDirectory);
string modelPath = Arg("--model") ?? Path.Combine(runDirectory, "tiny-model");
if (Arg("--model") is null)
    TinyModel.Write(modelPath, new TinyModelSpec { Layers = 2, HiddenSize = 64, Heads = 4, KeyValueHeads = 2, IntermediateSize = 128, Seed = 3 });

// 1. A tab-separated file of long documents (written here so the example needs nothing else).
string dataFile = Path.Combine(runDirectory, "clauses.tsv");
var random = new Random(7);
string[] clauses =
{
    "The Supplier SHALL deliver the Goods within THIRTY days of the Order.", "Either Party may terminate this Agreement on written notice.",
    "Payment is due within 45 days of the invoice date.", "The Customer shall keep all Confidential Information secret.",
    "This Agreement is governed by the laws of the State of Washington.", "Neither Party is liable for delays caused by Force Majeure.",
};
File.WriteAllLines(dataFile, Enumerable.Range(0, 40)
    .Select(i => $"{i}\t{string.Join(' ', Enumerable.Range(0, 30).Select(_ => clauses[random.Next(clauses.Length)]))}")
    .Prepend("Id\tText"));

var ml = new MLContext(seed: 1);
ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info && e.Source.StartsWith("ChunkwiseLora", StringComparison.Ordinal)) Console.WriteLine("  " + e.Message); };
IDataView documents = ml.Data.LoadFromTextFile<ContractDocument>(dataFile, hasHeader: true, separatorChar: '\t');
var split = ml.Data.TrainTestSplit(documents, testFraction: 0.2, seed: 1);

// 2. ML.NET's own text transforms compose with the stage: normalise case first. The validation set must carry the
//    stage's input column, so it goes through the same normaliser.
var normalize = ml.Transforms.Text.NormalizeText("CleanText", nameof(ContractDocument.Text), TextNormalizingEstimator.CaseMode.Lower, keepDiacritics: true, keepPunctuations: true);
var validation = normalize.Fit(split.TrainSet).Transform(split.TestSet);
var pipeline = normalize.Append(ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
    {
        ModelPath = modelPath,
        TextColumnName = "CleanText",
        ChunkSize = 64,
        SampledChunks = 4,
        MaxSequenceLength = 1024,
        LearningRate = 3e-3,
        MaxEpoch = 2,
        ValidationSet = validation,
    }));
var model = pipeline.Fit(split.TrainSet);

// 3. Score held-out rows: the stage adds Perplexity, NegativeLogLikelihood and ScoredTokens.
var scored = model.Transform(split.TestSet);
var perplexities = scored.GetColumn<float>("Perplexity").ToArray();
Console.WriteLine($"Held-out rows: {perplexities.Length}, mean perplexity {perplexities.Average():F2}");

// 4. One file for the whole pipeline (ML.NET's stages saved by ML.NET, the chunk-wise stage as a PEFT adapter).
string saved = Path.Combine(runDirectory, "pipeline.seco");
SecoModel.Save(ml, model, documents.Schema, saved);
var reloaded = SecoModel.Load(ml, saved);
var again = reloaded.Transform(split.TestSet).GetColumn<float>("Perplexity").ToArray();
Console.WriteLine($"Saved to {saved}; reloaded pipeline reproduces the perplexities: {perplexities.SequenceEqual(again)}");
(reloaded as IDisposable)?.Dispose();
model.Dispose();

/// <summary>A row of the TSV file.</summary>
public sealed class ContractDocument
{
    /// <summary>Row id.</summary>
    [LoadColumn(0)] public int Id { get; set; }
    /// <summary>The document.</summary>
    [LoadColumn(1)] public string Text { get; set; } = "";
}
