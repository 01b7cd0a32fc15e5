using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Data;
using Microsoft.ML.Seco.Checkpoints;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Inference;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Tokenization;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco;

/// <summary>
/// The fitted stage: the base model with its trained adapter. <see cref="Transform"/> adds Perplexity,
/// NegativeLogLikelihood and ScoredTokens columns (and Completion when a prompt column and MaxNewTokens are set),
/// computed lazily as ML.NET cursors read rows. Dispose it to release the model's native memory.
/// </summary>
public sealed class ChunkwiseLoraTransformer : ITransformer, IDisposable
{
    // ML.NET may read rows from several threads, and a chat client streams replies across awaits: the model's forward
    // pass is not re-entrant, so every use of the model takes this gate (a semaphore, which an async caller can hold).
    readonly SemaphoreSlim _gate = new(1, 1);
    bool _disposed;

    internal ChunkwiseLoraTransformer(CausalLM model, DocumentEncoder encoder, ScoringSettings settings, TrainingSummary? summary)
    {
        Model = model;
        Encoder = encoder;
        Settings = settings;
        TrainingSummary = summary;
    }

    /// <summary>A stage whose encoder is built from its settings (the chat template of the base model for a messages column).</summary>
    /// <exception cref="InvalidDataException">The settings name a messages column and the base model has no chat template.</exception>
    internal ChunkwiseLoraTransformer(CausalLM model, ModelTokenizer tokenizer, ScoringSettings settings, TrainingSummary? summary)
        : this(model, settings.Columns.Encoder(settings.ModelPath, tokenizer, settings.AssistantOnlyLoss), settings, summary)
    {
    }

    /// <summary>The fine-tuned model (base weights + adapters).</summary>
    public CausalLM Model { get; }
    /// <summary>The model's tokenizer.</summary>
    public ModelTokenizer Tokenizer => Encoder.Tokenizer;
    /// <summary>
    /// How the stage turns a document into token ids and the tokens it scores: the tokenizer, and for a messages column
    /// the base model's chat template and <see cref="ScoringSettings.AssistantOnlyLoss"/>. Training used the same.
    /// </summary>
    public DocumentEncoder Encoder { get; }
    /// <summary>Scoring and persistence settings.</summary>
    public ScoringSettings Settings { get; }
    /// <summary>How training went; null for a stage loaded from a file.</summary>
    public TrainingSummary? TrainingSummary { get; }

    /// <summary>True: the stage maps row by row, so ML.NET's PredictionEngine can score single documents.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the scoring columns.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        CheckInput(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        builder.AddColumn(nameof(ScoringOutput.Perplexity), NumberDataViewType.Single);
        builder.AddColumn(nameof(ScoringOutput.NegativeLogLikelihood), NumberDataViewType.Single);
        builder.AddColumn(nameof(ScoringOutput.ScoredTokens), NumberDataViewType.Int32);
        if (Settings.PromptColumnName is not null && Settings.MaxNewTokens > 0)
            builder.AddColumn(nameof(CompletionOutput.Completion), TextDataViewType.Instance);
        return builder.ToSchema();
    }

    /// <summary>
    /// The row-to-row mapper behind <c>mlContext.Model.CreatePredictionEngine</c>: the same scoring columns as
    /// <see cref="Transform"/>, computed for one row at a time.
    /// </summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckInput(inputSchema);
        return Mappings(new SchemaOnlyDataView(inputSchema)).GetRowToRowMapper(inputSchema);
    }

    /// <summary>Adds the scoring columns; rows are scored when a cursor reads them.</summary>
    public IDataView Transform(IDataView input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckInput(input.Schema);
        return Mappings(input).Transform(input);
    }

    // The scoring columns as ML.NET custom mappings; fitting them reads only the schema.
    ITransformer Mappings(IDataView input) =>
        Scoring.Estimator(Settings, Score, (prompt, output) => output.Completion = Complete(prompt)).Fit(input);

    /// <summary>Perplexity of one document (exp of the mean token negative log-likelihood).</summary>
    public double Perplexity(string text) => Score(new TextDocument(text)).Perplexity;

    /// <summary>
    /// Scores one document as <see cref="Transform"/> does (the text; the response given the prompt; a conversation's
    /// trained tokens, the assistant's turns unless <see cref="ScoringSettings.AssistantOnlyLoss"/> is false): summed
    /// and mean negative log-likelihood, perplexity and the scored-token count. A document with nothing to score (an
    /// empty text or response, a conversation without an assistant turn with text) scores 0 tokens with NaN mean NLL
    /// and perplexity, as its row in <see cref="Transform"/> does.
    /// </summary>
    /// <exception cref="InvalidDataException">A conversation the chat template cannot render; the message names the turn.</exception>
    public DocumentScore Score(Document document)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Locked(() => Evaluation.ScoreDocument(Model, Encoder, document, Settings.ChunkSize, Settings.MaxSequenceLength));
    }

    /// <summary>
    /// Continues a prompt: greedy, stopping at the tokenizer's end-of-sequence tokens, at most
    /// <see cref="ScoringSettings.MaxNewTokens"/> new tokens, or 64 when that is 0 (the default); <paramref name="options"/>
    /// overrides all of it. Returns only the generated text.
    /// </summary>
    public string Complete(string prompt, GenerationOptions? options = null)
    {
        return Locked(() => Scoring.Complete(Model, Tokenizer, Settings, prompt, options));
    }

    /// <summary>Writes the adapter in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors).</summary>
    public void SaveAdapter(string directory)
    {
        if (Settings.FullFineTuning) throw new InvalidOperationException("This stage was fully fine-tuned: save it with SaveMerged, there is no adapter.");
        Locked(() => PeftAdapter.Save(Model, directory, Settings.ModelPath));
    }

    /// <summary>Writes a plain Hugging Face checkpoint with the adapters merged into the weights, plus the tokenizer files.</summary>
    public void SaveMerged(string directory)
    {
        Locked(() => LoraAdapters.WithMerged(Model, () => ModelDirectory.Save(Model, directory)));
        foreach (var file in TokenizerFiles.Names)
        {
            string source = Path.Combine(Settings.ModelPath, file);
            if (File.Exists(source)) File.Copy(source, Path.Combine(directory, file), overwrite: true);
        }
    }

    /// <summary>
    /// A Microsoft.Extensions.AI chat client over the fine-tuned model (see <see cref="SecoChatClient"/>). The client
    /// shares the stage's model and its lock (replies and scoring take turns); disposing the client leaves the stage
    /// alone, and the client must not be used after the stage is disposed.
    /// </summary>
    /// <param name="renderPrompt">
    /// Renders Hugging Face chat messages to the prompt text with the generation prompt (a chat template's
    /// <c>Render(messages, addGenerationPrompt: true)</c>).
    /// </param>
    /// <param name="options">
    /// Decoding defaults; null: <see cref="SecoChatClientOptions.FromGenerationConfig"/> of the base model directory,
    /// prefilling in blocks of the stage's chunk size. A null model id becomes the base model directory's name.
    /// </param>
    public IChatClient AsIChatClient(Func<JsonArray, string> renderPrompt, SecoChatClientOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(renderPrompt);
        options ??= SecoChatClientOptions.FromGenerationConfig(Settings.ModelPath) with { PrefillChunkSize = Settings.ChunkSize };
        return new SecoChatClient(Model, Tokenizer, renderPrompt, SecoChatClient.WithModelId(options, Settings.ModelPath), _gate, ownsModel: false);
    }

    /// <summary>
    /// A Microsoft.Extensions.AI chat client over the fine-tuned model that renders conversations with the base model's
    /// own chat template (<see cref="Chat.ChatTemplate.FromModelDirectory"/> of <see cref="ScoringSettings.ModelPath"/>,
    /// with the generation prompt), the template a messages column was trained with. Otherwise as
    /// <see cref="AsIChatClient(Func{JsonArray, string}, SecoChatClientOptions?)"/>: replies stop at the tokenizer's
    /// end-of-sequence ids, which include an end-of-turn token such as <c>&lt;|im_end|&gt;</c> that the model's
    /// generation_config.json or tokenizer_config.json lists as <c>eos_token_id</c> / <c>eos_token</c>. Unlike a
    /// renderer of messages only, the template is given <see cref="ChatOptions.Tools"/>, so that tools can be called
    /// (see <see cref="SecoChatClient"/>).
    /// </summary>
    /// <param name="options">Decoding defaults; null: generation_config.json's, prefilling in blocks of the stage's chunk size.</param>
    /// <exception cref="InvalidDataException">The base model directory has no chat template: pass a renderer instead.</exception>
    public IChatClient AsIChatClient(SecoChatClientOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var template = Encoder.ChatTemplate ?? SecoChatClient.TemplateOf(Settings.ModelPath, "AsIChatClient(render)");
        options ??= SecoChatClientOptions.FromGenerationConfig(Settings.ModelPath) with { PrefillChunkSize = Settings.ChunkSize };
        return new SecoChatClient(Model, Tokenizer, template, SecoChatClient.WithModelId(options, Settings.ModelPath), _gate, ownsModel: false);
    }

    void Locked(Action action)
    {
        _gate.Wait();
        try { action(); }
        finally { _gate.Release(); }
    }

    T Locked<T>(Func<T> function)
    {
        _gate.Wait();
        try { return function(); }
        finally { _gate.Release(); }
    }

    /// <summary>Saves this stage to one file (see <see cref="SecoModel"/>).</summary>
    public void Save(MLContext mlContext, string path) => SecoModel.Save(mlContext, this, null, path);

    void ICanSaveModel.Save(ModelSaveContext ctx) =>
        throw new NotSupportedException(
            "ChunkwiseLoraTransformer cannot be written by MLContext.Model.Save: ML.NET keeps the API for saving custom " +
            "transformers internal. Use SecoModel.Save(mlContext, model, inputSchema, path) and SecoModel.Load(mlContext, path): " +
            "they save a whole pipeline, ML.NET stages included, as one file. Any file Model.Save created is incomplete; delete it.");

    void Score(Document row, ScoringOutput output)
    {
        var score = Score(row);
        output.ScoredTokens = (int)score.Tokens;
        output.NegativeLogLikelihood = (float)score.MeanNll;
        output.Perplexity = (float)score.Perplexity;
    }

    void CheckInput(DataViewSchema schema) => Settings.Columns.Check(schema);

    /// <summary>Releases the model's native memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Model.Dispose();
    }
}
