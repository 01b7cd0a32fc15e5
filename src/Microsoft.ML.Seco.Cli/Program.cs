using System.CommandLine;
using Microsoft.ML.Seco.Cli.Commands;

namespace Microsoft.ML.Seco.Cli;

/// <summary>
/// The <c>seco</c> command-line tool: a thin shell over Microsoft.ML.Seco (init-tiny, train, eval, generate, gradcheck, bench, tokenize, needle).
/// Exit codes: 0 success, 2 bad arguments, configuration or input, 1 failure while running.
/// </summary>
public static class Program
{
    /// <summary>Process entry point: runs the command on the real console, with Ctrl+C wired to cancellation.</summary>
    public static int Main(string[] args)
    {
        using var cancellation = new CancellationTokenSource();
        int interrupts = 0;
        Console.CancelKeyPress += (_, e) =>
        {
            // First Ctrl+C: stop at the next step boundary and save; a second one ends the process at once, which loses
            // nothing already written: every file is replaced whole, and metrics.csv after every step.
            if (Interlocked.Increment(ref interrupts) == 1)
            {
                e.Cancel = true;
                Console.Error.WriteLine("seco: cancelling at the next step boundary (press Ctrl+C again to stop at once: the metrics of the steps done and the last checkpoint stay)...");
                cancellation.Cancel();
            }
        };
        return Run(args, Console.Out, Console.Error, cancellation.Token);
    }

    /// <summary>Runs one command line, writing results to <paramref name="stdout"/> and errors to <paramref name="stderr"/>.</summary>
    /// <returns>The exit code: 0 success, 2 bad arguments/config/input, 1 failure while running.</returns>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, stdout, stderr, CancellationToken.None);

    /// <summary>As <see cref="Run(string[], TextWriter, TextWriter)"/>; <paramref name="cancellationToken"/> stops training gracefully.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var context = new CliContext(stdout, stderr, cancellationToken);
        var root = BuildRoot(context);
        var parse = root.Parse(args);
        context.Verbose = parse.GetValue(context.VerboseOption);
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            foreach (var error in parse.Errors) stderr.WriteLine($"seco: error: {Describe(error)}");
            stderr.WriteLine($"Run 'seco {string.Join(' ', CommandPath(parse))} --help' for the options.".Replace("  ", " ", StringComparison.Ordinal));
            return ExitCodes.BadInput;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
        }
        catch (Exception e)
        {
            return context.Fail(e);
        }
    }

    // One line that names the flag. Flag values are parsed and checked by FlagValues, whose errors name the flag already;
    // System.CommandLine's own (an unknown command, a missing required flag) are kept as they are, on one line.
    static string Describe(System.CommandLine.Parsing.ParseError error)
    {
        string message = error.Message.ReplaceLineEndings(" ");
        var symbol = error.SymbolResult switch
        {
            System.CommandLine.Parsing.OptionResult o => o.Option.Name,
            System.CommandLine.Parsing.ArgumentResult { Parent: System.CommandLine.Parsing.OptionResult o } => o.Option.Name,
            _ => null,
        };
        return symbol is not null && !message.Contains(symbol, StringComparison.Ordinal) ? $"{symbol}: {message}" : message;
    }

    static IEnumerable<string> CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result is not null && result.Command is not RootCommand; result = result.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, result.Command.Name);
        return names;
    }

    internal static RootCommand BuildRoot(CliContext context)
    {
        var root = new RootCommand("seco: chunk-wise long-context fine-tuning (SeCO exact, SpaCO sparse) of Llama-family LLMs with Microsoft.ML.Seco.\n" +
                                   "Exit codes: 0 success, 2 bad arguments/config/input, 1 failure while running.");
        root.Options.Add(context.VerboseOption);
        root.Subcommands.Add(InitTinyCommand.Create(context));
        root.Subcommands.Add(TrainCommand.Create(context));
        root.Subcommands.Add(EvalCommand.Create(context));
        root.Subcommands.Add(GenerateCommand.Create(context));
        root.Subcommands.Add(GradcheckCommand.Create(context));
        root.Subcommands.Add(BenchCommand.Create(context));
        root.Subcommands.Add(TokenizeCommand.Create(context));
        root.Subcommands.Add(NeedleCommand.Create(context));
        return root;
    }
}
