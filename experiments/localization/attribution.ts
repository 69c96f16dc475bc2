// Gradient attribution for locating facts: which MLP neurons and layers carry a prompt's answer
// (integrated gradients, "knowledge neurons"), and which layer to edit (Layer Gradient Analysis).
//
// Integrated gradients (Dai et al. 2022; Chun & Hur, equations 1-2). For a prompt
// x with answer y and the pre-GELU activation a in R^f of layer l's MLP (c_fc output, hook site
// "mlp_pre") at the LAST prompt position, the attribution of neuron i is
//
//   Attr(a_i) = a_i * integral_0^1 dp(y | x, a -> alpha a) / d(alpha a)_i  d alpha
//            ~= (a_i / m) * sum_{k=0}^{m-1} dp(y | x, a -> alpha_k a) / d(alpha_k a)_i,   alpha_k = k / (m - 1)
//
// with baseline 0 and m = steps (default 20): exactly the convention of ROME's knowledge-neurons
// baseline (torch.linspace(0, 1, steps), the gradient sum times a / steps). Both ends alpha = 0 and
// alpha = 1 are sampled yet the sum is divided by m, not m - 1, so the Riemann error is O(1/m).
// All neurons of the layer are scaled together. p is the softmax probability of the answer's first
// token (after the prompt and a space, as causal tracing scores it) at the last position. Completeness: the
// attributions of a layer add up to p(x) - p(x with that layer's a zeroed), up to that error.
//
// Batching: the m scaled copies of a prompt for a layer are m sequences of one batch (the patch
// "mlp_pre"[last row] *= alpha_k), and every (prompt, layer) pair of a chunk shares that batch. One
// forward reads p per copy; dlogits = dp/dlogits = p (onehot(y) - softmax) comes from the fused
// cross-entropy kernel with per-row weights -p; one backward returns dp/d(state) at the patched rows.
// Cost per prompt: L * m sequences forward and backward (the backward stops at the lowest layer of
// its chunk), two readbacks per chunk.
//
// Layer Gradient Analysis (Golden Layers paper, section 5.1 and appendix A). For edit
// requests q with the old answer o (true object) and the new target t, and the teacher-forced mean
// cross-entropy L(q, y) of y's tokens after the prompt (sequence prompt ++ tok(" " + y)):
//
//   S_l = sum_q < dL(q, o) / dW_l , dL(q, t) / dW_l >,    W_l = h.l.mlp.c_proj.weight (optionally + c_fc)
//
// Layers whose S_l lie outside Tukey's fences (k = 1.5 IQR) are excluded; the golden layer is the
// argmax of the rest (argmax and fences on S_l are choices, the paper's equation was not available).
// Only gradients are needed, never an edit.
//
// Per-request inner products without per-request backward passes: sequences do not interact in a
// batch, so one forward/backward over all 2Q sequences gives each row's exact per-sequence gradient
// g_r = dL/d(MLP output at row r). A linear layer's weight gradient is a sum of outer products,
// dL/dW = sum_r k_r (x) g_r (k_r the c_proj input row), hence
//
//   < dL(q,o)/dW , dL(q,t)/dW > = sum_{r in o-rows, s in t-rows} (k_r . k_s)(g_r . g_s),
//
// two small Gram matrices per request and layer ([T, f] x [f, 2T] batched matmuls on the GPU; the
// same with c_fc's input ln_2(m) and the pre-GELU gradient for c_fc). Cost: one forward + one
// backward over the proxy set plus 2L (or 4L) batched Gram matmuls; the readback is 4 L Q T^2
// numbers instead of Q per-request gradients of f*d numbers per layer.
import { backward } from "../../engine/autograd.ts";
import { crossEntropy } from "../../engine/backward_ops.ts";
import type { Tensor } from "../../engine/gpu.ts";
import { type Hook, makeBatch, type Model, type Site } from "../../engine/model.ts";
import { matmul, type RowEntry } from "../../engine/ops.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { type TukeyFences, tukeyFences } from "../study/stats.ts";

// ---------------------------------------------------------------------------------------------
// Tokens

function promptIds(tok: Tokenizer, prompt: string): number[] {
  const ids = tok.encode(prompt);
  if (ids.length === 0) throw new Error(`prompt ${JSON.stringify(prompt)} has no tokens`);
  return ids;
}

/** Activation rows per batch so that kept activations (~20 d floats per row and layer) stay near 240 MB. */
function defaultMaxRows(model: Model): number {
  const { nLayer, nEmbd } = model.config;
  return Math.max(64, Math.floor(6e7 / (nLayer * 20 * nEmbd)));
}

/** Scored rows per batch so that their [rows, V] logits (and gradient) fit one storage binding. */
function maxOutputRows(model: Model): number {
  return Math.max(1, Math.floor(model.gpu.limits.maxStorageBufferBindingSize / (4 * model.config.vocabSize)));
}

interface UnitSize {
  sequences: number;
  /** Longest sequence. */
  length: number;
  /** Rows whose logits are computed. */
  outputs: number;
}

/**
 * Splits `units` into consecutive batches with at most `maxRows` activation rows (sequences x padded
 * length) and at most `maxOutputs` scored rows; a unit over a budget gets a batch of its own.
 */
function batches<U>(units: U[], size: (u: U) => UnitSize, maxRows: number, maxOutputs: number): U[][] {
  const out: U[][] = [];
  let current: U[] = [], sequences = 0, length = 0, outputs = 0;
  for (const u of units) {
    const s = size(u);
    const grown = {
      sequences: sequences + s.sequences,
      length: Math.max(length, s.length),
      outputs: outputs + s.outputs,
    };
    if (current.length > 0 && (grown.sequences * grown.length > maxRows || grown.outputs > maxOutputs)) {
      out.push(current);
      current = [];
      ({ sequences, length, outputs } = s);
    } else ({ sequences, length, outputs } = grown);
    current.push(u);
  }
  if (current.length > 0) out.push(current);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Integrated gradients

/** Riemann steps, batch size and progress of integrated gradients. */
export interface IgOptions {
  /** m: points of the Riemann sum, alpha_k = k/(m-1) for k = 0..m-1 (default 20, at least 2). */
  steps?: number;
  /** Most activation rows (sequences x padded length) per batch. */
  maxRows?: number;
  /** Called after each batch with the number of (prompt, layer) pairs done and their total. */
  onProgress?: (done: number, total: number) => void;
}

/** A prompt as token ids and the answer token whose probability is attributed. */
export interface IgItem {
  /** The prompt's token ids. */
  ids: number[];
  /** The answer token. */
  target: number;
}

/** Integrated gradients of one prompt: per-layer neuron attributions and their sums. */
export interface IgResult {
  /** p(target | prompt), read from the alpha = 1 copies. */
  prob: number;
  /** Per layer: p(target) with that layer's activation at the last position zeroed (the alpha = 0 copy). */
  baselineProb: number[];
  /** Per layer, the attribution of each of the f neurons, [L][f]. */
  neurons: Float32Array[];
  /** Per layer: the sum of its neuron attributions (completeness: ~ prob - baselineProb[l]). */
  layerSum: number[];
  /** Per layer: the largest neuron attribution. */
  layerMax: number[];
}

/** Riemann-sum points of integrated gradients (Dai et al.'s and ROME's knowledge-neurons baseline). */
export const DEFAULT_IG_STEPS = 20;

/** Integrated gradients of every MLP neuron of every layer, for each item (see the file header). */
export async function integratedGradients(
  model: Model,
  items: IgItem[],
  o: IgOptions = {},
): Promise<IgResult[]> {
  // f: the MLP's input-projection neurons ("mlp_pre"; gate and up both, for gated MLPs).
  const gpu = model.gpu,
    cfg = model.config,
    L = cfg.nLayer,
    f = model.siteWidth("mlp_pre"),
    V = cfg.vocabSize;
  const m = o.steps ?? DEFAULT_IG_STEPS;
  if (!Number.isInteger(m) || m < 2) {
    throw new Error(`integrated gradients: steps must be an integer >= 2, got ${m}`);
  }
  items.forEach((it, i) => {
    if (it.ids.length === 0) throw new Error(`integrated gradients: item ${i} has no tokens`);
    if (it.ids.length > cfg.nPositions) {
      throw new Error(
        `integrated gradients: item ${i} has ${it.ids.length} tokens, the model has ${cfg.nPositions} positions`,
      );
    }
    if (!Number.isInteger(it.target) || it.target < 0 || it.target >= V) {
      throw new Error(
        `integrated gradients: item ${i}'s target ${it.target} is outside the vocabulary (size ${V})`,
      );
    }
  });
  const alphas = Array.from({ length: m }, (_, k) => k / (m - 1));
  const results: IgResult[] = items.map(() => ({
    prob: NaN,
    baselineProb: new Array(L).fill(NaN),
    neurons: [],
    layerSum: [],
    layerMax: [],
  }));

  // A unit is one (item, layer): m copies of the item's prompt. Units are ordered top layer first,
  // so a chunk holds nearby layers and its backward stops early.
  const units: { item: number; layer: number }[] = [];
  for (let layer = L - 1; layer >= 0; layer--) items.forEach((_, item) => units.push({ item, layer }));
  const chunks = batches(
    units,
    (u) => ({ sequences: m, length: items[u.item].ids.length, outputs: m }),
    o.maxRows ?? defaultMaxRows(model),
    maxOutputRows(model),
  );

  let done = 0;
  for (const part of chunks) {
    const n = part.length;
    const batch = makeBatch(part.flatMap((u) => alphas.map(() => items[u.item].ids)));
    const T = batch.T, rows = n * m;
    // Sequence u*m + k is unit u's copy k; its last prompt position is the scaled row.
    const lastRow = (u: number, k: number) => (u * m + k) * T + items[part[u].item].ids.length - 1;
    const byLayer = [...new Set(part.map((u) => u.layer))].map((layer) => ({
      layer,
      units: [...part.keys()].filter((u) => part[u].layer === layer),
    }));

    // Per layer: capture a (from copy 0, before the patch) into acts[u], then scale the last rows.
    const acts = gpu.empty([n, f]);
    const hooks: Hook[] = byLayer.map(({ layer, units }) => ({
      layer,
      site: "mlp_pre",
      capture: { into: acts, rows: units.map((u) => lastRow(u, 0)), intoRows: units },
      patch: {
        src: null,
        entries: units.flatMap((u) =>
          alphas.map((alpha, k): RowEntry => ({
            dst: lastRow(u, k),
            src: lastRow(u, k),
            keep: alpha,
            take: 0,
          }))
        ),
      },
    }));
    const fwd = model.forward(batch, { hooks, keep: true });
    const targets = gpu.tensor([rows], part.flatMap((u) => alphas.map(() => items[u.item].target)), "u32");
    const { losses } = crossEntropy(gpu, fwd.logits, targets, rows, V);
    const probs = (await losses.read()).map((l) => Math.exp(-l));

    // dp/dlogits = p (onehot - softmax) = (-p) (softmax - onehot): cross-entropy's gradient with weights -p.
    const dlogits = gpu.empty([rows, V]);
    crossEntropy(gpu, fwd.logits, targets, rows, V, {
      dlogits,
      weights: gpu.upload([rows], probs.map((p) => -p)),
      losses,
    });
    // dp/d(alpha_k a) at the scaled rows: per layer [units * m, f], unit-major.
    const states = byLayer.map(({ layer, units }) => ({
      layer,
      site: "mlp_pre" as const,
      rows: units.flatMap((u) => alphas.map((_, k) => lastRow(u, k))),
      into: gpu.empty([units.length * m, f]),
    }));
    backward(model, fwd, { dlogits, states });
    // Sum over k on the GPU ([1, m] ones times [m, f] per unit) so that only n*f numbers come back.
    const ones = gpu.upload([m], new Array(m).fill(1));
    const sums = states.map((s, i) =>
      matmul(gpu, ones, s.into, 1, f, m, {
        batch: byLayer[i].units.length,
        strides: { a: 0, b: m * f, c: f },
        out: gpu.empty([byLayer[i].units.length, f]),
      })
    );
    const [actValues, ...sumValues] = await gpu.readMany([acts, ...sums]);
    gpu.release(acts, targets, losses, dlogits, ...sums, ...states.map((s) => s.into));
    model.releaseForward(fwd);

    byLayer.forEach(({ layer, units }, i) =>
      units.forEach((u, j) => {
        const r = results[part[u].item];
        const scores = new Float32Array(f);
        for (let c = 0; c < f; c++) scores[c] = (actValues[u * f + c] / m) * sumValues[i][j * f + c];
        r.neurons[layer] = scores;
        r.prob = probs[u * m + m - 1];
        r.baselineProb[layer] = probs[u * m];
      })
    );
    done += n;
    o.onProgress?.(done, units.length);
  }
  for (const r of results) {
    r.layerSum = r.neurons.map((s) => s.reduce((a, b) => a + b, 0));
    r.layerMax = r.neurons.map((s) => s.reduce((a, b) => Math.max(a, b), -Infinity));
  }
  return results;
}

/** A prompt (subject filled in) and its true answer. */
export interface FactPrompt {
  /** The prompt, subject filled in. */
  prompt: string;
  /** The true answer. */
  target: string;
}

/** IgResult of a fact with its decoded tokens and target. */
export interface FactAttribution extends IgResult, FactPrompt {
  /** Decoded prompt tokens. */
  tokens: string[];
  /** The attributed token: the target's first token after the prompt (targetIds). */
  targetId: number;
  /** The attributed token, decoded. */
  targetToken: string;
}

/** Integrated gradients of facts given as text; the answer's first token is attributed. */
export async function attributeFacts(
  model: Model,
  tok: Tokenizer,
  facts: FactPrompt[],
  o: IgOptions = {},
): Promise<FactAttribution[]> {
  const items = facts.map((fact) => ({
    ids: promptIds(tok, fact.prompt),
    target: targetIds(tok, fact.prompt, fact.target, { refuseUnknown: true })[0],
  }));
  const results = await integratedGradients(model, items, o);
  return results.map((r, i) => ({
    ...facts[i],
    tokens: items[i].ids.map((id) => tok.tokenString(id)),
    targetId: items[i].target,
    targetToken: tok.tokenString(items[i].target),
    ...r,
  }));
}

/** Attributions averaged over facts: per-layer sums and maxima, and per neuron. */
export interface AverageAttribution {
  /** Facts averaged. */
  facts: number;
  /** Mean over facts of p(target). */
  prob: number;
  /** Per layer, the mean over facts of IgResult.layerSum. */
  layerSum: number[];
  /** Per layer, the mean over facts of IgResult.layerMax. */
  layerMax: number[];
  /** Mean neuron attribution, [L][f]. */
  neurons: Float64Array[];
}

/** Means over facts of the per-layer scores and of the neuron attributions. */
export function averageAttributions(results: IgResult[]): AverageAttribution {
  if (results.length === 0) throw new Error("averageAttributions: no results");
  const n = results.length, L = results[0].neurons.length;
  const meanOf = (get: (r: IgResult) => number[]) =>
    Array.from({ length: L }, (_, l) => results.reduce((s, r) => s + get(r)[l], 0) / n);
  const neurons = Array.from({ length: L }, (_, l) => {
    const acc = new Float64Array(results[0].neurons[l].length);
    for (const r of results) r.neurons[l].forEach((v, i) => (acc[i] += v / n));
    return acc;
  });
  return {
    facts: n,
    prob: results.reduce((s, r) => s + r.prob, 0) / n,
    layerSum: meanOf((r) => r.layerSum),
    layerMax: meanOf((r) => r.layerMax),
    neurons,
  };
}

/**
 * The `span` consecutive layers with the highest total score (first such window on ties): span 1
 * is the argmax (a ROME layer), span 5 a MEMIT window. `scores` is indexed by layer.
 */
export function bestWindow(scores: readonly number[], span: number): number[] {
  if (!Number.isInteger(span) || span < 1 || span > scores.length) {
    throw new Error(`bestWindow: span must be an integer in [1, ${scores.length}], got ${span}`);
  }
  scores.forEach((s, l) => {
    if (!Number.isFinite(s)) throw new Error(`bestWindow: the score of layer ${l} is ${s}`);
  });
  let best = 0, bestTotal = -Infinity;
  for (let start = 0; start + span <= scores.length; start++) {
    let total = 0;
    for (let l = start; l < start + span; l++) total += scores[l];
    if (total > bestTotal) [best, bestTotal] = [start, total];
  }
  return Array.from({ length: span }, (_, i) => best + i);
}

/** A neuron whose attribution exceeds 0.2 x the largest (Dai et al.'s knowledge neurons). */
export interface KnowledgeNeuron {
  /** The neuron's layer. */
  layer: number;
  /** Its index in the MLP's inner layer [0, f). */
  neuron: number;
  /** Its attribution. */
  score: number;
}

/** Knowledge-neurons' coarse selection: neurons scoring above `threshold` x the largest score over
 *  every layer (default 0.2), strongest first. */
export function knowledgeNeurons(result: Pick<IgResult, "neurons">, threshold = 0.2): KnowledgeNeuron[] {
  let max = -Infinity;
  for (const s of result.neurons) for (const v of s) max = Math.max(max, v);
  const out: KnowledgeNeuron[] = [];
  result.neurons.forEach((s, layer) =>
    s.forEach((score, neuron) => {
      if (score > threshold * max) out.push({ layer, neuron, score });
    })
  );
  return out.sort((a, b) => b.score - a.score);
}

// ---------------------------------------------------------------------------------------------
// Layer Gradient Analysis

/** The MLP weights whose gradients Layer Gradient Analysis compares. */
export type LgaParam = "c_proj" | "c_fc";

/** Weights, fence multiplier, batch size and progress of Layer Gradient Analysis. */
export interface LgaOptions {
  /** Weights whose gradients are compared (default ["c_proj"]); both add their inner products. */
  params?: LgaParam[];
  /** Tukey fence multiplier (default 1.5). */
  fenceK?: number;
  /** Upper bound on activation rows per batch, to bound memory. */
  maxRows?: number;
  /** Called after each batch with the number of requests done and their total. */
  onProgress?: (done: number, total: number) => void;
}

/** An edit request as token ids: the prompt, the old answer's tokens and the new target's. */
export interface LgaItem {
  /** The prompt's token ids. */
  prompt: number[];
  /** The old (true) answer's token ids. */
  old: number[];
  /** The new target's token ids. */
  new: number[];
}

/** Per request and layer, the inner product of the old and new answers' weight gradients. */
export interface LgaGradients {
  /** Per request and layer: < grad L(q, old), grad L(q, new) > over the chosen weights, [Q][L]. */
  perRequest: number[][];
  /** Per request: the teacher-forced mean cross-entropy of the old answer and of the new target. */
  lossOld: number[];
  /** Per request: the same for the new target. */
  lossNew: number[];
}

/** Per-request, per-layer gradient inner products (see the file header for the Gram-matrix trick). */
export async function lgaInnerProducts(
  model: Model,
  items: LgaItem[],
  o: Omit<LgaOptions, "fenceK"> = {},
): Promise<LgaGradients> {
  const gpu = model.gpu, cfg = model.config, L = cfg.nLayer, d = cfg.nEmbd, V = cfg.vocabSize;
  const f = cfg.nInner, fPre = model.siteWidth("mlp_pre"); // key width; c_fc's output width
  const params = o.params ?? ["c_proj"];
  if (params.length === 0 || params.some((p) => p !== "c_proj" && p !== "c_fc")) {
    throw new Error(
      `LGA: params must be a non-empty list of "c_proj" and "c_fc", got ${JSON.stringify(params)}`,
    );
  }
  // Sequence prompt ++ answer[:-1]: row |prompt| - 1 + j predicts answer[j].
  const sequence = (it: LgaItem, answer: number[]) => [...it.prompt, ...answer.slice(0, -1)];
  items.forEach((it, i) => {
    for (
      const [what, ids] of [["prompt", it.prompt], ["old answer", it.old], ["new target", it.new]] as const
    ) {
      if (ids.length === 0) throw new Error(`LGA: request ${i} has an empty ${what}`);
      ids.forEach((id) => {
        if (!(Number.isInteger(id) && id >= 0 && id < V)) {
          throw new Error(`LGA: request ${i}'s ${what} has token ${id} outside the vocabulary`);
        }
      });
    }
    const longest = Math.max(sequence(it, it.old).length, sequence(it, it.new).length);
    if (longest > cfg.nPositions) {
      throw new Error(`LGA: request ${i} needs ${longest} positions, the model has ${cfg.nPositions}`);
    }
  });
  const out: LgaGradients = { perRequest: [], lossOld: [], lossNew: [] };
  const indices = [...items.keys()];
  const chunks = batches(
    indices,
    (i) => ({
      sequences: 2,
      length: Math.max(sequence(items[i], items[i].old).length, sequence(items[i], items[i].new).length),
      outputs: items[i].old.length + items[i].new.length,
    }),
    o.maxRows ?? defaultMaxRows(model),
    maxOutputRows(model),
  );
  for (const part of chunks) {
    const Q = part.length;
    // Request q's old-answer sequence is b = 2q, its new-target sequence b = 2q + 1.
    const answers = part.flatMap((i) => [items[i].old, items[i].new]);
    const batch = makeBatch(
      part.flatMap((i) => [sequence(items[i], items[i].old), sequence(items[i], items[i].new)]),
    );
    const T = batch.T, R = 2 * Q * T;
    const outputRows: number[] = [], targets: number[] = [], weights: number[] = [];
    answers.forEach((answer, b) => {
      const start = b * T + items[part[b >> 1]].prompt.length - 1;
      answer.forEach((id, j) => {
        outputRows.push(start + j);
        targets.push(id);
        weights.push(1 / answer.length); // mean over the answer's tokens
      });
    });
    // Every row's keys and gradients of every layer, the last one's too (the Gram blocks below).
    const fwd = model.forward(batch, { outputRows, keep: true, fullLastBlock: true });
    const n = outputRows.length;
    const dlogits = gpu.empty([n, V]);
    const { losses } = crossEntropy(gpu, fwd.logits, gpu.upload([n], targets, "u32"), n, V, {
      dlogits,
      weights: gpu.upload([n], weights),
    });
    // Gradients of every row's MLP output ("mlp") and, for c_fc, pre-GELU activation ("mlp_pre").
    const all = Array.from({ length: R }, (_, r) => r);
    const states: { layer: number; site: Site; rows: number[]; into: Tensor }[] = [];
    for (let l = 0; l < L; l++) {
      if (params.includes("c_proj")) {
        states.push({ layer: l, site: "mlp" as const, rows: all, into: gpu.empty([R, d]) });
      }
      if (params.includes("c_fc")) {
        states.push({ layer: l, site: "mlp_pre" as const, rows: all, into: gpu.empty([R, fPre]) });
      }
    }
    backward(model, fwd, { dlogits, states });
    // Per layer and weight: Gram blocks [Q, T, 2T] = (old rows of q) x (both sequences of q)^T, of the
    // weight's input rows and of its output gradients; columns T..2T are the old-by-new block.
    const grams: Tensor[] = [];
    const gram = (x: Tensor, width: number) =>
      grams.push(matmul(gpu, x, x, T, 2 * T, width, {
        transB: true,
        batch: Q,
        strides: { a: 2 * T * width, b: 2 * T * width, c: 2 * T * T },
        out: gpu.empty([Q, T, 2 * T]),
      }));
    let s = 0;
    for (let l = 0; l < L; l++) {
      const a = fwd.acts!.layers[l];
      if (params.includes("c_proj")) {
        gram(a.key, f);
        gram(states[s++].into, d);
      }
      if (params.includes("c_fc")) {
        gram(a.ln2, d);
        gram(states[s++].into, fPre);
      }
    }
    const [lossValues, ...gramValues] = await gpu.readMany([losses, ...grams]);
    gpu.release(dlogits, losses, ...grams, ...states.map((st) => st.into));
    model.releaseForward(fwd);

    // Mean losses per sequence, in the order of the output rows.
    let row = 0;
    const meanLoss = answers.map((answer) => {
      let sum = 0;
      for (let j = 0; j < answer.length; j++) sum += lossValues[row++];
      return sum / answer.length;
    });
    part.forEach((_, q) => {
      const perLayer = new Array(L).fill(0);
      let g = 0;
      for (let l = 0; l < L; l++) {
        for (let p = 0; p < params.length; p++, g += 2) {
          const inputs = gramValues[g], grads = gramValues[g + 1];
          let sum = 0;
          for (let r = 0; r < T; r++) {
            const base = q * 2 * T * T + r * 2 * T + T;
            for (let c = 0; c < T; c++) sum += inputs[base + c] * grads[base + c];
          }
          perLayer[l] += sum;
        }
      }
      out.perRequest.push(perLayer);
      out.lossOld.push(meanLoss[2 * q]);
      out.lossNew.push(meanLoss[2 * q + 1]);
    });
    o.onProgress?.(out.perRequest.length, items.length);
  }
  return out;
}

/** LGA's choice: Tukey's fences on S_l, the excluded layers, the ranking and the golden layer. */
export interface GoldenLayers {
  /** Tukey's fences on the scores S_l. */
  fences: TukeyFences;
  /** Layers outside the fences (excluded), and the rest. */
  excluded: number[];
  /** Layers inside the fences. */
  kept: number[];
  /** The kept layers by score, highest first; golden = ranking[0]. */
  ranking: number[];
  /** The golden layer: the kept layer with the highest score. */
  golden: number;
}

/** Drops layers whose score lies outside Tukey's fences (k x IQR) and ranks the rest. */
export function goldenLayers(scores: readonly number[], k = 1.5): GoldenLayers {
  const fences = tukeyFences(scores, k);
  const ranking = [...fences.inliers].sort((a, b) => scores[b] - scores[a] || a - b);
  return { fences, excluded: fences.outliers, kept: fences.inliers, ranking, golden: ranking[0] };
}

/** An edit request as text: the prompt (subject filled in), its true answer and the new target. */
export interface LgaRequest {
  /** The prompt, subject filled in. */
  prompt: string;
  /** The true answer. */
  targetTrue: string;
  /** The new target. */
  targetNew: string;
}

/** Layer Gradient Analysis of a request set: S_l per layer and the golden layer. */
export interface LgaResult extends LgaGradients {
  /** The weights whose gradients were compared. */
  params: LgaParam[];
  /** S_l = sum over requests of the per-request inner products. */
  scores: number[];
  /** The fences, ranking and golden layer of `scores`. */
  selection: GoldenLayers;
}

/** Layer Gradient Analysis over a proxy set of edit requests. */
export async function layerGradientAnalysis(
  model: Model,
  tok: Tokenizer,
  requests: LgaRequest[],
  o: LgaOptions = {},
): Promise<LgaResult> {
  if (requests.length === 0) throw new Error("LGA: no requests");
  const items = requests.map((r) => ({
    prompt: promptIds(tok, r.prompt),
    old: targetIds(tok, r.prompt, r.targetTrue, { refuseUnknown: true }),
    new: targetIds(tok, r.prompt, r.targetNew, { refuseUnknown: true }),
  }));
  const g = await lgaInnerProducts(model, items, o);
  const scores = Array.from(
    { length: model.config.nLayer },
    (_, l) => g.perRequest.reduce((s, q) => s + q[l], 0),
  );
  return { ...g, params: o.params ?? ["c_proj"], scores, selection: goldenLayers(scores, o.fenceK ?? 1.5) };
}
