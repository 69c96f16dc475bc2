// Backward ops: the gradients of the forward ops in engine/ops.ts, as thin wrappers that record
// WGSL kernels (shaders/*_backward.wgsl, reduce.wgsl, crossentropy.wgsl); nothing is read back.
//
// Conventions:
//  - Gradients of parameters (dgamma, dbeta, dbias, dwte, dwpe) and of the residual stream (the
//    LayerNorm dx) ACCUMULATE into the tensor given, so micro-batches and branches add up; zero
//    them (zeroGrads in engine/optimizer.ts) before a fresh backward pass.
//  - Gradients of intermediate activations (GELU dx, attention dqkv, dlogits) are WRITTEN.
//  - An output that is not given is allocated zero-filled and returned.
//  - No float atomics: every reduction runs in a fixed order, so gradients are bit-reproducible.
//  - Weight gradients of y = x W + b are matmuls (engine/ops.ts): dW += x^T dy (transA, beta 1),
//    dx = dy W^T (transB); only the bias gradient needs a kernel here (biasBackward).
import type { Activation } from "./config.ts";
import { cdiv, Gpu, Tensor, uniforms } from "./gpu.ts";
import { evenBlockRows } from "./kernel_choice.ts";
import {
  ACTIVATION_CODE,
  attentionKernels,
  attentionMirrors,
  type AttentionOptions,
  attentionSettings,
  distinct,
  elementwise,
  grid1d,
  normExtent,
  type NormRows,
  placeholderTexture,
  queryRows,
  rowKernels,
  runRowsWorkgroup,
} from "./ops.ts";

/** Invocations per workgroup for row/column kernels: one llvmpipe SIMD vector. */
const WG = 8;
/** Invocations of the first stage of a squared norm (each strides over the tensor). */
const NORM_PARTS = 1024;

/** Throws a clear error when tensor `t` (named `what` in op `op`) is too small or of the wrong type. */
export function need(op: string, what: string, t: Tensor, size: number, dtype: "f32" | "u32" = "f32"): void {
  if (t.dtype !== dtype) throw new Error(`${op}: ${what} must be ${dtype}, got ${t.dtype}`);
  if (t.size < size) throw new Error(`${op}: ${what} has ${t.size} values, needs ${size}`);
}

/** Throws unless every named size is a positive integer. */
function positiveIntegers(op: string, sizes: Record<string, number>): void {
  for (const [name, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${name} must be a positive integer, got ${v}`);
  }
}

// Small constant tensors, made once per Gpu (like the zero bias in engine/ops.ts).
const constantsByGpu = new WeakMap<Gpu, { one: Tensor; placeholder: Tensor }>();

function constants(gpu: Gpu): { one: Tensor; placeholder: Tensor } {
  let c = constantsByGpu.get(gpu);
  // one: the default row weight (read with stride 0); placeholder: binds an output a kernel skips.
  if (!c) constantsByGpu.set(gpu, c = { one: gpu.tensor([1], [1]), placeholder: gpu.zeros([1]) });
  return c;
}

// ---------------------------------------------------------------- LayerNorm

/** The gradients of a LayerNorm (or RMSNorm): input, and weight and bias when they are learned. */
export interface LayernormGrads {
  /** Gradient of the input [R, C]. */
  dx: Tensor;
  /** Gradient of the weight [C] (when learned). */
  dgamma?: Tensor;
  /** Gradient of the bias [C] (LayerNorm with a learned bias). */
  dbeta?: Tensor;
}

/**
 * LayerNorm / RMSNorm backward. dy, x [R,C] (or at `rows` layout); gamma [C]; stats [R,2] = (mean, rstd)
 * saved by the forward. dx += input gradient. dgamma, dbeta [C] += parameter gradients, each only
 * when given (e.g. neither when only the input gradient is wanted). `rms` and `gainOffset` as in the
 * forward (engine/ops.ts layernorm).
 */
export function layernormBackward(
  gpu: Gpu,
  dy: Tensor,
  x: Tensor,
  gamma: Tensor,
  stats: Tensor,
  R: number,
  C: number,
  o: {
    dx?: Tensor;
    dgamma?: Tensor;
    dbeta?: Tensor;
    rms?: boolean;
    gainOffset?: number;
    rows?: NormRows;
    /** false: overwrite dx instead of adding to it. */
    accumulate?: boolean;
  } = {},
): LayernormGrads {
  const op = "layernormBackward";
  positiveIntegers(op, { R, C });
  const rows = o.rows ?? { G: 1, ld: C, off: 0 };
  const extent = normExtent(R, C, rows);
  const dx = o.dx ?? gpu.zeros([R, C]);
  need(op, "dy", dy, extent);
  need(op, "x", x, extent);
  need(op, "gamma", gamma, C);
  need(op, "stats", stats, 2 * R);
  need(op, "dx", dx, extent);
  const u = () => uniforms().u32(R, C).f32(o.gainOffset ?? 0).u32(rows.G, rows.ld, rows.off);
  const params = { WG, RMS: !!o.rms, ACCUMULATE: o.accumulate ?? true };
  // Four values per access where every row starts on a vec4 (the same values).
  const vec4 = C % 4 === 0 && rows.ld % 4 === 0 && rows.off % 4 === 0;
  gpu.run(
    gpu.pipeline(
      "layernorm_backward.wgsl",
      vec4 ? "layernorm_backward_input_vec4" : "layernorm_backward_input",
      params,
    ),
    [dy, x, stats, gamma, dx],
    [cdiv(R, WG)],
    u(),
  );
  if (o.dgamma || o.dbeta) {
    // One kernel computes both column sums; a gradient nobody asked for goes to pooled scratch.
    const dgamma = o.dgamma ?? gpu.empty([C]);
    const dbeta = o.dbeta ?? gpu.empty([C]);
    need(op, "dgamma", dgamma, C);
    need(op, "dbeta", dbeta, C);
    gpu.run(
      gpu.pipeline("layernorm_backward.wgsl", "layernorm_backward_params", params),
      [dy, x, stats, dgamma, dbeta],
      [cdiv(C, WG)],
      u(),
    );
    if (!o.dgamma) gpu.release(dgamma);
    if (!o.dbeta) gpu.release(dbeta);
  }
  return { dx, dgamma: o.dgamma, dbeta: o.dbeta };
}

// ---------------------------------------------------------------- GELU

/** MLP activation backward (default GPT-2's tanh GELU): dx[n] = dy * act'(x), x the pre-activation. Writes dx. */
export function geluBackward(
  gpu: Gpu,
  dy: Tensor,
  x: Tensor,
  n: number,
  o: { dx?: Tensor; activation?: Activation } = {},
): Tensor {
  positiveIntegers("geluBackward", { n });
  const dx = o.dx ?? gpu.zeros([n]);
  need("geluBackward", "dy", dy, n);
  need("geluBackward", "x", x, n);
  need("geluBackward", "dx", dx, n);
  // Four values per access where n allows (the same values).
  const vec4 = n % 4 === 0;
  const { params, grid } = elementwise(gpu, vec4 ? n / 4 : n);
  gpu.run(
    gpu.pipeline("gelu_backward.wgsl", vec4 ? "gelu_backward_vec4" : "gelu_backward", {
      ...params,
      ACT: ACTIVATION_CODE[o.activation ?? "gelu_tanh"],
    }),
    [dy, x, dx],
    grid,
    uniforms().u32(n, 0),
  );
  return dx;
}

/** Gated activation backward: x [R, 2F] = [gate | up], dy [R, F] the gradient of act(gate) * up.
 *  Writes dx [R, 2F]. */
export function gluBackward(
  gpu: Gpu,
  dy: Tensor,
  x: Tensor,
  R: number,
  F: number,
  activation: Activation,
  o: { dx?: Tensor } = {},
): Tensor {
  positiveIntegers("gluBackward", { R, F });
  const dx = o.dx ?? gpu.zeros([R, 2 * F]);
  need("gluBackward", "dy", dy, R * F);
  need("gluBackward", "x", x, 2 * R * F);
  need("gluBackward", "dx", dx, 2 * R * F);
  const { params, grid } = elementwise(gpu, R * F);
  gpu.run(
    gpu.pipeline("gelu_backward.wgsl", "glu_backward", { ...params, ACT: ACTIVATION_CODE[activation] }),
    [dy, x, dx],
    grid,
    uniforms().u32(R * F, F),
  );
  return dx;
}

/** Soft-cap backward in place: grad[i] *= 1 - (capped[i] / cap)^2, capped = cap * tanh(x / cap). */
export function softcapBackward(gpu: Gpu, grad: Tensor, capped: Tensor, n: number, cap: number): void {
  positiveIntegers("softcapBackward", { n });
  need("softcapBackward", "grad", grad, n);
  need("softcapBackward", "capped", capped, n);
  const { params, grid } = elementwise(gpu, n);
  gpu.run(
    gpu.pipeline("elementwise.wgsl", "softcap_backward", params),
    [grad, capped],
    grid,
    uniforms().u32(n).f32(cap),
  );
}

// ---------------------------------------------------------------- attention

/**
 * Causal self-attention backward. dy [B*T,d] is the gradient of the attention output (heads
 * concatenated, before the projection, d = nHead*hd); qkv [B*T, d + 2*nKvHead*hd] and probs
 * [B,nHead,T,T] are the forward's input and saved probabilities; the options are the forward's.
 * Writes dqkv (qkv's shape). `dscores` [B,nHead,T,T] is scratch for the score gradients (taken from
 * and given back to the Gpu's pool when not given). With `o.queries` (Tq rows per sequence, as the
 * forward had them): dy, qkv and dqkv hold B*Tq rows (the gradient of those rows' q, k and v; the
 * cached rows get none), probs and dscores are [B, nHead, Tq, T].
 */
export function attentionBackward(
  gpu: Gpu,
  dy: Tensor,
  qkv: Tensor,
  probs: Tensor,
  B: number,
  T: number,
  d: number,
  nHead: number,
  o: { dqkv?: Tensor; dscores?: Tensor } & AttentionOptions = {},
): Tensor {
  const op = "attentionBackward";
  const { nKvHead, hd, width, scale, softcap, Tq, offsets, cache, dqkv } = attentionBackwardSizes(
    gpu,
    op,
    dy,
    qkv,
    B,
    T,
    d,
    nHead,
    o,
  );
  need(op, "probs", probs, B * nHead * Tq * T);
  const dscores = o.dscores ?? gpu.empty([B, nHead, Tq, T]);
  need(op, "dscores", dscores, B * nHead * Tq * T);
  const u = () => uniforms().u32(B, T, nHead, nKvHead, hd).f32(scale, softcap).u32(Tq);
  // Both passes read dy, q, k and v (and cached keys and values) from texture mirrors where they can be
  // made (same bits).
  const mirrors = hd % 4 === 0
    ? attentionMirrors(gpu, B * Tq, [[qkv, width], [dy, d]], width, o.queries)
    : null;
  const textures = mirrors ?? [placeholderTexture(gpu), placeholderTexture(gpu), placeholderTexture(gpu)];
  // The whole file needs every compile-time parameter.
  const { backwardBlock, queryRows } = attentionKernels(gpu);
  const params = {
    WG,
    // Rows x columns of one gradient product per invocation: the adapter's register block, its rows
    // spread evenly over the row blocks it makes.
    TM: evenBlockRows(Tq, backwardBlock.TM),
    TN: backwardBlock.TN,
    // Query rows per invocation of pass 1 (the forward's choice).
    QB: evenBlockRows(Tq, queryRows),
    SOFTCAP: softcap > 0,
    OFFSETS: !!o.queries,
    TEXTURE: !!mirrors,
    HD_MAX4: Math.max(1, Math.floor(hd / 4)),
  };
  gpu.run(
    gpu.pipeline("attention_backward.wgsl", "attention_backward_scores", params),
    [dy, qkv, probs, offsets, cache, dscores, ...textures],
    [cdiv(B * nHead * cdiv(Tq, params.QB), WG)],
    u(),
  );
  gpu.run(
    gpu.pipeline("attention_backward.wgsl", "attention_backward_qkv", params),
    [dy, qkv, probs, offsets, cache, dscores, dqkv, ...textures],
    [cdiv(nHead * cdiv(hd, params.TN), WG), cdiv(Tq, params.TM), 3 * B],
    u(),
  );
  if (!o.dscores) gpu.release(dscores);
  return dqkv;
}

/**
 * attentionBackward from the rows' log-sum-exp lse [B, nHead, Tq] that attention wrote (its `lse`
 * option) instead of probabilities: the scores are recomputed from q and k, so no [Tq, T] tensor is
 * read or allocated (shaders/attention_backward_lse.wgsl). Same operands, options and result (dqkv,
 * written); `delta` [B, nHead, Tq] is scratch (from the Gpu's pool when not given).
 */
export function attentionBackwardLse(
  gpu: Gpu,
  dy: Tensor,
  qkv: Tensor,
  lse: Tensor,
  B: number,
  T: number,
  d: number,
  nHead: number,
  o: { dqkv?: Tensor; delta?: Tensor } & AttentionOptions = {},
): Tensor {
  const op = "attentionBackwardLse";
  const { nKvHead, hd, scale, softcap, window, Tq, offsets, cache, dqkv } = attentionBackwardSizes(
    gpu,
    op,
    dy,
    qkv,
    B,
    T,
    d,
    nHead,
    o,
  );
  need(op, "lse", lse, B * nHead * Tq);
  const delta = o.delta ?? gpu.empty([B, nHead, Tq]);
  need(op, "delta", delta, B * nHead * Tq);
  const u = () => uniforms().u32(B, T, nHead, nKvHead, window).f32(scale, softcap).u32(Tq);
  const params = { HD: hd, WG, SOFTCAP: softcap > 0, OFFSETS: !!o.queries };
  // Rows first (dq and each row's delta), then keys (dk, dv), which read the rows' delta.
  gpu.run(
    gpu.pipeline("attention_backward_lse.wgsl", "attention_backward_lse_rows", params),
    [dy, qkv, lse, offsets, cache, delta, dqkv],
    grid1d(gpu, cdiv(B * nHead * Tq, WG)),
    u(),
  );
  gpu.run(
    gpu.pipeline("attention_backward_lse.wgsl", "attention_backward_lse_keys", params),
    [dy, qkv, lse, offsets, cache, delta, dqkv],
    grid1d(gpu, cdiv(B * nKvHead * Tq, WG)),
    u(),
  );
  if (!o.delta) gpu.release(delta);
  return dqkv;
}

/** The checks and sizes both attention backwards share; allocates dqkv (zeros) when not given. */
function attentionBackwardSizes(
  gpu: Gpu,
  op: string,
  dy: Tensor,
  qkv: Tensor,
  B: number,
  T: number,
  d: number,
  nHead: number,
  o: { dqkv?: Tensor } & AttentionOptions,
) {
  const nKvHead = o.nKvHead ?? nHead;
  positiveIntegers(op, { B, T, d, nHead, nKvHead });
  if (!Number.isInteger(d / nHead)) throw new Error(`${op}: d=${d} is not a multiple of nHead=${nHead}`);
  if (nHead % nKvHead !== 0) throw new Error(`${op}: nHead=${nHead} is not a multiple of nKvHead=${nKvHead}`);
  const hd = d / nHead, width = d + 2 * nKvHead * hd;
  const [Tq, offsets, cache] = queryRows(gpu, op, B, T, width, o.queries);
  const dqkv = o.dqkv ?? gpu.zeros([B * Tq, width]);
  need(op, "dy", dy, B * Tq * d);
  need(op, "qkv", qkv, B * Tq * width);
  need(op, "dqkv", dqkv, B * Tq * width);
  return { nKvHead, hd, width, ...attentionSettings(hd, o), Tq, offsets, cache, dqkv };
}

// ---------------------------------------------------------------- embeddings

/**
 * Groups rows by token for the deterministic embedding backward, as one u32 array
 * [tokens: U | starts: U+1 | rows: R]: the U distinct tokens in increasing order, and token u's
 * rows (increasing) at rows[starts[u] .. starts[u+1]). Throws if a token is not in [0, V).
 */
export function tokenRows(
  tokens: ArrayLike<number>,
  R: number,
  V: number,
): { csr: Uint32Array; distinct: number } {
  if (tokens.length < R) {
    throw new Error(`embeddingBackward: tokens has ${tokens.length} values, needs R=${R}`);
  }
  const count = new Map<number, number>();
  for (let r = 0; r < R; r++) {
    const t = tokens[r];
    if (!Number.isInteger(t) || t < 0 || t >= V) {
      throw new Error(`embeddingBackward: tokens[${r}] = ${t} is not a token id in [0, ${V})`);
    }
    count.set(t, (count.get(t) ?? 0) + 1);
  }
  const distinct = [...count.keys()].sort((a, b) => a - b);
  const U = distinct.length;
  const csr = new Uint32Array(2 * U + 1 + R);
  const next = new Map<number, number>(); // token -> next free slot in rows
  let start = 0;
  distinct.forEach((t, u) => {
    csr[u] = t;
    csr[U + u] = start;
    next.set(t, start);
    start += count.get(t)!;
  });
  csr[2 * U] = R;
  const rows = 2 * U + 1;
  for (let r = 0; r < R; r++) {
    const slot = next.get(tokens[r])!;
    csr[rows + slot] = r;
    next.set(tokens[r], slot + 1);
  }
  return { csr, distinct: U };
}

/**
 * Embedding backward for out[r] = wte[tokens[r]] + wpe[r % T]. dout [R,C].
 * dwte [V,C] and dwpe [P,C] (P >= min(T,R)) accumulate; each is computed only when given.
 * tokens are a CPU array (the caller has them: they were uploaded for the forward) because the
 * rows of each token are grouped on the CPU, which keeps the GPU sums race-free and ordered.
 */
export function embeddingBackward(
  gpu: Gpu,
  dout: Tensor,
  tokens: ArrayLike<number>,
  R: number,
  T: number,
  C: number,
  o: { dwte?: Tensor; dwpe?: Tensor },
): { dwte?: Tensor; dwpe?: Tensor } {
  const op = "embeddingBackward";
  positiveIntegers(op, { R, T, C });
  if (!o.dwte && !o.dwpe) throw new Error(`${op}: give dwte and/or dwpe to accumulate into`);
  need(op, "dout", dout, R * C);
  if (o.dwte) {
    const V = Math.floor(o.dwte.size / C);
    need(op, "dwte", o.dwte, C);
    const { csr, distinct } = tokenRows(tokens, R, V);
    // Uploaded with the recorded work (no flush), destroyed after the submit.
    const csrTensor = gpu.upload([csr.length], csr, "u32");
    gpu.run(
      gpu.pipeline("embedding_backward.wgsl", "embedding_backward_tokens", { WG }),
      [dout, csrTensor, o.dwte],
      [cdiv(C, WG), distinct],
      uniforms().u32(R, T, C, distinct),
    );
  }
  if (o.dwpe) {
    const P = Math.min(T, R);
    need(op, "dwpe", o.dwpe, P * C);
    gpu.run(
      gpu.pipeline("embedding_backward.wgsl", "embedding_backward_positions", { WG }),
      [dout, o.dwpe],
      [cdiv(C, WG), P],
      uniforms().u32(R, T, C, 0),
    );
  }
  return { dwte: o.dwte, dwpe: o.dwpe };
}

// ---------------------------------------------------------------- reductions

/** Bias gradient of y = xW + b: dbias[N] += column sums of dy [R,N] (rows in order). */
export function biasBackward(gpu: Gpu, dy: Tensor, R: number, N: number, o: { dbias?: Tensor } = {}): Tensor {
  positiveIntegers("biasBackward", { R, N });
  const dbias = o.dbias ?? gpu.zeros([N]);
  need("biasBackward", "dy", dy, R * N);
  need("biasBackward", "dbias", dbias, N);
  gpu.run(
    gpu.pipeline("reduce.wgsl", "column_sum", { WG }),
    [dy, dbias],
    [cdiv(N, WG)],
    uniforms().u32(R, N),
  );
  return dbias;
}

/**
 * out[0] = sum of squares of the first `size` values of every tensor (a squared global L2 norm),
 * in a fixed order: per tensor, min(size, 1024) strided partial sums, then one ordered total.
 */
export function sumOfSquares(
  gpu: Gpu,
  parts: { tensor: Tensor; size: number }[],
  o: { out?: Tensor } = {},
): Tensor {
  const out = o.out ?? gpu.zeros([1]);
  need("sumOfSquares", "out", out, 1);
  const counts = parts.map((p) => Math.min(NORM_PARTS, p.size));
  const total = counts.reduce((a, b) => a + b, 0);
  const partials = gpu.empty([total]);
  const squares = gpu.pipeline("reduce.wgsl", "sum_squares", { WG });
  let offset = 0;
  parts.forEach((p, i) => {
    need("sumOfSquares", `tensor ${i}`, p.tensor, p.size);
    gpu.run(squares, [p.tensor, partials], [cdiv(counts[i], WG)], uniforms().u32(p.size, counts[i], offset));
    offset += counts[i];
  });
  gpu.run(gpu.pipeline("reduce.wgsl", "sum_all", { WG }), [partials, out], [1], uniforms().u32(total));
  gpu.release(partials);
  return out;
}

// ---------------------------------------------------------------- loss

/** Outputs and weighting of the fused softmax cross-entropy kernel. */
export interface CrossEntropyOptions {
  /** [R] per-row losses -log softmax(logits)[target] (unweighted; 0 on masked rows). */
  losses?: Tensor;
  /** [R,V]: when given, written with scale * w_r * (softmax - onehot(target)). */
  dlogits?: Tensor;
  /** [R] per-row weights; 0 masks a row (its target is then never read). Default all 1. */
  weights?: Tensor;
  /** Gradient scale, e.g. 1/R for a mean loss. Default 1. */
  scale?: number;
}

/**
 * Fused softmax + cross-entropy over logits [R,V] with u32 targets [R]. A weighted row whose
 * target is >= V yields NaN (loss and gradient) rather than reading out of bounds.
 */
export function crossEntropy(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  R: number,
  V: number,
  o: CrossEntropyOptions = {},
): { losses: Tensor; dlogits?: Tensor } {
  const op = "crossEntropy";
  positiveIntegers(op, { R, V });
  const losses = o.losses ?? gpu.zeros([R]);
  need(op, "logits", logits, R * V);
  need(op, "targets", targets, R, "u32");
  need(op, "losses", losses, R);
  if (o.weights) need(op, "weights", o.weights, R);
  if (o.dlogits) need(op, "dlogits", o.dlogits, R * V);
  const { one, placeholder } = constants(gpu);
  const u = uniforms().u32(R, V, o.weights ? 1 : 0, o.dlogits ? 1 : 0).f32(o.scale ?? 1);
  const buffers = [logits, targets, o.weights ?? one, losses, o.dlogits ?? placeholder];
  if (rowKernels(gpu) === "workgroup") runRowsWorkgroup(gpu, "cross_entropy_rows", buffers, R, u);
  else gpu.run(gpu.pipeline("crossentropy.wgsl", "cross_entropy", { WG }), buffers, [cdiv(R, WG)], u);
  return { losses, dlogits: o.dlogits };
}

/** One target-token row of a rewrite prompt, for rewriteWeights. */
export interface RewriteRow {
  /** The prompt's first target row in `losses`. */
  first: number;
  /** Its target rows: [first, first + count). */
  count: number;
  /** d objective / d NLL of the prompt for an "increase" objective (0 leaves the row out). */
  scale: number;
  /** The prompt's objective is -log(1 - p) (p = exp(-NLL)), not NLL. */
  decrease: boolean;
}

/**
 * The cross-entropy weights of the v* and z objective's target-token rows (shaders/value_loss.wgsl): row i
 * gets scale_i, or for a "decrease" prompt scale_i * -q / (1 - q) with q = min(exp(-NLL), 1 - 1e-7) and
 * NLL the mean of its prompt's losses. Written into `weights` [rows.length].
 */
export function rewriteWeights(gpu: Gpu, losses: Tensor, rows: RewriteRow[], weights: Tensor): void {
  const op = "rewriteWeights";
  if (rows.length === 0) return;
  need(op, "weights", weights, rows.length);
  const words = new Uint32Array(4 * rows.length), floats = new Float32Array(words.buffer);
  rows.forEach((r, i) => {
    if (!(Number.isInteger(r.first) && r.first >= 0 && Number.isInteger(r.count) && r.count >= 1)) {
      throw new Error(`${op}: row ${i} has target rows [${r.first}, ${r.first}+${r.count})`);
    }
    need(op, "losses", losses, r.first + r.count);
    words[4 * i] = r.first;
    words[4 * i + 1] = r.count;
    floats[4 * i + 2] = r.scale;
    words[4 * i + 3] = r.decrease ? 1 : 0;
  });
  const table = gpu.upload([words.length], words, "u32");
  gpu.run(
    gpu.pipeline("value_loss.wgsl", "rewrite_weights", { WG }),
    [losses, table, weights],
    [cdiv(rows.length, WG)],
    uniforms().u32(rows.length),
  );
}

/**
 * d (factor_j * KL(softmax(x_j) || softmax(x0_j))) / d x_j for n rows of logits [*, V] (rows
 * logitsRow0 + j) against reference logits x0 (rows referenceRows[j] of `reference`), written into rows
 * dlogitsRow0 + j of `dlogits` (shaders/value_loss.wgsl). Exactly 0 where x_j equals its reference.
 */
export function klGradient(
  gpu: Gpu,
  logits: Tensor,
  reference: Tensor,
  V: number,
  rows: { referenceRow: number; factor: number }[],
  dlogits: Tensor,
  o: { logitsRow0?: number; dlogitsRow0?: number } = {},
): void {
  const op = "klGradient";
  if (rows.length === 0) return;
  const [logitsRow0, dlogitsRow0] = [o.logitsRow0 ?? 0, o.dlogitsRow0 ?? 0];
  need(op, "logits", logits, (logitsRow0 + rows.length) * V);
  need(op, "dlogits", dlogits, (dlogitsRow0 + rows.length) * V);
  const words = new Uint32Array(2 * rows.length), floats = new Float32Array(words.buffer);
  rows.forEach((r, j) => {
    need(op, "reference", reference, (r.referenceRow + 1) * V);
    words[2 * j] = r.referenceRow;
    floats[2 * j + 1] = r.factor;
  });
  distinct(op, dlogits, { logits, reference });
  gpu.run(
    gpu.pipeline("value_loss.wgsl", "kl_gradient", { WG }),
    [logits, reference, gpu.upload([words.length], words, "u32"), dlogits],
    [cdiv(rows.length, WG)],
    uniforms().u32(rows.length, V, logitsRow0, dlogitsRow0),
  );
}
