// GPT-2 family configuration, read from a Hugging Face config.json and validated.

export interface GPT2Config {
  vocabSize: number; // V
  nPositions: number; // P, the longest sequence
  nEmbd: number; // d
  nLayer: number; // L
  nHead: number; // H, with d % H == 0
  layerNormEpsilon: number;
}

export class ConfigError extends Error {}

/** Parses a config.json text (HF names: n_embd, n_layer, n_head, vocab_size, n_positions/n_ctx). */
export function parseConfig(text: string, file = "config.json"): GPT2Config {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${file}: not a JSON object`);
  }
  const modelType = raw.model_type ?? "gpt2";
  if (modelType !== "gpt2") {
    throw new ConfigError(
      `${file}: model_type "${modelType}" is not supported (Locus runs the GPT-2 family, model_type "gpt2")`,
    );
  }
  const act = raw.activation_function ?? "gelu_new";
  if (act !== "gelu_new" && act !== "gelu_pytorch_tanh") {
    throw new ConfigError(`${file}: activation_function "${act}" is not supported (GPT-2 uses "gelu_new")`);
  }
  const int = (name: string, fallback?: string): number => {
    const v = raw[name] ?? (fallback ? raw[fallback] : undefined);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new ConfigError(`${file}: field "${name}" must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const cfg: GPT2Config = {
    vocabSize: int("vocab_size"),
    nPositions: int("n_positions", "n_ctx"),
    nEmbd: int("n_embd"),
    nLayer: int("n_layer"),
    nHead: int("n_head"),
    layerNormEpsilon: typeof raw.layer_norm_epsilon === "number" ? raw.layer_norm_epsilon : 1e-5,
  };
  if (cfg.nEmbd % cfg.nHead !== 0) {
    throw new ConfigError(`${file}: n_embd (${cfg.nEmbd}) must be divisible by n_head (${cfg.nHead})`);
  }
  if (!(cfg.layerNormEpsilon > 0)) throw new ConfigError(`${file}: layer_norm_epsilon must be > 0`);
  return cfg;
}

/** The config.json a Hugging Face GPT-2 loader accepts for this configuration. */
export function configJson(cfg: GPT2Config): string {
  return JSON.stringify(
    {
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      vocab_size: cfg.vocabSize,
      n_positions: cfg.nPositions,
      n_ctx: cfg.nPositions,
      n_embd: cfg.nEmbd,
      n_layer: cfg.nLayer,
      n_head: cfg.nHead,
      layer_norm_epsilon: cfg.layerNormEpsilon,
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
