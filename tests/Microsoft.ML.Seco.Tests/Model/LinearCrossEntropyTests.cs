using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco.Tests.Model;

/// <summary>
/// The pieced output layer and loss against libtorch's own whole-logits cross-entropy and its autograd (float64): the
/// same loss, per-token NLL and gradients of the hidden states and the output weight, whatever the piece size.
/// </summary>
[TestClass]
public sealed class LinearCrossEntropyTests
{
    // A piece of 8 bytes of float64 logits per row times the vocabulary: one row per piece, the most pieces there can be.
    const long OneRow = 8 * 61;

    [TestMethod]
    [DataRow(false, DisplayName = "separate lm_head")]
    [DataRow(true, DisplayName = "tied embeddings (the weight also feeds the input)")]
    public void PiecedLossAndGradientsEqualTheWholeLogitsCrossEntropy(bool tied)
    {
        using var scope = NewDisposeScope();
        using var model = TestModels.Create(TestModels.Llama(tied: tied));
        TrainableParameters.Select(model, fullFineTuning: true);
        var weight = tied ? model.named_parameters().Single(p => p.name == "model.embed_tokens.weight").parameter
            : model.named_parameters().Single(p => p.name == "lm_head.weight").parameter;
        var generator = new Generator(5, CPU);
        var hiddenValues = normal(0, 1, new long[] { 2, 9, 32 }, generator: generator, dtype: ScalarType.Float64);
        var targets = randint(0, 61, new long[] { 2, 9 }, generator: generator);
        targets[0, 3] = tensor(-100L);
        targets[1, 8] = tensor(-100L);
        var positions = tensor(new long[] { 0, 1, 3, 4, 8, 10, 12, 17 });

        (double Loss, Tensor Hidden, Tensor Weight) Reference()
        {
            var hidden = hiddenValues.clone().requires_grad_(true);
            var rows = hidden.reshape(-1, 32).index_select(0, positions);
            var logits = nn.functional.linear(rows, weight);
            var loss = nn.functional.cross_entropy(logits, targets.reshape(-1).index_select(0, positions), ignore_index: -100, reduction: nn.Reduction.Sum);
            loss.backward();
            var result = (loss.item<double>(), hidden.grad!.clone(), weight.grad!.clone());
            weight.grad!.zero_();
            return result;
        }

        (double Loss, Tensor Hidden, Tensor Weight) Pieced(long pieceBytes)
        {
            var hidden = hiddenValues.clone().requires_grad_(true);
            var loss = model.LossSum(hidden, targets, positions, pieceBytes) * 0.5; // a seed other than 1 reaches both gradients
            loss.backward();
            var result = (loss.item<double>() * 2, hidden.grad!.clone() * 2, weight.grad!.clone() * 2);
            weight.grad!.zero_();
            return result;
        }

        var reference = Reference();
        Assert.IsTrue(reference.Weight.abs().max().item<double>() > 0 && reference.Hidden.abs().max().item<double>() > 0);
        foreach (long bytes in new[] { OneRow, 3 * OneRow, CausalLM.DefaultLossPieceBytes })
        {
            var actual = Pieced(bytes);
            Assert.AreEqual(reference.Loss, actual.Loss, 1e-12 * reference.Loss, $"loss, pieces of {bytes} bytes");
            Assert.IsTrue(MaxRelative(actual.Hidden, reference.Hidden) <= 1e-12, $"hidden gradient, pieces of {bytes} bytes");
            Assert.IsTrue(MaxRelative(actual.Weight, reference.Weight) <= 1e-12, $"weight gradient, pieces of {bytes} bytes");
        }

        using (no_grad())
        {
            var nll = model.TokenNll(hiddenValues, targets, positions, 2 * OneRow);
            var expected = nn.functional.cross_entropy(nn.functional.linear(hiddenValues.reshape(-1, 32).index_select(0, positions), weight),
                targets.reshape(-1).index_select(0, positions), ignore_index: -100, reduction: nn.Reduction.None);
            Assert.IsTrue((nll - expected).abs().max().item<double>() <= 1e-12, "per-token NLL");
            Assert.AreEqual(reference.Loss, model.LossSum(hiddenValues, targets, positions, OneRow).item<double>(), 1e-12 * reference.Loss, "no-graph loss");
        }
    }

    static double MaxRelative(Tensor actual, Tensor reference) =>
        (actual - reference).abs().max().item<double>() / reference.abs().max().item<double>();
}
