using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using System.Runtime.InteropServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Distributed;

/// <summary>
/// Data-parallel training over the ranks of a <see cref="ICommunicator"/>: each rank trains on its share of every global
/// batch, and the gradients are summed over the ranks and normalised by the global labelled-token count before each
/// optimizer step, so that N ranks with batch B follow one process with batch N·B (docs/SCALING.md).
/// </summary>
/// <remarks>
/// Rank r's share of a global batch of up to N·B sequences is sequences r·B to r·B + B − 1, right-padded to the global
/// batch's length so that every rank splits it into the same chunks and SpaCO's sampler, seeded by (seed, micro-batch
/// counter) alike on every rank, draws the selection the single process would draw. A rank whose share is empty (the
/// epoch's last, smaller batch) or has no labelled target trains on a copy of the batch's first sequence that has one,
/// with weight 0, so every rank runs the same steps and collectives. Each micro-batch's gradient is folded into a float32 accumulator with weight
/// (its labelled tokens) / (the global batch's labelled tokens), the latter summed over the ranks with the loss; the
/// accumulator is summed over the ranks once per optimizer step, as one flat host buffer.
/// </remarks>
public sealed class DataParallel : IDisposable
{
    readonly HashSet<TokenBatch> _fillers = new(ReferenceEqualityComparer.Instance);
    Tensor[]? _accumulated;
    bool[]? _hasGradient;

    /// <summary>Creates the data-parallel view of <paramref name="communicator"/>.</summary>
    public DataParallel(ICommunicator communicator)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        Communicator = communicator;
    }

    /// <summary>The ranks.</summary>
    public ICommunicator Communicator { get; }

    /// <summary>Whether this rank writes the run's files (rank 0).</summary>
    public bool IsRoot => Communicator.Rank == 0;

    /// <summary>Seconds spent in the per-step gradient all-reduce (host copies included), for the measurements of docs/SCALING.md.</summary>
    public double AllReduceSeconds { get; private set; }

    /// <summary>
    /// The device of this rank: a CUDA device named without an index ("cuda", or "auto" on a GPU machine) becomes
    /// cuda:<see cref="ICommunicator.LocalRank"/>, one rank per GPU; any other device is kept.
    /// </summary>
    /// <exception cref="OptionException">
    /// There are fewer GPUs on this machine than ranks on it; the error names <paramref name="option"/> (the option that
    /// chose the device, as the caller's record names it), for the caller to word in its own vocabulary.
    /// </exception>
    public Device DeviceFor(Device resolved, string option = "Device")
    {
        ArgumentNullException.ThrowIfNull(resolved);
        if (resolved.type != DeviceType.CUDA || resolved.index >= 0 || Communicator.Size == 1) return resolved;
        long gpus = cuda.device_count();
        if (Communicator.LocalRank >= gpus)
            throw new OptionException(option, null, $"rank {Communicator.Rank} is local rank {Communicator.LocalRank} on its machine, which has {gpus} CUDA device(s): " +
                "start at most one rank per GPU on each machine (mpirun -np, or slots= in the hostfile)");
        return device(DeviceType.CUDA, Communicator.LocalRank);
    }

    /// <summary>Sequences in one global batch: <paramref name="batchSizePerRank"/> times the ranks.</summary>
    public int GlobalBatchSize(int batchSizePerRank) => checked(batchSizePerRank * Communicator.Size);

    /// <summary>
    /// This rank's micro-batches: the batches <see cref="Batching.Batches"/> would make of <paramref name="examples"/>
    /// with batch size <see cref="GlobalBatchSize"/>, each cut to this rank's share (see the remarks). Every rank
    /// reads all the examples (cheap next to training) so that all agree on the global batches.
    /// </summary>
    public IEnumerable<TokenBatch> Shard(IEnumerable<TrainingExample> examples, int batchSizePerRank, int padId, Device device, int lengthSortWindow = 0)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (batchSizePerRank <= 0) throw new ArgumentOutOfRangeException(nameof(batchSizePerRank), batchSizePerRank, "batchSizePerRank must be positive.");
        if (lengthSortWindow < 0) throw new ArgumentOutOfRangeException(nameof(lengthSortWindow), lengthSortWindow, "lengthSortWindow must not be negative.");
        return ShardIterator(examples, batchSizePerRank, padId, device, lengthSortWindow);
    }

    IEnumerable<TokenBatch> ShardIterator(IEnumerable<TrainingExample> examples, int batchSizePerRank, int padId, Device device, int lengthSortWindow)
    {
        foreach (var group in Batching.Groups(examples, GlobalBatchSize(batchSizePerRank), lengthSortWindow))
        {
            int length = group.Max(e => e.Ids.Length);
            int start = Communicator.Rank * batchSizePerRank;
            var share = start < group.Count ? group.GetRange(start, Math.Min(batchSizePerRank, group.Count - start)) : [];
            // A share without a labelled target adds nothing to the global batch's loss, but a step refuses a batch
            // without one: such a rank, like one with no share, runs a filler that weighs 0.
            bool filler = !share.Any(HasTarget);
            if (filler) share = [group.FirstOrDefault(HasTarget) ?? group[0]];
            var ids = share.Select(e => (IReadOnlyList<int>)Padded(e.Ids, length, padId)).ToList();
            var labels = share.Select(e => (IReadOnlyList<int>)Padded(e.Labels, length, (int)TokenBatch.IgnoreIndex)).ToList();
            var batch = TokenBatch.FromSequences(ids, labels, padId, device);
            if (filler) _fillers.Add(batch);
            yield return batch;
        }
    }

    static bool HasTarget(TrainingExample example) => example.Labels.Skip(1).Any(l => l != TokenBatch.IgnoreIndex);

    static int[] Padded(int[] values, int length, int pad)
    {
        if (values.Length >= length) return values;
        var padded = new int[length];
        values.CopyTo(padded, 0);
        Array.Fill(padded, pad, values.Length, length - values.Length);
        return padded;
    }

    /// <summary>This rank's examples for evaluation: every <see cref="ICommunicator.Size"/>-th, from the rank's index; sum the results with <see cref="Sum"/>.</summary>
    public IEnumerable<TrainingExample> ShardExamples(IEnumerable<TrainingExample> examples)
    {
        ArgumentNullException.ThrowIfNull(examples);
        return examples.Where((_, i) => i % Communicator.Size == Communicator.Rank);
    }

    /// <summary>Rank 0's <paramref name="value"/>, on every rank (e.g. a seed drawn at random).</summary>
    public int FromRoot(int value)
    {
        var bytes = BitConverter.GetBytes(value);
        Communicator.Broadcast(bytes, 0);
        return BitConverter.ToInt32(bytes);
    }

    /// <summary>A loss sum and its token count summed over the ranks.</summary>
    public (double Sum, long Count) Sum(double sum, long count)
    {
        Span<double> values = [sum, count];
        Communicator.AllReduceSum(values);
        return (values[0], (long)values[1]);
    }

    /// <summary>True on every rank when <paramref name="flag"/> is true on any (e.g. one rank was asked to cancel).</summary>
    public bool Any(bool flag)
    {
        Span<double> values = [flag ? 1 : 0];
        Communicator.AllReduceSum(values);
        return values[0] > 0;
    }

    /// <summary>Makes every rank's parameters equal to rank 0's, bit for bit (at the start of training).</summary>
    internal void Synchronize(IReadOnlyList<Parameter> parameters)
    {
        if (Communicator.Size == 1) return;
        using var noGrad = no_grad();
        foreach (var p in parameters)
        {
            using var scope = NewDisposeScope();
            var host = p.detach().cpu().contiguous();
            var bytes = host.bytes.ToArray();
            Communicator.Broadcast(bytes, 0);
            if (IsRoot) continue;
            host.bytes = bytes;
            p.copy_(host);
        }
    }

    /// <summary>
    /// After a micro-batch's step: moves its gradient into the accumulator with weight (its labelled tokens) / (the
    /// global batch's), leaving the parameters' gradients at zero, and returns the global batch's result (mean loss over
    /// all its labelled tokens, their count) and token count.
    /// </summary>
    internal (StepResult Result, long Tokens) AfterMicroBatch(IReadOnlyList<Parameter> parameters, TokenBatch batch, StepResult local, long tokens)
    {
        bool filler = _fillers.Remove(batch);
        long labelled = filler ? 0 : local.LabelledTokens;
        Span<double> sums = [labelled, labelled == 0 ? 0 : local.Loss * labelled, filler ? 0 : tokens];
        Communicator.AllReduceSum(sums);
        double total = sums[0];
        Accumulate(parameters, total > 0 ? labelled / total : 0);
        return (local with { Loss = total > 0 ? sums[1] / total : double.NaN, LabelledTokens = (long)total }, (long)sums[2]);
    }

    /// <summary>Float64 parameters accumulate and travel in float64, all others in float32.</summary>
    static ScalarType AccumulatorType(Tensor parameter) => parameter.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>Adds weight × each gradient to the accumulator and zeroes the gradient.</summary>
    internal void Accumulate(IReadOnlyList<Parameter> parameters, double weight)
    {
        _accumulated ??= new Tensor[parameters.Count];
        _hasGradient ??= new bool[parameters.Count];
        using var noGrad = no_grad();
        for (int i = 0; i < parameters.Count; i++)
        {
            if (parameters[i].grad is not { } gradient) continue;
            _accumulated[i] ??= zeros(gradient.shape, dtype: AccumulatorType(parameters[i]), device: gradient.device).DetachFromDisposeScope();
            using (var scope = NewDisposeScope()) _accumulated[i].AddScaled_(gradient.to(_accumulated[i].dtype), weight);
            gradient.zero_();
            _hasGradient[i] = true;
        }
    }

    /// <summary>
    /// Before the optimizer step: sums the accumulators over the ranks (one all-reduce per accumulator type, of one flat
    /// host buffer: a single one in practice) and writes the result into the parameters' gradients; a parameter that has
    /// a gradient on no rank keeps none, as in a single process.
    /// </summary>
    internal void ReduceGradients(IReadOnlyList<Parameter> parameters)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var type in parameters.Select(AccumulatorType).Distinct().ToList())
        {
            var members = Enumerable.Range(0, parameters.Count).Where(i => AccumulatorType(parameters[i]) == type).ToList();
            // The flat buffer: every member's accumulated gradient, then one flag per member (1 when this rank has a gradient for it).
            var parts = members.Select(i => (_accumulated?[i] ?? zeros(parameters[i].shape, dtype: type, device: parameters[i].device)).flatten().cpu()).ToList();
            parts.Add(tensor(members.Select(i => _hasGradient?[i] == true ? 1.0 : 0.0).ToArray(), dtype: type));
            var flat = cat(parts, 0).contiguous();
            AllReduceInPlace(flat);
            var anyRankHas = flat.narrow(0, flat.numel() - members.Count, members.Count).to(ScalarType.Float64).data<double>().ToArray();
            long offset = 0;
            for (int m = 0; m < members.Count; m++)
            {
                var p = parameters[members[m]];
                long n = p.numel();
                if (anyRankHas[m] > 0)
                {
                    if (p.grad is not { } gradient)
                        throw new InvalidOperationException($"A trainable parameter of shape [{string.Join(", ", p.shape)}] has a gradient on another rank but none on rank {Communicator.Rank}: the ranks ran different steps.");
                    gradient.copy_(flat.narrow(0, offset, n).view(p.shape));
                }
                offset += n;
            }
        }
        Discard();
        AllReduceSeconds += clock.Elapsed.TotalSeconds;
    }

    void AllReduceInPlace(Tensor hostFlat)
    {
        // Whether the getter views the tensor's memory or copies it, the setter leaves the sum in the tensor.
        var bytes = hostFlat.bytes;
        if (hostFlat.dtype == ScalarType.Float64) Communicator.AllReduceSum(MemoryMarshal.Cast<byte, double>(bytes));
        else Communicator.AllReduceSum(MemoryMarshal.Cast<byte, float>(bytes));
        hostFlat.bytes = bytes;
    }

    /// <summary>Forgets the accumulated gradients (a step that is not applied).</summary>
    internal void Discard()
    {
        if (_accumulated is not null) foreach (var a in _accumulated) a?.zero_();
        if (_hasGradient is not null) Array.Clear(_hasGradient);
    }

    /// <summary>
    /// Ends the job from a rank that failed: the error on stderr (naming the rank), then MPI_Abort, so that the other
    /// ranks do not wait for it in a collective. Does nothing with one rank (the exception goes on as usual).
    /// </summary>
    public void AbortOnFailure(Exception error, int exitCode = 1)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (Communicator.Size == 1) return;
        Communicator.Abort($"seco: rank {Communicator.Rank} of {Communicator.Size} failed: {error.GetType().Name}: {error.Message}", exitCode);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_accumulated is not null) foreach (var a in _accumulated) a?.Dispose();
        _accumulated = null;
        _fillers.Clear();
    }
}
