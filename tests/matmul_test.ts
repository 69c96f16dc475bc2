// engine/ops.ts's matmul against the float64 reference: every storage layout (NN, NT, TN, TT) at odd
// sizes, alpha/beta and batch strides, every tile parameter set giving the same result, column slices.
// (tests/matmul_variants_test.ts covers each kernel variant and the 16-bit weights.)
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { matmul, matmulTiles, setMatmulTiles } from "../engine/ops.ts";
import { matmulRef } from "./reference.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();

// Odd shapes on purpose: M=1 (a single token), sizes not multiples of the tiles.
const shapes: [number, number, number][] = [[1, 1, 1], [1, 7, 5], [13, 17, 9], [37, 70, 129], [64, 64, 64]];

for (const transA of [false, true]) {
  for (const transB of [false, true]) {
    Deno.test(`matmul transA=${transA} transB=${transB} matches float64 reference`, async () => {
      for (const [M, N, K] of shapes) {
        const a = randomArray(M * K, 1), b = randomArray(K * N, 2), bias = randomArray(N, 3);
        const ta = gpu.tensor([M * K], a), tb = gpu.tensor([K * N], b), tbias = gpu.tensor([N], bias);
        const out = await matmul(gpu, ta, tb, M, N, K, { transA, transB, bias: tbias }).read();
        assertClose(
          out,
          matmulRef(a, b, M, N, K, { transA, transB, bias }),
          1e-4 * Math.sqrt(K),
          `[${M},${N},${K}]`,
        );
      }
    });
  }
}

Deno.test("matmul alpha/beta accumulate and batch strides", async () => {
  const [M, N, K, batch] = [5, 6, 7, 3];
  const a = randomArray(batch * M * K, 4), b = randomArray(K * N, 5), c0 = randomArray(batch * M * N, 6);
  const out = gpu.tensor([batch, M, N], c0);
  matmul(gpu, gpu.tensor([a.length], a), gpu.tensor([b.length], b), M, N, K, {
    alpha: 0.5,
    beta: 1,
    out,
    batch,
    strides: { a: M * K, b: 0, c: M * N },
  });
  const got = await out.read();
  for (let i = 0; i < batch; i++) {
    const ref = matmulRef(a.subarray(i * M * K, (i + 1) * M * K), b, M, N, K);
    const exp = ref.map((v, j) => 0.5 * v + c0[i * M * N + j]);
    assertClose(got.subarray(i * M * N, (i + 1) * M * N), exp, 1e-5, `batch ${i}`);
  }
});

Deno.test("matmul tile parameters all give the same result", async () => {
  const saved = matmulTiles(gpu);
  const [M, N, K] = [19, 23, 11];
  const a = randomArray(M * K, 7), b = randomArray(K * N, 8);
  const ref = matmulRef(a, b, M, N, K);
  try {
    for (
      const tiles of [{ TM: 1, TN: 1, WG_X: 8, WG_Y: 1 }, { TM: 4, TN: 8, WG_X: 4, WG_Y: 2 }, {
        TM: 8,
        TN: 4,
        WG_X: 8,
        WG_Y: 8,
      }]
    ) {
      setMatmulTiles(gpu, tiles);
      const out = await matmul(gpu, gpu.tensor([M * K], a), gpu.tensor([K * N], b), M, N, K).read();
      assertClose(out, ref, 1e-4, JSON.stringify(tiles));
    }
  } finally {
    setMatmulTiles(gpu, saved);
  }
});

Deno.test("matmul of few rows (a register block of exactly M rows; grouped, both vec4 layouts): the reference, and each row's bits alone", async () => {
  const TM = matmulTiles(gpu).TM;
  const [N, K, batch] = [24, 36, 3];
  for (const M of [5, TM + 1, TM + 3, 2 * TM]) {
    for (const transB of [false, true]) {
      const a = randomArray(batch * M * K, M), b = randomArray(batch * K * N, M + 1);
      const strides = { a: M * K, b: K * N, c: M * N };
      const got = await matmul(gpu, gpu.tensor([a.length], a), gpu.tensor([b.length], b), M, N, K, {
        transB,
        batch,
        strides,
      }).read();
      for (let g = 0; g < batch; g++) {
        const [ag, bg] = [a.subarray(g * M * K, (g + 1) * M * K), b.subarray(g * K * N, (g + 1) * K * N)];
        const where = `M=${M} transB=${transB} batch ${g}`;
        assertClose(
          got.subarray(g * M * N, (g + 1) * M * N),
          matmulRef(ag, bg, M, N, K, { transB }),
          1e-3,
          where,
        );
        // The first and last rows alone (a one-row block): the same sums in the same order.
        for (const r of [0, M - 1]) {
          const row = gpu.tensor([K], ag.subarray(r * K, (r + 1) * K));
          const alone = await matmul(gpu, row, gpu.tensor([K * N], bg), 1, N, K, { transB }).read();
          assert.deepEqual(alone, got.subarray((g * M + r) * N, (g * M + r + 1) * N), `${where} row ${r}`);
        }
      }
    }
  }
});

Deno.test("matmul writes a column slice of a wider output (ldc, offset)", async () => {
  const [M, N, K, wide] = [3, 4, 5, 10];
  const a = randomArray(M * K, 9), b = randomArray(K * N, 10);
  const out = gpu.zeros([M, wide]);
  matmul(gpu, gpu.tensor([M * K], a), gpu.tensor([K * N], b), M, N, K, { out, ldc: wide, outOffset: 3 });
  const got = await out.read();
  const ref = matmulRef(a, b, M, N, K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < wide; n++) {
      const expected = n >= 3 && n < 3 + N ? ref[m * N + n - 3] : 0;
      assertClose([got[m * wide + n]], [expected], 1e-5, `C[${m},${n}]`);
    }
  }
});
