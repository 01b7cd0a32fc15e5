using Microsoft.ML.Data;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Seco;

/// <summary>What a fitted stage needs to score and to be saved and reloaded (no training-only settings).</summary>
public sealed record ScoringSettings
{
    /// <summary>The base model directory.</summary>
    public required string ModelPath { get; init; }
    /// <summary>Device name the stage runs on ("cpu", "cuda:0").</summary>
    public required string Device { get; init; }
    /// <summary>Model dtype name ("float32", ...).</summary>
    public required string DType { get; init; }
    /// <summary>Column with documents to score.</summary>
    public string TextColumnName { get; init; } = "Text";
    /// <summary>Prompt column (scores responses given prompts; feeds Completion).</summary>
    public string? PromptColumnName { get; init; }
    /// <summary>Response column.</summary>
    public string? ResponseColumnName { get; init; }
    /// <summary>
    /// Column of conversations as JSON (Hugging Face's <c>messages</c>), rendered by the base model's chat template;
    /// scoring then covers the tokens <see cref="AssistantOnlyLoss"/> says. Takes the place of the other columns.
    /// </summary>
    public string? MessagesColumnName { get; init; }
    /// <summary>Conversations: score (and train) the assistant's turns only (true, the default), or every token.</summary>
    public bool AssistantOnlyLoss { get; init; } = true;
    /// <summary>Chunk size of the scoring forward passes (memory bounded by one chunk). Default <see cref="SecoDefaults.ChunkSize"/>.</summary>
    public int ChunkSize { get; init; } = SecoDefaults.ChunkSize;
    /// <summary>Documents longer than this are scored window by window. Default <see cref="SecoDefaults.MaxSequenceLength"/>.</summary>
    public int MaxSequenceLength { get; init; } = SecoDefaults.MaxSequenceLength;
    /// <summary>Tokens generated into the Completion column and by Complete(prompt) (0 = no column; Complete then generates 64).</summary>
    public int MaxNewTokens { get; init; }
    /// <summary>The LoRA adapter configuration.</summary>
    public required LoraConfig Lora { get; init; }
    /// <summary>True when every parameter was trained (the saved stage then holds full weights).</summary>
    public bool FullFineTuning { get; init; }

    /// <summary>The columns scoring reads and the kind of document they hold.</summary>
    internal DocumentColumns Columns => DocumentColumns.Of(TextColumnName, PromptColumnName, ResponseColumnName, MessagesColumnName);

    internal static ScoringSettings From(ChunkwiseLoraTrainer.Options o, Device device, ScalarType dtype) => new()
    {
        ModelPath = Path.GetFullPath(o.ModelPath), Device = device.ToString(), DType = TensorSettings.Name(dtype),
        TextColumnName = o.TextColumnName, PromptColumnName = o.PromptColumnName, ResponseColumnName = o.ResponseColumnName,
        MessagesColumnName = o.MessagesColumnName, AssistantOnlyLoss = o.AssistantOnlyLoss,
        ChunkSize = o.ChunkSize, MaxSequenceLength = o.MaxSequenceLength, MaxNewTokens = o.MaxNewTokens,
        Lora = o.Lora, FullFineTuning = o.FullFineTuning,
    };
}

/// <summary>Rows of the scoring columns (ML.NET custom mapping types).</summary>
internal sealed class ScoringOutput
{
    /// <summary>exp(mean negative log-likelihood) of the scored tokens; NaN for a row with nothing to score (an empty text or response, a conversation without an assistant turn).</summary>
    public float Perplexity;
    /// <summary>Mean negative log-likelihood per scored token (nats); NaN for a row with nothing to score.</summary>
    public float NegativeLogLikelihood;
    /// <summary>Tokens scored (predicted) in the row.</summary>
    public int ScoredTokens;
}

/// <summary>The generated continuation of a row's prompt.</summary>
internal sealed class CompletionOutput
{
    /// <summary>Generated text.</summary>
    public string Completion = "";
}

/// <summary>Input row types the custom mappings read; their column names are set per stage.</summary>
internal sealed class TextInput
{
    /// <summary>The document.</summary>
    public string Text = "";
}

/// <summary>Prompt + response input.</summary>
internal sealed class PromptResponseInput
{
    /// <summary>The prompt.</summary>
    public string Prompt = "";
    /// <summary>The response.</summary>
    public string Response = "";
}

/// <summary>Messages input: a conversation as JSON.</summary>
internal sealed class MessagesInput
{
    /// <summary>The conversation (<see cref="ConversationDocument.FromJson"/>).</summary>
    public string Messages = "";
}

/// <summary>Prompt-only input (for completions).</summary>
internal sealed class PromptInput
{
    /// <summary>The prompt.</summary>
    public string Prompt = "";
}

/// <summary>
/// The scoring half of the stage, as ML.NET custom mappings (lazy, cursor-driven): per-row perplexity by chunked
/// forward passes with bounded memory, and an optional Completion column.
/// </summary>
internal static class Scoring
{
    // Custom mappings are built on a private context: the transformer must work without the MLContext that trained it
    // (after SecoModel.Load, or in a chain saved and reloaded), and a mapping does not depend on its context's state.
    static readonly MLContext MappingContext = new(seed: 0);

    /// <summary>The schema the stage adds to <paramref name="input"/>.</summary>
    public static SchemaShape OutputShape(ChunkwiseLoraTrainer.Options options, SchemaShape input)
    {
        var settings = new ScoringSettings
        {
            ModelPath = options.ModelPath, Device = "cpu", DType = "float32", Lora = options.Lora,
            TextColumnName = options.TextColumnName, PromptColumnName = options.PromptColumnName,
            ResponseColumnName = options.ResponseColumnName, MessagesColumnName = options.MessagesColumnName,
            AssistantOnlyLoss = options.AssistantOnlyLoss, MaxNewTokens = options.MaxNewTokens,
        };
        return Estimator(settings, (_, _) => { }, (_, _) => { }).GetOutputSchema(input);
    }

    /// <summary>The custom-mapping estimator chain for a stage; the actions do the work.</summary>
    public static IEstimator<ITransformer> Estimator(ScoringSettings s, Action<Document, ScoringOutput> score, Action<string, CompletionOutput> complete)
    {
        var ml = MappingContext;
        var columns = s.Columns;
        IEstimator<ITransformer> estimator = columns.Kind switch
        {
            DocumentColumnKind.Messages => ml.Transforms.CustomMapping<MessagesInput, ScoringOutput>((i, o) => score(columns.Document([i.Messages], 0), o), null,
                Columns<MessagesInput>((nameof(MessagesInput.Messages), columns.Names[0]))),
            DocumentColumnKind.PromptResponse => ml.Transforms.CustomMapping<PromptResponseInput, ScoringOutput>((i, o) => score(columns.Document([i.Prompt, i.Response], 0), o), null,
                Columns<PromptResponseInput>((nameof(PromptResponseInput.Prompt), columns.Names[0]), (nameof(PromptResponseInput.Response), columns.Names[1]))),
            _ => ml.Transforms.CustomMapping<TextInput, ScoringOutput>((i, o) => score(columns.Document([i.Text], 0), o), null,
                Columns<TextInput>((nameof(TextInput.Text), columns.Names[0]))),
        };
        if (s.PromptColumnName is not null && s.MaxNewTokens > 0)
            estimator = estimator.Append(ml.Transforms.CustomMapping<PromptInput, CompletionOutput>((i, o) => complete(i.Prompt, o), null,
                Columns<PromptInput>((nameof(PromptInput.Prompt), s.PromptColumnName))));
        return estimator;
    }

    static SchemaDefinition Columns<T>(params (string Field, string Column)[] map)
    {
        var definition = SchemaDefinition.Create(typeof(T), SchemaDefinition.Direction.Read);
        foreach (var (field, column) in map) definition[field].ColumnName = column;
        return definition;
    }

    /// <summary>
    /// Greedy continuation of a prompt, stopping at the tokenizer's end-of-sequence tokens: the stage's MaxNewTokens
    /// tokens when set, else <see cref="GenerationOptions"/>' default (64, as <c>seco generate</c>).
    /// </summary>
    public static string Complete(CausalLM model, ModelTokenizer tokenizer, ScoringSettings s, string prompt, GenerationOptions? options = null)
    {
        var ids = tokenizer.Encode(prompt, addBos: true);
        if (ids.Count == 0) return "";
        // MaxNewTokens = 0 means "no Completion column" (generating for every row in Transform is costly, so the column
        // is opt-in); a direct call still deserves a continuation.
        var defaults = new GenerationOptions();
        options ??= defaults with
        {
            MaxNewTokens = s.MaxNewTokens > 0 ? s.MaxNewTokens : defaults.MaxNewTokens,
            StopTokens = tokenizer.EosIds, PrefillChunkSize = s.ChunkSize,
        };
        return tokenizer.Decode(TextGenerator.Generate(model, ids, options));
    }
}
