// Every matmul kernel (scalar, vec4 along N, vec4 along K, workgroup-memory tiles) against the
// float64 reference. Each is forced through setMatmulTiles, and matmulKernel confirms which entry
// point actually ran, so a variant cannot silently fall back to another.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import {
  matmul,
  type MatmulKernel,
  matmulKernel,
  type MatmulTiles,
  matmulTiles,
  setMatmulTiles,
} from "../engine/ops.ts";
import { matmulRef } from "./reference.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();

/** Runs `body` with these tiles, failing on any WebGPU validation error, then restores the defaults. */
function withTiles(name: string, tiles: MatmulTiles, body: () => Promise<void>): void {
  Deno.test(name, async () => {
    const saved = matmulTiles(gpu);
    setMatmulTiles(gpu, tiles);
    gpu.device.pushErrorScope("validation");
    try {
      await body();
    } finally {
      setMatmulTiles(gpu, saved);
      const error = await gpu.device.popErrorScope();
      assert.equal(error?.message ?? null, null, "WebGPU validation error");
    }
  });
}

type Layout = { transA: boolean; transB: boolean };

/** Products of these shapes with bias, compared with the reference; checks the kernel chosen. */
async function checkShapes(
  layout: Layout,
  shapes: [number, number, number][],
  kernel: MatmulKernel,
): Promise<void> {
  const runs = shapes.map(([M, N, K], i) => {
    assert.equal(
      matmulKernel(gpu, N, K, layout),
      kernel,
      `kernel for [${M},${N},${K}] ${JSON.stringify(layout)}`,
    );
    const a = randomArray(M * K, 10 + i), b = randomArray(K * N, 20 + i), bias = randomArray(N, 30 + i);
    const out = matmul(gpu, gpu.tensor([M * K], a), gpu.tensor([K * N], b), M, N, K, {
      ...layout,
      bias: gpu.tensor([N], bias),
    });
    return { M, N, K, out, ref: matmulRef(a, b, M, N, K, { ...layout, bias }) };
  });
  const got = await gpu.readMany(runs.map((r) => r.out));
  runs.forEach((r, i) =>
    assertClose(got[i], r.ref, 1e-4 * Math.sqrt(r.K), `[${r.M},${r.N},${r.K}] ${kernel}`)
  );
}

/** alpha, beta accumulation, batch strides and a column slice of a wider C, all at once. */
async function checkBatchedSlice(layout: Layout, [M, N, K]: [number, number, number]): Promise<void> {
  const [batch, wide, offset] = [3, N + 8, 4];
  const a = randomArray(batch * M * K, 40),
    b = randomArray(batch * K * N, 41),
    c0 = randomArray(batch * M * wide, 42);
  const out = gpu.tensor([batch, M, wide], c0);
  matmul(gpu, gpu.tensor([a.length], a), gpu.tensor([b.length], b), M, N, K, {
    ...layout,
    alpha: 0.5,
    beta: 1,
    out,
    batch,
    strides: { a: M * K, b: K * N, c: M * wide },
    ldc: wide,
    outOffset: offset,
  });
  const got = await out.read();
  for (let i = 0; i < batch; i++) {
    const ref = matmulRef(
      a.subarray(i * M * K, (i + 1) * M * K),
      b.subarray(i * K * N, (i + 1) * K * N),
      M,
      N,
      K,
      layout,
    );
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < wide; n++) {
        const at = i * M * wide + m * wide + n;
        const inSlice = n >= offset && n < offset + N;
        const expected = c0[at] + (inSlice ? 0.5 * ref[m * N + n - offset] : 0);
        assertClose([got[at]], [expected], 1e-4 * Math.sqrt(K), `batch ${i} C[${m},${n}]`);
      }
    }
  }
}

const NN = { transA: false, transB: false }, TN = { transA: true, transB: false };
const NT = { transA: false, transB: true }, TT = { transA: true, transB: true };
const llvmpipe: MatmulTiles = { TM: 8, TN: 8, WG_X: 1, WG_Y: 8 };

// N % 4 == 0 everywhere; M = 1, 2, 3 exercise the shrunken register blocks.
const vec4nShapes: [number, number, number][] = [
  [1, 4, 1],
  [2, 8, 3],
  [3, 36, 5],
  [13, 20, 9],
  [37, 72, 129],
  [64, 64, 64],
];
withTiles("matmul_vec4_n (NN and TN) matches reference", llvmpipe, async () => {
  await checkShapes(NN, vec4nShapes, "matmul_vec4_n");
  await checkShapes(TN, vec4nShapes, "matmul_vec4_n");
  await checkBatchedSlice(NN, [5, 12, 7]);
});

// K % 4 == 0 everywhere, N arbitrary (50257 in GPT-2's unembedding).
const vec4kShapes: [number, number, number][] = [[1, 7, 4], [1, 101, 64], [3, 5, 8], [13, 17, 12], [
  37,
  70,
  128,
]];
withTiles("matmul_vec4_k (NT) matches reference", llvmpipe, async () => {
  await checkShapes(NT, vec4kShapes, "matmul_vec4_k");
  await checkBatchedSlice(NT, [5, 6, 8]);
});

withTiles(
  "scalar matmul is used where no vec4 kernel fits, and when vec4 is switched off",
  llvmpipe,
  async () => {
    await checkShapes(NN, [[5, 7, 3]], "matmul"); // N % 4 != 0
    await checkShapes(NT, [[5, 8, 7]], "matmul"); // K % 4 != 0
    await checkShapes(TT, [[5, 8, 8]], "matmul"); // no vec4 kernel for TT
    setMatmulTiles(gpu, { ...llvmpipe, vec4: false });
    await checkShapes(NN, [[13, 20, 9]], "matmul");
  },
);

// Small tiles so that the odd shapes span several workgroups, partial k-tiles and partial edges.
const tiled: MatmulTiles = { TM: 2, TN: 3, WG_X: 4, WG_Y: 2, strategy: "workgroup", BK: 4 };
const tiledShapes: [number, number, number][] = [[1, 1, 1], [1, 7, 5], [13, 17, 9], [37, 70, 129]];
for (const layout of [NN, TN, NT, TT]) {
  withTiles(`matmul_tiled ${JSON.stringify(layout)} matches reference`, tiled, async () => {
    await checkShapes(layout, tiledShapes, "matmul_tiled");
    await checkBatchedSlice(layout, [5, 6, 7]);
  });
}

withTiles("matmul_tiled with the real-GPU default tiles (64x64, BK 8)", {
  TM: 4,
  TN: 4,
  WG_X: 16,
  WG_Y: 16,
  strategy: "workgroup",
  BK: 8,
}, async () => {
  await checkShapes(NN, [[70, 130, 33]], "matmul_tiled");
  await checkShapes(NT, [[3, 65, 20]], "matmul_tiled");
});

Deno.test("matmul rejects operands too small for the batch strides", () => {
  assert.throws(
    () => matmul(gpu, gpu.zeros([6]), gpu.zeros([6]), 2, 3, 3, { batch: 2, strides: { a: 6, b: 0, c: 6 } }),
    /too small for M=2 N=3 K=3/,
  );
});
