namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>
/// A validation error is data (option, rule, value) that each front end words in its own names: the stage's option
/// fields, the configuration file's fields with their line and column, the command line's flags. Shared flags parse, are
/// checked and read the same in every command.
/// </summary>
[TestClass]
public sealed class OptionErrorTests
{
    static string _root = "";

    [ClassInitialize]
    public static void CreateFolder(TestContext _)
    {
        _root = Path.Combine(Path.GetTempPath(), "seco-option-errors-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
    }

    [ClassCleanup]
    public static void DeleteFolder()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>The configuration a train command line gives (the file given with --config, then the flags), without training.</summary>
    static TrainConfig Configure(params string[] args)
    {
        TrainConfig? captured = null;
        var context = new CliContext(TextWriter.Null, TextWriter.Null, CancellationToken.None);
        var root = new System.CommandLine.RootCommand { Commands.TrainCommand.Create(context, (c, _, _, _) => { captured = c; return 0; }) };
        var parse = root.Parse(["train", .. args]);
        Assert.AreEqual(0, parse.Errors.Count, string.Join("; ", parse.Errors.Select(e => e.Message)));
        Assert.AreEqual(0, parse.Invoke());
        return captured!;
    }

    /// <summary>A configuration file with one field per line from line 2, each at column 3.</summary>
    static string ConfigFile(string name, params string[] fields)
    {
        string path = Path.Combine(_root, name + ".json");
        File.WriteAllText(path, "{\n" + string.Join(",\n", fields.Select(f => "  " + f)) + "\n}\n");
        return path;
    }

    static (string Stage, string CommandLine) Errors(TrainConfig c) =>
        (Assert.ThrowsExactly<OptionException>(c.Options.Validate).Message, Assert.ThrowsExactly<UsageException>(c.Validate).Message);

    [TestMethod]
    public void ARuleNamesItsOptionsAsTheStageTheConfigurationFileAndTheFlagsDo()
    {
        foreach (var (flags, field, stage, flagged, filed) in new (string[], string, string, string, string)[]
        {
            // ChunkwiseOptions' rule.
            (["--chunk-size", "0"], "\"chunkSize\": 0",
                "ChunkSize must be at least 1; got 0.", "--chunk-size must be at least 1; got 0.", "field 'chunkSize' (line 3, column 3) must be at least 1; got 0."),
            // LoraConfig's rule on Rank, which the stage calls LoraRank.
            (["--lora-rank", "0"], "\"loraRank\": 0",
                "LoraRank must be at least 1; got 0.", "--lora-rank must be at least 1; got 0.", "field 'loraRank' (line 3, column 3) must be at least 1; got 0."),
            // TrainingOptions' rule on MinLearningRateRatio, the stage's FinalLearningRateRatio.
            (["--final-lr-ratio", "2"], "\"finalLearningRateRatio\": 2",
                "FinalLearningRateRatio must be in [0, 1]; got 2.", "--final-lr-ratio must be in [0, 1]; got 2.", "field 'finalLearningRateRatio' (line 3, column 3) must be in [0, 1]; got 2."),
            // The stage's own rule, naming a second option that is not set: named by its flag.
            (["--rope-scaling", "yarn"], "\"ropeScaling\": \"yarn\"",
                "RopeScaling yarn needs RopeFactor, the scaling factor (e.g. 4).", "--rope-scaling yarn needs --rope-factor, the scaling factor (e.g. 4).",
                "field 'ropeScaling' (line 3, column 3) yarn needs --rope-factor, the scaling factor (e.g. 4)."),
            // A value the rule shows in its sentence.
            (["--memory-budget", "lots"], "\"memoryBudget\": \"lots\"",
                "MemoryBudget 'lots' is not a size; use e.g. 8GiB, 512MiB or 16GB.", "--memory-budget 'lots' is not a size; use e.g. 8GiB, 512MiB or 16GB.",
                "field 'memoryBudget' (line 3, column 3) 'lots' is not a size; use e.g. 8GiB, 512MiB or 16GB."),
        })
        {
            var (fromFlags, commandLine) = Errors(Configure(["--model", "m", .. flags]));
            Assert.AreEqual(stage, fromFlags, string.Join(" ", flags));
            Assert.AreEqual(flagged, commandLine);
            string file = ConfigFile(flags[0].TrimStart('-'), "\"modelPath\": \"m\"", field);
            var (fromFile, described) = Errors(Configure("--config", file));
            Assert.AreEqual(stage, fromFile, file);
            Assert.AreEqual($"{file}: {filed}", described);
        }
    }

    [TestMethod]
    public void ARuleOnTwoOptionsNamesEachWhereItWasSet()
    {
        string file = ConfigFile("warmup", "\"modelPath\": \"m\"", "\"warmupRatio\": 0.1", "\"warmupSteps\": 2");
        var (stage, fromFile) = Errors(Configure("--config", file));
        Assert.AreEqual("WarmupRatio cannot be combined with WarmupSteps; set one of them; got 0.1.", stage);
        Assert.AreEqual($"{file}: field 'warmupRatio' (line 3, column 3) cannot be combined with {file}: field 'warmupSteps' (line 4, column 3); set one of them; got 0.1.", fromFile);
        // A flag overrides one of them: the error names the flag for it and the file's field for the other.
        var (_, mixed) = Errors(Configure("--config", file, "--warmup-steps", "3"));
        Assert.AreEqual($"{file}: field 'warmupRatio' (line 3, column 3) cannot be combined with --warmup-steps; set one of them; got 0.1.", mixed);
        var (_, flags) = Errors(Configure("--model", "m", "--warmup-ratio", "0.1", "--warmup-steps", "3"));
        Assert.AreEqual("--warmup-ratio cannot be combined with --warmup-steps; set one of them; got 0.1.", flags);
    }

    static (int Code, string Out, string Error) Seco(params string[] args)
    {
        var output = new StringWriter(System.Globalization.CultureInfo.InvariantCulture);
        var error = new StringWriter(System.Globalization.CultureInfo.InvariantCulture);
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [TestMethod]
    public void ASharedFlagParsesIsCheckedAndReadsTheSameInEveryCommand()
    {
        // Every check happens before the model is read, so a model directory that does not exist is enough.
        string model = Path.Combine(_root, "no-such-model");
        foreach (var args in new[]
        {
            new[] { "train", "--model", model, "--data", Path.Combine(_root, "d.jsonl"), "--output", Path.Combine(_root, "out") },
            ["eval", "--model", model, "--input-ids", "1,2"],
            ["generate", "--model", model, "--prompt", "x"],
            ["needle", "--model", model],
            ["gradcheck", "--model", model, "--seq-len", "8"],
            ["bench", "--predict"],
        })
        {
            var r = Seco([.. args, "--chunk-size", "0"]);
            Assert.AreEqual(2, r.Code, $"{args[0]}: {r.Error}");
            StringAssert.StartsWith(r.Error, "seco: error: --chunk-size must be at least 1; got 0.", args[0]);
            r = Seco([.. args, "--chunk-size", "lots"]);
            Assert.AreEqual(2, r.Code, $"{args[0]}: {r.Error}");
            StringAssert.StartsWith(r.Error, "seco: error: --chunk-size 'lots' is not an integer.", args[0]);
            StringAssert.Contains(Seco(args[0], "--help").Out, Flags.ChunkSize.Help, args[0]);
        }
        foreach (var (flag, commands) in new[]
        {
            (Flags.Model, new[] { "train", "eval", "generate", "needle", "gradcheck", "tokenize" }),
            (Flags.Device, ["train", "eval", "generate", "needle", "gradcheck", "bench"]),
            (Flags.DType, ["train", "eval", "generate", "needle", "gradcheck", "bench"]),
            (Flags.Seed, ["train", "generate", "needle", "gradcheck", "init-tiny"]),
            (Flags.AssistantOnlyLoss, ["train", "eval", "tokenize"]),
            (Flags.MaxSequenceLength, ["train", "eval"]),
            (Flags.Adapter, ["eval", "generate", "needle"]),
            (Flags.Layers, ["init-tiny", "bench"]),
        })
        {
            foreach (var command in commands)
            {
                string help = Seco(command, "--help").Out;
                StringAssert.Contains(help, flag.Name, command);
                StringAssert.Contains(help, flag.Help, $"{command} {flag.Name}: the shared sentence");
            }
        }
        // The same rule on --max-seq-len in train and eval.
        var eval = Seco("eval", "--model", model, "--input-ids", "1,2", "--max-seq-len", "1");
        var train = Seco("train", "--model", model, "--data", Path.Combine(_root, "d.jsonl"), "--output", Path.Combine(_root, "out"), "--max-seq-len", "1");
        Assert.AreEqual("seco: error: --max-seq-len must be between 2 and 1,048,576; got 1.", eval.Error.Trim());
        Assert.AreEqual(eval.Error, train.Error);
    }

    [TestMethod]
    public void TheDeviceAndTheDTypeAreNamedByTheirFlagInEveryCommand()
    {
        // The library names them as its records do (Device, DType); each command words them with its flags.
        string model = Path.Combine(_root, "tiny-for-devices");
        var init = Seco("init-tiny", "--out", model, "--layers", "1", "--hidden-size", "16", "--heads", "2", "--kv-heads", "1", "--intermediate-size", "32");
        Assert.AreEqual(0, init.Code, init.Error);
        string data = Path.Combine(_root, "devices.jsonl");
        File.WriteAllText(data, "{\"text\": \"a short document\"}\n");
        const string NotADevice = "'tpu' is not a device; use auto, cpu, cuda or cuda:N.";
        const string NotADType = "'int4' is not supported; use auto, float32, bfloat16, float16, float64.";
        foreach (var (args, takesAnyDType) in new (string[], bool)[]
        {
            (["train", "--model", model, "--data", data, "--output", Path.Combine(_root, "devices-out")], true),
            (["eval", "--model", model, "--input-ids", "1,2"], true),
            (["generate", "--model", model, "--prompt", "x"], true),
            (["needle", "--model", model, "--variant", "passkey", "--quick", "--output", Path.Combine(_root, "devices-needle")], true),
            (["gradcheck", "--model", model, "--seq-len", "8", "--chunk-size", "4"], false),
            (["bench", "--quick"], true),
        })
        {
            string name = string.Join(" ", args.Where(a => !a.Contains(_root, StringComparison.Ordinal)));
            var r = Seco([.. args, "--device", "tpu"]);
            Assert.AreEqual((2, $"seco: error: --device {NotADevice}"), (r.Code, r.Error.Trim()), name);
            if (!takesAnyDType) continue;
            r = Seco([.. args, "--device", "cpu", "--dtype", "int4"]);
            Assert.AreEqual((2, $"seco: error: --dtype {NotADType}"), (r.Code, r.Error.Trim()), name);
        }
        Assert.IsFalse(Directory.Exists(Path.Combine(_root, "devices-out")), "train checks the device before it writes");

        // Set in train's configuration file, they are named by the file's field.
        string file = ConfigFile("devices", "\"modelPath\": " + System.Text.Json.JsonSerializer.Serialize(model), "\"device\": \"tpu\"");
        var fromFile = Seco("train", "--config", file, "--data", data, "--output", Path.Combine(_root, "devices-out"));
        Assert.AreEqual((2, $"seco: error: {file}: field 'device' (line 3, column 3) {NotADevice}"), (fromFile.Code, fromFile.Error.Trim()));
    }

    [TestMethod]
    public void NoCommandPatchesAnExceptionsMessage()
    {
        // A library error a command words has data (an OptionException, or a type with fields) or is checked before the
        // call; cutting " (Parameter 'x')" or a first line out of a message would hide what the data lacks.
        string cli = Microsoft.ML.Seco.Tests.Packaging.RepositoryFiles.PathOf("src/Microsoft.ML.Seco.Cli");
        foreach (var file in Directory.EnumerateFiles(cli, "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)))
        {
            string text = File.ReadAllText(file);
            foreach (var patch in new[] { "(Parameter '", "Message.Replace(", "Message.Split(" })
                Assert.IsFalse(text.Contains(patch, StringComparison.Ordinal), $"{Path.GetRelativePath(cli, file)} patches a message ({patch})");
        }
    }

    [TestMethod]
    public void NoErrorIsRewrittenWithRegularExpressions()
    {
        // Errors are worded from their data (OptionException.Describe) by dictionary look-ups; no message is patched.
        foreach (var file in new[]
        {
            "src/Microsoft.ML.Seco/MLNet/ChunkwiseLoraOptions.cs", "src/Microsoft.ML.Seco.Cli/TrainConfig.cs", "src/Microsoft.ML.Seco.Cli/CliContext.cs",
            "src/Microsoft.ML.Seco.Cli/Program.cs", "src/Microsoft.ML.Seco.Cli/Flags.cs", "src/Microsoft.ML.Seco.Cli/Commands/TrainCommand.cs",
            "src/Microsoft.ML.Seco.Cli/Commands/GenerateCommand.cs",
        })
        {
            string text = File.ReadAllText(Microsoft.ML.Seco.Tests.Packaging.RepositoryFiles.PathOf(file));
            Assert.IsFalse(text.Contains("Regex", StringComparison.Ordinal), $"{file} uses a regular expression");
        }
    }
}
