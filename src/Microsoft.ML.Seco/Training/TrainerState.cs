using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Training;

// The trainer's resumable state: a binary file of its own format beside the loop (Trainer.cs), in one place.
public sealed partial class Trainer
{
    const string StateFileName = "trainer-state.bin";
    const string StateMagic = "SECO-TRAINER";
    const int StateVersion = 1;

    /// <summary>True when <paramref name="directory"/> holds a state written by <see cref="SaveState"/>.</summary>
    public static bool HasState(string directory) => File.Exists(Path.Combine(directory, StateFileName));

    /// <summary>
    /// Writes the step counter, epoch, position in the epoch, the trainable parameters' values, AdamW's moments per
    /// parameter (by name), torch's CPU generator and the step's own state (<see cref="IResumableTrainingStep"/>) to
    /// <c>trainer-state.bin</c> in <paramref name="directory"/>, through a temporary file renamed into place so that a
    /// crash never leaves a half-written state. Call it between calls to <see cref="Train"/> (e.g. after cancellation).
    /// </summary>
    /// <exception cref="IOException">The state could not be written (full disk, read-only folder); the message names the
    /// file, and the state saved there before is unchanged.</exception>
    /// <exception cref="InvalidOperationException">A trainable parameter or its AdamW moments hold NaN or infinite values;
    /// nothing is written.</exception>
    public void SaveState(string directory)
    {
        string path = Path.Combine(directory, StateFileName);
        EnsureFinite(path);
        AtomicFile.Write(path, "the trainer state", stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            writer.Write(StateMagic);
            writer.Write(StateVersion);
            writer.Write(CompletedSteps);
            writer.Write(CompletedEpochs);
            writer.Write(BatchesConsumedInEpoch);
            using (var rng = random.get_rng_state()) WriteTensor(writer, rng);
            byte[]? stepState = (Step as IResumableTrainingStep)?.SaveState();
            writer.Write(stepState is not null);
            if (stepState is not null)
            {
                writer.Write(stepState.Length);
                writer.Write(stepState);
            }
            var states = _optimizer.state_dict().State;
            writer.Write(_parameters.Count);
            for (int i = 0; i < _parameters.Count; i++)
            {
                var (name, parameter) = _parameters[i];
                var state = (AdamW.State)states[i];
                writer.Write(name);
                WriteTensor(writer, parameter);
                writer.Write(state.step);
                WriteTensor(writer, state.exp_avg);
                WriteTensor(writer, state.exp_avg_sq);
            }
            writer.Flush();
        });
    }

    /// <summary>Refuses to save non-finite weights or moments: the last good state on disk is worth more than a poisoned one.</summary>
    void EnsureFinite(string path)
    {
        var states = _optimizer.state_dict().State;
        FiniteWeights.Require(_parameters.SelectMany((p, i) => new[]
        {
            ($"Trainable parameter '{p.Name}'", (Tensor?)p.Parameter),
            ($"Trainable parameter '{p.Name}' (first moment)", ((AdamW.State)states[i]).exp_avg),
            ($"Trainable parameter '{p.Name}' (second moment)", ((AdamW.State)states[i]).exp_avg_sq),
        }), $"the trainer state is not saved, so '{path}' keeps the last good state (if any).");
    }

    /// <summary>
    /// Restores a state written by <see cref="SaveState"/> into this trainer (same model architecture, trainable
    /// parameters and step type); the next <see cref="Train"/> continues where the saved run stopped.
    /// </summary>
    /// <exception cref="FileNotFoundException">There is no saved state in <paramref name="directory"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a trainer state, or its parameters do not match this model.</exception>
    public void LoadState(string directory)
    {
        string path = Path.Combine(directory, StateFileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"No trainer state in '{directory}'.", path);
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream);
        try
        {
            if (reader.ReadString() != StateMagic) throw new InvalidDataException($"'{path}' is not a trainer state.");
            int version = reader.ReadInt32();
            if (version != StateVersion) throw new InvalidDataException($"'{path}' has trainer state version {version}; this library reads {StateVersion}.");
            int steps = reader.ReadInt32(), epochs = reader.ReadInt32(), consumed = reader.ReadInt32();
            using var rng = ReadTensor(reader);
            byte[]? stepState = reader.ReadBoolean() ? reader.ReadBytes(reader.ReadInt32()) : null;
            if (stepState is not null && Step is not IResumableTrainingStep)
                throw new InvalidDataException($"'{path}' holds the state of a resumable training step, but {Step.Name} has none.");

            int count = reader.ReadInt32();
            var byName = _parameters.Select((p, i) => (p.Name, p.Parameter, Index: i)).ToDictionary(p => p.Name);
            if (count != byName.Count) throw new InvalidDataException($"'{path}' holds {count} trainable parameters; the model has {byName.Count}.");
            var states = _optimizer.state_dict().State;
            using (no_grad())
            {
                for (int i = 0; i < count; i++)
                {
                    string name = reader.ReadString();
                    if (!byName.TryGetValue(name, out var target)) throw new InvalidDataException($"'{path}' holds parameter '{name}', which is not trainable in this model.");
                    var state = (AdamW.State)states[target.Index];
                    ReadInto(reader, target.Parameter, name);
                    state.step = reader.ReadInt64();
                    ReadInto(reader, state.exp_avg, name + " (first moment)");
                    ReadInto(reader, state.exp_avg_sq, name + " (second moment)");
                }
            }
            random.set_rng_state(rng);
            if (stepState is not null) ((IResumableTrainingStep)Step).LoadState(stepState);
            CompletedSteps = steps;
            CompletedEpochs = epochs;
            BatchesConsumedInEpoch = consumed;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"'{path}' is truncated.", e);
        }
    }

    static void WriteTensor(BinaryWriter writer, Tensor tensor)
    {
        using var host = tensor.detach().cpu().contiguous();
        writer.Write((int)host.dtype);
        writer.Write(host.dim());
        foreach (long size in host.shape) writer.Write(size);
        var bytes = host.bytes;
        writer.Write(bytes.Length);
        writer.Write(bytes);
    }

    static Tensor ReadTensor(BinaryReader reader)
    {
        var dtype = (ScalarType)reader.ReadInt32();
        var shape = new long[reader.ReadInt64()];
        for (int d = 0; d < shape.Length; d++) shape[d] = reader.ReadInt64();
        var bytes = reader.ReadBytes(reader.ReadInt32());
        var tensor = empty(shape, dtype: dtype, device: CPU);
        if (bytes.Length != tensor.bytes.Length)
        {
            tensor.Dispose();
            throw new InvalidDataException($"A saved tensor of shape [{string.Join(", ", shape)}] has {bytes.Length} bytes.");
        }
        tensor.bytes = bytes;
        return tensor;
    }

    static void ReadInto(BinaryReader reader, Tensor target, string name)
    {
        using var saved = ReadTensor(reader);
        if (saved.dtype != target.dtype || !saved.shape.SequenceEqual(target.shape))
            throw new InvalidDataException($"Saved '{name}' is {saved.dtype} [{string.Join(", ", saved.shape)}]; the model's is {target.dtype} [{string.Join(", ", target.shape)}].");
        target.copy_(saved);
    }
}
