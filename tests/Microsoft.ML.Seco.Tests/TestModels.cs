using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests;

/// <summary>Tiny random models and batches shared by the model and engine tests.</summary>
internal static class TestModels
{
    /// <summary>2 layers, 4 query heads over 2 key/value heads (GQA), head_dim 8.</summary>
    public static ModelConfig Llama(int layers = 2, int vocab = 61, string? ropeType = null, bool tied = false) => new()
    {
        ModelType = "llama",
        VocabSize = vocab,
        HiddenSize = 32,
        IntermediateSize = 48,
        NumHiddenLayers = layers,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        HeadDim = 8,
        RmsNormEps = 1e-5,
        RopeTheta = 500000,
        TieWordEmbeddings = tied,
        RopeScaling = ropeType switch
        {
            null => null,
            "llama3" => new RopeScaling { Type = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 16 },
            _ => new RopeScaling { Type = ropeType, Factor = 4 },
        },
    };

    /// <summary>qwen2: q/k/v biases and tied embeddings.</summary>
    public static ModelConfig Qwen2() => Llama() with { ModelType = "qwen2", QkvBias = true, TieWordEmbeddings = true, RopeTheta = 10000 };

    /// <summary>A model with random weights; biases made non-zero so that they matter.</summary>
    public static CausalLM Create(ModelConfig config, ScalarType dtype = ScalarType.Float64, long seed = 7)
    {
        var model = new CausalLM(config, dtype, CPU);
        model.InitializeRandom(seed, std: 0.2);
        using var _ = no_grad();
        var generator = new Generator((ulong)seed + 1, CPU);
        foreach (var (name, p) in model.named_parameters())
            if (name.EndsWith(".bias", StringComparison.Ordinal)) p.copy_(normal(0, 0.2, p.shape, generator: generator, dtype: ScalarType.Float64));
        return model;
    }

    /// <summary>A model with LoRA on every projection, B randomised so that A receives gradient too.</summary>
    public static CausalLM WithLora(CausalLM model, long seed = 11, bool allProjections = true, double dropout = 0)
    {
        LoraAdapters.Attach(model, new LoraConfig
        {
            Rank = 4, Alpha = 8, Dropout = dropout,
            TargetModules = allProjections ? LoraConfig.AttentionProjections.Concat(LoraConfig.MlpProjections).ToArray() : LoraConfig.AttentionProjections,
        });
        using var _ = no_grad();
        var generator = new Generator((ulong)seed, CPU);
        foreach (var (name, p) in model.named_parameters())
            if (name.Contains("lora_B")) p.copy_(normal(0, 0.2, p.shape, generator: generator, dtype: ScalarType.Float64));
        return model;
    }

    /// <summary>Random sequences of the given lengths, right-padded into one batch; labels = ids with some −100.</summary>
    public static TokenBatch Batch(int vocab, int[] lengths, long seed = 3, double ignoredFraction = 0)
    {
        var random = new Random((int)seed);
        var ids = lengths.Select(n => (IReadOnlyList<int>)Enumerable.Range(0, n).Select(_ => random.Next(vocab)).ToArray()).ToArray();
        var labels = ids.Select(s => (IReadOnlyList<int>)s.Select(t => random.NextDouble() < ignoredFraction ? -100 : t).ToArray()).ToArray();
        return TokenBatch.FromSequences(ids, labels, padId: 0, CPU);
    }

    /// <summary>
    /// max over parameter groups of max|a − b| / max|b| (b the reference), refusing a reference with a zero gradient
    /// somewhere, which would make the comparison vacuous.
    /// </summary>
    public static double MaxRelativeError(Dictionary<string, Tensor> actual, Dictionary<string, Tensor> reference)
    {
        Assert.AreEqual(reference.Count, actual.Count, "different parameter sets");
        foreach (var (name, r) in reference)
            Assert.IsTrue(r.abs().max().item<double>() > 0, $"reference gradient of {name} is zero: the check would be vacuous");
        return GradientCheck.Compare(actual, reference).Max(g => g.MaxRelError);
    }
}
