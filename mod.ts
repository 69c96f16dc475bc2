/**
 * Locus's public API: a WebGPU transformer engine (GPT-2, GPT-J, NeoX, Llama, Mistral, Qwen2, Gemma) for
 * studying where language models store facts (causal tracing, attribution, layer selection) and how to
 * edit them (ROME, R-ROME, MEMIT, EMMET, FT-L). The README's "Library guide" shows the pieces together;
 * the commands in experiments/commands/ are thin programs over exactly these exports.
 *
 * ```ts
 * import { datasets, getGpu, loadTokenizer, Model, predictNext } from "./mod.ts";
 * const gpu = await getGpu();
 * const model = await Model.load(gpu, "weights/locus-kb");
 * const tok = await loadTokenizer("weights/locus-kb");
 * const { cases } = await datasets.loadDataset("weights/locus-kb/known_facts.json");
 * const top = await predictNext(model, tok.encode(cases[0].prompt), 3, tok);
 * console.log(top.map((p) => `${p.token} ${p.prob.toFixed(3)}`).join(", "));
 * ```
 *
 * @module
 */

/** GPU runtime: the adapter and device with its real limits, tensors, kernels' pipelines and uniforms. */
export {
  type AdapterSummary,
  cdiv,
  type Dtype,
  getGpu,
  Gpu,
  type KernelParams,
  type MirrorLayout,
  NoAdapterError,
  Tensor,
  type TensorWindow,
  type TextureChunk,
  Uniforms,
  uniforms,
} from "./engine/gpu.ts";
/** The kernel variants chosen for an adapter (register blocks, texture mirrors, f16, what attention keeps). */
export {
  type AttentionKernels,
  type AttentionSaved,
  type KernelChoice,
  type MatmulTiles,
  type RowKernels,
  type SoftwareAdapter,
} from "./engine/kernel_choice.ts";
/** Model configuration: every supported family's block as a validated description. */
export {
  type Activation,
  ConfigError,
  configJson,
  FAMILIES,
  type Family,
  GPT2_SHAPES,
  type GPT2Config,
  gpt2Config,
  type ModelConfig,
  parseConfig,
  type RotaryConfig,
} from "./engine/config.ts";
/** Checkpoint tensor names per family, and the edited weight (the MLP's output projection). */
export { checkpointSource, editTargetName, type TensorSource } from "./engine/families.ts";
/** Weights, the batched forward with intervention hooks, and forwardWithCache (every hook site at once). */
export {
  type Batch,
  type EmbeddingChunk,
  type ForwardOptions,
  type ForwardResult,
  type GroupedParams,
  type Hook,
  type LayerActivations,
  makeBatch,
  Model,
  ModelLoadError,
  parameterShapes,
  randomWeights,
  type ResumePoint,
  type Site,
  type Suffix,
} from "./engine/model.ts";
/** Edits of a layer's MLP output projection (low-rank, or dense plus a bias change), evaluated per batch
 *  row in the forward without writing the weights. */
export { type VirtualEdit } from "./engine/virtual_edits.ts";
/** Forward kernels as TypeScript functions that record WGSL dispatches (shapes in each one's comment). */
export * as ops from "./engine/ops.ts";
/** One row update of a patch (Hook.patch): dst row = keep * dst row + take * src row. */
export { type RowEntry } from "./engine/ops.ts";
/** Backward kernels, the same way. */
export * as backwardOps from "./engine/backward_ops.ts";
/** The hand-written backward pass: gradients of chosen parameters, hook sources and site states. */
export {
  allocateGradients,
  backward,
  type BackwardRequest,
  type BackwardResult,
  type FactoredGradient,
  type Gradients,
  releaseFactors,
} from "./engine/autograd.ts";
/** Adam/AdamW with clipping on the GPU, and the L-infinity projection of constrained fine-tuning. */
export { Adam, type AdamParam, type AdamState, projectLinf, zeroGrads } from "./engine/optimizer.ts";
/** Validated safetensors reading and writing (single files and sharded checkpoints). */
export {
  Checkpoint,
  type Dtype as SafetensorsDtype,
  type HalfTensor,
  openCheckpoint,
  openSafetensors,
  type ReadOptions,
  SafetensorsError,
  SafetensorsFile,
  type SafetensorsHeader,
  type TensorEntry,
  type TensorInfo,
  type TensorSource as SafetensorsSource,
  writeSafetensors,
} from "./engine/safetensors.ts";
/** Tokenizers (GPT-2 BPE, word level, any Hugging Face tokenizer.json), subject spans and target tokens. */
export {
  BpeTokenizer,
  HfTokenizer,
  loadTokenizer,
  PRE_TOKENIZERS,
  type PreTokenizerName,
  subjectTokenRange,
  targetIds,
  type Tokenizer,
  tokenizerFromJson,
  WordLevelTokenizer,
} from "./engine/tokenizer.ts";
/** The embedded model's folder, greedy generation and the next-token distribution. */
export { DEFAULT_MODEL_DIR, generateGreedy, type Prediction, predictNext } from "./engine/cli.ts";
/** The key statistics C = E[k k^T] of an MLP's keys that ROME and MEMIT need: shipped, cached or computed. */
export {
  type CachedStatsOptions,
  type Checkpoint as StatsCheckpoint,
  KeyStats,
  keyStats,
  type StatsOptions,
} from "./experiments/editing/stats.ts";
/** A text corpus (name, content hash, texts in a fixed order): the key statistics' sample. */
export { type Corpus } from "./experiments/data/corpus.ts";

/** The embedded model's invented knowledge base (subjects, relations, facts, CounterFact-style records). */
export * as knowledgeBase from "./experiments/knowledge/knowledge_base.ts";
/** Causal tracing and representation zeroing (Meng et al. 2022; Hase et al. 2023), their averages. */
export * as tracing from "./experiments/localization/tracing.ts";
/** Integrated-gradients neuron attribution and Layer Gradient Analysis. */
export * as attribution from "./experiments/localization/attribution.ts";
/** Strategies that choose the layer(s) to edit: tracing, attribution, LGA, fixed, brute force. */
export * as layerSelection from "./experiments/localization/layer_selection.ts";
/** The editing methods behind one interface: configuration, key-statistics layers, computing edits. */
export * as editing from "./experiments/editing/methods.ts";
/** Edits as weight deltas: apply, undo (bit-exact), combine, save and load. */
export * as edits from "./experiments/editing/edit.ts";
/** FT-L (constrained fine-tuning): one edit, or many trained together in one batch (computeFtBatch). */
export * as fineTuning from "./experiments/editing/ft.ts";
/** MEMIT and EMMET: one batch edit, or many independent ones solved together (computeBatchEdits). */
export * as memit from "./experiments/editing/memit.ts";
/** Keys, values and states at the fact token: prompt instances, context templates, readFactStates. */
export * as factKeys from "./experiments/editing/keys.ts";
/** Hase et al.'s five editing problems and their per-case probabilities and scores. */
export * as editingProblems from "./experiments/editing/problems.ts";
/** Fact-editing datasets (CounterFact, known_1000, zsRE, KnowEdit), validated record by record. */
export * as datasets from "./experiments/data/datasets.ts";
/** Edit metrics: Hase et al.'s scores, CounterFact's and EasyEdit's, fluency, and the GPU scorers. */
export * as metrics from "./experiments/evaluation/metrics.ts";
/** The unedited model's residuals kept per scored sequence, so that passes under virtual edits start at
 *  each edit's lowest block (VirtualEditSet's `residuals`). */
export * as residuals from "./experiments/evaluation/residuals.ts";
/** Statistics of the study: bootstrap intervals, regressions, Tukey's fences. */
export * as stats from "./experiments/study/stats.ts";
/** The sweep's resumable SQLite results store. */
export * as store from "./experiments/study/store.ts";
/** Hase et al.'s analyses of a sweep's results. */
export * as analysis from "./experiments/study/analysis.ts";
