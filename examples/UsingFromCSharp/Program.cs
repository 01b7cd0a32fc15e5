// Fine-tune a causal LM on long documents inside an ML.NET pipeline, score held-out documents, generate, save, reload.
// dotnet run --project examples/UsingFromCSharp -c Release [-- MODEL_DIR DOCS.jsonl]
// Without arguments it writes a random tiny Llama-style model and sample documents: no downloads, a CPU is enough.
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Seco;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;

string run = Path.GetFullPath(Path.Combine("runs", "using-from-csharp"));
string modelPath = args.Length > 0 ? args[0] : Path.Combine(run, "tiny-model"); // Hugging Face layout: config.json, *.safetensors, tokenizer
string docsPath = args.Length > 1 ? args[1] : Path.Combine(run, "docs.jsonl");  // one {"text": "..."} per line
if (args.Length == 0)
{
    TinyModel.Write(modelPath, new TinyModelSpec());
    string[] clauses = { "The Supplier shall deliver the Goods within thirty days.", "Either Party may terminate on written notice.",
                         "Payment is due within 45 days of the invoice.", "Confidential Information stays secret." };
    File.WriteAllLines(docsPath, Enumerable.Range(0, 6).Select(i => JsonSerializer.Serialize(new
    {
        text = string.Join(' ', Enumerable.Range(0, 120).Select(j => clauses[(i + j * j) % clauses.Length])),
    })));
}

var ml = new MLContext(seed: 1);
IDataView docs = JsonlDocuments.LoadDataView(ml, docsPath);  // any IDataView with a text column works
IDataView heldOut = ml.Data.TakeRows(docs, 2), training = ml.Data.SkipRows(docs, 2);
var pipeline = ml.Transforms.Text.NormalizeText("Text", keepDiacritics: true)
    .Append(ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
    {
        ModelPath = modelPath, TextColumnName = "Text",
        ChunkSize = 128, SampledChunks = 8, Sampler = ChunkSampler.Bernoulli, MaxCompensation = 2,
        LoraRank = 8, LoraAlpha = 16, MaxSequenceLength = 16384,
        LearningRate = 1e-4, MaxEpoch = 1, GradientAccumulationSteps = 4, Device = "auto",
    }));
var model = pipeline.Fit(training);  // progress on ml.Log; Options.Progress for an IProgress<TrainingProgress>

// The stage adds Perplexity (float), NegativeLogLikelihood (float) and ScoredTokens (int) to every row.
IDataView scored = model.Transform(heldOut);
float[] perplexity = scored.GetColumn<float>("Perplexity").ToArray();
float[] nll = scored.GetColumn<float>("NegativeLogLikelihood").ToArray();
int[] tokens = scored.GetColumn<int>("ScoredTokens").ToArray();
for (int i = 0; i < perplexity.Length; i++)
    Console.WriteLine($"held-out document {i}: {tokens[i]} tokens, NLL {nll[i]:F3} nats/token, perplexity {perplexity[i]:F1}");

ChunkwiseLoraTransformer stage = model.LastTransformer;  // the fitted chunk-wise stage
Console.WriteLine($"Perplexity(text): {stage.Perplexity("Payment is due within 45 days of the invoice."):F1}");
Console.WriteLine($"Complete(prompt): {stage.Complete("The Supplier shall")}");  // greedy, at most 64 new tokens

string saved = Path.Combine(run, "model.seco");
SecoModel.Save(ml, model, docs.Schema, saved);  // the whole chain, ML.NET stages included, in one file
ITransformer reloaded = SecoModel.Load(ml, saved);
float[] again = reloaded.Transform(heldOut).GetColumn<float>("Perplexity").ToArray();
Console.WriteLine($"Saved to {saved}; the reloaded pipeline gives the same perplexities: {again.SequenceEqual(perplexity)}");
(reloaded as IDisposable)?.Dispose();
model.Dispose();  // releases the model's native memory
