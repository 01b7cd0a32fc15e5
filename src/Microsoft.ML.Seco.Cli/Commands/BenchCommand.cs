using System.CommandLine;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco bench: reserved for the benchmark suite, which a separate issue owns.</summary>
internal static class BenchCommand
{
    public static Command Create(CliContext context)
    {
        var command = new Command("bench", "Reserved: benchmarks are owned by a separate issue; this command only says so and exits with code 2.");
        command.SetAction(_ =>
        {
            context.Error.WriteLine("seco: error: 'seco bench' is reserved; benchmarks are owned by a separate issue and not part of this tool yet.");
            return ExitCodes.BadInput;
        });
        return command;
    }
}
