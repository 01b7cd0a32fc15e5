using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>Parses the device and dtype names users write in options and config files.</summary>
public static class TensorSettings
{
    /// <summary>The dtype names accepted, as Hugging Face's <c>torch_dtype</c> spells them.</summary>
    public static readonly IReadOnlyList<string> DTypeNames = new[] { "float32", "bfloat16", "float16", "float64" };

    /// <summary>
    /// "auto", "cpu", "cuda" or "cuda:N". "auto" is GPU <paramref name="gpuDeviceId"/> when one is given (ML.NET's
    /// <c>MLContext.GpuDeviceId</c>), falling back to the CPU where CUDA is unavailable only if
    /// <paramref name="fallbackToCpu"/> (<c>MLContext.FallbackToCpu</c>), as ML.NET's TorchSharp trainers do; without an
    /// id, CUDA when available, else the CPU.
    /// </summary>
    public static Device ResolveDevice(string name, string option = "Device", int? gpuDeviceId = null, bool fallbackToCpu = true)
    {
        string n = name.Trim().ToLowerInvariant();
        if (n == "auto" && gpuDeviceId is int id)
        {
            if (id < 0) throw new ArgumentOutOfRangeException(nameof(gpuDeviceId), id, "MLContext.GpuDeviceId must be 0 or more.");
            if (cuda.is_available() && id < cuda.device_count()) return device($"cuda:{id}");
            if (fallbackToCpu) return CPU;
            throw new ArgumentException(cuda.is_available()
                ? $"{option} 'auto' asks for MLContext.GpuDeviceId {id}, but this machine has {cuda.device_count()} CUDA device(s), and MLContext.FallbackToCpu is false."
                : $"{option} 'auto' asks for MLContext.GpuDeviceId {id}, but no CUDA device is available, and MLContext.FallbackToCpu is false.", option);
        }
        if (n == "auto") return cuda.is_available() ? CUDA : CPU;
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException($"{option} '{name}' asks for CUDA, but no CUDA device is available (on a GPU machine, build with -p:TorchBackend=cuda, or run on a CUDA PyTorch's libtorch: see the README's backend section).", option);
            return device(n);
        }
        throw new ArgumentException($"{option} '{name}' is not a device; use auto, cpu, cuda or cuda:N.", option);
    }

    /// <summary>float32, bfloat16, float16 or float64 (also "auto": float32 on CPU, bfloat16 on CUDA).</summary>
    public static ScalarType ResolveDType(string name, Device device, string option = "DType") => name.Trim().ToLowerInvariant() switch
    {
        "auto" => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
        "float32" or "fp32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" => ScalarType.Float16,
        "float64" or "fp64" => ScalarType.Float64,
        _ => throw new ArgumentException($"{option} '{name}' is not supported; use auto, {string.Join(", ", DTypeNames)}.", option),
    };

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
