namespace Microsoft.ML.Seco.Cli.Tests;

/// <summary>seco train end to end: artifacts, resume, rotary scaling, the configuration file, errors that name the flag or field, cancellation. Through the real entry point (Program.Run, in process) on the tiny models of <see cref="CliTestBase"/>.</summary>
[TestClass]
public sealed class TrainCommandTests : CliTestBase
{
    [TestMethod]
    public void TrainWritesEveryArtifactAndResumeContinuesFromTheCheckpoint()
    {
        string output = Output("train");
        var r = Seco(TrainArgs(output, "--max-steps", "3"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var lines = r.JsonLines();
        Assert.AreEqual(4, lines.Count, r.Out);
        for (int i = 0; i < 3; i++)
        {
            Assert.AreEqual("progress", (string?)lines[i]["event"]);
            Assert.AreEqual(i + 1, (int)lines[i]["step"]!);
            Assert.IsTrue(double.IsFinite((double)lines[i]["loss"]!));
            Assert.IsTrue((double)lines[i]["tokens_per_second"]! > 0);
        }
        var summary = lines[^1];
        Assert.AreEqual("summary", (string?)summary["event"]);
        Assert.AreEqual(3, (int)summary["steps"]!);
        Assert.IsFalse((bool)summary["cancelled"]!);
        // Device memory is a CUDA figure: present in the schema, null on the CPU.
        Assert.IsTrue(summary.ContainsKey("device_memory_bytes") && summary["device_memory_bytes"] is null, r.Out);
        foreach (var file in new[] { "seco-config.json", "metrics.csv", "loss.png", "model.seco", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/trainer-state.bin" })
            Assert.IsTrue(File.Exists(Path.Combine(output, file)), $"{file} is missing");
        var png = File.ReadAllBytes(Path.Combine(output, "loss.png"));
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png.Take(4).ToArray());
        var csv = File.ReadAllLines(Path.Combine(output, "metrics.csv"));
        Assert.AreEqual("step,loss,learning_rate,tokens_per_second,seconds,peak_memory_bytes,validation_loss", csv[0]);
        Assert.AreEqual(4, csv.Length);

        // --resume reads OUTPUT/seco-config.json and the checkpoint: steps 4 and 5 only.
        r = Seco("train", "--output", output, "--resume", "--max-steps", "5", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        lines = r.JsonLines();
        CollectionAssert.AreEqual(new[] { 4, 5 }, lines.Where(l => (string?)l["event"] == "progress").Select(l => (int)l["step"]!).ToArray());
        Assert.AreEqual(5, (int)lines[^1]["steps"]!);
        Assert.IsTrue((bool)lines[^1]["resumed"]!);
        csv = File.ReadAllLines(Path.Combine(output, "metrics.csv"));
        CollectionAssert.AreEqual(new[] { "1", "2", "3", "4", "5" }, csv.Skip(1).Select(l => l.Split(',')[0]).ToArray());

        // The trained adapter and the saved pipeline load back.
        r = Seco("eval", "--model", _model, "--adapter", Path.Combine(output, "adapter"), "--data", _data, "--chunk-size", "8", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.IsTrue((long)r.JsonLines()[0]["tokens"]! > 0);
        using (var loaded = (ChunkwiseLoraTransformer)SecoModel.Load(new MLContext(), Path.Combine(output, "model.seco")))
            Assert.IsTrue(double.IsFinite(loaded.Perplexity("the quick brown fox")));
        r = Seco("generate", "--model", _model, "--adapter", Path.Combine(output, "adapter"), "--prompt", "The quick brown", "--max-new-tokens", "5", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var generated = r.JsonLines()[0];
        Assert.AreEqual(5, (int)generated["generated_tokens"]!);
        Assert.IsFalse(string.IsNullOrEmpty((string?)generated["completion"]));
    }

    [TestMethod]
    public void TrainAppliesRopeScalingAndTheAdapterCarriesIt()
    {
        string output = Output("rope-yarn");
        var r = Seco(TrainArgs(output, "--max-steps", "1", "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-original-length", "16"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "seco: note: --rope-scaling yarn: rope_scaling yarn");
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!.AsObject();
        Assert.AreEqual(("yarn", 4.0, 16), ((string?)effective["ropeScaling"], (double)effective["ropeFactor"]!, (int)effective["ropeOriginalMaxPositionEmbeddings"]!));
        Assert.IsNull(effective["ropeTheta"]);
        string adapter = Path.Combine(output, "adapter"), record = Path.Combine(adapter, "seco_rope.json");
        var scaling = JsonNode.Parse(File.ReadAllText(record))!["rope_scaling"]!;
        Assert.AreEqual(("yarn", 4.0, 16.0), ((string?)scaling["rope_type"], (double)scaling["factor"]!, (double)scaling["original_max_position_embeddings"]!));

        // eval builds the model with the adapter's scaling: without the record the same weights score differently.
        double Nll() => (double)Seco("eval", "--model", _model, "--adapter", adapter, "--data", _data, "--chunk-size", "8", "--json").JsonLines()[0]["nll"]!;
        double withYarn = Nll();
        using (var loaded = (ChunkwiseLoraTransformer)SecoModel.Load(new MLContext(), Path.Combine(output, "model.seco")))
            Assert.IsTrue(double.IsFinite(loaded.Perplexity("the quick brown fox")), "model.seco loads with its scaling");
        File.Delete(record);
        Assert.AreNotEqual(withYarn, Nll(), "the record decides the rotary scaling of the loaded model");
    }

    [TestMethod]
    public void BadRopeFlagsAndFieldsAreNamed()
    {
        void Refused(string[] flags, params string[] says)
        {
            // TrainArgs' --max-seq-len 24 unless the flags give another.
            var r = flags.Contains("--max-seq-len")
                ? Seco(["train", "--model", _model, "--data", _data, "--output", Output("rope-bad"), "--chunk-size", "8", "--max-steps", "1", .. flags])
                : Seco(TrainArgs(Output("rope-bad"), ["--max-steps", "1", .. flags]));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            foreach (var text in says) StringAssert.Contains(r.Error, text, r.ToString());
            Assert.IsFalse(Directory.Exists(Output("rope-bad")), "nothing is written");
        }
        Refused(["--rope-factor", "4"], "--rope-factor is set but --rope-scaling is model");
        Refused(["--rope-scaling", "yarn"], "--rope-scaling yarn needs --rope-factor");
        Refused(["--rope-scaling", "yarn", "--rope-factor", "0.5"], "--rope-factor must be at least 1; got 0.5.");
        Refused(["--rope-scaling", "linear", "--rope-factor", "2", "--rope-original-length", "64"], "--rope-original-length applies to --rope-scaling yarn and llama3 only");
        Refused(["--rope-scaling", "longrope"], "--rope-scaling", "'longrope' not recognized", "'model', 'none', 'linear', 'dynamic', 'yarn', 'llama3'");
        Refused(["--rope-theta", "-1"], "--rope-theta must be positive");
        Refused(["--rope-scaling", "dynamic", "--rope-factor", "2", "--max-seq-len", "40000"], "--max-seq-len (40000) must be at most the base model's max_position_embeddings (32768) with --rope-scaling dynamic");
        string config = Output("rope-bad.json");
        File.WriteAllText(config, """{"ropeScaling": "yarn", "ropeFactor": 0}""");
        Refused(["--config", config], "field 'ropeFactor'", "must be at least 1");
        File.Delete(config);
    }

    [TestMethod]
    public void ConfigFileIsReadAndFlagsOverrideIt()
    {
        string output = Output("config-run");
        string config = Path.Combine(_root, "run.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new
        {
            modelPath = _model, data = _data, output, chunkSize = 4, learningRate = 0.005, maxSequenceLength = 16, maxSteps = 1,
            sampledChunks = 2, sampler = "fixed", maxCompensation = 2.0, loraRank = 2,
        }));
        var r = Seco("train", "--config", config, "--chunk-size", "8", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!;
        Assert.AreEqual(8, (int)effective["chunkSize"]!, "the flag wins over the file");
        Assert.AreEqual(0.005, (double)effective["learningRate"]!);
        Assert.AreEqual(2, (int)effective["loraRank"]!);
        Assert.AreEqual("fixed", (string?)effective["sampler"]);
        Assert.AreEqual(1, (int)effective["maxSteps"]!);
        Assert.AreEqual(16, (int)effective["maxSequenceLength"]!);
        Assert.AreEqual(16.0, (double)effective["loraAlpha"]!, "fields not given keep the library's defaults");
    }

    [TestMethod]
    public void PaperSettingsAreFlagsAndOldConfigsStillLoad()
    {
        // A configuration written before compensation had modes: "compensate": false means none.
        string output = Output("paper-run");
        string config = Path.Combine(_root, "old.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new { modelPath = _model, data = _data, output, sampledChunks = 2, compensate = false, maxSteps = 1 }));
        var r = Seco("train", "--config", config, "--chunk-size", "8", "--max-seq-len", "24", "--beta1", "0.85", "--beta2", "0.95", "--epsilon", "1e-6",
            "--weight-decay", "0.05", "--warmup-ratio", "0.01", "--max-grad-norm", "none", "--lora-targets", "q_proj,v_proj", "--grad-accum", "2", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        var effective = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "seco-config.json")))!.AsObject();
        Assert.AreEqual("none", (string?)effective["compensation"]);
        Assert.IsFalse(effective.ContainsKey("compensate"), "the earlier name is read, not written");
        Assert.AreEqual(0.85, (double)effective["beta1"]!);
        Assert.AreEqual(0.95, (double)effective["beta2"]!);
        Assert.AreEqual(1e-6, (double)effective["epsilon"]!);
        Assert.AreEqual(0.05, (double)effective["weightDecay"]!);
        Assert.AreEqual(0.01, (double)effective["warmupRatio"]!);
        Assert.IsTrue(effective.ContainsKey("maxGradNorm") && effective["maxGradNorm"] is null, "none = no clipping = null");
        CollectionAssert.AreEqual(new[] { "q_proj", "v_proj" }, effective["loraTargetModules"]!.AsArray().Select(v => (string?)v).ToArray());
        Assert.AreEqual(2, (int)effective["gradientAccumulationSteps"]!);

        // The written configuration reads back, and a flag replaces the earlier name.
        r = Seco("train", "--config", Path.Combine(output, "seco-config.json"), "--output", Output("paper-run-2"), "--compensation", "cache", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual("cache", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(Output("paper-run-2"), "seco-config.json")))!["compensation"]);

        File.WriteAllText(config, JsonSerializer.Serialize(new { modelPath = _model, data = _data, output, compensate = true, compensation = "loss" }));
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "compensate");

        foreach (var (flags, named) in new[]
        {
            (new[] { "--sampled-chunks", "2", "--sampler", "stratified" }, "--compensation"),
            (new[] { "--max-grad-norm", "0" }, "--max-grad-norm must be positive"),
            (new[] { "--max-grad-norm", "big" }, "--max-grad-norm 'big' is not a number or none"),
            (new[] { "--beta2", "1" }, "--beta2 must be in [0, 1)"),
            (new[] { "--warmup-ratio", "0.1", "--warmup-steps", "3" }, "--warmup-ratio cannot be combined with --warmup-steps"),
        })
        {
            r = Seco(TrainArgs(Output("paper-bad"), flags));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, named, string.Join(" ", flags));
        }
    }

    [TestMethod]
    public void ARunThatWillNotFitItsMemoryBudgetStopsBeforeTheFirstStepNamingTheFlags()
    {
        string output = Output("over-budget");
        var r = Seco(TrainArgs(output, "--memory-budget", "1KiB"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "seco: error: The run does not fit on cpu: the longest batch, a sequence of 24 tokens in chunks of 8, needs about");
        StringAssert.Contains(r.Error, "No single change of --recompute-layers, --chunk-size, --batch-size, --max-seq-len is predicted to fit.");
        Assert.IsFalse(Directory.Exists(Path.Combine(output, "adapter")), "no adapter is written");

        r = Seco(TrainArgs(Output("within-budget"), "--memory-budget", "64GiB", "--max-steps", "1", "--recompute-layers"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        r = Seco(TrainArgs(Output("bad-budget"), "--memory-budget", "lots"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--memory-budget");
    }

    [TestMethod]
    public void BadConfigFieldsAreNamedWithExitCodeTwo()
    {
        string config = Path.Combine(_root, "bad.json");
        File.WriteAllText(config, "{\n  \"modelPath\": \"x\",\n  \"chunkSzie\": 64\n}\n");
        var r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "chunkSzie");
        StringAssert.Contains(r.Error, "line 3");

        File.WriteAllText(config, "{ \"chunkSize\": \"big\" }");
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "chunkSize");
        StringAssert.Contains(r.Error, "integer");

        File.WriteAllText(config, "{\n  \"modelPath\": " + JsonSerializer.Serialize(_model) + ",\n  \"data\": " + JsonSerializer.Serialize(_data) +
            ",\n  \"output\": " + JsonSerializer.Serialize(Output("bad-run")) + ",\n  \"chunkSize\": 0\n}");
        r = Seco("train", "--config", config);
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        // The range error names the file's field and where it is, not the options' property.
        StringAssert.Contains(r.Error, $"{config}: field 'chunkSize' (line 5, column 3) must be at least 1; got 0.");
        Assert.IsFalse(Directory.Exists(Output("bad-run")), "nothing is created before the settings are valid");

        r = Seco("train", "--model", _model, "--data", Path.Combine(_root, "nope.jsonl"), "--output", Output("bad-run"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "nope.jsonl");
    }

    [TestMethod]
    public void CancellationStopsAtAStepBoundaryAndSavesWhatWasLearnt()
    {
        string output = Output("cancelled");
        using var cancellation = new CancellationTokenSource();
        using var stdout = new CancelOnProgress(cancellation, Path.Combine(output, "metrics.csv"));
        var r = Seco(cancellation.Token, stdout, TrainArgs(output, "--max-steps", "50"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "cancelled");
        var summary = r.JsonLines()[^1];
        Assert.IsTrue((bool)summary["cancelled"]!);
        Assert.IsTrue((int)summary["steps"]! < 50);
        Assert.IsTrue(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")));
        Assert.IsTrue(File.Exists(Path.Combine(output, "checkpoints", "trainer-state.bin")));
        // metrics.csv held step 1 while the run was still going (what a second Ctrl+C, which ends the process, leaves),
        // and holds every completed step now.
        CollectionAssert.AreEqual(new[] { "1" }, stdout.MetricsAtFirstProgress!.Skip(1).Select(l => l.Split(',')[0]).ToArray());
        var steps = File.ReadAllLines(Path.Combine(output, "metrics.csv")).Skip(1).Select(l => int.Parse(l.Split(',')[0], CultureInfo.InvariantCulture)).ToArray();
        CollectionAssert.AreEqual(Enumerable.Range(1, (int)summary["steps"]!).ToArray(), steps);
        Assert.IsFalse(Directory.EnumerateFileSystemEntries(output, "*.tmp").Any(), "no temporary is left behind");
    }

    /// <summary>
    /// Cancels the token as soon as the first progress event is written (what Ctrl+C does in the process), and reads
    /// metrics.csv at that moment.
    /// </summary>
    sealed class CancelOnProgress(CancellationTokenSource cancellation, string? metrics = null) : StringWriter(CultureInfo.InvariantCulture)
    {
        public string[]? MetricsAtFirstProgress { get; private set; }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.Contains("\"event\":\"progress\"", StringComparison.Ordinal) == true)
            {
                if (metrics is not null && MetricsAtFirstProgress is null) MetricsAtFirstProgress = File.ReadAllLines(metrics);
                cancellation.Cancel();
            }
        }
    }

    [TestMethod]
    public void EveryOptionOfTheStageHasAFlagAndAConfigurationField()
    {
        string help = Seco("train", "--help").Out;
        var members = typeof(ChunkwiseLoraTrainer.Options).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name)
            .Concat(typeof(ChunkwiseLoraTrainer.Options).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name))
            .ToList();
        Assert.IsTrue(members.Count > 30, "the options were enumerated");
        foreach (var name in members)
        {
            if (TrainSetting.SetElsewhere.ContainsKey(name)) continue;
            var setting = TrainSetting.ByName(name);
            Assert.IsNotNull(setting, $"ChunkwiseLoraTrainer.Options.{name} has no flag and no configuration field (give it a supported type or list it in TrainSetting.SetElsewhere).");
            Assert.IsTrue(TrainSetting.HasWrittenHelp(setting), $"{setting.Flag} ({name}) needs a help line in TrainSetting's HelpTexts.");
            object? value = NonDefault(setting);
            string text = TrainSetting.Display(value);

            // The flag sets the option, and the error would name the flag.
            var fromFlag = Configure(["train", setting.Flag, text]);
            Assert.AreEqual(text, TrainSetting.Display(fromFlag[setting]), setting.Flag);
            Assert.AreEqual(setting.Flag, fromFlag.Where(setting));

            // The configuration file's field sets it too, and the effective configuration writes it back under that name.
            string file = Path.Combine(_root, $"field-{setting.ConfigName}.json");
            File.WriteAllText(file, new JsonObject { [setting.ConfigName] = setting.ToJson(value) }.ToJsonString());
            var fromFile = TrainConfig.Load(file);
            Assert.AreEqual(text, TrainSetting.Display(fromFile[setting]), setting.ConfigName);
            StringAssert.StartsWith(fromFile.Where(setting), $"{file}: field '{setting.ConfigName}' (line 1, column 2)");
            var written = JsonNode.Parse(fromFile.ToJson())!.AsObject();
            Assert.IsTrue(written.ContainsKey(setting.ConfigName), setting.ConfigName);
            Assert.AreEqual(text, TrainSetting.Display(TrainConfig.Load(WriteTemp(written.ToJsonString()))[setting]), $"{setting.ConfigName} round trip");

            // --help shows the flag with the options' own default.
            object? defaultValue = setting.Field.GetValue(new ChunkwiseLoraTrainer.Options());
            StringAssert.Contains(help, setting.Flag);
            StringAssert.Contains(help, $"[default: {TrainSetting.Display(defaultValue)}]", setting.Flag);
        }
    }

    [TestMethod]
    public void ReadmeListsEveryTrainFlagAndConfigurationField()
    {
        string readme = File.ReadAllText(Microsoft.ML.Seco.Tests.Packaging.RepositoryFiles.PathOf("README.md"));
        int start = readme.IndexOf("**train**", StringComparison.Ordinal), end = readme.IndexOf("**eval**", StringComparison.Ordinal);
        Assert.IsTrue(start >= 0 && end > start, "README has the train paragraph");
        string section = readme[start..end];
        foreach (var setting in TrainSetting.All)
        {
            StringAssert.Contains(section, $"`{setting.Flag}", $"README's train flags miss {setting.Flag}");
            StringAssert.Contains(section, $"`{setting.ConfigName}`", $"README's configuration fields miss {setting.ConfigName}");
        }
        foreach (var flag in new[] { "--config", "--data", "--validation-data", "--output", "--resume", "--overwrite", "--json" })
            StringAssert.Contains(section, $"`{flag}", $"README's train flags miss {flag}");
    }

    static string WriteTemp(string text)
    {
        string path = Path.Combine(_root, Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>The configuration a train command line gives, without training.</summary>
    static TrainConfig Configure(string[] args)
    {
        TrainConfig? captured = null;
        var context = new CliContext(TextWriter.Null, TextWriter.Null, CancellationToken.None);
        var root = new System.CommandLine.RootCommand { Cli.Commands.TrainCommand.Create(context, (c, _, _, _) => { captured = c; return 0; }) };
        var parse = root.Parse(args);
        Assert.AreEqual(0, parse.Errors.Count, string.Join("; ", parse.Errors.Select(e => e.Message)));
        Assert.AreEqual(0, parse.Invoke());
        return captured!;
    }

    /// <summary>A value other than the options' default, of the setting's type.</summary>
    static object? NonDefault(TrainSetting setting)
    {
        object? d = setting.Default;
        var type = setting.ValueType;
        if (type == typeof(int)) return d is int i ? i + 3 : 3;
        if (type == typeof(double)) return d is double x ? x + 0.25 : 0.25;
        if (type == typeof(bool)) return !(bool)d!;
        if (type == typeof(string)) return "changed";
        if (type == typeof(string[])) return new[] { "v_proj", "up_proj" };
        if (type.IsEnum) return Enum.GetValues(type).Cast<object>().First(v => !v.Equals(d));
        throw new AssertFailedException($"{setting.Name}: no test value for {type}");
    }

    [TestMethod]
    public void ErrorsNameTheFlagOrFieldAndNothingIsCreatedBeforeTheInputIsValid()
    {
        string output = Output("never-created");
        foreach (var (flags, expected) in new[]
        {
            (new[] { "--chunk-size", "0" }, "--chunk-size must be at least 1; got 0."),
            (new[] { "--lora-rank", "0" }, "--lora-rank must be at least 1; got 0."),
            (new[] { "--final-lr-ratio", "2" }, "--final-lr-ratio must be in [0, 1]"),
            (new[] { "--batch-size", "0" }, "--batch-size must be at least 1"),
            (new[] { "--lora-targets", "nope_proj" }, "--lora-targets"),
            (new[] { "--sampled-chunks", "many" }, "--sampled-chunks 'many' is not an integer or none."),
            (new[] { "--dtype", "int4" }, "--dtype 'int4'"),
            (new[] { "--resume", "--overwrite" }, "--resume continues the run in --output and --overwrite replaces it"),
        })
        {
            var r = Seco(["train", "--model", _model, "--data", _data, "--output", output, .. flags]);
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, expected, string.Join(" ", flags));
            Assert.IsFalse(System.Text.RegularExpressions.Regex.IsMatch(r.Error, @"\b(ChunkSize|LoraRank|FinalLearningRateRatio|MinLearningRateRatio|BatchSize|TargetModules|DType)\b"), r.Error);
            Assert.IsFalse(Directory.Exists(output), $"{string.Join(" ", flags)} created the output folder");
        }

        // What the stage would refuse in its own terms (a schema, rows) is refused naming the flag and the file.
        var column = Seco("train", "--model", _model, "--data", _data, "--output", output, "--text-column", "Body");
        Assert.AreEqual((2, $"seco: error: --text-column 'Body' is not a column of --data '{_data}'; its documents are in the column Text."), (column.ExitCode, column.Error.Trim()));
        string emptyData = Path.Combine(_root, "empty-texts.jsonl");
        File.WriteAllText(emptyData, "{\"text\": \"\"}\n{\"text\": \"  \"}\n");
        var empty = Seco("train", "--model", _model, "--data", emptyData, "--output", output);
        Assert.AreEqual((2, $"seco: error: --data '{emptyData}': none of its 2 document(s) has anything to train on (an empty or whitespace text or response has nothing)."),
            (empty.ExitCode, empty.Error.Trim()));
        Assert.IsFalse(Directory.Exists(output));

        // Bad data is found before the output folder exists, too.
        string badData = Path.Combine(_root, "bad-data.jsonl");
        File.WriteAllText(badData, "{\"text\": \"fine\"}\n{\"text\": \n");
        var bad = Seco("train", "--model", _model, "--data", badData, "--output", output);
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "bad-data.jsonl");
        Assert.IsFalse(Directory.Exists(output));

        bad = Seco("train", "--model", Output("no-such-model"), "--data", _data, "--output", output);
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "--model '" + Output("no-such-model") + "': the directory does not exist.");
        Assert.IsFalse(Directory.Exists(output));

        bad = Seco("generate", "--model", Output("no-such-model"), "--prompt", "hello");
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "--model '" + Output("no-such-model") + "': the directory does not exist.");
        bad = Seco("tokenize", "--model", Output("no-such-model"), "--text", "hello");
        Assert.AreEqual(2, bad.ExitCode, bad.ToString());
        StringAssert.Contains(bad.Error, "the directory does not exist");
    }

    [TestMethod]
    public void AnOutputFolderWithARunNeedsResumeOrOverwriteAndIsLockedWhileARunWritesIt()
    {
        string output = Output("reused");
        // t at or above the chunk count (24 / 8 = 3 chunks) is exact SeCO, and the command says so.
        var r = Seco(TrainArgs(output, "--max-steps", "2", "--sampled-chunks", "3"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--sampled-chunks 3 is at or above the chunk count (3 chunks");
        StringAssert.Contains(r.Error, "exact SeCO");
        string csv = Path.Combine(output, "metrics.csv");
        var before = File.ReadAllText(csv);

        r = Seco(TrainArgs(output, "--max-steps", "1"));
        Assert.AreEqual(2, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "--resume");
        StringAssert.Contains(r.Error, "--overwrite");
        Assert.AreEqual(before, File.ReadAllText(csv), "the earlier run is untouched");

        // While another run holds the folder, a second one is refused (the lock is the OS's: a second open fails).
        using (new FileStream(Path.Combine(output, OutputFolder.LockName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            r = Seco(TrainArgs(output, "--max-steps", "1", "--overwrite"));
            Assert.AreEqual(2, r.ExitCode, r.ToString());
            StringAssert.Contains(r.Error, "is in use by another seco train");
            Assert.AreEqual(before, File.ReadAllText(csv));
        }

        // --resume with nothing left to do says so and changes nothing.
        r = Seco("train", "--output", output, "--resume", "--json");
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        StringAssert.Contains(r.Error, "nothing left to do");
        Assert.IsTrue((bool)r.JsonLines()[^1]["nothing_to_do"]!);
        Assert.AreEqual(before, File.ReadAllText(csv));

        r = Seco(TrainArgs(output, "--max-steps", "1", "--overwrite"));
        Assert.AreEqual(0, r.ExitCode, r.ToString());
        Assert.AreEqual(2, File.ReadAllLines(csv).Length, "the replaced run's rows are gone");
        Assert.IsFalse(File.ReadAllText(Path.Combine(output, "seco-config.json")).Contains("\"sampledChunks\": 3", StringComparison.Ordinal));
    }

    [TestMethod]
    public void ARunWithoutStepsWritesNoEmptyPlot()
    {
        Assert.IsNull(Metrics.Plot([]), "no rows, no plot");
        Assert.IsNull(Metrics.Plot([new MetricsRow(1, double.NaN, 1e-4, 1, 1, 1, null)]), "no finite loss, no plot");
        var png = Metrics.Plot([new MetricsRow(1, 2.5, 1e-4, 1, 1, 1, null), new MetricsRow(2, 2.0, 1e-4, 1, 2, 1, 2.2)]);
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png!.Take(4).ToArray());

        // Cancelled before the first step: the stage is saved, but there is no metrics row and so no loss.png.
        string output = Output("no-steps");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var r = Seco(cancelled.Token, null, TrainArgs(output, "--max-steps", "3"));
        Assert.AreEqual(1, r.ExitCode, r.ToString());
        var summary = r.JsonLines()[^1];
        Assert.AreEqual(0, (int)summary["steps"]!);
        Assert.IsFalse(summary["artifacts"]!.AsObject().ContainsKey("loss_plot"));
        Assert.IsFalse(File.Exists(Path.Combine(output, "loss.png")));
    }
}
