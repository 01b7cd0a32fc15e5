namespace Microsoft.ML.Seco.Examples.QuickStart;

/// <summary>One long document: a pass key planted at the start, filler, and the question at the end.</summary>
public sealed class PassKeyDocument
{
    /// <summary>Document and question (no loss on these tokens).</summary>
    public string Prompt { get; set; } = "";
    /// <summary>The answer: " key" (the loss covers this token and the end-of-text after it).</summary>
    public string Response { get; set; } = "";
    /// <summary>The key word, for scoring.</summary>
    public string Key { get; set; } = "";
}

/// <summary>
/// A long-context task that can only be learnt through the cache: the answer at the end of a document of many chunks
/// is a word that appears once, in the first chunk. A gradient that does not flow through the cached keys/values
/// of earlier chunks cannot teach the model to fetch it.
/// </summary>
public static class PassKeyTask
{
    // Each key is one GPT-2 token after a space, so the answer is a single prediction.
    static readonly string[] Keys = { "apple", "river", "tiger", "violin", "copper", "lantern", "harbor", "silver", "garden", "rocket" };
    static readonly string[] Subjects = { "The committee", "Our supplier", "The tenant", "Each party", "The auditor", "The board", "This agreement", "The landlord" };
    static readonly string[] Verbs = { "reviewed", "approved", "noted", "amended", "signed", "discussed", "filed", "confirmed" };
    static readonly string[] Objects = { "the annual report", "the payment schedule", "the notice period", "the insurance terms", "the budget", "the delivery plan", "the minutes", "the renewal clause" };

    /// <summary>The question that ends every prompt.</summary>
    public const string Question = " Question: what is the pass key? Answer: the pass key is";

    /// <summary>Documents of about <paramref name="sentences"/> filler sentences each.</summary>
    public static PassKeyDocument[] Documents(int count, int sentences, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            string key = Keys[random.Next(Keys.Length)];
            var filler = Enumerable.Range(0, sentences).Select(_ =>
                $"{Subjects[random.Next(Subjects.Length)]} {Verbs[random.Next(Verbs.Length)]} {Objects[random.Next(Objects.Length)]}.");
            return new PassKeyDocument
            {
                Prompt = $"The pass key is {key}. Remember it. " + string.Join(' ', filler) + Question,
                Response = $" {key}",
                Key = key,
            };
        }).ToArray();
    }

    /// <summary>The candidate answers.</summary>
    public static IReadOnlyList<string> KeyWords => Keys;

    /// <summary>Chance level: one key in ten.</summary>
    public static double ChanceAccuracy => 1.0 / Keys.Length;
}
