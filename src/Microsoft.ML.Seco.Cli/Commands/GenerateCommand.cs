using System.CommandLine;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco generate: continues a prompt with TextGenerator, stopping at the tokenizer's end-of-sequence tokens.</summary>
internal static class GenerateCommand
{
    public static Command Create(CliContext context)
    {
        var defaults = new GenerationOptions();
        var model = Flags.Model.Option<string>(required: true);
        var adapter = Flags.Adapter.Option<string?>();
        var prompt = new Option<string?>("--prompt") { Description = "The text to continue; with --chat, the user's message. Required unless --chat --messages." };
        var chat = new Option<bool>("--chat") { Description = "Chat: render the conversation (--prompt as one user message, or --messages) with the model's chat template and its generation prompt, and stream the assistant's reply.", DefaultValueFactory = _ => false };
        var system = new Option<string?>("--system") { Description = "With --chat --prompt: a system message before the user's." }.WithDefaultNote("none");
        var messages = new Option<string?>("--messages") { Description = "With --chat: a JSON file holding the conversation, a messages array ([{\"role\", \"content\"}, ...]) or {\"messages\", \"tools\"}." }.WithDefaultNote("none");
        var maxNewTokens = FlagValues.Option<int>(MaxNewTokens, "Tokens to generate at most, at least 0.").WithDefault(defaults.MaxNewTokens);
        var temperature = FlagValues.Option<double>(Temperature, "0 = greedy; otherwise logits are divided by it before sampling.").WithDefault(defaults.Temperature);
        var topP = FlagValues.Option<double>(TopP, "Nucleus sampling threshold in (0, 1]; 1 = off.").WithDefault(defaults.TopP);
        var seed = Flags.Seed.Option<int>("Seeds the sampling.").WithDefault(0);
        var chunkSize = Flags.ChunkSize.Option<int>("Here: the prompt's tokens per forward pass while prefilling.").WithDefault(defaults.PrefillChunkSize);
        var device = Flags.Device.Option<string>().WithDefault("auto");
        var dtype = Flags.DType.Option<string>().WithDefault("float32");
        var json = new Option<bool>("--json") { Description = "Print one JSON object {\"completion\", \"prompt_tokens\", \"generated_tokens\"} (with --chat also \"finish_reason\") instead of the text.", DefaultValueFactory = _ => false };

        var command = new Command("generate", "Continue a prompt with the model (and adapter), or with --chat reply to a conversation; prints the generated text.")
        {
            model, adapter, prompt, chat, system, messages, maxNewTokens, temperature, topP, seed, chunkSize, device, dtype, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = parse.GetValue(maxNewTokens),
                Temperature = parse.GetValue(temperature),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
                PrefillChunkSize = parse.GetValue(chunkSize),
            };
            // The record's rules; its errors name the flags (FlagOf).
            options.Validate();
            string directory = parse.GetValue(model)!;
            ModelLoading.RequireModelDirectory(directory);
            ModelLoading.RequireAdapterDirectory(parse.GetValue(adapter));
            string? promptText = parse.GetValue(prompt), systemText = parse.GetValue(system), messagesPath = parse.GetValue(messages);
            if (parse.GetValue(chat))
            {
                if ((promptText is null) == (messagesPath is null)) throw new UsageException("generate --chat: give exactly one of --prompt (one user message) and --messages (a conversation file).");
                if (systemText is not null && messagesPath is not null) throw new UsageException("--system goes with --prompt; a --messages file holds its own system message.");
                return ChatGeneration.Run(context, new ChatGeneration.Request(directory, parse.GetValue(adapter), promptText, systemText, messagesPath,
                    options, parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json)));
            }
            if (messagesPath is not null || systemText is not null) throw new UsageException($"{(messagesPath is not null ? "--messages" : "--system")} needs --chat.");
            string text = promptText ?? throw new UsageException("--prompt is required (or --chat --messages FILE).");
            var tokenizer = ModelTokenizer.Load(directory);
            var ids = tokenizer.Encode(text, addBos: true);
            if (ids.Count == 0) throw new UsageException("--prompt is empty after tokenization.");
            using var m = ModelLoading.Load(directory, parse.GetValue(adapter), parse.GetValue(dtype)!, parse.GetValue(device)!);
            var generated = TextGenerator.Generate(m, ids, options with { StopTokens = tokenizer.EosIds });
            string completion = tokenizer.Decode(generated);
            if (parse.GetValue(json))
                Json.WriteLine(context.Out, new JsonObject
                {
                    ["completion"] = completion,
                    ["prompt_tokens"] = ids.Count,
                    ["generated_tokens"] = generated.Count,
                });
            else context.Out.WriteLine(completion);
            return ExitCodes.Success;
        }, FlagOf));
        return command;
    }

    const string MaxNewTokens = "--max-new-tokens", Temperature = "--temperature", TopP = "--top-p";

    // The flag of each field of GenerationOptions that the command sets, and of the device and dtype ModelLoading resolves.
    static readonly Dictionary<string, string> FlagNames = new()
    {
        [TensorSettings.DeviceOption] = Flags.Device.Name,
        [TensorSettings.DTypeOption] = Flags.DType.Name,
        [nameof(GenerationOptions.MaxNewTokens)] = MaxNewTokens,
        [nameof(GenerationOptions.Temperature)] = Temperature,
        [nameof(GenerationOptions.TopP)] = TopP,
        [nameof(GenerationOptions.Seed)] = Flags.Seed.Name,
        [nameof(GenerationOptions.PrefillChunkSize)] = Flags.ChunkSize.Name,
    };

    static string FlagOf(string option) => FlagNames.GetValueOrDefault(option) ?? option;
}
