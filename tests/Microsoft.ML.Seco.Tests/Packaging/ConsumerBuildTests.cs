using System.Diagnostics;

namespace Microsoft.ML.Seco.Tests.Packaging;

/// <summary>
/// Applications outside the repository, built the way users build them, run the README's example (a tiny Fit +
/// Transform, generation, save and reload): one that references the packed NuGet package, one that references the
/// library's project. On a Debian 12 host this fails unless the native fix-up reached the application's build.
/// </summary>
[TestClass]
public sealed class ConsumerBuildTests
{
#if DEBUG
    const string Configuration = "Debug";
#else
    const string Configuration = "Release";
#endif
    const string LibTorchVersion = "2.10.0";
    static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(8);
    // The dotnet that runs `dotnet test` (the SDK sets DOTNET_HOST_PATH for the processes it starts).
    static readonly string Dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    [TestMethod]
    [TestCategory("EndToEnd")]
    public void AnAppReferencingThePackageBuildsAndRuns()
    {
        string work = MLNet.TinyModelFixture.TempPath("package-consumer");
        // A version no cache has seen: restore must take the package just packed, not an older one.
        string version = $"0.0.0-e2e.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string cached = Path.Combine(GlobalPackagesFolder(), "microsoft.ml.seco", version);
        try
        {
            string feed = Path.Combine(work, "feed");
            // The library is already built (this test runs from its output); pack what was built.
            Run(RepositoryFiles.Root, Dotnet, "pack", RepositoryFiles.PathOf("src/Microsoft.ML.Seco/Microsoft.ML.Seco.csproj"),
                "-c", Configuration, "--no-build", "-o", feed, $"-p:PackageVersion={version}");
            string nupkg = Path.Combine(feed, $"Microsoft.ML.Seco.{version}.nupkg");
            Assert.IsTrue(File.Exists(nupkg), $"{nupkg} was not written");
            using (var zip = System.IO.Compression.ZipFile.OpenRead(nupkg))
                foreach (var entry in new[] { "buildTransitive/Microsoft.ML.Seco.targets", "buildTransitive/GlibcxxWeakVersionPatch.cs" })
                    Assert.IsNotNull(zip.GetEntry(entry), $"the package lacks {entry}");

            string app = Path.Combine(work, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "NuGet.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="seco-under-test" value="{feed}" />
                    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
                  </packageSources>
                </configuration>
                """);
            WriteApp(app, $"""<PackageReference Include="Microsoft.ML.Seco" Version="{version}" />""", imports: "");
            BuildAndRun(app);
        }
        finally
        {
            DeleteDirectory(work);
            DeleteDirectory(cached);
        }
    }

    [TestMethod]
    [TestCategory("EndToEnd")]
    public void AnAppReferencingTheProjectFromOutsideTheRepositoryBuildsAndRuns()
    {
        string work = MLNet.TinyModelFixture.TempPath("project-consumer");
        try
        {
            string app = Path.Combine(work, "app");
            Directory.CreateDirectory(app);
            // MSBuild carries targets from packages across project references, never a project's own: an application
            // that references the library's project imports the fix-up itself (README, "Choosing the tensor backend").
            WriteApp(app,
                $"""<ProjectReference Include="{RepositoryFiles.PathOf("src/Microsoft.ML.Seco/Microsoft.ML.Seco.csproj")}" />""",
                imports: $"""<Import Project="{RepositoryFiles.PathOf("build/Microsoft.ML.Seco.targets")}" />""");
            BuildAndRun(app);
        }
        finally { DeleteDirectory(work); }
    }

    /// <summary>A console project whose Program.cs is the README's example.</summary>
    static void WriteApp(string app, string reference, string imports)
    {
        File.WriteAllText(Path.Combine(app, "ConsumerApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                {reference}
                <PackageReference Include="libtorch-cpu-linux-x64" Version="{LibTorchVersion}" Condition="$([MSBuild]::IsOSPlatform('Linux'))" />
                <PackageReference Include="libtorch-cpu-win-x64" Version="{LibTorchVersion}" Condition="$([MSBuild]::IsOSPlatform('Windows'))" />
              </ItemGroup>
              {imports}
            </Project>
            """);
        File.Copy(RepositoryFiles.PathOf("examples/UsingFromCSharp/Program.cs"), Path.Combine(app, "Program.cs"));
    }

    static void BuildAndRun(string app)
    {
        Run(app, Dotnet, "build", "-c", "Release");
        string output = Path.Combine(app, "bin", "Release", "net10.0");
        if (OperatingSystem.IsLinux()) AssertNativeLibraryLoadsOnThisHost(output);
        string stdout = Run(app, Dotnet, Path.Combine(output, "ConsumerApp.dll"));
        StringAssert.Contains(stdout, "held-out document 1:");
        StringAssert.Contains(stdout, "the reloaded pipeline gives the same perplexities: True");
    }

    /// <summary>The application's copy of TorchSharp's native library asks for nothing this host's libstdc++ lacks.</summary>
    static void AssertNativeLibraryLoadsOnThisHost(string output)
    {
        string library = Path.Combine(output, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.IsTrue(File.Exists(library), $"{library} is missing");
        string hostLib = ElfVersionNeeds.FindHostLibStdCxx() ?? throw new AssertFailedException("no libstdc++.so.6 on this host");
        var provided = ElfVersionNeeds.Definitions(File.ReadAllBytes(hostLib), hostLib);
        var unmet = ElfVersionNeeds.Requirements(File.ReadAllBytes(library), library)
            .Where(r => r.File == "libstdc++.so.6" && !provided.Contains(r.Version) && !r.IsWeak).Select(r => r.Version).ToList();
        Assert.AreEqual(0, unmet.Count, $"the fix-up did not run in the application's build: {library} still needs {string.Join(", ", unmet)}");
    }

    /// <summary>Runs a command to completion and returns its standard output; fails the test with both streams otherwise.</summary>
    static string Run(string directory, string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file)
        {
            WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        // The test host inherits the MSBuild settings of the `dotnet test` that started it; the child build must find
        // its own, as a user's would.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(name);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        // No build server or node outlives the command.
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["UseSharedCompilation"] = "false";

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(CommandTimeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"`{file} {string.Join(' ', arguments)}` in {directory} ran longer than {CommandTimeout}.");
        }
        process.WaitForExit();
        string text = stdout.Result, errors = stderr.Result;
        Assert.AreEqual(0, process.ExitCode, $"`{file} {string.Join(' ', arguments)}` in {directory} failed:\n{text}\n{errors}");
        return text;
    }

    static string GlobalPackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    static void DeleteDirectory(string path)
    {
        try { if (Directory.Exists(path)) Directory.Delete(path, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
