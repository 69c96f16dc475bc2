// GPT-2 on WebGPU: weights, a batched forward pass with intervention hooks, save and load.
//
// Block l (HF GPT-2, pre-LN):     a = attn(ln_1(x));  m = x + a;  h = m + mlp(ln_2(m))
// with mlp(z) = c_proj(gelu_new(c_fc(z))).  Logits = ln_f(h_{L-1}) wte^T (tied unembedding).
// Conv1D weights are stored [in, out] (y = x W + b), exactly as in HF checkpoints.
//
// Batches: B prompts right-padded to T tokens; activation row r = b*T + t. Causal attention means
// padding at the end never influences real tokens, so no extra mask is needed.
//
// Hooks (interventions) name a site of a layer: the residual stream after the block ("resid"),
// the attention output after c_proj ("attn"), the MLP's c_fc output before GELU ("mlp_pre"), the
// MLP key = c_proj input ("key"), the MLP output ("mlp"), and the embeddings wte+wpe ("embed",
// layer ignored). A hook can capture rows of that state into a tensor and/or patch rows of it
// (copy from another tensor or from other rows of the same batch, add noise or a delta, zero,
// scale). All hooks are recorded into the same submit as the forward pass itself, so a whole
// causal-tracing grid is one batch with one readback.
import { configJson, type GPT2Config, parseConfig } from "./config.ts";
import { Gpu, Tensor } from "./gpu.ts";
import { add, attention, embed, gelu, layernorm, matmul, type RowEntry, rowOps } from "./ops.ts";
import { mulberry32 } from "./random.ts";
import { openCheckpoint, writeSafetensors } from "./safetensors.ts";

export type Site = "embed" | "attn" | "mlp_pre" | "key" | "mlp" | "resid";

export interface Hook {
  /** Block index; ignored for "embed". */
  layer: number;
  site: Site;
  /** Copies state rows out before any patch: into[intoRows[i]] = state[rows[i]] (intoRows default 0..n-1). */
  capture?: { into: Tensor; rows: number[]; intoRows?: number[] };
  /** state[e.dst] = e.keep * state[e.dst] + e.take * src[e.src]; src null = rows of the state itself. */
  patch?: { src: Tensor | null; entries: RowEntry[] };
}

/** Token ids of B prompts right-padded to T; lengths[b] real tokens in row b. */
export interface Batch {
  ids: Uint32Array; // [B*T]
  B: number;
  T: number;
  lengths: number[];
}

export function makeBatch(sequences: number[][], pad = 0): Batch {
  if (sequences.length === 0) throw new Error("makeBatch: no sequences");
  const B = sequences.length;
  const T = Math.max(...sequences.map((s) => s.length));
  if (T === 0) throw new Error("makeBatch: empty sequence");
  const ids = new Uint32Array(B * T).fill(pad);
  sequences.forEach((s, b) => {
    if (s.length === 0) throw new Error(`makeBatch: sequence ${b} is empty`);
    ids.set(s, b * T);
  });
  return { ids, B, T, lengths: sequences.map((s) => s.length) };
}

/** Activations of one block kept for the backward pass (all [R, width] unless noted). */
export interface LayerActivations {
  x: Tensor; // block input [R,d]
  ln1: Tensor;
  ln1Stats: Tensor; // [R,2] mean, rstd
  qkv: Tensor; // [R,3d]
  probs: Tensor; // [B,H,T,T]
  heads: Tensor; // attention heads concatenated, c_proj input [R,d]
  attn: Tensor; // attention output [R,d]
  m: Tensor; // x + attn
  ln2: Tensor;
  ln2Stats: Tensor;
  pre: Tensor; // c_fc output [R,4d]
  key: Tensor; // gelu(pre) [R,4d]
  mlp: Tensor; // MLP output [R,d]
}

export interface ForwardResult {
  /** Logits [outputRows.length, V] for the requested rows. */
  logits: Tensor;
  outputRows: number[];
  batch: Batch;
  /** Present when the forward was run with keep: true. */
  acts?: {
    embed: Tensor;
    layers: LayerActivations[];
    final: Tensor; // residual after the last block [R,d]
    selected: Tensor; // final residual at outputRows [n,d]
    lnf: Tensor; // ln_f(selected)
    lnfStats: Tensor;
  };
  hooks: Hook[];
  startLayer: number;
  /** The caller's `input` tensor, if the pass was given one (never released by releaseForward). */
  input?: Tensor;
}

export interface ForwardOptions {
  hooks?: Hook[];
  /** Rows (b*T + t) whose logits are computed; default the last real token of each prompt. */
  outputRows?: number[];
  /** Keep every activation for a backward pass. */
  keep?: boolean;
  /** Start at this block with `input` [B*T, d] as the residual entering it (reuses a shared prefix). */
  startLayer?: number;
  input?: Tensor;
}

/** A row chunk of the token embedding: rows [rowStart, rowStart + rows) of wte. */
export interface EmbeddingChunk {
  tensor: Tensor;
  rowStart: number;
  rows: number;
}

/** Parameter names (HF GPT-2 names without the "transformer." prefix) and shapes. */
export function parameterShapes(cfg: GPT2Config): [string, number[]][] {
  const d = cfg.nEmbd, f = 4 * d;
  const out: [string, number[]][] = [["wte.weight", [cfg.vocabSize, d]], ["wpe.weight", [cfg.nPositions, d]]];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `h.${l}.`;
    out.push(
      [p + "ln_1.weight", [d]],
      [p + "ln_1.bias", [d]],
      [p + "attn.c_attn.weight", [d, 3 * d]],
      [p + "attn.c_attn.bias", [3 * d]],
      [p + "attn.c_proj.weight", [d, d]],
      [p + "attn.c_proj.bias", [d]],
      [p + "ln_2.weight", [d]],
      [p + "ln_2.bias", [d]],
      [p + "mlp.c_fc.weight", [d, f]],
      [p + "mlp.c_fc.bias", [f]],
      [p + "mlp.c_proj.weight", [f, d]],
      [p + "mlp.c_proj.bias", [d]],
    );
  }
  out.push(["ln_f.weight", [d]], ["ln_f.bias", [d]]);
  return out;
}

export class ModelLoadError extends Error {}

export class GPT2 {
  /** Every parameter except wte (which may be split into chunks), by HF name. */
  readonly params = new Map<string, Tensor>();
  readonly wte: EmbeddingChunk[] = [];

  private constructor(readonly gpu: Gpu, readonly config: GPT2Config, readonly source: string) {}

  /** Builds the model from CPU arrays (every name of parameterShapes must be present). */
  static fromArrays(
    gpu: Gpu,
    config: GPT2Config,
    weights: Map<string, Float32Array>,
    source = "arrays",
    embeddingChunkRows?: number,
  ): GPT2 {
    const model = new GPT2(gpu, config, source);
    for (const [name, shape] of parameterShapes(config)) {
      const data = weights.get(name);
      const n = shape.reduce((a, b) => a * b, 1);
      if (!data) throw new ModelLoadError(`${source}: missing tensor ${name}`);
      if (data.length !== n) {
        throw new ModelLoadError(`${source}: tensor ${name} has ${data.length} values, expected [${shape}]`);
      }
      if (name === "wte.weight") model.setEmbedding(data, embeddingChunkRows);
      else model.params.set(name, gpu.tensor(shape, data));
    }
    return model;
  }

  /** Splits wte into row chunks that each fit one storage binding (GPT-2 XL's is 321 MB). */
  private setEmbedding(data: Float32Array, chunkRows?: number): void {
    const { vocabSize: V, nEmbd: d } = this.config;
    const maxRows = Math.min(
      chunkRows ?? Infinity,
      Math.floor(this.gpu.limits.maxStorageBufferBindingSize / (4 * d)),
    );
    for (let start = 0; start < V; start += maxRows) {
      const rows = Math.min(maxRows, V - start);
      this.wte.push({
        tensor: this.gpu.tensor([rows, d], data.subarray(start * d, (start + rows) * d)),
        rowStart: start,
        rows,
      });
    }
  }

  /**
   * Loads a Hugging Face GPT-2 folder: config.json plus model.safetensors (or a sharded index).
   * Accepts both "h.N..." and "transformer.h.N..." names; lm_head is tied to wte.
   */
  static async load(gpu: Gpu, dir: string): Promise<GPT2> {
    let configText: string;
    try {
      configText = await Deno.readTextFile(`${dir}/config.json`);
    } catch {
      throw new ModelLoadError(`${dir}: no config.json (expected a Hugging Face GPT-2 folder)`);
    }
    const config = parseConfig(configText, `${dir}/config.json`);
    const ckpt = await openCheckpoint(dir);
    try {
      const names = new Set(ckpt.names());
      const weights = new Map<string, Float32Array>();
      // Validate every name and shape before reading any data: no partial loads.
      const plan: [string, string][] = [];
      for (const [name, shape] of parameterShapes(config)) {
        const stored = names.has(name)
          ? name
          : names.has("transformer." + name)
          ? "transformer." + name
          : null;
        if (!stored) {
          throw new ModelLoadError(`${dir}: checkpoint has no tensor ${name} (nor transformer.${name})`);
        }
        const info = ckpt.info(stored);
        if (info.shape.length !== shape.length || info.shape.some((s, i) => s !== shape[i])) {
          throw new ModelLoadError(
            `${dir}: tensor ${stored} has shape [${info.shape}] but config.json implies [${shape}]`,
          );
        }
        plan.push([name, stored]);
      }
      for (const [name, stored] of plan) weights.set(name, await ckpt.read(stored));
      return GPT2.fromArrays(gpu, config, weights, dir);
    } finally {
      ckpt.close();
    }
  }

  /**
   * Random weights in GPT-2's initialisation (N(0, 0.02), residual projections scaled by
   * 1/sqrt(2L)). `perturb` also randomises biases and layernorm gains so tests exercise them.
   */
  static random(gpu: Gpu, config: GPT2Config, seed = 0, perturb = false): GPT2 {
    return GPT2.fromArrays(gpu, config, randomWeights(config, seed, perturb), `random(seed=${seed})`);
  }

  get nLayer(): number {
    return this.config.nLayer;
  }

  p(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`no parameter ${name}`);
    return t;
  }

  /** Reads every parameter back to the CPU (one submit). */
  async toArrays(): Promise<Map<string, Float32Array>> {
    const names = [...this.params.keys()];
    const parts = await this.gpu.readMany([
      ...names.map((n) => this.params.get(n)!),
      ...this.wte.map((c) => c.tensor),
    ]);
    const out = new Map<string, Float32Array>();
    names.forEach((n, i) => out.set(n, parts[i]));
    const wte = new Float32Array(this.config.vocabSize * this.config.nEmbd);
    this.wte.forEach((c, i) => wte.set(parts[names.length + i], c.rowStart * this.config.nEmbd));
    out.set("wte.weight", wte);
    return out;
  }

  /** Writes config.json + model.safetensors (HF names) into `dir`. */
  async save(dir: string, metadata: Record<string, string> = {}): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    const arrays = await this.toArrays();
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [name, shape] of parameterShapes(this.config)) {
      tensors[name] = { shape, data: arrays.get(name)! };
    }
    await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt", ...metadata });
    await Deno.writeTextFile(`${dir}/config.json`, configJson(this.config));
  }

  /** Width of a hook site's state. */
  siteWidth(site: Site): number {
    return site === "mlp_pre" || site === "key" ? 4 * this.config.nEmbd : this.config.nEmbd;
  }

  /**
   * The forward pass, recorded on the GPU (nothing is read back). Returns logits for the
   * requested rows; callers turn them into probabilities with ops.softmax / logProbOf / topK.
   */
  forward(batch: Batch, o: ForwardOptions = {}): ForwardResult {
    const gpu = this.gpu, cfg = this.config;
    const { B, T } = batch;
    const R = B * T, d = cfg.nEmbd, f = 4 * d, H = cfg.nHead, eps = cfg.layerNormEpsilon;
    if (T > cfg.nPositions) {
      throw new Error(`sequence of ${T} tokens exceeds the model's ${cfg.nPositions} positions`);
    }
    for (const id of batch.ids) {
      if (id >= cfg.vocabSize) {
        throw new Error(`token id ${id} is outside the vocabulary (size ${cfg.vocabSize})`);
      }
    }
    const hooks = o.hooks ?? [];
    const keep = o.keep ?? false;
    const start = o.startLayer ?? 0;
    const outputRows = o.outputRows ?? batch.lengths.map((n, b) => b * T + n - 1);
    for (const h of hooks) {
      if (h.site !== "embed" && (h.layer < 0 || h.layer >= cfg.nLayer)) {
        throw new Error(`hook layer ${h.layer} out of range`);
      }
    }
    const applyHooks = (layer: number, site: Site, state: Tensor) => {
      for (const h of hooks) {
        if (h.site !== site || (site !== "embed" && h.layer !== layer)) continue;
        const width = this.siteWidth(site);
        if (h.capture) {
          const into = h.capture.intoRows ?? h.capture.rows.map((_, i) => i);
          rowOps(
            gpu,
            h.capture.into,
            state,
            width,
            h.capture.rows.map((r, i) => ({ dst: into[i], src: r, keep: 0, take: 1 })),
          );
        }
        if (h.patch) rowOps(gpu, state, h.patch.src, width, h.patch.entries);
      }
    };

    let x: Tensor;
    let embedOut: Tensor | undefined;
    if (start > 0 || o.input) {
      if (!o.input) throw new Error("forward: startLayer > 0 needs the residual `input` entering that layer");
      x = o.input;
    } else {
      const tokens = gpu.upload([R], batch.ids, "u32");
      x = gpu.empty([R, d]);
      for (const c of this.wte) {
        embed(gpu, tokens, c.tensor, this.p("wpe.weight"), R, T, d, { out: x, rowStart: c.rowStart });
      }
      applyHooks(-1, "embed", x);
      embedOut = x;
    }

    const layers: LayerActivations[] = [];
    for (let l = start; l < cfg.nLayer; l++) {
      const w = (n: string) => this.p(`h.${l}.${n}`);
      // Without kept activations (no backward pass follows), an op whose input no hook needs on its
      // own rides in the epilogue of the matmul before it: GELU in c_fc's, and each residual add in
      // its projection's (beta = 1 into the stream, so the stream must be ours to overwrite). Three
      // dispatches fewer per layer, with the same sums.
      const fuse = (site: Site) => !keep && !hooks.some((h) => h.site === site && h.layer === l);
      const ln1Stats = gpu.empty([R, 2]);
      const ln1 = layernorm(gpu, x, w("ln_1.weight"), w("ln_1.bias"), R, d, eps, {
        out: gpu.empty([R, d]),
        stats: ln1Stats,
      });
      const qkv = matmul(gpu, ln1, w("attn.c_attn.weight"), R, 3 * d, d, {
        bias: w("attn.c_attn.bias"),
        weight: true,
        out: gpu.empty([R, 3 * d]),
      });
      const probs = keep ? gpu.empty([B, H, T, T]) : undefined;
      const heads = attention(gpu, qkv, B, T, d, H, { out: gpu.empty([R, d]), probs });
      const attnProj = { bias: w("attn.c_proj.bias"), weight: true };
      let attn: Tensor | undefined, m: Tensor;
      if (fuse("attn") && x !== o.input) {
        m = matmul(gpu, heads, w("attn.c_proj.weight"), R, d, d, { ...attnProj, out: x, beta: 1 });
      } else {
        attn = matmul(gpu, heads, w("attn.c_proj.weight"), R, d, d, { ...attnProj, out: gpu.empty([R, d]) });
        applyHooks(l, "attn", attn);
        m = add(gpu, x, attn, R * d, { out: gpu.empty([R, d]) });
      }
      const ln2Stats = gpu.empty([R, 2]);
      const ln2 = layernorm(gpu, m, w("ln_2.weight"), w("ln_2.bias"), R, d, eps, {
        out: gpu.empty([R, d]),
        stats: ln2Stats,
      });
      const fc = { bias: w("mlp.c_fc.bias"), weight: true, out: gpu.empty([R, f]) };
      let pre: Tensor | undefined, key: Tensor;
      if (fuse("mlp_pre")) {
        key = matmul(gpu, ln2, w("mlp.c_fc.weight"), R, f, d, { ...fc, gelu: true });
      } else {
        pre = matmul(gpu, ln2, w("mlp.c_fc.weight"), R, f, d, fc);
        applyHooks(l, "mlp_pre", pre);
        key = gelu(gpu, pre, R * f, { out: gpu.empty([R, f]) });
      }
      applyHooks(l, "key", key);
      const mlpProj = { bias: w("mlp.c_proj.bias"), weight: true };
      let mlp: Tensor | undefined, out: Tensor;
      if (fuse("mlp")) {
        out = matmul(gpu, key, w("mlp.c_proj.weight"), R, d, f, { ...mlpProj, out: m, beta: 1 });
      } else {
        mlp = matmul(gpu, key, w("mlp.c_proj.weight"), R, d, f, { ...mlpProj, out: gpu.empty([R, d]) });
        applyHooks(l, "mlp", mlp);
        out = add(gpu, m, mlp, R * d, { out: gpu.empty([R, d]) });
      }
      applyHooks(l, "resid", out);
      if (keep) {
        layers.push({
          x,
          ln1,
          ln1Stats,
          qkv,
          probs: probs!,
          heads,
          attn: attn!,
          m,
          ln2,
          ln2Stats,
          pre: pre!,
          key,
          mlp: mlp!,
        });
      } else {
        gpu.release(ln1, ln1Stats, qkv, heads, ln2, ln2Stats, key);
        for (const t of [attn, pre, mlp]) if (t) gpu.release(t);
        // The stream tensors this layer made and no longer needs (x and m may be `out` itself).
        for (const t of new Set([x, m])) if (t !== out && t !== o.input) gpu.release(t);
      }
      x = out;
    }

    // Final layernorm and unembedding only at the rows that are scored.
    const n = outputRows.length;
    const selected = gpu.empty([n, d]);
    rowOps(gpu, selected, x, d, outputRows.map((r, i) => ({ dst: i, src: r, keep: 0, take: 1 })));
    const lnfStats = gpu.empty([n, 2]);
    const lnf = layernorm(gpu, selected, this.p("ln_f.weight"), this.p("ln_f.bias"), n, d, eps, {
      out: gpu.empty([n, d]),
      stats: lnfStats,
    });
    const logits = gpu.empty([n, cfg.vocabSize]);
    for (const c of this.wte) {
      matmul(gpu, lnf, c.tensor, n, c.rows, d, {
        transB: true,
        weight: true,
        out: logits,
        ldc: cfg.vocabSize,
        outOffset: c.rowStart,
      });
    }
    const result: ForwardResult = { logits, outputRows, batch, hooks, startLayer: start, input: o.input };
    if (keep) {
      result.acts = { embed: embedOut ?? o.input!, layers, final: x, selected, lnf, lnfStats };
    } else {
      if (x !== o.input) gpu.release(x);
      gpu.release(selected, lnf, lnfStats);
    }
    return result;
  }

  /** Returns a forward's kept activations (and its logits) to the buffer pool. */
  releaseForward(r: ForwardResult): void {
    const gpu = this.gpu;
    gpu.release(r.logits);
    if (!r.acts) return;
    for (const a of r.acts.layers) {
      gpu.release(
        a.ln1,
        a.ln1Stats,
        a.qkv,
        a.probs,
        a.heads,
        a.attn,
        a.m,
        a.ln2,
        a.ln2Stats,
        a.pre,
        a.key,
        a.mlp,
      );
      if (a.x !== r.input) gpu.release(a.x); // the caller owns its `input`
    }
    gpu.release(r.acts.final, r.acts.selected, r.acts.lnf, r.acts.lnfStats);
    r.acts = undefined;
  }
}

/** GPT-2-style random weights as CPU arrays (deterministic for the seed). */
export function randomWeights(cfg: GPT2Config, seed: number, perturb: boolean): Map<string, Float32Array> {
  const draw = mulberry32((seed * 2654435761 + 12345) >>> 0);
  const uniform = () => draw() + 2 ** -33; // in (0, 1): the log below stays finite
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of parameterShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const isLnGain = /ln_\d\.weight|ln_f\.weight/.test(name);
    const isBias = name.endsWith(".bias");
    const std = name.endsWith("c_proj.weight") ? 0.02 / Math.sqrt(2 * cfg.nLayer) : 0.02;
    for (let i = 0; i < n; i++) {
      if (isLnGain) a[i] = 1 + (perturb ? 0.1 * normal() : 0);
      else if (isBias) a[i] = perturb ? 0.02 * normal() : 0;
      else a[i] = std * normal();
    }
    out.set(name, a);
  }
  return out;
}
