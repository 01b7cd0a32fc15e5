using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// The cached keys/values of positions [0, <see cref="Length"/>) of one layer: the <see cref="KvCache"/>'s whole buffers
/// of that layer, [B, kv_heads, capacity, d], of which the prefix is the first <see cref="Length"/> positions, and, during
/// SeCO's Stage 2, the buffers that accumulate their gradient. The buffers themselves, not views of the prefix: a view
/// is one more operation per chunk and layer, and both attention paths slice what they read anyway.
/// </summary>
internal sealed record CachedPrefix(Tensor Keys, Tensor Values, Tensor? KeyGradient, Tensor? ValueGradient, long Length)
{
    /// <summary>
    /// b of docs/ALGORITHM.md: with gradient buffers, the backward adds b × their positions [Length, Length + T), the
    /// gradient later chunks sent to this chunk's own keys and values, to those keys' and values' gradient. The attention
    /// is the one consumer of a chunk's keys/values within its graph, so their whole gradient meets there, and Stage 2
    /// seeds nothing but the loss. Default 1.
    /// </summary>
    public double CacheScale { get; init; } = 1;

    /// <summary>A prefix that fills its buffers: positions [0, keys.shape[2]) (gradient buffers, if any, may be longer).</summary>
    public CachedPrefix(Tensor keys, Tensor values, Tensor? keyGradient, Tensor? valueGradient)
        : this(keys, values, keyGradient, valueGradient, keys.shape[2]) { }

    /// <summary>Diagnostic: where the attention over this prefix times itself, or null.</summary>
    public StepPhases? Phases { get; init; }
}

/// <summary>
/// Attention of one chunk's queries over [cached prefix ; the chunk itself]: through libtorch's fused kernels where
/// they serve (<see cref="FusedChunkAttention"/>), else computed here block by block with an online softmax
/// (FlashAttention's recurrence), so that no tensor of size heads × chunk × prefix ever exists: a score block is
/// heads × chunk × one prefix block (<see cref="AttentionOptions.PrefixBlockSize"/>), whatever the prefix length.
/// </summary>
/// <remarks>
/// The blockwise path keeps scores in base 2 (queries pre-multiplied by log₂e / √d), so every exponential is an exp2
/// and the log-sum-exp is a log₂-sum-exp₂: the same probabilities, and libtorch's vectorized exp2 is faster than its
/// exp on the CPU (FlashAttention does the same). The differentiable form
/// saves only the chunk's queries, keys, values, output and per-row log-sum-exp (all O(chunk)); its backward recomputes each block's probabilities and adds the prefix keys' and values' gradients straight into
/// the cache-gradient buffers (no full-length temporary, as the backward of a view of a leaf would allocate), and the
/// chunk's own share of those buffers into its keys' and values' gradient (<see cref="CachedPrefix.CacheScale"/>).
/// What grows with the context during a training step is then the cache and its gradient alone: the 2× floor of
/// docs/ALGORITHM.md. Shapes: queries [B, kv_heads, groups·T, d] (the query heads of one kv head stacked on the row
/// axis, head h using kv head h / groups as Hugging Face's repeat_kv does), keys and values [B, kv_heads, T or P, d].
/// </remarks>
internal static class ChunkAttention
{
    /// <summary>
    /// softmax(q·kᵀ/√d + mask)·v over [prefix ; chunk] for queries [B, heads, T, d] at absolute positions
    /// [start, start + T), where the prefix holds positions [0, start); returns the heads side by side, [B, T, heads·d],
    /// as the output projection reads them. With
    /// <paramref name="window"/>, query p sees only keys in (p − window, p]. Differentiable with respect to queries, keys
    /// and values (and, through the cache-gradient buffers, the prefix) when gradients are enabled. The fused kernels
    /// serve where they can (<see cref="FusedChunkAttention"/>), the blockwise path elsewhere, as
    /// <paramref name="options"/> say.
    /// </summary>
    public static Tensor Apply(Tensor queries, Tensor keys, Tensor values, CachedPrefix prefix, int? window, AttentionOptions options)
    {
        // Checked here, on the host: a bad shape found in the backward would end the process from libtorch's thread.
        if (prefix.KeyGradient is { } buffer && buffer.shape[2] < prefix.Length + keys.shape[2])
            throw new ArgumentException($"The gradient buffers hold {buffer.shape[2]} positions; a chunk of {keys.shape[2]} after a prefix of {prefix.Length} needs {prefix.Length + keys.shape[2]}.", nameof(prefix));
        using var timed = prefix.Phases?.Measure(StepPhases.AttentionForward);
        if (FusedChunkAttention.Serves(queries, keys.shape[2], prefix.Length, window, options.Kernel))
            return FusedChunkAttention.Apply(queries, keys, values, prefix);
        // Query head h uses kv head h / groups, so the queries of one kv head stack on the row axis:
        // [B, kv_heads, groups·T, d], and grouped-query attention needs no repeated keys/values over the prefix.
        var (b, heads, t, d) = (queries.shape[0], queries.shape[1], queries.shape[2], queries.shape[3]);
        var stacked = queries.reshape(b, keys.shape[1], heads / keys.shape[1] * t, d);
        // With nothing upstream trainable, earlier chunks' keys/values of this layer have no trainable ancestor either,
        // so their gradient is not needed and no graph is built.
        var output = is_grad_enabled() && (queries.requires_grad || keys.requires_grad || values.requires_grad)
            ? BlockwiseFunction.apply(stacked, keys, values, new Context(prefix, window, options))
            : Forward(stacked, keys, values, prefix, window, options).Output;
        return output.view(b, heads, t, d).transpose(1, 2).reshape(b, t, heads * d);
    }

    static long PrefixBlockSize(Tensor scaledQueries, AttentionOptions options) => options.BlockFor(
        scaledQueries.shape[0] * scaledQueries.shape[1] * scaledQueries.shape[2],
        scaledQueries.dtype == ScalarType.Float64 ? 8 : 4, scaledQueries.device.type == TorchSharp.DeviceType.CUDA);

    /// <summary>
    /// The blockwise path's output and every gradient for a seed <paramref name="gradOutput"/>, without autograd (the
    /// prefix gradients in fresh tensors): the reference <see cref="FusedChunkAttention"/> checks itself against.
    /// </summary>
    internal static (Tensor Output, Tensor Queries, Tensor Keys, Tensor Values, Tensor PrefixKeys, Tensor PrefixValues) BlockwiseReference(
        Tensor q, Tensor k, Tensor v, Tensor gradOutput, CachedPrefix prefix)
    {
        // Gradient buffers over the prefix and the chunk, the chunk's share zero: the attention's gradients alone.
        long[] shape = [k.shape[0], k.shape[1], prefix.Length + k.shape[2], k.shape[3]];
        var withGradients = prefix with { KeyGradient = zeros(shape, dtype: k.dtype, device: k.device), ValueGradient = zeros(shape, dtype: v.dtype, device: v.device) };
        var (output, logSumExp) = Forward(q, k, v, withGradients, null, AttentionOptions.Default);
        var (dq, dk, dv) = Backward(q, k, v, output, logSumExp, gradOutput, withGradients, null, AttentionOptions.Default);
        return (output, dq, dk, dv, withGradients.KeyGradient.narrow(2, 0, prefix.Length), withGradients.ValueGradient.narrow(2, 0, prefix.Length));
    }

    /// <summary>The non-tensor arguments of the autograd function (kept out of its variable list on purpose).</summary>
    sealed record Context(CachedPrefix Prefix, int? Window, AttentionOptions Options);

    sealed class BlockwiseFunction : autograd.SingleTensorFunction<BlockwiseFunction>
    {
        public override string Name => nameof(ChunkAttention);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, context) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Context)vars[3]);
            var (output, logSumExp) = Forward(q, k, v, context.Prefix, context.Window, context.Options);
            ctx.save_for_backward(new List<Tensor> { q, k, v, output, logSumExp });
            ctx.save_data("context", context);
            return output;
        }

        // On CUDA this runs on libtorch's device thread (BackwardHandOver).
        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) => BackwardHandOver<BlockwiseFunction>.Run(gradOutput, () =>
        {
            var saved = ctx.get_saved_variables();
            var context = (Context)ctx.get_data("context");
            using var timed = context.Prefix.Phases?.Measure(StepPhases.AttentionBackward);
            var (dq, dk, dv) = Backward(saved[0], saved[1], saved[2], saved[3], saved[4], gradOutput, context.Prefix, context.Window, context.Options);
            return [dq, dk, dv, null];
        });
    }

    /// <summary>Output [B, kv_heads, groups·T, d] in the queries' dtype, and the row log₂-sum-exp₂ [.., groups·T, 1] in the score dtype.</summary>
    static (Tensor Output, Tensor LogSumExp) Forward(Tensor q, Tensor k, Tensor v, CachedPrefix prefix, int? window, AttentionOptions options)
    {
        using var scope = NewDisposeScope();
        var scoreType = CausalLM.ScoreType(q.dtype);
        var qs = ScaledQueries(q, scoreType);

        // The chunk's own block first: every query sees at least itself, so the running maximum is finite from here
        // on and a fully masked prefix block (sliding window) contributes exp(−∞) = 0 instead of NaN.
        // Its scores go before the prefix blocks come: one block's scores at a time.
        long t = k.shape[2];
        Tensor max, sum, accumulated;
        using (var ownScope = NewDisposeScope())
        {
            var scores = Scores(qs, k, prefix.Length, prefix.Length, t, window);
            max = scores.amax(new long[] { -1 }, keepdim: true);
            var weights = scores.sub_(max).exp2_();
            sum = weights.sum(-1, keepdim: true);
            accumulated = matmul(weights, v.to(scoreType));
            ownScope.MoveToOuter(max, sum, accumulated);
        }

        foreach (var (from, length) in PrefixBlocks(prefix.Length, window, PrefixBlockSize(qs, options)))
        {
            using var blockScope = NewDisposeScope();
            var blockScores = Scores(qs, prefix.Keys.narrow(2, from, length), from, prefix.Length, t, window);
            var newMax = maximum(max, blockScores.amax(new long[] { -1 }, keepdim: true));
            var rescale = (max - newMax).exp2_();
            var blockWeights = blockScores.sub_(newMax).exp2_();
            sum.mul_(rescale).add_(blockWeights.sum(-1, keepdim: true));
            accumulated.mul_(rescale).add_(matmul(blockWeights, prefix.Values.narrow(2, from, length).to(scoreType)));
            max.copy_(newMax);
        }
        var output = accumulated.div_(sum).to(q.dtype);
        var logSumExp = max.add_(sum.log2_());
        return (output.MoveToOuterDisposeScope(), logSumExp.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Gradients of the queries and the chunk's keys/values; the prefix keys'/values' gradients are added in place to
    /// the cache-gradient buffers. With P = exp(S − lse) = exp₂(S₂ − lse₂): dV = Pᵀ·dO, dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)),
    /// dQ = dS·K / √d, dK = dSᵀ·Q / √d. The transposed products are taken as (dOᵀ·P)ᵀ and (Qᵀ·dS)ᵀ: the same numbers,
    /// and on the CPU about a third faster (docs/BENCHMARKS.md has the timings).
    /// </summary>
    static (Tensor Queries, Tensor Keys, Tensor Values) Backward(Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp,
        Tensor gradOutput, CachedPrefix prefix, int? window, AttentionOptions options)
    {
        using var scope = NewDisposeScope();
        var scoreType = logSumExp.dtype;
        var qs = ScaledQueries(q, scoreType);
        var dO = gradOutput.to(scoreType);
        var rowDot = (dO * output.to(scoreType)).sum(-1, keepdim: true);
        // dK = dSᵀ·Q / √d: the queries scaled by 1 / √d alone, not by the scores' extra log₂e.
        var keyGradientQueries = qs * Math.Log(2);

        // One block: adds its share of dQ (with respect to the scaled queries) and returns this block's (dK, dV), when
        // asked for: a prefix without gradient buffers (cross-chunk gradients off) needs only its share of dQ.
        Tensor? dQs = null;
        (Tensor Keys, Tensor Values)? Block(Tensor blockKeys, Tensor blockValues, long from, bool keyValueGradients)
        {
            var probabilities = Scores(qs, blockKeys, from, prefix.Length, k.shape[2], window).sub_(logSumExp).exp2_();
            var dV = keyValueGradients ? matmul(dO.transpose(-2, -1), probabilities).transpose(-2, -1) : null;
            var dS = probabilities.mul_(matmul(dO, blockValues.to(scoreType).transpose(-2, -1)).sub_(rowDot));
            var share = matmul(dS, blockKeys.to(scoreType));
            if (dQs is null) dQs = share;
            else dQs.add_(share);
            return keyValueGradients ? (matmul(keyGradientQueries.transpose(-2, -1), dS).transpose(-2, -1), dV!) : null;
        }

        // The chunk's own block in a scope of its own, like each prefix block: one block's probabilities at a time.
        Tensor dK, dV;
        using (var ownScope = NewDisposeScope())
        {
            (dK, dV) = Block(k, v, prefix.Length, keyValueGradients: true)!.Value;
            ownScope.MoveToOuter(dK, dV, dQs!);
        }
        foreach (var (from, length) in PrefixBlocks(prefix.Length, window, PrefixBlockSize(qs, options)))
        {
            using var blockScope = NewDisposeScope();
            // Straight into the cache-gradient buffers: Stage 2 reads them when it reaches the chunk that wrote them.
            if (Block(prefix.Keys.narrow(2, from, length), prefix.Values.narrow(2, from, length), from,
                    keyValueGradients: prefix.KeyGradient is not null) is not var (blockKeys, blockValues)) continue;
            prefix.KeyGradient!.narrow(2, from, length).add_(blockKeys.to(prefix.KeyGradient.dtype));
            prefix.ValueGradient!.narrow(2, from, length).add_(blockValues.to(prefix.ValueGradient.dtype));
        }
        if (prefix.KeyGradient is not null)
        {
            // What later chunks sent this chunk's own keys/values (CachedPrefix.CacheScale).
            dK.add_(prefix.KeyGradient.narrow(2, prefix.Length, k.shape[2]).to(scoreType), alpha: prefix.CacheScale);
            dV.add_(prefix.ValueGradient!.narrow(2, prefix.Length, k.shape[2]).to(scoreType), alpha: prefix.CacheScale);
        }
        double scale = 1 / Math.Sqrt(q.shape[^1]);
        var gradQueries = dQs!.mul_(scale).to(q.dtype).MoveToOuterDisposeScope();
        return (gradQueries, dK.to(k.dtype).MoveToOuterDisposeScope(), dV.to(v.dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Queries in the score dtype, pre-multiplied by log₂e / √d so that no score block needs its own scaling and every
    /// score is in base 2.
    /// </summary>
    static Tensor ScaledQueries(Tensor q, ScalarType scoreType) => q.to(scoreType) * (1 / (Math.Log(2) * Math.Sqrt(q.shape[^1])));

    /// <summary>
    /// Scores [B, kv_heads, g·T, n] of the stacked, scaled queries (row r at absolute position start + r mod T) against
    /// keys at positions [from, from + n), with −∞ where the causal or the sliding-window rule hides a key. The mask is
    /// built only for blocks it cuts: the chunk's own block, and prefix blocks that reach older than the window.
    /// </summary>
    static Tensor Scores(Tensor scaledQueries, Tensor blockKeys, long from, long start, long t, int? window)
    {
        var scores = matmul(scaledQueries, blockKeys.to(scaledQueries.dtype).transpose(-2, -1));
        long n = blockKeys.shape[2], last = start + t - 1;
        bool causalCut = from + n - 1 > start;                      // some key lies after the first query
        bool windowCut = window is int w && last - from >= w;       // some key is too old for the last query
        if (!causalCut && !windowCut) return scores;
        var device = scores.device;
        var query = arange(start, start + t, device: device).repeat(scaledQueries.shape[2] / t).unsqueeze(1); // [g·T, 1]
        var key = arange(from, from + n, device: device).unsqueeze(0);                                        // [1, n]
        var hidden = key > query;
        if (window is int span) hidden = hidden.logical_or(query - key >= span);
        return scores.masked_fill_(hidden, double.NegativeInfinity);
    }

    /// <summary>
    /// [from, length) blocks of the prefix [0, prefix) that some query of the chunk can see: with a sliding window, the
    /// first query (at position prefix) sees keys after prefix − window, and older keys are skipped without being read.
    /// </summary>
    static IEnumerable<(long From, long Length)> PrefixBlocks(long prefix, int? window, long blockSize)
    {
        long first = window is int w ? Math.Max(0, prefix - w + 1) : 0;
        for (long from = first; from < prefix; from += blockSize)
            yield return (from, Math.Min(blockSize, prefix - from));
    }
}
