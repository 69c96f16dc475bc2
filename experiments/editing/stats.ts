// Key statistics: the uncentered second moment C = E[k k^T] [f,f] of an MLP layer's keys (the
// inputs of mlp.c_proj, f = 4d) over a text corpus. ROME's update direction is C^-1 k*, MEMIT and
// EMMET spread edits in the C^-1 metric, so keys the corpus uses often are disturbed least.
//
// Streaming on the GPU: batches of corpus sequences run forward with a capture hook at "key" of
// every requested layer (real tokens only, no padding), and C_l += K_l^T K_l is one matmul
// (transA, beta = 1) into an [f,f] accumulator; nothing is read back until the end.
// ROME counts samples in texts (100,000 Wikipedia articles); here `samples` counts keys, i.e.
// tokens, the quantity the estimate's quality depends on.
//
// Corpora: the embedded model's training text (corpus.txt in its folder, one sentence per line);
// for GPT-2, a text file the user gives. Lines are tokenized one by one and packed back to back
// into sequences of at most `seqLen` tokens (longer lines are cut into pieces).
//
// Cache: one safetensors file per (model, layer, corpus, samples) under runs/editing-stats/:
//   <model name>/<corpus name>-<corpus sha256>/layer<l>-n<samples>-<fingerprint>.safetensors
// where the fingerprint hashes the config and the layer's own c_fc and MLP input-norm weights (a retrained
// model gets new files). Stats always describe the model as loaded, before any edit.
// Shipped statistics: a model folder may carry key-stats/layer<l>-n<samples>.safetensors (the embedded
// model does, so a first edit, in Deno or in the web page, computes nothing), with the corpus hash and the
// fingerprint in its metadata: used only when both match, so a retrained model recomputes (and says so)
// rather than use stale ones. (No fingerprint in the name: a web page cannot list a folder.)
import { configSummary } from "../../engine/config.ts";
import { baseName as basename, io, joinPath as join } from "../../engine/io.ts";
import type { GPT2, Hook } from "../../engine/model.ts";
import { makeBatch } from "../../engine/model.ts";
import { matmul } from "../../engine/ops.ts";
import { openSafetensors, writeSafetensors } from "../../engine/safetensors.ts";
import { makeFolder } from "../../engine/files.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { cholesky, choleskySolve } from "./linalg.ts";

/** C = E[k k^T] of one layer's keys, with a lazily computed float64 Cholesky factor for solves. */
export class KeyStats {
  private factor: Float64Array | null = null;

  constructor(
    readonly layer: number,
    /** Key width f. */
    readonly width: number,
    /** Keys averaged. */
    readonly count: number,
    /** C [f,f], row-major. */
    readonly moment: Float32Array,
  ) {
    if (moment.length !== width * width) {
      throw new Error(`KeyStats: moment has ${moment.length} values, expected ${width}^2`);
    }
  }

  /** C^-1 b (float64; the factorisation is done on the first call and kept). */
  solve(b: ArrayLike<number>): Float64Array {
    if (!this.factor) {
      this.factor = cholesky(this.moment, this.width, `key second moment of layer ${this.layer}`);
    }
    return choleskySolve(this.factor, this.width, b);
  }
}

export interface StatsOptions {
  layers: number[];
  /** Keys (tokens) to average; fewer if the corpus is shorter. */
  samples: number;
  /** Tokens per packed sequence (default min(nPositions, 256)). */
  seqLen?: number;
  /** Called after every batch with keys done so far, the target and seconds elapsed. */
  onProgress?: (done: number, total: number, seconds: number) => void;
}

/** Tokenizes lines and packs them back to back into sequences of at most seqLen tokens. */
export function packCorpus(
  tok: Tokenizer,
  lines: string[],
  seqLen: number,
  maxTokens = Infinity,
): number[][] {
  const out: number[][] = [];
  let cur: number[] = [];
  let total = 0;
  for (const line of lines) {
    if (total >= maxTokens) break;
    if (line.trim() === "") continue;
    let ids = tok.encode(line);
    while (ids.length > 0) {
      if (cur.length === seqLen) {
        out.push(cur);
        cur = [];
      }
      const take = ids.slice(0, seqLen - cur.length);
      cur.push(...take);
      total += take.length;
      ids = ids.slice(take.length);
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * Streams `sequences` through the model, accumulating K^T K at every layer of `layers` on the GPU
 * until `samples` keys are seen; returns C = K^T K / count per layer and the seconds it took.
 */
export async function computeKeyStats(
  model: GPT2,
  sequences: number[][],
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
  const available = sequences.reduce((s, x) => s + x.length, 0);
  const total = Math.min(o.samples, available);
  if (total === 0) throw new Error("key statistics: the corpus has no tokens");
  const accumulators = new Map(o.layers.map((l) => [l, gpu.zeros([f, f])]));
  const seqLen = Math.max(...sequences.map((s) => s.length));
  const perBatch = Math.max(1, Math.floor(4096 / seqLen));
  const started = performance.now();
  let done = 0;
  for (let start = 0; start < sequences.length && done < total; start += perBatch) {
    const chunk = sequences.slice(start, start + perBatch);
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
    if (o.onProgress) {
      await gpu.sync();
      o.onProgress(done, total, (performance.now() - started) / 1000);
    }
  }
  const layers = [...accumulators.keys()];
  const sums = await gpu.readMany(layers.map((l) => accumulators.get(l)!));
  for (const t of accumulators.values()) t.destroy();
  const stats = new Map<number, KeyStats>();
  layers.forEach((l, i) => stats.set(l, new KeyStats(l, f, done, sums[i].map((v) => v / done))));
  return { stats, seconds: (performance.now() - started) / 1000 };
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

export interface CachedStatsOptions {
  /** The corpus text file (one text per line). */
  corpus: string;
  layers: number[];
  samples: number;
  /** Names the model in the cache path (default: the model folder's name). */
  modelName?: string;
  /** Where computed statistics are cached; null: nowhere (a web page, which cannot write files). */
  cacheDir?: string | null;
  /** Write computed statistics into the model folder's key-stats/ (to ship them with the model). */
  ship?: boolean;
  seqLen?: number;
  onProgress?: StatsOptions["onProgress"];
  log?: (line: string) => void;
}

/**
 * Key statistics for `layers`, read from the cache when present, otherwise computed in one streaming
 * pass over the corpus (all missing layers together) and cached.
 */
export async function keyStats(
  model: GPT2,
  tok: Tokenizer,
  o: CachedStatsOptions,
): Promise<Map<number, KeyStats>> {
  const log = o.log ?? (() => {});
  let text: string | null;
  try {
    text = await io().readText(o.corpus);
  } catch (e) {
    throw new Error(`key statistics: cannot read the corpus ${o.corpus}: ${(e as Error).message}`);
  }
  if (text === null) throw new Error(`key statistics: cannot read the corpus ${o.corpus}: no such file`);
  const corpusHash = (await sha256Hex([text])).slice(0, 12);
  const modelName = o.modelName ?? basename(model.source);
  const cacheDir = o.cacheDir === null
    ? null
    : join(join(o.cacheDir ?? DEFAULT_STATS_DIR, modelName), `${basename(o.corpus)}-${corpusHash}`);
  // What the statistics depend on besides the sample count: the corpus, the config, and the layer's own
  // c_fc and MLP input-norm weights (ln_2, or ln_1 where attention and MLP share it: GPT-J).
  const fingerprintOf = async (l: number) => {
    const norm = model.params.has(`h.${l}.ln_2.weight`) ? `h.${l}.ln_2.weight` : `h.${l}.ln_1.weight`;
    const [cfc, ln] = await model.gpu.readMany([model.p(`h.${l}.mlp.c_fc.weight`), model.p(norm)]);
    return (await sha256Hex([JSON.stringify(configSummary(model.config)), cfc, ln])).slice(0, 12);
  };
  const out = new Map<number, KeyStats>();
  const missing: number[] = [];
  const fingerprints = new Map<number, string>();
  for (const l of o.layers) {
    const fp = await fingerprintOf(l);
    fingerprints.set(l, fp);
    const shippedPath = join(shippedStatsDir(model.source), `layer${l}-n${o.samples}.safetensors`);
    const shipped = o.ship
      ? null
      : await readStats(shippedPath, l, model.config.nInner, `${corpusHash}-${fp}`);
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
    const cached = cacheDir === null
      ? null
      : await readStats(join(cacheDir, `layer${l}-n${o.samples}-${fp}.safetensors`), l, model.config.nInner);
    if (cached && cached !== "stale") {
      log(`key statistics of layer ${l}: cached (${cached.count} keys) ${cacheDir}`);
      out.set(l, cached);
    } else missing.push(l);
  }
  if (missing.length > 0) {
    const seqLen = o.seqLen ?? Math.min(model.config.nPositions, 256);
    const sequences = packCorpus(tok, text.split("\n"), seqLen, o.samples);
    log(`key statistics of layers ${missing.join(",")}: streaming up to ${o.samples} keys of ${o.corpus}`);
    const { stats, seconds } = await computeKeyStats(model, sequences, {
      layers: missing,
      samples: o.samples,
      onProgress: o.onProgress,
    });
    const dir = o.ship ? shippedStatsDir(model.source) : cacheDir;
    if (dir !== null) await makeFolder(dir);
    for (const [l, s] of stats) {
      out.set(l, s);
      if (dir === null) continue;
      const fp = fingerprints.get(l)!;
      const path = join(
        dir,
        o.ship ? `layer${l}-n${o.samples}.safetensors` : `layer${l}-n${o.samples}-${fp}.safetensors`,
      );
      await writeSafetensors(path, { moment: { shape: [s.width, s.width], data: s.moment } }, {
        layer: String(l),
        count: String(s.count),
        samples: String(o.samples),
        model: basename(model.source),
        corpus: basename(o.corpus),
        fingerprint: `${corpusHash}-${fp}`,
        seconds: seconds.toFixed(2),
      });
    }
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
  fingerprint?: string,
): Promise<KeyStats | "stale" | null> {
  const reader = await io().open(path);
  if (!reader) return null;
  reader.close();
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
    return new KeyStats(layer, width, count, await file.read("moment"));
  } finally {
    file.close();
  }
}
