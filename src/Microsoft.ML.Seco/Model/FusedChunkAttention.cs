using System.Collections.Concurrent;
using Microsoft.ML.Seco.Diagnostics;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Model;

/// <summary>
/// Attention of a chunk over [cached prefix ; itself] through libtorch's fused kernels: one call into a TorchScript unit
/// per chunk and layer forward, one backward, instead of the blockwise path's few operations per prefix block.
/// </summary>
/// <remarks>
/// Two kernel calls make one attention: the stacked queries against the prefix, which every query sees whole (no mask),
/// and the queries against the chunk's own keys, causal on a square (where top-left and bottom-right alignment agree).
/// Their outputs and log-sum-exps combine exactly: lse = logaddexp(lse₁, lse₂), O = O₁·e^(lse₁−lse) + O₂·e^(lse₂−lse).
/// The backward calls each kernel's backward with the combined O and lse, which yields each part's share of the
/// gradient of the whole softmax (dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)) with P from the combined lse), as ring attention
/// does. The stacked layout [B, kv_heads, groups·T, d] lets the prefix part read grouped-query keys without repeating
/// them; only the chunk's own T keys are repeated. Saved for the backward: the chunk's queries, keys, values, output
/// and lse (O(chunk)). Everything .NET would otherwise dispatch around the kernels happens inside the unit: stacking
/// the queries, slicing the prefix out of the cache's buffers, adding the prefix's gradient, one layer's at a time,
/// into the cache-gradient buffers and the chunk's own share of those buffers into its keys' and values' gradient;
/// .NET sees one call and its outputs per chunk-layer, forward and backward. A chunk at position 0 (Stage 2's first
/// chunk) has an empty prefix: only the causal part runs.
/// Kernels: <c>_scaled_dot_product_flash_attention_for_cpu</c> (and its backward) on the CPU, every floating dtype;
/// <c>_efficient_attention_forward</c>/<c>_backward</c> on CUDA. Each (device, dtype) is checked against the blockwise
/// path once per process before it is used (<see cref="Serves"/>).
/// </remarks>
public static class FusedChunkAttention
{
    const string Source = """
        def _part_forward(q, k, v, causal: bool, scale: float) -> Tuple[Tensor, Tensor]:
            if q.is_cuda:
                o, lse, seed, offset, mq, mk = torch._efficient_attention_forward(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, None, None, None, None, 0.0, 1 if causal else 0, True, scale=scale)
                return o.transpose(1, 2), lse.narrow(2, 0, q.size(2))
            return torch._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

        def _part_backward(g, q, k, v, o, lse, causal: bool, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
            if q.is_cuda:
                t = q.size(2)
                padded = torch.zeros([lse.size(0), lse.size(1), (t + 31) // 32 * 32], dtype=lse.dtype, device=lse.device)
                padded.narrow(2, 0, t).copy_(lse)
                seed = torch.zeros([1], dtype=4)  # int64: a unit compiled without Python resolves no torch.* dtype names
                dq, dk, dv, db = torch._efficient_attention_backward(g.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, o.transpose(1, 2), None, None, t, k.size(2), padded, 0.0, seed, seed, 1 if causal else 0, False, scale=scale)
                return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)
            return torch._scaled_dot_product_flash_attention_for_cpu_backward(g, q, k, v, o, lse, 0.0, causal, scale=scale)

        def forward(q, k, v, pk, pv, p: int, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
            b, h, t, d = q.size(0), q.size(1), q.size(2), q.size(3)
            kvh = k.size(1)
            groups = h // kvh
            qs = q.reshape(b, kvh, groups * t, d)
            o2, l2 = _part_forward(qs.reshape(b, h, t, d), k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), True, scale)
            if p == 0:
                return o2.transpose(1, 2).reshape(b, t, h * d), o2, l2
            o1, l1 = _part_forward(qs, pk.narrow(2, 0, p), pv.narrow(2, 0, p), False, scale)
            l1 = l1.reshape(b, h, t)
            lse = torch.logaddexp(l1, l2)
            o = (o1.reshape(b, h, t, d).to(lse.dtype) * (l1 - lse).exp().unsqueeze(-1) + o2.to(lse.dtype) * (l2 - lse).exp().unsqueeze(-1)).to(q.dtype)
            return o.transpose(1, 2).reshape(b, t, h * d), o, lse

        def output(q, k, v, pk, pv, p: int, scale: float) -> Tensor:
            merged, o, lse = forward(q, k, v, pk, pv, p, scale)
            return merged

        def _backward(g, q, k, v, pk, pv, p: int, o, lse, scale: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            b, h, t, d = q.size(0), q.size(1), q.size(2), q.size(3)
            kvh = k.size(1)
            groups = h // kvh
            g = g.reshape(b, t, h, d).transpose(1, 2).contiguous()
            qs = q.reshape(b, kvh, groups * t, d)
            dq, dk, dv = _part_backward(g, qs.reshape(b, h, t, d), k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), o, lse, True, scale)
            dk = dk.reshape(b, kvh, groups, t, d).sum(2)
            dv = dv.reshape(b, kvh, groups, t, d).sum(2)
            dpk, dpv = pk.narrow(2, 0, 0), pv.narrow(2, 0, 0)
            if p > 0:
                dq1, dpk, dpv = _part_backward(g.reshape(b, kvh, groups * t, d), qs, pk.narrow(2, 0, p), pv.narrow(2, 0, p), o.reshape(b, kvh, groups * t, d), lse.reshape(b, kvh, groups * t), False, scale)
                dq = dq1.reshape(b, h, t, d) + dq
            return dq, dk, dv, dpk, dpv

        def backward(g, q, k, v, pk, pv, p: int, o, lse, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
            dq, dk, dv, dpk, dpv = _backward(g, q, k, v, pk, pv, p, o, lse, scale)
            return dq, dk, dv

        def backward_into(g, q, k, v, pk, pv, gk, gv, p: int, o, lse, scale: float, cache_scale: float) -> Tuple[Tensor, Tensor, Tensor]:
            dq, dk, dv, dpk, dpv = _backward(g, q, k, v, pk, pv, p, o, lse, scale)
            gk.narrow(2, 0, p).add_(dpk)
            gv.narrow(2, 0, p).add_(dpv)
            t = k.size(2)
            return dq, torch.add(dk, gk.narrow(2, p, t), alpha=cache_scale), torch.add(dv, gv.narrow(2, p, t), alpha=cache_scale)
        """;

    // One unit per process: its Dispose does not free the native unit (docs/ENGINE.md). A source that does not compile
    // terminates the process from native code (no exception reaches .NET), so the source is pinned by a test.
    static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source + "\n"));

    // Whether the fused kernels serve a (device, dtype), found once per process: null when they do, else why not.
    static readonly ConcurrentDictionary<(string Device, ScalarType DType), string?> Verdicts = new();

    /// <summary>
    /// True when the fused path can attend these queries [B, heads, T, d] over a prefix of
    /// <paramref name="prefixLength"/> positions: no window that cuts the prefix, and kernels that passed their check
    /// for this device and dtype. With <see cref="AttentionKernel.Fused"/> a failed check throws.
    /// </summary>
    internal static bool Serves(Tensor queries, long chunkLength, long prefixLength, int? window, AttentionKernel kernel)
    {
        if (kernel == AttentionKernel.Blockwise) return false;
        if (window is int w && w < prefixLength + chunkLength) return false;
        string? verdict = Verdict(queries.device, queries.dtype);
        if (verdict is not null && kernel == AttentionKernel.Fused)
            throw new NotSupportedException($"The fused attention kernels do not serve {queries.dtype} on {queries.device}: {verdict}");
        return verdict is null;
    }

    /// <summary>
    /// True when <paramref name="kernel"/> lets the fused path serve every chunk of a sequence of up to
    /// <paramref name="length"/> tokens of a model with <paramref name="config"/> (no sliding window that cuts a prefix),
    /// provided the device's check passes (<see cref="Verdict"/>).
    /// </summary>
    internal static bool ServesSequences(ModelConfig config, AttentionKernel kernel, long length) =>
        kernel != AttentionKernel.Blockwise && (config.SlidingWindow is not int w || w >= length);

    /// <summary>True when every chunk attention of <paramref name="model"/> over sequences of up to <paramref name="length"/> tokens runs fused.</summary>
    public static bool ServesModel(CausalLM model, long length) =>
        ServesSequences(model.Config, model.Attention.Kernel, length) && Verdict(model.Device, model.DType) is null;

    /// <summary>Why the fused kernels do not serve <paramref name="dtype"/> on <paramref name="device"/>, or null when they do.</summary>
    public static string? Verdict(Device device, ScalarType dtype) => Verdicts.GetOrAdd((device.ToString(), dtype), key => Check(device, key.DType));

    /// <summary>
    /// Differentiable attention of queries [B, heads, T, d] with respect to them and the chunk's keys/values; the prefix
    /// keys'/values' gradients go into the cache-gradient buffers when the prefix has them. Returns the heads side by
    /// side, [B, T, heads·d], as the output projection reads them.
    /// </summary>
    internal static Tensor Apply(Tensor queries, Tensor keys, Tensor values, CachedPrefix prefix) =>
        is_grad_enabled() && (queries.requires_grad || keys.requires_grad || values.requires_grad)
            ? Function.apply(queries, keys, values, prefix)
            : Output(queries, keys, values, prefix);

    static double Scale(Tensor queries) => 1 / Math.Sqrt(queries.shape[^1]);

    // Without a graph only the heads side by side come back: one wrapper instead of three.
    static Tensor Output(Tensor q, Tensor k, Tensor v, CachedPrefix prefix) =>
        (Tensor)Unit.Value.invoke("output", q, k, v, prefix.Keys, prefix.Values, prefix.Length, Scale(q));

    // The output twice: with the heads side by side for the caller, and [B, heads, T, d] for the backward's kernels.
    static (Tensor Merged, Tensor Output, Tensor LogSumExp) Forward(Tensor q, Tensor k, Tensor v, CachedPrefix prefix) =>
        ((Tensor, Tensor, Tensor))Unit.Value.invoke("forward", q, k, v, prefix.Keys, prefix.Values, prefix.Length, Scale(q));

    /// <summary>
    /// The gradients of the queries and the chunk's keys and values; the prefix's are added into its gradient buffers
    /// inside the unit, when it has them, so that they never come back to .NET, and the chunk's own keys and values then
    /// also receive what later chunks sent them (<see cref="CachedPrefix.CacheScale"/>).
    /// </summary>
    static (Tensor Queries, Tensor Keys, Tensor Values) Backward(Tensor gradOutput, Tensor q, Tensor k, Tensor v, Tensor output,
        Tensor logSumExp, CachedPrefix prefix) =>
        ((Tensor, Tensor, Tensor))(prefix.KeyGradient is null
            ? Unit.Value.invoke("backward", gradOutput, q, k, v, prefix.Keys, prefix.Values, prefix.Length, output, logSumExp, Scale(q))
            : Unit.Value.invoke("backward_into", gradOutput, q, k, v, prefix.Keys, prefix.Values, prefix.KeyGradient, prefix.ValueGradient!,
                prefix.Length, output, logSumExp, Scale(q), prefix.CacheScale));

    sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => nameof(FusedChunkAttention);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, prefix) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (CachedPrefix)vars[3]);
            var (merged, output, logSumExp) = Forward(q, k, v, prefix);
            ctx.save_for_backward(new List<Tensor> { q, k, v, output, logSumExp });
            ctx.save_data("prefix", prefix);
            return merged;
        }

        // On CUDA this runs on libtorch's device thread (BackwardHandOver).
        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) => BackwardHandOver<Function>.Run(gradOutput, () =>
        {
            var saved = ctx.get_saved_variables();
            var prefix = (CachedPrefix)ctx.get_data("prefix");
            using var timed = prefix.Phases?.Measure(StepPhases.AttentionBackward);
            var (dq, dk, dv) = Backward(gradOutput, saved[0], saved[1], saved[2], saved[3], saved[4], prefix);
            return [dq, dk, dv, null];
        });
    }

    /// <summary>
    /// Runs a small attention (grouped queries, a prefix longer than the chunk) forward and backward through the fused
    /// kernels and the blockwise path on <paramref name="device"/> in <paramref name="dtype"/>: null when they agree within
    /// the dtype's rounding, else what went wrong (a kernel this libtorch lacks, or refuses for the dtype, or disagrees).
    /// </summary>
    static string? Check(Device device, ScalarType dtype)
    {
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var generator = new Generator(11, CPU);
            Tensor R(params long[] shape) => randn(shape, dtype: ScalarType.Float64, generator: generator).to(dtype, device);
            const long B = 1, kv = 2, g = 3, T = 5, d = 16;
            // A chunk over a prefix, and a chunk at position 0 (Stage 2's first chunk, whose prefix is empty).
            foreach (long P in new[] { 13L, 0L })
            {
                var (q, k, v) = (R(B, kv * g, T, d), R(B, kv, T, d), R(B, kv, T, d));
                // A prefix that does not fill its buffers, as in the cache, with gradient buffers to add into whose
                // chunk positions [P, P + T) hold what later chunks sent the chunk's own keys/values.
                var keyGradient = zeros(B, kv, P + T + 3, d, dtype: dtype, device: device);
                var valueGradient = zeros(B, kv, P + T + 3, d, dtype: dtype, device: device);
                var (sentKeys, sentValues) = (R(B, kv, T, d), R(B, kv, T, d));
                keyGradient.narrow(2, P, T).copy_(sentKeys);
                valueGradient.narrow(2, P, T).copy_(sentValues);
                const double cacheScale = 1.5;
                var prefix = new CachedPrefix(R(B, kv, P + T + 3, d), R(B, kv, P + T + 3, d), keyGradient, valueGradient, P) { CacheScale = cacheScale };
                var gradOutput = R(B, kv * g, T, d);

                var (merged, output, logSumExp) = Forward(q, k, v, prefix);
                var (dq, dk, dv) = Backward(Merged(gradOutput), q, k, v, output, logSumExp, prefix);
                var reference = ChunkAttention.BlockwiseReference(Stacked(q, kv), k, v, Stacked(gradOutput, kv),
                    new CachedPrefix(prefix.Keys.narrow(2, 0, P), prefix.Values.narrow(2, 0, P), null, null));
                double tolerance = dtype switch { ScalarType.Float64 => 1e-10, ScalarType.Float32 => 1e-4, _ => 5e-2 };
                foreach (var (name, actual, expected) in new[]
                {
                    ("output", Stacked(output, kv), reference.Output),
                    ("merged output", merged, Merged(reference.Output.reshape(B, kv * g, T, d))),
                    ("output without a graph", Output(q, k, v, prefix), Merged(reference.Output.reshape(B, kv * g, T, d))),
                    ("query gradient", Stacked(dq, kv), reference.Queries),
                    ("key gradient", dk, reference.Keys + cacheScale * sentKeys),
                    ("value gradient", dv, reference.Values + cacheScale * sentValues),
                    ("prefix key gradient", keyGradient.narrow(2, 0, P), reference.PrefixKeys),
                    ("prefix value gradient", valueGradient.narrow(2, 0, P), reference.PrefixValues),
                    ("chunk's own gradient buffer", keyGradient.narrow(2, P, T), sentKeys),
                    ("untouched gradient buffer", keyGradient.narrow(2, P + T, 3), zeros_like(sentKeys.narrow(2, 0, 3))),
                })
                {
                    double error = actual.numel() == 0 ? 0 : (actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>();
                    double size = actual.numel() == 0 ? 1 : Math.Max(1, expected.to(ScalarType.Float64).abs().max().item<double>());
                    if (!(error <= tolerance * size))
                        return $"its {name} differs from the blockwise path's by {error:G3} (tolerance {tolerance * size:G3}) over a prefix of {P}";
                }
            }
            return null;
        }
        catch (Exception e) when (e is System.Runtime.InteropServices.ExternalException or InvalidCastException or InvalidOperationException)
        {
            // The interpreter's own first line says only that something failed; the error is on its last lines.
            var lines = e.Message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            return lines.LastOrDefault(l => l.Contains("Error:", StringComparison.Ordinal)) ?? lines.FirstOrDefault() ?? e.GetType().Name;
        }

        static Tensor Merged(Tensor x) => x.transpose(1, 2).reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]);

        // [B, heads, T, d] → the blockwise path's [B, kv_heads, groups·T, d].
        static Tensor Stacked(Tensor x, long kvHeads) => x.reshape(x.shape[0], kvHeads, x.shape[1] / kvHeads * x.shape[2], x.shape[3]);
    }
}
