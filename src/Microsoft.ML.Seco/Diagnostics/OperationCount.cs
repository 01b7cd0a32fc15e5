using TorchSharp;

namespace Microsoft.ML.Seco.Diagnostics;

/// <summary>
/// Counts the libtorch calls a piece of work makes from .NET: every operation or view TorchSharp runs creates a tensor
/// wrapper, and TorchSharp counts the wrappers it creates (<see cref="DisposeScopeManager.Statistics"/>). A
/// deterministic count for a given shape, where a GPU's time per launch is not. What runs inside libtorch (autograd's
/// built-in backwards, a compiled TorchScript function's inner operations) is not counted, and neither is what other
/// threads create (on CUDA, custom backwards run on libtorch's device thread).
/// </summary>
public static class OperationCount
{
    /// <summary>Tensor wrappers this thread has created so far.</summary>
    public static long Created
    {
        get
        {
            var statistics = DisposeScopeManager.Statistics;
            return statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount;
        }
    }

    /// <summary>Tensor wrappers <paramref name="work"/> creates on this thread.</summary>
    public static long Of(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        long before = Created;
        work();
        return Created - before;
    }
}
