using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;

namespace Microsoft.ML.Seco.Cli.Commands;

/// <summary>Checks and loading shared by the commands that run a model (their flags are <see cref="Flags"/>).</summary>
internal static class ModelLoading
{
    /// <summary>
    /// Checks that <paramref name="directory"/> is a model directory before anything reads it, so that a typo is reported
    /// as such rather than as a missing tokenizer or config file. <paramref name="flag"/> is how errors name it.
    /// </summary>
    public static void RequireModelDirectory(string directory, string flag = "--model", bool needsConfig = true)
    {
        if (File.Exists(directory)) throw new UsageException($"{flag} '{directory}' is a file; expected a Hugging Face model directory.");
        if (!Directory.Exists(directory)) throw new UsageException($"{flag} '{directory}': the directory does not exist.");
        if (needsConfig && !File.Exists(Path.Combine(directory, "config.json")))
            throw new UsageException($"{flag} '{directory}' has no config.json: expected a Hugging Face model directory (config.json, safetensors, tokenizer files).");
    }

    /// <summary>Checks an --adapter directory the same way.</summary>
    public static void RequireAdapterDirectory(string? directory)
    {
        if (directory is null) return;
        if (!Directory.Exists(directory)) throw new UsageException($"--adapter '{directory}': the directory does not exist.");
    }

    /// <summary>
    /// Loads the model (and adapter) in evaluation mode. A bad device or dtype is an <see cref="OptionException"/> naming
    /// <see cref="TensorSettings.DeviceOption"/> or <see cref="TensorSettings.DTypeOption"/>, which the command's
    /// vocabulary words as <see cref="Flags.Device"/> or <see cref="Flags.DType"/>.
    /// </summary>
    public static CausalLM Load(string directory, string? adapter, string dtypeName, string deviceName)
    {
        RequireModelDirectory(directory);
        RequireAdapterDirectory(adapter);
        var device = TensorSettings.ResolveDevice(deviceName);
        var dtype = TensorSettings.ResolveDType(dtypeName, device);
        // An adapter trained with other rotary settings than the base model's carries them: the model is built with them.
        var model = PeftAdapter.LoadWithBase(directory, adapter, dtype, device);
        model.eval();
        return model;
    }
}
