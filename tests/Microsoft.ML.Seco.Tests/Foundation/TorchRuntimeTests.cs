using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Foundation;

/// <summary>The native backend loads and computes, and the Debian 12 fix-up left the library loadable.</summary>
[TestClass]
public sealed class TorchRuntimeTests
{
    [TestMethod]
    public void MatmulComputesTheProduct()
    {
        using var a = tensor(new double[] { 1, 2, 3, 4 }, new long[] { 2, 2 });
        using var b = tensor(new double[] { 5, 6, 7, 8 }, new long[] { 2, 2 });
        using var c = matmul(a, b);
        CollectionAssert.AreEqual(new double[] { 19, 22, 43, 50 }, c.data<double>().ToArray());
    }

    [TestMethod]
    public void BackwardGivesTheAnalyticGradient()
    {
        // d/dx sum(x^3) = 3 x^2
        using var x = tensor(new double[] { -1.5, 0.5, 2 }, requires_grad: true);
        using var y = x.pow(3).sum();
        y.backward();
        CollectionAssert.AreEqual(new double[] { 6.75, 0.75, 12 }, x.grad!.data<double>().ToArray());
    }

    [TestMethod]
    public void NativeLibraryNeedsNothingTheHostLacks()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The fix-up applies to Linux hosts only.");
        string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.IsTrue(File.Exists(library), $"{library} is missing: the TorchSharp layout changed.");
        string? hostLib = ElfVersionNeeds.FindHostLibStdCxx();
        Assert.IsNotNull(hostLib, "no libstdc++.so.6 on this host");
        var provided = ElfVersionNeeds.Definitions(File.ReadAllBytes(hostLib), hostLib);
        Assert.IsTrue(provided.Contains("GLIBCXX_3.4.30"), "the verdef reader found no GLIBCXX versions in libstdc++");

        var requirements = ElfVersionNeeds.Requirements(File.ReadAllBytes(library), library);
        Assert.IsTrue(requirements.Any(r => r.File == "libstdc++.so.6"), "the verneed reader found no libstdc++ requirement");
        var unmet = requirements.Where(r => r.File == "libstdc++.so.6" && !provided.Contains(r.Version) && !r.IsWeak).ToList();
        Assert.AreEqual(0, unmet.Count, "unpatched requirements: " + string.Join(", ", unmet.Select(r => r.Version)));
        // And the library really loads: the first tensor op initialises the native backend.
        using var t = ones(1);
        Assert.AreEqual(1f, t.item<float>());
    }
}
