namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>What <see cref="HuggingFaceCheckpoint.LoadInto"/> did.</summary>
/// <param name="Loaded">Module parameter and buffer names that received a tensor from the checkpoint.</param>
/// <param name="MissingOptional">Module names the checkpoint lacks that the <c>optional</c> predicate allowed to be missing; they keep their values.</param>
/// <param name="Ignored">Checkpoint names the module lacks that the <c>ignore</c> predicate allowed to be skipped.</param>
/// <param name="Files">The safetensors files read, full paths.</param>
public sealed record CheckpointLoadReport(
    IReadOnlyList<string> Loaded,
    IReadOnlyList<string> MissingOptional,
    IReadOnlyList<string> Ignored,
    IReadOnlyList<string> Files);
