using Microsoft.ML.Seco.Chunkwise;
using Microsoft.ML.Seco.Chunkwise.Samplers;
using Microsoft.ML.Seco.Data;
using Microsoft.ML.Seco.Lora;
using Microsoft.ML.Seco.Model;
using Microsoft.ML.Seco.Training;

namespace Microsoft.ML.Seco;

public sealed partial class ChunkwiseLoraTrainer
{
    /// <summary>
    /// Everything the chunk-wise fine-tuning stage can be told. Field names follow Microsoft.ML.TorchSharp's trainers
    /// where they mean the same (BatchSize, MaxEpoch, LearningRate, WeightDecay, FinalLearningRateRatio,
    /// ValidationSet). It does not derive from TorchSharpBaseTrainer.Options: that class brings label, score and
    /// predicted-label columns that a language-model stage has no use for.
    /// </summary>
    public sealed class Options
    {
        // Each concern has one record that owns its defaults and its rules (ChunkwiseOptions, LoraConfig,
        // TrainingOptions); these flat fields are ML.NET's idiom for a stage's options and take their defaults from
        // the records, and Validate defers to the records' Validate, so a rule or a default is written once.
        static readonly ChunkwiseOptions ChunkwiseDefaults = new();
        static readonly LoraConfig LoraDefaults = new();
        static readonly TrainingOptions TrainingDefaults = new();

        // Model

        /// <summary>A Hugging Face model directory (config.json, safetensors, tokenizer). Required.</summary>
        public string ModelPath = "";
        /// <summary>
        /// "auto", "cpu", "cuda", "cuda:N". "auto" is the GPU of MLContext.GpuDeviceId when it is set (the CPU where no
        /// such device exists if MLContext.FallbackToCpu, else an error), otherwise CUDA when available, else the CPU.
        /// Default "auto".
        /// </summary>
        public string Device = "auto";
        /// <summary>"auto" (float32 on CPU, bfloat16 on CUDA), "float32", "bfloat16", "float16", "float64". Default "auto".</summary>
        public string DType = "auto";

        // Rotary position embedding

        /// <summary>
        /// The rotary scaling the run applies to the base model before training: Model keeps the base model's config.json
        /// (its rope_scaling or none; the run logs which), None removes any, Linear, Dynamic, Yarn and Llama3 replace it
        /// (with <see cref="RopeFactor"/>). The adapter and merged checkpoints record it, so that loading them later uses
        /// what was trained. Dynamic is exact only up to the base model's max_position_embeddings: a longer
        /// <see cref="MaxSequenceLength"/> is refused (docs/ENGINE.md). Default Model.
        /// </summary>
        public RopeScalingType RopeScaling = RopeScalingType.Model;
        /// <summary>The scaling factor, at least 1; required by Linear, Dynamic, Yarn and Llama3, not allowed with Model or None. Default null.</summary>
        public double? RopeFactor;
        /// <summary>
        /// Yarn and Llama3: the context length the base model was pretrained with, at least 1; null takes the base model's
        /// scaling's own when it has the same type, else its max_position_embeddings. Default null.
        /// </summary>
        public int? RopeOriginalMaxPositionEmbeddings;
        /// <summary>rope_theta (the rotary base), positive, replacing the base model's; null keeps it. Default null.</summary>
        public double? RopeTheta;

        // Data

        /// <summary>Column with whole documents; the loss covers every token. Default "Text". Ignored when prompt and response columns are set.</summary>
        public string TextColumnName = "Text";
        /// <summary>Column with prompts (no loss on their tokens), used with <see cref="ResponseColumnName"/>. Default null.</summary>
        public string? PromptColumnName;
        /// <summary>Column with responses (the loss covers only these tokens). Default null.</summary>
        public string? ResponseColumnName;
        /// <summary>
        /// Column with conversations, each a JSON string: Hugging Face's <c>messages</c> array of <c>{"role", "content"}</c>
        /// objects, or <c>{"messages", "tools"}</c> (what <see cref="Data.JsonlDocuments.LoadDataView"/> gives a file of
        /// <c>messages</c> lines). Rendered by the base model's chat template; the loss covers what
        /// <see cref="AssistantOnlyLoss"/> says. Takes the place of the text and prompt/response columns. Default null.
        /// </summary>
        public string? MessagesColumnName;
        /// <summary>
        /// Conversations (<see cref="MessagesColumnName"/>): the loss on the assistant's turns only, as TRL's SFTTrainer
        /// with <c>assistant_only_loss</c> (true), or on every token of the rendering (false). Default true.
        /// </summary>
        public bool AssistantOnlyLoss = true;
        /// <summary>Longest token sequence trained on, 2 to 1,048,576. Default <see cref="SecoDefaults.MaxSequenceLength"/>, 16384.</summary>
        public int MaxSequenceLength = SecoDefaults.MaxSequenceLength;
        /// <summary>What happens to longer documents: split into consecutive windows, or truncated. Default Split.</summary>
        public SequenceOverflow Overflow = SequenceOverflow.Split;

        // Chunk-wise optimization

        /// <summary>Tokens per chunk, at least 1. Default 128.</summary>
        public int ChunkSize = ChunkwiseDefaults.ChunkSize;
        /// <summary>
        /// Chunks backpropagated per micro-batch (SpaCO's t), at least 1; null or ≥ the chunk count k = exact SeCO
        /// (every chunk, factors 1). One selection is drawn per micro-batch and shared by all its sequences, k being the
        /// chunk count of the batch's padded length. Default null.
        /// </summary>
        public int? SampledChunks = ChunkwiseDefaults.SampledChunks;
        /// <summary>
        /// How SpaCO draws chunks: Bernoulli (exactly unbiased with LossAndCache), FixedBudget (the paper's: exactly t),
        /// Stratified (the authors' for prompt/response data: half the budget to chunks with response tokens; needs
        /// Compensation = None). Default Bernoulli.
        /// </summary>
        public ChunkSampler Sampler = ChunkwiseDefaults.Sampler;
        /// <summary>
        /// A sampler of your own (any <see cref="IChunkSampler"/>, e.g. one deriving from <see cref="ChunkSamplerBase"/>),
        /// run instead of <see cref="Sampler"/> when set, with the same per-step seeding, compensation and checks. Training
        /// only: the fitted model does not keep it (scoring and generation draw no chunks). Default null.
        /// </summary>
        public IChunkSampler? CustomSampler;
        /// <summary>
        /// Which of Stage 2's seeds the factor k/t multiplies: LossAndCache (unbiased with Bernoulli), LossOnly (the
        /// authors' released code), CacheOnly (the paper's Algorithm 2) or None. Default LossAndCache.
        /// </summary>
        public Compensation Compensation = ChunkwiseDefaults.Compensation;
        /// <summary>Cap on the compensation factor in every mode, at least 1 (the paper recommends 2), or null. Default null.</summary>
        public double? MaxCompensation = ChunkwiseDefaults.MaxCompensation;
        /// <summary>
        /// False trains each chunk on a detached prefix: no gradient flows from a chunk into earlier chunks' keys/values.
        /// An ablation (it biases the gradient; docs/QUALITY.md measures what it costs), not a way to train. Default true.
        /// </summary>
        public bool CrossChunkGradients = ChunkwiseDefaults.CrossChunkGradients;

        /// <summary>
        /// Rebuild a chunk's graph one decoder layer at a time in the backward (activation checkpointing inside the
        /// chunk): the chunk holds one layer's activations instead of every layer's, for one more forward of each
        /// backpropagated chunk; gradients unchanged. What lets large chunks fit (docs/BENCHMARKS.md, Memory model, measures
        /// what it saves and costs). Default false.
        /// </summary>
        public bool RecomputeLayers = ChunkwiseDefaults.RecomputeLayers;

        /// <summary>
        /// Device memory the run may use in all, weights included: a size such as "24GiB", "16GB", "512MiB" or a byte count.
        /// Before the first step the stage compares the predicted peak of the longest batch (<see cref="Training.StepMemory"/>)
        /// with it and stops with <see cref="Training.InsufficientDeviceMemoryException"/> naming what would fit. Default
        /// null: what the device has free once the model is loaded (CUDA's free memory; MemAvailable on the CPU).
        /// </summary>
        public string? MemoryBudget;

        /// <summary>Earlier name of <see cref="Compensation"/>: true = LossAndCache, false = None.</summary>
        [Obsolete("Use Compensation: true is Compensation.LossAndCache, false is Compensation.None.")]
        public bool Compensate
        {
            get => Compensation != Compensation.None;
            set => Compensation = value ? Compensation.LossAndCache : Compensation.None;
        }

        // LoRA

        /// <summary>LoRA rank r, at least 1. Default 8.</summary>
        public int LoraRank = LoraDefaults.Rank;
        /// <summary>LoRA alpha (the update is scaled by alpha / r), positive. Default 16.</summary>
        public double LoraAlpha = LoraDefaults.Alpha;
        /// <summary>LoRA dropout in [0, 1). Default 0.</summary>
        public double LoraDropout = LoraDefaults.Dropout;
        /// <summary>Projections that get adapters. Default q_proj, k_proj, v_proj, o_proj.</summary>
        public string[] LoraTargetModules = LoraDefaults.TargetModules.ToArray();
        /// <summary>Train every parameter instead of LoRA adapters. Default false.</summary>
        public bool FullFineTuning;

        // Optimisation

        /// <summary>Sequences per micro-batch, at least 1. Default 1.</summary>
        public int BatchSize = 1;
        /// <summary>Passes over the data, at least 1. Default 1.</summary>
        public int MaxEpoch = TrainingDefaults.MaxEpoch;
        /// <summary>Stop after this many optimizer steps, or null to run <see cref="MaxEpoch"/> epochs. Default null.</summary>
        public int? MaxSteps = TrainingDefaults.MaxSteps;
        /// <summary>Peak AdamW learning rate, positive. Default 1e-4.</summary>
        public double LearningRate = TrainingDefaults.LearningRate;
        /// <summary>Final learning rate as a fraction of the peak (cosine or linear decay), in [0, 1]. Default 0.</summary>
        public double FinalLearningRateRatio = TrainingDefaults.MinLearningRateRatio;
        /// <summary>Warm-up optimizer steps, at least 0. Default 0. Set this or <see cref="WarmupRatio"/>, not both.</summary>
        public int WarmupSteps = TrainingDefaults.WarmupSteps;
        /// <summary>
        /// Warm-up as a fraction in [0, 1] of the run's optimizer steps, rounded up (the authors: 0.01), or null.
        /// Needs the total to be known (MaxSteps, or data whose size is known up front). Default null.
        /// </summary>
        public double? WarmupRatio = TrainingDefaults.WarmupRatio;
        /// <summary>Learning-rate schedule after warm-up. Default Cosine.</summary>
        public LearningRateSchedule Schedule = TrainingDefaults.Schedule;
        /// <summary>AdamW weight decay, at least 0, applied to matrices (every LoRA weight) but not to biases and norms. Default 0.</summary>
        public double WeightDecay = TrainingDefaults.WeightDecay;
        /// <summary>AdamW's first-moment decay β1, in [0, 1). Default 0.9.</summary>
        public double Beta1 = TrainingDefaults.Beta1;
        /// <summary>AdamW's second-moment decay β2, in [0, 1) (the authors: 0.95). Default 0.999.</summary>
        public double Beta2 = TrainingDefaults.Beta2;
        /// <summary>AdamW's ε, at least 0. Default 1e-8.</summary>
        public double Epsilon = TrainingDefaults.Epsilon;
        /// <summary>Gradient-norm clipping threshold, positive, or null for no clipping. Default 1.</summary>
        public double? MaxGradNorm = TrainingDefaults.MaxGradNorm;
        /// <summary>Micro-batches per optimizer step, at least 1. Default 1.</summary>
        public int GradientAccumulationSteps = TrainingDefaults.GradientAccumulationSteps;
        /// <summary>
        /// What a NaN or infinite loss or gradient norm does: Stop (the run fails naming the step and the input rows of
        /// its batches) or SkipBatch (that optimizer step is dropped, counted and logged). No update is ever applied from
        /// non-finite values. Default Stop.
        /// </summary>
        public NonFiniteLossAction NonFiniteLoss = TrainingDefaults.NonFiniteLoss;
        /// <summary>Held-out documents (same columns); loss and perplexity on them are reported after each epoch. Default null.</summary>
        public IDataView? ValidationSet;
        /// <summary>Seed for LoRA initialisation, chunk sampling and dropout; null takes one from the MLContext's seed. Default null.</summary>
        public int? Seed;

        // Scoring

        /// <summary>
        /// Tokens generated per row into a Completion column (string) when <see cref="PromptColumnName"/> is set, and by
        /// <see cref="ChunkwiseLoraTransformer.Complete"/>. Default 0: no Completion column (generation for every row
        /// that Transform reads is costly, so the column is opt-in), and Complete generates 64 tokens.
        /// </summary>
        public int MaxNewTokens;

        // Long runs

        /// <summary>Folder for resumable training state; null = none. Default null.</summary>
        public string? CheckpointDirectory;
        /// <summary>Optimizer steps between saved states (with <see cref="CheckpointDirectory"/>), at least 1. Default 100.</summary>
        public int CheckpointEverySteps = 100;
        /// <summary>Continue from the state in <see cref="CheckpointDirectory"/> when there is one. Default true.</summary>
        public bool Resume = true;
        /// <summary>Receives a report after every optimizer step (in addition to MLContext.Log). Default null.</summary>
        public IProgress<TrainingProgress>? Progress;
        /// <summary>Stops training at the next step boundary; the stage then holds what was learnt so far. Default none.</summary>
        public CancellationToken CancellationToken;

        /// <summary>The columns training reads and the kind of document they hold.</summary>
        internal DocumentColumns Columns => DocumentColumns.Of(TextColumnName, PromptColumnName, ResponseColumnName, MessagesColumnName);

        /// <summary>
        /// Throws an <see cref="OptionException"/> naming the first option out of range, in this class's names (a rule
        /// that lives in <see cref="LoraConfig"/> or <see cref="TrainingOptions"/> under another name is reported under
        /// the field here that stands for it).
        /// </summary>
        public void Validate()
        {
            static void Require(bool condition, string option, object? value, string rule)
            {
                if (!condition) throw new OptionException(option, value, rule);
            }
            if (string.IsNullOrWhiteSpace(ModelPath)) throw new OptionException(nameof(ModelPath), null, "{ModelPath} is required: a Hugging Face model directory");
            if (ResponseColumnName is not null && PromptColumnName is null)
                throw new OptionException(nameof(PromptColumnName), null, "{ResponseColumnName} needs {PromptColumnName}: the loss covers responses given their prompts");
            if (MessagesColumnName is not null && PromptColumnName is not null)
                throw new OptionException(nameof(MessagesColumnName), null, "{MessagesColumnName} and {PromptColumnName} are two kinds of document: set one");
            Require(MaxSequenceLength is >= SecoDefaults.MinSequenceLengthLimit and <= SecoDefaults.MaxSequenceLengthLimit, nameof(MaxSequenceLength), MaxSequenceLength, "{MaxSequenceLength} must be between 2 and 1,048,576");
            Require(BatchSize >= 1, nameof(BatchSize), BatchSize, "{BatchSize} must be at least 1");
            Require(MaxNewTokens >= 0, nameof(MaxNewTokens), MaxNewTokens, "{MaxNewTokens} must be at least 0");
            Require(CheckpointEverySteps >= 1, nameof(CheckpointEverySteps), CheckpointEverySteps, "{CheckpointEverySteps} must be at least 1");
            _ = MemoryBudgetBytes;
            ValidateRope();
            // Every other rule lives with its concern, once.
            try
            {
                Chunkwise(seed: 0).Validate();
                Lora.Validate();
                Training(seed: 0).Validate();
            }
            catch (OptionException e) { throw e.WithOptionNames(OptionName); }
        }

        void ValidateRope()
        {
            if (!Enum.IsDefined(RopeScaling))
                throw new OptionException(nameof(RopeScaling), (int)RopeScaling, "{RopeScaling} {value} is not a RopeScalingType");
            if (RopeFactor is double factor && !(factor >= 1 && double.IsFinite(factor)))
                throw new OptionException(nameof(RopeFactor), factor, "{RopeFactor} must be at least 1");
            if (RopeOriginalMaxPositionEmbeddings is int original && original < 1)
                throw new OptionException(nameof(RopeOriginalMaxPositionEmbeddings), original, "{RopeOriginalMaxPositionEmbeddings} must be at least 1");
            if (RopeTheta is double theta && !(theta > 0 && double.IsFinite(theta)))
                throw new OptionException(nameof(RopeTheta), theta, "{RopeTheta} must be positive");
            string type = RopeTypeName;
            bool replaces = RopeScaling is not (RopeScalingType.Model or RopeScalingType.None);
            if (!replaces && RopeFactor is not null)
                throw new OptionException(nameof(RopeFactor), null, $"{{RopeFactor}} is set but {{RopeScaling}} is {type}: name the scaling it goes with (linear, dynamic, yarn or llama3)");
            if (replaces && RopeFactor is null)
                throw new OptionException(nameof(RopeFactor), null, $"{{RopeScaling}} {type} needs {{RopeFactor}}, the scaling factor (e.g. 4)");
            if (RopeOriginalMaxPositionEmbeddings is not null && RopeScaling is not (RopeScalingType.Yarn or RopeScalingType.Llama3))
                throw new OptionException(nameof(RopeOriginalMaxPositionEmbeddings), null, $"{{RopeOriginalMaxPositionEmbeddings}} applies to {{RopeScaling}} yarn and llama3 only, not {type}");
        }

        string RopeTypeName => RopeScaling.ToString().ToLowerInvariant();

        /// <summary>
        /// The base model's config with this run's rotary settings applied (<see cref="RopeScaling"/>, <see cref="RopeFactor"/>,
        /// <see cref="RopeOriginalMaxPositionEmbeddings"/>, <see cref="RopeTheta"/>), and a line saying what the run does with
        /// the base model's scaling, or null when there is nothing to say. Throws an <see cref="OptionException"/> naming the
        /// option when the result is not a working model, or dynamic scaling with a <see cref="MaxSequenceLength"/> beyond
        /// max_position_embeddings.
        /// </summary>
        public (ModelConfig Config, string? Note) ApplyRope(ModelConfig baseConfig) => ApplyRope(baseConfig, name => name);

        /// <summary>
        /// As <see cref="ApplyRope(ModelConfig)"/>, the line naming each option as <paramref name="optionName"/> spells it
        /// (a front end's names for this class's fields, e.g. command-line flags). An error names them through
        /// <see cref="OptionException.Describe"/>.
        /// </summary>
        public (ModelConfig Config, string? Note) ApplyRope(ModelConfig baseConfig, Func<string, string> optionName)
        {
            ArgumentNullException.ThrowIfNull(baseConfig);
            ArgumentNullException.ThrowIfNull(optionName);
            ValidateRope();
            var current = baseConfig.RopeScaling;
            string Describe(Model.RopeScaling? s) => s is null ? "none" : s.ToString();
            string scalingOption = optionName(nameof(RopeScaling));
            Model.RopeScaling? scaling;
            string? note;
            switch (RopeScaling)
            {
                case RopeScalingType.Model:
                    scaling = current;
                    note = current is null ? null : $"{scalingOption} model: the base model's rope_scaling is kept ({Describe(current)}).";
                    break;
                case RopeScalingType.None:
                    scaling = null;
                    note = current is null ? null : $"{scalingOption} none: the base model's rope_scaling ({Describe(current)}) is removed.";
                    break;
                default:
                    string type = RopeTypeName;
                    double factor = RopeFactor!.Value;
                    // A base scaling of the same type lends the fields the options do not set (llama3's band factors,
                    // yarn's betas, mscales and original length).
                    var same = current?.Type == type ? current : null;
                    scaling = type switch
                    {
                        "linear" or "dynamic" => new Model.RopeScaling { Type = type, Factor = factor },
                        _ => (same ?? new Model.RopeScaling { Type = type }) with
                        {
                            Factor = factor,
                            OriginalMaxPositionEmbeddings = RopeOriginalMaxPositionEmbeddings ?? same?.OriginalMaxPositionEmbeddings ?? baseConfig.MaxPositionEmbeddings,
                        },
                    };
                    note = $"{scalingOption} {type}: rope_scaling {Describe(scaling)}{(current is null ? "" : $" replaces the base model's ({Describe(current)})")}.";
                    break;
            }
            if (RopeTheta is double theta && theta != baseConfig.RopeTheta)
                note = $"{(note is null ? "" : note + " ")}{optionName(nameof(RopeTheta))}: rope_theta {theta.ToString(System.Globalization.CultureInfo.InvariantCulture)} replaces the base model's {baseConfig.RopeTheta.ToString(System.Globalization.CultureInfo.InvariantCulture)}.";
            var config = baseConfig with { RopeScaling = scaling, RopeTheta = RopeTheta ?? baseConfig.RopeTheta };
            try { config.Validate("the rotary settings"); }
            catch (InvalidDataException e) { throw new OptionException(nameof(RopeScaling), null, "{RopeScaling}: " + OptionException.Escape(e.Message.TrimEnd('.')), e); }
            if (RotaryEmbedding.PositionLimit(config) is long limit && MaxSequenceLength > limit)
                throw new OptionException(nameof(MaxSequenceLength), MaxSequenceLength,
                    $"{{MaxSequenceLength}} ({{value}}) must be at most the base model's max_position_embeddings ({limit}) with {{RopeScaling}} dynamic{(RopeScaling == RopeScalingType.Model ? " (from the base model's config.json)" : "")}: " +
                    "beyond that length transformers derives the frequencies from the length of the whole forward, which chunk-wise training cannot reproduce. Lower {MaxSequenceLength}, or use {RopeScaling} yarn or linear");
            return (config, note);
        }

        // The records name their own fields; these are the fields of Options they stand for.
        static readonly Dictionary<string, string> RecordNames = new()
        {
            [nameof(LoraConfig.Rank)] = nameof(LoraRank),
            [nameof(LoraConfig.Alpha)] = nameof(LoraAlpha),
            [nameof(LoraConfig.Dropout)] = nameof(LoraDropout),
            [nameof(LoraConfig.TargetModules)] = nameof(LoraTargetModules),
            [nameof(TrainingOptions.MinLearningRateRatio)] = nameof(FinalLearningRateRatio),
        };

        /// <summary>The name of the field of <see cref="Options"/> that a record's field stands for.</summary>
        static string OptionName(string recordName) => RecordNames.GetValueOrDefault(recordName) ?? recordName;

        /// <summary><see cref="MemoryBudget"/> in bytes, or null.</summary>
        internal long? MemoryBudgetBytes => MemoryBudget is null ? null : ByteSize.TryParse(MemoryBudget, out long bytes) ? bytes
            : throw new OptionException(nameof(MemoryBudget), MemoryBudget, "{MemoryBudget} '{value}' is not a size; use e.g. " + OptionException.Escape(ByteSize.Examples));

        internal LoraConfig Lora => new() { Rank = LoraRank, Alpha = LoraAlpha, Dropout = LoraDropout, TargetModules = LoraTargetModules };

        internal ChunkwiseOptions Chunkwise(int seed) => new()
        {
            ChunkSize = ChunkSize, SampledChunks = SampledChunks, Sampler = Sampler, CustomSampler = CustomSampler,
            Compensation = Compensation, MaxCompensation = MaxCompensation, Seed = seed,
            CrossChunkGradients = CrossChunkGradients, RecomputeLayers = RecomputeLayers,
        };

        internal TrainingOptions Training(int seed) => new()
        {
            LearningRate = LearningRate, WeightDecay = WeightDecay, Beta1 = Beta1, Beta2 = Beta2, Epsilon = Epsilon,
            WarmupSteps = WarmupSteps, WarmupRatio = WarmupRatio, Schedule = Schedule,
            MinLearningRateRatio = FinalLearningRateRatio, MaxGradNorm = MaxGradNorm,
            GradientAccumulationSteps = GradientAccumulationSteps, MaxEpoch = MaxEpoch, MaxSteps = MaxSteps, Seed = seed,
            NonFiniteLoss = NonFiniteLoss,
        };
    }
}
