// MEMIT (Meng et al. 2023) and EMMET (Gupta et al. 2024): many facts at once, as one low-rank
// update per edited layer.
//
//   z_i  = h_i + delta_i at the block output of the last edited layer L* (values.ts, site "resid")
//   for each edited layer l, lowest first, with the updates of the layers below already in place:
//     K  [f,n] keys at the subject's last token, averaged per template group, then over groups
//              (half the bare prompt, half the mean of the prefixed prompts)
//     R  [d,n] = (Z - H) / (layers left), H = the block output of L* at the bare prompts now
//     MEMIT:  Delta = R K^T (lambda C + K K^T)^-1
//     EMMET:  Delta = R (K^T C'^-1 K + eps I)^-1 K^T C'^-1,  C' = lambda_m C   (equality constraints)
//     W_proj[f,d] += Delta^T
//
// Both solves are done as Delta^T = U X with U = C^-1 K [f,n] (n solves with C's cached Cholesky
// factor) and an n x n system: MEMIT's form becomes (lambda I + K^T C^-1 K)^-1 by the push-through
// identity K^T (lambda C + K K^T)^-1 = (lambda I + K^T C^-1 K)^-1 K^T C^-1, and EMMET's is already
// that (K^T C'^-1 K + eps I = (K^T C^-1 K + lambda_m eps I) / lambda_m). So the two differ by their
// regulariser (MEMIT lambda, EMMET lambda_m * eps) and by MEMIT's spreading over layers; f^3 work
// only happens once per layer, in the factorisation.
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import {
  type AppliedEdit,
  applyEdit,
  type Edit,
  type EditRequest,
  keyValueDelta,
  type LowRankDelta,
} from "./edit.ts";
import type { EmmetHparams, MemitHparams } from "./hparams.ts";
import { contextTemplates, factStates, groupMean, instantiate } from "./keys.ts";
import { norm, solveSpd } from "./linalg.ts";
import type { KeyStats } from "./stats.ts";
import { optimiseValues, type ValueOptions, valueOptions, type ValueResult } from "./values.ts";

export interface BatchEditOptions {
  /** First words of the context texts (word-level models; see keys.ts). */
  startWords?: string[];
  log?: (line: string) => void;
  /** Each request's z, already optimised with batchValueOptions's options (a sweep optimises many facts'
   *  z in one batch: they are independent until the joint solve). */
  values?: ValueResult[];
}

export function computeMemit(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  hp: MemitHparams,
  o: BatchEditOptions = {},
): Promise<Edit> {
  return computeBatchEdit(
    model,
    tok,
    requests,
    stats,
    "memit",
    hp,
    { ridge: hp.mom2UpdateWeight, scale: 1 },
    o,
  );
}

export function computeEmmet(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  hp: EmmetHparams,
  o: BatchEditOptions = {},
): Promise<Edit> {
  // U = C'^-1 K = C^-1 K / lambda_m; D = K^T U + eps I.
  return computeBatchEdit(model, tok, requests, stats, "emmet", hp, {
    ridge: hp.emmetLambda,
    scale: 1 / hp.mom2UpdateWeight,
  }, o);
}

/** The z optimisation of a MEMIT / EMMET edit: at the block output of the last edited layer, over the
 *  method's context templates. The sweep's mass edits ask for the same ahead (values optimised once). */
export async function batchValueOptions(
  model: Model,
  tok: Tokenizer,
  hp: MemitHparams | EmmetHparams,
  startWords?: string[],
): Promise<ValueOptions> {
  const contexts = await contextTemplates(model, tok, { ...hp.templates, startWords });
  return valueOptions(hp, hp.layers[hp.layers.length - 1], "resid", contexts);
}

/** X = (K^T U + ridge I)^-1 R^T with U = scale * C^-1 K. */
interface Solver {
  ridge: number;
  scale: number;
}

async function computeBatchEdit(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  method: "memit" | "emmet",
  hp: MemitHparams | EmmetHparams,
  solver: Solver,
  o: BatchEditOptions,
): Promise<Edit> {
  const log = o.log ?? (() => {});
  const d = model.config.nEmbd, f = model.config.nInner, n = requests.length;
  if (n === 0) throw new Error(`${method}: no requests`);
  if (hp.layers.length === 0) throw new Error(`${method}: no layers`);
  const layers = [...hp.layers];
  for (const l of layers) {
    const s = stats.get(l);
    if (!s) throw new Error(`${method}: no key statistics for layer ${l}`);
    if (s.width !== f) {
      throw new Error(`${method}: key statistics of layer ${l} have width ${s.width}, the model's keys ${f}`);
    }
  }
  // The factorisations of C run while z is optimised (on the GPU), awaited before each layer's solve.
  const choleskys = Promise.all(layers.map((l) => stats.get(l)!.prepareSolve()));
  choleskys.catch(() => {}); // a failure surfaces at the await below, not as an unhandled rejection
  const zLayer = layers[layers.length - 1];
  const zOptions = await batchValueOptions(model, tok, hp, o.startWords);
  const contexts = zOptions.contexts;

  // z: target block outputs at the last edited layer.
  if (o.values && o.values.length !== n) {
    throw new Error(`${method}: ${o.values.length} precomputed z for ${n} requests`);
  }
  const values = o.values ?? await optimiseValues(model, tok, requests, zOptions);
  log(
    `${method}: z of ${n} facts at layer ${zLayer}, mean target probability ${
      (values.reduce((s, v) => s + v.targetProb, 0) / n).toFixed(3)
    }`,
  );

  const keyInstances = requests.flatMap((r) =>
    contexts.map((c) => instantiate(tok, c, r.prompt, r.subject, r.noise, hp.factToken))
  );
  const bareInstances = requests.map((r) =>
    instantiate(tok, "{}", r.prompt, r.subject, r.noise, hp.factToken)
  );
  const deltas: LowRankDelta[] = [];
  const applied: AppliedEdit[] = [];
  const residualNorms: number[] = [];
  try {
    for (const [i, layer] of layers.entries()) {
      const [keyRows] = await factStates(model, keyInstances, layer, ["key"]);
      const [current] = await factStates(model, bareInstances, zLayer, ["resid"]);
      // K [f,n] stored row-major; R^T [n,d].
      const K = new Float64Array(f * n);
      const Rt = new Float64Array(n * d);
      requests.forEach((_, j) => {
        const mine = keyRows.slice(j * contexts.length, (j + 1) * contexts.length);
        const k = groupMean([mine.slice(0, 1), mine.slice(1)].filter((g) => g.length > 0));
        for (let a = 0; a < f; a++) K[a * n + j] = k[a];
        for (let c = 0; c < d; c++) {
          Rt[j * d + c] = (values[j].target[c] - current[j][c]) / (layers.length - i);
        }
      });
      residualNorms.push(norm(Rt) / Math.sqrt(n));
      await choleskys;
      const factors = solveUpdate(
        stats.get(layer)!,
        K,
        Rt,
        n,
        d,
        solver.ridge,
        solver.scale,
        `${method} layer ${layer}`,
      );
      const delta = keyValueDelta(model, layer, factors.keys, factors.values, n);
      deltas.push(delta);
      log(`${method}: layer ${layer}: mean residual norm ${residualNorms.at(-1)!.toFixed(4)}`);
      // The next layer's keys and residuals see this layer's update.
      if (i < layers.length - 1) {
        applied.push(await applyEdit(model, { method, requests, deltas: [delta], info: {} }));
      }
    }
  } finally {
    for (const a of applied.reverse()) a.undo();
  }
  return {
    method,
    requests,
    deltas,
    info: {
      layers,
      zLayer,
      hparams: hp,
      contexts: contexts.length,
      residualNorms,
      valueLosses: values.map((v) => v.losses.at(-1)),
      targetProbsDuringOptimisation: values.map((v) => v.targetProb),
    },
  };
}

/**
 * Delta^T = U X with U = scale * C^-1 K [f,n] and X = (K^T U + ridge I)^-1 R^T [n,d]: MEMIT's and
 * EMMET's update as a rank-n factor pair (keys U, values X; keyValueDelta stores it in the model's layout).
 */
export function solveUpdate(
  stats: KeyStats,
  K: Float64Array,
  Rt: Float64Array,
  n: number,
  d: number,
  ridge: number,
  scale: number,
  what: string,
): { keys: Float32Array; values: Float32Array } {
  const f = stats.width;
  const U = new Float64Array(f * n);
  const column = new Float64Array(f);
  for (let j = 0; j < n; j++) {
    for (let a = 0; a < f; a++) column[a] = K[a * n + j];
    const x = stats.solve(column);
    for (let a = 0; a < f; a++) U[a * n + j] = scale * x[a];
  }
  const A = new Float64Array(n * n);
  for (let p = 0; p < n; p++) {
    for (let q = 0; q < n; q++) {
      let s = 0;
      for (let a = 0; a < f; a++) s += K[a * n + p] * U[a * n + q];
      A[p * n + q] = s + (p === q ? ridge : 0);
    }
  }
  // K^T C^-1 K is symmetric in exact arithmetic; symmetrise away rounding before Cholesky.
  for (let p = 0; p < n; p++) {
    for (let q = 0; q < p; q++) A[p * n + q] = A[q * n + p] = (A[p * n + q] + A[q * n + p]) / 2;
  }
  const X = solveSpd(A, n, Rt, d, `${what}: K^T C^-1 K + regulariser`);
  return { keys: Float32Array.from(U), values: Float32Array.from(X) };
}
