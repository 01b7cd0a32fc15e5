using System.CommandLine;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Distributed;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using Spectre.Console;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>
/// seco train: builds the ML.NET pipeline a C# user would write (data view → ml.Transforms.Text.ChunkwiseLora(options)
/// → Fit) and writes the artifacts. No training logic of its own.
/// </summary>
internal static class TrainCommand
{
    /// <param name="context">Where the command writes.</param>
    /// <param name="run">What runs with the configuration the command line gives (and --resume, --overwrite, --json);
    /// tests replace the training to inspect the configuration. Default: train.</param>
    public static Command Create(CliContext context, Func<TrainConfig, bool, bool, bool, int>? run = null)
    {
        run ??= (c, resuming, replacing, json) => Train(context, c, resuming, replacing, json);
        var config = new Option<string?>("--config") { Description = "JSON configuration file: the settings' fields in camelCase (chunkSize, learningRate, ...) plus data, validationData and output. Flags override it. With --resume and no --config: OUTPUT/seco-config.json when it exists." }.WithDefaultNote("none");
        var data = new Option<string?>("--data") { Description = "Training data: a .jsonl file (\"text\", \"prompt\" + \"response\", or \"messages\" (a conversation, rendered by the model's chat template; see --assistant-only-loss) per line), a .txt file (one document) or a folder of .txt files (one document each). Required." };
        var validation = new Option<string?>("--validation-data") { Description = "Held-out documents in the same format; validation loss after each epoch and at the end." }.WithDefaultNote("none");
        var output = new Option<string?>("--output") { Description = "Output folder for seco-config.json, metrics.csv, loss.png, adapter/ (or merged/), model.seco and checkpoints/. A folder that holds a run needs --resume or --overwrite. Required." };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in OUTPUT from its training state in OUTPUT/checkpoints (starting afresh when there is none)." }.WithDefaultNote("false");
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the run in OUTPUT (its checkpoint, metrics and artifacts) with a new one." }.WithDefaultNote("false");
        var json = new Option<bool>("--json") { Description = "Print one JSON object per line (progress events, then a summary) and nothing else on stdout." }.WithDefaultNote("false");

        // One flag per setting of the options, in the options' order; names, types and defaults come from there.
        var settings = TrainSetting.All.Select(s => (Setting: s, Flag: FlagFor(s))).ToList();

        var command = new Command("train", "Fine-tune a model with chunk-wise optimization (SeCO, or SpaCO with --sampled-chunks) and write the adapter, metrics and loss curve.");
        // The paths first (the model's among them), then the settings in the options' order, then how to run.
        var model = settings.Single(s => s.Setting.Name == nameof(ChunkwiseLoraTrainer.Options.ModelPath)).Flag.Option;
        foreach (var option in new Option[] { config, model, data, validation, output }) command.Options.Add(option);
        foreach (var (_, flag) in settings) if (flag.Option != model) command.Options.Add(flag.Option);
        foreach (var option in new Option[] { resume, overwrite, json }) command.Options.Add(option);
        command.SetAction(parse => context.Guard(() =>
        {
            bool resuming = parse.GetValue(resume), replacing = parse.GetValue(overwrite);
            if (resuming && replacing) throw new UsageException("--resume continues the run in --output and --overwrite replaces it: give one of them.");
            string? configPath = parse.GetValue(config);
            if (configPath is null && resuming && parse.GetValue(output) is string o && File.Exists(Path.Combine(o, TrainConfig.FileName)))
                configPath = Path.Combine(o, TrainConfig.FileName);
            var c = configPath is null ? new TrainConfig() : TrainConfig.Load(configPath);
            foreach (var (setting, flag) in settings)
                if (parse.GetResult(flag.Option) is { Implicit: false }) c.Set(setting, flag.Read(parse), setting.Flag);
            void SetPath(Option<string?> option, string field, Action<string> apply)
            {
                if (parse.GetValue(option) is string v) { apply(v); c.Origins[field] = option.Name; }
            }
            SetPath(data, "data", v => c.Data = v);
            SetPath(validation, "validationData", v => c.ValidationData = v);
            SetPath(output, "output", v => c.Output = v);
            return run(c, resuming, replacing, parse.GetValue(json));
        }));
        return command;
    }

    /// <summary>A setting's flag and how its value is read from the parse.</summary>
    sealed record SettingFlag(Option Option, Func<ParseResult, object?> Read);

    static SettingFlag FlagFor(TrainSetting s)
    {
        var type = s.ValueType;
        // No defaults here: a flag not given leaves the configuration file's value (or the options' default) alone.
        if (!s.Nullable && type == typeof(bool))
        {
            // --full-finetune alone means true; --full-finetune false overrides a configuration file.
            var flag = FlagValues.Option<bool>(s.Flag, s.Description);
            return new(flag, p => p.GetValue(flag));
        }
        if (!s.Nullable && type == typeof(int))
        {
            var flag = FlagValues.Option<int?>(s.Flag, s.Description);
            return new(flag, p => p.GetValue(flag));
        }
        if (!s.Nullable && type == typeof(double))
        {
            var flag = FlagValues.Option<double?>(s.Flag, s.Description);
            return new(flag, p => p.GetValue(flag));
        }
        // Nullable numbers take "none"; enums one of their names; lists are comma-separated.
        string? helpName = type.IsEnum ? null
            : (type == typeof(int) ? "int" : type == typeof(double) ? "number" : type == typeof(string[]) ? "a,b,..." : s.SharedFlag?.HelpName ?? "text")
              + (s.Nullable && type != typeof(string) ? "|none" : "");
        var text = FlagValues.Option<string?>(s.Flag, s.Description, helpName);
        if (type.IsEnum) text.OneOf(EnumNames.All(type));
        else text.ParsedAs(type, s.Nullable);
        return new(text, p => p.GetValue(text) is string v ? s.Parse(v, s.Flag) : null);
    }

    static TrainSetting Setting(string name) => TrainSetting.ByName(name)!;

    /// <summary>
    /// Alone, or as rank 0 under mpirun: checks, trains and writes the run. Another rank checks the same inputs and trains
    /// its share without writing anything (docs/SCALING.md). A rank that fails ends the whole job (MPI_Abort) rather than
    /// leaving the others waiting for it.
    /// </summary>
    static int Train(CliContext context, TrainConfig c, bool resume, bool overwrite, bool json)
    {
        if (Communicator.LaunchedSize == 1) return TrainAndWrite(context, c, resume, overwrite, json);
        var world = Communicator.World;
        try
        {
            return world.Rank == 0 ? TrainAndWrite(context, c, resume, overwrite, json) : TrainShare(context, c, resume);
        }
        catch (Exception e)
        {
            int code = context.Fail(e);
            world.Abort($"seco: rank {world.Rank} of {world.Size} failed (error above); ending the job.", code);
            return code;
        }
    }

    /// <summary>A rank other than 0: the same checks and the same pipeline, no output folder, artifacts or progress.</summary>
    static int TrainShare(CliContext context, TrainConfig c, bool resume)
    {
        string outputDir = CheckInputs(c);
        var (ml, source) = Prepare(context, c, outputDir, resume);
        using var fitted = ml.Transforms.Text.ChunkwiseLora(c.Options).Fit(source.View);
        return fitted.TrainingSummary!.Cancelled ? ExitCodes.Failure : ExitCodes.Success;
    }

    /// <summary>Checks the configuration, the model and the data before anything is written; returns the output folder's full path.</summary>
    static string CheckInputs(TrainConfig c)
    {
        var options = c.Options;
        string modelWhere = c.Where(Setting(nameof(options.ModelPath)));
        if (string.IsNullOrWhiteSpace(options.ModelPath)) throw new UsageException("--model is required (or modelPath in --config).");
        if (string.IsNullOrWhiteSpace(c.Data)) throw new UsageException("--data is required (or data in --config).");
        if (string.IsNullOrWhiteSpace(c.Output)) throw new UsageException("--output is required (or output in --config).");
        c.Validate();
        ModelLoading.RequireModelDirectory(options.ModelPath, modelWhere);
        RopeNote(c, TrainSetting.FlagOf);
        string dataWhere = c.Origins.GetValueOrDefault("data") ?? "--data";
        string validationWhere = c.Origins.GetValueOrDefault("validationData") ?? "--validation-data";
        var tokenizer = ModelTokenizer.Load(options.ModelPath);
        // One pass over the files finds a malformed line now rather than after the output folder exists; conversations
        // are rendered and encoded as training will, so an unknown role, a template that raises or a conversation with
        // nothing to train on is reported with its file, line and turn before anything is written.
        // The stage would refuse training data with nothing to train on and a text column the data lacks in its own terms
        // (rows, a schema); they are checked here in the user's: the file, the flag or field. Text documents are encoded
        // only until one has a token to train on, which is the first one unless it is empty.
        var encoderFor = DataSources.Encoders(options.ModelPath, tokenizer, options.AssistantOnlyLoss);
        var textColumn = Setting(nameof(options.TextColumnName));
        void Check(string path, string where, bool training)
        {
            int count = 0;
            bool trainable = !training;
            foreach (var document in DataSources.Documents(path, where))
            {
                if (document is ConversationDocument || !trainable) trainable |= encoderFor(document).Encode(document).Trained.Contains(true);
                count++;
            }
            if (count == 0) throw new UsageException($"{where} '{path}' holds no document.");
            if (!trainable)
                throw new UsageException($"{where} '{path}': none of its {count} document(s) has anything to train on (an empty or whitespace text or response has nothing).");
            var source = DataSources.Load(new MLContext(seed: 0), path, where);
            if (!source.PromptResponse && !source.Messages && source.View.Schema.GetColumnOrNull(options.TextColumnName) is null)
                throw new UsageException($"{c.Where(textColumn)} '{options.TextColumnName}' is not a column of {where} '{path}'; its documents are in the column " +
                    $"{string.Join(", ", source.View.Schema.Select(column => column.Name))}.");
        }
        Check(c.Data, dataWhere, training: true);
        if (c.ValidationData is not null) Check(c.ValidationData, validationWhere, training: false);
        try
        {
            var device = TensorSettings.ResolveDevice(options.Device, nameof(options.Device));
            TensorSettings.ResolveDType(options.DType, device, nameof(options.DType));
        }
        catch (OptionException e) { throw new UsageException(c.Describe(e)); }

        string outputDir = System.IO.Path.GetFullPath(c.Output);
        if (File.Exists(outputDir)) throw new UsageException($"--output '{c.Output}' is a file; expected a folder.");
        return outputDir;
    }

    static int TrainAndWrite(CliContext context, TrainConfig c, bool resume, bool overwrite, bool json)
    {
        // Everything is checked before the output folder is touched.
        string outputDir = CheckInputs(c);
        var notes = Notes(c).ToList();

        using var folder = OutputFolder.Open(outputDir);
        var earlier = OutputFolder.RunArtifacts(outputDir);
        if (earlier.Count > 0 && !resume && !overwrite)
            throw new UsageException($"--output '{outputDir}' already holds a run ({string.Join(", ", earlier)}): continue it with --resume or replace it with --overwrite.");
        if (overwrite) folder.RemoveRun();
        bool trained = false;
        try
        {
            return Run(context, c, outputDir, resume, json, notes, () => trained = true);
        }
        catch when (!trained)
        {
            // A run that fails before its first step leaves no folder it created, and no configuration that would make
            // the folder look like a run.
            if (folder.Created) folder.DisposeAndRemove();
            else if (!resume) File.Delete(System.IO.Path.Combine(outputDir, TrainConfig.FileName));
            throw;
        }
    }

    /// <summary>
    /// The rotary settings applied to the base model's config (the stage does the same at Fit): an error names the flags or
    /// fields; the line says what happens to the base model's scaling, or is null.
    /// </summary>
    static string? RopeNote(TrainConfig c, Func<string, string> optionName)
    {
        var config = ModelConfig.Load(c.Options.ModelPath);
        try { return c.Options.ApplyRope(config, optionName).Note; }
        catch (OptionException e) { throw new UsageException(c.Describe(e)); }
    }

    /// <summary>What the user should know about the settings before the run starts (stderr, so --json stays JSON).</summary>
    static IEnumerable<string> Notes(TrainConfig c)
    {
        var o = c.Options;
        // The flag when a flag set it, else the configuration's field name.
        string Name(string option)
        {
            if (TrainSetting.ByName(option) is not { } setting) return option;
            return c.Origins.GetValueOrDefault(option) is string origin && !origin.StartsWith("--", StringComparison.Ordinal) ? setting.ConfigName : setting.Flag;
        }
        if (RopeNote(c, Name) is string rope) yield return rope;
        int chunks = (o.MaxSequenceLength + o.ChunkSize - 1) / o.ChunkSize;
        if (o.SampledChunks is int t && t >= chunks)
            yield return $"{Name(nameof(o.SampledChunks))} {t} is at or above the chunk count ({chunks} chunks of {o.ChunkSize} tokens in the longest sequence, {o.MaxSequenceLength}): every step runs exact SeCO.";
        // A configuration file written by seco holds every field; only an epoch count someone chose is worth the note.
        var epochs = Setting(nameof(o.MaxEpoch));
        if (o.MaxSteps is int steps && c.Origins.ContainsKey(epochs.Name) && (c.Origins[epochs.Name].StartsWith("--", StringComparison.Ordinal) || !Equals(o.MaxEpoch, epochs.Default)))
            yield return $"{Name(nameof(o.MaxEpoch))} is ignored: {Name(nameof(o.MaxSteps))} {steps} sets the run's length (the data repeats as needed).";
    }

    /// <summary>The ML context, the data and the options every rank trains with (checkpoints read from OUTPUT/checkpoints).</summary>
    static (MLContext Ml, DataSource Source) Prepare(CliContext context, TrainConfig c, string outputDir, bool resume)
    {
        var options = c.Options;
        var ml = new MLContext(seed: options.Seed ?? 0);
        var source = DataSources.Load(ml, c.Data!, c.Origins.GetValueOrDefault("data") ?? "--data");
        if (source.PromptResponse) { options.PromptColumnName = "Prompt"; options.ResponseColumnName = "Response"; }
        if (source.Messages) options.MessagesColumnName = "Messages";
        if (c.ValidationData is not null) options.ValidationSet = DataSources.Load(ml, c.ValidationData, c.Origins.GetValueOrDefault("validationData") ?? "--validation-data").View;
        options.CheckpointDirectory = System.IO.Path.Combine(outputDir, "checkpoints");
        options.Resume = resume;
        options.CancellationToken = context.CancellationToken;
        return (ml, source);
    }

    static int Run(CliContext context, TrainConfig c, string outputDir, bool resume, bool json, List<string> notes, Action firstStep)
    {
        var options = c.Options;
        var (ml, source) = Prepare(context, c, outputDir, resume);
        string checkpoints = options.CheckpointDirectory!;
        bool resumed = resume && Trainer.HasState(checkpoints);
        OutputFolder.WriteFile(System.IO.Path.Combine(outputDir, TrainConfig.FileName), System.Text.Encoding.UTF8.GetBytes(c.ToJson()));

        foreach (var note in notes) context.Error.WriteLine($"seco: note: {note}");
        if (resume && !resumed) context.Error.WriteLine("seco: note: --resume: no training state in the checkpoints folder yet; starting afresh.");
        var console = Console(context.Out);
        bool interactive = !json && console.Profile.Capabilities.Interactive;
        var metrics = new Metrics(outputDir, keepEarlier: resumed);
        var reporter = new Reporter(context.Out, console, json, interactive, metrics, options.CheckpointEverySteps, firstStep);
        options.Progress = reporter;
        if (!json)
        {
            console.MarkupLine($"[bold]seco train[/] {Markup.Escape(options.ModelPath)} on {Markup.Escape(c.Data!)} → {Markup.Escape(outputDir)}" +
                $" ({(options.SampledChunks is int t ? $"SpaCO t={t} {EnumNames.Of(options.Sampler)}, compensation {EnumNames.Of(options.Compensation)}" : "SeCO")}, chunk {options.ChunkSize}, {(options.FullFineTuning ? "full fine-tuning" : $"LoRA r={options.LoraRank}")})");
        }

        // The pipeline a C# user writes: data view → ChunkwiseLora → Fit.
        var pipeline = ml.Transforms.Text.ChunkwiseLora(options);
        ChunkwiseLoraTransformer fitted;
        if (interactive)
        {
            ChunkwiseLoraTransformer? result = null;
            console.Progress()
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    reporter.Task = ctx.AddTask("loading model", maxValue: options.MaxSteps ?? 1);
                    reporter.Task.IsIndeterminate = options.MaxSteps is null;
                    result = pipeline.Fit(source.View);
                    reporter.Task.StopTask();
                });
            fitted = result!;
        }
        else fitted = pipeline.Fit(source.View);
        firstStep();

        using (fitted)
        {
            var summary = fitted.TrainingSummary!;
            var artifacts = new JsonObject();
            string adapterDir = System.IO.Path.Combine(outputDir, "adapter"), mergedDir = System.IO.Path.Combine(outputDir, "merged");
            string modelFile = System.IO.Path.Combine(outputDir, "model.seco");
            // A resumed run with nothing left to do changed nothing: its artifacts stay as they are.
            bool nothingToDo = resumed && summary.History.Count == 0 && !summary.Cancelled;
            if (nothingToDo)
                context.Error.WriteLine($"seco: note: --resume: the run in {outputDir} had already finished ({summary.Steps} optimizer steps); nothing left to do. Raise --max-steps or --epochs to train further.");
            if (!nothingToDo || !Directory.Exists(options.FullFineTuning ? mergedDir : adapterDir))
            {
                if (options.FullFineTuning) OutputFolder.WriteDirectory(mergedDir, fitted.SaveMerged);
                else OutputFolder.WriteDirectory(adapterDir, fitted.SaveAdapter);
            }
            artifacts[options.FullFineTuning ? "merged" : "adapter"] = options.FullFineTuning ? mergedDir : adapterDir;
            if (!nothingToDo || !File.Exists(modelFile)) SecoModel.Save(ml, fitted, source.View.Schema, modelFile);
            artifacts["model"] = modelFile;
            if (metrics.Rows.Count > 0) artifacts["metrics"] = metrics.CsvPath;
            if (metrics.WritePlot()) artifacts["loss_plot"] = metrics.PlotPath;
            artifacts["config"] = System.IO.Path.Combine(outputDir, TrainConfig.FileName);
            artifacts["checkpoints"] = checkpoints;

            var last = summary.History.Count > 0 ? summary.History[^1] : null;
            if (json)
            {
                Json.WriteLine(context.Out, new JsonObject
                {
                    ["event"] = "summary",
                    ["steps"] = summary.Steps,
                    ["steps_this_run"] = summary.History.Count,
                    ["epochs"] = summary.Epochs,
                    ["final_loss"] = Json.Number(summary.FinalLoss),
                    ["validation_loss"] = Json.Number(summary.ValidationLoss),
                    ["tokens_per_second"] = Json.Number(last?.TokensPerSecond),
                    ["peak_memory_bytes"] = last?.PeakMemoryBytes,
                    ["device_memory_bytes"] = last?.DeviceMemoryBytes,
                    ["elapsed_seconds"] = summary.Elapsed.TotalSeconds,
                    ["ranks"] = Communicator.LaunchedSize,
                    ["allreduce_seconds"] = summary.GradientAllReduce.TotalSeconds,
                    ["resumed"] = resumed,
                    ["nothing_to_do"] = nothingToDo,
                    ["cancelled"] = summary.Cancelled,
                    ["output"] = outputDir,
                    ["artifacts"] = artifacts,
                });
            }
            else
            {
                var table = new Table().Title("Training summary").AddColumn("").AddColumn("");
                table.HideHeaders();
                void Row(string name, string value) => table.AddRow(new Text(name), new Text(value));
                Row("steps", $"{summary.Steps} ({summary.History.Count} in this run{(resumed ? ", resumed" : "")})");
                Row("epochs completed", summary.Epochs.ToString(System.Globalization.CultureInfo.InvariantCulture));
                if (last is not null) Row("final loss", summary.FinalLoss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture));
                if (summary.ValidationLoss is double vl) Row("validation loss", $"{vl:F4} (perplexity {Math.Exp(vl):F2})");
                if (last is not null) Row("tokens/s", last.TokensPerSecond.ToString("F0", System.Globalization.CultureInfo.InvariantCulture));
                if (last is not null) Row("peak memory", $"{last.PeakMemoryBytes / (1024.0 * 1024):F0} MiB");
                if (last?.DeviceMemoryBytes is long device) Row("device memory in use", $"{device / (1024.0 * 1024):F0} MiB");
                Row("elapsed", summary.Elapsed.ToString(@"hh\:mm\:ss", System.Globalization.CultureInfo.InvariantCulture));
                if (Communicator.LaunchedSize > 1)
                    Row("ranks", $"{Communicator.LaunchedSize} (gradient all-reduce {summary.GradientAllReduce.TotalSeconds:F2} s, {100 * summary.GradientAllReduce / summary.Elapsed:F1} % of the run)");
                foreach (var (name, node) in artifacts) Row(name, node!.ToString());
                console.Write(table);
            }
            if (summary.Cancelled)
            {
                context.Error.WriteLine($"seco: training was cancelled after step {summary.Steps}; what was learnt is saved in {outputDir}. Continue with: seco train --output {outputDir} --resume");
                return ExitCodes.Failure;
            }
            return ExitCodes.Success;
        }
    }

    /// <summary>A Spectre console over <paramref name="writer"/>: decorated on a terminal, plain and wide when redirected.</summary>
    internal static IAnsiConsole Console(TextWriter writer)
    {
        bool terminal = ReferenceEquals(writer, System.Console.Out) && !System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!terminal) console.Profile.Width = 200;
        return console;
    }

    /// <summary>Receives the library's progress reports: JSON lines, the Spectre progress bar, or plain lines.</summary>
    sealed class Reporter(TextWriter output, IAnsiConsole console, bool json, bool interactive, Metrics metrics, int plotEvery, Action firstStep) : IProgress<TrainingProgress>
    {
        public ProgressTask? Task { get; set; }

        public void Report(TrainingProgress p)
        {
            firstStep();
            // metrics.csv holds every completed step at any instant; the plot follows at the checkpoints' pace.
            metrics.Add(p);
            if (p.Step % plotEvery == 0) metrics.WritePlot();
            if (json)
            {
                Json.WriteLine(output, new JsonObject
                {
                    ["event"] = "progress",
                    ["step"] = p.Step,
                    ["total_steps"] = p.TotalSteps,
                    ["epoch"] = p.Epoch,
                    ["loss"] = Json.Number(p.Loss),
                    ["learning_rate"] = Json.Number(p.LearningRate),
                    ["tokens_per_second"] = Json.Number(p.TokensPerSecond),
                    ["elapsed_seconds"] = p.Elapsed.TotalSeconds,
                    ["eta_seconds"] = p.Eta?.TotalSeconds,
                    ["peak_memory_bytes"] = p.PeakMemoryBytes,
                    ["device_memory_bytes"] = p.DeviceMemoryBytes,
                    ["validation_loss"] = Json.Number(p.ValidationLoss),
                });
                return;
            }
            string line = $"step {p.Step}{(p.TotalSteps is int total ? $"/{total}" : "")} epoch {p.Epoch} loss {p.Loss:F4} lr {p.LearningRate:E2} " +
                          $"{p.TokensPerSecond:F0} tok/s{(p.Eta is TimeSpan eta ? $" ETA {eta:hh\\:mm\\:ss}" : "")}" +
                          $"{(p.ValidationLoss is double v ? $" validation loss {v:F4}" : "")}" +
                          $"{(p.DeviceMemoryBytes is long device ? $" device {device / (1024.0 * 1024):F0} MiB" : "")}";
            if (interactive && Task is { } task)
            {
                if (p.TotalSteps is int t) { task.IsIndeterminate = false; task.MaxValue = t; task.Value = p.Step; }
                // Short enough for an 80-column terminal; the bar's own columns show progress and the remaining time.
                task.Description = Markup.Escape($"step {p.Step} loss {p.Loss:F4} {p.TokensPerSecond:F0} tok/s{(p.ValidationLoss is double vl ? $" val {vl:F4}" : "")}");
            }
            else console.WriteLine(line);
        }
    }
}
