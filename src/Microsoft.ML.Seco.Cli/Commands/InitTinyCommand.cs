using System.CommandLine;
using Microsoft.ML.Seco.Checkpoints;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco init-tiny: writes a random tiny model in Hugging Face layout (TinyModel.Write).</summary>
internal static class InitTinyCommand
{
    public static Command Create(CliContext context)
    {
        var defaults = new TinyModelSpec();
        var output = new Option<string>("--out") { Description = "Folder to write config.json, model.safetensors and (unless --no-tokenizer) GPT-2's tokenizer into.", Required = true };
        var modelType = new Option<string>("--model-type") { Description = "Architecture.", DefaultValueFactory = _ => defaults.ModelType };
        modelType.AcceptOnlyFromAmong("llama", "mistral", "qwen2");
        var layers = new Option<int>("--layers") { Description = "Decoder layers.", DefaultValueFactory = _ => defaults.Layers };
        var hidden = new Option<int>("--hidden-size") { Description = "Hidden size.", DefaultValueFactory = _ => defaults.HiddenSize };
        var heads = new Option<int>("--heads") { Description = "Query heads (must divide --hidden-size).", DefaultValueFactory = _ => defaults.Heads };
        var kvHeads = new Option<int>("--kv-heads") { Description = "Key/value heads (fewer than --heads gives grouped-query attention).", DefaultValueFactory = _ => defaults.KeyValueHeads };
        var intermediate = new Option<int>("--intermediate-size") { Description = "MLP width.", DefaultValueFactory = _ => defaults.IntermediateSize };
        var shards = new Option<int>("--shards") { Description = "Safetensors shards (1 = a single model.safetensors).", DefaultValueFactory = _ => defaults.Shards };
        var seed = new Option<int>("--seed") { Description = "Initialisation seed.", DefaultValueFactory = _ => defaults.Seed };
        var noTokenizer = new Option<bool>("--no-tokenizer") { Description = "Write no tokenizer (vocabulary of 512 ids; use eval --input-ids).", DefaultValueFactory = _ => false };

        var command = new Command("init-tiny", "Write a random tiny model (Hugging Face layout, GPT-2 tokenizer) for trying the other commands.")
        {
            output, modelType, layers, hidden, heads, kvHeads, intermediate, shards, seed, noTokenizer,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            string directory = parse.GetValue(output)!;
            var spec = new TinyModelSpec
            {
                ModelType = parse.GetValue(modelType)!,
                Layers = parse.GetValue(layers),
                HiddenSize = parse.GetValue(hidden),
                Heads = parse.GetValue(heads),
                KeyValueHeads = parse.GetValue(kvHeads),
                IntermediateSize = parse.GetValue(intermediate),
                Shards = parse.GetValue(shards),
                Seed = parse.GetValue(seed),
                WithTokenizer = !parse.GetValue(noTokenizer),
            };
            if (spec.HiddenSize <= 0) throw new UsageException($"--hidden-size must be positive (got {spec.HiddenSize}).");
            if (spec.IntermediateSize <= 0) throw new UsageException($"--intermediate-size must be positive (got {spec.IntermediateSize}).");
            if (spec.KeyValueHeads <= 0 || spec.Heads % spec.KeyValueHeads != 0)
                throw new UsageException($"--kv-heads ({spec.KeyValueHeads}) must be positive and divide --heads ({spec.Heads}).");
            var config = TinyModel.Write(directory, spec);
            context.Out.WriteLine($"Wrote a random {config.ModelType} model ({config.NumHiddenLayers} layers, hidden size {config.HiddenSize}, vocabulary {config.VocabSize}{(spec.WithTokenizer ? ", GPT-2 tokenizer" : ", no tokenizer")}) to {Path.GetFullPath(directory)}");
            return ExitCodes.Success;
        }));
        return command;
    }
}
