using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>In-place target += alpha · other, with the alpha scalar kept alive through the native call.</summary>
internal static class ScaledAddition
{
    /// <summary>
    /// TorchSharp 0.107's <c>add_(other, alpha)</c> hands the native call only the handle of the <see cref="Scalar"/> a
    /// double converts to, and a Scalar frees its native value in its finalizer. A collection triggered by another
    /// thread during the call can finalize the converted Scalar first, and libtorch then reads a freed scalar (seen as
    /// "Expected false to be true ... toFloat" in ranks under mpirun). Holding the Scalar until the call returns closes
    /// that window for the alphas this library passes.
    /// </summary>
    public static Tensor AddScaled_(this Tensor target, Tensor other, double alpha)
    {
        using Scalar scale = alpha.ToScalar();
        return target.add_(other, alpha: scale);
    }
}
