// The target value of an edit: ROME's v* (compute_v.py) and MEMIT's z (compute_z.py).
//
// A vector delta [d], initialised to 0, is added to a hidden state at the subject's last token of
// every prompt: the MLP output of layer l (ROME, site "mlp") or the block output (MEMIT, site
// "resid"). delta is optimised so that the model predicts the target after each rewrite prompt
// "<context>. <prompt>" while the next-token distribution after "<subject> is a" stays put:
//
//   loss = mean_prompts NLL(target)                                   (rewrite, teacher forced)
//        + kl_factor * KL(p_delta || p_0)  at the subject's last token of "{subject} is a"
//        + weight_decay * ||delta|| / ||h_0||^2                        (h_0: the state at delta = 0)
//
// with Adam (lr), at most steps-1 updates, stopping once loss < 5e-2, and delta rescaled onto the
// ball ||delta|| <= clamp_norm_factor * ||h_0|| after each update. The result is v* = h_0 + delta.
// For fact erasure ("decrease") the per-prompt NLL is replaced by -log(1 - p), p = exp(-NLL):
// bounded, and small once the target is unlikely.
//
// Gradients come from the engine's backward pass: d loss / d logits (weighted cross-entropy rows and
// the KL rows, made on the GPU from the same forward: shaders/value_loss.wgsl), then autograd's
// patchSources gives d loss / d delta; losses and gradients come back in one readback per step (which
// waits for the step's kernels). Adam on a d-vector runs on the CPU. Several requests are optimised in
// one batch: their prompts and deltas are disjoint, so the summed loss has the same per-request
// gradients, and each request stops on its own (its delta frozen) exactly as if it ran alone, to the
// bit: each prompt's delta gradient lands in a row of its own, and a request's rows are summed in prompt
// order, whichever forward parts (suffixParts) the batch put them in. A call's batches (one per layer)
// share one delta-free pass and run side by side.
import { qkvWidth } from "../../engine/config.ts";
import { backward } from "../../engine/autograd.ts";
import { crossEntropy, klGradient, type RewriteRow, rewriteWeights } from "../../engine/backward_ops.ts";
import { sideBySide, type Tensor } from "../../engine/gpu.ts";
import { type Batch, type Hook, makeBatch, type Model, type Suffix } from "../../engine/model.ts";
import { rowOps } from "../../engine/ops.ts";
import { fill } from "../../engine/optimizer.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import type { EditRequest } from "./edit.ts";
import type { ValueHparams } from "./hparams.ts";
import { batchWithNoise, type FactToken, instantiate, type PromptInstance } from "./keys.ts";

export interface ValueOptions {
  layer: number;
  /** Per request, the layer its delta is added at (default `layer` for every request): requests at
   *  different layers (a sweep's candidate layers) are optimised in one call, a batch per layer. */
  layers?: number[];
  /** "mlp": delta on the MLP output (ROME's v*); "resid": on the block output (MEMIT's z). */
  site: "mlp" | "resid";
  /** Context templates, the bare "{}" first (h_0 is read in its prompt). */
  contexts: string[];
  steps: number;
  lr: number;
  weightDecay: number;
  klFactor: number;
  clampNormFactor: number;
  /** The prompt whose distribution the KL term preserves (ROME: "{} is a"). */
  klPrompt?: string;
  /** Where delta is added (default the subject's last token). */
  factToken?: FactToken;
  /** Most computed rows (sequences x rows from the fact token on) per batch, on top of the adapter's
   *  limits (fitsOneBatch); requests are grouped to stay under both. */
  maxRowsPerBatch?: number;
  /** Called after every evaluation step with the steps done and the most there can be (every batch's
   *  steps; a batch whose requests all stop early skips the rest of its share): progress of long runs. */
  onProgress?: (done: number, total: number) => void;
}

/** The optimisation settings of a method's hyper-parameters (ROME's v*, MEMIT's z) at a layer and site. */
export function valueOptions(
  hp: ValueHparams,
  layer: number,
  site: ValueOptions["site"],
  contexts: string[],
): ValueOptions {
  return {
    layer,
    site,
    contexts,
    steps: hp.vNumGradSteps,
    lr: hp.vLr,
    weightDecay: hp.vWeightDecay,
    klFactor: hp.klFactor,
    clampNormFactor: hp.clampNormFactor,
    factToken: hp.factToken,
  };
}

export interface ValueResult {
  /** The state at the fact token of the bare prompt with delta = 0 (ROME's target_init). */
  targetInit: Float32Array;
  delta: Float32Array;
  /** targetInit + delta: v* (or z). */
  target: Float32Array;
  /** Total loss at every evaluated step. */
  losses: number[];
  /** Mean over rewrite prompts of the target probability exp(-NLL) at the last evaluated step. */
  targetProb: number;
  /** Adam updates taken. */
  updates: number;
}

const STOP_LOSS = 5e-2;

export async function optimiseValues(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  o: ValueOptions,
): Promise<ValueResult[]> {
  if (o.contexts[0] !== "{}") {
    throw new Error(
      `optimiseValues: contexts[0] must be the bare "{}", got ${JSON.stringify(o.contexts[0])}`,
    );
  }
  const layers = o.layers ?? requests.map(() => o.layer);
  if (layers.length !== requests.length) {
    throw new Error(`optimiseValues: ${layers.length} layers for ${requests.length} requests`);
  }
  for (const l of layers) {
    if (!(Number.isInteger(l) && l >= 0 && l < model.nLayer)) {
      throw new Error(`optimiseValues: layer ${l} outside [0, ${model.nLayer})`);
    }
  }
  if (!(o.steps >= 1)) throw new Error(`optimiseValues: steps must be >= 1, got ${o.steps}`);
  const plans = requests.map((r, i) => planRequest(tok, r, o, layers[i]));
  // Requests by layer, then by their rows from the fact token on (a group pads to its longest), grouped
  // within the adapter's limits. A group runs from its lowest layer, so one layer per group: a request
  // at layer l in a group from layer l' < l would recompute layers l'..l-1, unchanged by its delta.
  const suffixLength = (p: RequestPlan) => Math.max(...p.instances.map((x) => x.ids.length - x.fact));
  const order = plans.map((_, i) => i).sort((a, b) =>
    plans[a].layer - plans[b].layer || suffixLength(plans[a]) - suffixLength(plans[b])
  );
  const groups: number[][] = [];
  for (const i of order) {
    const group = groups.at(-1);
    const full = !group ||
      plans[group[0]].layer !== plans[i].layer ||
      !fitsOneBatch(model, [...group, i].map((k) => plans[k]), o.maxRowsPerBatch);
    if (full) groups.push([i]);
    else group.push(i);
  }
  // Consecutive groups share one delta-free pass while it fits (passFits): a fact's prompts are the same
  // at every layer, so the pass computes them once.
  const sets: number[][] = [];
  groups.forEach((_, g) => {
    const set = sets.at(-1);
    if (set && passFits(model, [...set, g].flatMap((k) => groups[k]).map((i) => plans[i]), o.site)) {
      set.push(g);
    } else sets.push([g]);
  });
  const results: ValueResult[] = new Array(plans.length);
  const total = groups.length * o.steps;
  let stepsDone = 0;
  for (const set of sets) {
    const members = set.flatMap((g) => groups[g]);
    const mine = members.map((i) => plans[i]);
    const starts = set.map((g) => firstComputedBlock(model, o.site, plans[groups[g][0]].layer));
    const pass = new DeltaFreePass(model, mine, o.site, starts);
    const inPass = new Map(members.map((i, k) => [i, k]));
    const runGroup = async (g: number) => {
      let step = 0;
      const out = await optimiseGroup(
        model,
        groups[g].map((i) => plans[i]),
        o,
        () => {
          step++;
          o.onProgress?.(++stepsDone, total);
        },
        { pass, inPass: groups[g].map((i) => inPass.get(i)!) },
      );
      groups[g].forEach((i, k) => results[i] = out[k]);
      if (step < o.steps) o.onProgress?.(stepsDone += o.steps - step, total);
    };
    // The set's groups run side by side, as many at a time as fit one batch together: a group reads back
    // once a step, waiting for its kernels (engine/gpu.ts sideBySide), and meanwhile the other groups'
    // steps run. Groups never share a row, so each gives the same results as alone.
    try {
      await sideBySide(
        set.length,
        (running, next) =>
          fitsOneBatch(
            model,
            [...running, next].flatMap((k) => groups[set[k]]).map((i) => plans[i]),
            o.maxRowsPerBatch,
          ),
        (k) => runGroup(set[k]),
      );
    } finally {
      pass.release();
    }
  }
  return results;
}

/**
 * Whether one batch can optimise these requests together, from the adapter's limits. Each step keeps,
 * per layer from the lowest edited one, every activation of the rows from the fact tokens on (per row
 * about 6d + the q|k|v width + the heads' width + the MLP's input and output widths, plus attention
 * probabilities over the T_k positions per head); the batch also reads its prompts' cached q|k|v per
 * layer (counted as whole prompts [rows, width], an upper bound of the DeltaFreePass's prefix rows) and
 * holds the scored rows' logits and their gradient [rows, V]. Every single tensor
 * must fit one storage binding (maxStorageBufferBindingSize) and the total the smaller of the largest
 * buffer the adapter allows (maxBufferSize) and four bindings: WebGPU exposes no memory size, and a GPU
 * may report a maxBufferSize far beyond its memory. `maxRows` (tests, benchmarks) also caps the
 * computed rows.
 */
export function fitsOneBatch(model: Model, plans: RequestPlan[], maxRows = Infinity): boolean {
  const cfg = model.config, limits = model.gpu.limits;
  const width = qkvWidth(cfg), qd = cfg.nHead * cfg.headDim;
  const instances = plans.flatMap((p) => p.instances);
  const B = instances.length;
  const Tk = Math.max(...instances.map((x) => x.ids.length));
  const Tq = Math.max(...instances.map((x) => x.ids.length - x.fact));
  const rows = B * Tq, layers = cfg.nLayer - Math.min(...plans.map((p) => p.layer));
  const scored = plans.reduce((n, p) => n + p.target.length * (p.instances.length - 1) + 1, 0);
  const fcOut = model.siteWidth("mlp_pre");
  const perRow = 6 * cfg.nEmbd + width + qd + fcOut + cfg.nInner + cfg.nHead * Tk;
  const single = 4 * Math.max(rows * Math.max(fcOut, width), B * Tk * width, scored * cfg.vocabSize);
  const total = 4 * (layers * (rows * perRow + B * Tk * width) + 2 * scored * cfg.vocabSize);
  const binding = limits.maxStorageBufferBindingSize;
  return rows <= maxRows && single <= binding && total <= Math.min(limits.maxBufferSize, 4 * binding);
}

/** One request's prompts: rewrite prompts (context + prompt + target[:-1]) then the KL prompt. */
export interface RequestPlan {
  request: EditRequest;
  /** The layer whose state its delta is added to. */
  layer: number;
  target: number[];
  instances: PromptInstance[]; // contexts.length rewrite prompts, then the KL prompt
}

export function planRequest(
  tok: Tokenizer,
  request: EditRequest,
  o: ValueOptions,
  layer = o.layer,
): RequestPlan {
  const target = targetIds(tok, request.prompt.replace("{}", request.subject), request.target, {
    refuseUnknown: true,
  });
  const instances = o.contexts.map((c) => {
    const p = instantiate(tok, c, request.prompt, request.subject, request.noise, o.factToken);
    return { ...p, ids: [...p.ids, ...target.slice(0, -1)] };
  });
  // The KL term reads the KL prompt at its fact token only, and attention is causal: the tokens after
  // it change nothing, so the prompt ends there (at the subject's end where the fact token is earlier,
  // so that fact forcing's noise keeps the whole subject).
  const kl = instantiate(tok, "{}", o.klPrompt ?? "{} is a", request.subject, request.noise, o.factToken);
  instances.push({ ...kl, ids: kl.ids.slice(0, Math.max(kl.fact, kl.subject[1] - 1) + 1) });
  return { request, layer, target, instances };
}

function logSoftmax(z: ArrayLike<number>): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < z.length; i++) mx = Math.max(mx, z[i]);
  let s = 0;
  for (let i = 0; i < z.length; i++) s += Math.exp(z[i] - mx);
  const lse = mx + Math.log(s);
  return Float64Array.from(z, (v) => v - lse);
}

function l2(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

/** h_0 and the KL reference distribution of each request, recorded at delta = 0. */
export interface ValueReference {
  targetInit: Float32Array;
  /** The KL prompt's logits at delta = 0 [V], and their log-softmax in float64. */
  klLogits: Float32Array;
  klInit: Float64Array;
}

/**
 * Instances of similar suffix lengths share a forward: padding every prompt to the longest suffix of
 * the batch nearly doubled the rows computed (ROME's 21 context templates end 3 to 7 tokens after the
 * subject), while each extra forward costs its dispatches. A part's cost is counted as its padded rows
 * plus PART_OVERHEAD_ROWS. Measured on the software adapter (32 requests' v*, 8 steps): one part per
 * batch 0.95 s per request, overheads of 64 and 256 rows 0.56 and 0.55 s, 0 (a part per length) 0.62 s.
 */
const PART_OVERHEAD_ROWS = 128;

/** Splits instances into parts of contiguous suffix lengths minimising padded rows + overhead per part:
 *  a dynamic programme over the distinct lengths (at most a few dozen). Returns instance indices. */
export function suffixParts(lengths: number[], overheadRows = PART_OVERHEAD_ROWS): number[][] {
  const distinct = [...new Set(lengths)].sort((a, b) => a - b);
  const count = distinct.map((l) => lengths.filter((x) => x === l).length);
  // best[j]: least cost of the lengths distinct[0..j), cut[j]: where its last part starts.
  const best = [0], cut = [0];
  for (let j = 1; j <= distinct.length; j++) {
    best.push(Infinity);
    cut.push(0);
    let members = 0;
    for (let i = j - 1; i >= 0; i--) {
      members += count[i];
      const cost = best[i] + members * distinct[j - 1] + overheadRows;
      if (cost < best[j]) [best[j], cut[j]] = [cost, i];
    }
  }
  const parts: number[][] = [];
  for (let j = distinct.length; j > 0; j = cut[j]) {
    const [lo, hi] = [distinct[cut[j]], distinct[j - 1]];
    parts.unshift(lengths.flatMap((l, k) => (l >= lo && l <= hi ? [k] : [])));
  }
  return parts;
}

/** One forward of a ValueObjective: some of its prompt instances, their rows from the fact token on. */
interface ObjectivePart {
  /** Row b*T + i is position fact + i of the part's prompt b. */
  batch: Batch;
  /** The residual entering the objective's first computed block at those rows. */
  input: Tensor;
  suffix: Suffix;
  /** Patches each instance's fact row with its request's delta. */
  hooks: Hook[];
  /** Scored rows: the part's target-token rows (indices into the objective's nllRows) then its KL rows. */
  outputRows: number[];
  nll: number[];
  /** Per target-token row, its prompt's rows among them and its request (rewriteWeights' table). */
  rewrite: (RewriteRow & { request: number })[];
  /** Requests whose KL prompt is in this part, in the order of their rows. */
  kl: number[];
  targets: Tensor;
  nllMask: Tensor;
  /** Per scored row: its target's -log p (0 on KL rows), and the gradient pass's weights and losses. */
  losses: Tensor;
  weights: Tensor;
  weightedLosses: Tensor;
  klLogits: Tensor;
  dlogits: Tensor;
}

/** The first block a value objective computes for requests at `lowest` and up. Where the edited state
 *  feeds the residual stream unchanged (a block output; an MLP output without a post-norm, Gemma's has
 *  one), adding delta to it adds it to the block's output, so the pass starts at the block above. */
function firstComputedBlock(model: Model, site: ValueOptions["site"], lowest: number): number {
  return site === "resid" || !model.config.postNorms ? lowest + 1 : lowest;
}

/**
 * The plans' distinct prompt instances (the same ids, fact token, subject and noise have the same
 * delta-free states), per plan per instance its index among them, and their rows laid end to end: those
 * before the fact token (prompt u's from prefixBase[u]) and those from it on (from suffixBase[u]).
 */
function distinctPrompts(plans: RequestPlan[]): {
  prompts: PromptInstance[];
  promptOf: number[][];
  prefixBase: number[];
  suffixBase: number[];
  prefixRows: number;
  suffixRows: number;
} {
  const prompts: PromptInstance[] = [], index = new Map<string, number>();
  const promptOf = plans.map((p) =>
    p.instances.map((x) => {
      const key = `${x.ids.join(",")}|${x.fact}|${x.subject.join(",")}|${x.noise?.seed},${x.noise?.scale}`;
      if (!index.has(key)) {
        index.set(key, prompts.length);
        prompts.push(x);
      }
      return index.get(key)!;
    })
  );
  const prefixBase: number[] = [], suffixBase: number[] = [];
  let prefixRows = 0, suffixRows = 0;
  for (const x of prompts) {
    prefixBase.push(prefixRows);
    suffixBase.push(suffixRows);
    prefixRows += x.fact;
    suffixRows += x.ids.length - x.fact;
  }
  return { prompts, promptOf, prefixBase, suffixBase, prefixRows, suffixRows };
}

/**
 * Whether one DeltaFreePass can serve these plans at site `site`: its q|k|v caches [prefixRows, width]
 * (one per layer from the lowest first block on) and residuals [suffixRows, d] (one per first block) of
 * their distinct prompts each fit one storage binding, and together half of what fitsOneBatch allows a
 * batch (the objectives built on the pass take the rest).
 */
function passFits(model: Model, plans: RequestPlan[], site: ValueOptions["site"]): boolean {
  const cfg = model.config, limits = model.gpu.limits;
  const width = qkvWidth(cfg);
  const { prefixRows, suffixRows } = distinctPrompts(plans);
  const starts = new Set(plans.map((p) => firstComputedBlock(model, site, p.layer)));
  const qkvLayers = cfg.nLayer - Math.min(...starts);
  const binding = limits.maxStorageBufferBindingSize;
  const total = 4 * (prefixRows * width * qkvLayers + suffixRows * cfg.nEmbd * starts.size);
  return 4 * Math.max(prefixRows * width, suffixRows * cfg.nEmbd) <= binding &&
    total <= Math.min(limits.maxBufferSize, 4 * binding) / 2;
}

/**
 * The delta-free pass of a set of requests' prompts, shared by every ValueObjective built on it: the
 * groups of one optimiseValues call (one per layer) and their rebuilds as requests finish. Delta is
 * added at a prompt's fact token, so no row before it, and below the edited layer no row at all,
 * depends on delta. One forward over each distinct prompt (the same fact's prompts at every layer are
 * computed once) records
 *   - the q|k|v rows of its positions before the fact token at every layer from `lowestStart` on,
 *     [prefixRows, width], prompt u's position j at row prefixBase[u] + j (the suffix forwards' cache);
 *   - the residual entering each served first block s at its rows from the fact token on,
 *     entering(s) [suffixRows, d], prompt u's fact token at row suffixBase[u];
 *   - each request's h_0, its state at its layer and site at its bare prompt's fact token, init [n, d].
 * Prompts run in chunks of similar lengths (suffixParts), so padding costs little.
 */
export class DeltaFreePass {
  /** Distinct prompt instances, and per plan per instance its index among them. */
  readonly prompts: PromptInstance[];
  readonly promptOf: number[][];
  /** Per distinct prompt, its first row in the q|k|v caches and in the residuals (DeltaFreePass header). */
  readonly prefixBase: number[];
  readonly suffixBase: number[];
  /** The lowest first block served; qkv[i] is layer lowestStart + i. */
  readonly lowestStart: number;
  readonly qkv: Tensor[];
  readonly init: Tensor;
  private readonly entering = new Map<number, Tensor>();
  /** Per plan, the layer whose state is its h_0. */
  private readonly layerOf: number[];
  /** Columns of a q|k|v row. */
  private readonly width: number;

  constructor(readonly model: Model, plans: RequestPlan[], site: ValueOptions["site"], starts: number[]) {
    const gpu = model.gpu, cfg = model.config, d = cfg.nEmbd;
    const width = this.width = qkvWidth(cfg);
    this.layerOf = plans.map((p) => p.layer);
    const distinct = distinctPrompts(plans);
    [this.prompts, this.promptOf] = [distinct.prompts, distinct.promptOf];
    [this.prefixBase, this.suffixBase] = [distinct.prefixBase, distinct.suffixBase];
    const { prefixRows, suffixRows } = distinct;
    const served = [...new Set(starts)].sort((a, b) => a - b);
    this.lowestStart = served[0];
    this.qkv = Array.from(
      { length: cfg.nLayer - this.lowestStart },
      () => gpu.zeros([Math.max(1, prefixRows), width]),
    );
    for (const s of served) this.entering.set(s, gpu.zeros([suffixRows, d]));
    this.init = gpu.zeros([plans.length, d]);

    // Which requests read h_0 in which prompt: their bare prompt (instance 0).
    const readers = new Map<number, number[]>();
    this.promptOf.forEach((of, r) => readers.set(of[0], [...(readers.get(of[0]) ?? []), r]));
    const fcOut = model.siteWidth("mlp_pre");
    const perRow = 4 * (Math.max(fcOut, cfg.nInner, width) + 3 * d + this.qkv.length * width);
    const maxRows = Math.max(1, Math.floor(gpu.limits.maxStorageBufferBindingSize / perRow));
    for (const part of suffixParts(this.prompts.map((x) => x.ids.length))) {
      const longest = Math.max(...part.map((u) => this.prompts[u].ids.length));
      const perChunk = Math.max(1, Math.floor(maxRows / longest));
      for (let at = 0; at < part.length; at += perChunk) {
        this.run(part.slice(at, at + perChunk), readers, site);
      }
    }
  }

  /** The forward of some distinct prompts, its rows copied into the pass's tensors. */
  private run(members: number[], readers: Map<number, number[]>, site: ValueOptions["site"]): void {
    const model = this.model, gpu = model.gpu, cfg = model.config, d = cfg.nEmbd, width = this.width;
    const whole = batchWithNoise(gpu, d, members.map((u) => this.prompts[u]));
    const T = whole.batch.T, R = whole.batch.B * T;
    const hooks: Hook[] = [...whole.hooks];
    for (const [s, into] of this.entering) {
      const rows: number[] = [], intoRows: number[] = [];
      members.forEach((u, b) => {
        const x = this.prompts[u];
        for (let i = 0; i < x.ids.length - x.fact; i++) {
          rows.push(b * T + x.fact + i);
          intoRows.push(this.suffixBase[u] + i);
        }
      });
      hooks.push({ layer: s - 1, site: s === 0 ? "embed" : "resid", capture: { into, rows, intoRows } });
    }
    members.forEach((u, b) => {
      for (const r of readers.get(u) ?? []) {
        const row = b * T + this.prompts[u].fact;
        hooks.push({
          layer: this.layerOf[r],
          site,
          capture: { into: this.init, rows: [row], intoRows: [r] },
        });
      }
    });
    const captured = this.qkv.map(() => gpu.empty([R, width]));
    model.releaseForward(model.forward(whole.batch, {
      hooks,
      captureQkv: new Map(captured.map((t, i) => [this.lowestStart + i, t])),
      outputRows: [0],
      endLayer: cfg.nLayer,
    }));
    const prefix = members.flatMap((u, b) =>
      Array.from(
        { length: this.prompts[u].fact },
        (_, j) => ({ dst: this.prefixBase[u] + j, src: b * T + j, keep: 0, take: 1 }),
      )
    );
    captured.forEach((t, i) => rowOps(gpu, this.qkv[i], t, width, prefix));
    gpu.release(...captured);
    whole.release();
  }

  /** The residual entering block `start` at every prompt's rows from its fact token on. */
  enteringAt(start: number): Tensor {
    const t = this.entering.get(start);
    if (!t) throw new Error(`DeltaFreePass: block ${start} is not among the first blocks it serves`);
    return t;
  }

  release(): void {
    this.model.gpu.release(...this.qkv, ...this.entering.values(), this.init);
  }
}

/**
 * Loss and gradient of one batch of requests as a function of their deltas (see the file header).
 * Delta is added at each prompt's fact token at its request's layer, so neither the layers below the
 * lowest edited layer nor, at any layer, the rows before the fact token depend on it: a delta-free pass
 * (DeltaFreePass, shared by the batches of one optimiseValues call) records the residual there and
 * every later layer's attention keys and values, and every evaluation is a suffix forward
 * (Model.forward's `suffix`) over the rows from the fact token on, in parts of similar suffix lengths
 * (suffixParts). The pass starts at firstComputedBlock of the lowest edited layer, delta patched into
 * its input where that block is above the edited one. Requests at higher layers pass the layers below
 * theirs unchanged.
 */
export class ValueObjective {
  readonly n: number;
  private readonly parts: ObjectivePart[];
  /** The first block the evaluations compute. */
  private readonly start: number;
  private readonly pass: DeltaFreePass;
  /** Per request, its plan's index in the pass. */
  private readonly inPass: number[];
  /** Whether this objective made its pass (and releases it). */
  private readonly ownsPass: boolean;
  /** Every target-token row of every rewrite prompt. */
  private readonly nllRows: { target: number; request: number; prompt: number }[] = [];
  /** deltas and their gradient [n, d]; each prompt instance's copy of its request's delta and that copy's
   *  gradient [instances, d]; each request's KL logits at delta = 0 [n, V]. */
  private readonly tensors: Record<
    "deltas" | "gradDeltas" | "instanceDeltas" | "gradInstances" | "klReference",
    Tensor
  >;
  /** Per prompt instance (requests' instances in order), its request. */
  private readonly owners: number[];
  /** Per request; recorded by the first evaluate unless given. */
  references: ValueReference[];

  /**
   * `shared`: a pass made for a superset of these plans (`inPass`: each plan's index in it), serving
   * this objective's first block, and the requests' references if already recorded. Without it the
   * objective makes its own pass.
   */
  constructor(
    readonly model: Model,
    private readonly plans: RequestPlan[],
    private readonly o: ValueOptions,
    shared: { pass?: DeltaFreePass; inPass?: number[]; references?: ValueReference[] } = {},
  ) {
    const gpu = model.gpu, d = model.config.nEmbd, V = model.config.vocabSize;
    this.n = plans.length;
    this.references = shared.references ?? [];
    const nContexts = o.contexts.length;
    this.start = firstComputedBlock(model, o.site, Math.min(...plans.map((p) => p.layer)));
    this.ownsPass = !shared.pass;
    this.pass = shared.pass ?? new DeltaFreePass(model, plans, o.site, [this.start]);
    this.inPass = shared.inPass ?? plans.map((_, r) => r);
    this.owners = plans.flatMap((p, r) => p.instances.map(() => r));
    this.tensors = {
      deltas: gpu.zeros([this.n, d]),
      gradDeltas: gpu.zeros([this.n, d]),
      instanceDeltas: gpu.zeros([this.owners.length, d]),
      gradInstances: gpu.zeros([this.owners.length, d]),
      klReference: gpu.zeros([this.n, V]),
    };
    if (this.references.length) {
      const reference = new Float32Array(this.n * V);
      this.references.forEach((x, r) => reference.set(x.klLogits, r * V));
      gpu.write(this.tensors.klReference, reference);
    }
    const entering = this.pass.enteringAt(this.start);
    const qkv = this.pass.qkv.slice(this.start - this.pass.lowestStart);
    const owner = plans.flatMap((p, r) => p.instances.map((_, k) => ({ r, k })));
    const instances = plans.flatMap((p) => p.instances);
    const prompt = owner.map(({ r, k }) => this.pass.promptOf[this.inPass[r]][k]);

    const lengths = instances.map((p) => p.ids.length - p.fact);
    this.parts = suffixParts(lengths).map((members) => {
      const mine = members.map((b) => instances[b]);
      const batch = makeBatch(mine.map((p) => p.ids.slice(p.fact)));
      const T = batch.T;
      const input = gpu.zeros([batch.B * T, d]);
      rowOps(
        gpu,
        input,
        entering,
        d,
        members.flatMap((b, j) =>
          Array.from(
            { length: lengths[b] },
            (_, i) => ({ dst: j * T + i, src: this.pass.suffixBase[prompt[b]] + i, keep: 0, take: 1 }),
          )
        ),
      );
      // Each instance's fact row (row j*T) gets its request's delta: on the input for requests at the
      // block below `start` (the residual leaving it), at their layer's site for the others.
      const patches = new Map<string, Hook>();
      const nll: number[] = [], nllOut: number[] = [], kl: number[] = [], klOut: number[] = [];
      const rewrite: ObjectivePart["rewrite"] = [];
      members.forEach((b, j) => {
        const { r, k } = owner[b], plan = plans[r], inst = instances[b];
        const layer = plan.layer, site = layer < this.start ? "resid" : o.site;
        const key = `${layer}|${site}`;
        if (!patches.has(key)) {
          patches.set(key, { layer, site, patch: { src: this.tensors.instanceDeltas, entries: [] } });
        }
        patches.get(key)!.patch!.entries.push({ dst: j * T, src: b, keep: 1, take: 1 });
        if (k < nContexts) {
          const m = plan.target.length, promptLength = inst.ids.length - (m - 1);
          const first = nll.length, decrease = plan.request.direction === "decrease";
          plan.target.forEach((target, t) => {
            rewrite.push({ first, count: m, scale: 1 / (nContexts * m), decrease, request: r });
            nll.push(this.nllRows.length);
            nllOut.push(j * T + promptLength - 1 + t - inst.fact);
            this.nllRows.push({ target, request: r, prompt: k });
          });
        } else {
          kl.push(r);
          klOut.push(j * T);
        }
      });
      const rows = nll.length + kl.length;
      return {
        batch,
        input,
        suffix: {
          starts: mine.map((p) => p.fact),
          qkv,
          bases: members.map((b) => this.pass.prefixBase[prompt[b]]),
          T: Math.max(...mine.map((p) => p.ids.length)),
        },
        hooks: [...patches.values()],
        outputRows: [...nllOut, ...klOut],
        nll,
        rewrite,
        kl,
        targets: gpu.filled([rows], [...nll.map((i) => this.nllRows[i].target), ...kl.map(() => 0)], "u32"),
        nllMask: gpu.filled([rows], [...nll.map(() => 1), ...kl.map(() => 0)]),
        losses: gpu.zeros([rows]),
        weights: gpu.zeros([rows]),
        weightedLosses: gpu.zeros([rows]),
        klLogits: gpu.zeros([Math.max(1, kl.length), V]),
        dlogits: gpu.zeros([rows, V]),
      };
    });
  }

  /**
   * Losses (and mean target probabilities) at `deltas`. With `gradients` (per request, whether its
   * gradient is wanted), also d loss / d delta of those requests, from the same forward pass and the
   * same readback: the loss's gradient at the logits is made on the GPU (shaders/value_loss.wgsl: each
   * target row's weight from its prompt's losses, each KL row's gradient against the logits at delta =
   * 0), so a step of the optimisation waits for one readback. The others get null. The first call must
   * be at delta = 0: it records h_0 and the KL reference (where the KL term's gradient is exactly 0).
   */
  async evaluate(
    deltas: Float64Array[],
    gradients?: boolean[],
  ): Promise<{ losses: number[]; probs: number[]; grads: (Float64Array | null)[] }> {
    const gpu = this.model.gpu, d = this.model.config.nEmbd, V = this.model.config.vocabSize;
    const o = this.o, n = this.n, nContexts = o.contexts.length;
    const first = this.references.length === 0;
    if (first && deltas.some((x) => x.some((v) => v !== 0))) {
      throw new Error("ValueObjective: the first evaluation must be at delta = 0");
    }
    if (gradients && gradients.length !== n) {
      throw new Error(`ValueObjective: ${gradients.length} gradient flags for ${n} requests`);
    }
    const wanted = gradients?.some(Boolean) ?? false;
    const flat = new Float32Array(n * d);
    deltas.forEach((x, r) => flat.set(x, r * d));
    gpu.write(this.tensors.deltas, flat);
    const { instanceDeltas, gradInstances, gradDeltas } = this.tensors;
    rowOps(
      gpu,
      instanceDeltas,
      this.tensors.deltas,
      d,
      this.owners.map((r, b) => ({ dst: b, src: r, keep: 0, take: 1 })),
    );
    if (wanted) fill(gpu, gradInstances, 0);

    const fwds = this.parts.map((part) => {
      const fwd = this.model.forward(part.batch, {
        startLayer: this.start,
        input: part.input,
        suffix: part.suffix,
        hooks: part.hooks,
        outputRows: part.outputRows,
        keep: wanted,
      });
      const rows = part.outputRows.length, klRow0 = part.nll.length;
      crossEntropy(gpu, fwd.logits, part.targets, rows, V, { losses: part.losses, weights: part.nllMask });
      if (part.kl.length) gpu.copy(fwd.logits, part.klLogits, part.kl.length * V, klRow0 * V, 0);
      if (first) {
        part.kl.forEach((r, j) => gpu.copy(fwd.logits, this.tensors.klReference, V, (klRow0 + j) * V, r * V));
      }
      if (wanted) {
        // d loss / d logits: weighted cross-entropy rows (a request not wanted weighs 0), then the KL rows.
        rewriteWeights(
          gpu,
          part.losses,
          part.rewrite.map((x) => ({ ...x, scale: gradients![x.request] ? x.scale : 0 })),
          part.weights,
        );
        crossEntropy(gpu, fwd.logits, part.targets, rows, V, {
          losses: part.weightedLosses,
          dlogits: part.dlogits,
          weights: part.weights,
        });
        klGradient(
          gpu,
          fwd.logits,
          this.tensors.klReference,
          V,
          part.kl.map((r) => ({ referenceRow: r, factor: gradients![r] ? o.klFactor : 0 })),
          part.dlogits,
          { logitsRow0: klRow0, dlogitsRow0: klRow0 },
        );
        backward(this.model, fwd, {
          dlogits: part.dlogits,
          patchSources: new Map([[instanceDeltas, gradInstances]]),
        });
      }
      return fwd;
    });
    if (wanted) {
      // Each request's gradient: its instances' in instance order, whatever parts they ran in, so that
      // a request's float32 sum is the same in any batch (a reused value is the one computed alone).
      rowOps(
        gpu,
        gradDeltas,
        gradInstances,
        d,
        this.owners.map((r, b) => ({
          dst: r,
          src: b,
          keep: b > 0 && this.owners[b - 1] === r ? 1 : 0,
          take: 1,
        })),
      );
    }
    const read = await gpu.readMany([
      ...this.parts.flatMap((p) => [p.losses, p.klLogits]),
      ...(first ? [this.pass.init] : []),
      ...(wanted ? [this.tensors.gradDeltas] : []),
    ]);
    for (const fwd of fwds) this.model.releaseForward(fwd);
    const rowLoss = new Float64Array(this.nllRows.length);
    const klFlat = new Float32Array(n * V);
    this.parts.forEach((part, i) => {
      part.nll.forEach((row, j) => rowLoss[row] = read[2 * i][j]);
      part.kl.forEach((r, j) => klFlat.set(read[2 * i + 1].subarray(j * V, (j + 1) * V), r * V));
    });
    if (first) {
      const init = read[2 * this.parts.length];
      this.references = this.plans.map((_, r) => {
        const klLogits = klFlat.slice(r * V, (r + 1) * V);
        return {
          targetInit: init.slice(this.inPass[r] * d, (this.inPass[r] + 1) * d),
          klLogits,
          klInit: logSoftmax(klLogits),
        };
      });
    }

    // Per prompt NLL (mean over target tokens), then each request's loss: the objective (NLL, or
    // -log(1 - p) for "decrease"), the KL term and weight decay.
    const promptNll = this.plans.map(() => new Float64Array(nContexts));
    this.nllRows.forEach((x, i) =>
      promptNll[x.request][x.prompt] += rowLoss[i] / this.plans[x.request].target.length
    );
    const losses: number[] = [], probs: number[] = [];
    this.plans.forEach((plan, r) => {
      const decrease = plan.request.direction === "decrease";
      let objective = 0, prob = 0;
      for (const nll of promptNll[r]) {
        const p = Math.exp(-nll);
        prob += p / nContexts;
        objective += (decrease ? -Math.log(1 - Math.min(p, 1 - 1e-7)) : nll) / nContexts;
      }
      const logCur = logSoftmax(klFlat.subarray(r * V, (r + 1) * V));
      let kl = 0;
      for (let v = 0; v < V; v++) kl += Math.exp(logCur[v]) * (logCur[v] - this.references[r].klInit[v]);
      const initNorm = l2(this.references[r].targetInit);
      losses.push(objective + o.klFactor * kl + o.weightDecay * l2(deltas[r]) / (initNorm * initNorm));
      probs.push(prob);
    });
    const grad = wanted ? read.at(-1)! : null;
    const grads = this.plans.map((_, r) => {
      if (!grad || !gradients![r]) return null;
      const g = Float64Array.from(grad.subarray(r * d, (r + 1) * d));
      // The weight decay term weight_decay * |delta| / |h_0|^2 (its gradient is taken as 0 at delta = 0).
      const initNorm = l2(this.references[r].targetInit), deltaNorm = l2(deltas[r]);
      if (deltaNorm > 0) {
        for (let i = 0; i < d; i++) {
          g[i] += o.weightDecay * deltas[r][i] / (deltaNorm * initNorm * initNorm);
        }
      }
      return g;
    });
    return { losses, probs, grads };
  }

  release(): void {
    const gpu = this.model.gpu;
    gpu.release(...Object.values(this.tensors));
    if (this.ownsPass) this.pass.release();
    for (const p of this.parts) {
      gpu.release(
        p.input,
        p.targets,
        p.nllMask,
        p.losses,
        p.weights,
        p.weightedLosses,
        p.klLogits,
        p.dlogits,
      );
    }
  }
}

/**
 * ROME's loop: Adam on each delta, a request stops once its loss < 5e-2, its delta is clamped after
 * each update. Finished requests leave the batch (it is rebuilt for the rest once a quarter is done),
 * which changes nothing for the others: their rows never interact. A request whose first gradient is
 * exactly 0 is at Adam's fixed point and stops at once with the losses and updates of running on.
 */
async function optimiseGroup(
  model: Model,
  plans: RequestPlan[],
  o: ValueOptions,
  onStep: () => void,
  shared: { pass: DeltaFreePass; inPass: number[] },
): Promise<ValueResult[]> {
  const d = model.config.nEmbd;
  const delta = plans.map(() => new Float64Array(d));
  const adamM = plans.map(() => new Float64Array(d)), adamV = plans.map(() => new Float64Array(d));
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const done = plans.map(() => false);
  const updates = plans.map(() => 0);
  const lossHistory: number[][] = plans.map(() => []);
  const probs = plans.map(() => 0);
  const references: ValueReference[] = [];
  let members = plans.map((_, i) => i); // plans in the current objective's batch
  let objective = new ValueObjective(model, plans, o, shared);
  try {
    for (let it = 0; it < o.steps; it++) {
      // Gradients of the requests still optimising, except at the last step, which only evaluates.
      const last = it === o.steps - 1;
      const evaluated = await objective.evaluate(
        members.map((i) => delta[i]),
        last ? undefined : members.map((i) => !done[i]),
      );
      onStep();
      if (it === 0) references.push(...objective.references);
      members.forEach((i, r) => {
        if (done[i]) return; // finished at an earlier step, in the batch until it is rebuilt
        const loss = evaluated.losses[r];
        lossHistory[i].push(loss);
        probs[i] = evaluated.probs[r];
        if (loss < STOP_LOSS || last) {
          done[i] = true;
          return;
        }
        const grad = evaluated.grads[r]!;
        if (updates[i] === 0 && grad.every((g) => g === 0)) {
          // At delta = 0 with a gradient of exactly 0 (delta cannot reach a scored row: an edit at the
          // last layer's fact token, whose own row is only the KL term's, flat there), Adam from zero
          // moments takes zero steps: every later step repeats this one. Stop, recording what they would.
          lossHistory[i].push(...new Array<number>(o.steps - 1 - it).fill(loss));
          updates[i] = o.steps - 1;
          done[i] = true;
          return;
        }
        const t = ++updates[i];
        for (let j = 0; j < d; j++) {
          adamM[i][j] = beta1 * adamM[i][j] + (1 - beta1) * grad[j];
          adamV[i][j] = beta2 * adamV[i][j] + (1 - beta2) * grad[j] * grad[j];
          const mHat = adamM[i][j] / (1 - beta1 ** t), vHat = adamV[i][j] / (1 - beta2 ** t);
          delta[i][j] -= o.lr * mHat / (Math.sqrt(vHat) + eps);
        }
        const maxNorm = o.clampNormFactor * l2(references[i].targetInit), norm = l2(delta[i]);
        if (norm > maxNorm) { for (let j = 0; j < d; j++) delta[i][j] *= maxNorm / norm; }
      });
      const active = members.filter((i) => !done[i]);
      if (active.length === 0) break;
      if (active.length <= 0.75 * members.length) {
        objective.release();
        members = active;
        objective = new ValueObjective(model, members.map((i) => plans[i]), o, {
          pass: shared.pass,
          inPass: members.map((i) => shared.inPass[i]),
          references: members.map((i) => references[i]),
        });
      }
    }
  } finally {
    objective.release();
  }
  return plans.map((_, i) => {
    const deltaF = Float32Array.from(delta[i]);
    const init = references[i].targetInit;
    return {
      targetInit: init,
      delta: deltaF,
      target: init.map((v, j) => v + deltaF[j]),
      losses: lossHistory[i],
      targetProb: probs[i],
      updates: updates[i],
    };
  });
}
