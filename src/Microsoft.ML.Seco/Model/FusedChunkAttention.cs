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
/// and lse (O(chunk)); the prefix is read through views of the cache, and its gradient, one layer's at a time, is added
/// into the cache-gradient buffers.
/// Kernels: <c>_scaled_dot_product_flash_attention_for_cpu</c> (and its backward) on the CPU, every floating dtype;
/// <c>_efficient_attention_forward</c>/<c>_backward</c> on CUDA. Each (device, dtype) is checked against the blockwise
/// path once per process before it is used (<see cref="Serves"/>).
/// </remarks>
internal static class FusedChunkAttention
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

        def forward(qs, k, v, pk, pv, scale: float) -> Tuple[Tensor, Tensor]:
            b, kvh, rows, d = qs.size(0), qs.size(1), qs.size(2), qs.size(3)
            t = k.size(2)
            groups = rows // t
            o1, l1 = _part_forward(qs, pk, pv, False, scale)
            o2, l2 = _part_forward(qs.reshape(b, kvh * groups, t, d), k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), True, scale)
            l1 = l1.reshape(b, kvh * groups, t)
            lse = torch.logaddexp(l1, l2)
            o = o1.reshape(b, kvh * groups, t, d).to(lse.dtype) * (l1 - lse).exp().unsqueeze(-1) + o2.to(lse.dtype) * (l2 - lse).exp().unsqueeze(-1)
            return o.to(qs.dtype).reshape(b, kvh, rows, d), lse.reshape(b, kvh, rows)

        def backward(g, qs, k, v, pk, pv, o, lse, scale: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            b, kvh, rows, d = qs.size(0), qs.size(1), qs.size(2), qs.size(3)
            t = k.size(2)
            groups = rows // t
            g = g.contiguous()
            dq1, dpk, dpv = _part_backward(g, qs, pk, pv, o, lse, False, scale)
            dq2, dk, dv = _part_backward(g.reshape(b, kvh * groups, t, d), qs.reshape(b, kvh * groups, t, d), k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), o.reshape(b, kvh * groups, t, d), lse.reshape(b, kvh * groups, t), True, scale)
            dq = dq1 + dq2.reshape(b, kvh, rows, d)
            return dq, dk.reshape(b, kvh, groups, t, d).sum(2), dv.reshape(b, kvh, groups, t, d).sum(2), dpk, dpv
        """;

    // One unit per process: its Dispose does not free the native unit (docs/ENGINE.md). A source that does not compile
    // terminates the process from native code (no exception reaches .NET), so the source is pinned by a test.
    static readonly Lazy<jit.CompilationUnit> Unit = new(() => jit.compile(Source + "\n"));

    // Whether the fused kernels serve a (device, dtype), found once per process: null when they do, else why not.
    static readonly ConcurrentDictionary<(string Device, ScalarType DType), string?> Verdicts = new();

    /// <summary>
    /// True when the fused path can attend these stacked queries [B, kv_heads, groups·T, d] over a prefix of
    /// <paramref name="prefixLength"/> positions: no window that cuts the prefix, and kernels that passed their check
    /// for this device and dtype. With <see cref="AttentionKernel.Fused"/> a failed check throws.
    /// </summary>
    public static bool Serves(Tensor queries, long chunkLength, long prefixLength, int? window, AttentionKernel kernel)
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
    public static bool ServesSequences(ModelConfig config, AttentionKernel kernel, long length) =>
        kernel != AttentionKernel.Blockwise && (config.SlidingWindow is not int w || w >= length);

    /// <summary>True when every chunk attention of <paramref name="model"/> over sequences of up to <paramref name="length"/> tokens runs fused.</summary>
    public static bool ServesModel(CausalLM model, long length) =>
        ServesSequences(model.Config, model.Attention.Kernel, length) && Verdict(model.Device, model.DType) is null;

    /// <summary>Why the fused kernels do not serve <paramref name="dtype"/> on <paramref name="device"/>, or null when they do.</summary>
    public static string? Verdict(Device device, ScalarType dtype) => Verdicts.GetOrAdd((device.ToString(), dtype), key => Check(device, key.DType));

    /// <summary>
    /// Differentiable attention with respect to the stacked queries and the chunk's keys/values; the prefix keys'/values'
    /// gradients go into the cache-gradient buffers when the prefix has them. Queries [B, kv_heads, groups·T, d].
    /// </summary>
    public static Tensor Apply(Tensor queries, Tensor keys, Tensor values, CachedPrefix prefix) =>
        is_grad_enabled() && (queries.requires_grad || keys.requires_grad || values.requires_grad)
            ? Function.apply(queries, keys, values, prefix)
            : Forward(queries, keys, values, prefix).Output;

    static double Scale(Tensor queries) => 1 / Math.Sqrt(queries.shape[^1]);

    static (Tensor Output, Tensor LogSumExp) Forward(Tensor q, Tensor k, Tensor v, CachedPrefix prefix) =>
        ((Tensor, Tensor))Unit.Value.invoke("forward", q, k, v, prefix.Keys, prefix.Values, Scale(q));

    static (Tensor Queries, Tensor Keys, Tensor Values, Tensor PrefixKeys, Tensor PrefixValues) Backward(Tensor gradOutput, Tensor q, Tensor k,
        Tensor v, Tensor output, Tensor logSumExp, CachedPrefix prefix) =>
        ((Tensor, Tensor, Tensor, Tensor, Tensor))Unit.Value.invoke("backward", gradOutput, q, k, v, prefix.Keys, prefix.Values, output, logSumExp, Scale(q));

    sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => nameof(FusedChunkAttention);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, v, prefix) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (CachedPrefix)vars[3]);
            var (output, logSumExp) = Forward(q, k, v, prefix);
            ctx.save_for_backward(new List<Tensor> { q, k, v, output, logSumExp });
            ctx.save_data("prefix", prefix);
            return output;
        }

        // On CUDA this runs on libtorch's device thread (BackwardHandOver).
        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) => BackwardHandOver<Function>.Run(gradOutput, () =>
        {
            var saved = ctx.get_saved_variables();
            var prefix = (CachedPrefix)ctx.get_data("prefix");
            using var timed = prefix.Phases?.Measure(StepPhases.AttentionBackward);
            var (dq, dk, dv, prefixKeys, prefixValues) = Backward(gradOutput, saved[0], saved[1], saved[2], saved[3], saved[4], prefix);
            if (prefix.KeyGradient is not null)
            {
                prefix.KeyGradient.add_(prefixKeys);
                prefix.ValueGradient!.add_(prefixValues);
            }
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
            const long B = 1, kv = 2, g = 3, T = 5, P = 13, d = 16;
            var (q, k, v) = (R(B, kv, g * T, d), R(B, kv, T, d), R(B, kv, T, d));
            var prefix = new CachedPrefix(R(B, kv, P, d), R(B, kv, P, d), null, null);
            var gradOutput = R(B, kv, g * T, d);

            var (output, logSumExp) = Forward(q, k, v, prefix);
            var (dq, dk, dv, dpk, dpv) = Backward(gradOutput, q, k, v, output, logSumExp, prefix);
            var reference = ChunkAttention.BlockwiseReference(q, k, v, gradOutput, prefix);
            double tolerance = dtype switch { ScalarType.Float64 => 1e-10, ScalarType.Float32 => 1e-4, _ => 5e-2 };
            foreach (var (name, actual, expected) in new[]
            {
                ("output", output, reference.Output), ("query gradient", dq, reference.Queries), ("key gradient", dk, reference.Keys),
                ("value gradient", dv, reference.Values), ("prefix key gradient", dpk, reference.PrefixKeys), ("prefix value gradient", dpv, reference.PrefixValues),
            })
            {
                double error = (actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>();
                double size = Math.Max(1, expected.to(ScalarType.Float64).abs().max().item<double>());
                if (!(error <= tolerance * size)) return $"its {name} differs from the blockwise path's by {error:G3} (tolerance {tolerance * size:G3})";
            }
            return null;
        }
        catch (Exception e) when (e is System.Runtime.InteropServices.ExternalException or InvalidCastException or InvalidOperationException)
        {
            return e.Message.Split('\n')[0];
        }
    }
}
