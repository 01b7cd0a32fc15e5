namespace Microsoft.ML.Seco.Checkpoints;

/// <summary>
/// Builds the errors this namespace reports. <see cref="InvalidDataException"/> is sealed, so the details a caller may
/// want to act on travel in <see cref="Exception.Data"/> under the keys below, next to a message that names the
/// file and tensor.
/// </summary>
public static class CheckpointErrors
{
    /// <summary><see cref="Exception.Data"/> key of the file at fault (a string).</summary>
    public const string FileKey = "Checkpoint.File";

    /// <summary><see cref="Exception.Data"/> key of the tensor at fault (a string), when one is.</summary>
    public const string TensorKey = "Checkpoint.Tensor";

    /// <summary><see cref="Exception.Data"/> key of every module name missing from the checkpoint (a <c>string[]</c>).</summary>
    public const string MissingKey = "Checkpoint.Missing";

    /// <summary><see cref="Exception.Data"/> key of every checkpoint name that matches nothing in the module (a <c>string[]</c>).</summary>
    public const string UnexpectedKey = "Checkpoint.Unexpected";

    internal static InvalidDataException Format(string file, string message, string? tensor = null, Exception? inner = null)
    {
        var e = new InvalidDataException(message, inner);
        e.Data[FileKey] = file;
        if (tensor is not null) e.Data[TensorKey] = tensor;
        return e;
    }
}
