using System.CommandLine;
using System.Text.Json;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco.Cli;

/// <summary>Process exit codes.</summary>
internal static class ExitCodes
{
    public const int Success = 0;
    public const int Failure = 1;
    public const int BadInput = 2;
}

/// <summary>A problem with the user's arguments, configuration or input files (exit code 2); the message names it.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>Where a command writes, and how errors become exit codes.</summary>
internal sealed class CliContext(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
{
    public Option<bool> VerboseOption { get; } = new("--verbose")
    {
        Description = "Print stack traces with errors.",
        Recursive = true,
    };

    public TextWriter Out { get; } = stdout;
    public TextWriter Error { get; } = stderr;
    public CancellationToken CancellationToken { get; } = cancellationToken;
    public bool Verbose { get; set; }

    /// <summary>
    /// Runs a command body and maps exceptions to one error line and an exit code. <paramref name="flagOf"/> is the
    /// command's vocabulary: the flag of each option a library record names in an <see cref="OptionException"/>
    /// (default: <see cref="TrainSetting.FlagOf"/>, the flags of the stage's options).
    /// </summary>
    public int Guard(Func<int> body, Func<string, string>? flagOf = null)
    {
        try { return body(); }
        catch (Exception e) { return Fail(e, flagOf); }
    }

    /// <summary>Reports an exception as one error line (and the stack trace with --verbose); returns the exit code.</summary>
    public int Fail(Exception e, Func<string, string>? flagOf = null)
    {
        int code = IsBadInput(e) ? ExitCodes.BadInput : ExitCodes.Failure;
        Error.WriteLine($"seco: error: {Message(e, flagOf ?? TrainSetting.FlagOf)}");
        if (Verbose) Error.WriteLine(e.ToString());
        return code;
    }

    static bool IsBadInput(Exception e) => e switch
    {
        UsageException => true,
        TrainingDivergedException => false,
        OperationCanceledException => false,
        FileNotFoundException or DirectoryNotFoundException or InvalidDataException or NotSupportedException => true,
        JsonException => true,
        Chat.ChatTemplateException => true,
        ArgumentException => true,
        // ML.NET wraps errors thrown while a cursor reads the data (e.g. a malformed JSON line) in its own exceptions.
        _ when e.InnerException is { } inner => IsBadInput(inner),
        _ => false,
    };

    static string Message(Exception e, Func<string, string> flagOf)
    {
        // The library names its options; the command line knows them by their flags.
        if (e is InsufficientDeviceMemoryException memory) return memory.Describe(TrainSetting.FlagOf);
        if (e is OptionException option) return FlagValues.Describe(option, flagOf);
        // Errors whose data a command words are OptionExceptions (above) or caught where the command knows its terms; the
        // inputs the library would refuse with a plain ArgumentException the commands check before calling it.
        if (e is not UsageException && e.InnerException is { } inner && (e.GetType().Namespace?.StartsWith("Microsoft.ML", StringComparison.Ordinal) == true && e is InvalidOperationException))
            return Message(inner, flagOf);
        // One line: libtorch's errors go on with its C++ backtrace, which --verbose prints with the rest.
        int newline = e.Message.IndexOfAny(['\r', '\n']);
        return newline >= 0 ? e.Message[..newline] : e.Message;
    }
}
