using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Model;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Training;

/// <summary>What <see cref="Evaluation.ScoreDocument(CausalLM, DocumentEncoder, Document, int, int, bool)"/> measured on one document.</summary>
/// <param name="SumNll">Summed negative log-likelihood of the scored tokens (nats).</param>
/// <param name="Tokens">Tokens scored: every next-token target of a text, the response's of a prompt/response pair.</param>
/// <param name="Sequences">Windows the document was scored in (longer documents are split as in training).</param>
/// <param name="TokenNll">Each scored token's NLL in order, when asked for; else null.</param>
public sealed record DocumentScore(double SumNll, long Tokens, int Sequences, IReadOnlyList<double>? TokenNll = null)
{
    /// <summary>Mean NLL per scored token; NaN when nothing was scored.</summary>
    public double MeanNll => Tokens == 0 ? double.NaN : SumNll / Tokens;
    /// <summary>exp(<see cref="MeanNll"/>); NaN when nothing was scored.</summary>
    public double Perplexity => Math.Exp(MeanNll);
}

/// <summary>
/// Token negative log-likelihood of batches, computed chunk by chunk against a key/value cache without a graph, so
/// memory is bounded by one chunk's activations and logits plus the cache, whatever the sequence length.
/// </summary>
public static class Evaluation
{
    /// <summary>
    /// Per sequence of <paramref name="batch"/>: the summed NLL of its labelled next-token targets and their number.
    /// The model is put in evaluation mode for the pass (no dropout) and its mode restored afterwards.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="batch">The batch; not disposed.</param>
    /// <param name="chunkSize">Tokens per forward pass.</param>
    public static (double[] SumNll, long[] Tokens) SequenceNll(CausalLM model, TokenBatch batch, int chunkSize)
    {
        using var scope = NewDisposeScope();
        var sums = zeros(batch.BatchSize, dtype: ScalarType.Float64, device: model.Device);
        var counts = new long[batch.BatchSize];
        ForEachScoredChunk(model, batch, chunkSize, (rows, nll) =>
        {
            sums.index_add_(0, rows, nll, 1);
            return true;
        }, counts);
        return (sums.cpu().data<double>().ToArray(), counts);
    }

    /// <summary>
    /// Per sequence, the NLL of every labelled next-token target in order (entry i of a plain text is
    /// −log p(token i+1 | tokens 0..i)). Copies each chunk's values to the host: for reports, not for training loops.
    /// </summary>
    public static double[][] TokenNll(CausalLM model, TokenBatch batch, int chunkSize)
    {
        var perRow = Enumerable.Range(0, (int)batch.BatchSize).Select(_ => new List<double>()).ToArray();
        ForEachScoredChunk(model, batch, chunkSize, (rows, nll) =>
        {
            var r = rows.cpu().data<long>().ToArray();
            var v = nll.cpu().data<double>().ToArray();
            for (int i = 0; i < r.Length; i++) perRow[r[i]].Add(v[i]);
            return true;
        }, new long[batch.BatchSize]);
        return perRow.Select(r => r.ToArray()).ToArray();
    }

    /// <summary>
    /// The one chunk loop behind both views: forward each chunk against the cache (no graph, eval mode), compute
    /// float64 NLL only where a label is (positions in row-major order), and hand (row of each value, values) over.
    /// </summary>
    static void ForEachScoredChunk(CausalLM model, TokenBatch batch, int chunkSize, Func<Tensor, Tensor, bool> consume, long[] counts)
    {
        if (chunkSize <= 0) throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "chunkSize must be positive.");
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var targets = batch.Targets();
            var (labelledPositions, _) = TokenBatch.LabelledPositions(targets, chunkSize);
            using var cache = new KvCache(model.Config, batch.BatchSize, batch.Length, model.DType, model.Device);
            foreach (var (j, start, size, hidden) in model.Prefill(batch.InputIds, cache, chunkSize))
            {
                if (labelledPositions[j].Length == 0) continue; // nothing to score: no logits needed
                foreach (long position in labelledPositions[j]) counts[position / size]++;
                // Logits only where a label is, the same saving the training steps make, a piece of rows at a time.
                var positions = tensor(labelledPositions[j], device: model.Device);
                var nll = model.TokenNll(hidden, targets.narrow(1, start, size), positions);
                consume(positions.div(size, rounding_mode: RoundingMode.floor), nll.to(ScalarType.Float64));
            }
        }
        finally
        {
            model.train(wasTraining);
        }
    }

    /// <summary>
    /// Scores one document the way the fitted stage and <c>seco eval</c> do: tokenized as for training (BOS, text, EOS;
    /// for a prompt/response pair only the response's tokens are scored), split into windows of
    /// <paramref name="maxSequenceLength"/> tokens, each forwarded chunk by chunk against a key/value cache.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="document">The document.</param>
    /// <param name="chunkSize">Tokens per forward pass (memory is one chunk plus the cache).</param>
    /// <param name="maxSequenceLength">Longest window scored at once, at least 2.</param>
    /// <param name="perToken">Also return each scored token's NLL.</param>
    public static DocumentScore ScoreDocument(CausalLM model, ModelTokenizer tokenizer, Document document, int chunkSize, int maxSequenceLength = SecoDefaults.MaxSequenceLength, bool perToken = false)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return ScoreDocument(model, new DocumentEncoder(tokenizer), document, chunkSize, maxSequenceLength, perToken);
    }

    /// <summary>
    /// Scores one document through <paramref name="encoder"/>, the step training takes from a document to ids and
    /// trained tokens: what is scored is what is trained on (a conversation's assistant turns, with the encoder's chat
    /// template and <see cref="DocumentEncoder.AssistantOnlyLoss"/>), in windows of <paramref name="maxSequenceLength"/>
    /// tokens, each forwarded chunk by chunk against a key/value cache. A document with nothing to score (an empty
    /// text, an empty response, a conversation without an assistant turn with text) scores no token: a
    /// <see cref="DocumentScore"/> with <see cref="DocumentScore.Tokens"/> 0 and NaN mean NLL and perplexity, whatever
    /// the encoder's <see cref="DocumentEncoder.RefuseUntrainedConversations"/> (training's rule, not scoring's).
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="encoder">The document encoder (tokenizer, and the chat template for conversations).</param>
    /// <param name="document">The document.</param>
    /// <param name="chunkSize">Tokens per forward pass (memory is one chunk plus the cache).</param>
    /// <param name="maxSequenceLength">Longest window scored at once, at least 2.</param>
    /// <param name="perToken">Also return each scored token's NLL.</param>
    /// <exception cref="InvalidDataException">The document cannot be encoded (e.g. a conversation without a chat template); the message names it.</exception>
    public static DocumentScore ScoreDocument(CausalLM model, DocumentEncoder encoder, Document document, int chunkSize, int maxSequenceLength = SecoDefaults.MaxSequenceLength, bool perToken = false)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(document);
        encoder = encoder with { RefuseUntrainedConversations = false };
        var tokenizer = encoder.Tokenizer;
        var builder = new SequenceBuilder(maxSequenceLength, SequenceOverflow.Split);
        double sum = 0;
        long tokens = 0;
        int sequences = 0;
        var values = perToken ? new List<double>() : null;
        foreach (var batch in Batching.Batches(builder.FromDocument(encoder, document), 1, tokenizer.PaddingId, model.Device))
        {
            using (batch)
            {
                sequences++;
                if (values is not null)
                {
                    var nll = TokenNll(model, batch, chunkSize)[0];
                    values.AddRange(nll);
                    sum += nll.Sum();
                    tokens += nll.Length;
                }
                else
                {
                    var (batchSum, batchTokens) = MeanNll(model, batch, chunkSize);
                    sum += batchSum;
                    tokens += batchTokens;
                }
            }
        }
        return new DocumentScore(sum, tokens, sequences, values);
    }

    /// <summary>Summed NLL and labelled-token count of one batch (mean NLL = sum / tokens, perplexity = exp of it).</summary>
    /// <param name="model">The model.</param>
    /// <param name="batch">The batch; not disposed.</param>
    /// <param name="chunkSize">Tokens per forward pass.</param>
    public static (double SumNll, long Tokens) MeanNll(CausalLM model, TokenBatch batch, int chunkSize)
    {
        var (sums, tokens) = SequenceNll(model, batch, chunkSize);
        return (sums.Sum(), tokens.Sum());
    }

    /// <summary>
    /// Summed NLL and labelled-token count over <paramref name="batches"/>, each disposed once evaluated (batches are
    /// usually created on the fly by <see cref="Data.Batching.Batches"/>).
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="batches">The batches; each is disposed after use.</param>
    /// <param name="chunkSize">Tokens per forward pass.</param>
    public static (double SumNll, long Tokens) MeanNll(CausalLM model, IEnumerable<TokenBatch> batches, int chunkSize)
    {
        double sum = 0;
        long tokens = 0;
        foreach (var batch in batches)
        {
            using (batch)
            {
                var (s, t) = MeanNll(model, batch, chunkSize);
                sum += s;
                tokens += t;
            }
        }
        return (sum, tokens);
    }
}
