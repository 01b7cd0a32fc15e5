using System.CommandLine;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;

namespace Microsoft.ML.Seco.Cli.Commands;

/// <summary>Options and loading shared by the commands that run a model.</summary>
internal static class ModelLoading
{
    public static Option<string> ModelOption() => new("--model")
    {
        Description = "Hugging Face model directory (config.json + safetensors; tokenizer files where text is involved).",
        Required = true,
    };

    public static Option<string?> AdapterOption() => new("--adapter")
    {
        Description = "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), e.g. OUTPUT/adapter from seco train. Default: none.",
    };

    public static Option<string> DeviceOption() => new("--device")
    {
        Description = "auto, cpu, cuda or cuda:N.",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<string> DTypeOption(string defaultValue = "float32") => new("--dtype")
    {
        Description = "float32, bfloat16, float16 or float64.",
        DefaultValueFactory = _ => defaultValue,
    };

    /// <summary>Loads the model (and adapter) in evaluation mode.</summary>
    public static CausalLM Load(string directory, string? adapter, string dtypeName, string deviceName)
    {
        if (!Directory.Exists(directory)) throw new UsageException($"--model '{directory}' is not a directory.");
        if (adapter is not null && !Directory.Exists(adapter)) throw new UsageException($"--adapter '{adapter}' is not a directory.");
        var device = TensorSettings.ResolveDevice(deviceName, "--device");
        var dtype = TensorSettings.ResolveDType(dtypeName, device, "--dtype");
        var model = ModelDirectory.Load(directory, dtype, device);
        try
        {
            if (adapter is not null) PeftAdapter.Load(model, adapter);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
