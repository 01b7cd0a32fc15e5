namespace Microsoft.ML.Seco.Model;

/// <summary>How a chunk attends over [cached prefix ; itself] (Hugging Face's <c>attn_implementation</c>, for chunks).</summary>
public enum AttentionKernel
{
    /// <summary>
    /// The fused kernels where they serve (libtorch's flash attention on the CPU, memory-efficient attention on CUDA;
    /// no sliding window that cuts the prefix), checked once per process, device and dtype against the blockwise path;
    /// the blockwise path elsewhere. The default.
    /// </summary>
    Auto,
    /// <summary>As <see cref="Auto"/>, but a fused kernel that fails its check is an error instead of a fallback.</summary>
    Fused,
    /// <summary>Always the blockwise online softmax written in C#: every dtype, device and window. The tests' reference.</summary>
    Blockwise,
}

/// <summary>Settings of chunk attention: which kernel runs, and the blockwise path's score blocks.</summary>
public sealed record AttentionOptions
{
    /// <summary>The default options.</summary>
    public static AttentionOptions Default { get; } = new();

    /// <summary>Which kernel attends. Default <see cref="AttentionKernel.Auto"/>.</summary>
    public AttentionKernel Kernel { get; init; } = AttentionKernel.Auto;

    /// <summary>Prefix positions per score block of the blockwise path on the CPU (and the unit of CUDA's blocks). Default 1,024.</summary>
    public long PrefixBlockSize { get; init; } = 1024;

    /// <summary>
    /// Score bytes a blockwise prefix block may take on CUDA, where fewer, larger blocks pay (docs/ENGINE.md). Default 256 MiB.
    /// </summary>
    public long CudaScoreBlockBytes { get; init; } = 256L << 20;

    /// <summary>Throws on values out of range, naming the option.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Kernel)) throw new ArgumentOutOfRangeException(nameof(Kernel), Kernel, "Kernel is not a known attention kernel.");
        if (PrefixBlockSize <= 0) throw new ArgumentOutOfRangeException(nameof(PrefixBlockSize), PrefixBlockSize, "PrefixBlockSize must be at least 1.");
        if (CudaScoreBlockBytes <= 0) throw new ArgumentOutOfRangeException(nameof(CudaScoreBlockBytes), CudaScoreBlockBytes, "CudaScoreBlockBytes must be positive.");
    }

    /// <summary>
    /// Prefix positions per blockwise score block for <paramref name="rows"/> score rows (batch × kv heads × groups·T) of
    /// <paramref name="scoreBytes"/> bytes each: <see cref="PrefixBlockSize"/> on the CPU; on CUDA the largest multiple of
    /// it whose block stays within <see cref="CudaScoreBlockBytes"/>. A GPU running a chunk's many small operations
    /// mostly waits for the host to issue them, so fewer, larger blocks are faster there; on the CPU the small block keeps
    /// each step's peak at the floor. Either way a block is bounded, whatever the prefix length.
    /// </summary>
    public long BlockFor(long rows, int scoreBytes, bool cuda) =>
        cuda ? PrefixBlockSize * Math.Max(1, CudaScoreBlockBytes / (rows * PrefixBlockSize * scoreBytes)) : PrefixBlockSize;
}
