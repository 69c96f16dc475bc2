// Default hyper-parameters per model family: the published JSON/YAML files of kmeng01/rome,
// kmeng01/memit and EasyEdit (ROME, R-ROME, MEMIT, EMMET, FT baselines). A family is recognised from the
// config's architecture, width and depth:
//   GPT-2 medium/large/XL   the ROME/MEMIT repositories' files
//   GPT-J 6B                ROME: layer 5, clamp 4, 20 steps, weight decay 0.5 (hparams/ROME/EleutherAI_gpt-j-6B);
//                           MEMIT: layers 3-8, lambda 15000, clamp 0.75, 25 steps; FT-L radius 5e-5
//   7-8B Llama/Mistral/Qwen2  EasyEdit's llama-7b / llama3-8b / mistral-7b / qwen2-7b files, which agree:
//                           ROME layer 5, clamp 4, 25 steps, lr 0.5, weight decay 1e-3, mom2_adjustment off;
//                           MEMIT layers 4-8, lambda 15000, clamp 4, 25 steps
//   other shapes of these families and Gemma: no published file; ROME at a third of the depth, MEMIT
//                           the 5 layers ending there, lambda scaled with f like GPT-2's (unverified)
// The GPT-2-family shapes without a file (Locus's embedded model, tiny test models) get the "small"
// defaults below.
//
// Small models (the embedded word-level model: 6 layers, d = 128, f = 512), measured on it (knowledge base
// v2, weights/locus-kb/MODEL_CARD.md) with ./locus task quality, its own CounterFact cases:
//   - fact token "subject_last", as for every GPT-2-family model: the averaged causal trace
//     (./locus task trace --dataset weights/locus-kb/known_facts.json --limit 200 --window 1) puts the
//     MLP's indirect effect at the subject's last token (0.228 +- 0.013 at layer 0), the last token's
//     attention peaks at layer 5 and the residual effect moves from the subject to the last token at
//     layers 2-5, the shape of ROME's GPT-2 figures.
//   - ROME layer 0: the only layer whose MLP effect at the subject's last token clears the noise (0.228;
//     <= 0.009 at layers 1-5), and the best rewrite in the per-layer sweep (first 5 cases, 20 v* steps:
//     0.907 at layer 0, 0.61-0.82 at layers 1-4, 0.000 at layer 5).
//   - v* with ROME's own 20 steps at learning rate 0.5. 100 steps at lr 1 (tried because keyed at the
//     subject 20 steps stop before the new object is likely) rewrite harder but spill onto other subjects
//     whose names end in the same syllable (at layer 0 the key is mostly that token): 100 edits, CounterFact
//     ES / PS / NS 1.000 / 1.000 / 0.920 +- 0.021 (Hase et al.'s rewrite / paraphrase / neighborhood 0.990 /
//     0.689 / 0.937) against 0.990 / 0.990 / 0.970 +- 0.012 (0.909 / 0.498 / 0.977) with 20 steps at 0.5,
//     which also costs a quarter of the time.
//   - clamp_norm_factor 10 instead of 4: this model's MLP outputs (norm 3-7) are small next to its
//     residual stream (norm 50-150), and with 4 the clamp stops v* before the target is likely.
//   - MEMIT's and EMMET's z with 50 steps at lr 1. Against ROME's 20 at 0.5, 100 at 1 rewrite harder (one
//     batch of 50 edits, MEMIT: rewrite 0.693 -> 0.765, paraphrase 0.180 -> 0.220, neighborhood 0.984 both;
//     EMMET: 0.716 -> 0.803, 0.188 -> 0.232, 0.984 -> 0.985; one batch of 100, MEMIT: rewrite 0.675 ->
//     0.803, CounterFact ES 0.960 both, PS 0.855 -> 0.805, NS 0.715 -> 0.705: 100 edits at one layer-0 key
//     space hit the subjects that share their last syllable either way), and 50 at 1 do as well as 100
//     at two thirds of the time (losses flatten by step 50): one batch of 100, MEMIT rewrite 0.808 / 0.803,
//     paraphrase 0.292 / 0.286, neighborhood 0.985 both, ES 0.990 / 0.960, PS 0.840 / 0.805, NS 0.695 /
//     0.705; EMMET rewrite 0.762 / 0.748; 40 single-fact MEMIT edits at each layer window of 3 (the
//     study's), rewrite at layers 0-3 0.880 / 0.836 / 0.837 / 0.710 against 0.869 / 0.818 / 0.823 / 0.701
//     (standard errors 0.03-0.045), paraphrase likewise, z 0.24 s per request against 0.44.
//   - MEMIT and EMMET at ROME's layer; MEMIT lambda 10 instead of GPT-2 XL's 20000: in MEMIT's form after
//     the push-through identity, Delta = R (lambda I + K^T C^-1 K)^-1 K^T C^-1, lambda competes with
//     k^T C^-1 k, which scales with f (GPT-2 XL's 6400 against 512 here). One batch of 50 edits, 100 z
//     steps: lambda 100 rewrite 0.765 / paraphrase 0.220 / neighborhood 0.984, lambda 10 0.881 / 0.273 /
//     0.989, lambda 1 0.885 / 0.278 / 0.989 (no better within its standard errors).
//   - EMMET lambda_m scaled by f/6400 (800, so lambda_m * eps = 80).
//   - FT-L radius 5e-3 with lr 3e-3 (25 Adam steps must be able to reach the radius; the c_proj weights
//     have rms 0.04): the largest radius measured whose neighborhood stays >= 0.95 (20 edits: radius 3e-3
//     rewrite 0.28, 5e-3 0.82 with neighborhood 0.97, 7e-3 0.97 with 0.93, 1e-2 0.99 with 0.83; Hase et
//     al. tune the radius so that rewrite does not come at any price).
// Several FT-L layers share a radius divided by their number (Hase et al.: FT-5 radii 1/5 to 1/10 of
// FT-1's).
import { type GPT2Config, type ModelConfig, resolveConfig } from "../../engine/config.ts";
import type { FactToken, TemplateSpec } from "./keys.ts";

export type Family =
  | "gpt2"
  | "gpt2-medium"
  | "gpt2-large"
  | "gpt2-xl"
  | "gpt-j-6b"
  | "easyedit-7b"
  | "unpublished"
  | "small";

export function familyOf(config: GPT2Config | ModelConfig): Family {
  const cfg = resolveConfig(config);
  const shape = `${cfg.nEmbd}/${cfg.nLayer}`;
  if (cfg.family === "gptj" && shape === "4096/28") return "gpt-j-6b";
  // Llama 2 7B and Llama 3 8B, Mistral 7B (4096 wide, 32 layers), Qwen2 7B (3584, 28).
  if (["llama", "mistral"].includes(cfg.family) && shape === "4096/32") return "easyedit-7b";
  if (cfg.family === "qwen2" && shape === "3584/28") return "easyedit-7b";
  if (cfg.family !== "gpt2") return "unpublished";
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
  /** Where keys are read and values written (keys.ts FactToken). */
  factToken: FactToken;
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
  factToken: "subject_last",
  vNumGradSteps: 20,
  vLr: 0.5,
  vWeightDecay: 0.5,
  klFactor: 0.0625,
  clampNormFactor: 4,
};

export function romeHparams(cfg: GPT2Config | ModelConfig): RomeHparams {
  const family = familyOf(cfg);
  const third = Math.min(cfg.nLayer - 1, Math.round(cfg.nLayer / 3));
  const byFamily: Record<Family, { layer: number; clamp: number }> = {
    "gpt2": { layer: 4, clamp: 4 }, // no published file (unverified): a third of the depth like the others
    "gpt2-medium": { layer: 8, clamp: 3 },
    "gpt2-large": { layer: 12, clamp: 4 },
    "gpt2-xl": { layer: 17, clamp: 4 },
    "gpt-j-6b": { layer: 5, clamp: 4 },
    "easyedit-7b": { layer: 5, clamp: 4 },
    "unpublished": { layer: third, clamp: 4 },
    "small": { layer: 0, clamp: 10 }, // the embedded model's averaged trace (file header)
  };
  const { layer, clamp } = byFamily[family];
  const easyEdit = family === "easyedit-7b";
  return {
    ...ROME_VALUE,
    ...(easyEdit ? { vNumGradSteps: 25, vWeightDecay: 1e-3 } : {}),
    clampNormFactor: clamp,
    layer,
    mom2Adjustment: !easyEdit,
    templates: ROME_TEMPLATES,
  };
}

/** The small models' MEMIT / EMMET z optimisation (file header): 50 steps at learning rate 1. */
function smallZ(family: Family): Partial<ValueHparams> {
  return family === "small" ? { vNumGradSteps: 50, vLr: 1 } : {};
}

/** `count` consecutive layers ending at `last`, clipped at layer 0. */
function layersEndingAt(last: number, count: number): number[] {
  const first = Math.max(0, last - count + 1);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

export function memitHparams(cfg: GPT2Config | ModelConfig): MemitHparams {
  const family = familyOf(cfg), f = resolveConfig(cfg).nInner;
  const value = { ...ROME_VALUE, ...smallZ(family), clampNormFactor: 0.75 };
  if (family === "gpt2-xl") {
    return { ...value, layers: [13, 14, 15, 16, 17], mom2UpdateWeight: 20000, templates: MEMIT_TEMPLATES };
  }
  if (family === "gpt-j-6b") {
    return {
      ...value,
      vNumGradSteps: 25,
      layers: [3, 4, 5, 6, 7, 8],
      mom2UpdateWeight: 15000,
      templates: MEMIT_TEMPLATES,
    };
  }
  if (family === "easyedit-7b") {
    return {
      ...value,
      vNumGradSteps: 25,
      vWeightDecay: 1e-3,
      clampNormFactor: 4,
      layers: [4, 5, 6, 7, 8],
      mom2UpdateWeight: 15000,
      templates: MEMIT_TEMPLATES,
    };
  }
  // Other families: layers ending at ROME's layer (XL's 13-17 end at its ROME layer 17); GPT-2 sizes
  // without a published file scale lambda with f, small models use the measured value (file header).
  const last = romeHparams(cfg).layer;
  return {
    ...value,
    layers: layersEndingAt(last, family === "small" ? 3 : 5),
    mom2UpdateWeight: family === "small" ? 10 : Math.round(20000 * f / 6400),
    templates: MEMIT_TEMPLATES,
  };
}

export function emmetHparams(cfg: GPT2Config | ModelConfig): EmmetHparams {
  const family = familyOf(cfg), f = resolveConfig(cfg).nInner;
  const value = { ...ROME_VALUE, ...smallZ(family), clampNormFactor: 0.75 };
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

/** FT-L: published constrained fine-tuning (layer 0, 25 steps, lr 5e-4) or the small models' tuning. */
export function ftHparams(cfg: GPT2Config | ModelConfig, layers?: number[]): FtHparams {
  const family = familyOf(cfg);
  const eps: Record<Family, number> = {
    "gpt2": 2e-3, // no published file: medium's value
    "gpt2-medium": 2e-3,
    "gpt2-large": 1e-3,
    "gpt2-xl": 5e-4,
    "gpt-j-6b": 5e-5,
    "easyedit-7b": 5e-5, // no published FT-L radius: GPT-J's (unverified)
    "unpublished": 5e-4, // GPT-2 XL's (unverified)
    "small": 5e-3,
  };
  const chosen = layers ?? [family === "small" ? romeHparams(cfg).layer : 0];
  return {
    layers: chosen,
    numSteps: 25,
    lr: family === "small" ? 3e-3 : 5e-4,
    normConstraint: eps[family] / chosen.length,
    batchSize: 128,
  };
}

export function statsHparams(cfg: GPT2Config | ModelConfig): StatsHparams {
  // Published runs use 100,000 Wikipedia texts; 100,000 keys here. The embedded corpus is ~30,000
  // tokens, all of which are used.
  return { samples: familyOf(cfg) === "small" ? 1_000_000 : 100_000 };
}
