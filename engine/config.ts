// Model configuration: one description of a transformer block that covers every family Locus runs,
// read from a Hugging Face config.json (the keys as the Hub stores them, and transformers 5's
// `rope_parameters` / `layer_types` layout) and validated before anything is allocated.
//
// Every family is the same pre-norm decoder; they differ only in the choices below (see
// engine/families.ts for each family's choices and its tensor names):
//   norm        LayerNorm (mean and bias) or RMSNorm (Gemma scales by 1 + w)
//   positions   learned absolute (GPT-2) or rotary on the first `rotary.dims` dims of each head,
//               rotating interleaved pairs (GPT-J) or the two halves (NeoX, Llama, Gemma)
//   attention   H query heads sharing nKvHead key/value heads (GQA/MQA), optional sliding window
//               per layer, score scale and tanh soft-capping (Gemma 2), RMS-normed q/k (Gemma 3)
//   MLP         act(x W_fc) W_proj, or gated act(x W_gate) * (x W_up) W_down (SwiGLU, GeGLU)
//   residual    sequential, or attention and MLP in parallel from one shared norm (GPT-J) or
//               from two norms (NeoX); Gemma 2/3 also norm each branch's output before adding it
//   head        tied to the embedding or separate (with a bias in GPT-J), optional soft-cap

/** A supported model family (Hugging Face `model_type`). */
export type Family =
  | "gpt2"
  | "gptj"
  | "gpt_neox"
  | "llama"
  | "mistral"
  | "qwen2"
  | "gemma"
  | "gemma2"
  | "gemma3_text";

/** Every supported family, in the order the README lists them. */
export const FAMILIES: readonly Family[] = [
  "gpt2",
  "gptj",
  "gpt_neox",
  "llama",
  "mistral",
  "qwen2",
  "gemma",
  "gemma2",
  "gemma3_text",
];

/** "gelu_tanh" = GPT-2's gelu_new = gelu_pytorch_tanh; "gelu" = the exact erf GELU; "silu" = x sigmoid(x). */
export type Activation = "gelu_tanh" | "gelu" | "silu";

/** The shape of a GPT-2 model: all a GPT-2 config needs (the other fields take GPT-2's values). */
export interface GPT2Config {
  /** V, the vocabulary size. */
  vocabSize: number;
  /** P, the longest sequence. */
  nPositions: number;
  /** d, the residual stream width. */
  nEmbd: number;
  /** L, the number of blocks. */
  nLayer: number;
  /** H, the number of query heads. */
  nHead: number;
  /** The norms' epsilon (layer_norm_epsilon, rms_norm_eps). */
  layerNormEpsilon: number;
}

/** Rotary position embedding (Su et al., RoFormer): per layer inverse frequencies. */
export interface RotaryConfig {
  /** Rotated dimensions of each head (the first `dims`; the rest pass through). */
  dims: number;
  /** GPT-J rotates pairs (2i, 2i+1); NeoX/Llama/Gemma rotate (i, i + dims/2). */
  interleaved: boolean;
  /** Per layer, the dims/2 inverse frequencies theta_i (Gemma 3 has two bases). */
  invFreq: Float64Array[];
}

/** A validated model configuration: GPT-2's sizes plus the family's block description. */
export interface ModelConfig extends GPT2Config {
  /** The model_type's family, which decides tensor names and the block's form. */
  family: Family;
  /** Key/value heads, dividing nHead. */
  nKvHead: number;
  /** hd, one head's width (not always d / H: Gemma). */
  headDim: number;
  /** f, the MLP width (of each of gate and up when gated). */
  nInner: number;
  /** LayerNorm (mean and variance, with bias) or RMSNorm. */
  norm: "layernorm" | "rmsnorm";
  /** 1 when the norm multiplies by (1 + w) (Gemma), else 0. */
  normGainOffset: 0 | 1;
  /** null: learned absolute position embeddings (wpe). */
  rotary: RotaryConfig | null;
  /** Per layer: attend to the last `window` keys only (key j > t - window), or null for all. */
  windows: (number | null)[];
  /** Attention logits are multiplied by this (1/sqrt(hd), or the config's query_pre_attn_scalar). */
  attnScale: number;
  /** Gemma 2: attention logits become cap * tanh(logits / cap); null: no cap. */
  attnSoftcap: number | null;
  /** Gemma 3: RMSNorm of each head's queries and keys before rotary. */
  qkNorm: boolean;
  /** The q, k and v projections have biases (GPT-2, NeoX, Qwen2). */
  qkvBias: boolean;
  /** The attention output projection has a bias. */
  attnOutBias: boolean;
  /** plain: down(act(up x)); gated: down(act(gate x) * up x) (SwiGLU, GeGLU). */
  mlp: "plain" | "gated";
  /** The MLP's activation function. */
  activation: Activation;
  /** The MLP's projections have biases. */
  mlpBias: boolean;
  /** sequential: x + attn, then + mlp; parallel: x + attn(x) + mlp(x), from one norm (GPT-J) or two (NeoX). */
  residual: "sequential" | "parallel_shared_norm" | "parallel";
  /** Gemma 2/3: norm the attention and MLP outputs before the residual add. */
  postNorms: boolean;
  /** Embeddings are multiplied by this (Gemma: sqrt(d)). */
  embedScale: number;
  /** The LM head is wte's transpose. */
  tiedHead: boolean;
  /** The LM head has a bias (GPT-J). */
  headBias: boolean;
  /** Gemma 2: logits become cap * tanh(logits / cap); null: no cap. */
  finalSoftcap: number | null;
  /** Rows of the MLP's down projection are stored [in, out] (GPT-2 Conv1D) or [out, in] (nn.Linear). */
  linearLayout: "in_out" | "out_in";
}

/** Width of the fused q|k|v projection's output: nHead query heads, then nKvHead key and value heads. */
export function qkvWidth(c: ModelConfig): number {
  return (c.nHead + 2 * c.nKvHead) * c.headDim;
}

/** A config.json that Locus refuses, with the field named in the message. */
export class ConfigError extends Error {}

/** The full configuration of a GPT-2 of this shape. */
export function gpt2Config(s: GPT2Config): ModelConfig {
  return {
    vocabSize: s.vocabSize,
    nPositions: s.nPositions,
    nEmbd: s.nEmbd,
    nLayer: s.nLayer,
    nHead: s.nHead,
    layerNormEpsilon: s.layerNormEpsilon,
    family: "gpt2",
    nKvHead: s.nHead,
    headDim: s.nEmbd / s.nHead,
    nInner: 4 * s.nEmbd,
    norm: "layernorm",
    normGainOffset: 0,
    rotary: null,
    windows: new Array(s.nLayer).fill(null),
    attnScale: 1 / Math.sqrt(s.nEmbd / s.nHead),
    attnSoftcap: null,
    qkNorm: false,
    qkvBias: true,
    attnOutBias: true,
    mlp: "plain",
    activation: "gelu_tanh",
    mlpBias: true,
    residual: "sequential",
    postNorms: false,
    embedScale: 1,
    tiedHead: true,
    headBias: false,
    finalSoftcap: null,
    linearLayout: "in_out",
  };
}

/** A full config as is, or a GPT-2 shape completed with GPT-2's choices. */
export function resolveConfig(c: GPT2Config | ModelConfig): ModelConfig {
  return "family" in c ? c : gpt2Config(c);
}

// ---------------------------------------------------------------- reading config.json

/** Typed, range-checked reads of config.json fields; every error names the file, field and value. */
class Fields {
  constructor(readonly raw: Record<string, unknown>, readonly file: string) {}

  fail(field: string, expected: string): never {
    throw new ConfigError(
      `${this.file}: field "${field}" must be ${expected}, got ${JSON.stringify(this.raw[field])}`,
    );
  }

  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  /** A positive integer up to `max` (default 2^31: every size must also fit GPU indexing); when absent,
   *  `fallback`, which `derived` says how it was computed (its error then names those fields). */
  int(field: string, fallback?: number, max = 2 ** 31 - 1, derived?: string): number {
    const v = this.has(field) ? this.raw[field] : fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0 || v > max) {
      if (derived && !this.has(field)) {
        throw new ConfigError(
          `${this.file}: field "${field}" is absent and its default ${derived} = ${v} is not an integer in ` +
            `[1, ${max}]`,
        );
      }
      this.fail(field, `an integer in [1, ${max}]`);
    }
    return v;
  }

  /** A finite number > 0 (epsilons, bases, scales). */
  positive(field: string, fallback?: number): number {
    const v = this.has(field) ? this.raw[field] : fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) this.fail(field, "a finite number > 0");
    return v;
  }

  /** A positive number, or null/absent meaning "off". */
  optionalPositive(field: string): number | null {
    return this.has(field) ? this.positive(field) : null;
  }

  /** A positive integer, or null/absent meaning "off" (sliding windows). */
  optionalInt(field: string): number | null {
    return this.has(field) ? this.int(field) : null;
  }

  bool(field: string, fallback: boolean): boolean {
    const v = this.has(field) ? this.raw[field] : fallback;
    if (typeof v !== "boolean") this.fail(field, "true or false");
    return v;
  }

  oneOf<T extends string>(field: string, allowed: readonly T[], fallback: T): T {
    const v = this.has(field) ? this.raw[field] : fallback;
    if (!allowed.includes(v as T)) this.fail(field, `one of ${allowed.map((a) => `"${a}"`).join(", ")}`);
    return v as T;
  }

  object(field: string): Record<string, unknown> | null {
    if (!this.has(field)) return null;
    const v = this.raw[field];
    if (typeof v !== "object" || Array.isArray(v)) this.fail(field, "an object");
    return v as Record<string, unknown>;
  }
}

/** Hugging Face activation names (hidden_act / activation_function) Locus implements. */
const ACTIVATIONS: Record<string, Activation> = {
  gelu_new: "gelu_tanh",
  gelu_pytorch_tanh: "gelu_tanh",
  gelu_fast: "gelu_tanh",
  gelu: "gelu",
  silu: "silu",
  swish: "silu",
};

function activation(f: Fields, field: string, fallback: string): Activation {
  const name = f.has(field) ? f.raw[field] : fallback;
  const act = typeof name === "string" ? ACTIVATIONS[name] : undefined;
  if (!act) f.fail(field, `one of ${Object.keys(ACTIVATIONS).map((a) => `"${a}"`).join(", ")}`);
  return act;
}

/**
 * Inverse frequencies theta_i = base^(-2i/dims), i < dims/2, with the rope scaling types Locus
 * implements: "default", "linear" (theta / factor) and "llama3" (Llama 3.1's smooth blend of
 * theta and theta / factor by wavelength). `where` names the config field for errors.
 */
export function rotaryInvFreq(
  f: Fields,
  dims: number,
  base: number,
  scaling: Record<string, unknown> | null,
  where: string,
): Float64Array {
  const inv = new Float64Array(dims / 2);
  for (let i = 0; i < dims / 2; i++) inv[i] = 1 / Math.pow(base, (2 * i) / dims);
  const type = scaling ? scaling.rope_type ?? scaling.type ?? "default" : "default";
  const num = (key: string): number => {
    const v = scaling?.[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new ConfigError(
        `${f.file}: ${where}.${key} must be a finite number > 0, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  if (type === "default") return inv;
  if (type === "linear") return inv.map((x) => x / num("factor"));
  if (type === "llama3") {
    const factor = num("factor"), low = num("low_freq_factor"), high = num("high_freq_factor");
    const oldContext = num("original_max_position_embeddings");
    if (!(high > low)) {
      throw new ConfigError(`${f.file}: ${where}.high_freq_factor must exceed low_freq_factor`);
    }
    return inv.map((x) => {
      const wavelen = 2 * Math.PI / x;
      if (wavelen < oldContext / high) return x;
      if (wavelen > oldContext / low) return x / factor;
      const smooth = (oldContext / wavelen - low) / (high - low);
      return (1 - smooth) * x / factor + smooth * x;
    });
  }
  throw new ConfigError(
    `${f.file}: ${where} has rope type ${
      JSON.stringify(type)
    }, which Locus does not implement (supported: "default", "linear", "llama3")`,
  );
}

/** Parses a config.json text into a validated ModelConfig (the family from "model_type"). */
export function parseConfig(text: string, file = "config.json"): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // Python's json writes NaN and ±Infinity bare (transformers reads them): kept as strings, so a field
    // Locus ignores (a dropout) does not matter and one it reads is refused by name.
    const quoted = text.replace(/"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)/g, (m, bare) => bare ? `"${bare}"` : m);
    try {
      raw = JSON.parse(quoted);
    } catch {
      throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
    }
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${file}: not a JSON object`);
  }
  const f = new Fields(raw as Record<string, unknown>, file);
  const family = f.oneOf("model_type", FAMILIES, "gpt2");
  let cfg: ModelConfig;
  try {
    cfg = PARSERS[family](f);
  } catch (e) {
    // Another family's config without its model_type fails on GPT-2's fields: say why those were read.
    if (e instanceof ConfigError && !f.has("model_type")) {
      throw new ConfigError(`${e.message} (there is no "model_type", so it was read as "gpt2")`);
    }
    throw e;
  }
  validate(cfg, file);
  return cfg;
}

/** Checks the relations between sizes that every family needs. */
function validate(c: ModelConfig, file: string): void {
  const fail = (msg: string): never => {
    throw new ConfigError(`${file}: ${msg}`);
  };
  if (c.nHead % c.nKvHead !== 0) {
    fail(`num_attention_heads (${c.nHead}) must be a multiple of num_key_value_heads (${c.nKvHead})`);
  }
  // The rotary families checked their head dimension before building their tables (checkRotary).
  if (!c.rotary) checkHeadDim(c.headDim, file, "n_embd / n_head");
}

/** The largest head dimension Locus's attention kernels take. */
const MAX_HEAD_DIM = 512;

function checkHeadDim(hd: number, file: string, fields: string): void {
  if (hd > MAX_HEAD_DIM) {
    throw new ConfigError(
      `${file}: head dimension ${hd} (${fields}) is over Locus's attention kernels' ${MAX_HEAD_DIM}`,
    );
  }
}

/** Checked before the inverse-frequency tables (dims/2 values per layer) are built, so an odd or huge
 *  value is an error naming its fields rather than a RangeError or an allocation that never ends. */
function checkRotary(f: Fields, hd: number, dims: number, fields: string): void {
  checkHeadDim(hd, f.file, fields);
  if (dims % 2 !== 0 || dims > hd) {
    throw new ConfigError(
      `${f.file}: the rotary dimensions (${dims}, from ${fields}) must be even and at most the head ` +
        `dimension (${hd})`,
    );
  }
}

/** Per family: the config.json keys it uses (Hub layout first, transformers 5 layout too). */
const PARSERS: Record<Family, (f: Fields) => ModelConfig> = {
  gpt2(f) {
    const act = activation(f, "activation_function", "gelu_new");
    if (act !== "gelu_tanh") f.fail("activation_function", `"gelu_new" for GPT-2`);
    // transformers' GPT-2 attention variants that Locus does not compute: refused, never run differently.
    if (f.bool("scale_attn_by_inverse_layer_idx", false)) {
      f.fail(
        "scale_attn_by_inverse_layer_idx",
        "false (Locus scales attention scores by 1/sqrt(head dim) only)",
      );
    }
    if (!f.bool("scale_attn_weights", true)) {
      f.fail("scale_attn_weights", "true (Locus always scales attention scores by 1/sqrt(head dim))");
    }
    const d = f.int("n_embd"), H = f.int("n_head");
    if (d % H !== 0) throw new ConfigError(`${f.file}: n_embd (${d}) must be divisible by n_head (${H})`);
    const c = gpt2Config({
      vocabSize: f.int("vocab_size"),
      nPositions: f.int("n_positions", f.has("n_ctx") ? f.int("n_ctx") : undefined),
      nEmbd: d,
      nLayer: f.int("n_layer", undefined, 4096),
      nHead: H,
      layerNormEpsilon: f.positive("layer_norm_epsilon", 1e-5),
    });
    c.nInner = f.int("n_inner", 4 * d, undefined, "4 x n_embd");
    c.tiedHead = f.bool("tie_word_embeddings", true);
    return c;
  },

  gptj(f) {
    const d = f.int("n_embd"), H = f.int("n_head"), L = f.int("n_layer", undefined, 4096);
    if (d % H !== 0) throw new ConfigError(`${f.file}: n_embd (${d}) must be divisible by n_head (${H})`);
    const hd = d / H;
    const dims = f.int("rotary_dim", hd);
    checkRotary(f, hd, dims, "rotary_dim, n_embd / n_head");
    return {
      ...base(f, { d, H, kv: H, hd, L, V: f.int("vocab_size"), P: f.int("n_positions") }),
      nInner: f.int("n_inner", 4 * d, undefined, "4 x n_embd"),
      norm: "layernorm",
      layerNormEpsilon: f.positive("layer_norm_epsilon", 1e-5),
      rotary: {
        dims,
        interleaved: true,
        invFreq: perLayer(L, () => rotaryInvFreq(f, dims, 10000, null, "")),
      },
      qkvBias: false,
      attnOutBias: false,
      mlp: "plain",
      activation: activation(f, "activation_function", "gelu_new"),
      mlpBias: true,
      residual: "parallel_shared_norm",
      tiedHead: f.bool("tie_word_embeddings", false),
      headBias: true,
    };
  },

  gpt_neox(f) {
    const d = f.int("hidden_size"),
      H = f.int("num_attention_heads"),
      L = f.int("num_hidden_layers", undefined, 4096);
    if (d % H !== 0) {
      throw new ConfigError(`${f.file}: hidden_size (${d}) must be divisible by num_attention_heads (${H})`);
    }
    const hd = d / H;
    const { rope, where } = ropeParameters(f);
    const pct = numberIn(f, rope, where, "partial_rotary_factor", "rotary_pct", 0.25);
    const dims = Math.floor(hd * pct);
    checkRotary(f, hd, dims, "rotary_pct or partial_rotary_factor, hidden_size / num_attention_heads");
    const theta = numberIn(f, rope, where, "rope_theta", "rotary_emb_base", 10000);
    const bias = f.bool("attention_bias", true);
    return {
      ...base(f, { d, H, kv: H, hd, L, V: f.int("vocab_size"), P: f.int("max_position_embeddings") }),
      nInner: f.int("intermediate_size"),
      norm: "layernorm",
      layerNormEpsilon: f.positive("layer_norm_eps", 1e-5),
      rotary: {
        dims,
        interleaved: false,
        invFreq: perLayer(L, () => rotaryInvFreq(f, dims, theta, rope, where)),
      },
      qkvBias: bias,
      attnOutBias: bias,
      mlp: "plain",
      activation: activation(f, "hidden_act", "gelu"),
      mlpBias: true,
      residual: f.bool("use_parallel_residual", true) ? "parallel" : "sequential",
      tiedHead: f.bool("tie_word_embeddings", false),
    };
  },

  llama: (f) =>
    llamaLike(f, { qkvBias: f.bool("attention_bias", false), outBias: f.bool("attention_bias", false) }),
  mistral: (f) => llamaLike(f, { qkvBias: false, outBias: false, window: f.optionalInt("sliding_window") }),
  qwen2(f) {
    const window = f.bool("use_sliding_window", false) ? f.optionalInt("sliding_window") : null;
    const fromLayer = f.has("max_window_layers") ? f.int("max_window_layers") : 0;
    const c = llamaLike(f, { qkvBias: true, outBias: false, tied: false });
    c.windows = c.windows.map((_, l) => window !== null && l >= fromLayer ? window : null);
    applyLayerTypes(f, c, window);
    return c;
  },
  gemma: (f) => gemmaLike(f, false),
  gemma2: (f) => gemmaLike(f, true),
  gemma3_text: (f) => gemmaLike(f, true),
};

/** Fields shared by the rotary families, GPT-2 defaults for the rest. */
function base(
  f: Fields,
  s: { d: number; H: number; kv: number; hd: number; L: number; V: number; P: number },
): ModelConfig {
  const family = f.raw.model_type as Family;
  return {
    ...gpt2Config({
      vocabSize: s.V,
      nPositions: s.P,
      nEmbd: s.d,
      nLayer: s.L,
      nHead: s.H,
      layerNormEpsilon: 1e-5,
    }),
    family,
    nKvHead: s.kv,
    headDim: s.hd,
    attnScale: 1 / Math.sqrt(s.hd),
    linearLayout: "out_in",
  };
}

function perLayer<T>(L: number, make: (l: number) => T): T[] {
  return Array.from({ length: L }, (_, l) => make(l));
}

/** transformers 5 writes rope settings into `rope_parameters` ({rope_type, rope_theta, ...}), the Hub's
 *  configs into `rope_scaling`; `where` names the one found, for errors. */
function ropeParameters(f: Fields): { rope: Record<string, unknown> | null; where: string } {
  const rope = f.object("rope_parameters");
  return rope
    ? { rope, where: "rope_parameters" }
    : { rope: f.object("rope_scaling"), where: "rope_scaling" };
}

/** A number from `rope[key]` (transformers 5's rope_parameters; `where` names it), else the Hub's
 *  `legacy` field, else fallback. */
function numberIn(
  f: Fields,
  rope: Record<string, unknown> | null,
  where: string,
  key: string,
  legacy: string,
  fallback: number,
): number {
  const v = rope?.[key];
  if (v !== undefined && v !== null) {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new ConfigError(
        `${f.file}: ${where}.${key} must be a finite number > 0, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  }
  return f.positive(legacy, fallback);
}

/** `layer_types` (transformers 5, or written by hand) overrides which layers slide. */
function applyLayerTypes(f: Fields, c: ModelConfig, window: number | null): void {
  if (!f.has("layer_types")) return;
  const types = f.raw.layer_types;
  if (!Array.isArray(types) || types.length !== c.nLayer) {
    f.fail("layer_types", `a list of ${c.nLayer} (num_hidden_layers) "full_attention" / "sliding_attention"`);
  }
  c.windows = types.map((t, l) => {
    if (t === "full_attention") return null;
    if (t === "sliding_attention") {
      if (window === null) f.fail("sliding_window", `a positive integer (layer ${l} is "sliding_attention")`);
      return window;
    }
    return f.fail("layer_types", `a list of "full_attention" / "sliding_attention"`);
  });
}

/** The sizes and RMSNorm that Llama-style and Gemma configs name the same way. */
function rmsDecoder(f: Fields, d: number, H: number, hd: number, L: number): ModelConfig {
  return {
    ...base(f, {
      d,
      H,
      kv: f.int("num_key_value_heads", H),
      hd,
      L,
      V: f.int("vocab_size"),
      P: f.int("max_position_embeddings"),
    }),
    nInner: f.int("intermediate_size"),
    norm: "rmsnorm",
    layerNormEpsilon: f.positive("rms_norm_eps", 1e-6),
  };
}

/** Llama 2/3, Mistral, Qwen2: RMSNorm, SwiGLU, GQA, half-split rotary on the whole head. */
function llamaLike(
  f: Fields,
  o: { qkvBias: boolean; outBias: boolean; window?: number | null; tied?: boolean },
): ModelConfig {
  const d = f.int("hidden_size"),
    H = f.int("num_attention_heads"),
    L = f.int("num_hidden_layers", undefined, 4096);
  const hd = f.has("head_dim") ? f.int("head_dim") : d / H;
  if (!Number.isInteger(hd)) {
    throw new ConfigError(
      `${f.file}: hidden_size (${d}) must be divisible by num_attention_heads (${H}) when head_dim is absent`,
    );
  }
  const { rope, where } = ropeParameters(f);
  const theta = numberIn(f, rope, where, "rope_theta", "rope_theta", 10000);
  const pct = numberIn(f, rope, where, "partial_rotary_factor", "partial_rotary_factor", 1);
  const dims = Math.floor(hd * pct);
  checkRotary(f, hd, dims, "head_dim or hidden_size / num_attention_heads, partial_rotary_factor");
  const invFreq = rotaryInvFreq(f, dims, theta, rope, where);
  const window = o.window ?? null;
  const c: ModelConfig = {
    ...rmsDecoder(f, d, H, hd, L),
    rotary: { dims, interleaved: false, invFreq: perLayer(L, () => invFreq) },
    windows: perLayer(L, () => window),
    qkvBias: o.qkvBias,
    attnOutBias: o.outBias,
    mlp: "gated",
    activation: activation(f, "hidden_act", "silu"),
    mlpBias: f.bool("mlp_bias", false),
    tiedHead: f.bool("tie_word_embeddings", o.tied ?? false),
  };
  if (f.raw.model_type === "mistral") applyLayerTypes(f, c, window);
  return c;
}

/** Gemma 1/2/3: RMSNorm (1 + w), GeGLU, embeddings times sqrt(d), tied head; Gemma 2 adds soft-caps,
 *  post norms and alternating sliding layers; Gemma 3 q/k norms and a second rope base for local layers. */
function gemmaLike(f: Fields, second: boolean): ModelConfig {
  const family = f.raw.model_type as Family;
  const d = f.int("hidden_size"),
    H = f.int("num_attention_heads"),
    L = f.int("num_hidden_layers", undefined, 4096);
  const hd = f.int("head_dim", 256);
  checkRotary(f, hd, hd, "head_dim");
  const window = second ? f.optionalInt("sliding_window") : null;
  // Which layers slide: Gemma 2 alternates (layer 0 local); Gemma 3 makes every 6th layer global.
  const pattern = family === "gemma3_text" ? f.int("sliding_window_pattern", 6) : 2;
  const sliding = (l: number) => second && (l + 1) % pattern !== 0;
  const rope = f.object("rope_parameters");
  // Gemma 3 in transformers 5: rope_parameters = {full_attention: {...}, sliding_attention: {...}}.
  const nested = (key: string): Record<string, unknown> | null => {
    const v = rope?.[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) {
      throw new ConfigError(`${f.file}: rope_parameters.${key} must be an object, got ${JSON.stringify(v)}`);
    }
    return v as Record<string, unknown>;
  };
  const full = nested("full_attention");
  const global = full ? { rope: full, where: "rope_parameters.full_attention" } : ropeParameters(f);
  const local = { rope: nested("sliding_attention"), where: "rope_parameters.sliding_attention" };
  const globalTheta = numberIn(
    f,
    global.rope,
    global.where,
    "rope_theta",
    "rope_theta",
    family === "gemma3_text" ? 1e6 : 10000,
  );
  const localTheta = family === "gemma3_text"
    ? numberIn(f, local.rope, local.where, "rope_theta", "rope_local_base_freq", 10000)
    : globalTheta;
  const globalInv = rotaryInvFreq(f, hd, globalTheta, global.rope, global.where);
  const localInv = rotaryInvFreq(f, hd, localTheta, local.rope, local.where);
  const c: ModelConfig = {
    ...rmsDecoder(f, d, H, hd, L),
    normGainOffset: 1,
    rotary: {
      dims: hd,
      interleaved: false,
      invFreq: perLayer(L, (l) => (sliding(l) ? localInv : globalInv)),
    },
    windows: perLayer(L, (l) => (sliding(l) ? window : null)),
    attnScale: second ? 1 / Math.sqrt(f.positive("query_pre_attn_scalar", hd)) : 1 / Math.sqrt(hd),
    attnSoftcap: second ? f.optionalPositive("attn_logit_softcapping") : null,
    qkNorm: family === "gemma3_text",
    qkvBias: f.bool("attention_bias", false),
    attnOutBias: f.bool("attention_bias", false),
    mlp: "gated",
    // Gemma's checkpoints say hidden_act "gelu" but transformers runs hidden_activation (tanh GELU).
    activation: activation(f, "hidden_activation", "gelu_pytorch_tanh"),
    mlpBias: false,
    postNorms: second,
    embedScale: Math.sqrt(d),
    tiedHead: f.bool("tie_word_embeddings", true),
    finalSoftcap: second ? f.optionalPositive("final_logit_softcapping") : null,
  };
  if (second) applyLayerTypes(f, c, window);
  return c;
}

/** The fields that identify a model's shape, for run metadata (the per-layer rotary tables left out). */
export function configSummary(c: ModelConfig): Record<string, string | number | boolean | null> {
  return {
    family: c.family,
    vocabSize: c.vocabSize,
    nPositions: c.nPositions,
    nEmbd: c.nEmbd,
    nLayer: c.nLayer,
    nHead: c.nHead,
    nKvHead: c.nKvHead,
    headDim: c.headDim,
    nInner: c.nInner,
    layerNormEpsilon: c.layerNormEpsilon,
  };
}

/** The config.json a Hugging Face GPT-2 loader accepts for this configuration (GPT-2 family only). */
export function configJson(cfg: GPT2Config | ModelConfig): string {
  const c = resolveConfig(cfg);
  if (c.family !== "gpt2") throw new ConfigError(`configJson writes GPT-2 configs only, not ${c.family}`);
  return JSON.stringify(
    {
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      vocab_size: c.vocabSize,
      n_positions: c.nPositions,
      n_ctx: c.nPositions,
      n_embd: c.nEmbd,
      n_layer: c.nLayer,
      n_head: c.nHead,
      layer_norm_epsilon: c.layerNormEpsilon,
      activation_function: "gelu_new",
      tie_word_embeddings: true,
    },
    null,
    2,
  ) + "\n";
}

/** Standard shapes, for benchmarks with random weights. */
export const GPT2_SHAPES: Record<string, GPT2Config> = {
  "gpt2": { vocabSize: 50257, nPositions: 1024, nEmbd: 768, nLayer: 12, nHead: 12, layerNormEpsilon: 1e-5 },
  "gpt2-medium": {
    vocabSize: 50257,
    nPositions: 1024,
    nEmbd: 1024,
    nLayer: 24,
    nHead: 16,
    layerNormEpsilon: 1e-5,
  },
  "gpt2-large": {
    vocabSize: 50257,
    nPositions: 1024,
    nEmbd: 1280,
    nLayer: 36,
    nHead: 20,
    layerNormEpsilon: 1e-5,
  },
  "gpt2-xl": {
    vocabSize: 50257,
    nPositions: 1024,
    nEmbd: 1600,
    nLayer: 48,
    nHead: 25,
    layerNormEpsilon: 1e-5,
  },
};
