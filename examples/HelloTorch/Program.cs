// Smallest check that the TorchSharp backend loads and computes: a matrix product and one autograd backward.
using static TorchSharp.torch;

var a = tensor(new double[] { 1, 2, 3, 4 }, new long[] { 2, 2 }, requires_grad: true);
var b = tensor(new double[] { 5, 6, 7, 8 }, new long[] { 2, 2 });
var product = matmul(a, b);
product.sum().backward();
Console.WriteLine($"TorchSharp {TorchSharp.torch.__version__} on {(cuda.is_available() ? "cuda" : "cpu")}");
Console.WriteLine($"a @ b        = {product.ToString(TorchSharp.TensorStringStyle.Julia)}");
Console.WriteLine($"d sum / d a  = {a.grad!.ToString(TorchSharp.TensorStringStyle.Julia)}");
