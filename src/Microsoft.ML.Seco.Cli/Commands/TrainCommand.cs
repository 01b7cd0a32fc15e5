using System.CommandLine;
using System.Text.Json.Nodes;
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
    public static Command Create(CliContext context)
    {
        var config = new Option<string?>("--config") { Description = "JSON configuration file: the options' fields in camelCase (chunkSize, learningRate, ...) plus data, validationData and output. Flags override it. Default: none (with --resume, OUTPUT/seco-config.json when it exists)." };
        var model = new Option<string?>("--model") { Description = "Hugging Face model directory (config.json, safetensors, tokenizer). Required (here or as modelPath in the config)." };
        var data = new Option<string?>("--data") { Description = "Training data: a .jsonl file (\"text\", or \"prompt\" + \"response\" per line), a .txt file (one document) or a folder of .txt files (one document each). Required." };
        var validation = new Option<string?>("--validation-data") { Description = "Held-out documents in the same format; validation loss after each epoch and at the end. Default: none." };
        var output = new Option<string?>("--output") { Description = "Output folder for seco-config.json, metrics.csv, loss.png, adapter/ (or merged/), model.seco and checkpoints/. Required." };
        var chunkSize = new Option<int?>("--chunk-size") { Description = "Tokens per chunk. Default: 128." };
        var sampledChunks = new Option<int?>("--sampled-chunks") { Description = "Chunks backpropagated per sequence (SpaCO's t); omit for exact SeCO. Default: none (SeCO)." };
        var sampler = new Option<string?>("--sampler") { Description = "SpaCO sampler: fixed (the paper's: exactly t chunks), bernoulli (unbiased) or stratified (the authors' for prompt/response data: half of t to chunks with response tokens; needs --compensation none). Default: bernoulli." };
        sampler.AcceptOnlyFromAmong("fixed", "bernoulli", "stratified");
        var compensation = new Option<string?>("--compensation") { Description = "Which seeds SpaCO's factor k/t multiplies: both (loss and injected cache gradient; unbiased with bernoulli), loss (the authors' released code), cache (the paper's Algorithm 2) or none. Default: both." };
        compensation.AcceptOnlyFromAmong("both", "loss", "cache", "none");
        var maxCompensation = new Option<double?>("--max-compensation") { Description = "Cap on SpaCO's compensation factor in every mode (the paper recommends 2). Default: none." };
        var loraRank = new Option<int?>("--lora-rank") { Description = "LoRA rank r. Default: 8." };
        var loraAlpha = new Option<double?>("--lora-alpha") { Description = "LoRA alpha (update scaled by alpha / r). Default: 16." };
        var loraTargets = new Option<string?>("--lora-targets") { Description = "Comma-separated projections that get adapters (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj). Default: q_proj,k_proj,v_proj,o_proj." };
        var gradAccum = new Option<int?>("--grad-accum") { Description = "Micro-batches per optimizer step. Default: 1." };
        var warmupSteps = new Option<int?>("--warmup-steps") { Description = "Optimizer steps of linear warm-up (not with --warmup-ratio). Default: 0." };
        var warmupRatio = new Option<double?>("--warmup-ratio") { Description = "Warm-up as a fraction of the run's optimizer steps, rounded up (not with --warmup-steps). Default: none." };
        var weightDecay = new Option<double?>("--weight-decay") { Description = "AdamW weight decay (matrices only). Default: 0." };
        var beta1 = new Option<double?>("--beta1") { Description = "AdamW beta1. Default: 0.9." };
        var beta2 = new Option<double?>("--beta2") { Description = "AdamW beta2. Default: 0.999." };
        var epsilon = new Option<double?>("--epsilon") { Description = "AdamW epsilon. Default: 1e-8." };
        var maxGradNorm = new Option<string?>("--max-grad-norm") { Description = "Clip the gradient's global L2 norm to this (positive), or none for no clipping. Default: 1." };
        var fullFinetune = new Option<bool>("--full-finetune") { Description = "Train every parameter instead of LoRA adapters (writes merged/ instead of adapter/). Default: false." };
        var maxSeqLen = new Option<int?>("--max-seq-len") { Description = "Longest sequence trained on; longer documents are split into windows (see --overflow). Default: 16384." };
        var overflow = new Option<string?>("--overflow") { Description = "Documents longer than --max-seq-len: split (consecutive windows) or truncate (the first window only). Default: split." };
        overflow.AcceptOnlyFromAmong("split", "truncate");
        var lr = new Option<double?>("--lr") { Description = "Peak AdamW learning rate. Default: 1e-4." };
        var epochs = new Option<int?>("--epochs") { Description = "Passes over the data. Default: 1." };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Stop after this many optimizer steps (counted across resumes). Default: none (run the epochs)." };
        var seed = new Option<int?>("--seed") { Description = "Seed for LoRA initialisation, chunk sampling and dropout. Default: 0." };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda or cuda:N. Default: auto." };
        var dtype = new Option<string?>("--dtype") { Description = "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16 or float64. Default: auto." };
        var checkpointEvery = new Option<int?>("--checkpoint-every") { Description = "Optimizer steps between saved training states in OUTPUT/checkpoints. Default: 100 (and always at the end)." };
        var resume = new Option<bool>("--resume") { Description = "Continue from the training state in OUTPUT/checkpoints when there is one. Default: false (start afresh)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per line (progress events, then a summary) and nothing else. Default: false." };

        var command = new Command("train", "Fine-tune a model with chunk-wise optimization (SeCO, or SpaCO with --sampled-chunks) and write the adapter, metrics and loss curve.")
        {
            config, model, data, validation, output, chunkSize, sampledChunks, sampler, compensation, maxCompensation, loraRank, loraAlpha,
            loraTargets, fullFinetune, maxSeqLen, overflow, lr, epochs, maxSteps, gradAccum, warmupSteps, warmupRatio, weightDecay, beta1, beta2, epsilon,
            maxGradNorm, seed, device, dtype, checkpointEvery, resume, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            bool resuming = parse.GetValue(resume);
            string? configPath = parse.GetValue(config);
            if (configPath is null && resuming && parse.GetValue(output) is string o && File.Exists(Path.Combine(o, TrainConfig.FileName)))
                configPath = Path.Combine(o, TrainConfig.FileName);
            var c = configPath is null ? new TrainConfig() : TrainConfig.Load(configPath);
            void Set<T>(Option<T?> option, Action<T> apply) where T : struct { if (parse.GetValue(option) is T v) apply(v); }
            void SetRef(Option<string?> option, Action<string> apply) { if (parse.GetValue(option) is string v) apply(v); }
            SetRef(model, v => c.ModelPath = v);
            SetRef(data, v => c.Data = v);
            SetRef(validation, v => c.ValidationData = v);
            SetRef(output, v => c.Output = v);
            Set(chunkSize, v => c.ChunkSize = v);
            Set(sampledChunks, v => c.SampledChunks = v);
            SetRef(sampler, v => c.Sampler = v);
            // The flag replaces whatever the file said under either name.
            SetRef(compensation, v => { c.Compensation = v; c.Compensate = null; });
            Set(maxCompensation, v => c.MaxCompensation = v);
            Set(loraRank, v => c.LoraRank = v);
            Set(loraAlpha, v => c.LoraAlpha = v);
            SetRef(loraTargets, v => c.LoraTargetModules = v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Set(gradAccum, v => c.GradientAccumulationSteps = v);
            Set(warmupSteps, v => c.WarmupSteps = v);
            Set(warmupRatio, v => c.WarmupRatio = v);
            Set(weightDecay, v => c.WeightDecay = v);
            Set(beta1, v => c.Beta1 = v);
            Set(beta2, v => c.Beta2 = v);
            Set(epsilon, v => c.Epsilon = v);
            SetRef(maxGradNorm, v => c.MaxGradNorm = ParseMaxGradNorm(v));
            if (parse.GetValue(fullFinetune)) c.FullFineTuning = true;
            Set(maxSeqLen, v => c.MaxSequenceLength = v);
            SetRef(overflow, v => c.Overflow = v);
            Set(lr, v => c.LearningRate = v);
            Set(epochs, v => c.MaxEpoch = v);
            Set(maxSteps, v => c.MaxSteps = v);
            Set(seed, v => c.Seed = v);
            SetRef(device, v => c.Device = v);
            SetRef(dtype, v => c.DType = v);
            Set(checkpointEvery, v => c.CheckpointEverySteps = v);
            return Train(context, c, resuming, parse.GetValue(json));
        }));
        return command;
    }

    static int Train(CliContext context, TrainConfig c, bool resume, bool json)
    {
        if (string.IsNullOrWhiteSpace(c.ModelPath)) throw new UsageException("--model is required (or modelPath in --config).");
        if (string.IsNullOrWhiteSpace(c.Data)) throw new UsageException("--data is required (or data in --config).");
        if (string.IsNullOrWhiteSpace(c.Output)) throw new UsageException("--output is required (or output in --config).");
        if (!Directory.Exists(c.ModelPath)) throw new UsageException($"--model '{c.ModelPath}' is not a directory.");

        var options = c.ToOptions();
        c.Sampler = TrainConfig.SamplerName(options.Sampler);
        c.Compensation = TrainConfig.CompensationName(options.Compensation);
        c.Compensate = null;
        c.Overflow = options.Overflow.ToString().ToLowerInvariant();
        c.Schedule = options.Schedule.ToString().ToLowerInvariant();
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException($"invalid option: {e.Message.Replace($" (Parameter '{e.ParamName}')", "", StringComparison.Ordinal).Split('\n')[0]}"); }

        var ml = new MLContext(seed: c.Seed);
        var source = DataSources.Load(ml, c.Data, "--data");
        if (source.PromptResponse) { options.PromptColumnName = "Prompt"; options.ResponseColumnName = "Response"; }
        if (c.ValidationData is not null) options.ValidationSet = DataSources.Load(ml, c.ValidationData, "--validation-data").View;

        string outputDir = Path.GetFullPath(c.Output);
        Directory.CreateDirectory(outputDir);
        string checkpoints = Path.Combine(outputDir, "checkpoints");
        options.CheckpointDirectory = checkpoints;
        options.Resume = resume;
        options.CancellationToken = context.CancellationToken;
        bool resumed = resume && Trainer.HasState(checkpoints);
        File.WriteAllText(Path.Combine(outputDir, TrainConfig.FileName), c.ToJson());

        var console = Console(context.Out);
        bool interactive = !json && console.Profile.Capabilities.Interactive;
        var reporter = new Reporter(context.Out, console, json, interactive);
        options.Progress = reporter;
        if (!json)
        {
            console.MarkupLine($"[bold]seco train[/] {Markup.Escape(c.ModelPath)} on {Markup.Escape(c.Data)} → {Markup.Escape(outputDir)}" +
                $" ({(options.SampledChunks is int t ? $"SpaCO t={t} {c.Sampler}, compensation {c.Compensation}" : "SeCO")}, chunk {options.ChunkSize}, {(options.FullFineTuning ? "full fine-tuning" : $"LoRA r={options.LoraRank}")})");
            if (resume && !resumed) console.MarkupLine("[yellow]--resume: no training state in the checkpoints folder yet; starting afresh.[/]");
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

        using (fitted)
        {
            var summary = fitted.TrainingSummary!;
            var artifacts = new JsonObject();
            string adapterDir = Path.Combine(outputDir, "adapter"), mergedDir = Path.Combine(outputDir, "merged");
            if (options.FullFineTuning) { fitted.SaveMerged(mergedDir); artifacts["merged"] = mergedDir; }
            else { fitted.SaveAdapter(adapterDir); artifacts["adapter"] = adapterDir; }
            string modelFile = Path.Combine(outputDir, "model.seco");
            SecoModel.Save(ml, fitted, source.View.Schema, modelFile);
            artifacts["model"] = modelFile;

            // metrics.csv keeps an earlier run's rows (before this run's first step) when resuming.
            string csv = Path.Combine(outputDir, Metrics.CsvName);
            var rows = resumed ? Metrics.ReadExisting(csv) : new List<MetricsRow>();
            int firstStep = summary.History.Count > 0 ? summary.History[0].Step : int.MaxValue;
            rows.RemoveAll(r => r.Step >= firstStep);
            double offset = rows.Count > 0 ? rows[^1].Seconds : 0;
            rows.AddRange(summary.History.Select(p => MetricsRow.From(p, offset)));
            Metrics.WriteCsv(csv, rows);
            artifacts["metrics"] = csv;
            string png = Path.Combine(outputDir, Metrics.PlotName);
            Metrics.WritePlot(png, rows);
            artifacts["loss_plot"] = png;
            artifacts["config"] = Path.Combine(outputDir, TrainConfig.FileName);
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
                    ["elapsed_seconds"] = summary.Elapsed.TotalSeconds,
                    ["resumed"] = resumed,
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
                Row("final loss", summary.FinalLoss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture));
                if (summary.ValidationLoss is double vl) Row("validation loss", $"{vl:F4} (perplexity {Math.Exp(vl):F2})");
                if (last is not null) Row("tokens/s", last.TokensPerSecond.ToString("F0", System.Globalization.CultureInfo.InvariantCulture));
                if (last is not null) Row("peak memory", $"{last.PeakMemoryBytes / (1024.0 * 1024):F0} MiB");
                Row("elapsed", summary.Elapsed.ToString(@"hh\:mm\:ss", System.Globalization.CultureInfo.InvariantCulture));
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

    static double? ParseMaxGradNorm(string value) =>
        value.Trim().Equals("none", StringComparison.OrdinalIgnoreCase) ? null
        : double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double norm) ? norm
        : throw new UsageException($"--max-grad-norm '{value}' is neither a number nor none.");

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
    sealed class Reporter(TextWriter output, IAnsiConsole console, bool json, bool interactive) : IProgress<TrainingProgress>
    {
        public ProgressTask? Task { get; set; }

        public void Report(TrainingProgress p)
        {
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
                    ["validation_loss"] = Json.Number(p.ValidationLoss),
                });
                return;
            }
            string line = $"step {p.Step}{(p.TotalSteps is int total ? $"/{total}" : "")} epoch {p.Epoch} loss {p.Loss:F4} lr {p.LearningRate:E2} " +
                          $"{p.TokensPerSecond:F0} tok/s{(p.Eta is TimeSpan eta ? $" ETA {eta:hh\\:mm\\:ss}" : "")}" +
                          $"{(p.ValidationLoss is double v ? $" validation loss {v:F4}" : "")}";
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
