// ROME (Meng et al. 2022) and R-ROME (Gupta et al. 2024): a rank-one update of one layer's
// mlp.c_proj that maps the subject's key to a value making the model say the target.
//
//   k*  = mean over the 21 context templates of the key (c_proj input) at the fact token (the subject's
//         last token by default; keys.ts FactToken)
//   u   = C^-1 k* / |C^-1 k*|                    (C = E[k k^T], stats.ts; or k*/|k*| without mom2 adjustment)
//   v*  = h_0 + delta                            (values.ts, delta on the MLP output at layer l)
//   ROME:   r = (v* - v_0) / (k_0 . u)   with k_0, v_0 = c_proj input, output at the bare prompt
//   R-ROME: r = (v* - v_bar) / (k_bar . u) with k_bar = k*, v_bar = mean over templates of W k_t + b
//   W_proj[f,d] += u (x) r                       (W_math += r u^T; shaders/rank_update.wgsl)
//
// Then W_proj^T k_0 (ROME) or k_bar (R-ROME) maps exactly to v* - b, and every key x with
// x . u = 0, i.e. C^-1-orthogonal to k* (x^T C^-1 k* = 0), is mapped as before.
// ROME's u comes from the template average while r divides by the bare prompt's key; R-ROME uses
// the same average in both (the "consistent keys" fix).
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import type { ResidualCache } from "../evaluation/residuals.ts";
import { type Edit, type EditRequest, keyValueDelta, VirtualEditSet } from "./edit.ts";
import type { RomeHparams } from "./hparams.ts";
import {
  contextTemplates,
  instantiate,
  type PromptInstance,
  readFactStates,
  type StateRead,
} from "./keys.ts";
import { dot, meanOf, norm } from "./linalg.ts";
import type { KeyStats } from "./stats.ts";
import { optimiseValues, type ValueOptions, valueOptions } from "./values.ts";

export interface RomeOptions {
  /** "rome" (default) or "r-rome". */
  variant?: "rome" | "r-rome";
  /** First words of the context texts (word-level models; see keys.ts). */
  startWords?: string[];
  /** How v* is optimised (default values.ts optimiseValues): a sweep passes one that reuses the v* another
   *  method optimised with the same settings (study/shared_values.ts). */
  optimise?: typeof optimiseValues;
  /** The unedited residuals of the prompts whose keys are read (evaluation/residuals.ts; the caller owns
   *  them): each pass starts at the layer it reads. A sweep passes its block's, shared by its calls. */
  residuals?: ResidualCache;
}

/**
 * One independent rank-one edit per request, each computed against the current model (batched:
 * their keys and values are computed together). Apply them one at a time, or combine them.
 */
export async function computeRome(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: KeyStats | null,
  hp: RomeHparams,
  o: RomeOptions = {},
): Promise<Edit[]> {
  // Keyed by the edited layer, so that statistics of another layer are named as such below.
  const all = new Map(stats ? [[hp.layer, stats]] : []);
  return await computeRomeAt(model, tok, requests, requests.map(() => hp.layer), all, hp, o);
}

/** The v* optimisation of ROME / R-ROME edits at `layers` (one per request): at the MLP output, over the
 *  method's context templates (the bare "{}" first). The sweep asks for the same ahead of its edits. */
export async function romeValueOptions(
  model: Model,
  tok: Tokenizer,
  hp: RomeHparams,
  layers: number[],
  startWords?: string[],
): Promise<ValueOptions & { layers: number[] }> {
  const contexts = await contextTemplates(model, tok, { ...hp.templates, startWords });
  return { ...valueOptions(hp, layers[0], "mlp", contexts), layers };
}

/**
 * ROME edits of request i at layers[i] (hp.layer is ignored): a sweep's facts x candidate layers as one
 * batch. Edits at different layers are independent, so each is the edit computeRome makes alone (its
 * v* optimised in the same batch as the others, each request stopping on its own).
 */
export async function computeRomeAt(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  layers: number[],
  stats: Map<number, KeyStats>,
  hp: RomeHparams,
  o: RomeOptions = {},
): Promise<Edit[]> {
  const variant = o.variant ?? "rome";
  const f = model.config.nInner;
  if (layers.length !== requests.length) {
    throw new Error(`${variant}: ${layers.length} layers for ${requests.length} requests`);
  }
  const distinct = [...new Set(layers)].sort((a, b) => a - b);
  if (hp.mom2Adjustment) {
    for (const layer of distinct) {
      const s = stats.get(layer);
      if (!s) throw new Error(`${variant}: mom2 adjustment needs the key statistics of layer ${layer}`);
      if (s.layer !== layer || s.width !== f) {
        throw new Error(
          `${variant}: key statistics are of layer ${s.layer} (width ${s.width}), the edit is at layer ${layer} (width ${f})`,
        );
      }
    }
  }
  // The factorisations of C run while the values are optimised (on the GPU), awaited before the solves.
  const factors = Promise.all(hp.mom2Adjustment ? distinct.map((l) => stats.get(l)!.prepareSolve()) : []);
  factors.catch(() => {}); // a failure surfaces at the await below, not as an unhandled rejection
  const valueCall = await romeValueOptions(model, tok, hp, layers, o.startWords);
  const contexts = valueCall.contexts, n = contexts.length;

  // Keys and MLP outputs at the subject's last token, in every context (context 0 = the bare prompt), at
  // each request's layer, reading key i*n + c and value i*n + c of request i in context c: one pass for
  // every layer, each prompt once (readFactStates merges a sweep's requests of one fact at every layer),
  // from the layer read where the unedited residuals are kept.
  const instances: PromptInstance[] = [], reads: StateRead[] = [];
  requests.forEach((r, i) =>
    contexts.forEach((c) => {
      const instance = instances.push(instantiate(tok, c, r.prompt, r.subject, r.noise, hp.factToken)) - 1;
      reads.push({ instance, layer: layers[i], site: "key" }, { instance, layer: layers[i], site: "mlp" });
    })
  );
  // The unedited model with the kept residuals: an empty set of virtual edits.
  const unedited = o.residuals && new VirtualEditSet(model, [], o.residuals);
  let states: Float32Array[];
  try {
    states = await readFactStates(
      model,
      instances,
      reads,
      unedited && {
        edits: unedited,
        itemEdit: instances.map(() => -1),
      },
    );
  } finally {
    unedited?.release();
  }
  const keys = states.filter((_, k) => k % 2 === 0), values = states.filter((_, k) => k % 2 === 1);

  const vs = await (o.optimise ?? optimiseValues)(model, tok, requests, valueCall);

  await factors;
  return requests.map((request, i) => {
    const layer = layers[i];
    const myKeys = keys.slice(i * n, (i + 1) * n), myValues = values.slice(i * n, (i + 1) * n);
    const kStar = meanOf(myKeys);
    const direction = hp.mom2Adjustment ? stats.get(layer)!.solve(kStar) : kStar;
    const uNorm = norm(direction);
    const u = Float32Array.from(direction, (v) => v / uNorm);
    // The key the update is solved for, and the value it currently maps to.
    const [k, v] = variant === "rome" ? [myKeys[0], myValues[0]] : [kStar, meanOf(myValues)];
    const denominator = dot(k, u);
    const vStar = vs[i].target;
    const r = Float32Array.from(vStar, (x, j) => (x - v[j]) / denominator);
    return {
      method: variant,
      requests: [request],
      deltas: [keyValueDelta(model, layer, u, r, 1)],
      info: {
        layer,
        hparams: { ...hp, layer },
        contexts: contexts.length,
        kStarNorm: norm(kStar),
        keyDotU: denominator,
        deltaNorm: norm(vs[i].delta),
        targetInitNorm: norm(vs[i].targetInit),
        vStar: Array.from(vStar),
        valueLosses: vs[i].losses,
        valueUpdates: vs[i].updates,
        targetProbDuringOptimisation: vs[i].targetProb,
      },
    } satisfies Edit;
  });
}
