// Every matmul kernel (scalar, vec4 along N, vec4 along K, workgroup-memory tiles) against the
// float64 reference. Each is forced through setMatmulTiles, and matmulKernel confirms which entry
// point actually ran, so a variant cannot silently fall back to another.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import {
  add,
  halfMatmulShader,
  matmul,
  type MatmulKernel,
  matmulKernel,
  type MatmulOptions,
  matmulSplitK,
  type MatmulTiles,
  matmulTiles,
  setMatmulTiles,
} from "../engine/ops.ts";
import { bf16ArrayToF32, f16ArrayToF32 } from "../engine/safetensors.ts";
import { geluRef, matmulRef } from "./reference.ts";
import { assertClose, GPU_TILES, randomArray } from "./util.ts";

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

/**
 * Products of these shapes with bias (and gelu_new when `extra.gelu`), compared with the reference;
 * checks the kernel chosen.
 */
async function checkShapes(
  layout: Layout,
  shapes: [number, number, number][],
  kernel: MatmulKernel,
  extra: MatmulOptions = {},
): Promise<void> {
  const runs = shapes.map(([M, N, K], i) => {
    assert.equal(
      matmulKernel(gpu, N, K, { ...layout, ...extra }, M),
      kernel,
      `kernel for [${M},${N},${K}] ${JSON.stringify(layout)}`,
    );
    const a = randomArray(M * K, 10 + i), b = randomArray(K * N, 20 + i), bias = randomArray(N, 30 + i);
    const out = matmul(gpu, gpu.tensor([M * K], a), gpu.tensor([K * N], b), M, N, K, {
      ...layout,
      ...extra,
      bias: gpu.tensor([N], bias),
    });
    const ref = matmulRef(a, b, M, N, K, { ...layout, bias });
    return { M, N, K, out, ref: extra.gelu ? geluRef(ref) : ref };
  });
  const got = await gpu.readMany(runs.map((r) => r.out));
  runs.forEach((r, i) =>
    assertClose(got[i], r.ref, 1e-4 * Math.sqrt(r.K), `[${r.M},${r.N},${r.K}] ${kernel}`)
  );
}

/** alpha, beta accumulation, batch strides and a column slice of a wider C, all at once. */
async function checkBatchedSlice(
  layout: Layout,
  [M, N, K]: [number, number, number],
  { batch, ...extra }: MatmulOptions = { batch: 3 },
): Promise<void> {
  batch ??= 1;
  const [wide, offset] = [N + 8, 4];
  const a = randomArray(batch * M * K, 40),
    b = randomArray(batch * K * N, 41),
    c0 = randomArray(batch * M * wide, 42);
  const out = gpu.tensor([batch, M, wide], c0);
  matmul(gpu, gpu.tensor([a.length], a), gpu.tensor([b.length], b), M, N, K, {
    ...layout,
    ...extra,
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

// Split-K: few tiles and a deep K, so K is cut into slices of at least 4 k-tiles whose partial sums a
// second kernel adds. [1, 3, 129] runs 8 slices of 20, the last one empty; [9, 13, 70] 4 of 20, the last
// one partial; the batched slice 3 x 4 slices.
const splitShapes: [number, number, number][] = [[5, 7, 200], [1, 3, 129], [9, 13, 70]];
for (const layout of [NN, TN, NT, TT]) {
  withTiles(
    `matmul_tiled split-K ${JSON.stringify(layout)} matches reference`,
    { ...tiled, splitK: 64 },
    async () => {
      assert.deepEqual(splitShapes.map(([M, N, K]) => matmulSplitK(gpu, M, N, K)), [8, 8, 4]);
      assert.equal(matmulSplitK(gpu, 5, 6, 100, 3), 4);
      await checkShapes(layout, splitShapes, "matmul_tiled");
      await checkShapes(layout, [[5, 7, 200]], "matmul_tiled", { gelu: true });
      await checkBatchedSlice(layout, [5, 6, 100]);
    },
  );
}

withTiles("matmul_tiled with the real-GPU default tiles (64x64, BK 8, split-K)", GPU_TILES, async () => {
  await checkShapes(NN, [[70, 130, 33]], "matmul_tiled");
  await checkShapes(NT, [[3, 65, 20]], "matmul_tiled");
  assert.equal(matmulSplitK(gpu, 16, 70, 1024), 32);
  await checkShapes(NN, [[16, 70, 1024]], "matmul_tiled");
});

// Weights read through texture mirrors: rows of 64 floats (N for NN, K for NT) are what the mirror
// copy allows, and A's rows are read through uniform windows of a power of two rows that start at
// multiples of 64 floats (K % 64 == 0). M = 1, 2, 3 exercise the shrunken register blocks; M = 13
// and 37 a last window that overlaps the one before it (K = 64: rows 0-7, then 5-12 computing 8-12);
// K = 3072 fits 4 rows of A in a 64 KiB window (M = 13: 0-3, 4-7, 8-11, then a 1-row window) and
// K = 16384 a single row.
const textures: MatmulTiles = { ...llvmpipe, texture: { TM: 4, TN: 16, WG: 8 } };
const WEIGHT: MatmulOptions = { weight: true };
// The default blocks: 4x16 on Vulkan lavapipe, 8x16 on GL llvmpipe (see matmulTiles).
for (const block of [{ TM: 4, TN: 16, WG: 8 }, { TM: 8, TN: 16, WG: 8 }]) {
  const tiles: MatmulTiles = { ...llvmpipe, texture: block };
  withTiles(`matmul_texture_n (weights, NN) ${block.TM}x${block.TN} matches reference`, tiles, async () => {
    const shapes: [number, number, number][] = [
      [1, 64, 64],
      [13, 64, 64],
      [2, 128, 192],
      [3, 192, 128],
      [13, 64, 3072],
      [37, 320, 64],
      [3, 64, 16384],
    ];
    await checkShapes(NN, shapes, "matmul_texture_n", WEIGHT);
    await checkBatchedSlice(NN, [5, 128, 64], WEIGHT);
    await checkBatchedSlice(NN, [9, 64, 3072], WEIGHT);
  });

  withTiles(`matmul_texture_k (weights, NT) ${block.TM}x${block.TN} matches reference`, tiles, async () => {
    const shapes: [number, number, number][] = [[1, 7, 64], [3, 101, 128], [13, 1000, 64], [2, 5, 192], [
      13,
      70,
      3072,
    ]];
    await checkShapes(NT, shapes, "matmul_texture_k", WEIGHT);
    await checkBatchedSlice(NT, [5, 6, 64], WEIGHT);
    await checkBatchedSlice(NT, [6, 6, 4096], WEIGHT);
  });
}

// Transposed weights read from transposed mirrors (matmul_texture_kt): the float64 reference, and the
// bits of matmul_texture_k (the kernel it replaces, which the recorded training hashes were made with).
// M = 1, 2, 3 (blocks shrunk to the window, not widened) and not a multiple of the block (13, 37, 2049:
// a last window of one row), N a multiple of 4 but not of 16 or 64 (12, 68, 1000), K a multiple of 64
// (A's windows): 64 .. 3072 (a window of 4 rows).
const ktShapes: [number, number, number][] = [
  [1, 128, 512],
  [2, 64, 128],
  [3, 12, 64],
  [8, 128, 512],
  [13, 128, 384],
  [37, 512, 128],
  [9, 12, 192],
  [33, 1000, 64],
  [9, 68, 3072],
  [2049, 64, 64],
  // N % 4 != 0: the transposed mirror's last texel of a row is padded (the tied unembedding of the
  // embedded model's 451 tokens).
  [3, 13, 64],
  [9, 451, 128],
  [37, 70, 128],
];
for (const transposed of [{ TM: 8, TN: 16, WG: 8 }, { TM: 2, TN: 4, WG: 4 }]) {
  const block = `${transposed.TM}x${transposed.TN}x${transposed.WG}`;
  const tiles: MatmulTiles = { ...llvmpipe, texture: { TM: 8, TN: 16, WG: 8, transposed } };
  withTiles(`matmul_texture_kt (transposed mirror) ${block} matches reference`, tiles, async () => {
    await checkShapes(NT, ktShapes, "matmul_texture_kt", WEIGHT);
    await checkShapes(NT, [[transposed.TM + 3, 64, 128]], "matmul_texture_kt", { ...WEIGHT, gelu: true });
    await checkBatchedSlice(NT, [11, 8, 64], WEIGHT);
  });

  withTiles(
    `matmul_texture_kt ${block} gives matmul_texture_k's bits, and the forward kernels' on B^T`,
    tiles,
    async () => {
      const runs = ktShapes.map(([M, N, K], i) => {
        const bValues = randomArray(N * K, 120 + i);
        const a = gpu.tensor([M, K], randomArray(M * K, 110 + i)), b = gpu.tensor([N, K], bValues);
        // B^T stored [K, N]: the forward's layout (matmul_texture_n; matmul_vec4_n for a few rows, the
        // scalar kernel for N % 4 != 0).
        const bt = gpu.tensor(
          [K, N],
          Float32Array.from({ length: K * N }, (_, e) => bValues[(e % N) * K + Math.floor(e / N)]),
        );
        const [bias, c0] = [gpu.tensor([N], randomArray(N, 130 + i)), randomArray(M * N, 140 + i)];
        const product = (kt: boolean) => {
          setMatmulTiles(gpu, {
            ...tiles,
            texture: { ...tiles.texture!, transposed: kt ? transposed : undefined },
          });
          assert.equal(
            matmulKernel(gpu, N, K, { ...NT, ...WEIGHT }, M),
            kt ? "matmul_texture_kt" : "matmul_texture_k",
          );
          const o = { ...NT, ...WEIGHT, bias, alpha: 0.75, beta: 1, gelu: i % 2 === 1 };
          return matmul(gpu, a, b, M, N, K, { ...o, out: gpu.tensor([M, N], c0) });
        };
        const forward = () => {
          assert.match(matmulKernel(gpu, N, K, WEIGHT, M), /^matmul(_texture_n|_vec4_n)?$/);
          const o = { ...WEIGHT, bias, alpha: 0.75, beta: 1, gelu: i % 2 === 1 };
          return matmul(gpu, a, bt, M, N, K, { ...o, out: gpu.tensor([M, N], c0) });
        };
        return { shape: [M, N, K], outs: [product(true), product(false), forward()] };
      });
      const got = await gpu.readMany(runs.flatMap((r) => r.outs));
      runs.forEach(({ shape }, i) => {
        const [kt, k, n] = [0, 1, 2].map((o) => new Uint32Array(got[3 * i + o].buffer));
        for (const [other, name] of [[k, "matmul_texture_k"], [n, "the forward product on B^T"]] as const) {
          const at = other.findIndex((x, j) => kt[j] !== x);
          assert.equal(at, -1, `[${shape}] against ${name}: C[${at}] ${kt[at]} vs ${other[at]}`);
        }
      });
    },
  );
}

withTiles(
  "matmul_texture_kt takes any N; a weight over the mirror budget uses matmul_texture_k",
  { ...textures, texture: { ...textures.texture!, transposed: { TM: 8, TN: 16, WG: 8 } } },
  async () => {
    await checkShapes(NT, [[9, 70, 128]], "matmul_texture_kt", WEIGHT); // N % 4 != 0: padded
    const [M, N, K] = [9, 64, 128];
    const a = randomArray(M * K, 150), w = randomArray(N * K, 151);
    const [A, W] = [gpu.tensor([M, K], a), gpu.tensor([N, K], w)];
    const budget = gpu.mirrorBudgetBytes, mirrored = gpu.mirrorBytes;
    const product = () => matmul(gpu, A, W, M, N, K, { ...NT, ...WEIGHT });
    try {
      gpu.mirrorBudgetBytes = mirrored + N * K * 4 - 1; // one float short of either mirror
      const fromBuffer = product();
      assert.equal(gpu.mirrorBytes, mirrored, "no mirror was made");
      gpu.mirrorBudgetBytes = budget;
      gpu.mirror(W, N, K); // the stored mirror, which matmul_texture_k reads
      gpu.mirrorBudgetBytes = gpu.mirrorBytes; // no room for the transposed one
      const fromStored = product();
      assert.equal(gpu.mirrorBytes, mirrored + N * K * 4, "no transposed mirror was made");
      gpu.mirrorBudgetBytes = budget;
      const fromTransposed = product();
      assert.equal(gpu.mirrorBytes, mirrored + 2 * N * K * 4, "now both mirrors exist");
      const got = await gpu.readMany([fromBuffer, fromStored, fromTransposed]);
      assertClose(got[0], matmulRef(a, w, M, N, K, NT), 1e-4 * Math.sqrt(K));
      assert.deepEqual(got[1], got[0], "matmul_texture_k sums as the buffer kernel does");
      assert.deepEqual(got[2], got[0], "matmul_texture_kt sums as matmul_texture_k does");
      W.destroy();
      assert.equal(gpu.mirrorBytes, mirrored, "destroying the weight frees both mirrors");
    } finally {
      gpu.mirrorBudgetBytes = budget;
    }
    assert.throws(
      () => gpu.mirror(A, 10, 128, "transposed"),
      /a transposed \[10,128\] texture of tensor \[9,128\]/,
    );
  },
);

withTiles("matmul_texture_k splits a transposed weight taller than the texture limit", textures, async () => {
  const [M, N, K] = [2, gpu.limits.maxTextureDimension2D + 300, 64];
  await checkShapes(NT, [[M, N, K]], "matmul_texture_k", WEIGHT);
});

withTiles(
  "weights that do not fit a texture, batches and transposed A use the buffer kernels",
  textures,
  async () => {
    await checkShapes(NN, [[3, 36, 64]], "matmul_vec4_n", WEIGHT); // N % 64 != 0
    await checkShapes(NN, [[3, 64, 5], [3, 64, 96]], "matmul_vec4_n", WEIGHT); // K % 64 != 0: no uniform windows of A
    await checkShapes(NT, [[3, 5, 8]], "matmul_vec4_k", WEIGHT); // K % 64 != 0
    await checkShapes(TN, [[3, 64, 5]], "matmul_vec4_n", WEIGHT); // A transposed
    assert.equal(matmulKernel(gpu, 64, 8, { ...WEIGHT, batch: 2 }), "matmul_vec4_n");
    assert.equal(matmulKernel(gpu, 64, 8, NN), "matmul_vec4_n"); // not marked as a weight
  },
);

// Both mirror layouts: the stored one (matmul_texture_n) and the transposed one (matmul_texture_kt).
const followed: [string, Layout, MatmulKernel][] = [["", NN, "matmul_texture_n"], [
  " (transposed mirror)",
  NT,
  "matmul_texture_kt",
]];
for (const [label, layout, kernel] of followed) {
  const tiles = { ...textures, texture: { ...textures.texture!, transposed: { TM: 4, TN: 8, WG: 8 } } };
  withTiles(
    `texture mirrors follow writes, copies and kernels that change the weight${label}`,
    tiles,
    async () => {
      // One weight W [K,N] (or [N,K]) changed three ways between products recorded in one stream; each
      // product must see W as it was at that point of the stream.
      const [M, N, K] = [5, 64, 64];
      const mirrored = gpu.mirrorBytes;
      const a = randomArray(M * K, 50);
      const versions = [randomArray(K * N, 51), randomArray(K * N, 52), randomArray(K * N, 53)];
      const delta = randomArray(K * N, 54);
      const A = gpu.tensor([M, K], a), W = gpu.tensor([K, N], versions[0]);
      assert.equal(matmulKernel(gpu, N, K, { ...layout, ...WEIGHT }, M), kernel);
      const product = () => matmul(gpu, A, W, M, N, K, { ...layout, ...WEIGHT });
      const first = product();
      gpu.write(W, versions[1]); // queue write (flushes recorded work first)
      const second = product();
      gpu.copy(gpu.tensor([K, N], versions[2]), W); // copy recorded in stream order
      const third = product();
      const sum = add(gpu, W, gpu.tensor([K, N], delta), K * N); // a kernel writing W: W = v2 + delta
      gpu.copy(sum, W);
      const fourth = product();
      const viaKernel = gpu.tensor([K, N], delta);
      add(gpu, gpu.tensor([K, N], versions[0]), viaKernel, K * N, { out: W }); // W = v0 + delta
      const fifth = product();
      const got = await gpu.readMany([first, second, third, fourth, fifth]);
      const plus = (x: Float32Array, y: Float32Array) => x.map((v, i) => v + y[i]);
      const expected = [
        versions[0],
        versions[1],
        versions[2],
        plus(versions[2], delta),
        plus(versions[0], delta),
      ];
      expected.forEach((w, i) =>
        assertClose(got[i], matmulRef(a, w, M, N, K, layout), 1e-4, `product ${i + 1}`)
      );
      W.destroy();
      assert.equal(gpu.mirrorBytes, mirrored, "destroying the weight frees its mirror");
    },
  );
}

// A longer than one uniform window: read from its own texture mirror in one dispatch per mirror chunk
// (matmul_texture_n_at and _kt_at), the same bits as the windows; 16390 rows of K = 64 take two chunks
// of a 16384-row texture limit, K = 3072 windows of 4 rows.
const longA: [Layout, MatmulKernel, MatmulTiles][] = [
  [NN, "matmul_texture_n", textures],
  [NT, "matmul_texture_kt", {
    ...textures,
    texture: { ...textures.texture!, transposed: { TM: 8, TN: 16, WG: 8 } },
  }],
];
for (const [layout, kernel, tiles] of longA) {
  withTiles(
    `${kernel} reads an A longer than one window from its texture mirror, with the windows' bits`,
    tiles,
    async () => {
      const rows = Math.min(gpu.limits.maxTextureDimension2D, 16384) + 6;
      const shapes: [number, number, number][] = [[300, 64, 64], [37, 128, 512], [13, 64, 3072], [
        rows,
        64,
        64,
      ]];
      await checkShapes(layout, shapes, kernel, WEIGHT);
      for (const [i, [M, N, K]] of shapes.entries()) {
        const a = gpu.tensor([M, K], randomArray(M * K, 40 + i)),
          w = gpu.tensor([K * N], randomArray(K * N, 50 + i));
        const c0 = randomArray(M * N, 55 + i);
        const product = (activations: boolean) => {
          setMatmulTiles(gpu, { ...tiles, texture: { ...tiles.texture!, activations } });
          const mirrored = gpu.mirrorBytes;
          const o = { ...layout, ...WEIGHT, out: gpu.tensor([M, N], c0), beta: 0.5, gelu: true };
          const out = matmul(gpu, a, w, M, N, K, o);
          gpu.flush();
          return { out, grew: gpu.mirrorBytes - mirrored };
        };
        const windows = product(false);
        assert.equal(windows.grew, K * N * 4, `[${M},${N},${K}]: only the weight is mirrored`);
        const textured = product(true);
        assert.equal(textured.grew, M * K * 4, `[${M},${N},${K}]: A is mirrored`);
        const [x, y] = await gpu.readMany([windows.out, textured.out]);
        assert.deepEqual(y, x, `[${M},${N},${K}]: both read A into the same sums`);
        a.destroy();
        w.destroy();
      }
    },
  );
}

withTiles(
  "a weight over the mirror budget is read from its buffer, with bit-identical results",
  textures,
  async () => {
    for (const [layout, [M, N, K]] of [[NN, [3, 64, 192]], [NT, [2, 70, 128]]] as const) {
      const a = randomArray(M * K, 60), w = randomArray(K * N, 61);
      const budget = gpu.mirrorBudgetBytes, mirrored = gpu.mirrorBytes;
      const [A, W] = [gpu.tensor([M, K], a), gpu.tensor([K * N], w)];
      const o = { ...layout, ...WEIGHT };
      gpu.mirrorBudgetBytes = mirrored + K * N * 4 - 1; // one float short
      try {
        const fromBuffer = matmul(gpu, A, W, M, N, K, o);
        assert.equal(gpu.mirrorBytes, mirrored, "no mirror was made");
        gpu.mirrorBudgetBytes = budget;
        const fromTexture = matmul(gpu, A, W, M, N, K, o);
        assert.equal(gpu.mirrorBytes, mirrored + K * N * 4, "now the mirror fits");
        const [buffered, textured] = await gpu.readMany([fromBuffer, fromTexture]);
        assertClose(buffered, matmulRef(a, w, M, N, K, layout), 1e-4 * Math.sqrt(K));
        assert.deepEqual(textured, buffered, `${JSON.stringify(layout)}: both kernels sum in the same order`);
      } finally {
        gpu.mirrorBudgetBytes = budget;
      }
    }
  },
);

// Weight gradients X^T dY: both operands mirrored whole, so M and N are multiples of 64 (rows of the
// mirrors) and K any length (768 and 1025 rows of an activation; 5 fewer than the register block).
withTiles(
  "matmul_texture_tn (transposed A) matches reference and the buffer kernel's bits",
  textures,
  async () => {
    const shapes: [number, number, number][] = [[64, 64, 5], [128, 384, 768], [512, 128, 1025], [
      192,
      64,
      33,
    ]];
    await checkShapes(TN, shapes, "matmul_texture_tn");
    await checkBatchedSlice(TN, [64, 128, 9], { batch: 1 });
    // Bit for bit the buffer kernel's products, accumulated (beta 1) and scaled (alpha) as gradients are.
    for (const [i, [M, N, K]] of shapes.entries()) {
      const a = gpu.tensor([K, M], randomArray(K * M, 70 + i)),
        b = gpu.tensor([K, N], randomArray(K * N, 80 + i));
      const c0 = randomArray(M * N, 90 + i);
      const product = (activations: boolean) => {
        setMatmulTiles(gpu, { ...textures, texture: { ...textures.texture!, activations } });
        assert.equal(
          matmulKernel(gpu, N, K, TN, M),
          activations ? "matmul_texture_tn" : "matmul_vec4_n",
        );
        return matmul(gpu, a, b, M, N, K, { ...TN, out: gpu.tensor([M, N], c0), alpha: 0.75, beta: 1 });
      };
      const [textured, buffered] = await gpu.readMany([product(true), product(false)]);
      assert.deepEqual(textured, buffered, `[${M},${N},${K}]: both kernels sum in the same order`);
    }
    // One tensor as both operands (key statistics' K^T K): its one mirror read twice, the same bits.
    {
      const [F, K] = [128, 300];
      const k = randomArray(K * F, 99), keys = gpu.tensor([K, F], k);
      const product = (activations: boolean) => {
        setMatmulTiles(gpu, { ...textures, texture: { ...textures.texture!, activations } });
        const mirrored = gpu.mirrorBytes;
        const out = matmul(gpu, keys, keys, F, F, K, {
          ...TN,
          out: gpu.tensor([F, F], new Float32Array(F * F)),
        });
        gpu.flush();
        return { out, grew: gpu.mirrorBytes - mirrored };
      };
      const textured = product(true), buffered = product(false);
      assert.equal(textured.grew, K * F * 4, "one mirror of the keys");
      const [x, y] = await gpu.readMany([textured.out, buffered.out]);
      assertClose(x, matmulRef(k, k, F, F, K, TN), 1e-4 * Math.sqrt(K));
      assert.deepEqual(x, y, "K^T K: both kernels sum in the same order");
      keys.destroy();
    }
    setMatmulTiles(gpu, textures);
    // Not multiples of 64, or switched off: the buffer kernel.
    await checkShapes(TN, [[3, 64, 5], [64, 36, 5], [96, 64, 7]], "matmul_vec4_n");
  },
);

// The GELU epilogue (c_fc with its activation in one kernel) in every kernel that can run it.
const geluCases: [string, MatmulTiles, Layout, MatmulKernel, [number, number, number]][] = [
  ["scalar", { ...llvmpipe, vec4: false }, NN, "matmul", [13, 17, 9]],
  ["vec4 along N", llvmpipe, NN, "matmul_vec4_n", [13, 64, 9]],
  ["vec4 along K", llvmpipe, NT, "matmul_vec4_k", [5, 7, 12]],
  ["workgroup tiles", tiled, TN, "matmul_tiled", [13, 17, 9]],
  ["texture along N", textures, NN, "matmul_texture_n", [13, 128, 64]],
  ["texture along K", textures, NT, "matmul_texture_k", [3, 70, 128]],
  ["texture with transposed A", textures, TN, "matmul_texture_tn", [64, 128, 9]],
];
for (const [label, tiles, layout, kernel, shape] of geluCases) {
  withTiles(`matmul with the gelu_new epilogue: ${label}`, tiles, async () => {
    await checkShapes(layout, [shape], kernel, { gelu: true, weight: kernel.startsWith("matmul_texture") });
  });
}

Deno.test("matmul rejects operands too small for the batch strides", () => {
  assert.throws(
    () => matmul(gpu, gpu.zeros([6]), gpu.zeros([6]), 2, 3, 3, { batch: 2, strides: { a: 6, b: 0, c: 6 } }),
    /too small for M=2 N=3 K=3/,
  );
});

/**
 * matmul of 16-bit weights (f16 and bf16, both B layouts, bias, beta, odd sizes) against the float64
 * reference, through whichever shader this device selects for each dtype (named in failures).
 */
async function checkHalfMatmul(): Promise<void> {
  const [M, N, K] = [5, 7, 9];
  const r = randomArray(M * K + N + M * N + 4 * N * K, 31);
  const A = r.subarray(0, M * K),
    bias = r.subarray(M * K, M * K + N),
    C0 = r.subarray(M * K + N, M * K + N + M * N);
  for (const dtype of ["f16", "bf16"] as const) {
    // Random finite 16-bit patterns: sign, an exponent well inside the range, any mantissa.
    const bits = Uint16Array.from({ length: N * K }, (_, i) => {
      const u = Math.floor(Math.abs(r[M * K + N + M * N + i]) * 65535);
      return dtype === "f16"
        ? (u & 0x83ff) | ((12 + (u % 6)) << 10) // exponents 12..17: |b| in [2^-3, 2^3)
        : (u & 0x807f) | ((124 + (u % 6)) << 7);
    });
    const B = dtype === "f16" ? f16ArrayToF32(bits) : bf16ArrayToF32(bits);
    for (const transB of [false, true]) {
      const b = gpu.tensor(transB ? [N, K] : [K, N], bits, dtype);
      const out = gpu.tensor([M, N], C0);
      matmul(gpu, gpu.tensor([M, K], A), b, M, N, K, { transB, bias: gpu.tensor([N], bias), beta: 0.5, out });
      const ref = matmulRef(A, B, M, N, K, { transB, bias }).map((v, i) => v + 0.5 * C0[i]);
      assertClose(await out.read(), ref, 1e-4, `${dtype} transB=${transB} (${halfMatmulShader(gpu, dtype)})`);
    }
    assert.deepEqual(
      await gpu.tensor([N, K], bits, dtype).read(),
      B,
      `${dtype} tensors read back widened exactly`,
    );
  }
}

Deno.test("matmul_half: f16 and bf16 weights match the float64 reference (both B layouts, bias, beta, odd sizes)", async () => {
  await checkHalfMatmul();
  assert.throws(
    () =>
      matmul(gpu, gpu.zeros([9, 5]), gpu.tensor([9, 7], new Uint16Array(63), "f16"), 5, 7, 9, {
        transA: true,
      }),
    /16-bit B needs an untransposed A/,
  );
});

// The native shader-f16 variant (shaders/matmul_f16.wgsl). Run here when this device has the feature;
// otherwise in a child process on Vulkan (Mesa's lavapipe has shader-f16, its GL driver does not), so
// that the suite checks it on a machine without a GPU too. Where no adapter has the feature, the
// shader is compiled with f16 spelled f32 (everything but the f16 type itself is validated) and the
// test says that the variant's arithmetic was not checked.
const F16_TEST = "matmul_f16.wgsl: f16 weights read natively (shader-f16) match the float64 reference";
Deno.test(F16_TEST, async () => {
  if (gpu.device.features.has("shader-f16")) {
    assert.equal(halfMatmulShader(gpu, "f16"), "matmul_f16.wgsl");
    assert.equal(halfMatmulShader(gpu, "bf16"), "matmul_half.wgsl", "bf16 has no WGSL type");
    await checkHalfMatmul();
    console.log(`shader-f16 checked on ${gpu.describe()}`);
    return;
  }
  assert.equal(halfMatmulShader(gpu, "f16"), "matmul_half.wgsl", "without shader-f16 f16 is unpacked");
  if (Deno.env.get("LOCUS_F16_CHILD")) {
    // The shader with its imports as the engine assembles it, with matmul's parameters.
    const params = "const TM = 4u; const TN = 4u; const WG_X = 8u; const WG_Y = 8u; const BK = 8u;" +
      "const TRANS_A = false; const TRANS_B = true; const GELU = false; const ACT = 0u; const HALF_BF16 = false;";
    const code = [params, gpu.shaderSource("matmul_f16.wgsl")].join("\n").replace("enable f16;", "")
      .replaceAll("f16", "f32");
    gpu.device.pushErrorScope("validation");
    gpu.device.createComputePipeline({
      layout: "auto",
      compute: { module: gpu.device.createShaderModule({ code }), entryPoint: "matmul_half" },
    });
    const error = await gpu.device.popErrorScope();
    assert.equal(error?.message ?? null, null, "matmul_f16.wgsl (f16 spelled f32) compiles");
    console.warn(
      `NOT CHECKED: no adapter here has shader-f16 (${gpu.describe()}); matmul_f16.wgsl was only compiled ` +
        "with f16 spelled f32",
    );
    return;
  }
  const child = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--filter", F16_TEST, "tests/matmul_variants_test.ts"],
    env: { DENO_WEBGPU_BACKEND: "vulkan", LOCUS_F16_CHILD: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(child.stdout) + new TextDecoder().decode(child.stderr);
  assert(child.success, `the Vulkan child process failed:\n${text}`);
  const line = text.split("\n").find((l) => /shader-f16 checked|NOT CHECKED/.test(l));
  assert(line, `the child process ran no check:\n${text}`);
  console.log(`${gpu.describe()} has no shader-f16; in a child process on Vulkan: ${line}`);
});
