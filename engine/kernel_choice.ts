// Which kernel variants run on an adapter: the one place they are chosen, from what WebGPU tells every
// runtime about its adapter (GPUAdapterInfo, limits and features; the same fields in Deno, Chrome,
// Safari and Firefox) plus the backend Deno was asked for. Pure functions of those facts, so they are
// unit-tested with the adapter infos real runtimes report (tests/kernel_choice_test.ts) and a new
// variant (e.g. a kernel for adapters with "subgroups") is added here and nowhere else.
//
// What decides:
//   - software or GPU. A CPU implementation of WebGPU (Mesa's llvmpipe through GL, Mesa's lavapipe
//     through Vulkan, Chromium's SwiftShader, Windows' WARP) runs one workgroup per CPU thread and
//     vectorises across a workgroup's invocations: register blocks with no workgroup memory and weights
//     read through texture mirrors are fastest on Mesa's drivers (bench/kernels.ts). It is recognised by
//     isFallbackAdapter where the runtime reports it (Deno, Chrome) and by its name otherwise (Firefox
//     and Safari leave isFallbackAdapter out; Chrome names SwiftShader only in architecture).
//   - which CPU implementation: Mesa's GL driver keeps an 8x16 texture block in registers, its Vulkan
//     driver spills it (4x16 there; lavapipe reports itself as "llvmpipe" too, so the backend tells them
//     apart). On the GL driver a transposed weight (B^T, B stored [N, K]) is read from a transposed
//     mirror (matmul_texture_kt, 8x16 blocks: 1.0-3x matmul_texture_k on the embedded model's
//     backward products, bench/RESULTS.md); on the Vulkan driver that kernel was no faster, so it
//     keeps matmul_texture_k. SwiftShader reads weights from their buffers: it compiles the texture
//     kernels slowly (the embedded model's first forward in headless Chromium took 6-7.6 s with them,
//     1.1-1.4 s without) and ran the trace and the edit no faster with them (within the noise of a
//     loaded 2-core machine); 64x64 workgroup tiles were 2-3x slower there. WARP and unnamed ones, unmeasured, get
//     SwiftShader's choice.
//   - the limits: GPUs get 64x64 workgroup-memory tiles (16x16 invocations of 4x4) when the adapter
//     allows 256 invocations and their 4 KiB of workgroup memory (WebGPU's defaults are 256 and
//     16 KiB, so every conforming adapter does); adapters below that (compatibility-mode or
//     downlevel limits) get 8x8 invocations of 8x8, or register blocks when even 64 invocations or
//     the tiles' memory are not there. A product of too few tiles to fill the GPU splits K over up to
//     GPU_SPLIT_K workgroups. (Per product, matmulKernel in engine/ops.ts then checks the operands'
//     alignment and maxTextureDimension2D / maxUniformBufferBindingSize for the texture path.)
//   - attention's work per invocation (AttentionKernels): on a software adapter every key, value and
//     gradient texel is a per-lane load, so the forward gives an invocation 4 query rows of one head
//     (each key read once for the 4) and the backward's products 4x16 blocks; GPUs keep one query row
//     and 8x4 blocks, which give them more invocations. The same bits either way. Likewise the scores of
//     virtual edits: 4 rows of one edit per invocation on a software adapter, 1 on a GPU.
//   - not a choice: attention keeps the probabilities [B, H, Tq, T] for a backward on every adapter,
//     whose backward ran 4-8x faster than recomputing the scores from each row's log-sum-exp
//     (shaders/attention_backward_lse.wgsl) on llvmpipe and 2-2.5x faster on an NVIDIA H200
//     (bench/kernels.ts --attention, T = 32..512); only size decides (attentionSaves below): the
//     log-sum-exp is kept where the probabilities would pass its memory threshold.
//   - features: "shader-f16" lets the matmul read f16 weights as WGSL f16 (shaders/matmul_f16.wgsl)
//     instead of unpacking them from u32 words with unpack2x16float (bf16 is always unpacked: WGSL has
//     no type for it); Gpu.open requests the feature exactly when this chooses it. Variants for other
//     features (subgroup reductions) are chosen here too.

/**
 * How the matmul kernels block the work.
 * Register kernels: each invocation computes TM rows x TN columns of C, workgroups are WG_X x WG_Y
 * invocations (rows x columns). The "workgroup" strategy stages BK-deep tiles of TM*WG_X rows of A and
 * TN*WG_Y columns of B in workgroup memory.
 */
export interface MatmulTiles {
  /** Rows of C per invocation. */
  TM: number;
  /** Columns of C per invocation. */
  TN: number;
  /** Invocations per workgroup along the rows. */
  WG_X: number;
  /** Invocations per workgroup along the columns. */
  WG_Y: number;
  /** "registers" (default): no workgroup memory, fast on llvmpipe. "workgroup": shared-memory tiles, for real GPUs. */
  strategy?: "registers" | "workgroup";
  /** Depth of a staged k-tile for the "workgroup" strategy (default 8). */
  BK?: number;
  /**
   * Split-K for the "workgroup" strategy: a product with fewer workgroup tiles than this splits K into
   * up to splitK / tiles slices (a power of two, each at least 4 k-tiles deep), whose partial sums a
   * second kernel adds (shaders/matmul.wgsl matmul_split_reduce). Unset: never split.
   */
  splitK?: number;
  /** Use the vec4 register kernels where the layout allows (default true). */
  vec4?: boolean;
  /**
   * Read weight operands (MatmulOptions.weight) from texture mirrors (shaders/matmul_texture.wgsl)
   * with this register block: TM rows x TN columns per invocation, WG invocations per workgroup.
   * Unset: weights are read from their buffers like any operand. `activations` (default true): some
   * activations are mirrored too, for products with a transposed A (weight gradients X^T dY, both
   * operands; matmul_texture_tn, which needs TM % 4 == 0), for the A of a matmul_texture_n or _kt
   * product longer than one uniform window (their _at entry points) and for attention's keys and
   * values; false keeps those on their buffer kernels or uniform windows, which give the same bits.
   */
  texture?: {
    TM: number;
    TN: number;
    WG: number;
    activations?: boolean;
    /**
     * Products with a transposed weight (op(B) = B^T, B stored [N,K]: the forward of [out, in]
     * weights, the backward's dX = dY W^T of GPT-2's [in, out] ones) read B^T from a transposed
     * mirror with matmul_texture_kt and this block (TN columns, a multiple of 4, per invocation);
     * the same bits as matmul_texture_k, which runs them otherwise.
     */
    transposed?: { TM: number; TN: number; WG: number };
  };
}

/** The limits the choice reads (a subset of GPUSupportedLimits). */
export interface ChoiceLimits {
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
}

/** What a runtime says about its adapter. */
export interface AdapterFacts {
  /** GPUAdapterInfo's fields ("" where the runtime does not say). */
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** GPUAdapterInfo.isFallbackAdapter (or the older GPUAdapter.isFallbackAdapter); undefined where the
   *  runtime reports neither. */
  isFallbackAdapter?: boolean;
  /** Deno's WebGPU backend ("gl", "vulkan", "default"), or "browser" in a web page. */
  backend: string;
  limits: ChoiceLimits;
  features: readonly string[];
}

/** The CPU implementations of WebGPU Locus knows by name. */
export type SoftwareAdapter = "llvmpipe" | "lavapipe" | "swiftshader" | "warp" | "unnamed";

/** The kernel variants chosen for one adapter, read by every op that has more than one. */
export interface KernelChoice {
  /** The CPU implementation behind the adapter, or null for a GPU. */
  software: SoftwareAdapter | null;
  /** The matmul kernels' register-block and workgroup sizes. */
  matmul: MatmulTiles;
  /** Read f16 weights natively (needs the device feature "shader-f16"). */
  nativeF16: boolean;
  /** How norms, softmax, log-probabilities and cross-entropy spread a row: one invocation per row
   *  (software adapters, where a barrier costs more than a loop over the row) or one workgroup of
   *  ROWS_WORKGROUP lanes per row with tree reductions (GPUs; shaders/rows_workgroup.wgsl). */
  rows: RowKernels;
  /** How the attention kernels spread their work (AttentionKernels). */
  attention: AttentionKernels;
  /** Rows per invocation of the virtual-edit scores (shaders/virtual_edit.wgsl RB): on software
   *  adapters 4 rows of one edit share their key-row loads (FT-L's dense scores 1.8x on llvmpipe,
   *  bench/RESULTS.md); 1 on GPUs, which get 4x the invocations instead. The same sums either way. */
  virtualScoreRows: number;
}

/**
 * The attention kernels' work per invocation. On software adapters every key, value and gradient
 * texel is a per-lane load, so an invocation does more with each (ROME's v* batches on llvmpipe:
 * the forward 1.5x a call, the backward's products 1.9x, bench/RESULTS.md); GPUs keep one query row
 * and a 4-wide block per invocation, which gives them more invocations and shares loads through
 * their caches. Every choice gives the same bits (each sum keeps its terms and order).
 */
export interface AttentionKernels {
  /** Query rows per invocation of the forward, at most (shaders/attention.wgsl QB; ops.ts spreads a
   *  sequence's rows evenly over the blocks this makes: evenBlockRows). */
  queryRows: number;
  /** The backward's register block (shaders/attention_backward.wgsl TM, TN: rows and columns of one
   *  gradient per invocation; TN a multiple of 4). */
  backwardBlock: { TM: number; TN: number };
}

/**
 * Rows per block for `rows` rows in blocks of at most `most`: as few as keep the number of blocks (6
 * rows, at most 4: 2 blocks of 3, not of 4 and 2), so that no block runs more rows past the end than
 * it must (llvmpipe's v* attention, 2026-12-06 fifth session in bench/RESULTS.md).
 */
export function evenBlockRows(rows: number, most: number): number {
  return Math.ceil(rows / Math.ceil(rows / Math.min(most, rows)));
}

/** Software adapters' attention kernels: 2 or 8 query rows, and blocks of 8x4, 8x8, 8x16, 2x16 or 4x32,
 *  ran slower on llvmpipe (ROME's v* batches, bench/RESULTS.md). */
const SOFTWARE_ATTENTION: AttentionKernels = { queryRows: 4, backwardBlock: { TM: 4, TN: 16 } };
const GPU_ATTENTION: AttentionKernels = { queryRows: 1, backwardBlock: { TM: 8, TN: 4 } };

/** What a kept forward's attention saves for the backward: the probabilities [B, H, Tq, T] ("probs",
 *  the faster backward on every adapter measured: llvmpipe 4-8x, an NVIDIA H200 2-2.5x) or each row's
 *  log-sum-exp [B, H, Tq] ("lse", which attentionSaves picks for long prompts). */
export type AttentionSaved = "probs" | "lse";

/** Bytes of one layer's probabilities [B, H, Tq, T] above which even "probs" adapters keep the
 *  log-sum-exp: a backward holds one such tensor per layer (GPT-2 small at T = 1024 needs 48 MiB). */
export const PROBS_BYTES_MAX = 64 * 2 ** 20;

/** What a kept forward's attention saves for B sequences of Tq query rows over T keys and H heads:
 *  `preferred` (ops.ts attentionSaved: the probabilities unless a test sets otherwise), or the
 *  log-sum-exp when the probabilities would pass PROBS_BYTES_MAX or one storage binding (bindingBytes,
 *  the device's maxStorageBufferBindingSize). */
export function attentionSaves(
  preferred: AttentionSaved,
  B: number,
  H: number,
  Tq: number,
  T: number,
  bindingBytes: number,
): AttentionSaved {
  const bytes = 4 * B * H * Tq * T;
  return bytes > Math.min(PROBS_BYTES_MAX, bindingBytes) ? "lse" : preferred;
}

/** How row kernels spread a row: one invocation per row, or one workgroup per row (see KernelChoice.rows). */
export type RowKernels = "invocation" | "workgroup";
/** Lanes per row for the "workgroup" row kernels (one f32 of workgroup memory each). */
export const ROWS_WORKGROUP = 64;

/** The CPU implementation behind an adapter, from its flag or its names; null for a GPU. */
export function softwareAdapter(a: AdapterFacts): SoftwareAdapter | null {
  const names = [a.vendor, a.architecture, a.device, a.description].join(" ").toLowerCase();
  // Mesa's Vulkan driver calls itself "llvmpipe" in its device name, like the GL one.
  if (/llvmpipe|lavapipe/.test(names)) return a.backend === "gl" ? "llvmpipe" : "lavapipe";
  if (names.includes("swiftshader")) return "swiftshader";
  if (/microsoft basic render|\bwarp\b/.test(names)) return "warp";
  return a.isFallbackAdapter ? "unnamed" : null;
}

/** Register blocks for CPU implementations: 8 lanes (one AVX2 vector) along columns, so that the
 *  16-row matrices of a prompt still fill them (bench/kernels.ts). */
const SOFTWARE_TILES: MatmulTiles = { TM: 8, TN: 8, WG_X: 1, WG_Y: 8 };
/**
 * Workgroups a GPU's tiled product is split up to along K (MatmulTiles.splitK). On an H200 (Vulkan) an
 * unsplit product of a short prompt took about 1.5 us per unit of K however few its tiles (GPT-2's
 * [16,3072]x[3072,768]: 12 workgroups, 4.5 ms), each tile walking all of K while most of the GPU
 * waited. Split up to 64 / 256 / 1024 workgroups it took 1.26 / 0.50 / 0.39 ms, and 1024 was the
 * fastest of the three on every product measured (bench/kernels.ts --sweep, bench/RESULTS.md).
 */
export const GPU_SPLIT_K = 1024;

/** What every software adapter runs besides its matmul tiles: one row per invocation for row kernels,
 *  attention and virtual-edit scores that share their loads among more rows (see KernelChoice). */
const SOFTWARE_KERNELS = {
  rows: "invocation",
  attention: SOFTWARE_ATTENTION,
  virtualScoreRows: 4,
} as const satisfies Pick<KernelChoice, "rows" | "attention" | "virtualScoreRows">;
/** What every GPU runs for attention and virtual-edit scores: one query row and one scored row per
 *  invocation, 8x4 backward blocks (more invocations; their caches share the loads). */
const GPU_KERNELS = {
  attention: GPU_ATTENTION,
  virtualScoreRows: 1,
} as const satisfies Pick<KernelChoice, "attention" | "virtualScoreRows">;

/** The kernel variants for an adapter (see the file's header for the reasons). */
export function chooseKernels(a: AdapterFacts): KernelChoice {
  const software = softwareAdapter(a);
  const nativeF16 = a.features.includes("shader-f16");
  if (software === "llvmpipe" || software === "lavapipe") {
    const texture: MatmulTiles["texture"] = software === "llvmpipe"
      ? { TM: 8, TN: 16, WG: 8, transposed: { TM: 8, TN: 16, WG: 8 } }
      : { TM: 4, TN: 16, WG: 8 };
    return { software, nativeF16, ...SOFTWARE_KERNELS, matmul: { ...SOFTWARE_TILES, texture } };
  }
  if (software !== null) return { software, nativeF16, ...SOFTWARE_KERNELS, matmul: SOFTWARE_TILES };
  const l = a.limits;
  const rows: RowKernels = ROWS_WORKGROUP <= l.maxComputeInvocationsPerWorkgroup &&
      ROWS_WORKGROUP <= l.maxComputeWorkgroupSizeX && 4 * ROWS_WORKGROUP <= l.maxComputeWorkgroupStorageSize
    ? "workgroup"
    : "invocation";
  const fits = (wg: number, tm: number) => {
    const tileBytes = 2 * 8 * (tm * wg) * 4; // BK = 8 rows of A's and B's tiles, (TM * WG) floats each
    return wg * wg <= l.maxComputeInvocationsPerWorkgroup && wg <= l.maxComputeWorkgroupSizeX &&
      wg <= l.maxComputeWorkgroupSizeY && tileBytes <= l.maxComputeWorkgroupStorageSize;
  };
  for (const [wg, tm] of [[16, 4], [8, 8]]) {
    if (fits(wg, tm)) {
      return {
        software,
        nativeF16,
        rows,
        ...GPU_KERNELS,
        matmul: { TM: tm, TN: tm, WG_X: wg, WG_Y: wg, strategy: "workgroup", BK: 8, splitK: GPU_SPLIT_K },
      };
    }
  }
  return { software, nativeF16, rows, ...GPU_KERNELS, matmul: SOFTWARE_TILES };
}
