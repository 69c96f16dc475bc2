// The unedited model's residual stream entering each block, kept for sequences that are scored many
// times under different edits (a sweep block scores each fact's prompts under every method, problem and
// layer). A virtual edit changes an MLP output projection, so below the lowest block it edits every row
// is the unedited model's: a pass scored under it can start at that block from here
// (evaluation/metrics.ts scoreTokens). Each row is computed by the same kernels in the same order as in
// a whole forward (no kernel mixes sequences, and a sequence's rows come out the same in any batch), so
// the scores are the same bits either way (tests/virtual_edits_test.ts).
import type { Tensor } from "../../engine/gpu.ts";
import { makeBatch, type Model, type Site } from "../../engine/model.ts";
import { type RowEntry, rowOps } from "../../engine/ops.ts";

/** Sequences cached per unedited pass (one batch of the model's forward). */
const PASS_SEQUENCES = 64;

/** Bytes a cache holds at most by default: the embedded model's sweep block needs a few MB; a large model's
 *  rows (GPT-2 XL: 47 blocks x 1600 floats a position) fill it with a few dozen prompts, and the
 *  sequences past it are scored from block 0. */
const DEFAULT_MAX_BYTES = 256 * 2 ** 20;

/** Where one cached sequence's rows are: chunk `chunk`, rows row .. row + length - 1. */
interface Place {
  chunk: number;
  row: number;
}

/** Per distinct sequence, the unedited residual entering each block 1..L-1, and the unedited states read
 *  at its fact tokens (experiments/editing/keys.ts readFactStates), within a byte budget. */
export class ResidualCache {
  /** Per chunk (one unedited pass), per block l = 1..L-1 the rows entering it: layers[l - 1] [rows, d]. */
  private readonly chunks: Tensor[][] = [];
  private readonly places = new Map<string, Place>();
  /** States read at a token of an unedited noise-free pass, by factStateKey. */
  private readonly states = new Map<string, Float32Array>();
  private bytes = 0;

  /** `maxBytes`: the most the cached rows may take (sequences past it are not cached). */
  constructor(readonly model: Model, readonly maxBytes = DEFAULT_MAX_BYTES) {}

  /** Whether `sequence` is cached. */
  has(sequence: readonly number[]): boolean {
    return this.places.has(sequence.join(","));
  }

  /** Sequences cached. */
  get size(): number {
    return this.places.size;
  }

  /** The highest block a pass can start at from here (the last one). */
  get deepest(): number {
    return this.model.nLayer - 1;
  }

  /** Caches each of `sequences` not cached yet while the cache stays within maxBytes: unedited passes over
   *  blocks 0..L-2. */
  ensure(sequences: readonly number[][]): void {
    const L = this.model.nLayer, d = this.model.config.nEmbd, gpu = this.model.gpu;
    if (L < 2) return;
    const missing = new Map<string, number[]>();
    for (const s of sequences) {
      const key = s.join(","), bytes = 4 * s.length * d * (L - 1);
      if (this.places.has(key) || missing.has(key) || this.bytes + bytes > this.maxBytes) continue;
      missing.set(key, s);
      this.bytes += bytes;
    }
    const todo = [...missing.entries()];
    for (let at = 0; at < todo.length; at += PASS_SEQUENCES) {
      const part = todo.slice(at, at + PASS_SEQUENCES);
      const batch = makeBatch(part.map(([, s]) => s));
      const rows = part.reduce((n, [, s]) => n + s.length, 0);
      const chunk = this.chunks.length;
      // Sequence b's row i (batch row b*T + i) goes to chunk row first[b] + i.
      const first: number[] = [];
      let row = 0;
      for (const [key, s] of part) {
        first.push(row);
        this.places.set(key, { chunk, row });
        row += s.length;
      }
      const batchRows = part.flatMap(([, s], b) => s.map((_, i) => b * batch.T + i));
      const chunkRows = part.flatMap(([, s], b) => s.map((_, i) => first[b] + i));
      const layers = Array.from({ length: L - 1 }, () => gpu.empty([rows, d]));
      this.chunks.push(layers);
      // The residual leaving block l - 1 is the one entering block l.
      const hooks = layers.map((into, i) => ({
        layer: i,
        site: "resid" as const,
        capture: { into, rows: batchRows, intoRows: chunkRows },
      }));
      const res = this.model.forward(batch, { hooks, endLayer: L - 1 });
      this.model.releaseForward(res);
    }
  }

  /**
   * The residual entering block `layer` (1..L-1) of `sequences`, laid out as a batch of T slots per
   * sequence ([B*T, d], sequence b's position i at row b*T + i, padding rows 0): a forward's `input` at
   * startLayer `layer`. Every sequence must have been cached (ensure).
   */
  input(layer: number, sequences: readonly number[][], T: number): Tensor {
    if (!(Number.isInteger(layer) && layer >= 1 && layer <= this.deepest)) {
      throw new Error(`ResidualCache: block ${layer} outside [1, ${this.deepest}]`);
    }
    const gpu = this.model.gpu, d = this.model.config.nEmbd;
    const out = gpu.zeros([sequences.length * T, d]);
    const byChunk = new Map<number, RowEntry[]>();
    sequences.forEach((s, b) => {
      const place = this.places.get(s.join(","));
      if (!place) throw new Error(`ResidualCache: sequence ${b} was not cached (ensure it first)`);
      if (s.length > T) throw new Error(`ResidualCache: sequence ${b} has ${s.length} tokens, T is ${T}`);
      if (!byChunk.has(place.chunk)) byChunk.set(place.chunk, []);
      const entries = byChunk.get(place.chunk)!;
      for (let i = 0; i < s.length; i++) {
        entries.push({ dst: b * T + i, src: place.row + i, keep: 0, take: 1 });
      }
    });
    for (const [chunk, entries] of byChunk) rowOps(gpu, out, this.chunks[chunk][layer - 1], d, entries);
    return out;
  }

  /** The unedited state of `site` at `layer` at token `token` of `sequence`, if kept (a copy). A sweep block
   *  reads the same keys for every problem and method that edits a fact at a layer (ROME's k*, MEMIT's
   *  first layer): each is computed once. */
  factState(
    sequence: readonly number[],
    token: number,
    layer: number,
    site: Site,
  ): Float32Array | undefined {
    return this.states.get(factStateKey(sequence, token, layer, site))?.slice();
  }

  /** Keeps an unedited state read at a token (factState), while the budget allows. */
  keepFactState(
    sequence: readonly number[],
    token: number,
    layer: number,
    site: Site,
    state: Float32Array,
  ): void {
    const key = factStateKey(sequence, token, layer, site);
    if (this.states.has(key) || this.bytes + 4 * state.length > this.maxBytes) return;
    this.states.set(key, state.slice());
    this.bytes += 4 * state.length;
  }

  /** Frees every cached row and state. */
  release(): void {
    for (const layers of this.chunks) this.model.gpu.release(...layers);
    this.chunks.length = 0;
    this.places.clear();
    this.states.clear();
    this.bytes = 0;
  }
}

const factStateKey = (sequence: readonly number[], token: number, layer: number, site: Site) =>
  `${sequence.join(",")}|${token}|${layer}|${site}`;

/** Indices 0..count-1 grouped by `key` (compared as JSON), in order of first appearance: the requests one
 *  forward pass serves (scoreTokens' items, readFactStates' reads of the same tokens, edit and noise). */
export function sharedPasses(count: number, key: (i: number) => unknown): number[][] {
  const passes: number[][] = [], passOf = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const k = JSON.stringify(key(i));
    let pass = passOf.get(k);
    if (pass === undefined) passOf.set(k, pass = passes.push([]) - 1);
    passes[pass].push(i);
  }
  return passes;
}

/**
 * Passes grouped by the block each starts at, lowest first: pass k at block wanted(k) where `cache` holds
 * its sequence (cached here first while the budget allows), else at block 0 (from the embeddings); without
 * a cache every pass starts at block 0. Each group lists its passes in order.
 */
export function startGroups(
  cache: ResidualCache | undefined,
  sequences: readonly number[][],
  wanted: (k: number) => number,
): [number, number[]][] {
  if (!cache) return [[0, sequences.map((_, k) => k)]];
  const first = sequences.map((_, k) => wanted(k));
  cache.ensure(sequences.filter((_, k) => first[k] > 0));
  const groups = new Map<number, number[]>();
  sequences.forEach((s, k) => {
    const block = first[k] > 0 && cache.has(s) ? first[k] : 0;
    if (!groups.has(block)) groups.set(block, []);
    groups.get(block)!.push(k);
  });
  return [...groups].sort((a, b) => a[0] - b[0]);
}
