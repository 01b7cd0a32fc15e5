using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// Wall time of a chunk-wise step's phases (<see cref="Stage1"/>, <see cref="Stage2Forward"/>,
/// <see cref="Stage2Backward"/>, and within them the attention over a prefix), each bounded by a device
/// synchronisation, so that on CUDA a phase is charged with its own kernels rather than with whatever was queued
/// before it. A diagnostic: the synchronisations cost time themselves, so a step timed by phases is slower than one
/// that is not. Attach one to <see cref="Chunkwise.ChunkwiseStep.Phases"/>.
/// </summary>
public sealed class StepPhases
{
    /// <summary>Stage 1: every chunk's keys/values without a graph (and the losses of unselected chunks).</summary>
    public const string Stage1 = "stage1";
    /// <summary>Stage 2's forwards: each selected chunk's graph rebuilt (and, with recompute, its layer inputs).</summary>
    public const string Stage2Forward = "stage2_forward";
    /// <summary>Stage 2's backwards.</summary>
    public const string Stage2Backward = "stage2_backward";
    /// <summary>Attention of a chunk over its prefix in any forward (part of <see cref="Stage1"/> and <see cref="Stage2Forward"/>).</summary>
    public const string AttentionForward = "attention_forward";
    /// <summary>Attention's backward (part of <see cref="Stage2Backward"/>).</summary>
    public const string AttentionBackward = "attention_backward";

    readonly Device _device;
    readonly Dictionary<string, double> _seconds = new();
    readonly object _lock = new();

    /// <summary>Times phases of steps that run on <paramref name="device"/>.</summary>
    public StepPhases(Device device) => _device = device;

    /// <summary>Seconds per phase accumulated since creation or <see cref="Reset"/>.</summary>
    public IReadOnlyDictionary<string, double> Seconds
    {
        get { lock (_lock) return new Dictionary<string, double>(_seconds); }
    }

    /// <summary>Forgets what was measured.</summary>
    public void Reset()
    {
        lock (_lock) _seconds.Clear();
    }

    /// <summary>Starts timing <paramref name="phase"/> after a device synchronisation; disposing ends it after another.</summary>
    public IDisposable Measure(string phase)
    {
        Synchronize();
        return new Interval(this, phase, Stopwatch.StartNew());
    }

    void Synchronize()
    {
        if (_device.type == DeviceType.CUDA) cuda.synchronize(_device);
    }

    sealed class Interval(StepPhases owner, string phase, Stopwatch clock) : IDisposable
    {
        public void Dispose()
        {
            owner.Synchronize();
            double seconds = clock.Elapsed.TotalSeconds;
            lock (owner._lock) owner._seconds[phase] = owner._seconds.GetValueOrDefault(phase) + seconds;
        }
    }
}
