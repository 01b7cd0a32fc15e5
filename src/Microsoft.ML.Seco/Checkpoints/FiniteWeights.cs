using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>
/// The one check every save of trained weights makes first (adapter, merged model, trainer state): a NaN or an
/// infinity that escaped training is refused before anything is written, so the last good file on disk stays.
/// </summary>
internal static class FiniteWeights
{
    /// <summary>
    /// Throws, naming the first tensor that holds a NaN or an infinity by its <c>Label</c> (e.g. "Weight 'lm_head.weight'"),
    /// with <paramref name="consequence"/> appended.
    /// </summary>
    /// <exception cref="InvalidOperationException">A floating-point tensor holds NaN or infinite values.</exception>
    public static void Require(IEnumerable<(string Label, Tensor? Tensor)> tensors, string consequence)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (label, tensor) in tensors)
            if (tensor is not null && tensor.is_floating_point() && !isfinite(tensor).all().item<bool>())
                throw new InvalidOperationException($"{label} holds NaN or infinite values: {consequence}");
    }
}
