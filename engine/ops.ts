// Forward ops: thin TypeScript wrappers that record one WGSL kernel each.
// Every op takes GPU tensors, allocates (or writes into) its output, and records work on
// the Gpu's shared encoder; nothing is read back. Shapes are given in each comment; R = rows
// (batch * tokens), all tensors row-major.
import type { Activation } from "./config.ts";
import { cdiv, type Dtype, Gpu, type KernelParams, Tensor, type TensorWindow, uniforms } from "./gpu.ts";
import {
  type AttentionKernels,
  type AttentionSaved,
  evenBlockRows,
  type MatmulTiles,
  type RowKernels,
  ROWS_WORKGROUP,
} from "./kernel_choice.ts";

/** Invocations per workgroup of kernels with one row (or one attention query) per invocation:
 *  8 = one llvmpipe SIMD vector, so that even 16 rows make 2 workgroups for llvmpipe's 2 threads. */
const ROW_WG = 8;
/** Invocations per workgroup of elementwise kernels: 64 halves their time on llvmpipe compared
 *  with 8, by paying its per-workgroup cost 8x less often (bench/kernels.ts). */
export const ELEMENT_WG = 64;
/** Values per invocation of the elementwise kernels that import shaders/elements.wgsl (GELU and its
 *  backward, additions, Adam, fills, embeddings): on llvmpipe 8 ran GELU over 65k-300k values 2-2.5x
 *  faster than 1 (an invocation's fixed cost, its index and bounds checks, was most of the time); on a
 *  GPU each lane then covers 8 values WG apart, still coalesced. */
export const ELEMENTS_PER_INVOCATION = 8;

/** The compile-time parameters (WG, PER) and grid of an elementwise kernel over n values
 *  (shaders/elements.wgsl). */
export function elementwise(
  gpu: Gpu,
  n: number,
): { params: { WG: number; PER: number }; grid: [number, number] } {
  return {
    params: { WG: ELEMENT_WG, PER: ELEMENTS_PER_INVOCATION },
    grid: grid1d(gpu, cdiv(n, ELEMENT_WG * ELEMENTS_PER_INVOCATION)),
  };
}

/**
 * Workgroup grid for `groups` workgroups of a 1-D kernel: x up to the per-dimension limit, the rest
 * in y. Kernels recover the flat workgroup index as wid.y * num_workgroups.x + wid.x and skip the
 * few extra invocations of the last row.
 */
export function grid1d(gpu: Gpu, groups: number): [number, number] {
  const maxX = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= maxX) return [groups, 1];
  const y = cdiv(groups, maxX);
  return [cdiv(groups, y), y];
}

const placeholders = new WeakMap<Gpu, Tensor>();
/** A 1-element zero tensor bound in place of a switched-off operand (no bias, no stats, no probs).
 *  Kernels never write it, so it stays zero and reads of it (bias) add nothing. */
function placeholder(gpu: Gpu): Tensor {
  let z = placeholders.get(gpu);
  if (!z) placeholders.set(gpu, z = gpu.zeros([1]));
  return z;
}

const placeholderTextures = new WeakMap<Gpu, GPUTextureView>();
/** A 1x1 rgba32float texture bound in place of a switched-off texture operand (never read). */
export function placeholderTexture(gpu: Gpu): GPUTextureView {
  let v = placeholderTextures.get(gpu);
  if (!v) {
    const texture = gpu.device.createTexture({
      size: [1, 1],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    });
    placeholderTextures.set(gpu, v = texture.createView());
  }
  return v;
}

/**
 * Texture mirrors of activation operands, each the first [rows, cols] of its tensor, where the matmuls
 * read activations from textures (CPU adapters: see MatmulTiles.texture) and each fits one texture of
 * whole 64-float rows within the mirror budget; null otherwise (the kernels then read the buffers,
 * which gives the same bits).
 */
function activationMirrors(
  gpu: Gpu,
  rows: number,
  operands: [Tensor, number][],
): GPUTextureView[] | null {
  const tiles = matmulTiles(gpu).texture;
  if (!tiles || tiles.activations === false) return null;
  return operands.every(([t, cols]) => fitsWholeMirror(gpu, t, rows, cols))
    ? operands.map(([t, cols]) => gpu.mirror(t, rows, cols)[0].view)
    : null;
}

/**
 * Whether `t`'s [rows, cols] can be read from one stored texture mirror here: the adapter's kernels
 * read textures, the matrix fits one texture (a mirror's rows whole multiples of 64 floats) and the
 * mirror budget (engine/gpu.ts mirror()).
 */
export function fitsWholeMirror(gpu: Gpu, t: Tensor, rows: number, cols: number): boolean {
  return !!matmulTiles(gpu).texture && rows <= gpu.limits.maxTextureDimension2D &&
    gpu.canMirror(t, rows, cols);
}

/**
 * Texture mirrors for the attention kernels, forward and backward: `operands` (each [rows, cols], rows =
 * B * Tq) and then the cache of `queries` (a forward after a cached prefix), or a placeholder without
 * queries; null where any cannot be made. A cache is mirrored only for several query rows per sequence
 * (v* and z, whose cache serves every step), not for generation's one new token (its cache grows every
 * token).
 */
export function attentionMirrors(
  gpu: Gpu,
  rows: number,
  operands: [Tensor, number][],
  width: number,
  queries?: { Tq: number; cache: Tensor },
): GPUTextureView[] | null {
  if (queries && queries.Tq < 2) return null;
  const own = activationMirrors(gpu, rows, operands);
  if (!own) return null;
  if (!queries) return [...own, placeholderTexture(gpu)];
  const cached = activationMirrors(gpu, Math.floor(queries.cache.size / width), [[queries.cache, width]]);
  return cached ? [...own, ...cached] : null;
}

/** Throws unless `t` holds at least `count` values of type `dtype`. */
function need(op: string, name: string, t: Tensor, count: number, dtype: "f32" | "u32" = "f32"): void {
  if (t.dtype !== dtype) {
    throw new Error(`${op}: ${name} must be a ${dtype} tensor, got ${t.dtype} [${t.shape}]`);
  }
  if (t.size < count) throw new Error(`${op}: ${name} [${t.shape}] has ${t.size} values, needs ${count}`);
}

/** Throws if `out` is also one of the inputs: WebGPU cannot bind one buffer as both read and
 *  read_write in a dispatch (it would drop the dispatch with only a console warning). */
export function distinct(op: string, out: Tensor, inputs: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(inputs)) {
    if (t === out) throw new Error(`${op}: the output must not be the input ${name} (no in-place variant)`);
  }
}

/** Throws unless every named size is a positive integer. */
function positive(op: string, sizes: Record<string, number>): void {
  for (const [name, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${name} must be a positive integer, got ${v}`);
  }
}

// ---------------------------------------------------------------- matmul

export type { MatmulTiles, RowKernels };

/** Tiles set by setMatmulTiles (benchmarks and tests), in place of the adapter's choice. */
const tilesByGpu = new WeakMap<Gpu, MatmulTiles>();

/** The matmul tiles in use: the adapter's (engine/kernel_choice.ts chooses them) unless set. */
export function matmulTiles(gpu: Gpu): MatmulTiles {
  return tilesByGpu.get(gpu) ?? gpu.kernels.matmul;
}

const rowKernelsByGpu = new WeakMap<Gpu, RowKernels>();

/** How row kernels run on this adapter (engine/kernel_choice.ts chooses), unless set by setRowKernels. */
export function rowKernels(gpu: Gpu): RowKernels {
  return rowKernelsByGpu.get(gpu) ?? gpu.kernels.rows;
}

/** Overrides rowKernels' choice for this adapter (tests and benchmarks). */
export function setRowKernels(gpu: Gpu, kernels: RowKernels): void {
  rowKernelsByGpu.set(gpu, kernels);
}

const attentionKernelsByGpu = new WeakMap<Gpu, AttentionKernels>();

/** How the attention kernels spread their work on this adapter (engine/kernel_choice.ts chooses), unless
 *  set by setAttentionKernels. */
export function attentionKernels(gpu: Gpu): AttentionKernels {
  return attentionKernelsByGpu.get(gpu) ?? gpu.kernels.attention;
}

/** Overrides attentionKernels' choice for this adapter (tests and benchmarks). */
export function setAttentionKernels(gpu: Gpu, kernels: AttentionKernels): void {
  const { queryRows, backwardBlock: { TM, TN } } = kernels;
  if (![queryRows, TM, TN].every((x) => Number.isInteger(x) && x >= 1) || TN % 4 !== 0) {
    throw new Error(
      `setAttentionKernels: query rows and block sizes must be positive integers, TN a multiple of 4; got ${
        JSON.stringify(kernels)
      }`,
    );
  }
  attentionKernelsByGpu.set(gpu, kernels);
}

const attentionSavedByGpu = new WeakMap<Gpu, AttentionSaved>();

/** What attention keeps for a backward: the probabilities (long prompts may still switch to "lse", see
 *  attentionSaves), unless set by setAttentionSaved. */
export function attentionSaved(gpu: Gpu): AttentionSaved {
  return attentionSavedByGpu.get(gpu) ?? "probs";
}

/** Overrides attentionSaved's choice for this adapter (tests and benchmarks). */
export function setAttentionSaved(gpu: Gpu, saved: AttentionSaved): void {
  attentionSavedByGpu.set(gpu, saved);
}

/** Dispatches an entry point of shaders/rows_workgroup.wgsl over R rows, one workgroup per row. */
export function runRowsWorkgroup(
  gpu: Gpu,
  entry: string,
  buffers: Tensor[],
  R: number,
  u: ReturnType<typeof uniforms>,
  flags: { RMS?: boolean; HAS_BETA?: boolean; WITH_STATS?: boolean } = {},
): void {
  // The module is compiled whole: every entry point needs every flag.
  const params = {
    WG: ROWS_WORKGROUP,
    RMS: !!flags.RMS,
    HAS_BETA: !!flags.HAS_BETA,
    WITH_STATS: !!flags.WITH_STATS,
  };
  gpu.run(gpu.pipeline("rows_workgroup.wgsl", entry, params), buffers, grid1d(gpu, R), u);
}

/** Overrides the matmul tile sizes chosen for this adapter (benchmarks and tests). */
export function setMatmulTiles(gpu: Gpu, tiles: MatmulTiles): void {
  positive("setMatmulTiles", {
    TM: tiles.TM,
    TN: tiles.TN,
    WG_X: tiles.WG_X,
    WG_Y: tiles.WG_Y,
    BK: tiles.BK ?? 8,
    splitK: tiles.splitK ?? 1,
    ...(tiles.texture
      ? { textureTM: tiles.texture.TM, textureTN: tiles.texture.TN, textureWG: tiles.texture.WG }
      : {}),
    ...(tiles.texture?.transposed
      ? {
        transposedTM: tiles.texture.transposed.TM,
        transposedTN: tiles.texture.transposed.TN,
        transposedWG: tiles.texture.transposed.WG,
      }
      : {}),
  });
  const blocks = [["texture", tiles.texture], ["texture.transposed", tiles.texture?.transposed]] as const;
  for (const [name, block] of blocks) {
    if (block && block.TN % 4 !== 0) {
      throw new Error(`setMatmulTiles: ${name}.TN must be a multiple of 4, got ${block.TN}`);
    }
  }
  tilesByGpu.set(gpu, tiles);
}

/** Layouts, epilogue (bias, alpha, beta, GELU), batching and output placement of one matmul. */
export interface MatmulOptions {
  /** A is stored transposed: [K, M] read as [M, K]. */
  transA?: boolean;
  /** B is stored transposed: [N, K] read as [K, N] (nn.Linear weights). */
  transB?: boolean;
  /** [N], added to every row of C. */
  bias?: Tensor;
  /** Scale of the product AB (default 1). */
  alpha?: number;
  /** C = alpha*AB + bias + beta*C; beta=1 accumulates into an existing `out` (gradients, residual adds). */
  beta?: number;
  /** C = gelu_new(alpha*AB + bias + beta*C): the MLP's activation fused into c_fc's epilogue. */
  gelu?: boolean;
  /** Where C is written (default: a new tensor). */
  out?: Tensor;
  /** Batched product: `batch` independent products with element strides (0 = shared operand). */
  batch?: number;
  /** Element strides between the batch's A, B and C operands. */
  strides?: { a: number; b: number; c: number };
  /** Row stride of C (default N) and element offset of C[0,0]: write into a column slice. */
  ldc?: number;
  /** Element offset of C[0,0] in `out` (default 0). */
  outOffset?: number;
  /**
   * B is a model weight: read by many products and rarely written. Adapters whose tiles set
   * `texture` then read it from a texture mirror (engine/gpu.ts mirror()), kept current for edits,
   * as long as the mirrors fit in gpu.mirrorBudgetBytes (else from its buffer).
   */
  weight?: boolean;
}

/** The entry points of the matmul shaders (shaders/matmul.wgsl describes each). */
export type MatmulKernel =
  | "matmul"
  | "matmul_half"
  | "matmul_vec4_n"
  | "matmul_vec4_k"
  | "matmul_tiled"
  | "matmul_texture_n"
  | "matmul_texture_k"
  | "matmul_texture_kt"
  | "matmul_texture_tn";

/**
 * The entry point of shaders/matmul.wgsl that `matmul` records for these operands with the current
 * tiles: the vec4 kernels need 16-byte aligned rows along the vector direction. `M` (C's rows) matters
 * only to a transposed A (matmul_texture_tn, which mirrors A whole); without it that kernel is not
 * considered.
 */
export function matmulKernel(
  gpu: Gpu,
  N: number,
  K: number,
  o: MatmulOptions = {},
  M?: number,
): MatmulKernel {
  const t = matmulTiles(gpu);
  const maxDim = gpu.limits.maxTextureDimension2D;
  if (
    t.texture && t.texture.activations !== false && t.texture.TM % 4 === 0 && (o.batch ?? 1) === 1 &&
    o.transA && !o.transB && M !== undefined &&
    M % 64 === 0 && N % 64 === 0 && Math.max(M, N) / 4 <= maxDim && K <= maxDim
  ) {
    // A weight gradient X^T dY: both operands mirrored whole ([K, M] and [K, N], rows of 64 floats).
    return "matmul_texture_tn";
  }
  if (o.weight && t.texture && (o.batch ?? 1) === 1 && !o.transA && uniformWindowRows(gpu, K) > 0) {
    // The mirror copies whole rows: the stored row length must be a multiple of 64 floats.
    if (!o.transB && N % 64 === 0 && N / 4 <= maxDim && K <= maxDim) return "matmul_texture_n";
    // B^T [K, N] in one transposed mirror (K % 64 == 0 already: A's windows need it), bound whole to
    // the kernel that writes it; any N (a last texel of fewer than 4 columns is padded: the tied
    // unembedding of a vocabulary like the embedded model's 451 tokens).
    if (
      o.transB && t.texture.transposed && Math.ceil(N / 4) <= maxDim && K <= maxDim &&
      4 * N * K <= gpu.limits.maxStorageBufferBindingSize
    ) return "matmul_texture_kt";
    if (o.transB && K % 64 === 0 && K / 4 <= maxDim) return "matmul_texture_k";
  }
  if (t.strategy === "workgroup") return "matmul_tiled";
  if (t.vec4 === false) return "matmul";
  const s = o.strides ?? { a: 0, b: 0, c: 0 };
  if (t.TN % 4 !== 0) return "matmul";
  if (!o.transB && N % 4 === 0 && s.b % 4 === 0) return "matmul_vec4_n";
  if (!o.transA && o.transB && K % 4 === 0 && s.a % 4 === 0 && s.b % 4 === 0) return "matmul_vec4_k";
  return "matmul";
}

/**
 * The shader of matmul_half for a 16-bit B: f16 read natively where the adapter's kernels say so
 * (engine/kernel_choice.ts: it has shader-f16), otherwise (and always for bf16, which WGSL has no type
 * for) unpacked from u32 words.
 */
export function halfMatmulShader(gpu: Gpu, dtype: Dtype): "matmul_f16.wgsl" | "matmul_half.wgsl" {
  return dtype === "f16" && gpu.kernels.nativeF16 ? "matmul_f16.wgsl" : "matmul_half.wgsl";
}

/**
 * Rows of A [., K] in one uniform window of the texture kernels: a power of two (so that register
 * blocks divide it) whose bytes fit maxUniformBufferBindingSize; 0 when not even one row fits or a
 * row's bytes are not a multiple of the uniform offset alignment (windows start at row boundaries).
 */
function uniformWindowRows(gpu: Gpu, K: number): number {
  const rowBytes = 4 * K;
  if (rowBytes % gpu.limits.minUniformBufferOffsetAlignment !== 0) return 0;
  const rows = Math.floor(gpu.limits.maxUniformBufferBindingSize / rowBytes);
  return rows < 1 ? 0 : 2 ** Math.floor(Math.log2(rows));
}

/**
 * Slices of K that a matmul_tiled product of this shape runs with the current tiles (MatmulTiles.splitK):
 * the largest power of two that keeps the workgroups (tiles x slices) within splitK, each slice at
 * least 4 k-tiles deep and the partial sums within one storage binding; 1 = no split.
 */
export function matmulSplitK(gpu: Gpu, M: number, N: number, K: number, batch = 1): number {
  const t = matmulTiles(gpu);
  if (!t.splitK) return 1;
  const tiles = cdiv(M, t.TM * t.WG_X) * cdiv(N, t.TN * t.WG_Y) * batch;
  const minSliceDepth = 4 * (t.BK ?? 8);
  const fits = (s: number) =>
    4 * s * batch * M * N <= gpu.limits.maxStorageBufferBindingSize &&
    s * batch <= gpu.limits.maxComputeWorkgroupsPerDimension;
  let slices = 1;
  while (2 * slices * tiles <= t.splitK && 2 * slices * minSliceDepth <= K && fits(2 * slices)) slices *= 2;
  return slices;
}

/** Smallest power of two >= n. */
function pow2AtLeast(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

/**
 * C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + bias[N] (+ beta*C).
 * A is [M,K] or, with transA, [K,M]; B is [K,N] or, with transB, [N,K].
 */
export function matmul(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  M: number,
  N: number,
  K: number,
  o: MatmulOptions = {},
): Tensor {
  const batch = o.batch ?? 1;
  const strides = o.strides ?? { a: 0, b: 0, c: M * N };
  const out = o.out ?? gpu.zeros(batch > 1 ? [batch, M, N] : [M, N]);
  const ldc = o.ldc ?? N;
  const outOffset = o.outOffset ?? 0;
  const last = batch - 1;
  if (
    a.size < last * strides.a + M * K || b.size < last * strides.b + K * N ||
    out.size < outOffset + last * strides.c + (M - 1) * ldc + N
  ) {
    throw new Error(
      `matmul: operands [${a.shape}] x [${b.shape}] -> [${out.shape}] too small for M=${M} N=${N} K=${K}`,
    );
  }
  distinct("matmul", out, o.bias ? { a, b, bias: o.bias } : { a, b });
  const t = matmulTiles(gpu);
  // A weight kept in 16 bits (f16/bf16 checkpoints): the scalar kernel that converts it as it loads.
  const half = b.dtype === "f16" || b.dtype === "bf16";
  if (half && o.transA) throw new Error("matmul: a 16-bit B needs an untransposed A");
  if (a.dtype !== "f32" || out.dtype !== "f32") throw new Error("matmul: A and C must be f32");
  let kernel = half ? "matmul_half" : matmulKernel(gpu, N, K, o, M);
  if (kernel === "matmul_texture_tn") {
    // One tensor as both operands (a second moment K^T K) reads one mirror; in two shapes it would need two.
    if (gpu.canMirror(a, K, M) && gpu.canMirror(b, K, N) && (a !== b || M === N)) {
      matmulTextureTn(gpu, a, b, out, M, N, K, o, t.texture!);
      return out;
    }
    kernel = matmulKernel(gpu, N, K, o); // over the mirror budget
  }
  if (kernel === "matmul_texture_kt") {
    if (gpu.canMirror(b, N, K, "transposed")) {
      matmulTexture(gpu, kernel, a, b, out, M, N, K, o, t.texture!.transposed!);
      return out;
    }
    kernel = "matmul_texture_k"; // over the mirror budget: B's stored mirror, if that fits
  }
  if (kernel === "matmul_texture_n" || kernel === "matmul_texture_k") {
    const [rows, cols] = kernel === "matmul_texture_k" ? [N, K] : [K, N];
    if (gpu.canMirror(b, rows, cols)) {
      matmulTexture(gpu, kernel, a, b, out, M, N, K, o, t.texture!);
      return out;
    }
    kernel = matmulKernel(gpu, N, K, { ...o, weight: false }); // over the mirror budget
  }
  let [TM, TN] = [t.TM, t.TN];
  if (kernel === "matmul_half" && t.strategy === "workgroup") [TM, TN] = [4, 4];
  else if (kernel !== "matmul_tiled") {
    // A register block taller than M would only compute clamped duplicates (M = 1 for the last
    // token): shrink it, and spend up to 4x the freed accumulators on more columns instead.
    TM = Math.min(t.TM, pow2AtLeast(M));
    TN = t.TN * Math.min(4, Math.floor(t.TM / TM));
    if ((kernel === "matmul_vec4_n" || kernel === "matmul_vec4_k") && M > 4 && M <= 2 * t.TM) {
      // Few rows (FT-L's grouped products: 5-16 rows per weight copy): one block of exactly the M rows
      // and twice the columns, so that B is read once, by no block of clamped duplicate rows
      // (bench/RESULTS.md: 1.3-1.9x on llvmpipe). Each sum runs over K in the same order whatever the
      // block: the same bits.
      [TM, TN] = [M, 2 * t.TN];
    }
  }
  const ksplit = kernel === "matmul_tiled" ? matmulSplitK(gpu, M, N, K, batch) : 1;
  const params: KernelParams = {
    TM,
    TN,
    WG_X: t.WG_X,
    WG_Y: t.WG_Y,
    BK: t.BK ?? 8,
    KSPLIT: ksplit,
    TRANS_A: !!o.transA,
    GELU: !!o.gelu,
    ACT: 0, // activation.wgsl's selector; the fused epilogue is gelu_new
    TRANS_B: !!o.transB,
    HALF_BF16: b.dtype === "bf16",
  };
  const columnsPerInvocation = kernel === "matmul_vec4_k" ? TN / 4 : TN;
  const u = uniforms().u32(M, N, K, o.bias ? 1 : 0).f32(o.alpha ?? 1, o.beta ?? 0)
    .u32(strides.a, strides.b, strides.c, ldc, outOffset);
  if (ksplit > 1) {
    // Split-K: the slices' partial sums [batch * ksplit, M, N], then their sum with the epilogue.
    const partials = gpu.empty([batch * ksplit * M * N]);
    const bias = o.bias ?? placeholder(gpu);
    gpu.run(
      gpu.pipeline("matmul.wgsl", kernel, params),
      [a, b, bias, partials],
      [cdiv(M, TM * t.WG_X), cdiv(N, TN * t.WG_Y), batch * ksplit],
      u,
    );
    gpu.run(
      gpu.pipeline("matmul.wgsl", "matmul_split_reduce", params),
      [partials, null, bias, out],
      [cdiv(N, t.WG_X), cdiv(M, t.WG_Y), batch],
      u,
    );
    gpu.release(partials);
    return out;
  }
  // matmul_vec4_n writes C four values at a time where C's rows and batches start on a vec4.
  const c4 = kernel === "matmul_vec4_n" && ldc % 4 === 0 && outOffset % 4 === 0 && strides.c % 4 === 0;
  gpu.run(
    gpu.pipeline(
      kernel === "matmul_half" ? halfMatmulShader(gpu, b.dtype) : "matmul.wgsl",
      c4 ? "matmul_vec4_n_c4" : kernel,
      params,
    ),
    [a, b, o.bias ?? placeholder(gpu), out],
    [cdiv(M, TM * t.WG_X), cdiv(N, columnsPerInvocation * t.WG_Y), batch],
    u,
  );
  return out;
}

/**
 * The texture kernels of `matmul`: B is read from its mirror (B^T from its transposed mirror for
 * matmul_texture_kt), one dispatch per texture chunk (the rows of a transposed B taller than the
 * texture limit, i.e. the columns of C they produce).
 */
function matmulTexture(
  gpu: Gpu,
  kernel: "matmul_texture_n" | "matmul_texture_k" | "matmul_texture_kt",
  a: Tensor,
  b: Tensor,
  out: Tensor,
  M: number,
  N: number,
  K: number,
  o: MatmulOptions,
  tiles: { TM: number; TN: number; WG: number },
): void {
  // Each dispatch computes columns [n0, n0 + n) of C from one texture. B^T [N,K] stored is mirrored in
  // row chunks, one per slice of columns; B [K,N] stored, and the transposed mirror of B^T [N,K], fit
  // one texture (matmulKernel checked K).
  const columnsAlongRows = kernel === "matmul_texture_k";
  const slices = columnsAlongRows
    ? gpu.mirror(b, N, K).map((c) => ({ view: c.view, n0: c.rowStart, n: c.rows }))
    : [{
      view: (kernel === "matmul_texture_n" ? gpu.mirror(b, K, N) : gpu.mirror(b, N, K, "transposed"))[0].view,
      n0: 0,
      n: N,
    }];
  // Where each dispatch reads A: rows [begin, end) of C from `a`'s binding, whose first row is A's row
  // row0, with the entry point and register block that binding needs.
  type APart = {
    binding: GPUTextureView | TensorWindow;
    entry: string;
    AW: number;
    TM: number;
    TN4: number;
    row0: number;
    begin: number;
    end: number;
  };
  const parts: APart[] = [];
  const windowRows = uniformWindowRows(gpu, K);
  if (
    kernel !== "matmul_texture_k" && M > windowRows && matmulTiles(gpu).texture?.activations !== false &&
    gpu.canMirror(a, M, K)
  ) {
    // More rows than one window holds (matmul_texture_n, _kt): A from its texture mirror, one dispatch per
    // mirror chunk instead of one per window (bench/RESULTS.md: 1.3-2x on the embedded model's products
    // of 4096 rows).
    for (const { view, rowStart, rows } of gpu.mirror(a, M, K)) {
      const [begin, end] = [rowStart, rowStart + rows];
      parts.push({
        binding: view,
        entry: `${kernel}_at`,
        AW: 1,
        TM: tiles.TM,
        TN4: tiles.TN / 4,
        row0: begin,
        begin,
        end,
      });
    }
  } else {
    // A in uniform windows of AW rows (see shaders/matmul_texture_window.wgsl), each a power of two so that the
    // pipelines specialised on AW are few (not one per M): full windows of the largest that fits, then
    // one for the remaining rows, ending at row M (it may overlap the window before it and then
    // computes only the rows after it).
    const fullRows = Math.min(windowRows, 2 ** Math.floor(Math.log2(M)));
    for (let begin = 0; begin < M;) {
      const AW = M - begin >= fullRows ? fullRows : pow2AtLeast(M - begin);
      const end = Math.min(M, begin + AW), row0 = end - AW;
      // A block taller than the window would compute clamped duplicates: shrink it. As in the register
      // kernels, a short A (M = 1 for the last token) spends up to 4x the freed accumulators on more
      // columns; a window cut short by a long K does not, as wider blocks would leave too few
      // workgroups to share between threads. Nor does matmul_texture_kt: at M = 1..4 its widened blocks
      // ran slower than matmul_texture_k's, and since it runs matmul_texture_n's block no faster than
      // its plain ones (30-90 us a call either way, a dispatch's cost: bench/RESULTS.md).
      const TM = Math.min(tiles.TM, AW);
      const widen = AW < windowRows && kernel !== "matmul_texture_kt";
      const TN4 = (tiles.TN / 4) * (widen ? Math.min(4, Math.floor(tiles.TM / TM)) : 1);
      const binding = { tensor: a, offset: row0 * K * 4, size: AW * K * 4 };
      parts.push({ binding, entry: kernel, AW, TM, TN4, row0, begin, end });
      begin = end;
    }
  }
  for (const { binding, entry, AW, TM, TN4, row0, begin, end } of parts) {
    const params = { K4: K / 4, AW, TM, TN4, WG: tiles.WG, GELU: !!o.gelu, ACT: 0 };
    const file = entry.endsWith("_at") ? "matmul_texture_at.wgsl" : "matmul_texture_window.wgsl";
    const pipeline = gpu.pipeline(file, entry, params);
    const columnsPerInvocation = columnsAlongRows ? TN4 : 4 * TN4;
    for (const { view, n0, n } of slices) {
      const u = uniforms().u32(n, o.bias ? 1 : 0).f32(o.alpha ?? 1, o.beta ?? 0)
        .u32(o.ldc ?? N, (o.outOffset ?? 0) + n0, n0, row0, begin, end);
      gpu.run(
        pipeline,
        [binding, view, o.bias ?? placeholder(gpu), out],
        [cdiv(end - begin, TM), cdiv(n, columnsPerInvocation * tiles.WG), 1],
        u,
      );
    }
  }
}

/**
 * matmul_texture_tn: C = A^T B with A [K,M] and B [K,N] both read from texture mirrors, one dispatch.
 * The same sums in the same order as matmul_vec4_n with transA (shaders/matmul_texture_at.wgsl).
 */
function matmulTextureTn(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  M: number,
  N: number,
  K: number,
  o: MatmulOptions,
  tiles: { TM: number; TN: number; WG: number },
): void {
  const [aView, bView] = [gpu.mirror(a, K, M)[0].view, gpu.mirror(b, K, N)[0].view];
  const TN4 = tiles.TN / 4;
  // K4 and AW size the uniform window of the module's other entry points; this one has none.
  const params = { K4: 1, AW: 1, TM: tiles.TM, TN4, WG: tiles.WG, GELU: !!o.gelu, ACT: 0 };
  const u = uniforms().u32(N, o.bias ? 1 : 0).f32(o.alpha ?? 1, o.beta ?? 0)
    .u32(o.ldc ?? N, o.outOffset ?? 0, 0, 0, 0, M, K);
  gpu.run(
    gpu.pipeline("matmul_texture_at.wgsl", "matmul_texture_tn", params),
    [aView, bView, o.bias ?? placeholder(gpu), out],
    [cdiv(M, tiles.TM), cdiv(N, 4 * TN4 * tiles.WG), 1],
    u,
  );
}

// ---------------------------------------------------------------- normalisation and activations

/** How a norm finds its rows: row r starts at (r / G) * ld + off + (r % G) * C (default a plain
 *  [R, C] tensor). Gemma 3's per-head q/k norms use G heads of C = hd values inside each fused
 *  q|k|v row of width ld, starting at column off. */
export interface NormRows {
  /** Rows per group (heads per fused q|k|v row). */
  G: number;
  /** Values between the starts of consecutive groups (the fused row's width). */
  ld: number;
  /** Column of the first group's first value. */
  off: number;
}

/** Output and saved statistics of a LayerNorm or RMSNorm call. */
export interface NormOptions {
  /** Where the normed rows are written (default: a new tensor). */
  out?: Tensor;
  /** [R,2] mean and rstd per row, filled for the backward pass. */
  stats?: Tensor;
  /** RMSNorm: no mean subtracted, no beta. */
  rms?: boolean;
  /** Multiply by (gamma + gainOffset): 1 for Gemma's (1 + w). */
  gainOffset?: number;
  /** Where the rows are (default a plain [R, C] tensor). */
  rows?: NormRows;
}

/** Values a norm with this row layout reaches: the last row's end. */
export function normExtent(R: number, C: number, rows: NormRows): number {
  const last = R - 1;
  return Math.floor(last / rows.G) * rows.ld + rows.off + (last % rows.G) * C + C;
}

/** LayerNorm y[R,C] = (x - mean)/sqrt(var + eps) * gamma + beta per row (biased variance, like
 *  PyTorch), or with `rms` RMSNorm y = x/sqrt(mean(x^2) + eps) * (gamma + gainOffset) (beta null).
 *  If `stats` ([R,2], mean and rstd per row) is given it is filled, for the backward pass. With
 *  `rows`, x and y are read and written at that layout (y must then be a distinct tensor of x's size). */
export function layernorm(
  gpu: Gpu,
  x: Tensor,
  gamma: Tensor,
  beta: Tensor | null,
  R: number,
  C: number,
  eps: number,
  o: NormOptions = {},
): Tensor {
  positive("layernorm", { R, C });
  const rows = o.rows ?? { G: 1, ld: C, off: 0 };
  const extent = normExtent(R, C, rows);
  need("layernorm", "x", x, extent);
  need("layernorm", "gamma", gamma, C);
  if (beta) need("layernorm", "beta", beta, C);
  if (!beta && !o.rms) throw new Error("layernorm: LayerNorm needs beta (only RMSNorm has none)");
  const out = o.out ?? gpu.zeros([R, C]);
  need("layernorm", "out", out, extent);
  distinct("layernorm", out, { x, gamma, ...(beta ? { beta } : {}) });
  if (o.stats) {
    need("layernorm", "stats", o.stats, R * 2);
    distinct("layernorm", o.stats, { x, gamma, out });
  }
  const flags = { WITH_STATS: !!o.stats, RMS: !!o.rms, HAS_BETA: !!beta };
  const buffers = [x, gamma, beta ?? placeholder(gpu), out, o.stats ?? placeholder(gpu)];
  const u = uniforms().u32(R, C).f32(eps, o.gainOffset ?? 0).u32(rows.G, rows.ld, rows.off);
  if (rowKernels(gpu) === "workgroup") runRowsWorkgroup(gpu, "layernorm_rows", buffers, R, u, flags);
  else {
    // Four values per access where every row starts on a vec4 (the same values); beta's binding then
    // takes gamma when there is none (a vec4 binding needs 16 bytes; it is not read).
    const vec4 = C % 4 === 0 && rows.ld % 4 === 0 && rows.off % 4 === 0;
    gpu.run(
      gpu.pipeline("layernorm.wgsl", vec4 ? "layernorm_vec4" : "layernorm", { WG: ROW_WG, ...flags }),
      vec4 ? [x, gamma, beta ?? gamma, out, o.stats ?? placeholder(gpu)] : buffers,
      grid1d(gpu, cdiv(R, ROW_WG)),
      u,
    );
  }
  return out;
}

/** activation.wgsl's ACT selector of each activation. */
export const ACTIVATION_CODE: Record<Activation, number> = { gelu_tanh: 0, gelu: 1, silu: 2 };

/** The MLP activation elementwise over n values (default GPT-2's gelu_new, 0.5 x (1 + tanh(sqrt(2/pi)
 *  (x + 0.044715 x^3)))). `out` may be `x` itself (in place). */
export function gelu(
  gpu: Gpu,
  x: Tensor,
  n: number,
  o: { out?: Tensor; activation?: Activation } = {},
): Tensor {
  positive("gelu", { n });
  need("gelu", "x", x, n);
  const act = { ACT: ACTIVATION_CODE[o.activation ?? "gelu_tanh"] };
  if (o.out === x) {
    const { params, grid } = elementwise(gpu, n);
    gpu.run(
      gpu.pipeline("gelu.wgsl", "gelu_in_place", { ...params, ...act }),
      [x],
      grid,
      uniforms().u32(n, 0),
    );
    return x;
  }
  const out = o.out ?? gpu.zeros([n]);
  need("gelu", "out", out, n);
  // Four values per access where n allows (the same values).
  const vec4 = n % 4 === 0;
  const { params, grid } = elementwise(gpu, vec4 ? n / 4 : n);
  gpu.run(
    gpu.pipeline("gelu.wgsl", vec4 ? "gelu_vec4" : "gelu", { ...params, ...act }),
    [x, out],
    grid,
    uniforms().u32(n, 0),
  );
  return out;
}

/** Gated MLP activation (SwiGLU, GeGLU): x [R, 2F] = [gate | up] per row, y [R, F] = act(gate) * up. */
export function glu(
  gpu: Gpu,
  x: Tensor,
  R: number,
  F: number,
  activation: Activation,
  o: { out?: Tensor } = {},
): Tensor {
  positive("glu", { R, F });
  need("glu", "x", x, R * 2 * F);
  const out = o.out ?? gpu.zeros([R, F]);
  need("glu", "out", out, R * F);
  distinct("glu", out, { x });
  const { params, grid } = elementwise(gpu, R * F);
  gpu.run(
    gpu.pipeline("gelu.wgsl", "glu", { ...params, ACT: ACTIVATION_CODE[activation] }),
    [x, out],
    grid,
    uniforms().u32(R * F, F),
  );
  return out;
}

/** Rotary position embedding in place on fused q|k|v rows [B*T, (H + 2 Hkv) hd]: the first `dims`
 *  values of every q and k head are rotated by position t = r % T times invFreq [dims/2] (pairs
 *  (2i, 2i+1) when `interleaved`, else (i, i + dims/2)). sign -1 rotates back (the backward pass). */
export function rope(
  gpu: Gpu,
  qkv: Tensor,
  invFreq: Tensor,
  s: {
    R: number;
    T: number;
    H: number;
    Hkv: number;
    hd: number;
    dims: number;
    interleaved: boolean;
    /** u32 [R / T]: each sequence's first position (rows from a position on; default 0). */
    starts?: Tensor;
  },
  sign: 1 | -1 = 1,
): void {
  positive("rope", { R: s.R, T: s.T, H: s.H, Hkv: s.Hkv, hd: s.hd, dims: s.dims });
  if (s.dims % 2 !== 0 || s.dims > s.hd) {
    throw new Error(`rope: dims ${s.dims} must be even and <= hd ${s.hd}`);
  }
  need("rope", "qkv", qkv, s.R * (s.H + 2 * s.Hkv) * s.hd);
  need("rope", "invFreq", invFreq, s.dims / 2);
  if (s.starts) need("rope", "starts", s.starts, Math.ceil(s.R / s.T), "u32");
  gpu.run(
    gpu.pipeline("rope.wgsl", "rope", { WG: ELEMENT_WG, INTERLEAVED: s.interleaved, OFFSETS: !!s.starts }),
    [qkv, invFreq, s.starts ?? placeholder(gpu)],
    grid1d(gpu, cdiv(s.R * (s.H + s.Hkv) * (s.dims / 2), ELEMENT_WG)),
    uniforms().u32(s.R, s.T, s.H, s.Hkv, s.hd, s.dims).f32(sign),
  );
}

/** out [R, C] = columns [off, off + C) of src [R, ld]: one chunk's slice of a split vocabulary. */
export function gatherColumns(
  gpu: Gpu,
  src: Tensor,
  R: number,
  ld: number,
  off: number,
  C: number,
  o: { out?: Tensor } = {},
): Tensor {
  positive("gatherColumns", { R, C, ld });
  if (off < 0 || off + C > ld) {
    throw new Error(`gatherColumns: columns [${off}, ${off + C}) outside a row of ${ld}`);
  }
  need("gatherColumns", "src", src, R * ld);
  const out = o.out ?? gpu.empty([R, C]);
  need("gatherColumns", "out", out, R * C);
  distinct("gatherColumns", out, { src });
  const { params, grid } = elementwise(gpu, R * C);
  gpu.run(
    gpu.pipeline("elementwise.wgsl", "gather_columns", params),
    [src, out],
    grid,
    uniforms().u32(R, C, ld, off),
  );
  return out;
}

/** Soft-capping in place, x = cap * tanh(x / cap) over n values (Gemma 2's final logits). */
export function softcap(gpu: Gpu, x: Tensor, n: number, cap: number): void {
  positive("softcap", { n });
  if (!(cap > 0)) throw new Error(`softcap: cap must be > 0, got ${cap}`);
  need("softcap", "x", x, n);
  const { params, grid } = elementwise(gpu, n);
  gpu.run(
    gpu.pipeline("elementwise.wgsl", "softcap_in_place", params),
    [x],
    grid,
    uniforms().u32(n).f32(cap),
  );
}

/** out = a + b, elementwise over n values (residual add). out may be a new tensor or given,
 *  including `a` or `b` itself (accumulates in place). */
export function add(gpu: Gpu, a: Tensor, b: Tensor, n: number, o: { out?: Tensor } = {}): Tensor {
  positive("add", { n });
  need("add", "a", a, n);
  need("add", "b", b, n);
  if (a === b && o.out === a) {
    // WebGPU forbids binding one buffer as both the accumulator and the addend of one dispatch.
    throw new Error("add: a, b and out are the same tensor; give out another tensor");
  }
  const { params, grid: groups } = elementwise(gpu, n);
  if (o.out === a || o.out === b) {
    const [acc, addend] = o.out === a ? [a, b] : [b, a];
    gpu.run(
      gpu.pipeline("elementwise.wgsl", "add_in_place", params),
      [acc, addend],
      groups,
      uniforms().u32(n),
    );
    return acc;
  }
  const out = o.out ?? gpu.zeros([n]);
  need("add", "out", out, n);
  gpu.run(
    gpu.pipeline("elementwise.wgsl", "add", params),
    [a, b, out],
    groups,
    uniforms().u32(n),
  );
  return out;
}

// ---------------------------------------------------------------- attention and embedding

/** Options of attention beyond GPT-2's multi-head attention. */
export interface AttentionOptions {
  /** Key/value heads (default nHead): query head h reads key/value head h / (nHead / nKvHead). */
  nKvHead?: number;
  /** Score scale (default 1/sqrt(hd)). */
  scale?: number;
  /** Soft-cap of the scores, cap * tanh(s / cap) (Gemma 2); null/absent for none. */
  softcap?: number | null;
  /** Sliding window: query t sees keys j > t - window; null/absent for all keys j <= t. */
  window?: number | null;
  /** Only some query rows (default all T): see QueryRows. */
  queries?: QueryRows;
}

/**
 * The rows of an attention that computes only the rows from a position on (a forward from a cached
 * prefix): qkv holds Tq rows per sequence, row i of sequence b at position starts[b] + i, and the
 * keys and values of sequence b's earlier positions j < starts[b] are rows bases[b] + j of `cache`
 * (read only; several sequences may share rows). `offsets` is a u32 tensor [2B]: starts, then bases.
 * The output (and probs [B, nHead, Tq, T], dy and dqkv of the backward) hold B*Tq rows; a row whose
 * position is >= T is padding and gets zeros.
 */
export interface QueryRows {
  /** Rows computed per sequence. */
  Tq: number;
  /** u32 [2B]: the sequences' starts, then their bases. */
  offsets: Tensor;
  /** The cached q|k|v rows of the earlier positions. */
  cache: Tensor;
}

const noOffsets = new WeakMap<Gpu, Tensor>();
/** Rows per sequence and the offsets and cache bindings of the attention kernels: for all rows a
 *  1-element placeholder of their own (the forward may bind the shared placeholder writable, as probs). */
export function queryRows(
  gpu: Gpu,
  op: string,
  B: number,
  T: number,
  width: number,
  q?: QueryRows,
): [number, Tensor, Tensor] {
  if (!q) {
    let z = noOffsets.get(gpu);
    if (!z) noOffsets.set(gpu, z = gpu.zeros([1], "u32"));
    return [T, z, z];
  }
  positive(op, { "queries.Tq": q.Tq });
  need(op, "queries.offsets", q.offsets, 2 * B, "u32");
  need(op, "queries.cache", q.cache, width);
  return [q.Tq, q.offsets, q.cache];
}

/** Checks attention sizes and returns the head dimension. */
function attentionHeadDim(op: string, d: number, nHead: number, nKvHead: number): number {
  if (d % nHead !== 0) throw new Error(`${op}: d=${d} is not divisible by nHead=${nHead}`);
  if (nHead % nKvHead !== 0) throw new Error(`${op}: nHead=${nHead} is not a multiple of nKvHead=${nKvHead}`);
  return d / nHead;
}

/** Uniforms shared by the attention kernels' Dims structs: sizes, then scale and soft-cap. */
export function attentionSettings(
  hd: number,
  o: AttentionOptions,
): { scale: number; softcap: number; window: number } {
  const window = o.window ?? 0;
  if (!Number.isInteger(window) || window < 0) {
    throw new Error(`attention: window must be a positive integer, got ${window}`);
  }
  return { scale: o.scale ?? 1 / Math.sqrt(hd), softcap: o.softcap ?? 0, window };
}

/** Causal self-attention core. qkv [B*T, d + 2*nKvHead*hd] is the fused projection's output laid out
 *  as [q heads | k heads | v heads] with head h at columns h*hd..(h+1)*hd of its part (d = nHead*hd,
 *  the width of all query heads). Returns y [B*T, d] (heads concatenated, before the output
 *  projection). Scores are scaled by 1/sqrt(hd) (or o.scale), optionally soft-capped, causal (key <=
 *  query, within o.window), softmax in f32 with max subtraction. Rows of a sequence are b*T + t. If
 *  `probs` ([B, nHead, T, T]) is given the softmax probabilities are stored there (masked entries 0),
 *  for the backward pass (attentionBackward); or if `lse` ([B, nHead, T]) is given, each row's
 *  log-sum-exp of its scores, from which attentionBackwardLse recomputes them (no T x T tensor). With
 *  `o.queries` (Tq rows per sequence) qkv and y hold B*Tq rows, probs is [B, nHead, Tq, T] and lse
 *  [B, nHead, Tq]. */
export function attention(
  gpu: Gpu,
  qkv: Tensor,
  B: number,
  T: number,
  d: number,
  nHead: number,
  o: { out?: Tensor; probs?: Tensor; lse?: Tensor } & AttentionOptions = {},
): Tensor {
  const nKvHead = o.nKvHead ?? nHead;
  positive("attention", { B, T, d, nHead, nKvHead });
  const hd = attentionHeadDim("attention", d, nHead, nKvHead);
  const { scale, softcap, window } = attentionSettings(hd, o);
  const width = d + 2 * nKvHead * hd;
  const [Tq, offsets, cache] = queryRows(gpu, "attention", B, T, width, o.queries);
  need("attention", "qkv", qkv, B * Tq * width);
  const out = o.out ?? gpu.zeros([B * Tq, d]);
  need("attention", "out", out, B * Tq * d);
  distinct("attention", out, { qkv, cache });
  if (o.probs) {
    need("attention", "probs", o.probs, B * nHead * Tq * T);
    distinct("attention", o.probs, { qkv, out });
  }
  if (o.lse) {
    if (o.probs) throw new Error("attention: give probs or lse, not both");
    need("attention", "lse", o.lse, B * nHead * Tq);
    distinct("attention", o.lse, { qkv, out });
  }
  // Keys and values from texture mirrors of qkv (and of the cache) where they can be made (whole texels
  // per head).
  const mirrors = hd % 4 === 0 ? attentionMirrors(gpu, B * Tq, [[qkv, width]], width, o.queries) : null;
  // Query rows per invocation: up to the adapter's choice, spread evenly over a sequence's blocks (a
  // generation step's single row takes one).
  const QB = evenBlockRows(Tq, attentionKernels(gpu).queryRows);
  gpu.run(
    gpu.pipeline("attention.wgsl", "attention", {
      HD: hd,
      WG: ROW_WG,
      WITH_PROBS: !!o.probs,
      WITH_LSE: !!o.lse,
      OFFSETS: !!o.queries,
      TEXTURE: mirrors !== null,
      QB,
    }),
    [
      qkv,
      out,
      o.probs ?? o.lse ?? placeholder(gpu),
      offsets,
      cache,
      ...(mirrors ?? [placeholderTexture(gpu), placeholderTexture(gpu)]),
    ],
    grid1d(gpu, cdiv(B * nHead * cdiv(Tq, QB), ROW_WG)),
    uniforms().u32(B, T, nHead, nKvHead, window).f32(scale, softcap).u32(Tq),
  );
  return out;
}

/** out[r, :] = wte[tokens[r] - rowStart, :] * scale + wpe[r % T, :] for every r in [0, R) whose token
 *  lies in [rowStart, rowStart + rows of wte); other rows are left untouched. With `starts` (u32 [R / T],
 *  each sequence's first position: a suffix forward's rows) row r is at position starts[r / T] + r % T
 *  (a row of wpe: the caller checks). (A vocabulary larger than
 *  one storage binding is split into row chunks; the model calls this once per chunk. rowStart = 0 and a
 *  whole wte is the normal case.) wte is f32, or f16/bf16 as the checkpoint stores it (a 16-bit chunk
 *  starts on a whole word). tokens is a u32 tensor [R]. wpe is [nPositions, C], or null for
 *  models with rotary positions; scale is 1 except for Gemma (sqrt(d)). */
export function embed(
  gpu: Gpu,
  tokens: Tensor,
  wte: Tensor,
  wpe: Tensor | null,
  R: number,
  T: number,
  C: number,
  o: { out: Tensor; rowStart?: number; scale?: number; starts?: Tensor },
): Tensor {
  positive("embed", { R, T, C });
  if (o.starts) need("embed", "starts", o.starts, R / T, "u32");
  const rowStart = o.rowStart ?? 0;
  if (!Number.isInteger(rowStart) || rowStart < 0) {
    throw new Error(`embed: rowStart must be >= 0, got ${rowStart}`);
  }
  need("embed", "tokens", tokens, R, "u32");
  const half = wte.dtype === "f16" || wte.dtype === "bf16";
  if (!half) need("embed", "wte", wte, C);
  else if (wte.size < C) throw new Error(`embed: wte [${wte.shape}] has fewer than ${C} values`);
  if (wpe) need("embed", "wpe", wpe, T * C);
  need("embed", "out", o.out, R * C);
  distinct("embed", o.out, {
    tokens,
    wte,
    ...(wpe ? { wpe } : {}),
    ...(o.starts ? { starts: o.starts } : {}),
  });
  const wteRows = Math.floor(wte.size / C);
  const { params, grid } = elementwise(gpu, R * C);
  gpu.run(
    gpu.pipeline("embedding.wgsl", half ? "embed_half" : "embed", {
      ...params,
      WITH_POSITIONS: wpe !== null,
      OFFSETS: !!o.starts,
      HALF_BF16: wte.dtype === "bf16",
    }),
    [tokens, wte, wpe ?? placeholder(gpu), o.out, o.starts ?? placeholder(gpu)],
    grid,
    uniforms().u32(R, T, C, rowStart, wteRows).f32(o.scale ?? 1),
  );
  return o.out;
}

// ---------------------------------------------------------------- interventions

/** Row operations used by interventions (patching, noising, zeroing, capturing, scaling) — one dispatch
 *  for a whole list of entries. For each entry e: dst[e.dst, :] = e.keep * dst[e.dst, :] + e.take * src[e.src, :]
 *  over C columns. `src` null means src is dst itself (in-place copy between disjoint rows of one buffer;
 *  WebGPU forbids binding one buffer as both read and read_write, so that is a separate entry point).
 *  Entries must have distinct dst rows. Examples: copy = (keep 0, take 1); add = (1, 1); zero = (0, 0); scale by a = (a, 0). */
export interface RowEntry {
  /** Row of dst written. */
  dst: number;
  /** Row of src read (of dst itself when src is null). */
  src: number;
  /** Factor of dst's own row. */
  keep: number;
  /** Factor of src's row. */
  take: number;
}

/** Row copies and mixes dst[e.dst] = keep * dst[e.dst] + take * src[e.src] over `C` columns, one per entry
 *  (the patches of hooks and causal tracing's restores). From another buffer, a dst row may repeat: its
 *  entries then apply one after another in list order (scatter-adds), still in one dispatch. */
export function rowOps(gpu: Gpu, dst: Tensor, src: Tensor | null, C: number, entries: RowEntry[]): void {
  positive("rowOps", { C });
  if (entries.length === 0) return;
  const dstRows = Math.floor(dst.size / C);
  const srcRows = Math.floor((src ?? dst).size / C);
  need("rowOps", "dst", dst, C);
  if (src) {
    need("rowOps", "src", src, C);
    if (src === dst) throw new Error("rowOps: src is dst; pass src = null for rows of one buffer");
  }
  const written = new Set<number>();
  const words = new Uint32Array(4 * entries.length); // RowEntry { dst: u32, src: u32, keep: f32, take: f32 }
  const floats = new Float32Array(words.buffer);
  entries.forEach((e, i) => {
    const where = `rowOps: entry ${i} ${JSON.stringify(e)}`;
    if (!Number.isInteger(e.dst) || e.dst < 0 || e.dst >= dstRows) {
      throw new Error(`${where}: dst row outside [0, ${dstRows})`);
    }
    if (!Number.isInteger(e.src) || e.src < 0 || e.src >= srcRows) {
      throw new Error(`${where}: src row outside [0, ${srcRows})`);
    }
    if (!Number.isFinite(e.keep) || !Number.isFinite(e.take)) {
      throw new Error(`${where}: keep and take must be finite`);
    }
    if (written.has(e.dst) && !src) throw new Error(`${where}: in place, dst row ${e.dst} appears twice`);
    written.add(e.dst);
    words[4 * i] = e.dst;
    words[4 * i + 1] = e.src;
    floats[4 * i + 2] = e.keep;
    floats[4 * i + 3] = e.take;
  });
  if (!src) {
    // In place, a src row that another entry overwrites would be read while it is being written.
    entries.forEach((e, i) => {
      if (e.take !== 0 && written.has(e.src) && e.src !== e.dst) {
        throw new Error(
          `rowOps: entry ${i} ${JSON.stringify(e)}: in place, src row ${e.src} is also a dst row`,
        );
      }
    });
  }
  if (src && written.size < entries.length) {
    // Runs of entries by dst row, in list order: one invocation per run and column applies its entries.
    const runsOf = new Map<number, number[]>();
    entries.forEach((e, i) => {
      const run = runsOf.get(e.dst);
      if (run) run.push(i);
      else runsOf.set(e.dst, [i]);
    });
    const runs = new Uint32Array(4 * runsOf.size), ordered = new Uint32Array(words.length);
    let first = 0;
    [...runsOf].forEach(([dstRow, members], r) => {
      runs.set([dstRow, first, members.length, 0], 4 * r);
      for (const i of members) ordered.set(words.subarray(4 * i, 4 * i + 4), 4 * first++);
    });
    gpu.run(
      gpu.pipeline("rows.wgsl", "row_ops_ordered", { WG: ELEMENT_WG }),
      [dst, src, gpu.upload([runs.length], runs, "u32"), gpu.upload([ordered.length], ordered, "u32")],
      [cdiv(C, ELEMENT_WG), runsOf.size],
      uniforms().u32(C),
    );
    return;
  }
  const table = gpu.upload([words.length], words, "u32");
  const groups: [number, number] = [cdiv(C, ELEMENT_WG), entries.length];
  if (src) {
    // Four values per access where rows start on a vec4 (the same values).
    const vec4 = C % 4 === 0;
    gpu.run(
      gpu.pipeline("rows.wgsl", vec4 ? "row_ops_vec4" : "row_ops", { WG: ELEMENT_WG }),
      [dst, src, table],
      vec4 ? [cdiv(C / 4, ELEMENT_WG), entries.length] : groups,
      uniforms().u32(C),
    );
  } else {
    gpu.run(
      gpu.pipeline("rows.wgsl", "row_ops_in_place", { WG: ELEMENT_WG }),
      [dst, table],
      groups,
      uniforms().u32(C),
    );
  }
}

// ---------------------------------------------------------------- logits

/** Log-probabilities of chosen tokens: out[r] = logits[r, targets[r]] - logsumexp(logits[r, :]).
 *  logits [R, V], targets u32 [R]. A target >= V gives NaN. */
export function logProbOf(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  R: number,
  V: number,
  o: { out?: Tensor } = {},
): Tensor {
  positive("logProbOf", { R, V });
  need("logProbOf", "logits", logits, R * V);
  need("logProbOf", "targets", targets, R, "u32");
  const out = o.out ?? gpu.zeros([R]);
  need("logProbOf", "out", out, R);
  distinct("logProbOf", out, { logits, targets });
  if (rowKernels(gpu) === "workgroup") {
    runRowsWorkgroup(gpu, "log_prob_of_rows", [logits, targets, out], R, uniforms().u32(R, V));
  } else {
    gpu.run(
      gpu.pipeline("softmax.wgsl", "log_prob_of", { WG: ROW_WG }),
      [logits, targets, out],
      grid1d(gpu, cdiv(R, ROW_WG)),
      uniforms().u32(R, V),
    );
  }
  return out;
}

/** Row-wise softmax probabilities [R, V] (numerically stable). */
export function softmax(gpu: Gpu, logits: Tensor, R: number, V: number, o: { out?: Tensor } = {}): Tensor {
  positive("softmax", { R, V });
  need("softmax", "logits", logits, R * V);
  const out = o.out ?? gpu.zeros([R, V]);
  need("softmax", "out", out, R * V);
  distinct("softmax", out, { logits });
  if (rowKernels(gpu) === "workgroup") {
    runRowsWorkgroup(gpu, "softmax_rows", [logits, out], R, uniforms().u32(R, V));
  } else {
    gpu.run(
      gpu.pipeline("softmax.wgsl", "softmax", { WG: ROW_WG }),
      [logits, out],
      grid1d(gpu, cdiv(R, ROW_WG)),
      uniforms().u32(R, V),
    );
  }
  return out;
}

/** Largest k accepted by topK (K_MAX in shaders/softmax.wgsl: the size of its private arrays). */
export const TOPK_MAX = 64;

/** Per row, the indices and values of the k largest entries, sorted descending (k <= 64); so only
 *  R*k numbers are read back instead of R*V. Equal values keep the lower index first.
 *  Returns { indices: u32 [R,k], values: f32 [R,k] }. */
export function topK(
  gpu: Gpu,
  x: Tensor,
  R: number,
  V: number,
  k: number,
): { indices: Tensor; values: Tensor } {
  positive("topK", { R, V, k });
  if (k > TOPK_MAX || k > V) throw new Error(`topK: k=${k} must be <= ${TOPK_MAX} and <= V=${V}`);
  need("topK", "x", x, R * V);
  const indices = gpu.zeros([R, k], "u32");
  const values = gpu.zeros([R, k]);
  gpu.run(
    gpu.pipeline("softmax.wgsl", "top_k", { WG: ROW_WG }),
    [x, indices, values],
    grid1d(gpu, cdiv(R, ROW_WG)),
    uniforms().u32(R, V, k),
  );
  return { indices, values };
}
