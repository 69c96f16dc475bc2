// Locus public API: a WebGPU transformer engine (GPT-2, GPT-J, NeoX, Llama, Mistral, Qwen2, Gemma) for
// studying where language models store facts and
// how to edit them. Import from here; the experiments/ folder builds on exactly these pieces.

// GPU runtime and tensors
export { cdiv, getGpu, Gpu, NoAdapterError, Tensor, uniforms } from "./engine/gpu.ts";
// Model configuration, weights, forward pass with intervention hooks
export {
  ConfigError,
  configJson,
  FAMILIES,
  type Family,
  GPT2_SHAPES,
  type GPT2Config,
  gpt2Config,
  type ModelConfig,
  parseConfig,
} from "./engine/config.ts";
export { checkpointSource, editTargetName } from "./engine/families.ts";
export {
  type Batch,
  type ForwardOptions,
  type ForwardResult,
  type Hook,
  makeBatch,
  Model,
  ModelLoadError,
  parameterShapes,
  randomWeights,
  type Site,
} from "./engine/model.ts";
// Kernels (forward, backward) as TypeScript functions that record WGSL dispatches
export * as ops from "./engine/ops.ts";
export * as backwardOps from "./engine/backward_ops.ts";
// Gradients and optimisation
export { allocateGradients, backward, type BackwardRequest, type Gradients } from "./engine/autograd.ts";
export { Adam, projectLinf, zeroGrads } from "./engine/optimizer.ts";
// Files: safetensors and tokenizers
export { openCheckpoint, openSafetensors, SafetensorsError, writeSafetensors } from "./engine/safetensors.ts";
export {
  BpeTokenizer,
  HfTokenizer,
  loadTokenizer,
  subjectTokenRange,
  targetIds,
  type Tokenizer,
  tokenizerFromJson,
  WordLevelTokenizer,
} from "./engine/tokenizer.ts";
// Prediction helpers
export { DEFAULT_MODEL_DIR, generateGreedy, predictNext } from "./engine/cli.ts";

// Experiments, each a namespace: localization, attribution, editing, evaluation, analysis.
export * as knowledgeBase from "./experiments/knowledge/knowledge_base.ts";
export * as tracing from "./experiments/localization/tracing.ts";
export * as attribution from "./experiments/localization/attribution.ts";
export * as layerSelection from "./experiments/localization/layer_selection.ts";
export * as editing from "./experiments/editing/methods.ts";
export * as edits from "./experiments/editing/edit.ts";
export * as editingProblems from "./experiments/editing/problems.ts";
export * as datasets from "./experiments/data/datasets.ts";
export * as metrics from "./experiments/evaluation/metrics.ts";
export * as stats from "./experiments/study/stats.ts";
export * as store from "./experiments/study/store.ts";
export * as analysis from "./experiments/study/analysis.ts";
