using System.Text.Json.Nodes;

namespace Microsoft.ML.Seco.Examples.ChatWithYourModel;

/// <summary>
/// Synthetic conversations with a pattern to learn: the user asks for the capital of a country and the assistant
/// answers from a fixed fact table ("Paris."). Some conversations open with a system prompt, some ask two questions:
/// the loss is on both answers, never on the questions.
/// </summary>
public static class CapitalsTask
{
    /// <summary>The fact table.</summary>
    public static readonly IReadOnlyList<(string Country, string Capital)> Facts =
    [
        ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
        ("Norway", "Oslo"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Italy", "Rome"),
    ];

    /// <summary>The question about <paramref name="country"/>.</summary>
    public static string Question(string country) => $"What is the capital of {country}?";

    /// <summary>The answer the assistant learns to give.</summary>
    public static string Answer(string capital) => $"{capital}.";

    /// <summary><paramref name="count"/> conversations as Hugging Face <c>messages</c> arrays.</summary>
    public static IEnumerable<JsonArray> Conversations(int count, int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            var messages = new JsonArray();
            if (random.Next(2) == 0) messages.Add(Message("system", "You answer geography questions."));
            for (int turn = 0, turns = 1 + random.Next(2); turn < turns; turn++)
            {
                var (country, capital) = Facts[random.Next(Facts.Count)];
                messages.Add(Message("user", Question(country)));
                messages.Add(Message("assistant", Answer(capital)));
            }
            yield return messages;
        }
    }

    /// <summary>One <c>{"role", "content"}</c> message.</summary>
    public static JsonObject Message(string role, string content) => new() { ["role"] = role, ["content"] = content };
}
