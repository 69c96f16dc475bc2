// Causal tracing (Meng et al. 2022, ROME) and representation zeroing (Hase et al. 2023): where in
// the network does a prompt's knowledge of its object live? Meng et al. (ROME), section 2.1, has the formulas.
//
// Causal tracing. Three runs of the prompt:
//   clean      p_clean = p(target | prompt)
//   corrupted  Gaussian noise (level nu) added to the subject tokens' embeddings; p_corrupt
//   restored   corrupted, but the clean state of one kind (residual stream / MLP output / attention
//              output) at token t is copied back in for the layers of a window around layer l.
// A cell (t, l) reports p_restored, the indirect effect p_restored - p_corrupt and the fractional
// effect (p_restored - p_corrupt) / (p_clean - p_corrupt). Probabilities are means over `samples`
// noise draws. The noise is a fixed function of the seed (mulberry32 + Box-Muller), so every prompt
// gets the same draws, as ROME re-creates numpy's RandomState(1) per call.
//
// Representation zeroing. The clean run with the state at token t zeroed over the window of layer l;
// the effect is the fraction of the clean probability removed, (p_clean - p_zeroed) / p_clean. Also
// per layer with all subject tokens zeroed together, Hase et al.'s own measure.
//
// The target's probability is that of its FIRST token (tokenized with a leading space), read at the
// prompt's last position; multi-token objects are scored by their first token only.
//
// Speed. Nothing below a cell's window depends on the cell, and nothing before its first token either,
// so that part is shared: one forward of the clean prompt plus its `samples` corrupted copies (of many
// prompts at once) captures the residual entering every layer, every layer's attention keys and values,
// and the clean states of every kind. A cell whose window starts at layer s and whose first token is t
// changes only its own rows in layer s: it runs layer s on those rows alone (nothing for the residual
// stream, whose state there is the restored one), then layers s+1..L-1 on rows t..T-1 only (suffix
// forwards, engine/model.ts), from the captured residual entering s+1 (its own rows replaced) and with
// the earlier rows' keys and values as captured. Identical cells are computed once; a cell whose window
// only ends later than another's (ROME's 10-layer windows clipped at the first layer) continues from the
// state the shorter one leaves at its end; restoring tokens before the subject is the corrupted run
// itself. Cells of every prompt are grouped by their first layer and ordered by rows into batches of
// cells x samples sequences (bounded by maxRows and the adapter's binding size, little padding); the
// batches are submitted back to back without waiting, and one readback returns one number per row (the
// target's log-probability), with the shared runs' own.
//
// The noise is added at the engine's "embed" site, wte + wpe: the same sum as ROME's noise on wte.
import { qkvWidth } from "../../engine/config.ts";
import type { Tensor } from "../../engine/gpu.ts";
import { type Hook, makeBatch, type Model, type Suffix } from "../../engine/model.ts";
import { logProbOf, type RowEntry, rowOps } from "../../engine/ops.ts";
import { subjectTokenRange, targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { mulberry32 } from "../../engine/random.ts";
import { greedyNextTokens } from "../evaluation/recall.ts";

/** The states that tracing restores: block output, MLP output (c_proj, bias included), attention output. */
export type StateKind = "resid" | "mlp" | "attn";
/** Every state kind, in the order grids are computed and drawn. */
export const STATE_KINDS: readonly StateKind[] = ["resid", "mlp", "attn"];

/** ROME's windows: one layer for the residual stream, ten for MLP and attention outputs. */
export const DEFAULT_WINDOWS: Readonly<Record<StateKind, number>> = { resid: 1, mlp: 10, attn: 10 };

/** Causal tracing (noise the subject, restore clean states) or representation zeroing. */
export type TraceMethod = "noise" | "zero";

/**
 * Layers [lo, hi) of the window of size `window` around `layer`, clipped at the ends (not shifted):
 * [max(0, l - floor(w/2)), min(L, l + ceil(w/2))). w = 10 gives l-5..l+4; w = 5 gives l-2..l+2.
 */
export function windowLayers(layer: number, window: number, nLayer: number): [number, number] {
  if (!Number.isInteger(window) || window < 1) {
    throw new Error(`window must be an integer >= 1, got ${window}`);
  }
  if (!Number.isInteger(layer) || layer < 0 || layer >= nLayer) {
    throw new Error(`layer ${layer} outside [0, ${nLayer})`);
  }
  return [Math.max(0, layer - Math.floor(window / 2)), Math.min(nLayer, layer + Math.ceil(window / 2))];
}

/** `count` standard normal numbers, a fixed function of `seed` (mulberry32 uniforms, Box-Muller pairs). */
export function gaussianNoise(count: number, seed: number): Float32Array {
  const uniform = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniform())); // 1 - u lies in (0, 1]: log stays finite
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

/** Unbiased standard deviation over every entry of the token embedding matrix wte. */
export async function embeddingStd(model: Model): Promise<number> {
  const chunks = await model.gpu.readMany(model.wte.map((c) => c.tensor));
  let n = 0, sum = 0, sumSq = 0;
  for (const chunk of chunks) {
    for (const v of chunk) {
      n++;
      sum += v;
      sumSq += v * v;
    }
  }
  const mean = sum / n;
  // The noise is added where the embeddings enter the blocks, after Gemma's sqrt(d) scaling.
  return model.config.embedScale * Math.sqrt(Math.max(0, (sumSq - n * mean * mean) / (n - 1)));
}

/** The default noise level: 3 standard deviations of the subjects' token embeddings (ROME's "s3" scale). */
export const DEFAULT_NOISE_STDS = 3;

/** A noise level with how it was derived, for the results that used it. */
export interface NoiseLevel {
  /** How the level was derived, in words. */
  rule: string;
  /** Subjects whose embeddings gave the std (0 for the whole-vocabulary fallback). */
  subjects: number;
  /** The std the level is a multiple of. */
  std: number;
  /** The absolute noise level: DEFAULT_NOISE_STDS x std. */
  level: number;
}

/**
 * ROME's (and Hase et al.'s) default noise: nu = 3 sigma, where sigma is the unbiased std over every
 * entry of the token embeddings (wte rows, before wpe) of the known facts' subjects, each subject
 * tokenized alone without a leading space, repeated tokens counted each time (Meng et al. 2022,
 * "Locating and Editing Factual Associations in GPT", whose code computes sigma over the known_1000
 * subjects; Hase et al., "Does Localization Inform Editing?", follow it). The std over
 * all of wte differs (by +2.6% on the embedded model), so this is the rule whenever facts are known.
 */
export function subjectNoiseLevel(
  model: Model,
  tok: Tokenizer,
  subjects: string[],
): Promise<NoiseLevel> {
  // Special tokens a tokenizer adds to every text (Llama's and Gemma's BOS) are not the subject's.
  const ids = subjects.flatMap((s) => tok.encode(s).filter((id) => !tok.isSpecial(id)));
  return tokenNoiseLevel(model, ids, subjects.length);
}

/** The same rule over the embeddings of given subject tokens (`subjects` only labels the result). */
export async function tokenNoiseLevel(model: Model, ids: number[], subjects: number): Promise<NoiseLevel> {
  // One token already gives d entries to take the std over (a one-word subject of `trace --prompt`).
  if (ids.length * model.config.nEmbd < 2) {
    throw new Error(`noise level: the ${subjects} subjects have ${ids.length} tokens; sigma needs 2 values`);
  }
  const d = model.config.nEmbd;
  const chunks = await model.gpu.readMany(model.wte.map((c) => c.tensor));
  let n = 0, sum = 0, sumSq = 0;
  for (const id of ids) {
    const chunk = model.wte.findIndex((c) => id >= c.rowStart && id < c.rowStart + c.rows);
    if (chunk < 0) throw new Error(`noise level: token ${id} is outside the embedding`);
    const row = chunks[chunk].subarray(
      (id - model.wte[chunk].rowStart) * d,
      (id - model.wte[chunk].rowStart + 1) * d,
    );
    for (const v of row) {
      n++;
      sum += v;
      sumSq += v * v;
    }
  }
  const mean = sum / n;
  // The noise is added where the embeddings enter the blocks, after Gemma's sqrt(d) scaling.
  const std = model.config.embedScale * Math.sqrt(Math.max(0, (sumSq - n * mean * mean) / (n - 1)));
  return {
    rule: `${DEFAULT_NOISE_STDS} x std of the subject tokens' embeddings (ROME)`,
    subjects,
    std,
    level: DEFAULT_NOISE_STDS * std,
  };
}

/**
 * One intervention, i.e. one cell of a grid: restore (or zero) the state `kind` at `tokens` in every
 * layer of [from, to). Grid cells have one token; other sets (all subject tokens, every token) test
 * and extend the method.
 */
export interface Cell {
  /** Which hidden states are restored or zeroed. */
  kind: StateKind;
  /** Token positions of the cell. */
  tokens: number[];
  /** First layer of the window. */
  from: number;
  /** One past the window's last layer. */
  to: number;
  /** Which prompt of the TraceRun (an index into its prompts; default 0). */
  prompt?: number;
}

/** One prompt of a TraceRun: its tokens, the subject's tokens and the token whose probability is traced. */
export interface TracePrompt {
  /** The prompt's token ids. */
  ids: number[];
  /** The subject's tokens, [start, end). */
  subject: [number, number];
  /** The scored token. */
  target: number;
}

/** Noise draws, noise level, seed and batch size of a TraceRun. */
export interface TraceRunOptions {
  /** Corrupted copies of each prompt (noise draws); 0 prepares only the clean runs (zeroing). */
  samples: number;
  /** Absolute noise level nu (one for every prompt, or one per prompt): noise = nu * N(0, 1) added to
   *  each subject token's embedding. */
  noise: number | number[];
  /** Seed of the noise draws (every prompt gets the same draws, as ROME re-seeds per prompt). */
  seed: number;
  /** Upper bound on activation rows (sequences x tokens) per batch, to bound memory. Default 2048. */
  maxRows?: number;
}

/**
 * The shared part of the traces of one or more prompts: their clean and corrupted runs, recorded as one
 * batch and kept on the GPU, and the machinery that scores batches of cells against them (`score`).
 * Nothing is read back until the first `score`, which also fills `clean` and `corrupted`. Call
 * `release` when done.
 */
export class TraceRun {
  /** Per prompt, p(target) in the clean run (after the first `score`). */
  clean: number[] = [];
  /** Per prompt, the mean p(target) over the corrupted runs (NaN with 0 samples; after the first `score`). */
  corrupted: number[] = [];
  /** During a `score`: the states cells leave for the cells that continue from them (see Link). */
  private carry: Tensor | null = null;

  private constructor(
    readonly model: Model,
    readonly prompts: TracePrompt[],
    readonly options: TraceRunOptions,
    /** Positions per sequence of the shared runs: the longest prompt's. */
    private readonly T: number,
    /**
     * The residual entering each layer l = 0..L (l = L: the last block's output) of every sequence,
     * [P * (samples + 1) * T, d]: sequence p * (samples + 1) is prompt p clean, the next `samples` its
     * corrupted copies (see `sequence`); row sequence * T + t is its token t.
     */
    private readonly inputs: Tensor[],
    /** Clean MLP and attention outputs at each layer, [P * T, d]: row p * T + t is prompt p's token t. */
    private readonly cleanOutputs: Record<"mlp" | "attn", Tensor[]>,
    /** Attention's q|k|v at each layer, [P * (samples + 1) * T, width], rows as in `inputs`. */
    private readonly qkv: Tensor[],
    /** The scaled noise: prompt p's sample n, subject token b + i is row noiseRows[p] + n * (e - b) + i. */
    private readonly noise: Tensor,
    private readonly noiseRows: number[],
    /** The clean and corrupted runs' log-probabilities of the target, [sequences], until read. */
    private baseLogProbs: Tensor | null,
  ) {}

  /** Sequence of the shared runs holding prompt p's clean run (n = -1) or its corrupted sample n. */
  private sequence(p: number, n: number): number {
    return p * (this.options.samples + 1) + 1 + n;
  }

  /**
   * Records the clean and corrupted runs of every prompt as one batch (nothing is read back) and keeps
   * what every cell needs: the residual entering each layer, the clean MLP and attention outputs, and
   * every layer's attention keys and values (the cache of the cells' suffix forwards).
   */
  static prepare(model: Model, prompts: TracePrompt[], options: TraceRunOptions): TraceRun {
    const gpu = model.gpu, cfg = model.config, d = cfg.nEmbd, L = cfg.nLayer;
    const N = options.samples, P = prompts.length;
    if (P === 0) throw new Error("trace: no prompts");
    if (!Number.isInteger(N) || N < 0) throw new Error(`trace: samples must be an integer >= 0, got ${N}`);
    const levels = typeof options.noise === "number"
      ? prompts.map(() => options.noise as number)
      : options.noise;
    if (levels.length !== P) throw new Error(`trace: ${levels.length} noise levels for ${P} prompts`);
    prompts.forEach(({ ids, subject: [b, e], target }, p) => {
      const where = P > 1 ? `trace: prompt ${p}:` : "trace:";
      if (ids.length === 0) throw new Error(`${where} empty prompt`);
      if (!(Number.isInteger(b) && Number.isInteger(e) && 0 <= b && b < e && e <= ids.length)) {
        throw new Error(
          `${where} subject token range [${b}, ${e}) is not inside the prompt's ${ids.length} tokens`,
        );
      }
      if (!Number.isInteger(target) || target < 0 || target >= cfg.vocabSize) {
        throw new Error(`${where} target token ${target} outside the vocabulary (size ${cfg.vocabSize})`);
      }
      if (!Number.isFinite(levels[p]) || levels[p] < 0) {
        throw new Error(`${where} noise level must be a finite number >= 0, got ${levels[p]}`);
      }
    });

    // Every prompt gets the same draws: prompt p's are the first N * (e - b) * d numbers of one draw (a
    // prefix of a longer draw is the shorter draw), scaled by its level.
    const lengths = prompts.map(({ subject: [b, e] }) => e - b);
    const z = gaussianNoise(N * Math.max(...lengths) * d, options.seed);
    const noiseRows: number[] = [];
    let rows = 0;
    for (const len of lengths) {
      noiseRows.push(rows);
      rows += N * len;
    }
    const scaled = new Float32Array(Math.max(1, rows) * d);
    prompts.forEach((_, p) => {
      const count = N * lengths[p] * d;
      for (let i = 0; i < count; i++) scaled[noiseRows[p] * d + i] = z[i] * levels[p];
    });
    const noise = gpu.tensor([Math.max(1, rows), d], scaled);

    const T = Math.max(...prompts.map((x) => x.ids.length)), B = P * (N + 1);
    const all = Array.from({ length: B * T }, (_, r) => r);
    const inputs = Array.from({ length: L + 1 }, () => gpu.zeros([B * T, d]));
    const cleanOutputs = {
      mlp: Array.from({ length: L }, () => gpu.zeros([P * T, d])),
      attn: Array.from({ length: L }, () => gpu.zeros([P * T, d])),
    };
    const width = qkvWidth(cfg);
    const qkv = Array.from({ length: L }, () => gpu.zeros([B * T, width]));
    const run = new TraceRun(model, prompts, options, T, inputs, cleanOutputs, qkv, noise, noiseRows, null);

    // Hooks run in list order and a hook captures before it patches, so the capture listed after the
    // noise patch sees the noised embeddings.
    const noiseEntries: RowEntry[] = [];
    prompts.forEach(({ subject: [b, e] }, p) => {
      for (let n = 0; n < N; n++) {
        for (let t = b; t < e; t++) {
          noiseEntries.push({
            dst: run.sequence(p, n) * T + t,
            src: run.noiseRow(p, n, t),
            keep: 1,
            take: 1,
          });
        }
      }
    });
    const hooks: Hook[] = [
      { layer: -1, site: "embed", patch: { src: noise, entries: noiseEntries } },
      { layer: -1, site: "embed", capture: { into: inputs[0], rows: all } },
    ];
    const cleanRows = prompts.flatMap((_, p) =>
      Array.from({ length: T }, (_, t) => run.sequence(p, -1) * T + t)
    );
    for (let l = 0; l < L; l++) {
      for (const kind of ["mlp", "attn"] as const) {
        hooks.push({ layer: l, site: kind, capture: { into: cleanOutputs[kind][l], rows: cleanRows } });
      }
      hooks.push({ layer: l, site: "resid", capture: { into: inputs[l + 1], rows: all } });
    }
    const sequences = prompts.flatMap((x) => Array.from({ length: N + 1 }, () => x.ids));
    const res = model.forward(makeBatch(sequences), {
      hooks,
      captureQkv: new Map(qkv.map((t, l) => [l, t])),
    });
    const targets = gpu.upload([B], prompts.flatMap((x) => new Array(N + 1).fill(x.target)), "u32");
    run.baseLogProbs = logProbOf(gpu, res.logits, targets, B, cfg.vocabSize);
    model.releaseForward(res);
    return run;
  }

  /** Row of `noise` holding prompt p's sample n at subject token t. */
  private noiseRow(p: number, n: number, t: number): number {
    const [b, e] = this.prompts[p].subject;
    return this.noiseRows[p] + n * (e - b) + t - b;
  }

  /**
   * p(target) for each cell: with action "restore" the mean over the corrupted samples with the cell's
   * clean states copied back in; with "zero" the clean run with the cell's states set to zero.
   * `reuse` (default) runs each cell only where it can change something: its first window layer only
   * on its own rows (the others are the shared run's there; a residual cell's rows are the restored or
   * zeroed state itself), the later layers from its first token on, the rest read from the shared runs
   * (engine/model.ts's suffix forward); identical cells are computed once, a cell whose window only
   * ends later than another's continues from the state that one leaves at its end, and a cell that
   * restores only tokens before the subject is the corrupted run (the noise enters at the subject, so
   * those states are already clean). reuse = false recomputes every cell from the
   * embeddings (the naive way; same numbers, slower). Everything is recorded into one stream and read
   * back once (with the shared runs' probabilities on the first call).
   */
  async score(cells: Cell[], action: "restore" | "zero", reuse = true): Promise<number[]> {
    const gpu = this.model.gpu, cfg = this.model.config;
    const S = action === "restore" ? this.options.samples : 1;
    if (S < 1) throw new Error("trace: restoring needs at least one noise sample");
    cells.forEach((c, i) => checkCell(c, i, this.prompts, cfg.nLayer));
    const promptOf = (c: Cell) => this.prompts[c.prompt ?? 0];

    // Bound each batch: activation rows (the widest is the MLP's [rows, f] or [rows, 2f], or q|k|v) and
    // logits [sequences, V] must fit one storage binding, and computed rows stay under maxRows.
    const { maxRows, maxSequences } = batchLimits(this.model, this.options.maxRows);
    if (S > maxSequences) {
      throw new Error(`trace: ${S} samples exceed the ${maxSequences} sequences one batch can hold`);
    }

    // Which cell's result each cell takes (-1: the corrupted run's), and the cells computed.
    const sameAs = new Array<number>(cells.length);
    const computed: number[] = [];
    const seen = new Map<string, number>();
    // A cell without its window's end: cells with one key differ at most in where their window ends.
    const startKey = (c: Cell) =>
      JSON.stringify([c.prompt ?? 0, c.kind, [...c.tokens].sort((a, b) => a - b), c.from]);
    cells.forEach((c, i) => {
      if (reuse && action === "restore" && Math.max(...c.tokens) < promptOf(c).subject[0]) {
        sameAs[i] = -1;
        return;
      }
      const key = `${startKey(c)} ${c.to}`;
      const first = reuse ? seen.get(key) : undefined;
      if (first !== undefined) {
        sameAs[i] = first;
        return;
      }
      seen.set(key, i);
      sameAs[i] = i;
      computed.push(i);
    });

    // A batch computes each sequence's rows from its cell's first token on (all rows without reuse) and
    // pads them to its longest: ordered longest first, a batch's cells are close in length.
    const rowsOf = (i: number) => promptOf(cells[i]).ids.length - (reuse ? Math.min(...cells[i].tokens) : 0);
    // Cells that differ only in where their window ends share everything before the shorter one's end
    // (ROME's windows clipped at the first layers): such a cell continues from the state its predecessor
    // (the next shorter window) leaves there, carried in one tensor: S x rows per predecessor.
    const links = cells.map((): Link => ({}));
    let carryRows = 0;
    if (reuse) {
      const chains = new Map<string, number[]>();
      for (const i of computed) {
        const key = startKey(cells[i]);
        if (!chains.has(key)) chains.set(key, []);
        chains.get(key)!.push(i);
      }
      for (const chain of chains.values()) {
        chain.sort((a, b) => cells[a].to - cells[b].to);
        for (let k = 1; k < chain.length; k++) {
          const before = chain[k - 1];
          if (cells[before].to < cells[before].from + 2) continue; // no layer of its own past the first
          links[before].into = carryRows;
          links[chain[k]].from = carryRows;
          links[chain[k]].start = cells[before].to;
          carryRows += S * rowsOf(before);
        }
      }
    }
    this.carry = carryRows > 0 ? gpu.zeros([carryRows, cfg.nEmbd]) : null;
    const byStart = new Map<number, number[]>(); // first layer run -> indices of its cells
    for (const i of computed) {
      const start = reuse ? links[i].start ?? cells[i].from + 1 : 0;
      if (!byStart.has(start)) byStart.set(start, []);
      byStart.get(start)!.push(i);
    }
    const batches: { cells: number[]; logProbs: Tensor }[] = [];
    // In order of their first layer: a predecessor's batch is recorded before its successors'.
    for (const [start, indices] of [...byStart].sort((a, b) => a[0] - b[0])) {
      indices.sort((a, b) => rowsOf(b) - rowsOf(a));
      let chunk: number[] = [];
      const flush = () => {
        batches.push({
          cells: chunk,
          logProbs: this.recordBatch(
            chunk.map((j) => cells[j]),
            chunk.map((j) => links[j]),
            start,
            action,
            reuse,
            S,
          ),
        });
        chunk = [];
      };
      let needed = 0; // rows the chunk's cells need (without padding)
      for (const i of indices) {
        const rows = (chunk.length + 1) * S * rowsOf(chunk[0] ?? i);
        needed += S * rowsOf(i);
        // Padding rows cost as much as real ones, and each batch its dispatches: at most a quarter of a
        // batch's rows, or 128, are padding.
        const padding = rows - needed;
        const full = rows > maxRows || (chunk.length + 1) * S > maxSequences ||
          (padding > rows / 4 && padding > 128);
        if (chunk.length > 0 && full) {
          flush();
          needed = S * rowsOf(i);
        }
        chunk.push(i);
      }
      if (chunk.length > 0) flush();
    }
    const base = this.baseLogProbs;
    const values = await gpu.readMany([...(base ? [base] : []), ...batches.map((b) => b.logProbs)]);
    gpu.release(...batches.map((b) => b.logProbs), this.carry ?? undefined);
    this.carry = null;
    if (base) {
      const N = this.options.samples, lp = values.shift()!;
      this.clean = this.prompts.map((_, p) => Math.exp(lp[this.sequence(p, -1)]));
      this.corrupted = this.prompts.map((_, p) => {
        let sum = 0;
        for (let n = 0; n < N; n++) sum += Math.exp(lp[this.sequence(p, n)]);
        return N > 0 ? sum / N : NaN;
      });
      gpu.release(base);
      this.baseLogProbs = null;
    }
    const out = new Array<number>(cells.length);
    batches.forEach((batch, k) => {
      batch.cells.forEach((cellIndex, c) => {
        let p = 0;
        for (let n = 0; n < S; n++) p += Math.exp(values[k][c * S + n]);
        out[cellIndex] = p / S;
      });
    });
    return cells.map((c, i) => (sameAs[i] === -1 ? this.corrupted[c.prompt ?? 0] : out[sameAs[i]]));
  }

  /**
   * Records the forward of `cells` x S sequences (sequence c*S + n = cell c, sample n) starting at
   * layer `start`; returns the target's log-probability per sequence, [cells * S]. With `reuse`, every
   * cell's window began at start - 1, where only the cell's own rows changed: a residual cell's rows
   * enter `start` restored (the clean run's) or zeroed, an MLP or attention cell's rows as its first
   * layer computed them on their own (`recordFirstLayer`), every other row as the shared run has it;
   * and sequence c*S + n computes only the rows from cell c's first token on.
   */
  private recordBatch(
    cells: Cell[],
    links: Link[],
    start: number,
    action: "restore" | "zero",
    reuse: boolean,
    S: number,
  ): Tensor {
    const model = this.model, gpu = model.gpu, cfg = model.config, T = this.T, d = cfg.nEmbd;
    const B = cells.length * S;
    // Submit what is recorded so far (the previous batch): the GPU starts on it while this one is recorded.
    gpu.flush();
    const hooks: Hook[] = [], captures: Hook[] = [];
    const promptOf = (j: number) => cells[Math.floor(j / S)].prompt ?? 0;
    // Sequence j's first computed position, and the shared runs' sequence it starts from.
    const starts = cells.flatMap((c) => new Array<number>(S).fill(reuse ? Math.min(...c.tokens) : 0));
    const baseOf = (j: number) => this.sequence(promptOf(j), action === "restore" ? j % S : -1);
    const sequences = starts.map((s, j) => this.prompts[promptOf(j)].ids.slice(s));
    const batch = makeBatch(sequences);
    const Tq = batch.T;
    let input: Tensor | undefined;
    let suffix: Suffix | undefined;
    if (reuse) {
      const own = cells.flatMap((c, i) => (c.kind === "resid" || links[i].from !== undefined ? [] : [i]));
      const first = own.length > 0
        ? this.recordFirstLayer(own.map((i) => cells[i]), start - 1, action, S)
        : undefined;
      input = gpu.zeros([B * Tq, d]); // padding rows stay 0
      const shared: RowEntry[] = [], firstRows: RowEntry[] = [], carried: RowEntry[] = [];
      for (let j = 0; j < B; j++) {
        const c = cells[Math.floor(j / S)], p = promptOf(j), link = links[Math.floor(j / S)];
        const k = own.indexOf(Math.floor(j / S)); // the cell's place in `first`
        for (let t = starts[j]; t < sequences[j].length + starts[j]; t++) {
          const dst = j * Tq + t - starts[j];
          if (link.from !== undefined) {
            carried.push({
              dst,
              src: link.from + (j % S) * sequences[j].length + t - starts[j],
              keep: 0,
              take: 1,
            });
          } else if (k >= 0 && t <= Math.max(...c.tokens)) {
            firstRows.push({ dst, src: (k * S + j % S) * first!.Tq + t - starts[j], keep: 0, take: 1 });
          } else if (c.kind === "resid" && c.tokens.includes(t)) {
            if (action === "restore") {
              shared.push({ dst, src: this.sequence(p, -1) * T + t, keep: 0, take: 1 });
            }
          } else {
            shared.push({ dst, src: baseOf(j) * T + t, keep: 0, take: 1 });
          }
        }
      }
      rowOps(gpu, input, this.inputs[start], d, shared);
      if (first) {
        rowOps(gpu, input, first.rows, d, firstRows);
        gpu.release(first.rows);
      }
      if (carried.length > 0) rowOps(gpu, input, this.carry!, d, carried);
      // What a predecessor leaves its successor: the residual after its window's last layer.
      links.forEach((link, c) => {
        if (link.into === undefined) return;
        const rows: number[] = [], intoRows: number[] = [];
        for (let n = 0; n < S; n++) {
          const j = c * S + n, length = sequences[j].length;
          for (let i = 0; i < length; i++) {
            rows.push(j * Tq + i);
            intoRows.push(link.into + n * length + i);
          }
        }
        captures.push({
          layer: cells[c].to - 1,
          site: "resid",
          capture: { into: this.carry!, rows, intoRows },
        });
      });
      // The earlier rows' keys and values at every later layer are those of corrupted sample n (restore)
      // or of the clean run (zero), as captured.
      suffix = { starts, qkv: this.qkv.slice(start), bases: starts.map((_, j) => baseOf(j) * T), T };
    } else if (action === "restore") {
      const entries: RowEntry[] = [];
      for (let j = 0; j < B; j++) {
        const p = promptOf(j), [b, e] = this.prompts[p].subject;
        for (let t = b; t < e; t++) {
          entries.push({ dst: j * Tq + t, src: this.noiseRow(p, j % S, t), keep: 1, take: 1 });
        }
      }
      hooks.push({ layer: -1, site: "embed", patch: { src: this.noise, entries } });
    }
    // The captures after the patches: they see the restored states.
    hooks.push(...this.cellHooks(cells, S, starts, Tq, start, action), ...captures);
    const outputRows = sequences.map((s, j) => j * Tq + s.length - 1);
    const res = model.forward(batch, { startLayer: reuse ? start : 0, input, suffix, hooks, outputRows });
    const targets = gpu.upload([B], starts.map((_, j) => this.prompts[promptOf(j)].target), "u32");
    const logProbs = logProbOf(gpu, res.logits, targets, B, cfg.vocabSize);
    model.releaseForward(res);
    gpu.release(input);
    return logProbs;
  }

  /**
   * The first window layer of MLP or attention cells, run on the cells' own rows only (a suffix forward
   * of one layer from each cell's first token to its last): the residual those rows leave `layer` with,
   * [cells * S * Tq, d], row (c*S + n) * Tq + i being cell c's sample n at its first token + i.
   */
  private recordFirstLayer(
    cells: Cell[],
    layer: number,
    action: "restore" | "zero",
    S: number,
  ): { rows: Tensor; Tq: number } {
    const gpu = this.model.gpu, T = this.T, d = this.model.config.nEmbd, B = cells.length * S;
    const cellOf = (j: number) => cells[Math.floor(j / S)];
    const starts = cells.flatMap((c) => new Array<number>(S).fill(Math.min(...c.tokens)));
    const baseOf = (j: number) => this.sequence(cellOf(j).prompt ?? 0, action === "restore" ? j % S : -1);
    const sequences = starts.map((s, j) => {
      const c = cellOf(j);
      return this.prompts[c.prompt ?? 0].ids.slice(s, Math.max(...c.tokens) + 1);
    });
    const batch = makeBatch(sequences);
    const Tq = batch.T;
    const input = gpu.zeros([B * Tq, d]);
    const entries: RowEntry[] = [];
    sequences.forEach((s, j) => {
      for (let i = 0; i < s.length; i++) {
        entries.push({ dst: j * Tq + i, src: baseOf(j) * T + starts[j] + i, keep: 0, take: 1 });
      }
    });
    rowOps(gpu, input, this.inputs[layer], d, entries);
    const res = this.model.forward(batch, {
      startLayer: layer,
      endLayer: layer + 1,
      input,
      suffix: { starts, qkv: this.qkv.slice(layer), bases: starts.map((_, j) => baseOf(j) * T), T },
      hooks: this.cellHooks(cells, S, starts, Tq, layer, action, layer + 1),
      outputRows: Array.from({ length: B * Tq }, (_, r) => r),
    });
    gpu.release(input);
    return { rows: res.logits, Tq };
  }

  /**
   * The patches of `cells` x S sequences (rows from starts[j], Tq per sequence) at layers [from, to)
   * (to: every layer the cells reach): restore copies the clean run's state, zero writes zeros.
   */
  private cellHooks(
    cells: Cell[],
    S: number,
    starts: number[],
    Tq: number,
    from: number,
    action: "restore" | "zero",
    to = Math.max(...cells.map((c) => c.to)),
  ): Hook[] {
    const T = this.T, hooks: Hook[] = [];
    for (const kind of STATE_KINDS) {
      for (let l = from; l < to; l++) {
        const entries: RowEntry[] = [];
        cells.forEach((cell, c) => {
          if (cell.kind !== kind || l < cell.from || l >= cell.to) return;
          const p = cell.prompt ?? 0;
          for (let n = 0; n < S; n++) {
            for (const t of cell.tokens) {
              const j = c * S + n, dst = j * Tq + t - starts[j];
              const src = kind === "resid" ? this.sequence(p, -1) * T + t : p * T + t;
              entries.push(
                action === "restore" ? { dst, src, keep: 0, take: 1 } : { dst, src: dst, keep: 0, take: 0 },
              );
            }
          }
        });
        if (entries.length === 0) continue;
        const src = action === "zero"
          ? null
          : kind === "resid"
          ? this.inputs[l + 1]
          : this.cleanOutputs[kind][l];
        hooks.push({ layer: l, site: kind, patch: { src, entries } });
      }
    }
    return hooks;
  }

  /** Returns every kept tensor to the buffer pool. */
  release(): void {
    this.model.gpu.release(
      this.noise,
      ...this.inputs,
      ...this.qkv,
      ...this.cleanOutputs.mlp,
      ...this.cleanOutputs.attn,
      ...(this.baseLogProbs ? [this.baseLogProbs] : []),
    );
  }
}

/** A cell's place in a chain of cells that differ only in their window's end (rows of TraceRun's carry). */
interface Link {
  /** The first row of the state this cell continues from (S x its rows; it starts at `start`). */
  from?: number;
  /** The layer this cell starts at: its predecessor's window end. */
  start?: number;
  /** The first row this cell leaves its state in, after its window's last layer, for its successor. */
  into?: number;
}

/** Rows and sequences one scoring batch may hold on this adapter (and under the caller's row cap). */
function batchLimits(model: Model, rowCap = 2048): { maxRows: number; maxSequences: number } {
  const cfg = model.config, limit = model.gpu.limits.maxStorageBufferBindingSize;
  const widest = Math.max(model.siteWidth("mlp_pre"), qkvWidth(cfg));
  return {
    maxRows: Math.min(rowCap, Math.floor(limit / (4 * widest))),
    maxSequences: Math.floor(limit / (4 * cfg.vocabSize)),
  };
}

/**
 * Consecutive prompts whose shared runs one TraceRun can hold, as [first, end) ranges: the prepare
 * batch (prompts x (samples + 1) sequences of the longest prompt's length) within the scoring
 * batches' row and sequence limits, every kept tensor (q|k|v and the residual per layer) within one
 * storage binding and all of them within the smaller of the largest buffer and four bindings (as
 * `fitsOneBatch` bounds v*'s batches: WebGPU exposes no memory size). A chunk holds at least one prompt.
 */
export function promptChunks(
  model: Model,
  prompts: TracePrompt[],
  samples: number,
  maxRows?: number,
): [number, number][] {
  const cfg = model.config, limits = model.gpu.limits, L = cfg.nLayer, d = cfg.nEmbd;
  const width = qkvWidth(cfg);
  const binding = limits.maxStorageBufferBindingSize;
  const limit = batchLimits(model, maxRows);
  const fits = (first: number, end: number) => {
    const P = end - first, T = Math.max(...prompts.slice(first, end).map((x) => x.ids.length));
    const rows = P * (samples + 1) * T;
    const kept = 4 * ((L + 1) * rows * d + L * rows * width + 2 * L * P * T * d);
    // Within maxRows every activation of the prepare batch (the widest included) fits one binding.
    return rows <= limit.maxRows && P * (samples + 1) <= limit.maxSequences &&
      kept <= Math.min(limits.maxBufferSize, 4 * binding);
  };
  const chunks: [number, number][] = [];
  let first = 0;
  for (let end = 1; end <= prompts.length; end++) {
    if (end - first > 1 && !fits(first, end)) {
      chunks.push([first, end - 1]);
      first = end - 1;
    }
  }
  if (prompts.length > first) chunks.push([first, prompts.length]);
  return chunks;
}

function checkCell(c: Cell, index: number, prompts: TracePrompt[], L: number): void {
  const where = `trace: cell ${index} ${JSON.stringify(c)}`;
  const p = c.prompt ?? 0;
  if (!Number.isInteger(p) || p < 0 || p >= prompts.length) {
    throw new Error(`${where}: prompt must be an index into the run's ${prompts.length} prompts`);
  }
  if (!STATE_KINDS.includes(c.kind)) {
    throw new Error(`${where}: kind must be one of ${STATE_KINDS.join(", ")}`);
  }
  if (!(Number.isInteger(c.from) && Number.isInteger(c.to) && 0 <= c.from && c.from < c.to && c.to <= L)) {
    throw new Error(`${where}: layers [from, to) must be a non-empty range inside [0, ${L})`);
  }
  if (c.tokens.length === 0 || new Set(c.tokens).size !== c.tokens.length) {
    throw new Error(`${where}: tokens must be distinct and non-empty`);
  }
  const T = prompts[p].ids.length;
  if (c.tokens.some((t) => !Number.isInteger(t) || t < 0 || t >= T)) {
    throw new Error(`${where}: token outside [0, ${T})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Grids

/** Method, kinds, windows, noise and samples of a trace. */
export interface TraceOptions {
  /** Noise and restore (default) or representation zeroing. */
  method?: TraceMethod;
  /** Kinds of states traced (default all). */
  kinds?: readonly StateKind[];
  /** One window for every kind, or per kind (default DEFAULT_WINDOWS). */
  window?: number | Partial<Record<StateKind, number>>;
  /** Noise draws (default 10; zeroing uses none). */
  samples?: number;
  /** Absolute noise level; default ROME's rule over the traced subject's tokens (callers tracing many facts
   *  pass subjectNoiseLevel's over all of them). */
  noise?: number;
  /** Seed of the noise (default 1, like ROME's RandomState(1)). */
  seed?: number;
  /** false: the naive path, every cell recomputed from the embeddings (for benchmarks and tests). */
  reuse?: boolean;
  /** Upper bound on activation rows per batch (TraceRunOptions.maxRows). */
  maxRows?: number;
}

/** Per-layer summaries of a grid: the maximum over tokens (Hase et al.) and the last subject token. */
export interface LayerSummary {
  /** Per layer, the largest effect over tokens. */
  maxEffect: number[];
  /** Per layer, the largest fraction over tokens. */
  maxFraction: number[];
  /** Per layer, the effect at the subject's last token. */
  lastSubjectEffect: number[];
  /** Per layer, the fraction at the subject's last token. */
  lastSubjectFraction: number[];
}

/** One kind's grid, [T][L] arrays indexed [token][layer]. */
export interface KindGrid {
  /** The states traced. */
  kind: StateKind;
  /** Layers restored (or zeroed) around each centre layer. */
  window: number;
  /** p(target) with the cell's states restored (noise) or zeroed (zero). */
  prob: number[][];
  /** noise: the indirect effect prob - corrupted. zero: the probability removed, clean - prob. */
  effect: number[][];
  /** noise: effect / (clean - corrupted). zero: effect / clean. NaN (null in JSON) if the denominator is 0. */
  fraction: number[][];
  /** Per-layer summaries of the grid. */
  layers: LayerSummary;
  /** zero only, per layer: every subject token zeroed together over the window (Hase et al.'s measure). */
  subjectZeroed?: { prob: number[]; fraction: number[] };
}

/** A trace's grids (one per kind: [tokens][layers]) with clean and corrupted probabilities. */
export interface GridTrace {
  /** Noise and restore, or zeroing. */
  method: TraceMethod;
  /** The prompt's token ids. */
  ids: number[];
  /** The subject's tokens, [start, end). */
  subjectRange: [number, number];
  /** The token whose probability is traced. */
  targetId: number;
  /** p(target) of the clean run. */
  clean: number;
  /** Mean corrupted probability (noise); null for zeroing. */
  corrupted: number | null;
  /** Absolute noise level used (noise); null for zeroing. */
  noise: number | null;
  /** Noise draws per cell (0 for zeroing). */
  samples: number;
  /** Seed of the noise draws. */
  seed: number;
  /** One grid per kind traced. */
  grids: KindGrid[];
}

/** The window of `kind` under a trace's window option (a number, or one per kind). */
export function windowFor(kind: StateKind, window: TraceOptions["window"]): number {
  if (typeof window === "number") return window;
  return window?.[kind] ?? DEFAULT_WINDOWS[kind];
}

/** The full tokens x layers grid of every requested kind, for token ids with a known subject range. */
export async function traceTokens(
  model: Model,
  ids: number[],
  subjectRange: [number, number],
  targetId: number,
  o: TraceOptions = {},
): Promise<GridTrace> {
  const [trace] = await tracePrompts(model, [{ ids, subject: subjectRange, target: targetId }], o);
  return trace;
}

/** The grids of many prompts, traced together (see traceChunks); in the prompts' order. */
export async function tracePrompts(
  model: Model,
  prompts: TracePrompt[],
  o: TraceOptions = {},
): Promise<GridTrace[]> {
  const traces: GridTrace[] = [];
  for await (const chunk of traceChunks(model, prompts, o)) traces.push(...chunk);
  return traces;
}

/**
 * The grids of many prompts, yielded a chunk at a time (in the prompts' order): each chunk's clean and
 * corrupted runs are one batch (promptChunks sizes the chunks from the adapter's limits) and all its
 * cells are scored together, cells of different prompts sharing batches, with one readback per chunk.
 * Without a noise level, each prompt's is ROME's rule over its own subject tokens.
 */
export async function* traceChunks(
  model: Model,
  prompts: TracePrompt[],
  o: TraceOptions = {},
): AsyncGenerator<GridTrace[]> {
  const method = o.method ?? "noise";
  const kinds = o.kinds ?? STATE_KINDS;
  const L = model.config.nLayer;
  const samples = method === "noise" ? o.samples ?? 10 : 0;
  const seed = o.seed ?? 1;
  if (method === "noise" && samples < 1) throw new Error(`trace: samples must be >= 1, got ${samples}`);
  for (const [first, end] of promptChunks(model, prompts, samples, o.maxRows)) {
    const chunk = prompts.slice(first, end);
    const noise: number[] = [];
    for (const x of chunk) {
      noise.push(
        method === "noise"
          ? o.noise ?? (await tokenNoiseLevel(model, x.ids.slice(x.subject[0], x.subject[1]), 1)).level
          : 0,
      );
    }
    const run = TraceRun.prepare(model, chunk, { samples, noise, seed, maxRows: o.maxRows });
    try {
      // Every cell of the chunk in one `score` call: cells of every prompt and kind starting at the same
      // layer share batches.
      const cells: Cell[] = [];
      chunk.forEach(({ ids, subject: [b, e] }, prompt) => {
        for (const kind of kinds) {
          const w = windowFor(kind, o.window);
          for (let t = 0; t < ids.length; t++) {
            for (let l = 0; l < L; l++) {
              const [from, to] = windowLayers(l, w, L);
              cells.push({ kind, tokens: [t], from, to, prompt });
            }
          }
          if (method === "zero") {
            const tokens = Array.from({ length: e - b }, (_, i) => b + i);
            for (let l = 0; l < L; l++) {
              const [from, to] = windowLayers(l, w, L);
              cells.push({ kind, tokens, from, to, prompt });
            }
          }
        }
      });
      const probs = await run.score(cells, method === "noise" ? "restore" : "zero", o.reuse ?? true);
      let next = 0;
      yield chunk.map(({ ids, subject, target }, p): GridTrace => {
        const T = ids.length, clean = run.clean[p], low = run.corrupted[p];
        const effectOf = (x: number) => (method === "noise" ? x - low : clean - x);
        const denominator = method === "noise" ? clean - low : clean;
        const fractionOf = (x: number) => (denominator === 0 ? NaN : effectOf(x) / denominator);
        const grids = kinds.map((kind): KindGrid => {
          const prob = Array.from({ length: T }, () => Array.from({ length: L }, () => probs[next++]));
          const effect = prob.map((row) => row.map(effectOf));
          const fraction = prob.map((row) => row.map(fractionOf));
          const grid: KindGrid = {
            kind,
            window: windowFor(kind, o.window),
            prob,
            effect,
            fraction,
            layers: summarise(effect, fraction, subject[1] - 1),
          };
          if (method === "zero") {
            const zeroed = Array.from({ length: L }, () => probs[next++]);
            grid.subjectZeroed = { prob: zeroed, fraction: zeroed.map(fractionOf) };
          }
          return grid;
        });
        return {
          method,
          ids,
          subjectRange: subject,
          targetId: target,
          clean,
          corrupted: method === "noise" ? low : null,
          noise: method === "noise" ? noise[p] : null,
          samples,
          seed,
          grids,
        };
      });
    } finally {
      run.release();
    }
  }
}

function summarise(effect: number[][], fraction: number[][], lastSubject: number): LayerSummary {
  const L = effect[0].length;
  const maxOver = (g: number[][], l: number) => Math.max(...g.map((row) => row[l]));
  const layers = Array.from({ length: L }, (_, l) => l);
  return {
    maxEffect: layers.map((l) => maxOver(effect, l)),
    maxFraction: layers.map((l) => maxOver(fraction, l)),
    lastSubjectEffect: layers.map((l) => effect[lastSubject][l]),
    lastSubjectFraction: layers.map((l) => fraction[lastSubject][l]),
  };
}

// ---------------------------------------------------------------------------------------------
// Facts as text

/** A fact as text: the prompt, the subject in it, and the answer scored. */
export interface FactQuery {
  /** The prompt, subject included. */
  prompt: string;
  /** The subject, as it occurs in the prompt. */
  subject: string;
  /** The true object; its first token (with a leading space) is the one scored. */
  target: string;
}

/** A traced fact: its grids with the prompt's tokens, the subject's range and the target token. */
export interface FactTrace extends GridTrace, FactQuery {
  /** Decoded token strings of the prompt. */
  tokens: string[];
  /** The scored token, decoded. */
  targetToken: string;
}

/** The scored target token: the first of the target's tokens after the prompt; a word outside a
 *  word-level vocabulary is an error. Every command scores targets through this one function. */
export function targetTokenId(tok: Tokenizer, prompt: string, target: string): number {
  return targetIds(tok, prompt, target, { refuseUnknown: true })[0];
}

/** Tokenizes the fact, finds the subject's tokens and traces it. */
export async function traceFact(
  model: Model,
  tok: Tokenizer,
  fact: FactQuery,
  o: TraceOptions = {},
): Promise<FactTrace> {
  const [trace] = await traceFacts(model, tok, [fact], o);
  return trace;
}

/** Traces many facts together (tracePrompts: shared batches, a readback per chunk); in their order. */
export async function traceFacts<F extends FactQuery>(
  model: Model,
  tok: Tokenizer,
  facts: F[],
  o: TraceOptions = {},
): Promise<(FactTrace & F)[]> {
  const traces: (FactTrace & F)[] = [];
  for await (const chunk of factChunks(model, tok, facts, o)) traces.push(...chunk);
  return traces;
}

/** traceChunks for facts as text: each chunk's traces as soon as they are done (for progress and output). */
export async function* factChunks<F extends FactQuery>(
  model: Model,
  tok: Tokenizer,
  facts: F[],
  o: TraceOptions = {},
): AsyncGenerator<(FactTrace & F)[]> {
  const prompts = facts.map((fact): TracePrompt => ({
    ids: tok.encode(fact.prompt),
    subject: subjectTokenRange(tok, fact.prompt, fact.subject),
    target: targetTokenId(tok, fact.prompt, fact.target),
  }));
  let next = 0;
  for await (const chunk of traceChunks(model, prompts, o)) {
    yield chunk.map((grid) => {
      const fact = facts[next++];
      return {
        ...fact,
        tokens: grid.ids.map((id) => tok.tokenString(id)),
        targetToken: tok.tokenString(grid.targetId),
        ...grid,
      };
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Datasets: known_1000's schema

/** A known_1000 record (Meng et al. 2022). */
export interface KnownFact {
  /** The record's id. */
  known_id: number;
  /** The subject. */
  subject: string;
  /** The true object. */
  attribute: string;
  /** The prompt, subject included, no answer. */
  prompt: string;
}

/** Parses a known_1000-style JSON array; errors name the file, the record and the field. */
export function parseKnownFacts(text: string, file: string): KnownFact[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(data)) throw new Error(`${file}: expected a JSON array of known-fact records`);
  return data.map((r, i) => {
    const where = `${file}: record ${i}`;
    if (typeof r !== "object" || r === null || Array.isArray(r)) throw new Error(`${where}: not an object`);
    const rec = r as Record<string, unknown>;
    for (const field of ["subject", "attribute", "prompt"]) {
      if (typeof rec[field] !== "string" || rec[field] === "") {
        throw new Error(`${where}: field "${field}" must be a non-empty string`);
      }
    }
    const id = rec.known_id ?? i;
    if (typeof id !== "number" || !Number.isInteger(id)) {
      throw new Error(`${where}: field "known_id" must be an integer`);
    }
    const fact = {
      known_id: id,
      subject: rec.subject as string,
      attribute: rec.attribute as string,
      prompt: rec.prompt as string,
    };
    if (!fact.prompt.includes(fact.subject)) {
      throw new Error(
        `${where}: field "subject" (${JSON.stringify(fact.subject)}) does not occur in "prompt" (${
          JSON.stringify(fact.prompt)
        })`,
      );
    }
    return fact;
  });
}

/**
 * The facts the model completes correctly: greedy next token = the attribute's first token. A record
 * whose attribute has no known token or whose prompt is longer than the model reads is an error
 * naming `source` (the file) and the record.
 */
export async function knownFacts(
  model: Model,
  tok: Tokenizer,
  facts: KnownFact[],
  source = "dataset",
): Promise<KnownFact[]> {
  const positions = model.config.nPositions;
  const prompts = facts.map((f) => tok.encode(f.prompt));
  const targets = facts.map((f, i) => {
    const fail = (problem: string): never => {
      throw new Error(`${source}: record ${i} (known_id ${f.known_id}): ${problem}`);
    };
    if (prompts[i].length > positions) {
      fail(`the prompt has ${prompts[i].length} tokens, the model reads at most ${positions}`);
    }
    try {
      return targetTokenId(tok, f.prompt, f.attribute);
    } catch (e) {
      return fail((e as Error).message);
    }
  });
  const predicted = await greedyNextTokens(model, prompts);
  return facts.filter((_, i) => predicted[i] === targets[i]);
}

// ---------------------------------------------------------------------------------------------
// Averages across facts (ROME's average_causal_effects)

/** ROME's token groups of averaged traces (its average_causal_effects): subject tokens, the token after the
 *  subject, further tokens, the last token. */
export const TOKEN_GROUPS = [
  "first subject token",
  "middle subject tokens",
  "last subject token",
  "first subsequent token",
  "further tokens",
  "last token",
] as const;
/** One of TOKEN_GROUPS. */
export type TokenGroup = typeof TOKEN_GROUPS[number];

/** The token indices of each group for a prompt of T tokens with subject [b, e) (groups may overlap or be empty). */
export function tokenGroups(T: number, [b, e]: [number, number]): Record<TokenGroup, number[]> {
  const range = (from: number, to: number) =>
    Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
  return {
    "first subject token": [b],
    "middle subject tokens": range(b + 1, e - 1),
    "last subject token": [e - 1],
    "first subsequent token": e < T ? [e] : [],
    "further tokens": range(e + 1, T - 1),
    "last token": [T - 1],
  };
}

/** One token group's averaged curves over layers (ROME's averaged causal traces). */
export interface GroupCurve {
  /** Which tokens were pooled. */
  group: TokenGroup;
  /** Token rows pooled (each middle subject token counts as one). */
  count: number;
  /** Per layer, means over the pooled rows. */
  prob: number[];
  /** Per layer, the mean of KindGrid.effect (noise: prob - corrupted; zero: clean - prob). */
  effect: number[];
  /** Standard error of `effect` over the pooled rows (NaN with fewer than 2 rows). */
  effectSe: number[];
  /** Per layer, the mean of KindGrid.fraction (the effect over its denominator). */
  fraction: number[];
}

/** Traces of many facts averaged by token group (ROME's averaged causal-tracing figures). */
export interface AverageTrace {
  /** Noise-and-restore tracing or representation zeroing. */
  method: TraceMethod;
  /** The hidden states traced. */
  kind: StateKind;
  /** Layers restored (or zeroed) around each centre layer. */
  window: number;
  /** Facts averaged. */
  facts: number;
  /** Mean clean probability (ROME's high score) and mean corrupted probability (low score; null for zeroing). */
  clean: number;
  /** Mean corrupted probability; null for zeroing. */
  corrupted: number | null;
  /** One curve per token group. */
  groups: GroupCurve[];
  /** Zeroing only: per layer, means over facts of KindGrid.subjectZeroed (all subject tokens zeroed together). */
  subjectZeroed?: { prob: number[]; fraction: number[] };
}

/**
 * Per kind, per token group, per layer means across facts. For noise, ROME's AIE is prob - corrupted;
 * `effect` pools each row's own prob - corrupted, which is the same number for groups of one row per fact.
 * NaN fractions (clean = corrupted) are left out of the fraction means.
 */
export function averageTraces(traces: GridTrace[]): AverageTrace[] {
  if (traces.length === 0) return [];
  const method = traces[0].method;
  if (traces.some((t) => t.method !== method)) throw new Error("averageTraces: traces of different methods");
  const L = traces[0].grids[0].prob[0].length;
  return traces[0].grids.map((first, k) => {
    const groups = TOKEN_GROUPS.map((group): GroupCurve => {
      const sums = {
        prob: new Array(L).fill(0),
        effect: new Array(L).fill(0),
        effectSquared: new Array(L).fill(0),
        fraction: new Array(L).fill(0),
      };
      const fractionCounts = new Array(L).fill(0);
      let count = 0;
      for (const trace of traces) {
        const grid = trace.grids[k];
        if (grid.kind !== first.kind || grid.window !== first.window) {
          throw new Error("averageTraces: traces with different kinds or windows");
        }
        for (const t of tokenGroups(trace.ids.length, trace.subjectRange)[group]) {
          count++;
          for (let l = 0; l < L; l++) {
            sums.prob[l] += grid.prob[t][l];
            sums.effect[l] += grid.effect[t][l];
            sums.effectSquared[l] += grid.effect[t][l] ** 2;
            if (!Number.isNaN(grid.fraction[t][l])) {
              sums.fraction[l] += grid.fraction[t][l];
              fractionCounts[l]++;
            }
          }
        }
      }
      return {
        group,
        count,
        prob: sums.prob.map((s) => (count ? s / count : NaN)),
        effect: sums.effect.map((s) => (count ? s / count : NaN)),
        effectSe: sums.effect.map((s, l) =>
          count > 1
            ? Math.sqrt(Math.max(0, (sums.effectSquared[l] - (s * s) / count) / (count - 1)) / count)
            : NaN
        ),
        fraction: sums.fraction.map((s, l) => (fractionCounts[l] ? s / fractionCounts[l] : NaN)),
      };
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const average: AverageTrace = {
      method,
      kind: first.kind,
      window: first.window,
      facts: traces.length,
      clean: mean(traces.map((t) => t.clean)),
      corrupted: method === "noise" ? mean(traces.map((t) => t.corrupted!)) : null,
      groups,
    };
    if (method === "zero") {
      const layers = Array.from({ length: L }, (_, l) => l);
      const perLayer = (field: "prob" | "fraction") =>
        layers.map((l) => mean(traces.map((t) => t.grids[k].subjectZeroed![field][l])));
      average.subjectZeroed = { prob: perLayer("prob"), fraction: perLayer("fraction") };
    }
    return average;
  });
}
