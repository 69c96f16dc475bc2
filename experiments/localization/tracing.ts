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
// so that part is shared: one forward of the clean prompt plus its `samples` corrupted copies captures
// the residual entering every layer, every layer's attention keys and values, and the clean states of
// every kind. A cell whose window starts at layer s and whose first token is t then runs only the
// layers s..L-1 and only the rows t..T-1 (a suffix forward, engine/model.ts), from the captured
// corrupted residual entering s and with the earlier rows' keys and values as captured. Cells are
// grouped by s and ordered by t into batches of cells x samples sequences (bounded by maxRows and the
// adapter's binding size); the batches are submitted back to back without waiting, and one readback
// returns one number per row (the target's log-probability).
//
// The noise is added at the engine's "embed" site, wte + wpe: the same sum as ROME's noise on wte.
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
}

/** Noise draws, noise level, seed and batch size of a TraceRun. */
export interface TraceRunOptions {
  /** Corrupted copies of the prompt (noise draws); 0 prepares only the clean run (zeroing). */
  samples: number;
  /** Absolute noise level nu: noise = nu * N(0, 1) added to each subject token's embedding. */
  noise: number;
  /** Seed of the noise draws. */
  seed: number;
  /** Upper bound on activation rows (sequences x tokens) per batch, to bound memory. Default 2048. */
  maxRows?: number;
}

/**
 * The shared part of a trace: the clean and corrupted runs of one prompt, kept on the GPU, and the
 * machinery that scores batches of cells against them (`score`). Call `release` when done.
 */
export class TraceRun {
  private constructor(
    readonly model: Model,
    readonly ids: number[],
    readonly subject: [number, number],
    readonly target: number,
    readonly options: TraceRunOptions,
    /** Clean state of each kind at each layer, [T, d]. */
    private readonly cleanStates: Record<StateKind, Tensor[]>,
    /** Clean embeddings (wte + wpe), [T, d]: the residual entering layer 0. */
    private readonly cleanEmbed: Tensor,
    /** Residual entering each layer in the corrupted runs, [samples * T, d]; sample n is rows n*T.. */
    private readonly corruptedInputs: Tensor[],
    /** Attention's q|k|v at each layer, clean [T, width] and corrupted [samples * T, width]. */
    private readonly qkv: { clean: Tensor[]; corrupted: Tensor[] },
    /** The scaled noise, [samples * subjectLength, d]; row n*subjectLength + i is sample n's token b+i. */
    private readonly noise: Tensor,
    /** Probability of the target in the clean run. */
    readonly clean: number,
    /** Mean probability of the target over the corrupted runs (NaN with 0 samples). */
    readonly corrupted: number,
  ) {}

  /** Number of tokens of the prompt. */
  get T(): number {
    return this.ids.length;
  }

  /** Runs clean + corrupted once (one batch, one readback) and keeps what every cell needs. */
  static async prepare(
    model: Model,
    ids: number[],
    subject: [number, number],
    target: number,
    options: TraceRunOptions,
  ): Promise<TraceRun> {
    const gpu = model.gpu, cfg = model.config, d = cfg.nEmbd, L = cfg.nLayer, T = ids.length;
    const [b, e] = subject;
    const N = options.samples;
    if (T === 0) throw new Error("trace: empty prompt");
    if (!(Number.isInteger(b) && Number.isInteger(e) && 0 <= b && b < e && e <= T)) {
      throw new Error(`trace: subject token range [${b}, ${e}) is not inside the prompt's ${T} tokens`);
    }
    if (!Number.isInteger(target) || target < 0 || target >= cfg.vocabSize) {
      throw new Error(`trace: target token ${target} outside the vocabulary (size ${cfg.vocabSize})`);
    }
    if (!Number.isInteger(N) || N < 0) throw new Error(`trace: samples must be an integer >= 0, got ${N}`);
    if (!Number.isFinite(options.noise) || options.noise < 0) {
      throw new Error(`trace: noise level must be a finite number >= 0, got ${options.noise}`);
    }

    // Sequence 0 is clean, sequences 1..N are the corrupted copies (ROME's layout).
    const subjectLength = e - b;
    const z = gaussianNoise(N * subjectLength * d, options.seed).map((v) => v * options.noise);
    const noise = gpu.tensor([Math.max(1, N * subjectLength), d], N > 0 ? z : new Float32Array(d));
    const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
    const cleanRows = range(0, T), corruptedRows = range(T, N * T);

    const cleanEmbed = gpu.zeros([T, d]);
    const corruptedInputs = N > 0 ? Array.from({ length: L }, () => gpu.zeros([N * T, d])) : [];
    const cleanStates = {} as Record<StateKind, Tensor[]>;
    for (const kind of STATE_KINDS) cleanStates[kind] = Array.from({ length: L }, () => gpu.zeros([T, d]));
    // q|k|v of all N + 1 sequences per layer, split into clean and corrupted below.
    const width = (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim;
    const allQkv = Array.from({ length: L }, () => gpu.zeros([(N + 1) * T, width]));

    // Hooks run in list order and a hook captures before it patches, so the captures listed after
    // the noise patch see the noised embeddings.
    const hooks: Hook[] = [
      { layer: -1, site: "embed", patch: { src: noise, entries: noiseEntries(N, T, subject, (n) => n + 1) } },
      { layer: -1, site: "embed", capture: { into: cleanEmbed, rows: cleanRows } },
    ];
    if (N > 0) {
      hooks.push({ layer: -1, site: "embed", capture: { into: corruptedInputs[0], rows: corruptedRows } });
    }
    for (let l = 0; l < L; l++) {
      for (const kind of STATE_KINDS) {
        hooks.push({ layer: l, site: kind, capture: { into: cleanStates[kind][l], rows: cleanRows } });
      }
      if (N > 0 && l + 1 < L) {
        hooks.push({
          layer: l,
          site: "resid",
          capture: { into: corruptedInputs[l + 1], rows: corruptedRows },
        });
      }
    }
    const sequences = Array.from({ length: N + 1 }, () => ids);
    const res = model.forward(makeBatch(sequences), {
      hooks,
      captureQkv: new Map(allQkv.map((t, l) => [l, t])),
    });
    const qkv = {
      clean: allQkv.map((t) => {
        const c = gpu.empty([T, width]);
        gpu.copy(t, c, T * width);
        return c;
      }),
      corrupted: N > 0
        ? allQkv.map((t) => {
          const c = gpu.empty([N * T, width]);
          gpu.copy(t, c, N * T * width, T * width);
          return c;
        })
        : [],
    };
    gpu.release(...allQkv);
    const targets = gpu.upload([N + 1], new Array(N + 1).fill(target), "u32");
    const logProbs = logProbOf(gpu, res.logits, targets, N + 1, cfg.vocabSize);
    model.releaseForward(res);
    const [lp] = await gpu.readMany([logProbs]);
    gpu.release(logProbs);
    let corrupted = 0;
    for (let n = 1; n <= N; n++) corrupted += Math.exp(lp[n]) / N;
    return new TraceRun(
      model,
      ids,
      subject,
      target,
      options,
      cleanStates,
      cleanEmbed,
      corruptedInputs,
      qkv,
      noise,
      Math.exp(lp[0]),
      N > 0 ? corrupted : NaN,
    );
  }

  /** The residual entering layer `l` in the clean run, [T, d]. */
  private cleanInput(l: number): Tensor {
    return l === 0 ? this.cleanEmbed : this.cleanStates.resid[l - 1];
  }

  /**
   * p(target) for each cell: with action "restore" the mean over the corrupted samples with the cell's
   * clean states copied back in; with "zero" the clean run with the cell's states set to zero.
   * `reuse` (default) starts each batch at its cells' first window layer from the captured residual;
   * reuse = false recomputes every cell from the embeddings (the naive way; same numbers, slower).
   * Everything is recorded into one stream and read back once.
   */
  async score(cells: Cell[], action: "restore" | "zero", reuse = true): Promise<number[]> {
    const gpu = this.model.gpu, cfg = this.model.config, T = this.T;
    const S = action === "restore" ? this.options.samples : 1;
    if (S < 1) throw new Error("trace: restoring needs at least one noise sample");
    cells.forEach((c, i) => checkCell(c, i, T, cfg.nLayer));

    // Bound each batch: activation rows (the widest is the MLP's [rows, f] or [rows, 2f], or q|k|v) and
    // logits [sequences, V] must fit one storage binding, and computed rows stay under maxRows.
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const widest = Math.max(this.model.siteWidth("mlp_pre"), (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim);
    const maxRows = Math.min(this.options.maxRows ?? 2048, Math.floor(limit / (4 * widest)));
    const maxSequences = Math.floor(limit / (4 * cfg.vocabSize));
    if (S > maxSequences) {
      throw new Error(`trace: ${S} samples exceed the ${maxSequences} sequences one batch can hold`);
    }

    const byStart = new Map<number, number[]>(); // first layer run -> indices of its cells
    cells.forEach((c, i) => {
      const start = reuse ? c.from : 0;
      if (!byStart.has(start)) byStart.set(start, []);
      byStart.get(start)!.push(i);
    });
    // A batch computes the rows from its cells' first token on (all rows without reuse): ordered by
    // that token, each batch's cells start close together and it pads little.
    const firstRow = (i: number) => reuse ? Math.min(...cells[i].tokens) : 0;
    const batches: { cells: number[]; logProbs: Tensor }[] = [];
    for (const [start, indices] of byStart) {
      indices.sort((a, b) => firstRow(a) - firstRow(b));
      let chunk: number[] = [];
      const flush = () => {
        batches.push({
          cells: chunk,
          logProbs: this.recordBatch(chunk.map((j) => cells[j]), start, action, reuse, S),
        });
        chunk = [];
      };
      for (const i of indices) {
        // Rows of the chunk with cell i: (cells) x S sequences x the longest suffix (its first cell's).
        const rows = (chunk.length + 1) * S * (T - firstRow(chunk[0] ?? i));
        if (chunk.length > 0 && (rows > maxRows || (chunk.length + 1) * S > maxSequences)) flush();
        chunk.push(i);
      }
      if (chunk.length > 0) flush();
    }
    const values = await gpu.readMany(batches.map((b) => b.logProbs));
    gpu.release(...batches.map((b) => b.logProbs));
    const out = new Array<number>(cells.length);
    batches.forEach((batch, k) => {
      batch.cells.forEach((cellIndex, c) => {
        let p = 0;
        for (let n = 0; n < S; n++) p += Math.exp(values[k][c * S + n]);
        out[cellIndex] = p / S;
      });
    });
    return out;
  }

  /**
   * Records the forward of `cells` x S sequences (sequence c*S + n = cell c, sample n) starting at
   * layer `start`; returns the target's log-probability per sequence, [cells * S]. With `reuse`,
   * sequence c*S + n computes only the rows from cell c's first token on.
   */
  private recordBatch(
    cells: Cell[],
    start: number,
    action: "restore" | "zero",
    reuse: boolean,
    S: number,
  ): Tensor {
    const model = this.model, gpu = model.gpu, cfg = model.config, T = this.T, d = cfg.nEmbd;
    const B = cells.length * S;
    // Submit what is recorded so far (the previous batch): the GPU starts on it while this one is recorded.
    gpu.flush();
    const hooks: Hook[] = [];
    // Sequence j's first computed position, and its rows per sequence.
    const starts = cells.flatMap((c) => new Array<number>(S).fill(reuse ? Math.min(...c.tokens) : 0));
    const Tq = T - Math.min(...starts);
    let input: Tensor | undefined;
    let suffix: Suffix | undefined;
    if (reuse) {
      // The residual entering `start` at the computed rows; the earlier rows' keys and values at every
      // later layer are those of corrupted sample n (restore) or of the clean run (zero), as captured.
      const base = action === "restore" ? this.corruptedInputs[start] : this.cleanInput(start);
      const baseQkv = action === "restore" ? this.qkv.corrupted : this.qkv.clean;
      const sampleOf = (j: number) => action === "restore" ? j % S : 0;
      input = gpu.zeros([B * Tq, d]); // padding rows stay 0
      const entries: RowEntry[] = [];
      for (let j = 0; j < B; j++) {
        for (let t = starts[j]; t < T; t++) {
          entries.push({ dst: j * Tq + t - starts[j], src: sampleOf(j) * T + t, keep: 0, take: 1 });
        }
      }
      rowOps(gpu, input, base, d, entries);
      suffix = { starts, qkv: baseQkv.slice(start), bases: starts.map((_, j) => sampleOf(j) * T), T };
    } else if (action === "restore") {
      hooks.push({
        layer: -1,
        site: "embed",
        patch: {
          src: this.noise,
          entries: noiseEntries(S, T, this.subject, (n, c) => c * S + n, cells.length),
        },
      });
    }
    const lastLayer = Math.max(...cells.map((c) => c.to));
    for (const kind of STATE_KINDS) {
      for (let l = start; l < lastLayer; l++) {
        const entries: RowEntry[] = [];
        cells.forEach((cell, c) => {
          if (cell.kind !== kind || l < cell.from || l >= cell.to) return;
          for (let n = 0; n < S; n++) {
            for (const t of cell.tokens) {
              const j = c * S + n, dst = j * Tq + t - starts[j];
              entries.push(
                action === "restore"
                  ? { dst, src: t, keep: 0, take: 1 }
                  : { dst, src: dst, keep: 0, take: 0 },
              );
            }
          }
        });
        if (entries.length === 0) continue;
        const src = action === "restore" ? this.cleanStates[kind][l] : null;
        hooks.push({ layer: l, site: kind, patch: { src, entries } });
      }
    }
    const sequences = starts.map((s) => this.ids.slice(s));
    const outputRows = starts.map((s, j) => j * Tq + T - 1 - s);
    const res = model.forward(makeBatch(sequences), {
      startLayer: reuse ? start : 0,
      input,
      suffix,
      hooks,
      outputRows,
    });
    const targets = gpu.upload([B], new Array(B).fill(this.target), "u32");
    const logProbs = logProbOf(gpu, res.logits, targets, B, cfg.vocabSize);
    model.releaseForward(res);
    gpu.release(input);
    return logProbs;
  }

  /** Returns every kept tensor to the buffer pool. */
  release(): void {
    const gpu = this.model.gpu;
    gpu.release(
      this.cleanEmbed,
      this.noise,
      ...this.corruptedInputs,
      ...this.qkv.clean,
      ...this.qkv.corrupted,
    );
    for (const kind of STATE_KINDS) gpu.release(...this.cleanStates[kind]);
  }
}

/**
 * Row entries adding the noise to the subject tokens of `copies` x `samples` sequences: sequence
 * `sequenceOf(n, copy)` gets sample n's draws.
 */
function noiseEntries(
  samples: number,
  T: number,
  [b, e]: [number, number],
  sequenceOf: (n: number, copy: number) => number,
  copies = 1,
): RowEntry[] {
  const entries: RowEntry[] = [];
  for (let copy = 0; copy < copies; copy++) {
    for (let n = 0; n < samples; n++) {
      for (let t = b; t < e; t++) {
        entries.push({ dst: sequenceOf(n, copy) * T + t, src: n * (e - b) + (t - b), keep: 1, take: 1 });
      }
    }
  }
  return entries;
}

function checkCell(c: Cell, index: number, T: number, L: number): void {
  const where = `trace: cell ${index} ${JSON.stringify(c)}`;
  if (!STATE_KINDS.includes(c.kind)) {
    throw new Error(`${where}: kind must be one of ${STATE_KINDS.join(", ")}`);
  }
  if (!(Number.isInteger(c.from) && Number.isInteger(c.to) && 0 <= c.from && c.from < c.to && c.to <= L)) {
    throw new Error(`${where}: layers [from, to) must be a non-empty range inside [0, ${L})`);
  }
  if (c.tokens.length === 0 || new Set(c.tokens).size !== c.tokens.length) {
    throw new Error(`${where}: tokens must be distinct and non-empty`);
  }
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
  const method = o.method ?? "noise";
  const kinds = o.kinds ?? STATE_KINDS;
  const L = model.config.nLayer, T = ids.length;
  const samples = method === "noise" ? o.samples ?? 10 : 0;
  // Without a level from the caller: ROME's rule over this prompt's own subject tokens.
  const noise = method === "noise"
    ? o.noise ?? (await tokenNoiseLevel(model, ids.slice(subjectRange[0], subjectRange[1]), 1)).level
    : 0;
  const seed = o.seed ?? 1;
  if (method === "noise" && samples < 1) throw new Error(`trace: samples must be >= 1, got ${samples}`);
  const run = await TraceRun.prepare(model, ids, subjectRange, targetId, {
    samples,
    noise,
    seed,
    maxRows: o.maxRows,
  });
  try {
    // All kinds in one `score` call: cells of every kind starting at the same layer share batches.
    const cells: Cell[] = [];
    const [b, e] = subjectRange;
    const subjectTokens = Array.from({ length: e - b }, (_, i) => b + i);
    for (const kind of kinds) {
      const w = windowFor(kind, o.window);
      for (let t = 0; t < T; t++) {
        for (let l = 0; l < L; l++) {
          const [from, to] = windowLayers(l, w, L);
          cells.push({ kind, tokens: [t], from, to });
        }
      }
      if (method === "zero") {
        for (let l = 0; l < L; l++) {
          const [from, to] = windowLayers(l, w, L);
          cells.push({ kind, tokens: subjectTokens, from, to });
        }
      }
    }
    const probs = await run.score(cells, method === "noise" ? "restore" : "zero", o.reuse ?? true);

    const clean = run.clean, low = run.corrupted;
    const effectOf = (p: number) => (method === "noise" ? p - low : clean - p);
    const denominator = method === "noise" ? clean - low : clean;
    const fractionOf = (p: number) => (denominator === 0 ? NaN : effectOf(p) / denominator);
    let next = 0;
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
        layers: summarise(effect, fraction, e - 1),
      };
      if (method === "zero") {
        const p = Array.from({ length: L }, () => probs[next++]);
        grid.subjectZeroed = { prob: p, fraction: p.map(fractionOf) };
      }
      return grid;
    });
    return {
      method,
      ids,
      subjectRange,
      targetId,
      clean,
      corrupted: method === "noise" ? low : null,
      noise: method === "noise" ? noise : null,
      samples,
      seed,
      grids,
    };
  } finally {
    run.release();
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
  const ids = tok.encode(fact.prompt);
  const subjectRange = subjectTokenRange(tok, fact.prompt, fact.subject);
  const targetId = targetTokenId(tok, fact.prompt, fact.target);
  const grid = await traceTokens(model, ids, subjectRange, targetId, o);
  return {
    ...fact,
    tokens: ids.map((id) => tok.tokenString(id)),
    targetToken: tok.tokenString(targetId),
    ...grid,
  };
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
