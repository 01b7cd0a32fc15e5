using Microsoft.ML.Runtime;
using Microsoft.ML.Seco.Chunkwise;

namespace Microsoft.ML.Seco;

/// <summary>Entry points on ML.NET's catalogs: <c>mlContext.Transforms.Text.ChunkwiseLora(...)</c>.</summary>
public static class SecoCatalog
{
    /// <summary>
    /// Chunk-wise long-context fine-tuning of a Hugging Face causal LM on a text column. <paramref name="sampledChunks"/>
    /// null trains with exact gradients (SeCO); a number backpropagates that many chunks per sequence (SpaCO).
    /// </summary>
    public static ChunkwiseLoraTrainer ChunkwiseLora(this TransformsCatalog.TextTransforms catalog, string modelPath,
        string textColumnName = "Text", int chunkSize = SecoDefaults.ChunkSize, int? sampledChunks = null)
        => ChunkwiseLora(catalog, new ChunkwiseLoraTrainer.Options
        {
            ModelPath = modelPath, TextColumnName = textColumnName, ChunkSize = chunkSize, SampledChunks = sampledChunks,
            Sampler = ChunkSampler.Bernoulli,
        });

    /// <summary>Chunk-wise long-context fine-tuning with every option.</summary>
    public static ChunkwiseLoraTrainer ChunkwiseLora(this TransformsCatalog.TextTransforms catalog, ChunkwiseLoraTrainer.Options options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ChunkwiseLoraTrainer(EnvironmentOf(catalog), options);
    }

    // ML.NET keeps a catalog's environment behind an internal interface; the private field `_env` holds the MLContext's
    // environment (its channels feed MLContext.Log). Pinned by SecoCatalogTests against Microsoft.ML 5.0.1; if a future
    // ML.NET renames it, this fails with a message that names the public alternative.
    static IHostEnvironment EnvironmentOf(TransformsCatalog.TextTransforms catalog)
    {
        var field = typeof(TransformsCatalog.TextTransforms).GetField("_env", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);
        return field?.GetValue(catalog) as IHostEnvironment
            ?? throw new InvalidOperationException("This ML.NET version hides the catalog's environment differently; create the stage with new ChunkwiseLoraTrainer(mlContext, options).");
    }
}
