// The kernels the non-GPT-2 families add, each against a float64 reference written out here, and
// each backward against central finite differences of that reference: grouped-query attention with a
// score scale, tanh soft-cap and sliding window; rotary embeddings (interleaved and half-split,
// partial); gated activations (SiLU, exact and tanh GELU); RMSNorm with Gemma's (1 + w) on strided
// per-head rows.
import assert from "node:assert/strict";
import {
  attentionBackward,
  attentionBackwardLse,
  gluBackward,
  layernormBackward,
} from "../engine/backward_ops.ts";
import type { Activation } from "../engine/config.ts";
import type { AttentionKernels } from "../engine/kernel_choice.ts";
import { getGpu } from "../engine/gpu.ts";
import {
  attention,
  attentionKernels,
  glu,
  layernorm,
  matmulTiles,
  rope,
  setAttentionKernels,
  setMatmulTiles,
} from "../engine/ops.ts";
import { finiteDifferenceGradient } from "./reference_backward.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();

type Arr = ArrayLike<number>;

function dot(a: Arr, b: Arr): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------- attention

interface AttentionCase {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  hd: number;
  scale: number;
  softcap: number | null;
  window: number | null;
}

/** Float64 attention over qkv [B*T, (H + 2 Hkv) hd] = [q heads | k heads | v heads]: y [B*T, H hd]. */
function attention64(qkv: Arr, c: AttentionCase): Float64Array {
  const { B, T, H, Hkv, hd } = c, width = (H + 2 * Hkv) * hd;
  const y = new Float64Array(B * T * H * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hkv));
      for (let t = 0; t < T; t++) {
        const j0 = c.window ? Math.max(0, t + 1 - c.window) : 0;
        const scores: number[] = [];
        for (let j = j0; j <= t; j++) {
          let s = 0;
          for (let i = 0; i < hd; i++) {
            s += qkv[(b * T + t) * width + h * hd + i] * qkv[(b * T + j) * width + (H + g) * hd + i];
          }
          s *= c.scale;
          scores.push(c.softcap ? c.softcap * Math.tanh(s / c.softcap) : s);
        }
        const mx = Math.max(...scores),
          e = scores.map((s) => Math.exp(s - mx)),
          z = e.reduce((a, b) => a + b, 0);
        for (let j = j0; j <= t; j++) {
          for (let i = 0; i < hd; i++) {
            y[(b * T + t) * H * hd + h * hd + i] += (e[j - j0] / z) *
              qkv[(b * T + j) * width + (H + Hkv + g) * hd + i];
          }
        }
      }
    }
  }
  return y;
}

const ATTENTION_CASES: [string, AttentionCase][] = [
  ["grouped (4 query heads, 2 kv), soft-cap 0.8, window 3", {
    B: 2,
    T: 6,
    H: 4,
    Hkv: 2,
    hd: 3,
    scale: 0.9,
    softcap: 0.8,
    window: 3,
  }],
  ["multi-query (3 heads, 1 kv), no cap, no window", {
    B: 1,
    T: 5,
    H: 3,
    Hkv: 1,
    hd: 4,
    scale: 0.5,
    softcap: null,
    window: null,
  }],
  ["multi-head (2 heads, 2 kv), soft-cap 1.1, window 4", {
    B: 2,
    T: 7,
    H: 2,
    Hkv: 2,
    hd: 5,
    scale: 0.7,
    softcap: 1.1,
    window: 4,
  }],
];

for (const [name, c] of ATTENTION_CASES) {
  Deno.test(`attention ${name}: forward and backward against float64 and finite differences`, async () => {
    const width = (c.H + 2 * c.Hkv) * c.hd, R = c.B * c.T, d = c.H * c.hd;
    const qkv = randomArray(R * width, 11, 1.5);
    const opts = { nKvHead: c.Hkv, scale: c.scale, softcap: c.softcap, window: c.window };
    const probs = gpu.empty([c.B, c.H, c.T, c.T]);
    const tqkv = gpu.tensor([R, width], qkv);
    const y = attention(gpu, tqkv, c.B, c.T, d, c.H, { ...opts, probs });
    assertClose(await y.read(), attention64(qkv, c), 1e-5, "y");
    // Loss sum(y * G): its gradient w.r.t. qkv from the kernel vs finite differences in float64.
    const G = randomArray(R * d, 12);
    const dqkv = attentionBackward(gpu, gpu.tensor([R, d], G), tqkv, probs, c.B, c.T, d, c.H, opts);
    const fd = finiteDifferenceGradient((x) => dot(attention64(x, c), G), Float64Array.from(qkv));
    const gotProbsPath = await dqkv.read();
    assertClose(gotProbsPath, fd, 1e-4, "dqkv");
    // The recomputing path: only each row's log-sum-exp [B, H, T] is kept (garbage beforehand).
    const lse = gpu.tensor([c.B, c.H, c.T], new Array(c.B * c.H * c.T).fill(9));
    const yLse = attention(gpu, tqkv, c.B, c.T, d, c.H, { ...opts, lse });
    assertClose(await yLse.read(), attention64(qkv, c), 1e-5, "y (lse)");
    const dqkvLse = attentionBackwardLse(gpu, gpu.tensor([R, d], G), tqkv, lse, c.B, c.T, d, c.H, {
      ...opts,
      dqkv: gpu.tensor([R, width], new Array(R * width).fill(9)),
    });
    const gotLse = await dqkvLse.read();
    assertClose(gotLse, fd, 1e-4, "dqkv (lse)");
    assertClose(gotLse, gotProbsPath, 1e-5, "dqkv (lse) against the probs path");
  });
}

Deno.test("attention from the rows' log-sum-exp with offsets, a cache, grouped heads, soft-cap and window: the rows of the full float64 gradient", async () => {
  // Sequence b's Tq rows sit at positions starts[b] + i (rows past T are padding), its earlier keys
  // in a cache after two NaN rows that must never be read. Their gradient is the full sequence's
  // with dy zero before starts[b] (no earlier query exists), here by finite differences of attention64.
  const c = { ...ATTENTION_CASES[0][1], B: 3, T: 9 };
  const [Tq, startsOf] = [5, [0, 4, 6]];
  const width = (c.H + 2 * c.Hkv) * c.hd, d = c.H * c.hd;
  const qkv = randomArray(c.B * c.T * width, 61, 1.5), dyRows = randomArray(c.B * Tq * d, 62);
  const G = new Float64Array(c.B * c.T * d), rowsOf = new Float32Array(c.B * Tq * width).fill(0.5);
  const live = (b: number, i: number) => startsOf[b] + i < c.T;
  for (let b = 0; b < c.B; b++) {
    for (let i = 0; i < Tq && live(b, i); i++) {
      const t = startsOf[b] + i;
      G.set(dyRows.subarray((b * Tq + i) * d, (b * Tq + i + 1) * d), (b * c.T + t) * d);
      rowsOf.set(qkv.subarray((b * c.T + t) * width, (b * c.T + t + 1) * width), (b * Tq + i) * width);
    }
  }
  const fd = finiteDifferenceGradient((x) => dot(attention64(x, c), G), Float64Array.from(qkv));
  const yFull = attention64(qkv, c);
  const [wantY, wantD] = [new Float64Array(c.B * Tq * d), new Float64Array(c.B * Tq * width)];
  for (let b = 0; b < c.B; b++) {
    for (let i = 0; i < Tq && live(b, i); i++) {
      const t = startsOf[b] + i;
      wantY.set(yFull.subarray((b * c.T + t) * d, (b * c.T + t + 1) * d), (b * Tq + i) * d);
      wantD.set(fd.subarray((b * c.T + t) * width, (b * c.T + t + 1) * width), (b * Tq + i) * width);
    }
  }
  const cache = new Float32Array((2 + c.B * c.T) * width).fill(NaN);
  cache.set(qkv, 2 * width);
  const opts = {
    nKvHead: c.Hkv,
    scale: c.scale,
    softcap: c.softcap,
    window: c.window,
    queries: {
      Tq,
      offsets: gpu.tensor([2 * c.B], [...startsOf, ...startsOf.map((_, b) => 2 + b * c.T)], "u32"),
      cache: gpu.tensor([2 + c.B * c.T, width], cache),
    },
  };
  const tqkv = gpu.tensor([c.B * Tq, width], rowsOf), dy = gpu.tensor([c.B * Tq, d], dyRows);
  const lse = gpu.empty([c.B, c.H, Tq]);
  const y = attention(gpu, tqkv, c.B, c.T, d, c.H, { ...opts, lse });
  const dLse = attentionBackwardLse(gpu, dy, tqkv, lse, c.B, c.T, d, c.H, {
    ...opts,
    dqkv: gpu.tensor([c.B * Tq, width], new Array(c.B * Tq * width).fill(9)),
  });
  const probs = gpu.empty([c.B, c.H, Tq, c.T]);
  attention(gpu, tqkv, c.B, c.T, d, c.H, { ...opts, probs });
  const dProbs = attentionBackward(gpu, dy, tqkv, probs, c.B, c.T, d, c.H, opts);
  const [gy, gl, gp] = await gpu.readMany([y, dLse, dProbs]);
  assertClose(gy, wantY, 1e-5, "y");
  assertClose(gl, wantD, 1e-4, "dqkv (lse)");
  assertClose(gl, gp, 1e-5, "dqkv (lse) against the probs path");
  assert.throws(() => attention(gpu, tqkv, c.B, c.T, d, c.H, { ...opts, lse, probs }), /probs or lse/);
  assert.throws(
    () => attentionBackwardLse(gpu, dy, tqkv, gpu.empty([2]), c.B, c.T, d, c.H, opts),
    /attentionBackwardLse: lse has 2 values, needs 60/,
  );
});

Deno.test("attention kernels: any query rows per invocation and any backward block give the same bits (texels or buffers, offsets and padding)", async () => {
  // ATTENTION_CASES[0] reads keys from texture mirrors (hd = 4), [2] from buffers (hd = 5); the offset
  // runs put sequence b's Tq = 5 rows at starts[b] + i (rows past T are padding) after a cache.
  const chosen = attentionKernels(gpu);
  const choices: AttentionKernels[] = [
    { queryRows: 1, backwardBlock: { TM: 8, TN: 4 } },
    { queryRows: 2, backwardBlock: { TM: 4, TN: 16 } },
    { queryRows: 4, backwardBlock: { TM: 2, TN: 8 } },
    { queryRows: 8, backwardBlock: { TM: 3, TN: 12 } },
  ];
  const runs: Float32Array[][] = [];
  try {
    for (const choice of choices) {
      setAttentionKernels(gpu, choice);
      const got: Float32Array[] = [];
      for (const c of [ATTENTION_CASES[0][1], ATTENTION_CASES[2][1]]) {
        const width = (c.H + 2 * c.Hkv) * c.hd, d = c.H * c.hd, T = 9, Tq = 5, starts = [0, 6];
        const opts = { nKvHead: c.Hkv, scale: c.scale, softcap: c.softcap, window: c.window };
        const full = gpu.tensor([c.B * T, width], randomArray(c.B * T * width, 71, 1.5));
        const queries = {
          Tq,
          offsets: gpu.tensor([2 * c.B], [...starts, ...starts.map((_, b) => b * T)], "u32"),
          cache: full,
        };
        const rowsOf = gpu.tensor([c.B * Tq, width], randomArray(c.B * Tq * width, 72, 1.5));
        for (const q of [undefined, queries]) {
          const [qkv, rows] = q ? [rowsOf, Tq] : [full, T];
          const o = { ...opts, queries: q };
          const probs = gpu.empty([c.B, c.H, rows, T]), lse = gpu.empty([c.B, c.H, rows]);
          const y = attention(gpu, qkv, c.B, T, d, c.H, { ...o, probs });
          const yLse = attention(gpu, qkv, c.B, T, d, c.H, { ...o, lse });
          const dy = gpu.tensor([c.B * rows, d], randomArray(c.B * rows * d, 73));
          const dqkv = attentionBackward(gpu, dy, qkv, probs, c.B, T, d, c.H, o);
          got.push(...await gpu.readMany([y, probs, yLse, lse, dqkv]));
        }
      }
      runs.push(got);
    }
  } finally {
    setAttentionKernels(gpu, chosen);
  }
  const what = ["output", "probabilities", "output (lse)", "lse", "dqkv"];
  for (const [k, got] of runs.entries()) {
    got.forEach((g, i) =>
      assert.deepEqual(g, runs[0][i], `${JSON.stringify(choices[k])}: ${what[i % 5]} (${i})`)
    );
  }
  assert.throws(
    () => setAttentionKernels(gpu, { queryRows: 0, backwardBlock: { TM: 4, TN: 16 } }),
    /positive integers/,
  );
  assert.throws(
    () => setAttentionKernels(gpu, { queryRows: 1, backwardBlock: { TM: 4, TN: 6 } }),
    /TN a multiple of 4/,
  );
});

Deno.test("attention with a soft-cap: the cap changes the result (the check above is not vacuous)", () => {
  const c = ATTENTION_CASES[0][1];
  const qkv = randomArray(c.B * c.T * (c.H + 2 * c.Hkv) * c.hd, 11, 1.5);
  const capped = attention64(qkv, c), uncapped = attention64(qkv, { ...c, softcap: null });
  assert.ok(Math.max(...capped.map((v, i) => Math.abs(v - uncapped[i]))) > 0.05);
});

Deno.test("attention and its backward from texture mirrors: the float64 result, the buffer kernels' bits", async () => {
  // Width (4 + 2*2) * 16 = 128: whole texels, rows of 64 floats, so the mirror is used where matmuls read
  // textures (forced here on any adapter); grouped heads, cap and window as in the first case.
  const c: AttentionCase = { ...ATTENTION_CASES[0][1], T: 7, hd: 16 };
  const width = (c.H + 2 * c.Hkv) * c.hd, R = c.B * c.T, d = c.H * c.hd;
  const qkv = randomArray(R * width, 13, 1.5);
  // NaN in the keys and values of each sequence's last position: only its own query may read them.
  const poisoned = Float32Array.from(qkv);
  for (let b = 0; b < c.B; b++) poisoned.fill(NaN, (b * c.T + c.T - 1) * width + d, (b * c.T + c.T) * width);
  const opts = { nKvHead: c.Hkv, scale: c.scale, softcap: c.softcap, window: c.window };
  const saved = matmulTiles(gpu);
  const run = (texture: boolean, values: Float32Array) => {
    setMatmulTiles(gpu, { ...saved, texture: { TM: 8, TN: 16, WG: 8, activations: texture } });
    const [t, mirrored] = [gpu.tensor([R, width], values), gpu.mirrorBytes];
    const probs = gpu.empty([c.B, c.H, c.T, c.T]);
    const y = attention(gpu, t, c.B, c.T, d, c.H, { ...opts, probs });
    assert.equal(gpu.mirrorBytes - mirrored, texture ? R * width * 4 : 0, "qkv mirrored (or not)");
    const dy = gpu.tensor([R, d], randomArray(R * d, 14));
    const dqkv = attentionBackward(gpu, dy, t, probs, c.B, c.T, d, c.H, opts);
    assert.equal(gpu.mirrorBytes - mirrored, texture ? R * (width + d) * 4 : 0, "dy mirrored (or not)");
    return [y, probs, attention(gpu, t, c.B, c.T, d, c.H, opts), dqkv];
  };
  try {
    const [textured, buffered, poisonedRun] = [run(true, qkv), run(false, qkv), run(true, poisoned)];
    const got = await gpu.readMany([...textured, ...buffered, poisonedRun[0]]);
    const expected = attention64(qkv, c);
    assertClose(got[0], expected, 1e-5, "y");
    got.slice(0, 4).forEach((g, i) => assert.deepEqual(g, got[4 + i], `output ${i}: texture vs buffer`));
    for (let b = 0; b < c.B; b++) {
      const rows = [b * c.T * d, (b * c.T + c.T - 1) * d];
      assertClose(got[8].subarray(...rows), expected.subarray(...rows), 1e-5, `poisoned, sequence ${b}`);
    }
  } finally {
    setMatmulTiles(gpu, saved);
  }
});

Deno.test("attention and its backward with offsets and a cache from texture mirrors: the buffer kernels' bits, cache rows never past the prefix", async () => {
  // A suffix forward's attention (v*'s): each sequence's Tq = 4 rows from starts[b] on, its earlier keys
  // and values in a cache whose mirror serves every call; width (4 + 2*2) * 16 = 128 (whole texels).
  const c: AttentionCase = { ...ATTENTION_CASES[0][1], B: 3, T: 9, hd: 16 };
  const [Tq, starts] = [4, [0, 3, 5]];
  const width = (c.H + 2 * c.Hkv) * c.hd, d = c.H * c.hd;
  const cacheRows = 2 + c.B * c.T;
  const cacheValues = randomArray(cacheRows * width, 71, 1.5);
  // Cached positions at or after a sequence's start must never be read: NaN there.
  starts.forEach((s, b) => cacheValues.fill(NaN, (2 + b * c.T + s) * width, (2 + (b + 1) * c.T) * width));
  const rowsValues = randomArray(c.B * Tq * width, 72, 1.5), dyValues = randomArray(c.B * Tq * d, 73);
  const saved = matmulTiles(gpu);
  const run = (texture: boolean) => {
    setMatmulTiles(gpu, { ...saved, texture: { TM: 8, TN: 16, WG: 8, activations: texture } });
    const cache = gpu.tensor([cacheRows, width], cacheValues),
      qkv = gpu.tensor([c.B * Tq, width], rowsValues);
    const mirrored = gpu.mirrorBytes;
    const probs = gpu.empty([c.B, c.H, Tq, c.T]);
    const queries = {
      Tq,
      offsets: gpu.tensor([2 * c.B], [...starts, ...starts.map((_, b) => 2 + b * c.T)], "u32"),
      cache,
    };
    const opts = { nKvHead: c.Hkv, scale: c.scale, softcap: c.softcap, window: c.window, queries };
    const y = attention(gpu, qkv, c.B, c.T, d, c.H, { ...opts, probs });
    assert.equal(gpu.mirrorBytes - mirrored, texture ? (cacheRows + c.B * Tq) * width * 4 : 0, "mirrors");
    const dy = gpu.tensor([c.B * Tq, d], dyValues);
    const dqkv = attentionBackward(gpu, dy, qkv, probs, c.B, c.T, d, c.H, opts);
    assert.equal(
      gpu.mirrorBytes - mirrored,
      texture ? ((cacheRows + c.B * Tq) * width + c.B * Tq * d) * 4 : 0,
      "the backward's mirrors: dy's added, the cache's and qkv's reused",
    );
    return [y, probs, dqkv];
  };
  try {
    const got = await gpu.readMany([...run(true), ...run(false)]);
    assert.ok(got[0].every(Number.isFinite), "no cached row past a sequence's start was read");
    assert.ok(got[2].every(Number.isFinite), "nor by the backward");
    assert.deepEqual(got[0], got[3], "y: texture vs buffer");
    assert.deepEqual(got[1], got[4], "probs: texture vs buffer");
    assert.deepEqual(got[2], got[5], "dqkv: texture vs buffer");
  } finally {
    setMatmulTiles(gpu, saved);
  }
});

// ---------------------------------------------------------------- rotary

function rope64(
  qkv: Arr,
  R: number,
  T: number,
  H: number,
  Hkv: number,
  hd: number,
  dims: number,
  interleaved: boolean,
  inv: Arr,
  starts?: number[],
) {
  const out = Float64Array.from(qkv), width = (H + 2 * Hkv) * hd;
  for (let r = 0; r < R; r++) {
    for (let head = 0; head < H + Hkv; head++) {
      for (let i = 0; i < dims / 2; i++) {
        const [a, b] = interleaved ? [2 * i, 2 * i + 1] : [i, i + dims / 2];
        const position = (r % T) + (starts ? starts[Math.floor(r / T)] : 0);
        // The angle is the f32 product, as the kernel and transformers (in float32) compute it.
        const base = r * width + head * hd, angle = Math.fround(position * inv[i]);
        const x0 = qkv[base + a], x1 = qkv[base + b];
        out[base + a] = x0 * Math.cos(angle) - x1 * Math.sin(angle);
        out[base + b] = x1 * Math.cos(angle) + x0 * Math.sin(angle);
      }
    }
  }
  return out;
}

for (const interleaved of [true, false]) {
  Deno.test(`rope (${interleaved ? "interleaved pairs" : "half-split"}, partial): float64 reference; sign -1 inverts it`, async () => {
    const [B, T, H, Hkv, hd, dims] = [2, 5, 4, 2, 6, 4];
    const R = B * T, width = (H + 2 * Hkv) * hd;
    const x = randomArray(R * width, 21);
    const inv = Float32Array.from({ length: dims / 2 }, (_, i) => Math.pow(100, -2 * i / dims));
    const t = gpu.tensor([R, width], x), freq = gpu.tensor([dims / 2], inv);
    const shape = { R, T, H, Hkv, hd, dims, interleaved };
    rope(gpu, t, freq, shape);
    assertClose(await t.read(), rope64(x, R, T, H, Hkv, hd, dims, interleaved, inv), 1e-5, "rotated");
    rope(gpu, t, freq, shape, -1);
    assertClose(await t.read(), x, 1e-5, "rotated back");
    // Rows from per-sequence positions on (a forward after a cached prefix).
    const starts = [3, 11];
    rope(gpu, t, freq, { ...shape, starts: gpu.tensor([B], starts, "u32") });
    assertClose(await t.read(), rope64(x, R, T, H, Hkv, hd, dims, interleaved, inv, starts), 1e-5, "offsets");
  });
}

Deno.test("rope at positions up to 4095: cos and sin as exact as float64's of the f32 angle", async () => {
  // Angles up to 4095 radians, where GPU builtins lose accuracy (shaders/rope.wgsl computes its own).
  const [T, H, Hkv, hd, dims] = [4096, 1, 1, 4, 4];
  const width = (H + 2 * Hkv) * hd;
  const x = randomArray(T * width, 22);
  const inv = Float32Array.from([1, 0.37]);
  const t = gpu.tensor([T, width], x);
  rope(gpu, t, gpu.tensor([dims / 2], inv), { R: T, T, H, Hkv, hd, dims, interleaved: false });
  const ref = rope64(x, T, T, H, Hkv, hd, dims, false, inv);
  assertClose(await t.read(), ref, 2e-6, "rotated at long positions");
});

// ---------------------------------------------------------------- gated activations

/** erf by its Taylor series (exact to ~1e-15 for |x| <= 3 in float64). */
function erf64(x: number): number {
  let term = x, sum = x;
  for (let n = 1; n < 80; n++) {
    term *= -x * x / n;
    sum += term / (2 * n + 1);
  }
  return 2 / Math.sqrt(Math.PI) * sum;
}

const ACT64: Record<Activation, (v: number) => number> = {
  silu: (v) => v / (1 + Math.exp(-v)),
  gelu: (v) => 0.5 * v * (1 + erf64(v / Math.SQRT2)),
  gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
};

for (const act of ["silu", "gelu", "gelu_tanh"] as Activation[]) {
  Deno.test(`glu with ${act}: act(gate) * up against float64, and its backward against finite differences`, async () => {
    const [R, F] = [3, 7];
    const x = randomArray(R * 2 * F, 31, 3);
    const glu64 = (v: Arr) =>
      Float64Array.from({ length: R * F }, (_, i) => {
        const gate = Math.floor(i / F) * 2 * F + (i % F);
        return ACT64[act](v[gate]) * v[gate + F];
      });
    const tx = gpu.tensor([R, 2 * F], x);
    assertClose(await glu(gpu, tx, R, F, act).read(), glu64(x), 1e-5, "forward");
    const G = randomArray(R * F, 32);
    const dx = gluBackward(gpu, gpu.tensor([R, F], G), tx, R, F, act);
    assertClose(
      await dx.read(),
      finiteDifferenceGradient((v) => dot(glu64(v), G), Float64Array.from(x)),
      1e-4,
      "backward",
    );
  });
}

// ---------------------------------------------------------------- RMSNorm on per-head rows

Deno.test("RMSNorm (1 + w) on strided per-head rows: float64 forward; dx and dgamma against finite differences", async () => {
  const [R, G, C, ld, off, eps] = [3, 2, 5, 16, 3, 1e-6]; // rows of 2 heads of 5 inside rows of 16, from column 3
  const x = randomArray(R * ld, 41, 2);
  const gamma = randomArray(C, 42, 0.3);
  const at = (r: number) => Math.floor(r / G) * ld + off + (r % G) * C;
  const norm64 = (v: Arr, g: Arr) => {
    const y = Float64Array.from(v);
    for (let r = 0; r < R * G; r++) {
      let sq = 0;
      for (let c = 0; c < C; c++) sq += v[at(r) + c] ** 2;
      const rstd = 1 / Math.sqrt(sq / C + eps);
      for (let c = 0; c < C; c++) y[at(r) + c] = v[at(r) + c] * rstd * (1 + g[c]);
    }
    return y;
  };
  const rows = { G, ld, off };
  const tx = gpu.tensor([R, ld], x), tg = gpu.tensor([C], gamma), stats = gpu.empty([R * G, 2]);
  const out = gpu.tensor([R, ld], x); // columns outside the heads pass through
  layernorm(gpu, tx, tg, null, R * G, C, eps, { out, stats, rms: true, gainOffset: 1, rows });
  assertClose(await out.read(), norm64(x, gamma), 1e-5, "forward");
  const dy = randomArray(R * ld, 43);
  const dx = gpu.zeros([R, ld]), dgamma = gpu.zeros([C]);
  layernormBackward(gpu, gpu.tensor([R, ld], dy), tx, tg, stats, R * G, C, {
    dx,
    dgamma,
    rms: true,
    gainOffset: 1,
    rows,
  });
  // Only the heads' values depend on x through the norm; the rest of dx stays 0.
  const headPart = (v: Arr) =>
    Float64Array.from(v, (_, i) => (i % ld >= off && i % ld < off + G * C ? v[i] : 0));
  const fdx = finiteDifferenceGradient((v) => dot(headPart(norm64(v, gamma)), dy), Float64Array.from(x));
  assertClose(await dx.read(), headPart(fdx), 1e-4, "dx");
  const fdg = finiteDifferenceGradient((g) => dot(headPart(norm64(x, g)), dy), Float64Array.from(gamma));
  assertClose(await dgamma.read(), fdg, 1e-4, "dgamma");
});
