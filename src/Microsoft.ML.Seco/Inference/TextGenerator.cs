using Microsoft.ML.Seco.Model;

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
    /// <summary>Top-k sampling: keep only the k most likely tokens (applied before <see cref="TopP"/>, as in transformers). Default 0 (off).</summary>
    public int TopK { get; init; }
    /// <summary>Prompt tokens fed per forward pass while prefilling, bounding activation memory. Default 512.</summary>
    public int PrefillChunkSize { get; init; } = 512;
    /// <summary>Sampling seed: the same seed, prompt and settings give the same tokens.</summary>
    public long Seed { get; init; }
    /// <summary>Tokens that end generation (the tokenizer's eos ids).</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = Array.Empty<int>();

    /// <summary>Throws an <see cref="OptionException"/> on values out of range, naming the option.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new OptionException(nameof(MaxNewTokens), MaxNewTokens, "{MaxNewTokens} must be at least 0");
        if (!(Temperature >= 0)) throw new OptionException(nameof(Temperature), Temperature, "{Temperature} must be at least 0 (0 = greedy)");
        if (!(TopP > 0 && TopP <= 1)) throw new OptionException(nameof(TopP), TopP, "{TopP} must be in (0, 1]");
        if (TopK < 0) throw new OptionException(nameof(TopK), TopK, "{TopK} must be at least 0 (0 = off)");
        if (PrefillChunkSize <= 0) throw new OptionException(nameof(PrefillChunkSize), PrefillChunkSize, "{PrefillChunkSize} must be at least 1");
    }
}

/// <summary>Autoregressive generation with chunked prefill of a long prompt into the key/value cache.</summary>
public static class TextGenerator
{
    /// <summary>Continues <paramref name="prompt"/> (token ids); returns only the new tokens, without the stop token.</summary>
    /// <param name="model">The model.</param>
    /// <param name="prompt">Prompt token ids (at least one).</param>
    /// <param name="options">Decoding settings.</param>
    /// <param name="cancellationToken">Checked between prefill blocks and between tokens.</param>
    public static IReadOnlyList<int> Generate(CausalLM model, IReadOnlyList<int> prompt, GenerationOptions options,
        CancellationToken cancellationToken = default)
    {
        using var session = GenerationSession.Start(model, prompt, options, cancellationToken);
        while (session.TryNext(out _, cancellationToken)) { }
        return session.Generated.ToArray();
    }
}
