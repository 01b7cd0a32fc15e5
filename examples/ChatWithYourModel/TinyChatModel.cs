using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Examples.ChatWithYourModel;

/// <summary>
/// A random tiny chat model in the Hugging Face layout, as Qwen2's instruct models lay theirs out: a byte-level
/// tokenizer (one token per UTF-8 byte, so a 512-row output layer suffices) with ChatML's <c>&lt;|im_start|&gt;</c> and
/// <c>&lt;|im_end|&gt;</c> as added special tokens, a ChatML <c>chat_template</c> in tokenizer_config.json,
/// <c>&lt;|im_end|&gt;</c> as <c>eos_token</c> and, with <c>&lt;|endoftext|&gt;</c>, as generation_config.json's
/// <c>eos_token_id</c> (what ends a reply).
/// </summary>
public static class TinyChatModel
{
    /// <summary>The id of <c>&lt;|im_start|&gt;</c>.</summary>
    public const int ImStartId = TokenizerFiles.BytesEndOfTextId + 1;
    /// <summary>The id of <c>&lt;|im_end|&gt;</c>.</summary>
    public const int ImEndId = TokenizerFiles.BytesEndOfTextId + 2;

    /// <summary>ChatML, as Qwen2's template writes it without its default system prompt.</summary>
    public const string ChatTemplate =
        "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}" +
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

    /// <summary>Writes the model into <paramref name="directory"/>.</summary>
    /// <param name="directory">The model directory (created or overwritten).</param>
    /// <param name="hiddenSize">Hidden size (4 heads, 2 key/value heads, 2 layers).</param>
    /// <param name="chatTemplate">The template to write; null writes none (a base model).</param>
    /// <param name="seed">Initialisation seed.</param>
    public static void Write(string directory, int hiddenSize = 64, string? chatTemplate = ChatTemplate, int seed = 1)
    {
        // No GPT-2 tokenizer: a 512-id vocabulary, then the byte-level tokenizer with ChatML's tokens added.
        TinyModel.Write(directory, new TinyModelSpec { Layers = 2, HiddenSize = hiddenSize, Heads = 4, KeyValueHeads = 2, IntermediateSize = 2 * hiddenSize, Seed = seed, WithTokenizer = false });
        TokenizerFiles.WriteBytes(directory);

        string tokenizerPath = Path.Combine(directory, "tokenizer.json");
        var tokenizer = JsonNode.Parse(File.ReadAllText(tokenizerPath))!.AsObject();
        var added = tokenizer["added_tokens"]!.AsArray();
        foreach (var (id, content) in new[] { (ImStartId, "<|im_start|>"), (ImEndId, "<|im_end|>") })
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        File.WriteAllText(tokenizerPath, tokenizer.ToJsonString());

        var config = new JsonObject
        {
            ["add_prefix_space"] = false, ["bos_token"] = null, ["eos_token"] = "<|im_end|>", ["pad_token"] = TokenizerFiles.Gpt2EndOfText,
            ["unk_token"] = null, ["model_max_length"] = 32768, ["tokenizer_class"] = "Qwen2Tokenizer",
        };
        if (chatTemplate is not null) config["chat_template"] = chatTemplate;
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString(new() { WriteIndented = true }));
        File.WriteAllText(Path.Combine(directory, "generation_config.json"), new JsonObject
        {
            ["eos_token_id"] = new JsonArray(ImEndId, TokenizerFiles.BytesEndOfTextId), ["pad_token_id"] = TokenizerFiles.BytesEndOfTextId,
            ["do_sample"] = false, ["max_new_tokens"] = 32,
        }.ToJsonString(new() { WriteIndented = true }));
    }
}
