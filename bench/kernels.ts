// Kernel throughput on GPT-2 small shapes: GFLOP/s of matmul (the hot spot of everything), each also
// as a share of the adapter's arithmetic ceiling (bench/ceiling.ts), and GB/s of the memory-bound
// kernels (the forward's, and FT-L's optimiser step and dense virtual-edit scores at the embedded
// model's shapes), on whatever adapter WebGPU gives.
//
//   ./locus run -A bench/kernels.ts            the kernels ops.ts picks for this adapter
//   ./locus run -A bench/kernels.ts --sweep    also every candidate tile shape for each matmul
//   ./locus run -A bench/kernels.ts --attention  only the attention forward+backward, probs vs log-sum-exp
//   ./locus run -A bench/kernels.ts --only TEXT  only the matmul cases whose name contains TEXT (e.g. "dX")
//
// It first prints the adapter's arithmetic ceiling and what a readback of 4 KiB, 48 KiB and 1 MiB costs.
//
// Each measurement records `reps` dispatches into one submit and waits once, so the cost of a sync
// (under a millisecond through engine/readback.ts, 10 ms with Deno's mapAsync) is amortised; reps grows
// until one run takes >= 0.3 s.
import { attentionBackward, attentionBackwardLse } from "../engine/backward_ops.ts";
import { getGpu, type Gpu } from "../engine/gpu.ts";
import { arithmeticPeak } from "./ceiling.ts";
import { median } from "../experiments/study/stats.ts";
import { Adam } from "../engine/optimizer.ts";
import { applyVirtualEdit, type VirtualEdit } from "../engine/virtual_edits.ts";
import {
  attention,
  gelu,
  layernorm,
  matmul,
  matmulKernel,
  type MatmulOptions,
  matmulSplitK,
  type MatmulTiles,
  matmulTiles,
  setMatmulTiles,
  softmax,
} from "../engine/ops.ts";

const gpu = await getGpu();
const sweep = Deno.args.includes("--sweep");
const attentionOnly = Deno.args.includes("--attention");
const onlyAt = Deno.args.indexOf("--only");
const only = onlyAt >= 0 ? Deno.args[onlyAt + 1] : undefined;

/** Seconds per call of `record`, measured over enough calls to make the sync cost negligible. */
async function timePerCall(g: Gpu, record: () => void): Promise<number> {
  record(); // compiles the pipeline (at first dispatch)
  await g.sync();
  for (let reps = 4;; reps *= 2) {
    const start = performance.now();
    for (let i = 0; i < reps; i++) record();
    await g.sync();
    const seconds = (performance.now() - start) / 1000;
    if (seconds >= 0.3 || reps >= 4096) return seconds / reps;
  }
}

function random(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
}

interface MatmulCase {
  name: string;
  M: number;
  N: number;
  K: number;
  transB: boolean;
}

// The embedded model's (d = 128, MLP 512) products dX = dY W^T: W [in, out] as GPT-2 stores it, read
// transposed (what the v* optimisation's backward runs). [name, N = in, K = out].
const embeddedDx: [string, number, number][] = [
  ["c_fc       ", 128, 512],
  ["c_attn     ", 128, 384],
  ["c_proj     ", 512, 128],
  ["attn c_proj", 128, 128],
];
// GPT-2 small (d = 768): a 16-token prompt, a 128-token batch, one generated token, and the
// last-token unembedding.
const cases: MatmulCase[] = [
  { name: "c_attn   [16,768]x[768,2304]", M: 16, N: 2304, K: 768, transB: false },
  { name: "c_fc     [16,768]x[768,3072]", M: 16, N: 3072, K: 768, transB: false },
  { name: "mlp_proj [16,3072]x[3072,768]", M: 16, N: 768, K: 3072, transB: false },
  { name: "c_attn   [128,768]x[768,2304]", M: 128, N: 2304, K: 768, transB: false },
  { name: "c_attn   [1,768]x[768,2304]", M: 1, N: 2304, K: 768, transB: false },
  { name: "unembed  [1,768]x[50257,768]^T", M: 1, N: 50257, K: 768, transB: true },
  // The embedded model's backward, for a batch of 2048 and 8192 rows (see embeddedDx).
  ...[2048, 8192].flatMap((M) =>
    embeddedDx.map(([name, N, K]) => ({
      name: `dX ${name} [${M},${K}]x[${N},${K}]^T`,
      M,
      N,
      K,
      transB: true,
    }))
  ),
];

/**
 * Records one product of the case. The 50257-row wte is 154 MB, over one storage binding's 128 MiB,
 * so it is two row chunks writing column slices of one [M, N] output, as the model does.
 */
function matmulRecorder(c: MatmulCase, weight: boolean): () => void {
  const a = gpu.tensor([c.M, c.K], random(c.M * c.K));
  const out = gpu.zeros([c.M, c.N]);
  const chunks = c.N * c.K * 4 > gpu.limits.maxStorageBufferBindingSize ? 2 : 1;
  const rowsPerChunk = Math.ceil(c.N / chunks);
  const parts = Array.from({ length: chunks }, (_, i) => {
    const n0 = i * rowsPerChunk, n = Math.min(rowsPerChunk, c.N - n0);
    return { n0, n, b: gpu.tensor(c.transB ? [n, c.K] : [c.K, n], random(n * c.K)) };
  });
  return () => {
    for (const p of parts) {
      const o: MatmulOptions = { transB: c.transB, out, ldc: c.N, outOffset: p.n0, weight };
      matmul(gpu, a, p.b, c.M, p.n, c.K, o);
    }
  };
}

// Alternatives to the adapter's default for --sweep on a software adapter. On llvmpipe every
// storage-buffer load is a per-lane loop, so throughput follows FMAs per loaded float (TM*TN / (TM+TN))
// until the accumulators no longer fit in registers (more than 16 vec4).
const softwareCandidates: [string, MatmulTiles][] = [
  ["16x4 block", { TM: 16, TN: 4, WG_X: 1, WG_Y: 8 }],
  ["4x16 block", { TM: 4, TN: 16, WG_X: 1, WG_Y: 8 }],
  ["8x16 block (spills)", { TM: 8, TN: 16, WG_X: 1, WG_Y: 8 }],
  ["lanes along rows", { TM: 8, TN: 8, WG_X: 8, WG_Y: 1 }],
  ["scalar kernel", { TM: 8, TN: 8, WG_X: 1, WG_Y: 8, vec4: false }],
  ["scalar, the original default", { TM: 8, TN: 8, WG_X: 8, WG_Y: 1, vec4: false }],
  ["workgroup tiles", { TM: 4, TN: 4, WG_X: 16, WG_Y: 16, strategy: "workgroup", BK: 8 }],
];
// On a GPU: the workgroup-memory tiles with other k-tile depths, tile shapes and split-K targets (on an
// H200 the register and texture kernels above ran 1.2-4x slower than these tiles on every shape).
const tiles64: MatmulTiles = { TM: 4, TN: 4, WG_X: 16, WG_Y: 16, strategy: "workgroup", BK: 8 };
const gpuCandidates: [string, MatmulTiles][] = [
  ["unsplit", tiles64],
  ["split-K 256", { ...tiles64, splitK: 256 }],
  ["split-K 4096", { ...tiles64, splitK: 4096 }],
  ["BK 32, split-K 1024", { ...tiles64, BK: 32, splitK: 1024 }],
  ["8x8 blocks of 8x8, split-K 1024", { ...tiles64, TM: 8, TN: 8, WG_X: 8, WG_Y: 8, splitK: 1024 }],
  ["32x32 tiles, split-K 1024", { ...tiles64, TM: 2, TN: 2, splitK: 1024 }],
];
const candidates = gpu.kernels.software ? softwareCandidates : gpuCandidates;
// Register blocks of the texture kernels (B, a weight, read from its texture mirror); the first two
// are the defaults of Mesa's Vulkan and GL drivers (matmulTiles), so each backend shows the other's.
const textureCandidates: MatmulTiles["texture"][] = [
  { TM: 4, TN: 16, WG: 8 },
  { TM: 8, TN: 16, WG: 8 },
  { TM: 8, TN: 8, WG: 8 },
  { TM: 4, TN: 12, WG: 8 },
  { TM: 2, TN: 16, WG: 8 },
  { TM: 4, TN: 16, WG: 16 },
];
// Blocks of matmul_texture_kt (a transposed weight from its transposed mirror), for --sweep.
const transposedCandidates: { TM: number; TN: number; WG: number }[] = [
  { TM: 8, TN: 16, WG: 8 },
  { TM: 8, TN: 8, WG: 8 },
  { TM: 4, TN: 16, WG: 8 },
  { TM: 4, TN: 8, WG: 16 },
];

console.log(`adapter: ${gpu.describe()}`);
console.log(`default matmul tiles: ${JSON.stringify(matmulTiles(gpu))}`);
// What the adapter reaches with registers alone: the matmuls' GFLOP/s read as a share of it.
const ceiling = attentionOnly ? undefined : await arithmeticPeak(gpu, (record) => timePerCall(gpu, record));
if (ceiling) {
  console.log(
    `arithmetic ceiling: ${ceiling.gflops.toFixed(1)} GFLOP/s (fma chains on registers alone, ` +
      `shaders/arithmetic_peak.wgsl ${JSON.stringify(ceiling.shape)})`,
  );
}
// A readback as the engine makes it (gpu.readbackPath: through an OffscreenCanvas in Deno, engine/readback.ts)
// next to a bare mapAsync of the same bytes, median of 9 each.
if (!attentionOnly && only === undefined) {
  for (const bytes of [4 << 10, 48 << 10, 1 << 20]) {
    const t = gpu.tensor([bytes / 4], random(bytes / 4));
    const timed = async (read: () => Promise<unknown>) => {
      const ms: number[] = [];
      for (let i = 0; i < 9; i++) {
        const start = performance.now();
        await read();
        ms.push(performance.now() - start);
      }
      return median(ms);
    };
    const engine = await timed(() => t.read());
    const mapped = await timed(async () => {
      const staging = gpu.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const encoder = gpu.device.createCommandEncoder();
      encoder.copyBufferToBuffer(t.buffer, 0, staging, 0, bytes);
      gpu.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      staging.destroy();
    });
    console.log(
      `readback of ${bytes >> 10} KiB: ${engine.toFixed(2)} ms (${gpu.readbackPath}), mapAsync ${
        mapped.toFixed(2)
      } ms`,
    );
    t.destroy();
  }
}
console.log("");
const defaults = matmulTiles(gpu);
for (const c of attentionOnly ? [] : cases.filter((c) => only === undefined || c.name.includes(only))) {
  const flops = 2 * c.M * c.N * c.K;
  // The weight operand read from its buffer and (where the adapter's tiles say so) from a texture mirror.
  const tilesToTry: [string, MatmulTiles, boolean][] = [["default", defaults, false]];
  if (defaults.texture) tilesToTry.push(["default, weight as texture", defaults, true]);
  if (defaults.texture?.transposed && c.transB) {
    const texture = { ...defaults.texture, transposed: undefined };
    tilesToTry.push(["weight as texture, no transposed mirror", { ...defaults, texture }, true]);
  }
  if (sweep) {
    tilesToTry.push(...candidates.map(([label, t]): [string, MatmulTiles, boolean] => [label, t, false]));
    for (const texture of gpu.kernels.software ? textureCandidates : []) {
      tilesToTry.push([`weight as texture`, { ...defaults, texture }, true]);
    }
    for (const transposed of c.transB && defaults.texture ? transposedCandidates : []) {
      const texture = { ...defaults.texture!, transposed };
      tilesToTry.push([`weight as transposed texture`, { ...defaults, texture }, true]);
    }
  }
  for (const [label, tiles, weight] of tilesToTry) {
    setMatmulTiles(gpu, tiles);
    const seconds = await timePerCall(gpu, matmulRecorder(c, weight));
    const kernel = matmulKernel(gpu, c.N, c.K, { transB: c.transB, weight }, c.M);
    const slices = kernel === "matmul_tiled" ? matmulSplitK(gpu, c.M, c.N, c.K) : 1;
    const shown = weight ? tiles.texture : { ...tiles, texture: undefined };
    const share = ceiling ? `${(100 * flops / seconds / 1e9 / ceiling.gflops).toFixed(0).padStart(3)}%` : "";
    console.log(
      `${c.name}  ${(flops / seconds / 1e9).toFixed(1).padStart(6)} GFLOP/s ${share} ${
        (seconds * 1e3).toFixed(2).padStart(7)
      } ms` +
        `  ${(slices > 1 ? `${kernel} x${slices}` : kernel).padEnd(17)}  ${label} ${JSON.stringify(shown)}`,
    );
  }
  setMatmulTiles(gpu, defaults);
}

// Memory-bound kernels: bytes read + written once per call.
const [R, C, T, nHead, V] = [16, 768, 16, 12, 50257];
const x = gpu.tensor([R, 4 * C], random(R * 4 * C));
const gamma = gpu.tensor([C], random(C)), beta = gpu.tensor([C], random(C));
const y = gpu.zeros([R, 4 * C]);
const qkv = gpu.tensor([R, 3 * C], random(R * 3 * C));
const logits = gpu.tensor([R, V], random(R * V));
const probs = gpu.zeros([R, V]);
// FT-L's Adam step over 16 edits' copies of the embedded model's MLP projection (512 x 128), inside their
// L-infinity balls (reads param, gradient, both moments, centre; writes param and moments); and the dense
// scores of 16 FT-L edits (128 columns of a 512-wide key each) for 400 rows under virtual edits, as the
// adapter runs them (a grouped product from texture mirrors on llvmpipe) and through the scores kernel.
const [ftValues, ftEdits, f, d, scoredRows] = [16 * 512 * 128, 16, 512, 128, 400];
const ftParam = gpu.tensor([ftValues], random(ftValues)), ftGrad = gpu.tensor([ftValues], random(ftValues));
const adam = new Adam(gpu, [{
  name: "ft",
  tensor: ftParam,
  size: ftValues,
  linf: { center: gpu.tensor([ftValues], random(ftValues)), radius: 0.05 },
}], { lr: 5e-4, trackNorm: false });
// The same step as FT-L takes it (experiments/editing/ft.ts): the gradient left as its factors (x^T dy of
// each edit's 8 rows, engine/autograd.ts FactoredGradient), formed inside the update, and every copy's ball
// around one center, the model's own weight (shaders/adam_factored_texture.wgsl where the adapter reads
// textures, else adam_factored.wgsl): no gradient written or read, the center read once per value of a copy.
const ftRows = 8;
const ftFactors = {
  a: gpu.tensor([ftEdits * ftRows * f], random(ftEdits * ftRows * f)),
  b: gpu.tensor([ftEdits * ftRows * d], random(ftEdits * ftRows * d)),
  groups: ftEdits,
  rows: ftRows,
  M: f,
  N: d,
};
const adamFactored = new Adam(gpu, [{
  name: "ft",
  tensor: gpu.tensor([ftValues], random(ftValues)),
  size: ftValues,
  linf: { center: gpu.tensor([f * d], random(f * d)), radius: 0.05, copies: ftEdits },
}], { lr: 5e-4, trackNorm: false });
const denseEdit: VirtualEdit = {
  layer: 0,
  keys: gpu.tensor([ftEdits * d, f], random(ftEdits * d * f)),
  values: gpu.zeros([1, d]),
  ranks: new Array(ftEdits).fill(0),
  dense: new Array(ftEdits).fill(true),
  // Each edit's rows together, as a batch of prompts holds them (25 rows an edit here).
  rowEdit: Array.from({ length: scoredRows }, (_, r) => Math.floor(r / (scoredRows / ftEdits))),
};
const keyRows = gpu.tensor([scoredRows, f], random(scoredRows * f)), mlpRows = gpu.zeros([scoredRows, d]);
const memoryBound: [string, number, () => void][] = [
  ["layernorm [16,768]", 2 * R * C * 4, () => layernorm(gpu, x, gamma, beta, R, C, 1e-5, { out: y })],
  ["gelu      [16,3072]", 2 * R * 4 * C * 4, () => gelu(gpu, x, R * 4 * C, { out: y })],
  ["adam, L-inf ball [16x512x128]", 8 * ftValues * 4, () => adam.step([ftGrad])],
  [
    "x^T dy written, then adam",
    (8 * ftValues + ftEdits * ftRows * (f + d)) * 4,
    () => {
      gpu.clear(ftGrad);
      matmul(gpu, ftFactors.a, ftFactors.b, f, d, ftRows, {
        transA: true,
        batch: ftEdits,
        strides: { a: ftRows * f, b: ftRows * d, c: f * d },
        out: ftGrad,
        beta: 1,
      });
      adam.step([ftGrad]);
    },
  ],
  [
    "adam, one center [16x512x128]",
    (7 * ftValues + ftEdits * ftRows * (f + d)) * 4,
    () => adamFactored.step([{ ...ftFactors, held: ftFactors.b }]),
  ],
  [
    "virtual dense, adapter's [400 rows]",
    (scoredRows * f + ftEdits * d * f + 2 * scoredRows * d) * 4,
    () => applyVirtualEdit(gpu, mlpRows, keyRows, denseEdit, scoredRows, f, d),
  ],
  [
    "virtual dense, scores [400 rows]",
    (scoredRows * f + ftEdits * d * f + 2 * scoredRows * d) * 4,
    () => applyVirtualEdit(gpu, mlpRows, keyRows, denseEdit, scoredRows, f, d, { denseProducts: false }),
  ],
  [
    "attention B=1 T=16 d=768 h=12",
    (R * 3 * C + R * C) * 4,
    () => attention(gpu, qkv, 1, T, C, nHead, { out: y }),
  ],
  ["softmax   [16,50257]", 2 * R * V * 4, () => softmax(gpu, logits, R, V, { out: probs })],
];
console.log("");
for (const [name, bytes, record] of attentionOnly || only !== undefined ? [] : memoryBound) {
  const seconds = await timePerCall(gpu, record);
  console.log(
    `${name.padEnd(32)} ${(bytes / seconds / 1e9).toFixed(2).padStart(6)} GB/s  ${
      (seconds * 1e3).toFixed(3)
    } ms`,
  );
}

// The attention a backward needs (GPT-2 small's heads, one sequence of T tokens): the forward that
// keeps probabilities [H, T, T] and its backward, against the forward that keeps each row's
// log-sum-exp [H, T] and the backward that recomputes the scores (KernelChoice.attention chooses).
console.log("");
for (const t of only !== undefined ? [] : [32, 128, 512]) {
  const qkvT = gpu.tensor([t, 3 * C], random(t * 3 * C)), dyT = gpu.tensor([t, C], random(t * C));
  const [yT, dqkv] = [gpu.zeros([t, C]), gpu.zeros([t, 3 * C])];
  const [probsT, lse] = [gpu.zeros([nHead, t, t]), gpu.zeros([nHead, t])];
  const dscores = gpu.zeros([nHead, t, t]), delta = gpu.zeros([nHead, t]);
  for (
    const [label, record] of [
      ["probs [H,T,T]", () => {
        attention(gpu, qkvT, 1, t, C, nHead, { out: yT, probs: probsT });
        attentionBackward(gpu, dyT, qkvT, probsT, 1, t, C, nHead, { dqkv, dscores });
      }],
      ["log-sum-exp [H,T]", () => {
        attention(gpu, qkvT, 1, t, C, nHead, { out: yT, lse });
        attentionBackwardLse(gpu, dyT, qkvT, lse, 1, t, C, nHead, { dqkv, delta });
      }],
    ] as const
  ) {
    const seconds = await timePerCall(gpu, record);
    console.log(
      `attention fwd+bwd T=${String(t).padEnd(4)} d=768 h=12  ${label.padEnd(18)} ${
        (seconds * 1e3).toFixed(2).padStart(8)
      } ms`,
    );
  }
  gpu.release(qkvT, dyT, yT, dqkv, probsT, lse, dscores, delta);
}
