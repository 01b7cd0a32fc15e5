// QuickStart: fine-tune a causal LM on long documents through an ML.NET pipeline with SpaCO, and show that it learnt
// something that needs the whole context. With no arguments it builds a random tiny model (no downloads) and a
// synthetic pass-key task; `--model DIR --data FILE.jsonl` runs the same pipeline on a real model and real data.
using Microsoft.ML.Seco.Examples.QuickStart;

return QuickStartRun.Run(args, Console.Out);
