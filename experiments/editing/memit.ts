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
//
// Independent edits (a sweep's one-fact edits at every layer window) are computed together: at step i
// every edit's keys and residuals come from one batched pass in which each prompt carries its own
// edit's updates of steps < i as a virtual edit (edit.ts VirtualEditSet), instead of applying, reading
// and undoing each edit's updates one edit at a time; an edit alone takes the same path.
import type { Model, Site } from "../../engine/model.ts";
import type { ResidualCache } from "../evaluation/residuals.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { type Edit, type EditRequest, keyValueDelta, type LowRankDelta, VirtualEditSet } from "./edit.ts";
import type { EmmetHparams, MemitHparams } from "./hparams.ts";
import {
  contextTemplates,
  groupMean,
  instantiate,
  type PromptInstance,
  readFactStates,
  type StateRead,
} from "./keys.ts";
import { norm, solveSpd } from "./linalg.ts";
import type { KeyStats } from "./stats.ts";
import { optimiseValues, type ValueOptions, valueOptions, type ValueResult } from "./values.ts";

/** Options of a MEMIT / EMMET computation. */
export interface BatchEditOptions {
  /** First words of the context texts (word-level models; see keys.ts). */
  startWords?: string[];
  /** Where lines about each layer's solve go. */
  log?: (line: string) => void;
  /** Each request's z, already optimised with batchValueOptions's options (a sweep optimises many facts'
   *  z in one batch: they are independent until the joint solve). */
  values?: ValueResult[];
  /** The unedited residuals of the prompts whose keys are read (evaluation/residuals.ts; the caller owns
   *  them): each step's passes start at the lowest of their edits' layers and the layers they read, the
   *  same bits with less of the model run. A sweep passes its block's, shared by its calls. */
  residuals?: ResidualCache;
}

/** One MEMIT edit of all `requests` (rank n at each of hp.layers). */
export function computeMemit(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  hp: MemitHparams,
  o: BatchEditOptions = {},
): Promise<Edit> {
  return computeOne(model, tok, "memit", { requests, hp, values: o.values }, stats, o);
}

/** One EMMET edit of all `requests` (equality-constrained, rank n at each of hp.layers). */
export function computeEmmet(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  hp: EmmetHparams,
  o: BatchEditOptions = {},
): Promise<Edit> {
  return computeOne(model, tok, "emmet", { requests, hp, values: o.values }, stats, o);
}

/** One MEMIT or EMMET edit among independent ones: its facts, its hyper-parameters (its layers) and, when
 *  optimised ahead, its facts' z (BatchEditOptions.values). */
export interface BatchEditJob {
  /** The facts this edit writes. */
  requests: EditRequest[];
  /** Its hyper-parameters (MEMIT's or EMMET's, as the method computed). */
  hp: MemitHparams | EmmetHparams;
  /** Each request's z, when optimised ahead (else optimised here). */
  values?: ValueResult[];
}

async function computeOne(
  model: Model,
  tok: Tokenizer,
  method: "memit" | "emmet",
  job: BatchEditJob,
  stats: Map<number, KeyStats>,
  o: BatchEditOptions,
): Promise<Edit> {
  return (await computeBatchEdits(model, tok, method, [job], stats, o))[0];
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

/** X = (K^T U + ridge I)^-1 R^T with U = scale * C^-1 K: MEMIT's ridge is lambda; EMMET's U = C'^-1 K =
 *  C^-1 K / lambda_m and its ridge eps (D = K^T U + eps I). */
function solverOf(
  method: "memit" | "emmet",
  hp: MemitHparams | EmmetHparams,
): { ridge: number; scale: number } {
  if (method === "memit") return { ridge: hp.mom2UpdateWeight, scale: 1 };
  if (!("emmetLambda" in hp)) throw new Error("emmet: hyper-parameters without emmetLambda (MEMIT's?)");
  return { ridge: hp.emmetLambda, scale: 1 / hp.mom2UpdateWeight };
}

/** Independent MEMIT or EMMET edits, computed together (the file header); edit i equals computeMemit /
 *  computeEmmet of job i to float tolerance. */
export async function computeBatchEdits(
  model: Model,
  tok: Tokenizer,
  method: "memit" | "emmet",
  jobs: BatchEditJob[],
  stats: Map<number, KeyStats>,
  o: Omit<BatchEditOptions, "values">,
): Promise<Edit[]> {
  const log = o.log ?? (() => {});
  const d = model.config.nEmbd, f = model.config.nInner;
  jobs.forEach((job, e) => {
    const where = jobs.length > 1 ? `${method} edit ${e}` : method;
    if (job.requests.length === 0) throw new Error(`${where}: no requests`);
    if (job.hp.layers.length === 0) throw new Error(`${where}: no layers`);
    for (const l of job.hp.layers) {
      const s = stats.get(l);
      if (!s) throw new Error(`${where}: no key statistics for layer ${l}`);
      if (s.width !== f) {
        throw new Error(
          `${where}: key statistics of layer ${l} have width ${s.width}, the model's keys ${f}`,
        );
      }
    }
    if (job.values && job.values.length !== job.requests.length) {
      throw new Error(`${where}: ${job.values.length} precomputed z for ${job.requests.length} requests`);
    }
  });
  // The factorisations of C run while z is optimised (on the GPU), awaited before the first solve.
  const allLayers = [...new Set(jobs.flatMap((j) => j.hp.layers))];
  const choleskys = Promise.all(allLayers.map((l) => stats.get(l)!.prepareSolve()));
  choleskys.catch(() => {}); // a failure surfaces at the await below, not as an unhandled rejection

  // z: target block outputs at each edit's last edited layer.
  const plans = [];
  for (const job of jobs) {
    const layers = [...job.hp.layers], zLayer = layers[layers.length - 1], n = job.requests.length;
    const zOptions = await batchValueOptions(model, tok, job.hp, o.startWords);
    const values = job.values ?? await optimiseValues(model, tok, job.requests, zOptions);
    log(
      `${method}: z of ${n} facts at layer ${zLayer}, mean target probability ${
        (values.reduce((s, v) => s + v.targetProb, 0) / n).toFixed(3)
      }`,
    );
    plans.push({
      job,
      layers,
      zLayer,
      n,
      contexts: zOptions.contexts,
      values,
      deltas: [] as LowRankDelta[],
      residualNorms: [] as number[],
    });
  }

  // Step i: the keys at each edit's i-th layer (over its context templates) and its residual at z's layer,
  // with its own updates of the layers below in place (virtual), then its solve.
  const steps = Math.max(...plans.map((p) => p.layers.length));
  for (let i = 0; i < steps; i++) {
    const active = plans.filter((p) => i < p.layers.length);
    const instances: PromptInstance[] = [], reads: StateRead[] = [], itemEdit: number[] = [];
    const sofar: Edit[] = [];
    const at = active.map((p) => {
      const edit = i > 0
        ? sofar.push({ method, requests: p.job.requests, deltas: p.deltas, info: {} }) - 1
        : -1;
      const add = (inst: PromptInstance, layer: number, site: Site) => {
        reads.push({ instance: instances.length, layer, site });
        instances.push(inst);
        itemEdit.push(edit);
        return reads.length - 1;
      };
      const keys = p.job.requests.flatMap((r) =>
        p.contexts.map((c) =>
          add(instantiate(tok, c, r.prompt, r.subject, r.noise, p.job.hp.factToken), p.layers[i], "key")
        )
      );
      const current = p.job.requests.map((r) =>
        add(instantiate(tok, "{}", r.prompt, r.subject, r.noise, p.job.hp.factToken), p.zLayer, "resid")
      );
      return { keys, current };
    });
    const set = sofar.length || o.residuals ? new VirtualEditSet(model, sofar, o.residuals) : undefined;
    let states: Float32Array[];
    try {
      states = await readFactStates(model, instances, reads, set && { edits: set, itemEdit });
    } finally {
      set?.release();
    }
    await choleskys;
    active.forEach((p, a) => {
      const { n, contexts } = p, layer = p.layers[i];
      // K [f,n] stored row-major; R^T [n,d].
      const K = new Float64Array(f * n);
      const Rt = new Float64Array(n * d);
      for (let j = 0; j < n; j++) {
        const mine = at[a].keys.slice(j * contexts.length, (j + 1) * contexts.length).map((r) => states[r]);
        const k = groupMean([mine.slice(0, 1), mine.slice(1)].filter((g) => g.length > 0));
        for (let x = 0; x < f; x++) K[x * n + j] = k[x];
        const current = states[at[a].current[j]];
        for (let c = 0; c < d; c++) {
          Rt[j * d + c] = (p.values[j].target[c] - current[c]) / (p.layers.length - i);
        }
      }
      p.residualNorms.push(norm(Rt) / Math.sqrt(n));
      const { ridge, scale } = solverOf(method, p.job.hp);
      const factors = solveUpdate(stats.get(layer)!, K, Rt, n, d, ridge, scale, `${method} layer ${layer}`);
      p.deltas.push(keyValueDelta(model, layer, factors.keys, factors.values, n));
      log(`${method}: layer ${layer}: mean residual norm ${p.residualNorms.at(-1)!.toFixed(4)}`);
    });
  }
  return plans.map((p) => ({
    method,
    requests: p.job.requests,
    deltas: p.deltas,
    info: {
      layers: p.layers,
      zLayer: p.zLayer,
      hparams: p.job.hp,
      contexts: p.contexts.length,
      residualNorms: p.residualNorms,
      valueLosses: p.values.map((v) => v.losses.at(-1)),
      targetProbsDuringOptimisation: p.values.map((v) => v.targetProb),
    },
  }));
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
