// Forward ops: thin TypeScript wrappers that record one WGSL kernel each.
// Every op takes GPU tensors, allocates (or writes into) its output, and records work on
// the Gpu's shared encoder; nothing is read back. Shapes are given in each comment.
import { cdiv, Gpu, type KernelParams, Tensor, uniforms } from "./gpu.ts";

/** Register-block and workgroup shape of the matmul kernel; picked per adapter (see tuneFor). */
export interface MatmulTiles {
  TM: number;
  TN: number;
  WG_X: number;
  WG_Y: number;
}

const tilesByGpu = new WeakMap<Gpu, MatmulTiles>();

/** Tiles for this adapter: 8x8 blocks, 8 lanes (one llvmpipe SIMD vector) on software adapters. */
export function matmulTiles(gpu: Gpu): MatmulTiles {
  let t = tilesByGpu.get(gpu);
  if (!t) {
    t = gpu.info.isFallback ? { TM: 8, TN: 8, WG_X: 8, WG_Y: 1 } : { TM: 4, TN: 4, WG_X: 8, WG_Y: 8 };
    tilesByGpu.set(gpu, t);
  }
  return t;
}

export function setMatmulTiles(gpu: Gpu, tiles: MatmulTiles): void {
  tilesByGpu.set(gpu, tiles);
}

const zeroBias = new WeakMap<Gpu, Tensor>();
function noBias(gpu: Gpu): Tensor {
  let z = zeroBias.get(gpu);
  if (!z) zeroBias.set(gpu, z = gpu.zeros([1]));
  return z;
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  bias?: Tensor;
  alpha?: number;
  /** C = alpha*AB + bias + beta*C; beta=1 accumulates into an existing `out` (gradients). */
  beta?: number;
  out?: Tensor;
  /** Batched product: `batch` independent products with element strides (0 = shared operand). */
  batch?: number;
  strides?: { a: number; b: number; c: number };
  /** Row stride of C (default N) and element offset of C[0,0]: write into a column slice. */
  ldc?: number;
  outOffset?: number;
}

/**
 * C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + bias[N] (+ beta*C).
 * A is [M,K] or, with transA, [K,M]; B is [K,N] or, with transB, [N,K].
 */
export function matmul(gpu: Gpu, a: Tensor, b: Tensor, M: number, N: number, K: number, o: MatmulOptions = {}): Tensor {
  const batch = o.batch ?? 1;
  const strides = o.strides ?? { a: 0, b: 0, c: M * N };
  const out = o.out ?? gpu.zeros(batch > 1 ? [batch, M, N] : [M, N]);
  const ldc = o.ldc ?? N;
  const outOffset = o.outOffset ?? 0;
  if (a.size < M * K || b.size < K * N || out.size < outOffset + (M - 1) * ldc + N) {
    throw new Error(`matmul: operands [${a.shape}] x [${b.shape}] -> [${out.shape}] too small for M=${M} N=${N} K=${K}`);
  }
  const t = matmulTiles(gpu);
  const params: KernelParams = { ...t, TRANS_A: !!o.transA, TRANS_B: !!o.transB };
  const u = uniforms().u32(M, N, K, o.bias ? 1 : 0).f32(o.alpha ?? 1, o.beta ?? 0).u32(strides.a, strides.b, strides.c, ldc, outOffset);
  gpu.run(
    gpu.pipeline("matmul.wgsl", "matmul", params),
    [a, b, o.bias ?? noBias(gpu), out],
    [cdiv(M, t.TM * t.WG_X), cdiv(N, t.TN * t.WG_Y), batch],
    u,
  );
  return out;
}
