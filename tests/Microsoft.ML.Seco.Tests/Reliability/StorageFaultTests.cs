using Microsoft.ML.Seco.Lora;
using System.Diagnostics;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using Microsoft.ML.Seco.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Reliability;

/// <summary>
/// A full disk or a folder that turns read-only gives an error naming the file and leaves the previous checkpoint
/// intact. Real faults, not simulated ones: a small tmpfs is mounted for each test (root on Linux; elsewhere the
/// tests are inconclusive). Permission bits would not do: root ignores them.
/// </summary>
[TestClass]
public sealed class StorageFaultTests
{
    /// <summary>A tmpfs of a given size, mounted on a fresh folder and unmounted on dispose.</summary>
    sealed class SmallFileSystem : IDisposable
    {
        public string Path { get; }

        SmallFileSystem(string path) => Path = path;

        public static SmallFileSystem Mount(int kilobytes)
        {
            if (!OperatingSystem.IsLinux()) throw new AssertInconclusiveException("Needs Linux to mount a small file system.");
            string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "seco-small-fs-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(path);
            if (Run("mount", "-t", "tmpfs", "-o", $"size={kilobytes}k", "tmpfs", path) != 0)
            {
                Directory.Delete(path);
                throw new AssertInconclusiveException("Cannot mount a tmpfs here (needs root).");
            }
            return new SmallFileSystem(path);
        }

        public void MakeReadOnly() => Assert.AreEqual(0, Run("mount", "-o", "remount,ro", Path), "remount read-only");

        /// <summary>Takes every free byte, so the next write fails with ENOSPC.</summary>
        public void Fill()
        {
            using var filler = new FileStream(System.IO.Path.Combine(Path, "filler"), FileMode.Create);
            var block = new byte[4096];
            try
            {
                while (true) { filler.Write(block); filler.Flush(); }
            }
            catch (IOException)
            {
                // full: what was written stays, the rest of the buffer is dropped on close
            }
            try { filler.SetLength(filler.Position); } catch (IOException) { }
        }

        public void Dispose()
        {
            Run("umount", Path);
            try { Directory.Delete(Path, true); } catch (IOException) { }
        }

        static int Run(string file, params string[] arguments)
        {
            var start = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in arguments) start.ArgumentList.Add(a);
            try
            {
                using var process = Process.Start(start)!;
                process.WaitForExit();
                return process.ExitCode;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return -1;
            }
        }
    }

    static CausalLM Model()
    {
        random.manual_seed(1);
        return TestModels.WithLora(TestModels.Create(TestModels.Llama()));
    }

    static Func<IEnumerable<TokenBatch>> Data(int count) =>
        () => Enumerable.Range(0, count).Select(i => TestModels.Batch(61, new[] { 24, 19 }, seed: 100 + i));

    static Trainer NewTrainer(CausalLM model, int maxSteps) =>
        new(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }), new TrainingOptions { LearningRate = 1e-2, MaxSteps = maxSteps });

    [TestMethod]
    public void AFullDiskFailsTheSaveClearlyAndKeepsThePreviousState()
    {
        using var fs = SmallFileSystem.Mount(1024);
        string state = Path.Combine(fs.Path, "trainer-state.bin");
        using var model = Model();
        using var trainer = NewTrainer(model, 2);
        trainer.Train(Data(8), 8, null, CancellationToken.None);
        trainer.SaveState(fs.Path);
        byte[] saved = File.ReadAllBytes(state);

        fs.Fill();
        using (var more = NewTrainer(model, 3))
        {
            more.LoadState(fs.Path);
            more.Train(Data(8), 8, null, CancellationToken.None);
            var e = Assert.ThrowsExactly<IOException>(() => more.SaveState(fs.Path));
            StringAssert.Contains(e.Message, state);
            StringAssert.Contains(e.Message, "The previous file there is unchanged.");
        }
        CollectionAssert.AreEqual(saved, File.ReadAllBytes(state));
        CollectionAssert.AreEquivalent(new[] { "filler", "trainer-state.bin" }, Directory.GetFiles(fs.Path).Select(Path.GetFileName).ToArray(),
            "the temporary file is removed");
        using var reloaded = NewTrainer(model, 3);
        reloaded.LoadState(fs.Path);
        Assert.AreEqual(2, reloaded.CompletedSteps);
    }

    [TestMethod]
    public void AFullDiskLeavesThePreviousSafetensorsFileIntact()
    {
        using var fs = SmallFileSystem.Mount(256);
        string path = Path.Combine(fs.Path, "adapter_model.safetensors");
        using var small = arange(16, dtype: ScalarType.Float32);
        SafeTensorsFile.Write(path, new[] { ("w", small) });
        byte[] before = File.ReadAllBytes(path);
        fs.Fill();
        using var large = ones(64 * 1024, dtype: ScalarType.Float32);
        var e = Assert.ThrowsExactly<IOException>(() => SafeTensorsFile.Write(path, new[] { ("w", large) }));
        StringAssert.Contains(e.Message, path);
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path));
        using var reader = SafeTensorsFile.Open(path);
        using var read = reader.ReadTensor("w");
        Assert.IsTrue(read.equal(small).all().item<bool>());
    }

    /// <summary>The ML.NET stage saves every step; the folder turns read-only after step 2 and the run stops with the state of step 2.</summary>
    [TestMethod]
    public void AFolderTurningReadOnlyMidRunStopsTheStageAndKeepsTheLastState()
    {
        using var fs = SmallFileSystem.Mount(4096);
        var ml = new MLContext(seed: 1);
        var progress = new Progress(p => { if (p.Step == 3) fs.MakeReadOnly(); });
        var stage = ml.Transforms.Text.ChunkwiseLora(new ChunkwiseLoraTrainer.Options
        {
            ModelPath = MLNet.TinyModelFixture.ModelPath, ChunkSize = 16, MaxSequenceLength = 64, MaxSteps = 5, Device = "cpu",
            CheckpointDirectory = fs.Path, CheckpointEverySteps = 1, Progress = progress, Seed = 1,
        });
        var e = Assert.ThrowsExactly<IOException>(() => stage.Fit(ml.Data.LoadFromEnumerable(MLNet.TinyModelFixture.Documents(6))));
        StringAssert.Contains(e.Message, Path.Combine(fs.Path, "trainer-state.bin"));
        Assert.AreEqual(3, progress.Last);

        using var model = ModelDirectory.Load(MLNet.TinyModelFixture.ModelPath, ScalarType.Float32, CPU);
        random.manual_seed(1);
        LoraAdapters.Attach(model, new global::Microsoft.ML.Seco.Lora.LoraConfig { Rank = 8, Alpha = 16, TargetModules = global::Microsoft.ML.Seco.Lora.LoraConfig.AttentionProjections });
        using var trainer = new Trainer(model, new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 16 }), new TrainingOptions());
        trainer.LoadState(fs.Path);
        Assert.AreEqual(2, trainer.CompletedSteps);
    }

    sealed class Progress(Action<TrainingProgress> onReport) : IProgress<TrainingProgress>
    {
        public int Last { get; private set; }
        public void Report(TrainingProgress value)
        {
            Last = value.Step;
            onReport(value);
        }
    }
}
