// Transformer language models on WebGPU: weights, a batched forward pass with intervention hooks,
// save and load. One forward serves every family (engine/config.ts describes the block choices,
// engine/families.ts the tensor names); GPT-2's block, for example, is
//
//   a = attn(ln_1(x));  m = x + a;  h = m + mlp(ln_2(m)),   mlp(z) = c_proj(gelu_new(c_fc(z)))
//
// and Llama's the same with RMSNorm, rotary q/k, grouped key/value heads and
// mlp(z) = down(silu(gate(z)) * up(z)); GPT-J and NeoX run attention and MLP in parallel,
// h = x + attn(ln_1(x)) + mlp(ln_{1 or 2}(x)). Logits = ln_f(h_{L-1}) W_head^T (tied to wte or not).
// GPT-2's Conv1D weights are stored [in, out] (y = x W + b), every other family's [out, in]
// (y = x W^T + b), exactly as in their checkpoints.
//
// Batches: B prompts right-padded to T tokens; activation row r = b*T + t, position t. Causal attention
// means padding at the end never influences real tokens, so no extra mask is needed.
//
// Hooks (interventions) name a site of a layer, the same for every family: the residual stream after
// the block ("resid"), the attention output after its projection ("attn"), the MLP's input projection
// before the activation ("mlp_pre", gate|up when gated), the MLP key = input of its output projection
// ("key"), the MLP output ("mlp"), and the embeddings ("embed", layer ignored). Gemma 2/3's post-norms
// apply after the "attn" and "mlp" sites. A hook can capture rows of that state into a tensor and/or
// patch rows of it (copy from another tensor or from other rows of the same batch, add noise or a
// delta, zero, scale). All hooks are recorded into the same submit as the forward pass itself, so a
// whole causal-tracing grid is one batch with one readback.
import {
  configJson,
  type GPT2Config,
  type ModelConfig,
  parseConfig,
  qkvWidth,
  resolveConfig,
} from "./config.ts";
import {
  checkpointPrefixes,
  checkpointSource,
  neoxToBlocks,
  parameterShapes as shapesOf,
} from "./families.ts";
import { Gpu, Tensor, tensorBytes } from "./gpu.ts";
import { attentionSaves } from "./kernel_choice.ts";
import {
  add,
  attention,
  attentionSaved,
  embed,
  gelu,
  glu,
  layernorm,
  matmul,
  rope,
  type RowEntry,
  rowOps,
  softcap,
} from "./ops.ts";
import { mulberry32 } from "./random.ts";
import { makeFolder, writeAtomic } from "./files.ts";
import { io } from "./io.ts";
import { applyVirtualEdit, type VirtualEdit } from "./virtual_edits.ts";
import { type HalfTensor, openCheckpoint, widenHalf, writeSafetensors } from "./safetensors.ts";
/** A hook site: token+position embeddings (`embed`), attention output, c_fc output (`mlp_pre`), MLP key
 *  (c_proj input, `key`), MLP output, block output (`resid`). */
export type Site = "embed" | "attn" | "mlp_pre" | "key" | "mlp" | "resid";

/** One intervention of a forward: capture rows of a site, or patch them (overwrite, add, zero, scale). */
export interface Hook {
  /** Block index; ignored for "embed". */
  layer: number;
  /** Where in the block the state is read or patched. */
  site: Site;
  /** Copies state rows out before any patch: into[intoRows[i]] = state[rows[i]] (intoRows default 0..n-1). */
  capture?: { into: Tensor; rows: number[]; intoRows?: number[] };
  /** state[e.dst] = e.keep * state[e.dst] + e.take * src[e.src]; src null = rows of the state itself. */
  patch?: { src: Tensor | null; entries: RowEntry[] };
}

/** Token ids of B prompts right-padded to T; lengths[b] real tokens in row b. */
export interface Batch {
  /** Token ids, [B*T]. */
  ids: Uint32Array;
  /** Prompts in the batch. */
  B: number;
  /** Padded length: the longest prompt's tokens. */
  T: number;
  /** Real tokens of each prompt. */
  lengths: number[];
}

/** A batch of token sequences, right-padded with `pad` to the longest (lengths are kept). */
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
  /** Block input (the residual entering it) [R, d]; a resumed block's m. */
  x: Tensor;
  /** The block started at its MLP output projection (ForwardOptions.resume): only m, key and what
   *  follows them are set. */
  resumed?: boolean;
  /**
   * The rows this block computed after attention, when not all R (the last block of a forward, at its
   * outputRows: see ForwardOptions.fullLastBlock). From `heads` on, every tensor below is [rows.length,
   * ...] at these rows, in this order; x, ln1, qkv and attention's saved state stay [R, ...].
   */
  rows?: number[];
  /** The first norm's output, the attention's input [R, d]. */
  ln1: Tensor;
  /** The first norm's per-row statistics [R, 2]: mean, rstd. */
  ln1Stats: Tensor;
  /** Fused q|k|v as projected, before Gemma 3's q/k norms (only then kept apart from qkv). */
  qkvProjected?: Tensor;
  /** Gemma 3's query-norm statistics [R*H, 2]. */
  qNormStats?: Tensor;
  /** Gemma 3's key-norm statistics [R*Hkv, 2]. */
  kNormStats?: Tensor;
  /** Attention's input q|k|v [R, (H + 2 Hkv) hd], after q/k norms and rotary. */
  qkv: Tensor;
  /** A suffix forward's q|k|v of the whole sequences [B*Tk, width] that attention read (the caller's). */
  kv?: Tensor;
  /** Attention probabilities [B, H, T, T] ([B, H, T, Tk] in a suffix forward), when the adapter keeps
   *  them (attentionSaves in engine/kernel_choice.ts); otherwise `lse`. */
  probs?: Tensor;
  /** Each attention row's log-sum-exp [B, H, T], kept instead of probs (no T x T tensor). */
  lse?: Tensor;
  /** Attention heads concatenated, the output projection's input [R, H hd] (at `rows` if set). */
  heads: Tensor;
  /** Attention output [R, d] (before a post-norm). */
  attn: Tensor;
  /** Statistics of Gemma 2/3's post-norm of attn [R, 2]. */
  attnNormStats?: Tensor;
  /** Gemma 2/3's post-normed attention output [R, d]. */
  attnNormed?: Tensor;
  /** x + attn in sequential blocks; x in parallel blocks [R, d]. */
  m: Tensor;
  /** The MLP's input [R, d] (ln1 itself for GPT-J). */
  ln2: Tensor;
  /** The second norm's per-row statistics [R, 2] (ln1Stats itself for GPT-J). */
  ln2Stats: Tensor;
  /** MLP input projection [R, f] (gated: [R, 2f]). */
  pre: Tensor;
  /** The MLP's keys [R, f]: act(pre), or act(gate) * up when gated. */
  key: Tensor;
  /** MLP output [R, d] (before a post-norm). */
  mlp: Tensor;
  /** Statistics of Gemma 2/3's post-norm of mlp [R, 2]. */
  mlpNormStats?: Tensor;
  /** Gemma 2/3's post-normed MLP output [R, d]. */
  mlpNormed?: Tensor;
}

/**
 * Where a forward may start inside a block: at `layer`'s MLP output projection, from what a kept
 * forward of the same rows computed there (Model.resumePoint). FT-L trains that projection only, so
 * the block's attention and MLP input are the same at every training step. All [B*T, ...] rows.
 */
export interface ResumePoint {
  /** The block whose MLP output projection the forward starts at. */
  layer: number;
  /** The stream the MLP branch adds to: x + attn in sequential blocks, x in parallel ones [R, d]. */
  m: Tensor;
  /** The MLP's keys, the projection's input [R, f]. */
  key: Tensor;
  /** Parallel blocks: the attention branch's output as added to the stream [R, d] (after a post-norm). */
  attn?: Tensor;
}

/** What a forward returns: the requested rows' logits, and the activations when `keep` is set. */
export interface ForwardResult {
  /** Logits [outputRows.length, V] for the requested rows (after the final soft-cap, if any). */
  logits: Tensor;
  /** The rows (b*T + t) the logits are of, in their order. */
  outputRows: number[];
  /** The batch the forward ran on. */
  batch: Batch;
  /** Present when the forward was run with keep: true. */
  acts?: {
    /** The embedding's output, or the caller's input (none after a resume point). */
    embed?: Tensor;
    layers: LayerActivations[];
    final: Tensor; // residual after the last block [R,d] ([n,d] at outputRows after a trimmed last block)
    selected: Tensor; // final residual at outputRows [n,d]
    lnf: Tensor; // ln_f(selected)
    lnfStats: Tensor;
  };
  /** The hooks the forward ran with (a backward reads their patches). */
  hooks: Hook[];
  /** The block the forward started at (0 unless restarted mid-model). */
  startLayer: number;
  /** The caller's `input` tensor, if the pass was given one (never released by releaseForward). */
  input?: Tensor;
  /** The caller's resume point, if the pass started from one (never released by releaseForward). */
  resume?: ResumePoint;
  /** A suffix forward's caches and its starts and bases (u32 [2B], released with the result). */
  suffix?: { qkv: Tensor[]; T: number; offsets: Tensor };
  /** The per-group parameters the forward ran with (a backward differentiates them). */
  grouped?: GroupedParams;
}

/**
 * Per-group copies of MLP output projections' parameters: FT-L of many edits in one pass, each edit
 * fine-tuning its own copy (experiments/editing/ft.ts computeFtBatch). The batch's B sequences form
 * `groups` groups of B / groups consecutive sequences, and the rows of group g use copy g in place of
 * the model's parameter; a backward pass gives each copy its own gradient ([groups, ...shape], keyed
 * by the same name in BackwardRequest.params). A grouped weight without a grouped bias uses the
 * model's bias for every group.
 */
export interface GroupedParams {
  /** Number of groups; divides the batch's sequences. */
  groups: number;
  /** By Locus name (`h.L.mlp.c_proj.weight` or `.bias`), the groups' copies [groups, ...shape]. */
  tensors: Map<string, Tensor>;
}

/** The parameter names GroupedParams may hold. */
const GROUPED_NAME = /^h\.\d+\.mlp\.c_proj\.(weight|bias)$/;

/**
 * A forward over the rows of each sequence from a position on, the rows before it cached: row
 * b*T + i of the batch (T its padded length) is sequence b's position starts[b] + i, and the
 * residual entering startLayer is given as `input` [B*T, d] for those rows only (at layer 0 it may be
 * left out: the batch's tokens are then embedded at those positions). Attention reads the
 * keys and values of sequence b's earlier positions j < starts[b] from row bases[b] + j of `qkv[l]`,
 * one tensor per layer from startLayer on holding attention inputs q|k|v [rows, (H + 2 Hkv) hd] as a
 * forward with `captureQkv` wrote them (read only: sequences that share a prefix share its rows).
 * The rows computed equal the whole forward's rows at those positions when the cache holds what the
 * whole forward had there (a delta added at or after starts[b] leaves the earlier rows so). Hook rows
 * and outputRows index the batch's rows. The backward pass gives gradients of patch sources and states
 * of these rows, not of parameters (the prefix's share would be missing).
 */
export interface Suffix {
  /** Per sequence, the first position computed (the rows before it are cached). */
  starts: number[];
  /** Per layer from startLayer on, the cached attention inputs q|k|v [rows, (H + 2 Hkv) hd]. */
  qkv: Tensor[];
  /** Per sequence, the row of qkv[l] that holds its position 0. */
  bases: number[];
  /** Positions per sequence (the whole sequences' padded length). */
  T: number;
}

/** Hooks, kept activations, output rows, a restart mid-model and virtual edits of one forward. */
export interface ForwardOptions {
  /** Captures and patches, applied in order at their sites. */
  hooks?: Hook[];
  /** Rows (b*T + t) whose logits are computed; default the last real token of each prompt. */
  outputRows?: number[];
  /** Keep every activation for a backward pass. */
  keep?: boolean;
  /** Start at this block with `input` [B*T, d] as the residual entering it (reuses a shared prefix).
   *  Hooks at block startLayer - 1's "resid" site (the residual leaving it) capture or patch the input. */
  startLayer?: number;
  /** With startLayer: the residual [B*T, d] entering that block. */
  input?: Tensor;
  /**
   * Start at resume.layer's MLP output projection instead (startLayer, if given, must be that layer; no
   * `input`): the block's attention and MLP input are taken from the resume point. Not with hooks at
   * that block before its "mlp" site, nor with a suffix; a backward gives no gradient below the
   * projection (FT-L's, which trains it, needs none).
   */
  resume?: ResumePoint;
  /**
   * Run blocks [startLayer, endLayer) only, without the head (default: every block, then the head):
   * `logits` then holds the residual leaving block endLayer - 1 at outputRows, [outputRows.length, d]
   * (a part of the model run on its own, as causal tracing runs a cell's first layer). Not with keep.
   */
  endLayer?: number;
  /**
   * Low-rank edits of MLP output projections applied per row without writing the weights
   * (engine/virtual_edits.ts): added to the "mlp" state before that site's hooks run, so captures
   * and patches see the edited output. Not differentiated: refused with `keep`.
   */
  virtualEdits?: VirtualEdit[];
  /** Compute only rows from per-sequence positions on, the earlier rows cached (see Suffix). */
  suffix?: Suffix;
  /** Copies each listed layer's attention input q|k|v (after q/k norms and rotary), [B*T, width], into
   *  the tensor: the cache of a later suffix forward. */
  captureQkv?: Map<number, Tensor>;
  /** Per-group copies of MLP output projections' parameters (see GroupedParams). Not with `suffix`. */
  grouped?: GroupedParams;
  /**
   * Compute the last block's attention output and MLP at every row. By default they run only at the
   * outputRows (nanoGPT's inference trick, taken one block lower): the other rows of the last block only
   * give keys and values, which attention reads, and nothing else of theirs reaches a logit (virtual
   * edits act on the rows run; a backward's state gradients there are 0 at the rows not run). Kept
   * whole when a hook acts on the last block after attention (its rows index the whole batch), or when
   * grouped parameters meet outputRows other than the default (their groups are runs of rows).
   */
  fullLastBlock?: boolean;
}

/** A row chunk of a [V, d] matrix (token embedding or head): rows [rowStart, rowStart + rows). */
export interface EmbeddingChunk {
  /** The chunk's rows [rows, d]. */
  tensor: Tensor;
  /** First row of the matrix in this chunk. */
  rowStart: number;
  /** Number of rows in this chunk. */
  rows: number;
  /** The head's bias at these rows (GPT-J), added to the logits. */
  bias?: Tensor;
}

/** Locus parameter names and shapes (engine/families.ts), for a full config or a GPT-2 shape. */
export function parameterShapes(cfg: GPT2Config | ModelConfig): [string, number[]][] {
  return shapesOf(resolveConfig(cfg));
}

/** A model folder Locus cannot load (file, tensor or shape named in the message). */
export class ModelLoadError extends Error {}

/** Checkpoint tensors that are buffers rather than parameters (masks, cached rotary frequencies). */
const IGNORED_TENSORS =
  /(^|\.)(attn\.bias|attn\.masked_bias|attention\.bias|attention\.masked_bias|rotary_emb\.inv_freq)$/;

/** A transformer of any supported family on the GPU: weights, the batched forward with hooks, and
 *  `forwardWithCache` (every hook site of every layer captured in one call). */
export class Model {
  /** Every parameter except wte and an untied head (which may be split into chunks), by Locus name. */
  readonly params = new Map<string, Tensor>();
  /** The token embedding, split into chunks by rows over storage bindings. */
  readonly wte: EmbeddingChunk[] = [];
  /** Projection weights over one storage binding, split by output rows ([out, in] layout only). */
  readonly rowChunks = new Map<string, EmbeddingChunk[]>();
  /** The unembedding's chunks: wte's own when the head is tied. */
  readonly head: EmbeddingChunk[] = [];
  /** The validated configuration. */
  readonly config: ModelConfig;
  /** Per layer, the rotary inverse frequencies [dims/2] (layers with the same frequencies share one). */
  readonly invFreq: Tensor[] = [];

  private constructor(readonly gpu: Gpu, config: GPT2Config | ModelConfig, readonly source: string) {
    this.config = resolveConfig(config);
  }

  /** Builds the model from CPU arrays by Locus name (every name of parameterShapes must be present). */
  static fromArrays(
    gpu: Gpu,
    config: GPT2Config | ModelConfig,
    weights: Map<string, Float32Array | HalfTensor>,
    source = "arrays",
    o: {
      /** Split wte and the head into chunks of at most this many rows (tests; over a binding they always are). */
      embeddingChunkRows?: number;
      /** Split every [out, in] projection with more rows than this (tests; over a binding they always are). */
      projectionChunkRows?: number;
      /**
       * Benchmarks only: blocks given the same array for a parameter share one GPU tensor, so that a
       * model of random weights at a size the machine cannot hold twice still runs every block.
       */
      shareRepeated?: boolean;
    } = {},
  ): Model {
    const { embeddingChunkRows, projectionChunkRows } = o;
    const shared = new Map<Float32Array | HalfTensor, Tensor | EmbeddingChunk[]>();
    const model = new Model(gpu, config, source);
    const cfg = model.config;
    for (const [name, shape] of parameterShapes(cfg)) {
      const stored = weights.get(name);
      const n = shape.reduce((a, b) => a * b, 1);
      if (!stored) throw new ModelLoadError(`${source}: missing tensor ${name}`);
      const length = stored instanceof Float32Array ? stored.length : stored.bits.length;
      if (length !== n) {
        throw new ModelLoadError(`${source}: tensor ${name} has ${length} values, expected [${shape}]`);
      }
      if (
        !(stored instanceof Float32Array) &&
        (!name.endsWith(".weight") || shape.length !== 2 || name === "wpe.weight")
      ) {
        throw new ModelLoadError(
          `${source}: only matrices read by matmuls or embed are kept in 16 bits, not ${name}`,
        );
      }
      const bytes = tensorBytes(n, stored instanceof Float32Array ? "f32" : stored.dtype);
      if (name === "wte.weight") {
        model.wte.push(...model.chunks(stored, shape[0], shape[1], embeddingChunkRows));
      } else if (name === "lm_head.weight") {
        model.head.push(...model.chunks(stored, shape[0], shape[1], embeddingChunkRows));
      } else if (
        shape.length === 2 &&
        (bytes > gpu.limits.maxStorageBufferBindingSize || shape[0] > (projectionChunkRows ?? Infinity))
      ) {
        if (cfg.linearLayout !== "out_in") {
          throw new ModelLoadError(
            `${source}: tensor ${name} [${shape}] is over one storage binding and stored [in, out]`,
          );
        }
        const made = (o.shareRepeated && shared.get(stored)) as EmbeddingChunk[] | undefined;
        const chunks = made ?? model.chunks(stored, shape[0], shape[1], projectionChunkRows);
        if (o.shareRepeated) shared.set(stored, chunks);
        model.rowChunks.set(name, chunks);
      } else if (name !== "lm_head.bias") {
        const made = (o.shareRepeated && shared.get(stored)) as Tensor | undefined;
        const tensor = made ??
          (stored instanceof Float32Array
            ? gpu.tensor(shape, stored)
            : gpu.tensor(shape, stored.bits, stored.dtype));
        if (o.shareRepeated) shared.set(stored, tensor);
        model.params.set(name, tensor);
      }
    }
    // A split projection's bias is split with it (each chunk's product adds its own columns' bias).
    for (const [name, chunks] of model.rowChunks) {
      const bias = weights.get(name.replace(/\.weight$/, ".bias")) as Float32Array | undefined;
      if (bias) {
        for (const c of chunks) {
          c.bias = gpu.tensor([c.rows], bias.subarray(c.rowStart, c.rowStart + c.rows));
        }
      }
    }
    if (cfg.tiedHead) model.head.push(...model.wte);
    const headBias = weights.get("lm_head.bias") as Float32Array | undefined;
    if (headBias) {
      for (const c of model.head) {
        c.bias = gpu.tensor([c.rows], headBias.subarray(c.rowStart, c.rowStart + c.rows));
      }
    }
    if (cfg.rotary) {
      const made = new Map<Float64Array, Tensor>();
      for (const inv of cfg.rotary.invFreq) {
        if (!made.has(inv)) made.set(inv, gpu.tensor([inv.length], Float32Array.from(inv)));
        model.invFreq.push(made.get(inv)!);
      }
    }
    return model;
  }

  /**
   * Splits a [rows, cols] matrix into row chunks that each fit one storage binding: the [V, d]
   * embedding and head (GPT-2 XL's wte is 321 MB) and projections too large for one binding (a 7B
   * model's fused gate|up on an adapter with 128 MiB bindings).
   */
  private chunks(
    data: Float32Array | HalfTensor,
    total: number,
    cols: number,
    chunkRows?: number,
  ): EmbeddingChunk[] {
    const half = !(data instanceof Float32Array);
    const bytesPerRow = half ? 2 * cols : 4 * cols;
    // 16-bit chunks start on whole words: an even number of rows when a row holds an odd count.
    let maxRows = Math.min(
      chunkRows ?? Infinity,
      Math.floor(this.gpu.limits.maxStorageBufferBindingSize / bytesPerRow),
    );
    if (half && cols % 2 === 1) maxRows -= maxRows % 2;
    const out: EmbeddingChunk[] = [];
    for (let start = 0; start < total; start += maxRows) {
      const rows = Math.min(maxRows, total - start);
      const [a, b] = [start * cols, (start + rows) * cols];
      const tensor = data instanceof Float32Array
        ? this.gpu.tensor([rows, cols], data.subarray(a, b))
        : this.gpu.tensor([rows, cols], data.bits.subarray(a, b), data.dtype);
      out.push({ tensor, rowStart: start, rows });
    }
    return out;
  }

  /**
   * Loads a Hugging Face model folder of any supported family: config.json plus model.safetensors (or a
   * sharded index), f32/f16/bf16. Every expected tensor must be present with the shape the config
   * implies, and every tensor of the checkpoint must be used (buffers such as attention masks aside).
   * Fused tensors (q|k|v, gate|up) are assembled here. Matrices stored in f16/bf16 (projections,
   * embedding, head) stay in 16 bits on the GPU (half the memory; the kernels convert as they read)
   * unless `keepHalf` is false; a projection is widened to f32 when something writes it (`writable`). Memory is checked against the adapter first.
   */
  static async load(gpu: Gpu, dir: string, o: { keepHalf?: boolean } = {}): Promise<Model> {
    const configText = await io().readText(`${dir}/config.json`).catch(() => null);
    if (configText === null) {
      throw new ModelLoadError(`${dir}: no config.json (expected a Hugging Face model folder)`);
    }
    const config = parseConfig(configText, `${dir}/config.json`);
    const ckpt = await openCheckpoint(dir);
    try {
      const names = new Set(ckpt.names());
      // The body's prefix ("transformer.", "model.", ...): the one under which the final norm is found.
      const lnf = checkpointSource(config, "ln_f.weight").parts[0];
      const prefix = checkpointPrefixes(config).find((p) => names.has(p + lnf));
      if (prefix === undefined) {
        throw new ModelLoadError(
          `${dir}: checkpoint has no final norm ${
            checkpointPrefixes(config).map((p) => p + lnf).join(" / ")
          } ` +
            `(is it a ${config.family} checkpoint?)`,
        );
      }
      // Validate every name and shape before reading any data: no partial loads.
      const plan: [string, string[], boolean][] = [];
      const used = new Set<string>();
      for (const [name, shape] of parameterShapes(config)) {
        const src = checkpointSource(config, name);
        const parts = src.parts.map((part) => (src.outsideBody ? part : prefix + part));
        let rows = 0;
        for (const part of parts) {
          if (!names.has(part)) {
            throw new ModelLoadError(`${dir}: checkpoint has no tensor ${part} (for ${config.family})`);
          }
          const info = ckpt.info(part);
          const rest = shape.slice(1);
          if (info.shape.length !== shape.length || info.shape.slice(1).some((s, i) => s !== rest[i])) {
            throw new ModelLoadError(
              `${dir}: tensor ${part} has shape [${info.shape}], config.json implies [${shape}]`,
            );
          }
          rows += info.shape[0];
          used.add(part);
        }
        if (rows !== shape[0] && parts.length === 1) {
          const stored = [rows, ...shape.slice(1)];
          throw new ModelLoadError(
            `${dir}: tensor ${parts[0]} has shape [${stored}] but config.json implies [${shape}]`,
          );
        }
        if (rows !== shape[0]) {
          throw new ModelLoadError(
            `${dir}: tensor${parts.length > 1 ? "s" : ""} ${parts.join(" + ")} ha${
              parts.length > 1 ? "ve" : "s"
            } ` +
              `${rows} rows, config.json implies [${shape}]`,
          );
        }
        plan.push([name, parts, !!src.neoxHeads]);
      }
      const tiedCopy = config.tiedHead && names.has("lm_head.weight");
      for (const n of names) {
        if (!used.has(n) && !IGNORED_TENSORS.test(n) && !(tiedCopy && n === "lm_head.weight")) {
          throw new ModelLoadError(
            `${dir}: checkpoint tensor ${n} is not used by a ${config.family} model with this config.json ` +
              `(n_layer / num_hidden_layers or tie_word_embeddings disagree with the weights?)`,
          );
        }
      }
      // Matrices stored in f16/bf16 (projections, the embedding and the head) stay in 16 bits on the
      // GPU (all parts of a fused tensor must share the format); norms, biases and GPT-2's learned
      // positions (added in f32 by the embedding kernel) are widened to f32.
      const keepHalf = (name: string, parts: string[]) => {
        const dtypes = new Set(parts.map((p) => ckpt.info(p).dtype));
        return (o.keepHalf ?? true) && dtypes.size === 1 && !dtypes.has("F32") && name.endsWith(".weight") &&
          ckpt.info(parts[0]).shape.length === 2 && name !== "wpe.weight";
      };
      checkMemory(gpu, config, dir, (name) => {
        const entry = plan.find(([n]) => n === name)!;
        return keepHalf(name, entry[1]) ? 2 : 4;
      });
      const weights = new Map<string, Float32Array | HalfTensor>();
      for (const [name, parts, neox] of plan) {
        const cols = name.endsWith(".bias") ? 1 : config.nEmbd;
        const reorder = <T extends Float32Array | Uint16Array>(x: T): T =>
          neox ? neoxToBlocks(x, config.nHead, config.headDim, cols) : x;
        if (keepHalf(name, parts)) {
          const halves = await Promise.all(parts.map((p) => ckpt.readHalf(p)));
          weights.set(name, { dtype: halves[0].dtype, bits: reorder(concat(halves.map((h) => h.bits))) });
        } else {
          weights.set(name, reorder(concat(await Promise.all(parts.map((p) => ckpt.read(p))))));
        }
      }
      if (tiedCopy) {
        const head = await ckpt.read("lm_head.weight"), wte = weights.get("wte.weight")!;
        const values = wte instanceof Float32Array ? wte : widenHalf(wte);
        if (head.length !== values.length || head.some((v, i) => v !== values[i])) {
          throw new ModelLoadError(
            `${dir}: config.json ties the head to the embedding (tie_word_embeddings true) but the ` +
              `checkpoint's lm_head.weight differs from it`,
          );
        }
      }
      return Model.fromArrays(gpu, config, weights, dir);
    } finally {
      ckpt.close();
    }
  }

  /**
   * Random weights in GPT-2's initialisation (N(0, 0.02), residual projections scaled by
   * 1/sqrt(2L)). `perturb` also randomises biases and norm gains so tests exercise them.
   */
  static random(gpu: Gpu, config: GPT2Config | ModelConfig, seed = 0, perturb = false): Model {
    return Model.fromArrays(gpu, config, randomWeights(config, seed, perturb), `random(seed=${seed})`);
  }

  /** Number of blocks, config.nLayer. */
  get nLayer(): number {
    return this.config.nLayer;
  }

  /** The parameter tensor `name` (e.g. "h.0.mlp.c_proj.weight"); an error naming it if there is none. */
  p(name: string): Tensor {
    const t = this.params.get(name);
    if (t) return t;
    const split = this.rowChunks.get(name);
    if (split) {
      throw new Error(
        `parameter ${name} is split into ${split.length} row chunks (over the adapter's ` +
          `${this.gpu.limits.maxStorageBufferBindingSize}-byte storage binding); this operation needs it whole`,
      );
    }
    throw new Error(`no parameter ${name}`);
  }

  /** The tensors holding a weight: itself, or its row chunks when it is split. */
  parts(name: string): Tensor[] {
    return this.rowChunks.get(name)?.map((c) => c.tensor) ?? [this.p(name)];
  }

  /** The parameter, widened to f32 first if it is kept in 16 bits: what edits and optimisers write.
   *  Widening is exact, so the model computes the same until the weight changes. */
  async writable(name: string): Promise<Tensor> {
    const t = this.p(name);
    if (t.dtype === "f32") return t;
    const wide = this.gpu.tensor(t.shape, await t.read());
    this.params.set(name, wide);
    t.destroy();
    return wide;
  }

  /** Reads every parameter back to the CPU (one submit). */
  async toArrays(): Promise<Map<string, Float32Array>> {
    const names = [...this.params.keys()];
    const untied = this.config.tiedHead ? [] : this.head;
    const parts = await this.gpu.readMany([
      ...names.map((n) => this.params.get(n)!),
      ...this.wte.map((c) => c.tensor),
      ...untied.map((c) => c.tensor),
    ]);
    const out = new Map<string, Float32Array>();
    names.forEach((n, i) => out.set(n, parts[i]));
    const join = (chunks: EmbeddingChunk[], offset: number) => {
      const all = new Float32Array(this.config.vocabSize * this.config.nEmbd);
      chunks.forEach((c, i) => all.set(parts[offset + i], c.rowStart * this.config.nEmbd));
      return all;
    };
    for (const [name, chunks] of this.rowChunks) {
      const parts = await this.gpu.readMany(chunks.map((c) => c.tensor));
      const cols = chunks[0].tensor.shape[1];
      const all = new Float32Array(chunks.reduce((s, c) => s + c.rows, 0) * cols);
      chunks.forEach((c, i) => all.set(parts[i], c.rowStart * cols));
      out.set(name, all);
    }
    out.set("wte.weight", join(this.wte, names.length));
    if (untied.length) out.set("lm_head.weight", join(untied, names.length + this.wte.length));
    if (this.config.headBias) {
      const biases = await this.gpu.readMany(this.head.map((c) => c.bias!));
      const bias = new Float32Array(this.config.vocabSize);
      this.head.forEach((c, i) => bias.set(biases[i], c.rowStart));
      out.set("lm_head.bias", bias);
    }
    return out;
  }

  /** Writes config.json + model.safetensors (HF names) into `dir` (GPT-2 family only). */
  async save(dir: string, metadata: Record<string, string> = {}): Promise<void> {
    const config = configJson(this.config); // throws for other families before anything is written
    await makeFolder(dir);
    const arrays = await this.toArrays();
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [name, shape] of parameterShapes(this.config)) {
      tensors[name] = { shape, data: arrays.get(name)! };
    }
    await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt", ...metadata });
    await writeAtomic(`${dir}/config.json`, config);
  }

  /** Width of a hook site's state. */
  siteWidth(site: Site): number {
    const c = this.config;
    if (site === "mlp_pre") return c.mlp === "gated" ? 2 * c.nInner : c.nInner;
    return site === "key" ? c.nInner : c.nEmbd;
  }

  /** Optional parameter (biases, norms some families lack). */
  private maybe(name: string): Tensor | null {
    return this.params.get(name) ?? null;
  }

  /** The family's norm of `x` [R, d] by parameter prefix (ln_1, ln_2, ln_f, ...). */
  private norm(x: Tensor, prefix: string, R: number, stats: Tensor, width = this.config.nEmbd): Tensor {
    const c = this.config;
    return layernorm(
      this.gpu,
      x,
      this.p(prefix + ".weight"),
      this.maybe(prefix + ".bias"),
      R,
      width,
      c.layerNormEpsilon,
      {
        out: this.gpu.empty([R, width]),
        stats,
        rms: c.norm === "rmsnorm",
        gainOffset: c.normGainOffset,
      },
    );
  }

  /** Refuses a resume point the forward `o` cannot start from (see ForwardOptions.resume). */
  private checkResume(r: ResumePoint, start: number, R: number, o: ForwardOptions, hooks: Hook[]): void {
    const cfg = this.config, where = `forward: resume at block ${r.layer}`;
    if (!Number.isInteger(r.layer) || r.layer < 0 || r.layer >= cfg.nLayer) {
      throw new Error(`${where}: no such block`);
    }
    if (start !== r.layer) throw new Error(`${where} with startLayer ${start}`);
    if (o.input || o.suffix) throw new Error(`${where}: the resume point replaces an input or a suffix`);
    const early = hooks.find((h) =>
      h.site === "embed" || h.layer < r.layer ||
      (h.layer === r.layer && ["attn", "mlp_pre", "key"].includes(h.site))
    );
    if (early) {
      throw new Error(`${where}: a hook at ${early.site} ${early.layer} acts before the resume point`);
    }
    const parallel = cfg.residual !== "sequential";
    const sizes: [string, Tensor | undefined, number][] = [
      ["m", r.m, R * cfg.nEmbd],
      ["key", r.key, R * this.siteWidth("key")],
      ["attn", r.attn, parallel ? R * cfg.nEmbd : 0],
    ];
    for (const [name, t, size] of sizes) {
      if ((t?.size ?? 0) !== size) {
        throw new Error(`${where}: ${name} has ${t?.size ?? 0} values, the batch needs ${size}`);
      }
    }
  }

  /**
   * The resume point of block `layer` of a kept forward (keep: true, every row of that block computed:
   * fullLastBlock for the last), as copies the caller releases (gpu.release): what a later forward of
   * the same rows starts from when only that block's MLP output projection, or parameters above it,
   * have changed.
   */
  resumePoint(fwd: ForwardResult, layer: number): ResumePoint {
    const a = fwd.acts?.layers[layer - fwd.startLayer];
    if (!a || a.rows || a.resumed) {
      throw new Error(`resumePoint: the forward kept no whole block ${layer} (keep: true, fullLastBlock)`);
    }
    const copy = (t: Tensor) => {
      const c = this.gpu.empty([...t.shape]);
      this.gpu.copy(t, c);
      return c;
    };
    const parallel = this.config.residual !== "sequential";
    return {
      layer,
      m: copy(a.m),
      key: copy(a.key),
      attn: parallel ? copy(a.attnNormed ?? a.attn) : undefined,
    };
  }

  /** Refuses GroupedParams a forward of B sequences cannot use, naming the parameter. */
  private checkGrouped(g: GroupedParams, B: number, suffix: boolean): void {
    if (suffix) throw new Error("forward: grouped parameters cannot run with a suffix forward");
    if (!(Number.isInteger(g.groups) && g.groups >= 1 && B % g.groups === 0)) {
      throw new Error(`forward: ${g.groups} parameter groups do not divide the batch's ${B} sequences`);
    }
    for (const [name, t] of g.tensors) {
      if (!GROUPED_NAME.test(name)) {
        throw new Error(
          `forward: grouped parameter ${name} is not an MLP output projection's weight or bias`,
        );
      }
      const shape = this.p(name).shape;
      if (t.shape.join(",") !== [g.groups, ...shape].join(",") || t.dtype !== "f32") {
        throw new Error(
          `forward: grouped ${name} is [${t.shape}] ${t.dtype}, expected f32 [${[g.groups, ...shape]}]`,
        );
      }
    }
  }

  /** y = x W (+ b) for a Locus linear parameter, in the family's layout; with `grouped` holding the
   *  parameter, each group of R / groups rows uses its own copy. */
  linear(
    x: Tensor,
    prefix: string,
    R: number,
    nIn: number,
    nOut: number,
    o: { out?: Tensor; beta?: number; gelu?: boolean; grouped?: GroupedParams } = {},
  ): Tensor {
    const out = o.out ?? this.gpu.empty([R, nOut]);
    const groupedWeight = o.grouped?.tensors.get(prefix + ".weight");
    if (groupedWeight) {
      // One product per group of rows with its own weight copy (a batched matmul), then each group's bias.
      const G = o.grouped!.groups, rows = R / G;
      const groupedBias = o.grouped!.tensors.get(prefix + ".bias");
      if (groupedBias && o.gelu) {
        throw new Error(`linear ${prefix}: a grouped bias cannot precede a fused GELU`);
      }
      matmul(this.gpu, x, groupedWeight, rows, nOut, nIn, {
        bias: groupedBias ? undefined : this.maybe(prefix + ".bias") ?? undefined,
        transB: this.config.linearLayout === "out_in",
        batch: G,
        strides: { a: rows * nIn, b: nIn * nOut, c: rows * nOut },
        out,
        beta: o.beta,
        gelu: o.gelu,
      });
      if (groupedBias) {
        const entries = Array.from(
          { length: R },
          (_, r) => ({ dst: r, src: Math.floor(r / rows), keep: 1, take: 1 }),
        );
        rowOps(this.gpu, out, groupedBias, nOut, entries);
      }
      return out;
    }
    const split = this.rowChunks.get(prefix + ".weight");
    if (split) {
      // One product per row chunk of W [out, in], each writing its own columns of y.
      for (const c of split) {
        matmul(this.gpu, x, c.tensor, R, c.rows, nIn, {
          bias: c.bias,
          transB: true,
          weight: true,
          out,
          ldc: nOut,
          outOffset: c.rowStart,
          beta: o.beta,
          gelu: o.gelu,
        });
      }
      return out;
    }
    return matmul(this.gpu, x, this.p(prefix + ".weight"), R, nOut, nIn, {
      bias: this.maybe(prefix + ".bias") ?? undefined,
      transB: this.config.linearLayout === "out_in",
      weight: true,
      out,
      beta: o.beta,
      gelu: o.gelu,
    });
  }

  /** Rotary embedding of layer l in place on fused q|k|v rows [R, (H + 2 Hkv) hd]; sign -1 undoes it
   *  (the backward pass of a rotation is the inverse rotation of the gradient). `starts` (u32, its first
   *  R / T values): each sequence's first position, in a suffix forward. */
  rotate(qkv: Tensor, l: number, R: number, T: number, sign: 1 | -1 = 1, starts?: Tensor): void {
    const c = this.config;
    if (!c.rotary) throw new Error(`rotate: ${c.family} has no rotary embedding`);
    rope(this.gpu, qkv, this.invFreq[l], {
      R,
      T,
      H: c.nHead,
      Hkv: c.nKvHead,
      hd: c.headDim,
      dims: c.rotary.dims,
      interleaved: c.rotary.interleaved,
      starts,
    }, sign);
  }

  /**
   * The forward pass, recorded on the GPU (nothing is read back). Returns logits for the
   * requested rows; callers turn them into probabilities with ops.softmax / logProbOf / topK.
   */
  forward(batch: Batch, o: ForwardOptions = {}): ForwardResult {
    const gpu = this.gpu, cfg = this.config;
    const { B, T } = batch;
    const R = B * T, d = cfg.nEmbd, f = cfg.nInner, H = cfg.nHead, Hkv = cfg.nKvHead, hd = cfg.headDim;
    const qd = H * hd, width = qkvWidth(cfg), fcOut = this.siteWidth("mlp_pre");
    const suffix = o.suffix;
    const Tk = suffix?.T ?? T; // key rows per sequence
    if (Tk > cfg.nPositions) {
      throw new Error(`sequence of ${Tk} tokens exceeds the model's ${cfg.nPositions} positions`);
    }
    for (const id of batch.ids) {
      if (id >= cfg.vocabSize) {
        throw new Error(`token id ${id} is outside the vocabulary (size ${cfg.vocabSize})`);
      }
    }
    const hooks = o.hooks ?? [];
    const keep = o.keep ?? false;
    const resume = o.resume;
    const start = o.startLayer ?? resume?.layer ?? 0;
    if (resume) this.checkResume(resume, start, R, o, hooks);
    const end = o.endLayer ?? cfg.nLayer;
    if (!(Number.isInteger(end) && start <= end && end <= cfg.nLayer)) {
      throw new Error(`forward: endLayer ${end} outside [${start}, ${cfg.nLayer}]`);
    }
    const headless = o.endLayer !== undefined;
    if (headless && keep) throw new Error("forward: a pass that stops at endLayer cannot be kept");
    const outputRows = o.outputRows ?? batch.lengths.map((n, b) => b * T + n - 1);
    for (const h of hooks) {
      if (h.site !== "embed" && (h.layer < 0 || h.layer >= cfg.nLayer)) {
        throw new Error(`hook layer ${h.layer} out of range`);
      }
    }
    const virtualEdits = o.virtualEdits ?? [];
    if (virtualEdits.length && keep) {
      throw new Error("forward: virtualEdits cannot be kept for a backward pass (apply the edit instead)");
    }
    for (const v of virtualEdits) {
      if (!Number.isInteger(v.layer) || v.layer < start || v.layer >= cfg.nLayer) {
        throw new Error(
          `virtual edit layer ${v.layer} outside the forward's layers [${start}, ${cfg.nLayer})`,
        );
      }
    }
    const grouped = o.grouped;
    if (grouped) this.checkGrouped(grouped, B, !!suffix);
    let suffixState: ForwardResult["suffix"];
    if (suffix) {
      // Without `input` the suffix's rows are embedded at their positions, starts[b] + t.
      const lastPosition = Math.max(...suffix.starts) + T - 1;
      if (!o.input && !cfg.rotary && lastPosition >= cfg.nPositions) {
        throw new Error(
          `forward: suffix rows up to position ${lastPosition}, beyond the model's ${cfg.nPositions} positions`,
        );
      }
      if (suffix.starts.length !== B || suffix.bases.length !== B) {
        throw new Error(
          `forward: suffix has ${suffix.starts.length} starts and ${suffix.bases.length} cache bases ` +
            `for ${B} sequences`,
        );
      }
      if (suffix.qkv.length !== cfg.nLayer - start) {
        throw new Error(
          `forward: suffix has ${suffix.qkv.length} q|k|v caches for layers ${start}..${cfg.nLayer - 1}`,
        );
      }
      const cacheRows = Math.min(...suffix.qkv.map((t) => Math.floor(t.size / width)));
      suffix.starts.forEach((s, b) => {
        if (!Number.isInteger(s) || s < 0 || s >= Tk) {
          throw new Error(`forward: suffix start ${s} of sequence ${b} outside [0, ${Tk})`);
        }
        const base = suffix.bases[b];
        if (!Number.isInteger(base) || base < 0 || base + s > cacheRows) {
          throw new Error(
            `forward: suffix cache rows [${base}, ${base + s}) of sequence ${b} are not among the ` +
              `${cacheRows} q|k|v rows of width ${width} every cache holds`,
          );
        }
      });
      const offsets = gpu.filled([2 * B], [...suffix.starts, ...suffix.bases], "u32");
      suffixState = { qkv: suffix.qkv, T: Tk, offsets };
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
    // The caller's tensors, read and never released or written here.
    const borrowed = callersTensors(o);
    if (resume) {
      x = resume.m;
    } else if (start > 0 || o.input) {
      if (!o.input) throw new Error("forward: startLayer > 0 needs the residual `input` entering that layer");
      x = o.input;
      if (hooks.some((h) => h.site === "resid" && h.layer === start - 1)) {
        // The input is the residual leaving block start - 1: that block's "resid" hooks apply to it, on a
        // copy (the caller's input serves many passes).
        x = gpu.empty([R, d]);
        gpu.copy(o.input, x, R * d);
        applyHooks(start - 1, "resid", x);
      }
    } else {
      const tokens = gpu.upload([R], batch.ids, "u32");
      x = gpu.empty([R, d]);
      const wpe = cfg.rotary ? null : this.p("wpe.weight");
      for (const c of this.wte) {
        embed(gpu, tokens, c.tensor, wpe, R, T, d, {
          out: x,
          rowStart: c.rowStart,
          scale: cfg.embedScale,
          starts: suffixState?.offsets,
        });
      }
      applyHooks(-1, "embed", x);
      embedOut = x;
    }

    const sequential = cfg.residual === "sequential";
    // The last block after attention at the outputRows only (see ForwardOptions.fullLastBlock): `trimmed`.
    // Every hook site but "embed" lies after a block's attention.
    const last = cfg.nLayer - 1;
    const trimmed = !o.fullLastBlock && !headless && start <= last && outputRows.length < R &&
      !hooks.some((h) => h.site !== "embed" && h.layer === last) && (!grouped || o.outputRows === undefined);
    // Rows of t [R, width] at the outputRows, in their order [outputRows.length, width].
    const atOutputRows = (t: Tensor, width: number) => {
      const out = gpu.empty([outputRows.length, width]);
      rowOps(gpu, out, t, width, outputRows.map((r, i) => ({ dst: i, src: r, keep: 0, take: 1 })));
      return out;
    };
    const layers: LayerActivations[] = [];
    for (let l = start; l < end; l++) {
      const p = `h.${l}.`;
      // An op whose input no hook needs on its own rides in the epilogue of the matmul before it, with
      // the same sums: each residual add of a sequential block in its projection's (beta = 1 into the
      // stream, or into a copy of it where the stream must survive: kept for the backward pass, or the
      // caller's input; x + y and y + x are the same float), and, without kept activations (no backward
      // pass needs GELU's input), GPT-2's GELU in c_fc's. Up to three dispatches fewer per layer.
      const trim = trimmed && l === last;
      // Rows from attention's output on: R, or the outputRows in the trimmed last block (whose virtual
      // edits then act on those rows).
      const Rb = trim ? outputRows.length : R;
      const virtual = virtualEdits.filter((v) => v.layer === l).map((v) =>
        trim ? { ...v, rowEdit: outputRows.map((r) => v.rowEdit[r]) } : v
      );
      const unhooked = (site: Site) =>
        !hooks.some((h) => h.site === site && h.layer === l) && !(site === "mlp" && virtual.length);
      const fuseAdd = (site: Site) => unhooked(site) && sequential && !cfg.postNorms;
      const ownStream = (t: Tensor) => {
        if (!keep && !borrowed.includes(t)) return t;
        const c = gpu.empty([t.size / d, d]);
        gpu.copy(t, c);
        return c;
      };
      const a: Partial<LayerActivations> = { x };
      let m: Tensor, key: Tensor;
      if (resume && l === start) {
        // From the MLP output projection on (ForwardOptions.resume): the block's attention and MLP
        // input are the caller's, at the trimmed block's rows where it is trimmed.
        a.resumed = true;
        if (trim) a.rows = outputRows;
        const rowsOf = (t: Tensor, width: number) => (trim ? atOutputRows(t, width) : t);
        m = rowsOf(resume.m, d);
        key = rowsOf(resume.key, f);
        if (resume.attn) a.attn = rowsOf(resume.attn, d);
        a.m = m;
        a.key = key;
      } else {
        a.ln1Stats = gpu.empty([R, 2]);
        a.ln1 = this.norm(x, p + "ln_1", R, a.ln1Stats);
        let qkv = this.linear(a.ln1, p + "attn.c_attn", R, d, width);
        if (cfg.qkNorm) {
          // Gemma 3: RMSNorm over each head's hd values of q and of k (v passes through).
          a.qkvProjected = qkv;
          qkv = gpu.empty([R, width]);
          gpu.copy(a.qkvProjected, qkv);
          a.qNormStats = gpu.empty([R * H, 2]);
          a.kNormStats = gpu.empty([R * Hkv, 2]);
          for (
            const [part, heads, off, stats] of [["q", H, 0, a.qNormStats], [
              "k",
              Hkv,
              qd,
              a.kNormStats,
            ]] as const
          ) {
            layernorm(
              gpu,
              a.qkvProjected,
              this.p(`${p}attn.${part}_norm.weight`),
              null,
              R * heads,
              hd,
              cfg.layerNormEpsilon,
              {
                out: qkv,
                stats,
                rms: true,
                gainOffset: cfg.normGainOffset,
                rows: { G: heads, ld: width, off },
              },
            );
          }
        }
        if (cfg.rotary) {
          // In place: a rotation is undone exactly in the backward pass, nothing to keep.
          this.rotate(qkv, l, R, T, 1, suffixState?.offsets);
        }
        a.qkv = qkv;
        const into = o.captureQkv?.get(l);
        if (into) gpu.copy(qkv, into, R * width);
        const saves = keep && attentionSaves(
          attentionSaved(gpu),
          B,
          H,
          T,
          Tk,
          gpu.limits.maxStorageBufferBindingSize,
        );
        a.probs = saves === "probs" ? gpu.empty([B, H, T, Tk]) : undefined;
        a.lse = saves === "lse" ? gpu.empty([B, H, T]) : undefined;
        a.heads = attention(gpu, qkv, B, Tk, qd, H, {
          out: gpu.empty([R, qd]),
          probs: a.probs,
          lse: a.lse,
          nKvHead: Hkv,
          scale: cfg.attnScale,
          softcap: cfg.attnSoftcap,
          window: cfg.windows[l],
          queries: suffixState && { Tq: T, offsets: suffixState.offsets, cache: suffixState.qkv[l - start] },
        });
        // The trimmed block goes on at the outputRows: their heads, and their rows of the stream (and of
        // ln_1, GPT-J's MLP input). Attention's backward needs no heads of the other rows.
        let stream = x;
        if (trim) {
          a.rows = outputRows;
          const heads = a.heads;
          a.heads = atOutputRows(heads, qd);
          gpu.release(heads);
          stream = atOutputRows(x, d);
        }
        // The stream after attention: m = x + attn in a sequential block; the parallel branches add
        // into `out` below.
        if (fuseAdd("attn")) {
          m = this.linear(a.heads, p + "attn.c_proj", Rb, qd, d, {
            out: trim ? stream : ownStream(x),
            beta: 1,
          });
        } else {
          a.attn = this.linear(a.heads, p + "attn.c_proj", Rb, qd, d);
          applyHooks(l, "attn", a.attn);
          let added = a.attn;
          if (cfg.postNorms) {
            a.attnNormStats = gpu.empty([Rb, 2]);
            added = a.attnNormed = this.norm(a.attn, p + "ln_attn_out", Rb, a.attnNormStats);
          }
          m = sequential ? add(gpu, stream, added, Rb * d, { out: gpu.empty([Rb, d]) }) : stream;
          if (sequential && trim) gpu.release(stream);
        }
        a.m = m;
        if (cfg.residual === "parallel_shared_norm") {
          a.ln2 = trim ? atOutputRows(a.ln1, d) : a.ln1;
          a.ln2Stats = a.ln1Stats;
        } else {
          a.ln2Stats = gpu.empty([Rb, 2]);
          a.ln2 = this.norm(m, p + "ln_2", Rb, a.ln2Stats);
        }
        if (cfg.mlp === "plain" && cfg.activation === "gelu_tanh" && !keep && unhooked("mlp_pre")) {
          key = this.linear(a.ln2, p + "mlp.c_fc", Rb, d, f, { gelu: true });
        } else {
          a.pre = this.linear(a.ln2, p + "mlp.c_fc", Rb, d, fcOut);
          applyHooks(l, "mlp_pre", a.pre);
          key = cfg.mlp === "gated"
            ? glu(gpu, a.pre, Rb, f, cfg.activation, { out: gpu.empty([Rb, f]) })
            : gelu(gpu, a.pre, Rb * f, { out: gpu.empty([Rb, f]), activation: cfg.activation });
        }
        a.key = key;
        applyHooks(l, "key", key);
      }
      let out: Tensor;
      if (fuseAdd("mlp")) {
        out = this.linear(key, p + "mlp.c_proj", Rb, f, d, { out: ownStream(m), beta: 1, grouped });
      } else {
        a.mlp = this.linear(key, p + "mlp.c_proj", Rb, f, d, { grouped });
        for (const v of virtual) applyVirtualEdit(gpu, a.mlp, key, v, Rb, f, d);
        applyHooks(l, "mlp", a.mlp);
        let added = a.mlp;
        if (cfg.postNorms) {
          a.mlpNormStats = gpu.empty([Rb, 2]);
          added = a.mlpNormed = this.norm(a.mlp, p + "ln_mlp_out", Rb, a.mlpNormStats);
        }
        out = add(gpu, m, added, Rb * d, { out: gpu.empty([Rb, d]) });
        if (!sequential) add(gpu, out, a.attnNormed ?? a.attn!, Rb * d, { out });
      }
      applyHooks(l, "resid", out);
      if (keep) {
        layers.push(a as LayerActivations);
      } else {
        releaseLayer(gpu, a, [out, ...borrowed]);
      }
      x = out;
    }

    // Final norm and unembedding only at the rows that are scored.
    // (After a trimmed last block x is at the outputRows already: a copy, which the caller may keep apart.)
    const n = outputRows.length;
    let selected: Tensor;
    if (trimmed) gpu.copy(x, selected = gpu.empty([n, d]));
    else selected = atOutputRows(x, d);
    if (headless) {
      if (!borrowed.includes(x)) gpu.release(x);
      gpu.release(suffixState?.offsets);
      return { logits: selected, outputRows, batch, hooks, startLayer: start, input: o.input };
    }
    const lnfStats = gpu.empty([n, 2]);
    const lnf = this.norm(selected, "ln_f", n, lnfStats);
    const logits = gpu.empty([n, cfg.vocabSize]);
    for (const c of this.head) {
      matmul(gpu, lnf, c.tensor, n, c.rows, d, {
        bias: c.bias,
        transB: true,
        weight: true,
        out: logits,
        ldc: cfg.vocabSize,
        outOffset: c.rowStart,
      });
    }
    if (cfg.finalSoftcap) softcap(gpu, logits, n * cfg.vocabSize, cfg.finalSoftcap);
    const result: ForwardResult = {
      logits,
      outputRows,
      batch,
      hooks,
      startLayer: start,
      input: o.input,
      resume,
      grouped,
    };
    if (keep) {
      result.acts = { embed: embedOut ?? o.input, layers, final: x, selected, lnf, lnfStats };
      result.suffix = suffixState;
    } else {
      if (!borrowed.includes(x)) gpu.release(x);
      gpu.release(selected, lnf, lnfStats, suffixState?.offsets);
    }
    return result;
  }

  /**
   * The forward with every hook site's state captured (TransformerLens's run_with_cache): the result
   * and a map from "embed" and "<site>.<layer>" ("attn.3", "mlp_pre.0", "key.5", "mlp.1", "resid.11")
   * to tensors [B*T, width] of every row. Release them with gpu.release when done.
   */
  forwardWithCache(
    batch: Batch,
    o: Omit<ForwardOptions, "hooks"> = {},
  ): { result: ForwardResult; cache: Map<string, Tensor> } {
    const R = batch.B * batch.T, rows = Array.from({ length: R }, (_, r) => r);
    const cache = new Map<string, Tensor>();
    const hooks: Hook[] = [];
    const capture = (site: Site, layer: number) => {
      const into = this.gpu.empty([R, this.siteWidth(site)]);
      cache.set(site === "embed" ? "embed" : `${site}.${layer}`, into);
      hooks.push({ site, layer, capture: { into, rows } });
    };
    if ((o.startLayer ?? 0) === 0 && !o.input) capture("embed", -1);
    for (let l = o.startLayer ?? 0; l < this.config.nLayer; l++) {
      for (const site of ["attn", "mlp_pre", "key", "mlp", "resid"] as const) capture(site, l);
    }
    return { result: this.forward(batch, { ...o, hooks }), cache };
  }

  /** Returns a forward's kept activations (and its logits) to the buffer pool. */
  releaseForward(r: ForwardResult): void {
    const gpu = this.gpu;
    gpu.release(r.logits);
    if (!r.acts) return;
    for (const a of r.acts.layers) releaseLayer(gpu, a, callersTensors(r));
    gpu.release(r.acts.final, r.acts.selected, r.acts.lnf, r.acts.lnfStats, r.suffix?.offsets);
    r.acts = undefined;
    r.suffix = undefined;
  }
}

/** The tensors a forward reads from its caller (its input, its resume point), which it never releases. */
function callersTensors(o: { input?: Tensor; resume?: ResumePoint }): (Tensor | undefined)[] {
  return [o.input, o.resume?.m, o.resume?.key, o.resume?.attn];
}

/** Returns a layer's activations to the pool, except the tensors in `keep` (the stream passed on, the
 *  caller's input). The same tensor may appear in several fields (GPT-J's ln2 is ln1, fused adds). */
function releaseLayer(gpu: Gpu, a: Partial<LayerActivations>, keep: (Tensor | undefined)[]): void {
  const all = new Set(Object.values(a).filter((t): t is Tensor => t instanceof Tensor));
  for (const t of keep) if (t) all.delete(t);
  for (const t of all) gpu.release(t);
}

function concat<T extends Float32Array | Uint16Array>(parts: T[]): T {
  if (parts.length === 1) return parts[0];
  const out = new (parts[0].constructor as new (n: number) => T)(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Refuses, before anything is read or allocated, a model whose weights cannot fit, at `bytesPerValue`
 * (4 for f32, 2 for a matrix kept in 16 bits): a tensor larger than one storage binding that cannot be
 * split by rows (the [V, d] matrices and [out, in] projections are), or weights over the memory a
 * software adapter has (the machine's memory; a real GPU's total memory is not exposed by WebGPU, and
 * allocation errors name it there).
 */
export function checkMemory(
  gpu: Gpu,
  config: ModelConfig,
  where: string,
  bytesPerValue: (name: string) => number = () => 4,
): void {
  const shapes = parameterShapes(config);
  const bytes = shapes.map(([name, shape]) =>
    [name, bytesPerValue(name) * shape.reduce((a, b) => a * b, 1)] as const
  );
  const limit = gpu.limits.maxStorageBufferBindingSize;
  for (const [i, [name, b]] of bytes.entries()) {
    const matrix = shapes[i][1].length === 2;
    const splittable = name === "wte.weight" || name === "lm_head.weight" ||
      (matrix && config.linearLayout === "out_in");
    if (b > limit && !splittable) {
      throw new ModelLoadError(
        `${where}: tensor ${name} needs ${(b / 2 ** 20).toFixed(0)} MiB, over the adapter's ` +
          `maxStorageBufferBindingSize of ${(limit / 2 ** 20).toFixed(0)} MiB`,
      );
    }
  }
  const total = bytes.reduce((s, [, b]) => s + b, 0);
  const memory = io().memoryBytes();
  if (gpu.info.software && memory !== null) {
    // Loading holds the CPU arrays and the adapter's copies at once.
    if (2 * total > memory) {
      throw new ModelLoadError(
        `${where}: the weights need ${(total / 2 ** 30).toFixed(1)} GiB (about twice that while ` +
          `loading), over this machine's ${(memory / 2 ** 30).toFixed(1)} GiB that the software adapter uses`,
      );
    }
  }
}

/** GPT-2-style random weights as CPU arrays (deterministic for the seed), for any family. */
export function randomWeights(
  config: GPT2Config | ModelConfig,
  seed: number,
  perturb: boolean,
): Map<string, Float32Array> {
  const cfg = resolveConfig(config);
  const draw = mulberry32((seed * 2654435761 + 12345) >>> 0);
  const uniform = () => draw() + 2 ** -33; // in (0, 1): the log below stays finite
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of parameterShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const isGain = /(ln_\w+|_norm)\.weight$/.test(name);
    const isBias = name.endsWith(".bias");
    const std = name.endsWith("c_proj.weight") ? 0.02 / Math.sqrt(2 * cfg.nLayer) : 0.02;
    const gain = 1 - cfg.normGainOffset; // Gemma's (1 + w) starts at w = 0
    for (let i = 0; i < n; i++) {
      if (isGain) a[i] = gain + (perturb ? 0.1 * normal() : 0);
      else if (isBias) a[i] = perturb ? 0.02 * normal() : 0;
      else a[i] = std * normal();
    }
    out.set(name, a);
  }
  return out;
}
