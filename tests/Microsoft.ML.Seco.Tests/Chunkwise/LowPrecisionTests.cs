using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Baselines;
using Microsoft.ML.Seco.Diagnostics;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Chunkwise;

/// <summary>The same code path in float32 and bfloat16: SeCO agrees with full backprop to the precision of the dtype.</summary>
[TestClass]
public sealed class LowPrecisionTests
{
    [TestMethod]
    [DataRow(ScalarType.Float32, 1e-4)]
    [DataRow(ScalarType.BFloat16, 0.1)]
    public void SecoMatchesFullBackpropToTheDtypesPrecision(ScalarType dtype, double tolerance)
    {
        using var model = TestModels.WithLora(TestModels.Create(TestModels.Llama(), dtype));
        using var batch = TestModels.Batch(61, new[] { 30, 22 }, ignoredFraction: 0.2);
        StepResult? full = null, seco = null;
        var reference = GradientCheck.Gradients(model, () => full = new FullBackprop().Run(model, batch));
        var actual = GradientCheck.Gradients(model, () => seco = new ChunkwiseStep(new ChunkwiseOptions { ChunkSize = 8 }).Run(model, batch));
        Assert.IsTrue(double.IsFinite(seco!.Loss));
        Assert.AreEqual(full!.Loss, seco.Loss, tolerance * full.Loss);
        Assert.AreEqual(dtype, actual.Values.First().dtype);
        double error = GradientCheck.Compare(actual, reference).Max(g => g.MaxRelError);
        Assert.IsTrue(error <= tolerance, $"{dtype}: max relative gradient error {error:E2}");
    }
}
