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
import type { GPT2 } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { type Edit, type EditRequest, keyValueDelta } from "./edit.ts";
import type { RomeHparams } from "./hparams.ts";
import { contextTemplates, factStates, instantiate } from "./keys.ts";
import { dot, meanOf, norm } from "./linalg.ts";
import type { KeyStats } from "./stats.ts";
import { optimiseValues } from "./values.ts";

export interface RomeOptions {
  /** "rome" (default) or "r-rome". */
  variant?: "rome" | "r-rome";
  /** First words of the context texts (word-level models; see keys.ts). */
  startWords?: string[];
}

/**
 * One independent rank-one edit per request, each computed against the current model (batched:
 * their keys and values are computed together). Apply them one at a time, or combine them.
 */
export async function computeRome(
  model: GPT2,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: KeyStats | null,
  hp: RomeHparams,
  o: RomeOptions = {},
): Promise<Edit[]> {
  const variant = o.variant ?? "rome";
  const layer = hp.layer, f = model.config.nInner;
  if (hp.mom2Adjustment) {
    if (!stats) throw new Error(`${variant}: mom2 adjustment needs the key statistics of layer ${layer}`);
    if (stats.layer !== layer || stats.width !== f) {
      throw new Error(
        `${variant}: key statistics are of layer ${stats.layer} (width ${stats.width}), the edit is at layer ${layer} (width ${f})`,
      );
    }
  }
  const contexts = await contextTemplates(model, tok, { ...hp.templates, startWords: o.startWords });

  // Keys and MLP outputs at the subject's last token, in every context (context 0 = the bare prompt).
  const instances = requests.flatMap((r) =>
    contexts.map((c) => instantiate(tok, c, r.prompt, r.subject, r.noise, hp.factToken))
  );
  const [keys, values] = await factStates(model, instances, layer, ["key", "mlp"]);
  const n = contexts.length;

  const vs = await optimiseValues(model, tok, requests, {
    layer,
    site: "mlp",
    contexts,
    steps: hp.vNumGradSteps,
    lr: hp.vLr,
    weightDecay: hp.vWeightDecay,
    klFactor: hp.klFactor,
    clampNormFactor: hp.clampNormFactor,
    factToken: hp.factToken,
  });

  return requests.map((request, i) => {
    const myKeys = keys.slice(i * n, (i + 1) * n), myValues = values.slice(i * n, (i + 1) * n);
    const kStar = meanOf(myKeys);
    const direction = hp.mom2Adjustment ? stats!.solve(kStar) : kStar;
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
        hparams: hp,
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
