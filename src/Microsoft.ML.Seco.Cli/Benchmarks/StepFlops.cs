using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;

namespace Microsoft.ML.Seco.Cli.Benchmarks;

/// <summary>
/// Model FLOPs of one step, counted analytically from the matrix products (2 FLOPs per multiply-add; norms, rotary,
/// softmax and element-wise work are left out), batch 1, causal attention counted once (a baseline that computes the
/// masked half of the score matrix does more work than this counts).
/// <list type="bullet">
/// <item>Forward F(L) = L · [layers · (q, k, v, o, gate, up, down projections + LoRA A and B) + lm_head]
/// + layers · 4 · heads · head_dim · L(L+1)/2 (scores and weighted values).</item>
/// <item>Backward B(L) = the input gradient of every product (as much as its forward) + attention's backward (twice
/// its forward: gradients of scores, values, queries and keys) + the weight gradients of the trainable LoRA factors.
/// Frozen weights get no weight gradient, so B ≈ F here instead of the 2F of full fine-tuning.</item>
/// <item>full: F + B. checkpoint: F + (F − lm_head) + B (every layer's forward again in the backward).
/// seco: Stage 1 + Stage 2's forward F + B, where Stage 1 is the forward of every chunk but the last, up to the last
/// layer's keys/values (a selected chunk's loss comes from Stage 2, and no chunk reads the last one's cache). spaco:
/// Stage 1 runs in blocks of chunks (<see cref="ChunkwiseOptions.Stage1BlockSize(int, bool)"/>): a block whose chunks are all sampled
/// stops at the last layer's keys/values as in SeCO, any other block runs in full, with lm_head only for the chunks
/// not sampled, and the last chunk is skipped when sampled; plus Σ_j π_j (F_j + B_j) over the chunks, π_j the sampler's
/// probability of keeping chunk j (<see cref="IChunkSampler.InclusionProbabilities"/>; t/k for the built-in samplers,
/// when it is (t/k)(F + B)). Expectations are exact for the sampler: a block skips its tail with the probability that
/// all its chunks are kept (<see cref="IChunkSampler.AllKeptProbability"/>). inference: F.</item>
/// </list>
/// </summary>
internal static class StepFlops
{
    /// <summary>
    /// The FLOPs of one step of <paramref name="strategy"/>; <paramref name="sampler"/> (default the fixed budget) is
    /// SpaCO's, with <paramref name="labelledChunks"/> for a sampler that uses them.
    /// </summary>
    public static double Of(string strategy, ModelConfig c, LoraConfig? lora, int length, int chunkSize, int sampledChunks, IChunkSampler? sampler = null,
                            IReadOnlyList<bool>? labelledChunks = null)
    {
        sampler ??= ChunkSamplers.FixedBudget;
        double L = length;
        double q = (double)c.NumAttentionHeads * c.HeadDim, kv = (double)c.NumKeyValueHeads * c.HeadDim, h = c.HiddenSize, i = c.IntermediateSize;
        var shapes = new Dictionary<string, (double In, double Out)>
        {
            ["q_proj"] = (h, q), ["k_proj"] = (h, kv), ["v_proj"] = (h, kv), ["o_proj"] = (q, h),
            ["gate_proj"] = (h, i), ["up_proj"] = (h, i), ["down_proj"] = (i, h),
        };
        double Dense(IEnumerable<string> modules) => modules.Sum(m => 2 * shapes[m].In * shapes[m].Out);
        double Adapters(IEnumerable<string> modules) =>
            lora is null ? 0 : modules.Where(lora.TargetModules.Contains).Sum(m => 2 * lora.Rank * (shapes[m].In + shapes[m].Out));
        double dense = Dense(shapes.Keys), adapters = Adapters(shapes.Keys);
        double head = 2 * h * c.VocabSize;
        double attention = c.NumHiddenLayers * 4 * q * L * (L + 1) / 2;

        // The layers' forward over the first n tokens (no lm_head).
        double Layers(double n) => n * c.NumHiddenLayers * (dense + adapters) + c.NumHiddenLayers * 4 * q * n * (n + 1) / 2;
        double forward = Layers(L) + L * head;
        double backward = L * (c.NumHiddenLayers * (dense + 2 * adapters) + head) + 2 * attention;
        int chunks = (int)((length + chunkSize - 1) / chunkSize);
        int t = Math.Min(sampledChunks, chunks);
        // π_j, and the FLOPs of chunk j's forward and backward (they sum to F and B).
        double[] kept = strategy == "spaco" ? sampler.InclusionProbabilities(chunks, t, labelledChunks) : new double[chunks];
        double ChunkForward(double start, double end) => Layers(end) - Layers(start) + (end - start) * head;
        double ChunkBackward(double start, double end) =>
            (end - start) * (c.NumHiddenLayers * (dense + 2 * adapters) + head) + 2 * c.NumHiddenLayers * 4 * q * (end * (end + 1) - start * (start + 1)) / 2;
        double expectedHeads = 0, expectedStage2 = 0;
        for (int j = 0; j < chunks; j++)
        {
            double start = (double)j * chunkSize, end = Math.Min(L, start + chunkSize);
            expectedHeads += kept[j] * (end - start) * head;
            expectedStage2 += kept[j] * (ChunkForward(start, end) + ChunkBackward(start, end));
        }
        double lastStart = (chunks - 1.0) * chunkSize;
        double lastChunk = Layers(L) - Layers(lastStart);
        // What Stage 1 leaves out of the last layer for a chunk whose loss Stage 2 computes (it needs only the keys and
        // values): the attention, o_proj and the MLP, over the first n tokens.
        string[] tailModules = ["o_proj", "gate_proj", "up_proj", "down_proj"];
        double tail = Dense(tailModules) + Adapters(tailModules);
        double LastLayerTail(double n) => n * tail + 4 * q * n * (n + 1) / 2;
        double skippedTail = LastLayerTail(lastStart);
        double stage1Selected = Layers(L) - lastChunk - skippedTail;

        // SpaCO: the tail a block of Stage 1 skips when every chunk in it is sampled (the last chunk, when sampled, is
        // not in Stage 1 at all: a block holding it is skipped if the rest is sampled too).
        int blockChunks = new ChunkwiseOptions { ChunkSize = chunkSize }.Stage1BlockSize(c.NumHiddenLayers, fusedAttention: true) / chunkSize;
        double expectedSkippedTail = 0;
        for (int first = 0; strategy == "spaco" && first < chunks; first += blockChunks)
        {
            int n = Math.Min(blockChunks, chunks - first);
            double end = Math.Min(lastStart, (double)(first + n) * chunkSize), start = (double)first * chunkSize;
            if (end > start)
                expectedSkippedTail += sampler.AllKeptProbability(chunks, t, Enumerable.Range(first, n).ToArray(), labelledChunks) * (LastLayerTail(end) - LastLayerTail(start));
        }
        return strategy switch
        {
            "full" => forward + backward,
            "checkpoint" => 2 * forward - L * head + backward,
            "seco" => stage1Selected + forward + backward,
            "spaco" => forward - expectedHeads - kept[^1] * lastChunk - expectedSkippedTail + expectedStage2,
            "inference" => forward,
            _ => throw new ArgumentException($"Unknown strategy '{strategy}'.", nameof(strategy)),
        };
    }
}
