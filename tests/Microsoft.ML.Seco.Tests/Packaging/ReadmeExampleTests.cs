using System.Text.RegularExpressions;

namespace Microsoft.ML.Seco.Tests.Packaging;

/// <summary>The README's C# is a compiled, running example (examples/UsingFromCSharp), shown verbatim.</summary>
[TestClass]
public sealed class ReadmeExampleTests
{
    [TestMethod]
    public void UsingItFromCSharpShowsTheExampleVerbatim()
    {
        string readme = File.ReadAllText(RepositoryFiles.PathOf("README.md")).ReplaceLineEndings("\n");
        var section = Regex.Match(readme, @"^## Using it from C#\n(?<body>.*?)(?=^## )", RegexOptions.Multiline | RegexOptions.Singleline);
        Assert.IsTrue(section.Success, "README.md has no '## Using it from C#' section");
        var block = Regex.Match(section.Groups["body"].Value, @"^```csharp\n(?<code>.*?)^```$", RegexOptions.Multiline | RegexOptions.Singleline);
        Assert.IsTrue(block.Success, "the section has no ```csharp block");

        string example = File.ReadAllText(RepositoryFiles.PathOf("examples/UsingFromCSharp/Program.cs")).ReplaceLineEndings("\n");
        string shown = block.Groups["code"].Value;
        if (shown != example)
        {
            string[] a = shown.Split('\n'), b = example.Split('\n');
            int line = Enumerable.Range(0, Math.Min(a.Length, b.Length)).FirstOrDefault(i => a[i] != b[i], Math.Min(a.Length, b.Length));
            Assert.Fail($"README's C# differs from examples/UsingFromCSharp/Program.cs at line {line + 1}:\n" +
                        $"README:  {(line < a.Length ? a[line] : "<end>")}\nexample: {(line < b.Length ? b[line] : "<end>")}");
        }
    }
}
