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
        var output = FlagValues.Option<string>("--out", "Folder to write config.json, model.safetensors and (unless --no-tokenizer) GPT-2's tokenizer into.", required: true);
        var modelType = FlagValues.Option<string>("--model-type", "Architecture.").WithDefault(defaults.ModelType).OneOf("llama", "mistral", "qwen2");
        var layers = Flags.Layers.Option<int>().WithDefault(defaults.Layers);
        var hidden = Flags.HiddenSize.Option<int>().WithDefault(defaults.HiddenSize);
        var heads = Flags.Heads.Option<int>("They must divide --hidden-size.").WithDefault(defaults.Heads);
        var kvHeads = Flags.KvHeads.Option<int>().WithDefault(defaults.KeyValueHeads);
        var intermediate = Flags.IntermediateSize.Option<int>().WithDefault(defaults.IntermediateSize);
        var shards = FlagValues.Option<int>("--shards", "Safetensors shards (1 = a single model.safetensors).").WithDefault(defaults.Shards);
        var seed = Flags.Seed.Option<int>("Seeds the initialisation.").WithDefault(defaults.Seed);
        var noTokenizer = FlagValues.Option<bool>("--no-tokenizer", "Write no tokenizer (vocabulary of 512 ids; use eval --input-ids).").WithDefault(false);

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
            var config = TinyModel.Write(directory, spec);
            context.Out.WriteLine($"Wrote a random {config.ModelType} model ({config.NumHiddenLayers} layers, hidden size {config.HiddenSize}, vocabulary {config.VocabSize}{(spec.WithTokenizer ? ", GPT-2 tokenizer" : ", no tokenizer")}) to {Path.GetFullPath(directory)}");
            return ExitCodes.Success;
        }, FlagOf));
        return command;
    }

    // The flag of each property of TinyModelSpec.
    static readonly Dictionary<string, string> FlagNames = new()
    {
        [nameof(TinyModelSpec.ModelType)] = "--model-type",
        [nameof(TinyModelSpec.Layers)] = Flags.Layers.Name,
        [nameof(TinyModelSpec.HiddenSize)] = Flags.HiddenSize.Name,
        [nameof(TinyModelSpec.Heads)] = Flags.Heads.Name,
        [nameof(TinyModelSpec.KeyValueHeads)] = Flags.KvHeads.Name,
        [nameof(TinyModelSpec.IntermediateSize)] = Flags.IntermediateSize.Name,
        [nameof(TinyModelSpec.Shards)] = "--shards",
    };

    static string FlagOf(string option) => FlagNames.GetValueOrDefault(option) ?? option;
}
