// Key statistics: the uncentered second moment C = E[k k^T] [f,f] of an MLP layer's keys (the
// inputs of mlp.c_proj, f = 4d) over a text corpus. ROME's update direction is C^-1 k*, MEMIT and
// EMMET spread edits in the C^-1 metric, so keys the corpus uses often are disturbed least.
//
// Streaming on the GPU: batches of corpus sequences run forward with a capture hook at "key" of
// every requested layer (real tokens only, no padding), and C_l += K_l^T K_l is one matmul
// (transA, beta = 1) into an [f,f] accumulator; nothing is read back until the end, except for a
// checkpoint of the running sums (written atomically every minute by default) from which an
// interrupted run resumes. ROME counts samples in texts (100,000 Wikipedia articles); here `samples`
// counts keys, i.e. tokens, the quantity the estimate's quality depends on.
//
// Corpora (experiments/data/corpus.ts): the embedded model's training text (corpus.txt in its folder), any
// text file, or WikiText-103 from the hub cache, tokenized lazily text by text and packed back to back
// into sequences of at most `seqLen` tokens (longer texts are cut into pieces).
//
// Cache: one safetensors file per (model, layer, corpus, samples) under runs/editing-stats/:
//   <model name>/<corpus name>-<corpus hash>/layer<l>-n<samples>-<fingerprint>.safetensors
// where the fingerprint hashes the config and the layer's own c_fc and MLP input-norm weights (a retrained
// model gets new files). Stats always describe the model as loaded, before any edit.
//
// Shipped statistics: a model folder may carry key-stats/layer<l>-n<samples>.safetensors (the embedded
// model does, so a first edit, in Deno or in the web page, computes nothing), with the corpus hash and the
// fingerprint in its metadata: used only when both match, so a retrained model recomputes (and says so)
// rather than use stale ones. (No fingerprint in the name: a web page cannot list a folder.)
//
// Released statistics: importRomeStats reads the .npz files ROME and MEMIT publish (and their
// layer_stats.py writes), so an edit of GPT-2 XL or GPT-J needs no statistics run at all.
import { unzipSync } from "npm:fflate@0.8.2";
import { baseName as basename, io, joinPath as join } from "../../engine/io.ts";
import { configSummary } from "../../engine/config.ts";
import type { Hook, Model } from "../../engine/model.ts";
import { makeBatch } from "../../engine/model.ts";
import { matmul } from "../../engine/ops.ts";
import { openSafetensors, writeSafetensors } from "../../engine/safetensors.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { type Corpus, openCorpus } from "../data/corpus.ts";
import { makeFolder, removeIfExists, writeAtomic } from "../../engine/files.ts";
import { cholesky, choleskyInBackground, choleskySolve } from "./linalg.ts";

/**
 * C = E[k k^T] of one layer's keys, with its float64 Cholesky factor for solves: computed once per
 * process, and with a `factorDir`, kept there between runs (GPT-2 XL's f = 6400 takes ~40 s to
 * factorise and 0.2 s to read back).
 */
export class KeyStats {
  private factor: Float64Array | null = null;
  private preparing: Promise<void> | null = null;

  /** C of `layer`'s keys, given as `moment` [f, f] averaged over `count` keys. */
  constructor(
    readonly layer: number,
    /** Key width f. */
    readonly width: number,
    /** Keys averaged. */
    readonly count: number,
    /** C [f,f], row-major. */
    readonly moment: Float32Array,
    /** Folder of cached factors (files named by a hash of `moment`); null: none. */
    readonly factorDir: string | null = null,
  ) {
    if (moment.length !== width * width) {
      throw new Error(`KeyStats: moment has ${moment.length} values, expected ${width}^2`);
    }
  }

  /** What the statistics are, for messages and the background factorisation. */
  private get what(): string {
    return `key second moment of layer ${this.layer}`;
  }

  /**
   * Makes the factor ready for solve(): read from factorDir when a file for exactly this moment is
   * there, else computed (in a Worker when wide: see choleskyInBackground) and written there,
   * atomically. Editing methods start it before their GPU work and await it before solving.
   */
  prepareSolve(log: (line: string) => void = () => {}): Promise<void> {
    // One factorisation however many callers wait for it (an edit starts it early and awaits it later).
    this.preparing ??= this.loadOrFactorise(log).then((L) => {
      this.factor = L;
    });
    return this.preparing;
  }

  /** The Cholesky factor: read back from factorDir when it holds this C's, else computed (and kept there). */
  private async loadOrFactorise(log: (line: string) => void): Promise<Float64Array> {
    if (this.factor) return this.factor;
    if (this.factorDir === null) return await choleskyInBackground(this.moment, this.width, this.what);
    const path = join(
      this.factorDir,
      `cholesky-f${this.width}-${(await sha256Hex([this.moment])).slice(0, 16)}.bin`,
    );
    const cached = await readFactor(path, this.width);
    if (cached) {
      log(`Cholesky factor of the ${this.what}: cached ${path}`);
      return cached;
    }
    const started = performance.now();
    const L = await choleskyInBackground(this.moment, this.width, this.what);
    log(
      `Cholesky factor of the ${this.what}: ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s, kept in ${path}`,
    );
    await makeFolder(this.factorDir);
    await writeFactor(path, L, this.width);
    return L;
  }

  /** C^-1 b (float64; factorised on the first call if prepareSolve was not awaited). */
  solve(b: ArrayLike<number>): Float64Array {
    if (!this.factor) this.factor = cholesky(this.moment, this.width, this.what);
    return choleskySolve(this.factor, this.width, b);
  }
}

// A cached factor file: the magic line, then L's lower triangle (row i: L[i][0..i]) as little-endian
// float64, f(f+1)/2 values.
const FACTOR_MAGIC = "locus cholesky factor v1".padEnd(31) + "\n"; // 32 bytes: the values stay 8-byte aligned

/** The factor L [f,f] stored at `path`, or null if there is none; a damaged file is an error naming it. */
async function readFactor(path: string, f: number): Promise<Float64Array | null> {
  const file = await io().open(path);
  if (!file) return null;
  try {
    const head = FACTOR_MAGIC.length, values = (f * (f + 1)) / 2;
    if (file.size !== head + 8 * values) {
      throw new Error(
        `${path}: ${file.size} bytes, a Cholesky factor of width ${f} has ${head + 8 * values}`,
      );
    }
    const bytes = await file.read(0, file.size);
    if (new TextDecoder().decode(bytes.subarray(0, head)) !== FACTOR_MAGIC) {
      throw new Error(`${path}: not a Locus Cholesky factor file`);
    }
    const packed = new Float64Array(bytes.slice(head).buffer);
    const L = new Float64Array(f * f);
    for (let i = 0, at = 0; i < f; at += i + 1, i++) {
      L.set(packed.subarray(at, at + i + 1), i * f);
      if (!(L[i * f + i] > 0)) {
        throw new Error(`${path}: diagonal entry ${i} is ${L[i * f + i]}, not positive`);
      }
    }
    return L;
  } finally {
    file.close();
  }
}

async function writeFactor(path: string, L: Float64Array, f: number): Promise<void> {
  const head = new TextEncoder().encode(FACTOR_MAGIC);
  const bytes = new Uint8Array(head.length + 4 * f * (f + 1));
  bytes.set(head);
  const packed = new Float64Array(bytes.buffer, head.length);
  for (let i = 0, at = 0; i < f; at += i + 1, i++) packed.set(L.subarray(i * f, i * f + i + 1), at);
  await writeAtomic(path, bytes);
}

/** What computeKeyStats accumulates, over how many keys, in what batches, and where it checkpoints. */
export interface StatsOptions {
  /** Blocks whose MLP keys are accumulated. */
  layers: number[];
  /** Keys (tokens) to average; fewer if the corpus is shorter. */
  samples: number;
  /** Tokens per packed sequence, which sets the batch size (default: the longest of an array, else nPositions). */
  seqLen?: number;
  /** Tokens per forward batch (default 4096). */
  batchTokens?: number;
  /** Called after every batch with keys done so far, the target and seconds elapsed. */
  onProgress?: (done: number, total: number, seconds: number) => void;
  /** Keep the running sums here and resume from them (the caller removes the file when done). */
  checkpoint?: Checkpoint;
  /** Receives progress lines meant for people (e.g. resuming from a checkpoint). */
  log?: (line: string) => void;
}

/** Packs texts' token ids back to back into sequences of seqLen tokens (longer texts are cut). */
class Packer {
  private cur: number[] = [];
  /** Tokens packed so far. */
  tokens = 0;

  constructor(private readonly tok: Tokenizer, private readonly seqLen: number) {}

  /** The sequences that `text` completes (blank texts are skipped). */
  add(text: string): number[][] {
    if (text.trim() === "") return [];
    const out: number[][] = [];
    let ids = this.tok.encode(text);
    while (ids.length > 0) {
      if (this.cur.length === this.seqLen) {
        out.push(this.cur);
        this.cur = [];
      }
      const take = ids.slice(0, this.seqLen - this.cur.length);
      this.cur.push(...take);
      this.tokens += take.length;
      ids = ids.slice(take.length);
    }
    return out;
  }

  /** The last, possibly short, sequence. */
  rest(): number[][] {
    return this.cur.length ? [this.cur] : [];
  }
}

/** Tokenizes lines and packs them back to back into sequences of at most seqLen tokens. */
export function packCorpus(
  tok: Tokenizer,
  lines: string[],
  seqLen: number,
  maxTokens = Infinity,
): number[][] {
  const packer = new Packer(tok, seqLen);
  const out: number[][] = [];
  for (const line of lines) {
    if (packer.tokens >= maxTokens) break;
    out.push(...packer.add(line));
  }
  return [...out, ...packer.rest()];
}

/** packCorpus over a lazily read corpus: texts are tokenized only as sequences are taken. */
export async function* packTexts(
  tok: Tokenizer,
  texts: AsyncIterable<string>,
  seqLen: number,
  maxTokens = Infinity,
): AsyncGenerator<number[]> {
  const packer = new Packer(tok, seqLen);
  for await (const text of texts) {
    if (packer.tokens >= maxTokens) break;
    yield* packer.add(text);
  }
  yield* packer.rest();
}

/** Where computeKeyStats keeps its running sums, and how often (seconds; 0 = after every batch). */
export interface Checkpoint {
  /** File of the running sums. */
  path: string;
  /** Seconds between saves (0 = after every batch). */
  seconds: number;
}

/** A checkpoint's running sums K^T K per layer, keys done and sequences consumed; null if absent. */
async function readCheckpoint(
  path: string,
  layers: number[],
  f: number,
  samples: number,
  seqLen: number,
): Promise<{ sums: Map<number, Float32Array>; done: number; consumed: number } | null> {
  if (!(await exists(path))) return null;
  const file = await openSafetensors(path);
  try {
    // Sequences are skipped by count on resume: the packing (seqLen) must be the same too.
    const m = file.metadata;
    const was = `layers ${m.layers} for ${m.samples} keys in sequences of ${m.seqLen}`;
    const now = `layers ${layers.join(",")} for ${samples} keys in sequences of ${seqLen}`;
    if (was !== now) {
      throw new Error(`${path}: a checkpoint of ${was}, not of ${now}; delete it to start afresh`);
    }
    const sums = new Map<number, Float32Array>();
    for (const l of layers) {
      if (!file.has(`sum${l}`) || file.info(`sum${l}`).shape.join(",") !== `${f},${f}`) {
        throw new Error(`${path}: expected a tensor "sum${l}" of shape [${f},${f}]`);
      }
      sums.set(l, await file.read(`sum${l}`));
    }
    return { sums, done: Number(m.done), consumed: Number(m.consumed) };
  } finally {
    file.close();
  }
}

/**
 * Streams `sequences` through the model, accumulating K^T K at every layer of `layers` on the GPU
 * until `samples` keys are seen; returns C = K^T K / count per layer and the seconds it took.
 * With a checkpoint, the running sums are saved every `checkpoint.seconds` and a later call resumes
 * from them, skipping the sequences already counted (the sequences must come in the same order).
 */
export async function computeKeyStats(
  model: Model,
  sequences: Iterable<number[]> | AsyncIterable<number[]>,
  o: StatsOptions,
): Promise<{ stats: Map<number, KeyStats>; seconds: number }> {
  const gpu = model.gpu, f = model.config.nInner;
  for (const l of o.layers) {
    if (!Number.isInteger(l) || l < 0 || l >= model.nLayer) {
      throw new Error(`key statistics: layer ${l} outside [0, ${model.nLayer})`);
    }
  }
  if (!(o.samples >= 1)) throw new Error(`key statistics: samples must be >= 1, got ${o.samples}`);
  if (f * f * 4 > gpu.limits.maxStorageBufferBindingSize) {
    throw new Error(
      `key statistics: the [${f},${f}] accumulator needs ${f * f * 4} bytes, over this adapter's ` +
        `maxStorageBufferBindingSize (${gpu.limits.maxStorageBufferBindingSize})`,
    );
  }
  const total = o.samples;
  const seqLen = o.seqLen ??
    (Array.isArray(sequences)
      ? sequences.reduce((m, s) => Math.max(m, s.length), 1)
      : model.config.nPositions);
  const perBatch = Math.max(1, Math.floor((o.batchTokens ?? 4096) / seqLen));
  const resumed = o.checkpoint ? await readCheckpoint(o.checkpoint.path, o.layers, f, total, seqLen) : null;
  const accumulators = new Map(
    o.layers.map((l) => [l, resumed ? gpu.tensor([f, f], resumed.sums.get(l)!) : gpu.zeros([f, f])]),
  );
  let done = resumed?.done ?? 0, consumed = 0;
  const skip = resumed?.consumed ?? 0;
  if (resumed) o.log?.(`key statistics: resuming from ${o.checkpoint!.path} at ${done} keys`);
  const started = performance.now();
  let savedAt = performance.now();

  const saveCheckpoint = async () => {
    const layers = [...accumulators.keys()];
    const sums = await gpu.readMany(layers.map((l) => accumulators.get(l)!));
    const tensors = Object.fromEntries(layers.map((l, i) => [`sum${l}`, { shape: [f, f], data: sums[i] }]));
    await writeSafetensors(o.checkpoint!.path, tensors, {
      layers: layers.join(","),
      samples: String(total),
      seqLen: String(seqLen),
      done: String(done),
      consumed: String(consumed),
    });
    savedAt = performance.now();
  };

  const runBatch = async (chunk: number[][]) => {
    const batch = makeBatch(chunk);
    const rows: number[] = [];
    chunk.forEach((s, b) => s.forEach((_, t) => rows.push(b * batch.T + t)));
    rows.splice(total - done); // the last batch may stop part way
    const captures = new Map(o.layers.map((l) => [l, gpu.empty([rows.length, f])]));
    const hooks: Hook[] = o.layers.map((l) => ({
      layer: l,
      site: "key",
      capture: { into: captures.get(l)!, rows },
    }));
    model.releaseForward(model.forward(batch, { hooks, outputRows: [0] }));
    for (const l of o.layers) {
      const K = captures.get(l)!;
      matmul(gpu, K, K, f, f, rows.length, { transA: true, out: accumulators.get(l)!, beta: 1 });
      gpu.release(K);
    }
    done += rows.length;
    if (o.checkpoint && done < total && (performance.now() - savedAt) / 1000 >= o.checkpoint.seconds) {
      await saveCheckpoint();
    }
    if (o.onProgress) {
      await gpu.sync();
      o.onProgress(done, total, (performance.now() - started) / 1000);
    }
  };

  let pending: number[][] = [];
  for await (const s of sequences) {
    if (done >= total) break;
    if (consumed++ < skip) continue;
    if (s.length === 0) continue;
    pending.push(s);
    if (pending.length === perBatch) {
      await runBatch(pending);
      pending = [];
    }
  }
  if (pending.length > 0 && done < total) await runBatch(pending);
  if (done === 0) {
    for (const t of accumulators.values()) t.destroy();
    throw new Error("key statistics: the corpus has no tokens");
  }
  const layers = [...accumulators.keys()];
  const sums = await gpu.readMany(layers.map((l) => accumulators.get(l)!));
  for (const t of accumulators.values()) t.destroy();
  const stats = new Map<number, KeyStats>();
  layers.forEach((l, i) => stats.set(l, new KeyStats(l, f, done, sums[i].map((v) => v / done))));
  return { stats, seconds: (performance.now() - started) / 1000 };
}

/** Whether a file exists (read through io(), so also in a web page). */
async function exists(path: string): Promise<boolean> {
  const reader = await io().open(path);
  reader?.close();
  return reader !== null;
}

async function sha256Hex(parts: (string | Float32Array)[]): Promise<string> {
  const chunks = parts.map((p) =>
    typeof p === "string" ? new TextEncoder().encode(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength)
  );
  const all = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export const DEFAULT_STATS_DIR = new URL("../../runs/editing-stats", import.meta.url).pathname;

/** Where key statistics come from and where they are cached. */
export interface CachedStatsOptions {
  /** The corpus: a text file (one text per line), a known corpus name (wikitext-103), or an opened one. */
  corpus: string | Corpus;
  /** The layers whose statistics are wanted. */
  layers: number[];
  /** Keys (tokens) to average over, at most (the corpus may hold fewer). */
  samples: number;
  /** Names the model in the cache path (default: the model folder's name). */
  modelName?: string;
  /** Where computed statistics are cached (and checkpointed); null: nowhere (a web page, which cannot
   *  write files: no cache files, no checkpoint). */
  cacheDir?: string | null;
  /** Write computed statistics into the model folder's key-stats/ (to ship them with the model). */
  ship?: boolean;
  /** As StatsOptions.seqLen. */
  seqLen?: number;
  /** As StatsOptions.batchTokens. */
  batchTokens?: number;
  /** Seconds between checkpoints of the running sums (default 60). */
  checkpointSeconds?: number;
  /** Called with the keys done and wanted as the corpus streams. */
  onProgress?: StatsOptions["onProgress"];
  /** Where lines about each layer's source (cache, shipped, computed) go. */
  log?: (line: string) => void;
}

/**
 * Key statistics for `layers`: shipped with the model when present and matching (corpus hash and
 * fingerprint), else read from the cache when present, otherwise computed in one streaming pass over the
 * corpus (all missing layers together, resuming an interrupted pass) and cached (or, with `ship`,
 * written into the model folder's key-stats/).
 */
export async function keyStats(
  model: Model,
  tok: Tokenizer,
  o: CachedStatsOptions,
): Promise<Map<number, KeyStats>> {
  const log = o.log ?? (() => {});
  const corpus = typeof o.corpus === "string" ? await openCorpus(o.corpus) : o.corpus;
  const modelName = o.modelName ?? basename(model.source);
  const cacheDir = o.cacheDir === null
    ? null
    : join(join(o.cacheDir ?? DEFAULT_STATS_DIR, modelName), `${corpus.name}-${corpus.hash}`);
  // What the statistics depend on besides the sample count: the corpus, the config, and the layer's own
  // c_fc and MLP input-norm weights (ln_2, or ln_1 where attention and MLP share it: GPT-J).
  const fingerprintOf = async (l: number) => {
    const norm = model.params.has(`h.${l}.ln_2.weight`) ? `h.${l}.ln_2.weight` : `h.${l}.ln_1.weight`;
    const weights = await model.gpu.readMany([...model.parts(`h.${l}.mlp.c_fc.weight`), model.p(norm)]);
    return (await sha256Hex([JSON.stringify(configSummary(model.config)), ...weights])).slice(0, 12);
  };
  const shippedDir = shippedStatsDir(model.source);
  const out = new Map<number, KeyStats>();
  const missing: number[] = [];
  const fingerprints = new Map<number, string>();
  const cachePath = (l: number) =>
    join(cacheDir!, `layer${l}-n${o.samples}-${fingerprints.get(l)}.safetensors`);
  for (const l of o.layers) {
    const fp = await fingerprintOf(l);
    fingerprints.set(l, fp);
    const shippedPath = join(shippedDir, `layer${l}-n${o.samples}.safetensors`);
    const shipped = o.ship
      ? null
      : await readStats(shippedPath, l, model.config.nInner, cacheDir, `${corpus.hash}-${fp}`);
    if (shipped === "stale") {
      log(
        `key statistics of layer ${l} shipped in ${shippedPath} are for other weights or another corpus ` +
          `(retrained?): recomputing`,
      );
    } else if (shipped) {
      log(`key statistics of layer ${l}: shipped with the model (${shipped.count} keys) ${shippedPath}`);
      out.set(l, shipped);
      continue;
    }
    const cached = cacheDir === null ? null : await readStats(cachePath(l), l, model.config.nInner, cacheDir);
    if (cached && cached !== "stale") {
      log(`key statistics of layer ${l}: cached (${cached.count} keys) ${cachePath(l)}`);
      out.set(l, cached);
    } else missing.push(l);
  }
  if (missing.length > 0) {
    const seqLen = o.seqLen ?? Math.min(model.config.nPositions, 256);
    // One checkpoint per set of layers computed together, named after their cache files (none without a
    // cache folder).
    const partial = cacheDir === null ? null : join(
      cacheDir,
      `partial-${(await sha256Hex(missing.map(cachePath))).slice(0, 12)}.safetensors`,
    );
    log(`key statistics of layers ${missing.join(",")}: streaming up to ${o.samples} keys of ${corpus.name}`);
    if (cacheDir !== null) await makeFolder(cacheDir);
    const { stats, seconds } = await computeKeyStats(
      model,
      packTexts(tok, corpus.texts(), seqLen, o.samples),
      {
        layers: missing,
        samples: o.samples,
        seqLen,
        batchTokens: o.batchTokens,
        onProgress: o.onProgress,
        checkpoint: partial === null ? undefined : { path: partial, seconds: o.checkpointSeconds ?? 60 },
        log,
      },
    );
    const dir = o.ship ? shippedDir : cacheDir;
    if (dir !== null) await makeFolder(dir);
    for (const [l, s] of stats) {
      out.set(l, new KeyStats(l, s.width, s.count, s.moment, cacheDir));
      if (dir === null) continue;
      const path = o.ship ? join(shippedDir, `layer${l}-n${o.samples}.safetensors`) : cachePath(l);
      await writeSafetensors(path, { moment: { shape: [s.width, s.width], data: s.moment } }, {
        layer: String(l),
        count: String(s.count),
        samples: String(o.samples),
        model: basename(model.source),
        corpus: corpus.name,
        fingerprint: `${corpus.hash}-${fingerprints.get(l)}`,
        seconds: seconds.toFixed(2),
      });
    }
    if (partial !== null) await removeIfExists(partial);
    log(
      `key statistics: ${stats.values().next().value!.count} keys x ${missing.length} layers in ${
        seconds.toFixed(1)
      } s`,
    );
  }
  return out;
}

/** The folder of statistics shipped with a model: key-stats/ in the model's folder. */
export function shippedStatsDir(modelDir: string): string {
  return join(modelDir, "key-stats");
}

/**
 * A KeyStats file, or null if absent, or "stale" when `fingerprint` is given and differs from the file's
 * metadata field. A present but malformed file is an error naming it.
 */
async function readStats(
  path: string,
  layer: number,
  width: number,
  factorDir: string | null,
  fingerprint?: string,
): Promise<KeyStats | "stale" | null> {
  if (!(await exists(path))) return null;
  const file = await openSafetensors(path);
  try {
    if (fingerprint !== undefined && file.metadata.fingerprint !== fingerprint) return "stale";
    const info = file.has("moment") ? file.info("moment") : null;
    if (!info || info.shape.join(",") !== `${width},${width}`) {
      throw new Error(`${path}: expected a tensor "moment" of shape [${width},${width}]`);
    }
    const count = Number(file.metadata.count);
    if (!(Number.isInteger(count) && count > 0)) {
      throw new Error(`${path}: metadata field "count" is not a positive integer`);
    }
    return new KeyStats(layer, width, count, await file.read("moment"), factorDir);
  } finally {
    file.close();
  }
}

/** One array of a .npy file (numpy's format, versions 1-3), as float64 values in C order. */
function parseNpy(
  bytes: Uint8Array,
  where: string,
): { dtype: string; shape: number[]; values: Float64Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = String.fromCharCode(...bytes.subarray(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error(`${where}: not a .npy array`);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 + headerLength : 12 + headerLength;
  const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const dtype = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (dtype === undefined || fortran === undefined || shapeText === undefined) {
    throw new Error(`${where}: unreadable .npy header ${JSON.stringify(header.trim())}`);
  }
  const shape = shapeText.split(",").map((x) => x.trim()).filter((x) => x !== "").map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const readers: Record<string, [number, (at: number) => number]> = {
    "<f4": [4, (at) => view.getFloat32(at, true)],
    "<f8": [8, (at) => view.getFloat64(at, true)],
    "<i4": [4, (at) => view.getInt32(at, true)],
    "<i8": [8, (at) => Number(view.getBigInt64(at, true))],
  };
  const reader = readers[dtype];
  if (!reader) return { dtype, shape, values: new Float64Array(0) }; // the caller names what it needs
  const [size, read] = reader;
  if (bytes.length - start < n * size) {
    throw new Error(
      `${where}: ${bytes.length - start} data bytes, expected ${n * size} for shape [${shape}]`,
    );
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = read(start + i * size);
  if (fortran === "True" && shape.length === 2) {
    // Column-major storage: transpose into C order.
    const [r, c] = shape, t = new Float64Array(n);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t[i * c + j] = values[j * r + i];
    return { dtype, shape, values: t };
  }
  return { dtype, shape, values };
}

/** The layer a ROME/MEMIT statistics file is about, from its name (transformer.h.17.mlp.c_proj_...). */
export function statsFileLayer(path: string): number | null {
  const m = /(?:^|[._])(?:h|layers)\.(\d+)\.mlp\./.exec(basename(path));
  return m ? Number(m[1]) : null;
}

/**
 * Key statistics from a file ROME or MEMIT released (or their layer_stats.py wrote): an .npz holding
 * util/runningstats.py's CombinedStat(mom2=SecondMoment()), i.e. arrays "mom2.mom2" [f,f] (float32 or
 * float64) and "mom2.count". SecondMoment.add accumulates mom2 += a^T a, and its moment() is
 * mom2 / count: the saved mom2 is the SUM over `count` keys, so KeyStats (which holds the mean
 * E[k k^T]) gets mom2 / count. The layer comes from the file name, or `layer` when the name has
 * none; both are checked, and the shape against the model's key width f.
 */
export async function importRomeStats(
  path: string,
  width: number,
  layer?: number,
  factorDir: string | null = null,
): Promise<KeyStats> {
  const named = statsFileLayer(path);
  if (named !== null && layer !== undefined && named !== layer) {
    throw new Error(`${path}: the file name says layer ${named}, but layer ${layer} was asked for`);
  }
  const l = layer ?? named;
  if (l === null) {
    throw new Error(
      `${path}: no layer in the file name (like transformer.h.17.mlp.c_proj_...); give it as L=FILE`,
    );
  }
  let bytes: Uint8Array;
  try {
    const file = await io().open(path);
    if (!file) throw new Error("no such file");
    try {
      bytes = await file.read(0, file.size);
    } finally {
      file.close();
    }
  } catch (e) {
    throw new Error(`${path}: cannot read the statistics file (${(e as Error).message})`);
  }
  const names: string[] = [];
  let arrays: Record<string, Uint8Array>;
  try {
    arrays = unzipSync(bytes, {
      filter: (entry) => {
        names.push(entry.name.replace(/\.npy$/, ""));
        return entry.name === "mom2.mom2.npy" || entry.name === "mom2.count.npy";
      },
    });
  } catch (e) {
    throw new Error(`${path}: not an .npz (zip) file (${(e as Error).message})`);
  }
  for (const name of ["mom2.mom2", "mom2.count"]) {
    if (!arrays[`${name}.npy`]) {
      throw new Error(
        `${path}: no array "${name}" (arrays: ${names.join(", ") || "none"}); expected ROME/MEMIT key ` +
          `statistics (a SecondMoment named mom2)`,
      );
    }
  }
  const mom2 = parseNpy(arrays["mom2.mom2.npy"], `${path}: array "mom2.mom2"`);
  if (mom2.dtype !== "<f4" && mom2.dtype !== "<f8") {
    throw new Error(
      `${path}: array "mom2.mom2" has dtype ${mom2.dtype}; expected float32 or float64 (<f4, <f8)`,
    );
  }
  if (mom2.shape.join(",") !== `${width},${width}`) {
    throw new Error(
      `${path}: array "mom2.mom2" has shape [${mom2.shape}]; expected [${width},${width}] for this model's ` +
        `key width (the input of layer ${l}'s MLP output projection)`,
    );
  }
  const countArray = parseNpy(arrays["mom2.count.npy"], `${path}: array "mom2.count"`);
  const count = countArray.values.length === 1 ? countArray.values[0] : NaN;
  if (!(Number.isInteger(count) && count > 0)) {
    throw new Error(`${path}: array "mom2.count" must hold one positive integer (dtype ${countArray.dtype})`);
  }
  const moment = new Float32Array(width * width);
  for (let i = 0; i < moment.length; i++) {
    const v = mom2.values[i] / count;
    if (!Number.isFinite(v)) {
      throw new Error(`${path}: array "mom2.mom2" has a non-finite value at index ${i}`);
    }
    moment[i] = v;
  }
  return new KeyStats(l, width, count, moment, factorDir);
}

/**
 * `--stats` arguments ("FILE" or "L=FILE", ROME/MEMIT .npz files) as the KeyStats of `layers`; every
 * layer needs one, and no file may be for another layer. Their Cholesky factors are kept in `factorDir`.
 */
export async function importStatsFiles(
  args: string[],
  width: number,
  layers: number[],
  factorDir: string | null = null,
): Promise<Map<number, KeyStats>> {
  const out = new Map<number, KeyStats>();
  for (const arg of args) {
    const m = /^(\d+)=(.+)$/.exec(arg);
    const s = await importRomeStats(m ? m[2] : arg, width, m ? Number(m[1]) : undefined, factorDir);
    if (!layers.includes(s.layer)) {
      throw new Error(
        `--stats ${arg}: statistics of layer ${s.layer}, but the edit uses layers ${layers.join(",")}`,
      );
    }
    out.set(s.layer, s);
  }
  const missing = layers.filter((l) => !out.has(l));
  if (missing.length > 0) throw new Error(`--stats: no file for layer(s) ${missing.join(",")}`);
  return out;
}
