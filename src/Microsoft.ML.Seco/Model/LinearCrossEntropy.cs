using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// The output layer and the cross-entropy together, over pieces of rows: logits = hidden · Wᵀ in the score dtype, the
/// summed token loss of <c>nn.functional.cross_entropy(logits, targets, ignore_index: −100)</c>, and its gradients, without
/// the logits of all rows ever existing at once. A chunk of 1,024 rows over Qwen2.5's 151,936-word vocabulary has
/// 622 MB of float32 logits, and autograd would keep them and their log-softmax for the backward; here a piece of at
/// most <c>pieceBytes</c> of logits lives at a time.
/// </summary>
/// <remarks>
/// With a graph the gradients are computed in the forward, piece by piece (as Liger's fused linear cross-entropy does):
/// the loss is a sum, so its backward only scales them by the incoming scalar, and no logits need recomputing. Per
/// piece, ∂loss/∂logits = softmax(logits) − onehot(target) (zero on ignored rows), cast to the weight's dtype as
/// autograd's backward of <c>.to(score dtype)</c> would, then ∂hidden = ∂logits · W and ∂W += ∂logitsᵀ · hidden. What
/// the function saves is O(rows × hidden), plus ∂W when the output weight is trained (full fine-tuning, where its
/// gradient exists anyway).
/// </remarks>
internal static class LinearCrossEntropy
{
    /// <summary>Rows whose score-dtype logits fit in <paramref name="pieceBytes"/> (at least one).</summary>
    public static long RowsPerPiece(long vocab, ScalarType scoreType, long pieceBytes) =>
        Math.Max(1, pieceBytes / (vocab * (scoreType == ScalarType.Float64 ? 8 : 4)));

    /// <summary>
    /// Summed cross-entropy of hidden [N, H] · weightᵀ [V, H] against targets [N] (−100 ignored), as a scalar in the
    /// score dtype; differentiable with respect to hidden and weight when gradients are enabled and either needs one.
    /// </summary>
    public static Tensor Sum(Tensor hidden, Tensor weight, Tensor targets, long rowsPerPiece)
    {
        var scoreType = CausalLM.ScoreType(hidden.dtype);
        if (is_grad_enabled() && (hidden.requires_grad || weight.requires_grad))
            return Function.apply(hidden, weight, targets, rowsPerPiece);
        using var scope = NewDisposeScope();
        var sum = zeros(new long[0], dtype: scoreType, device: hidden.device);
        foreach (var (from, rows) in Pieces(hidden.shape[0], rowsPerPiece))
        {
            using var pieceScope = NewDisposeScope();
            var logits = nn.functional.linear(hidden.narrow(0, from, rows), weight).to(scoreType);
            sum.add_(nn.functional.cross_entropy(logits, targets.narrow(0, from, rows), ignore_index: -100, reduction: nn.Reduction.Sum));
        }
        return sum.MoveToOuterDisposeScope();
    }

    /// <summary>Per-row negative log-likelihood [N] in the score dtype (no graph): evaluation's pieced head.</summary>
    public static Tensor PerRow(Tensor hidden, Tensor weight, Tensor targets, long rowsPerPiece)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var scoreType = CausalLM.ScoreType(hidden.dtype);
        var nll = empty(hidden.shape[0], dtype: scoreType, device: hidden.device);
        foreach (var (from, rows) in Pieces(hidden.shape[0], rowsPerPiece))
        {
            using var pieceScope = NewDisposeScope();
            var logits = nn.functional.linear(hidden.narrow(0, from, rows), weight).to(scoreType);
            nll.narrow(0, from, rows).copy_(nn.functional.cross_entropy(logits, targets.narrow(0, from, rows), ignore_index: -100, reduction: nn.Reduction.None));
        }
        return nll.MoveToOuterDisposeScope();
    }

    static IEnumerable<(long From, long Rows)> Pieces(long rows, long rowsPerPiece)
    {
        for (long from = 0; from < rows; from += rowsPerPiece) yield return (from, Math.Min(rowsPerPiece, rows - from));
    }

    sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => nameof(LinearCrossEntropy);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (hidden, weight, targets, rowsPerPiece) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (long)vars[3]);
            using var noGraph = no_grad();
            using var scope = NewDisposeScope();
            var scoreType = CausalLM.ScoreType(hidden.dtype);
            var sum = zeros(new long[0], dtype: scoreType, device: hidden.device);
            var gradHidden = hidden.requires_grad ? empty_like(hidden) : null;
            var gradWeight = weight.requires_grad ? zeros_like(weight) : null;
            foreach (var (from, rows) in Pieces(hidden.shape[0], rowsPerPiece))
            {
                using var pieceScope = NewDisposeScope();
                var h = hidden.narrow(0, from, rows);
                var t = targets.narrow(0, from, rows);
                var logits = nn.functional.linear(h, weight).to(scoreType);
                var logSumExp = logits.logsumexp(-1, keepdim: true);
                var ignored = t.eq(-100);
                var safeTargets = t.masked_fill(ignored, 0).unsqueeze(1);
                var picked = logits.gather(1, safeTargets);
                sum.add_(logSumExp.sub(picked).masked_fill_(ignored.unsqueeze(1), 0).sum());
                // softmax − onehot(target), zero on ignored rows, in the weight's dtype as autograd would cast it.
                var gradLogits = logits.sub_(logSumExp).exp_();
                gradLogits.scatter_add_(1, safeTargets, full_like(picked, -1));
                gradLogits.masked_fill_(ignored.unsqueeze(1), 0);
                var gradLogitsInWeightType = gradLogits.to(weight.dtype);
                gradHidden?.narrow(0, from, rows).copy_(matmul(gradLogitsInWeightType, weight));
                gradWeight?.add_(matmul(gradLogitsInWeightType.t(), h));
            }
            ctx.save_data("gradients", (gradHidden?.MoveToOuterDisposeScope(), gradWeight?.MoveToOuterDisposeScope()));
            return sum.MoveToOuterDisposeScope();
        }

        // On CUDA this runs on libtorch's device thread (BackwardHandOver).
        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) => BackwardHandOver<Function>.Run(gradOutput, () =>
        {
            var (gradHidden, gradWeight) = ((Tensor?, Tensor?))ctx.get_data("gradients");
            var scale = gradOutput.to(gradHidden?.dtype ?? gradWeight!.dtype);
            var hiddenResult = gradHidden?.mul(scale);
            var weightResult = gradWeight?.mul(scale);
            // The eager gradients are needed once: free them now rather than with the graph.
            gradHidden?.Dispose();
            gradWeight?.Dispose();
            return [hiddenResult, weightResult, null, null];
        });
    }
}
