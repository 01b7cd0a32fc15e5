using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Distributed;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Distributed;

/// <summary>
/// Data-parallel training without MPI: the ranks are threads of this process joined by <see cref="ThreadRanks"/>, so the
/// sharding, the normalisation by the global labelled-token count and the gradient all-reduce are checked everywhere
/// (the mpirun tests in Microsoft.ML.Seco.Cli.Tests run only where Open MPI is installed).
/// </summary>
[TestClass]
public sealed class DataParallelTests
{
    const int Vocab = 61;

    /// <summary>In-process ranks: each collective is a rendezvous of all threads, summing in rank order.</summary>
    sealed class ThreadRanks(int size)
    {
        readonly Barrier _barrier = new(size);
        readonly object?[] _slots = new object?[size];

        public ICommunicator Rank(int rank) => new Member(this, rank);

        void Wait()
        {
            // A rank that failed never arrives: fail the others instead of hanging the test run.
            if (!_barrier.SignalAndWait(TimeSpan.FromMinutes(2))) throw new TimeoutException("A rank did not reach the collective.");
        }

        T[] Exchange<T>(int rank, T[] mine)
        {
            _slots[rank] = mine;
            Wait();
            var all = _slots.Select(s => (T[])s!).ToArray();
            var result = new T[mine.Length];
            for (int i = 0; i < mine.Length; i++) result[i] = all.Select(a => a[i]).Aggregate((a, b) => (dynamic)a! + b);
            Wait();
            return result;
        }

        sealed class Member(ThreadRanks group, int rank) : ICommunicator
        {
            public int Rank => rank;
            public int Size => group._slots.Length;
            public int LocalRank => rank;
            public void AllReduceSum(Span<float> values) => group.Exchange(rank, values.ToArray()).CopyTo(values);
            public void AllReduceSum(Span<double> values) => group.Exchange(rank, values.ToArray()).CopyTo(values);
            public void Broadcast(Span<byte> bytes, int root)
            {
                group._slots[rank] = bytes.ToArray();
                group.Wait();
                ((byte[])group._slots[root]!).CopyTo(bytes);
                group.Wait();
            }
            public void Abort(string message, int exitCode) => throw new InvalidOperationException(message);
        }
    }

    /// <summary>Sequences of different lengths, each with its own labelled span, so that the ranks' token counts differ.</summary>
    static List<TrainingExample> Examples(int count)
    {
        var random = new Random(5);
        return Enumerable.Range(0, count).Select(i =>
        {
            int length = 10 + random.Next(0, 15);
            var ids = Enumerable.Range(0, length).Select(_ => random.Next(1, Vocab)).ToArray();
            // Sequence 2 has no label at all: its rank's share then has no loss (a filler stands in for it).
            var labels = ids.Select((id, t) => t >= i % 4 && i != 2 ? id : (int)TokenBatch.IgnoreIndex).ToArray();
            return new TrainingExample(ids, labels);
        }).ToList();
    }

    static CausalLM LoraModel()
    {
        random.manual_seed(1);
        return TestModels.WithLora(TestModels.Create(TestModels.Llama()));
    }

    static ChunkwiseStep Step(int? sampled) => new(new ChunkwiseOptions { ChunkSize = 8, SampledChunks = sampled, Seed = 4 });

    static readonly TrainingOptions Options = new() { LearningRate = 1e-2, MaxEpoch = 2, GradientAccumulationSteps = 2, Schedule = LearningRateSchedule.Constant };

    static Dictionary<string, double[]> Adapter(CausalLM model) =>
        TrainableParameters.Of(model).ToDictionary(p => p.Name, p => p.Parameter.to(ScalarType.Float64).data<double>().ToArray());

    static (Dictionary<string, double[]> Adapter, TrainingSummary Summary) Alone(List<TrainingExample> examples, int batchSize, int? sampled)
    {
        using var model = LoraModel();
        using var trainer = new Trainer(model, Step(sampled), Options);
        var summary = trainer.Train(() => Batching.Batches(examples, batchSize, 0, CPU), null, null, CancellationToken.None,
            () => Batching.Batches(examples, batchSize, 0, CPU));
        return (Adapter(model), summary);
    }

    static (Dictionary<string, double[]> Adapter, TrainingSummary Summary)[] Ranks(int size, List<TrainingExample> examples, int batchSize, int? sampled)
    {
        var group = new ThreadRanks(size);
        // Built one after the other: LoRA's initialisation draws from torch's global generator.
        var models = Enumerable.Range(0, size).Select(_ => LoraModel()).ToArray();
        // Rank 1's adapter starts elsewhere: the start of training must give every rank rank 0's.
        using (no_grad()) foreach (var (_, p) in TrainableParameters.Of(models[^1])) p.add_(0.5);
        var results = new (Dictionary<string, double[]>, TrainingSummary)[size];
        var threads = Enumerable.Range(0, size).Select(rank => new Thread(() =>
        {
            using var parallel = new DataParallel(group.Rank(rank));
            using var trainer = new Trainer(models[rank], Step(sampled), Options) { DataParallel = parallel };
            var summary = trainer.Train(() => parallel.Shard(examples, batchSize, 0, CPU), null, null, CancellationToken.None,
                () => Batching.Batches(parallel.ShardExamples(examples), batchSize, 0, CPU));
            results[rank] = (Adapter(models[rank]), summary);
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        foreach (var m in models) m.Dispose();
        return results;
    }

    static void AssertSame(Dictionary<string, double[]> expected, Dictionary<string, double[]> actual, double tolerance, string what)
    {
        CollectionAssert.AreEquivalent(expected.Keys.ToList(), actual.Keys.ToList());
        foreach (var (name, values) in expected)
            for (int i = 0; i < values.Length; i++)
                Assert.AreEqual(values[i], actual[name][i], tolerance, $"{what}: {name}[{i}]");
    }

    [TestMethod]
    [DataRow(null, DisplayName = "SeCO")]
    [DataRow(1, DisplayName = "SpaCO, t = 1")]
    public void TwoRanksWithBatchOneFollowOneProcessWithBatchTwo(int? sampled)
    {
        // 7 sequences: rank 0's share of the second batch (sequence 2) has no label and the last global batch has one
        // sequence, so a filler runs in both places; accumulation 2 over 4 batches.
        var examples = Examples(7);
        var alone = Alone(examples, 2, sampled);
        var ranks = Ranks(2, examples, 1, sampled);

        foreach (var (adapter, summary) in ranks)
        {
            AssertSame(alone.Adapter, adapter, 1e-9, "adapter");
            Assert.AreEqual(alone.Summary.Steps, summary.Steps);
            for (int s = 0; s < alone.Summary.History.Count; s++)
            {
                Assert.AreEqual(alone.Summary.History[s].Loss, summary.History[s].Loss, 1e-9, $"loss of step {s + 1}: the mean over the global batch's labelled tokens");
                Assert.AreEqual(alone.Summary.History[s].ValidationLoss ?? -1, summary.History[s].ValidationLoss ?? -1, 1e-9, $"validation loss after step {s + 1}");
            }
        }
        // The same sequences in other batches give another adapter: the equality above is not a property of any two runs.
        var reversed = Alone(Enumerable.Reverse(examples).ToList(), 2, sampled);
        Assert.IsTrue(reversed.Adapter.Any(p => p.Value.Zip(alone.Adapter[p.Key]).Any(v => Math.Abs(v.First - v.Second) > 1e-6)), "other batches should give another adapter");
    }

    [TestMethod]
    public void ThreeRanksShareEachGlobalBatchInRankOrderPaddedToItsLength()
    {
        var examples = Examples(7);
        var group = new ThreadRanks(3);
        var shares = new List<(long Rows, long Length, long FirstId)>[3];
        var global = Batching.Groups(examples, 6, 0).ToList();
        Parallel.For(0, 3, rank =>
        {
            using var parallel = new DataParallel(group.Rank(rank));
            shares[rank] = parallel.Shard(examples, 2, 0, CPU).Select(b =>
            {
                using (b) return (b.BatchSize, b.Length, b.InputIds[0, 0].item<long>());
            }).ToList();
        });
        Assert.AreEqual(2, global.Count);
        for (int rank = 0; rank < 3; rank++)
        {
            Assert.AreEqual(global.Count, shares[rank].Count, $"rank {rank} runs one micro-batch per global batch");
            for (int g = 0; g < global.Count; g++)
            {
                int start = rank * 2;
                // An empty share gets a filler: the batch's first sequence with a label.
                var expectedFirst = start < global[g].Count ? global[g][start] : global[g].First(e => e.Labels.Skip(1).Any(l => l >= 0));
                Assert.AreEqual(global[g].Max(e => e.Ids.Length), shares[rank][g].Length, $"rank {rank}, batch {g}: padded to the global batch's length");
                Assert.AreEqual(start < global[g].Count ? Math.Min(2, global[g].Count - start) : 1, shares[rank][g].Rows, $"rank {rank}, batch {g}: rows");
                Assert.AreEqual(expectedFirst.Ids[0], shares[rank][g].FirstId, $"rank {rank}, batch {g}: first sequence");
            }
        }
    }

    [TestMethod]
    public void MicroBatchGradientsAreWeightedByTheirShareOfTheGlobalLabelledTokens()
    {
        // Rank 0 has 3 labelled tokens with mean loss 2, rank 1 has 1 with loss 6: the global mean is (3·2 + 6) / 4 = 3, and
        // each rank's gradient (of its own mean) enters with weight 3/4 and 1/4.
        var group = new ThreadRanks(2);
        var gradients = new[] { 4.0, 8.0 };
        var results = new (StepResult Result, long Tokens, double Gradient)[2];
        Parallel.For(0, 2, rank =>
        {
            using var parameter = new global::TorchSharp.Modules.Parameter(zeros(1, dtype: ScalarType.Float64));
            parameter.grad = full(1, gradients[rank], dtype: ScalarType.Float64);
            using var parallel = new DataParallel(group.Rank(rank));
            using var batch = TokenBatch.FromSequences([[1, 2, 3, 4]], null, 0, CPU);
            var local = new StepResult(rank == 0 ? 2 : 6, rank == 0 ? 3 : 1, 1, 1, 1, 1);
            var (result, tokens) = parallel.AfterMicroBatch([parameter], batch, local, 10 + rank);
            Assert.AreEqual(0, parameter.grad!.item<double>(), "the micro-batch's gradient moves into the accumulator");
            parallel.ReduceGradients([parameter]);
            results[rank] = (result, tokens, parameter.grad!.item<double>());
        });
        foreach (var (result, tokens, gradient) in results)
        {
            Assert.AreEqual(3, result.Loss, 1e-12);
            Assert.AreEqual(4, result.LabelledTokens);
            Assert.AreEqual(21, tokens);
            Assert.AreEqual(0.75 * 4 + 0.25 * 8, gradient, 1e-12);
        }
    }
}
