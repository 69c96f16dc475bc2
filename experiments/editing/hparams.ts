// Default hyper-parameters per model family (METHODS.md sections 3-6; the published JSON/YAML files
// of kmeng01/rome, kmeng01/memit and EasyEdit). A family is recognised from the config's width and
// depth; anything else (Locus's embedded model, tiny test models) gets the "small" defaults below.
//
// Small models (the embedded word-level model: 6 layers, d = 128, f = 512):
//   - ROME layer round(L/3) = 2 for L = 6: the published GPT-2 layers sit at a third of the depth
//     (medium 8/24, large 12/36, XL 17/48), where the subject's last token has been read by the early
//     layers and attention still has the later layers to move the recalled object to the last token.
//     `experiments/editing/quality.ts` prints the per-layer scores that back this choice.
//   - MEMIT/EMMET regularisers scaled to the key width: in Delta = R (lambda I + K^T C^-1 K)^-1 K^T C^-1
//     (MEMIT's form after the push-through identity) lambda competes with k^T C^-1 k, whose corpus
//     average is f; GPT-2 XL's lambda = 20000 is about 3f (f = 6400) and EMMET's lambda_m * eps = 1000
//     about f/6, so small models use those multiples of their own f.
//   - FT-L's L-infinity radius relative to the weight scale: the small model's c_proj weights are
//     larger than GPT-2 XL's (fewer, wider-spread units), so the radius is larger too.
import type { GPT2Config } from "../../engine/config.ts";
import type { TemplateSpec } from "./keys.ts";

export type Family = "gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl" | "small";

export function familyOf(cfg: GPT2Config): Family {
  const shape = `${cfg.nEmbd}/${cfg.nLayer}`;
  const known: Record<string, Family> = {
    "768/12": "gpt2",
    "1024/24": "gpt2-medium",
    "1280/36": "gpt2-large",
    "1600/48": "gpt2-xl",
  };
  return known[shape] ?? "small";
}

/** Shared by ROME's v* and MEMIT's z optimisation. */
export interface ValueHparams {
  vNumGradSteps: number;
  vLr: number;
  vWeightDecay: number;
  klFactor: number;
  clampNormFactor: number;
}

export interface RomeHparams extends ValueHparams {
  layer: number;
  /** u = C^-1 k* / |C^-1 k*| (true) or k* / |k*| (false). */
  mom2Adjustment: boolean;
  templates: Omit<TemplateSpec, "startWords">;
}

export interface MemitHparams extends ValueHparams {
  layers: number[];
  /** MEMIT's lambda (mom2_update_weight) in Delta = R K^T (lambda C + K K^T)^-1. */
  mom2UpdateWeight: number;
  templates: Omit<TemplateSpec, "startWords">;
}

export interface EmmetHparams extends ValueHparams {
  layers: number[];
  /** lambda_m in C' = lambda_m C (EMMET's mom2_update_weight; mu = update_norm_lambda = 0). */
  mom2UpdateWeight: number;
  /** epsilon in D = K^T C'^-1 K + epsilon I (emmet_lambda). */
  emmetLambda: number;
  templates: Omit<TemplateSpec, "startWords">;
}

export interface FtHparams {
  layers: number[];
  numSteps: number;
  lr: number;
  /** L-infinity radius around the original weights (norm_constraint). */
  normConstraint: number;
  batchSize: number;
}

export interface StatsHparams {
  /** Keys (tokens) averaged into C. */
  samples: number;
}

/** ROME's context templates: 10 texts of 5 tokens and 10 of 10 (21 templates with the bare prompt). */
const ROME_TEMPLATES = { lengths: [[5, 10], [10, 10]] as [number, number][], seed: 0, topK: 5 };
/** MEMIT's: 5 texts of 10 tokens (6 templates with the bare prompt). */
const MEMIT_TEMPLATES = { lengths: [[10, 5]] as [number, number][], seed: 0, topK: 5 };

const ROME_VALUE: ValueHparams = {
  vNumGradSteps: 20,
  vLr: 0.5,
  vWeightDecay: 0.5,
  klFactor: 0.0625,
  clampNormFactor: 4,
};

export function romeHparams(cfg: GPT2Config): RomeHparams {
  const family = familyOf(cfg);
  const byFamily: Record<Family, { layer: number; clamp: number }> = {
    "gpt2": { layer: 4, clamp: 4 }, // no published file (unverified): a third of the depth like the others
    "gpt2-medium": { layer: 8, clamp: 3 },
    "gpt2-large": { layer: 12, clamp: 4 },
    "gpt2-xl": { layer: 17, clamp: 4 },
    "small": { layer: Math.min(cfg.nLayer - 1, Math.round(cfg.nLayer / 3)), clamp: 4 },
  };
  const { layer, clamp } = byFamily[family];
  return { ...ROME_VALUE, clampNormFactor: clamp, layer, mom2Adjustment: true, templates: ROME_TEMPLATES };
}

/** R-ROME: ROME's values (EasyEdit's R-ROME/gpt2-xl.yaml turns mom2_adjustment off; rebuilding-rome keeps it on, as here). */
export function rRomeHparams(cfg: GPT2Config): RomeHparams {
  return romeHparams(cfg);
}

/** `count` consecutive layers ending at `last`, clipped at layer 0. */
function layersEndingAt(last: number, count: number): number[] {
  const first = Math.max(0, last - count + 1);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

export function memitHparams(cfg: GPT2Config): MemitHparams {
  const family = familyOf(cfg), f = 4 * cfg.nEmbd;
  const value = { ...ROME_VALUE, clampNormFactor: 0.75 };
  if (family === "gpt2-xl") {
    return { ...value, layers: [13, 14, 15, 16, 17], mom2UpdateWeight: 20000, templates: MEMIT_TEMPLATES };
  }
  // Other families: five layers ending at ROME's layer (XL's 13-17 end at its ROME layer 17), lambda = 3f.
  const last = romeHparams(cfg).layer;
  const count = family === "small" ? 3 : 5;
  return {
    ...value,
    layers: layersEndingAt(last, count),
    mom2UpdateWeight: Math.round(20000 * f / 6400),
    templates: MEMIT_TEMPLATES,
  };
}

export function emmetHparams(cfg: GPT2Config): EmmetHparams {
  const family = familyOf(cfg), f = 4 * cfg.nEmbd;
  const value = { ...ROME_VALUE, clampNormFactor: 0.75 };
  if (family === "gpt2-xl") {
    return { ...value, layers: [17], mom2UpdateWeight: 10000, emmetLambda: 0.1, templates: MEMIT_TEMPLATES };
  }
  return {
    ...value,
    layers: [romeHparams(cfg).layer],
    mom2UpdateWeight: Math.round(10000 * f / 6400),
    emmetLambda: 0.1,
    templates: MEMIT_TEMPLATES,
  };
}

export function ftHparams(cfg: GPT2Config, layers?: number[]): FtHparams {
  const family = familyOf(cfg);
  const eps: Record<Family, number> = {
    "gpt2": 2e-3, // no published file: medium's value
    "gpt2-medium": 2e-3,
    "gpt2-large": 1e-3,
    "gpt2-xl": 5e-4,
    "small": 5e-3,
  };
  return {
    layers: layers ?? [romeHparams(cfg).layer],
    numSteps: 25,
    lr: 5e-4,
    normConstraint: eps[family],
    batchSize: 128,
  };
}

export function statsHparams(cfg: GPT2Config): StatsHparams {
  // Published runs use 100,000 Wikipedia texts; 100,000 keys here. The embedded corpus is ~30,000
  // tokens, all of which are used.
  return { samples: familyOf(cfg) === "small" ? 1_000_000 : 100_000 };
}
