using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// How a custom autograd function's backward hands its results to libtorch. On CUDA the autograd engine calls a backward
/// from its own device thread, where none of the step's dispose scopes is current: every wrapper made there (unpacked
/// saved tensors, the incoming gradient, the results) needs an owner, or it keeps its device memory until a garbage
/// collection (the cause of SeCO's 16.8× growth per token on an H200, docs/ENGINE.md). The backward therefore runs in a
/// dispose scope of its own, detaches its results from it and returns them through <see cref="Return"/>.
/// </summary>
/// <typeparam name="TFunction">The function: each keeps its own last results, so that what stays alive between steps
/// does not depend on which function ran last.</typeparam>
internal static class BackwardHandOver<TFunction>
{
    // The engine copies the returned tensors as the call returns, so their wrappers can go at the next call on the same
    // thread (a thread's previous call has returned by then; another thread's may not have): at most one call's
    // gradients per function are held between calls.
    [ThreadStatic] static Tensor[]? _handedOver;

    /// <summary>
    /// Runs a backward's body in a dispose scope of its own, so that every tensor it makes or unpacks has an owner
    /// whatever thread libtorch calls it on, frees TorchSharp's wrapper of <paramref name="gradOutput"/> (the engine keeps
    /// its own reference) and hands the body's gradients (in the order of the function's inputs, null where an input has
    /// none) to libtorch through <see cref="Return"/>.
    /// </summary>
    public static List<Tensor> Run(Tensor gradOutput, Func<Tensor?[]> body)
    {
        using var scope = NewDisposeScope();
        var gradients = body();
        gradOutput.Dispose();
        foreach (var gradient in gradients.OfType<Tensor>()) scope.Detach(gradient);
        return Return(gradients);
    }

    /// <summary>
    /// The list a backward returns: <paramref name="gradients"/> in the order of the function's inputs (null for an input
    /// without gradient), each wrapper freed at the next backward on this thread.
    /// </summary>
    public static List<Tensor> Return(params Tensor?[] gradients)
    {
        foreach (var previous in _handedOver ?? []) previous.Dispose();
        _handedOver = gradients.OfType<Tensor>().ToArray();
        return gradients.Select(g => g!).ToList();
    }
}
