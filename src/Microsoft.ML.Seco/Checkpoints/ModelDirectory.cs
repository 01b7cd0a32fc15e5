using System.Text.Json;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>A Hugging Face model directory: config.json, safetensors weights (single or sharded), tokenizer files.</summary>
public static class ModelDirectory
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Loads the model in <paramref name="directory"/> onto <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public static CausalLM Load(string directory, ScalarType dtype, Device device)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        return Load(directory, ModelConfig.Load(directory), dtype, device);
    }

    /// <summary>
    /// Loads the weights in <paramref name="directory"/> into a model of <paramref name="config"/>: the directory's own
    /// config.json with settings that leave the weights' shapes alone changed, such as the rotary scaling of a
    /// fine-tuning run (<see cref="ChunkwiseLoraTrainer.Options.ApplyRope(ModelConfig)"/>, <see cref="Lora.PeftAdapter.ConfigFor"/>).
    /// </summary>
    public static CausalLM Load(string directory, ModelConfig config, ScalarType dtype, Device device)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        var model = new CausalLM(config, dtype, device);
        try
        {
            HuggingFaceCheckpoint.LoadInto(model, directory, dtype, device,
                // Tied checkpoints sometimes still store lm_head.weight; older ones store rotary inv_freq buffers.
                ignore: name => (config.TieWordEmbeddings && name == "lm_head.weight") || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>
    /// Writes config.json and the model's own weights (<see cref="CausalLM.OwnParameters"/>: an adapter's are written by
    /// <see cref="Lora.PeftAdapter"/>), optionally
    /// sharded. To export a fine-tuned model as a plain checkpoint, merge its adapters first.
    /// </summary>
    /// <exception cref="InvalidOperationException">A weight holds NaN or infinite values (nothing is written).</exception>
    public static void Save(CausalLM model, string directory, ScalarType? dtype = null, long? maxShardBytes = null)
    {
        var tensors = model.OwnParameters().Select(p => (p.Name, (Tensor)p.Parameter)).ToList();
        FiniteWeights.Require(tensors.Select(t => ($"Weight '{t.Name}'", (Tensor?)t.Item2)), $"the model is not saved, so '{directory}' keeps what it held.");
        Directory.CreateDirectory(directory);
        HuggingFaceCheckpoint.Save(tensors, directory, dtype, maxShardBytes);
        var json = model.Config.ToJson();
        json["torch_dtype"] = TensorSettings.Name(dtype ?? model.DType);
        AtomicFile.Write(Path.Combine(directory, "config.json"), System.Text.Encoding.UTF8.GetBytes(json.ToJsonString(Indented)));
    }
}
