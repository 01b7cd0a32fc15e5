using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Attention of a chunk over [cached prefix ; chunk] that keeps no O(prefix) tensor in the autograd graph.
/// </summary>
/// <remarks>
/// Plain autograd would save the softmax probabilities of every layer, heads × chunk × (prefix + chunk) values, twice the
/// size of the layer's cached keys and values for Llama-3-8B, for as long as the chunk's graph lives. This function
/// saves only its inputs (the prefix as views of the cache buffers), its output and the per-row log-sum-exp, and
/// recomputes the probabilities in backward, one layer at a time: the graph of a chunk then holds O(chunk) per layer,
/// and what grows with the context is the cache and its gradient alone (the 2× floor of docs/ALGORITHM.md).
/// Shapes: queries [B, kv_heads, groups·T, d] (query heads of one kv head stacked on the row axis), keys and values
/// [B, kv_heads, P or T, d], mask [T, P + T] additive. Gradients: dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)).
/// </remarks>
internal sealed class PrefixAttention : autograd.SingleTensorFunction<PrefixAttention>
{
    public override string Name => nameof(PrefixAttention);

    /// <summary>Differentiable entry point.</summary>
    public static Tensor Apply(Tensor queries, Tensor prefixKeys, Tensor prefixValues, Tensor keys, Tensor values, Tensor mask, long groups) =>
        apply(queries, prefixKeys, prefixValues, keys, values, mask, groups);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (q, pk, pv, k, v, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3], (Tensor)vars[4], (Tensor)vars[5]);
        long groups = (long)vars[6];
        using var scope = NewDisposeScope();
        var (probabilities, logSumExp) = Probabilities(q, pk, k, mask, groups, null);
        var output = Combine(probabilities, pv, v).to(q.dtype);
        ctx.save_for_backward(new List<Tensor> { q, pk, pv, k, v, mask, output, logSumExp });
        ctx.save_data("groups", groups);
        logSumExp.MoveToOuterDisposeScope();
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (q, pk, pv, k, v, mask, output, logSumExp) = (saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6], saved[7]);
        long groups = (long)ctx.get_data("groups");
        long prefix = pk.shape[2];
        double scale = 1.0 / Math.Sqrt(q.shape[^1]);
        using var scope = NewDisposeScope();
        var scoreType = CausalLM.ScoreType(q.dtype);
        var (p, _) = Probabilities(q, pk, k, mask, groups, logSumExp);
        var dO = gradOutput.to(scoreType);
        var dV = matmul(p.transpose(-2, -1), dO);
        var dP = cat(new[] { matmul(dO, pv.to(scoreType).transpose(-2, -1)), matmul(dO, v.to(scoreType).transpose(-2, -1)) }, -1);
        var rowDot = (dO * output.to(scoreType)).sum(-1, keepdim: true);
        var dS = p * (dP - rowDot) * scale;
        var dSPrefix = dS.narrow(-1, 0, prefix);
        var dSChunk = dS.narrow(-1, prefix, dS.shape[^1] - prefix);
        var dq = matmul(dSPrefix, pk.to(scoreType)) + matmul(dSChunk, k.to(scoreType));
        var grads = new List<Tensor>
        {
            dq.to(q.dtype),
            matmul(dSPrefix.transpose(-2, -1), q.to(scoreType)).to(pk.dtype),
            dV.narrow(-2, 0, prefix).to(pv.dtype),
            matmul(dSChunk.transpose(-2, -1), q.to(scoreType)).to(k.dtype),
            dV.narrow(-2, prefix, dV.shape[^2] - prefix).to(v.dtype),
        };
        foreach (var g in grads) g.MoveToOuterDisposeScope();
        grads.Add(null!); // mask
        grads.Add(null!); // groups
        return grads;
    }

    /// <summary>softmax(q·[pk ; k]ᵀ / sqrt(d) + mask) in the score dtype, and its row log-sum-exp (given, in backward).</summary>
    static (Tensor Probabilities, Tensor LogSumExp) Probabilities(Tensor q, Tensor pk, Tensor k, Tensor mask, long groups, Tensor? logSumExp)
    {
        var scoreType = CausalLM.ScoreType(q.dtype);
        long b = q.shape[0], kvHeads = q.shape[1], rows = q.shape[2], t = rows / groups;
        var qs = q.to(scoreType);
        var scores = cat(new[] { matmul(qs, pk.to(scoreType).transpose(-2, -1)), matmul(qs, k.to(scoreType).transpose(-2, -1)) }, -1)
            .mul_(1.0 / Math.Sqrt(q.shape[^1]));
        long columns = scores.shape[^1];
        scores = (scores.view(b, kvHeads, groups, t, columns) + mask).view(b, kvHeads, rows, columns);
        logSumExp ??= scores.logsumexp(-1, keepdim: true);
        return (scores.sub_(logSumExp).exp_(), logSumExp);
    }

    static Tensor Combine(Tensor probabilities, Tensor pv, Tensor v)
    {
        long prefix = pv.shape[2];
        var scoreType = probabilities.dtype;
        return matmul(probabilities.narrow(-1, 0, prefix), pv.to(scoreType)) + matmul(probabilities.narrow(-1, prefix, probabilities.shape[^1] - prefix), v.to(scoreType));
    }
}
