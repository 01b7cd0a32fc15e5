using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>Parses the device and dtype names users write in options and config files.</summary>
public static class TensorSettings
{
    /// <summary>The dtype names accepted, as Hugging Face's <c>torch_dtype</c> spells them.</summary>
    public static readonly IReadOnlyList<string> DTypeNames = new[] { "float32", "bfloat16", "float16", "float64" };

    /// <summary>The name <see cref="ResolveDevice"/>'s errors give the device's option unless the caller names it.</summary>
    public const string DeviceOption = "Device";

    /// <summary>The name <see cref="ResolveDType"/>'s errors give the dtype's option unless the caller names it.</summary>
    public const string DTypeOption = "DType";

    /// <summary>
    /// "auto", "cpu", "cuda" or "cuda:N". "auto" is GPU <paramref name="gpuDeviceId"/> when one is given (ML.NET's
    /// <c>MLContext.GpuDeviceId</c>), falling back to the CPU where CUDA is unavailable only if
    /// <paramref name="fallbackToCpu"/> (<c>MLContext.FallbackToCpu</c>), as ML.NET's TorchSharp trainers do; without an
    /// id, CUDA when available, else the CPU.
    /// </summary>
    /// <param name="name">The device as the user wrote it.</param>
    /// <param name="option">
    /// The option that holds <paramref name="name"/>, as the caller's record names it (a stage's option field, a
    /// parameter): errors are <see cref="OptionException"/>s that name it, for the caller to word in its own vocabulary.
    /// </param>
    /// <param name="gpuDeviceId">MLContext.GpuDeviceId, or null.</param>
    /// <param name="fallbackToCpu">MLContext.FallbackToCpu.</param>
    /// <exception cref="OptionException">
    /// <paramref name="name"/> is not a device, asks for CUDA where there is none, or asks for a GPU id this machine lacks
    /// without the fallback; <see cref="OptionException.Option"/> is <paramref name="option"/>, the value <paramref name="name"/>.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="gpuDeviceId"/> is negative.</exception>
    public static Device ResolveDevice(string name, string option = DeviceOption, int? gpuDeviceId = null, bool fallbackToCpu = true)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentException.ThrowIfNullOrEmpty(option);
        string n = name.Trim().ToLowerInvariant();
        string rule = "{" + option + "} '{value}' ";
        if (n == "auto" && gpuDeviceId is int id)
        {
            // MLContext's own property, not an option of the caller's: there is no option name to word it with.
            if (id < 0) throw new ArgumentOutOfRangeException(nameof(gpuDeviceId), id, "MLContext.GpuDeviceId must be 0 or more.");
            if (cuda.is_available() && id < cuda.device_count()) return device($"cuda:{id}");
            if (fallbackToCpu) return CPU;
            throw new OptionException(option, name, rule + (cuda.is_available()
                ? $"asks for MLContext.GpuDeviceId {id}, but this machine has {cuda.device_count()} CUDA device(s), and MLContext.FallbackToCpu is false"
                : $"asks for MLContext.GpuDeviceId {id}, but no CUDA device is available, and MLContext.FallbackToCpu is false"));
        }
        if (n == "auto") return cuda.is_available() ? CUDA : CPU;
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new OptionException(option, name, rule + "asks for CUDA, but no CUDA device is available (on a GPU machine, build with -p:TorchBackend=cuda, or run on a CUDA PyTorch's libtorch: see the README's backend section)");
            return device(n);
        }
        throw new OptionException(option, name, rule + "is not a device; use auto, cpu, cuda or cuda:N");
    }

    /// <summary>float32, bfloat16, float16 or float64 (also "auto": float32 on CPU, bfloat16 on CUDA).</summary>
    /// <param name="name">The dtype as the user wrote it (fp32, bf16, fp16 and fp64 are accepted too).</param>
    /// <param name="device">The device the tensors live on, which "auto" depends on.</param>
    /// <param name="option">The option that holds <paramref name="name"/>, as the caller's record names it (see <see cref="ResolveDevice"/>).</param>
    /// <exception cref="OptionException"><paramref name="name"/> is not a dtype; it names <paramref name="option"/> and has <paramref name="name"/> as its value.</exception>
    public static ScalarType ResolveDType(string name, Device device, string option = DTypeOption)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentException.ThrowIfNullOrEmpty(option);
        return name.Trim().ToLowerInvariant() switch
        {
            "auto" => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
            "float32" or "fp32" => ScalarType.Float32,
            "bfloat16" or "bf16" => ScalarType.BFloat16,
            "float16" or "fp16" => ScalarType.Float16,
            "float64" or "fp64" => ScalarType.Float64,
            _ => throw new OptionException(option, name, "{" + option + "} '{value}' is not supported; use auto, " + string.Join(", ", DTypeNames)),
        };
    }

    /// <summary>The Hugging Face name of a dtype.</summary>
    public static string Name(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64",
        _ => throw new ArgumentException($"dtype {dtype} is not a model dtype.", nameof(dtype)),
    };
}
