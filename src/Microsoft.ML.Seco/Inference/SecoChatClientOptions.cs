using System.Text.Json;

namespace Microsoft.ML.Seco.Inference;

/// <summary>
/// A <see cref="SecoChatClient"/>'s defaults; a request's <c>ChatOptions</c> overrides each of them that it sets.
/// The defaults are greedy decoding (<see cref="Temperature"/> 0), at most 512 new tokens and no stop sequences;
/// <see cref="FromGenerationConfig"/> takes them from a model's generation_config.json as transformers'
/// <c>generate()</c> does (sampling when it says <c>do_sample</c>).
/// </summary>
public sealed record SecoChatClientOptions
{
    /// <summary>The model id reported in responses and metadata; null: the model directory's name where there is one.</summary>
    public string? ModelId { get; init; }

    /// <summary>New tokens per reply at most, when a request does not set <c>MaxOutputTokens</c>. Default 512.</summary>
    public int MaxOutputTokens { get; init; } = 512;

    /// <summary>
    /// 0 = greedy (the argmax at every step, the default); otherwise logits are divided by it and the token is
    /// sampled. A request's <c>Temperature</c> of 0 is greedy too (transformers would refuse it with do_sample).
    /// </summary>
    public double Temperature { get; init; }

    /// <summary>Nucleus sampling threshold in (0, 1]; 1 = off (the default). Only when sampling.</summary>
    public double TopP { get; init; } = 1;

    /// <summary>Top-k sampling: keep the k most likely tokens; 0 = off (the default). Only when sampling.</summary>
    public int TopK { get; init; }

    /// <summary>
    /// Sampling seed when a request sets none; null (the default): every reply draws a fresh one, so only a request
    /// or client seed makes sampling reproducible. Greedy decoding needs none.
    /// </summary>
    public long? Seed { get; init; }

    /// <summary>Text that ends a reply (not included in it), in addition to a request's <c>StopSequences</c>.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>
    /// Token ids that end a reply (not included in it); null (the default): the tokenizer's
    /// <see cref="Tokenization.ModelTokenizer.EosIds"/>, which gathers config.json's and generation_config.json's
    /// <c>eos_token_id</c> (an end-of-turn token such as <c>&lt;|im_end|&gt;</c> or <c>&lt;|eot_id|&gt;</c> is listed
    /// there by chat models) and tokenizer_config.json's <c>eos_token</c>.
    /// </summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }

    /// <summary>Prompt tokens per forward pass while prefilling, bounding activation memory. Default 512.</summary>
    public int PrefillChunkSize { get; init; } = 512;

    /// <summary>
    /// Prompt plus reply tokens at most; null (the default): the model's <c>max_position_embeddings</c>. A reply that
    /// reaches it ends with <c>ChatFinishReason.Length</c>; a prompt that fills it is refused.
    /// </summary>
    public int? ContextLength { get; init; }

    /// <summary>
    /// The decoding defaults of a model directory's generation_config.json, read as transformers reads them: without
    /// <c>do_sample: true</c> decoding is greedy whatever the temperature says; with it, <c>temperature</c> (default 1),
    /// <c>top_p</c> (default 1) and <c>top_k</c> (default 50, transformers' own) apply. <c>max_new_tokens</c> sets
    /// <see cref="MaxOutputTokens"/>; <c>max_length</c> (transformers' default of 20 counts the prompt) is not used.
    /// Without the file, <paramref name="defaults"/> (or the defaults) unchanged.
    /// </summary>
    /// <param name="modelDirectory">A model directory in Hugging Face layout.</param>
    /// <param name="defaults">The options the file's values replace; null: the defaults.</param>
    /// <exception cref="InvalidDataException">The file is not valid JSON, or a value has the wrong type.</exception>
    public static SecoChatClientOptions FromGenerationConfig(string modelDirectory, SecoChatClientOptions? defaults = null)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        var options = defaults ?? new SecoChatClientOptions();
        string path = Path.Combine(modelDirectory, "generation_config.json");
        if (!File.Exists(path)) return options;
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object.");
            JsonElement? Get(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
            if (Get("max_new_tokens") is { } maxNew) options = options with { MaxOutputTokens = maxNew.GetInt32() };
            bool sample = Get("do_sample") is { } doSample && doSample.GetBoolean();
            options = sample
                ? options with
                {
                    Temperature = Get("temperature")?.GetDouble() ?? 1,
                    TopP = Get("top_p")?.GetDouble() ?? 1,
                    TopK = Get("top_k")?.GetInt32() ?? 50,
                }
                : options with { Temperature = 0 };
            return options;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }
}
