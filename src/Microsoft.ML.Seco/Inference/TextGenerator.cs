using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Inference;

/// <summary>Decoding settings.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most. Default 64.</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>0 = greedy; otherwise logits are divided by it before sampling. Default 0.</summary>
    public double Temperature { get; init; }
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches it. Default 1 (off).</summary>
    public double TopP { get; init; } = 1;
    /// <summary>Prompt tokens fed per forward pass while prefilling, bounding activation memory. Default 512.</summary>
    public int PrefillChunkSize { get; init; } = 512;
    /// <summary>Sampling seed.</summary>
    public long Seed { get; init; }
    /// <summary>Tokens that end generation (the tokenizer's eos ids).</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = Array.Empty<int>();

    /// <summary>Throws on values out of range, naming the option.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "MaxNewTokens must be >= 0.");
        if (!(Temperature >= 0)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be >= 0.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in (0, 1].");
        if (PrefillChunkSize <= 0) throw new ArgumentOutOfRangeException(nameof(PrefillChunkSize), PrefillChunkSize, "PrefillChunkSize must be positive.");
    }
}

/// <summary>Autoregressive generation with chunked prefill of a long prompt into the key/value cache.</summary>
public static class TextGenerator
{
    /// <summary>Continues <paramref name="prompt"/> (token ids); returns only the new tokens, without the stop token.</summary>
    public static IReadOnlyList<int> Generate(CausalLM model, IReadOnlyList<int> prompt, GenerationOptions options)
    {
        options.Validate();
        if (prompt.Count == 0) throw new ArgumentException("The prompt must contain at least one token.", nameof(prompt));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var generator = new Generator((ulong)options.Seed, CPU);
        using var cache = new KvCache(model.Config, 1, prompt.Count + options.MaxNewTokens, model.DType, model.Device);

        Tensor? lastLogits = null;
        var promptIds = tensor(prompt.Select(t => (long)t).ToArray(), new long[] { 1, prompt.Count }, device: model.Device);
        foreach (var chunk in model.Prefill(promptIds, cache, options.PrefillChunkSize))
        {
            lastLogits?.Dispose();
            lastLogits = model.Logits(chunk.Hidden.narrow(1, chunk.Length - 1, 1)).reshape(-1).MoveToOuterDisposeScope();
        }

        var output = new List<int>();
        long position = prompt.Count;
        while (output.Count < options.MaxNewTokens)
        {
            using var stepScope = NewDisposeScope();
            int next = Pick(lastLogits!, options, generator);
            if (options.StopTokens.Contains(next)) break;
            output.Add(next);
            if (output.Count == options.MaxNewTokens) break;
            var ids = tensor(new long[] { next }, new long[] { 1, 1 }, device: model.Device);
            var (hidden, chunkCache) = model.ForwardChunk(ids, position, cache);
            cache.Write(position, chunkCache);
            position++;
            var previous = lastLogits;
            lastLogits = model.Logits(hidden).reshape(-1).MoveToOuterDisposeScope();
            previous!.Dispose();
        }
        return output;
    }

    static int Pick(Tensor logits, GenerationOptions options, Generator generator)
    {
        if (options.Temperature == 0) return (int)logits.argmax().item<long>();
        var probs = nn.functional.softmax(logits.to(ScalarType.Float64).cpu() / options.Temperature, 0);
        if (options.TopP < 1)
        {
            var (sorted, order) = probs.sort(descending: true);
            var cumulative = sorted.cumsum(0);
            // Keep every token whose preceding mass is below top_p (so the most likely token always stays).
            var drop = (cumulative - sorted) >= options.TopP;
            sorted = sorted.masked_fill(drop, 0);
            probs = zeros_like(probs).scatter_(0, order, sorted);
        }
        return (int)multinomial(probs / probs.sum(), 1, generator: generator).item<long>();
    }
}
