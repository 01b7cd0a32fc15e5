using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Inference;

/// <summary>Why a <see cref="GenerationSession"/> stopped.</summary>
public enum GenerationStopReason
{
    /// <summary>Still generating.</summary>
    None,
    /// <summary>The model chose one of <see cref="GenerationOptions.StopTokens"/> (not part of the output).</summary>
    StopToken,
    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> tokens were generated.</summary>
    MaxNewTokens,
}

/// <summary>
/// The token-by-token generation core shared by <see cref="TextGenerator"/> and <c>SecoChatClient</c>: one
/// key/value cache per reply, the prompt prefilled into it once (block by block), then one token per step, each step
/// a forward pass of the one token before it over the cache. The only copy to the host per step is the sampled id.
/// </summary>
/// <remarks>
/// Every call does its work inside its own dispose scope and <c>no_grad</c> (both are per thread in TorchSharp), so a
/// session may be driven from an async method that resumes on another thread between tokens. A session is not
/// thread-safe, and the model's forward pass is not re-entrant: run one session on a model at a time.
/// Sampling draws one uniform number per token from a <see cref="Random"/> seeded with
/// <see cref="GenerationOptions.Seed"/> and inverts the cumulative distribution on the model's device, so a seed gives
/// the same tokens on every device up to floating-point ties.
/// </remarks>
public sealed class GenerationSession : IDisposable
{
    readonly CausalLM _model;
    readonly GenerationOptions _options;
    readonly HashSet<int> _stopTokens;
    readonly Random _random;
    readonly List<int> _generated = new();
    readonly KvCache _cache;
    Tensor _logits;
    long _position;
    int? _pending;
    bool _disposed;

    GenerationSession(CausalLM model, GenerationOptions options, KvCache cache, Tensor logits, int promptTokens)
    {
        _model = model;
        _options = options;
        _stopTokens = options.StopTokens.ToHashSet();
        _random = new Random(unchecked((int)(options.Seed ^ (options.Seed >> 32))));
        _cache = cache;
        _logits = logits;
        _position = promptTokens;
        PromptTokenCount = promptTokens;
    }

    /// <summary>Prompt tokens prefilled into the cache.</summary>
    public int PromptTokenCount { get; }

    /// <summary>The tokens generated so far (no stop token).</summary>
    public IReadOnlyList<int> Generated => _generated;

    /// <summary>Why generation ended; <see cref="GenerationStopReason.None"/> while it goes on.</summary>
    public GenerationStopReason StopReason { get; private set; }

    /// <summary>
    /// Allocates the cache for the prompt and <see cref="GenerationOptions.MaxNewTokens"/> more positions and prefills
    /// the prompt in blocks of <see cref="GenerationOptions.PrefillChunkSize"/> tokens.
    /// </summary>
    /// <param name="model">The model (its grad mode is left alone: the session runs without a graph).</param>
    /// <param name="prompt">Prompt token ids (at least one).</param>
    /// <param name="options">Decoding settings (validated).</param>
    /// <param name="cancellationToken">Checked before each prefill block.</param>
    /// <exception cref="ArgumentException">The prompt is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="OperationCanceledException">Cancelled during the prefill.</exception>
    public static GenerationSession Start(CausalLM model, IReadOnlyList<int> prompt, GenerationOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (prompt.Count == 0) throw new ArgumentException("The prompt must contain at least one token.", nameof(prompt));
        cancellationToken.ThrowIfCancellationRequested();

        using var _ = no_grad();
        using var scope = NewDisposeScope();
        // The cache and the last logits outlive this call: they leave every dispose scope and the session disposes them.
        var cache = new KvCache(model.Config, 1, prompt.Count + Math.Max(options.MaxNewTokens, 1), model.DType, model.Device);
        foreach (var buffer in cache.Keys.Concat(cache.Values)) buffer.DetachFromDisposeScope();
        try
        {
            Tensor? logits = null;
            var ids = tensor(prompt.Select(t => (long)t).ToArray(), new long[] { 1, prompt.Count }, device: model.Device);
            // Only the prompt's last position predicts anything: the blocks before the last run only as far as the
            // cache needs them.
            int lastBlock = (prompt.Count - 1) / options.PrefillChunkSize;
            foreach (var block in model.Prefill(ids, cache, options.PrefillChunkSize, hiddenNeeded: j =>
                     {
                         cancellationToken.ThrowIfCancellationRequested();
                         return j == lastBlock;
                     }))
                logits = model.Logits(block.Hidden.narrow(1, block.Length - 1, 1)).reshape(-1).DetachFromDisposeScope();
            return new GenerationSession(model, options, cache, logits!, prompt.Count);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Generates the next token. Returns false, setting <see cref="StopReason"/>, when the model chose a stop token or
    /// <see cref="GenerationOptions.MaxNewTokens"/> tokens are out; after that it keeps returning false.
    /// </summary>
    /// <param name="token">The new token, or 0 when there is none.</param>
    /// <param name="cancellationToken">Checked before the step's work.</param>
    /// <exception cref="OperationCanceledException">Cancelled before this token.</exception>
    public bool TryNext(out int token, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        token = 0;
        if (StopReason != GenerationStopReason.None) return false;
        cancellationToken.ThrowIfCancellationRequested();
        if (_generated.Count >= _options.MaxNewTokens)
        {
            StopReason = GenerationStopReason.MaxNewTokens;
            return false;
        }
        int next;
        using (no_grad())
        using (NewDisposeScope())
        {
            // The previous token is fed lazily: a reply that stops after it (a length limit, a caller's stop sequence)
            // never pays for a forward pass whose logits nobody reads.
            if (_pending is int previous)
            {
                var ids = tensor(new long[] { previous }, new long[] { 1, 1 }, device: _model.Device);
                var (hidden, chunkCache) = _model.ForwardChunk(ids, _position, _cache);
                _cache.Write(_position, chunkCache);
                _position++;
                var logits = _model.Logits(hidden).reshape(-1).DetachFromDisposeScope();
                _logits.Dispose();
                _logits = logits;
                _pending = null;
            }
            next = Pick(_logits);
        }
        if (_stopTokens.Contains(next))
        {
            StopReason = GenerationStopReason.StopToken;
            return false;
        }
        _generated.Add(next);
        _pending = next;
        token = next;
        return true;
    }

    // Greedy: the argmax. Sampling (transformers' order): logits / temperature, top-k, then top-p over what top-k kept;
    // the token is where the cumulative mass first exceeds a uniform draw. Everything stays on the model's device but
    // the drawn number going in and the chosen id coming out.
    int Pick(Tensor logits)
    {
        if (_options.Temperature == 0) return (int)logits.argmax().item<long>();
        var probs = nn.functional.softmax(logits.to(ScalarType.Float64) / _options.Temperature, 0);
        Tensor? order = null;
        long vocabulary = probs.shape[0];
        bool topK = _options.TopK > 0 && _options.TopK < vocabulary;
        if (topK || _options.TopP < 1)
        {
            (probs, order) = probs.sort(descending: true);
            if (topK)
            {
                probs = probs.narrow(0, 0, _options.TopK);
                order = order.narrow(0, 0, _options.TopK);
            }
            if (_options.TopP < 1)
            {
                // Keep every token whose preceding mass is below top_p of what is left (the most likely always stays).
                var drop = (probs.cumsum(0) - probs) >= probs.sum() * _options.TopP;
                probs = probs.masked_fill(drop, 0);
            }
        }
        var cumulative = probs.cumsum(0);
        long count = cumulative.shape[0];
        var threshold = cumulative.narrow(0, count - 1, 1) * _random.NextDouble();
        var index = (cumulative <= threshold).sum().clamp_max(count - 1).reshape(1);
        return (int)(order is null ? index : order.index_select(0, index)).item<long>();
    }

    /// <summary>Releases the cache.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _logits.Dispose();
        _cache.Dispose();
    }
}
