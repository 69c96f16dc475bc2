// Locus public API: a WebGPU GPT-2 engine for studying where language models store facts and
// how to edit them. Import from here; the experiments/ folder builds on exactly these pieces.

// GPU runtime and tensors
export { cdiv, getGpu, Gpu, NoAdapterError, Tensor, uniforms } from "./engine/gpu.ts";
// Model configuration, weights, forward pass with intervention hooks
export { ConfigError, configJson, type GPT2Config, GPT2_SHAPES, parseConfig } from "./engine/config.ts";
export {
  type Batch,
  type ForwardOptions,
  type ForwardResult,
  GPT2,
  type Hook,
  makeBatch,
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
  loadTokenizer,
  subjectTokenRange,
  type Tokenizer,
  tokenizerFromJson,
  WordLevelTokenizer,
} from "./engine/tokenizer.ts";
// Prediction helpers
export { DEFAULT_MODEL_DIR, generateGreedy, predictNext } from "./engine/cli.ts";
