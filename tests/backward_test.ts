// Backward kernels vs float64 references, and the references vs finite differences.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import {
  attentionBackward,
  biasBackward,
  crossEntropy,
  embeddingBackward,
  geluBackward,
  klGradient,
  layernormBackward,
  rewriteWeights,
  sumOfSquares,
  tokenRows,
} from "../engine/backward_ops.ts";
import {
  attentionBackwardRef,
  attentionForward64,
  columnSumRef,
  crossEntropyRef,
  dot,
  embeddingBackwardRef,
  embedForward64,
  finiteDifferenceGradient,
  geluBackwardRef,
  geluForward64,
  layernormBackwardRef,
  layernormForward64,
  sumOfSquaresRef,
} from "./reference_backward.ts";
import { matmulRef } from "./reference.ts";
import { attention } from "../engine/ops.ts";
import { assertClose, randomArray, rng } from "./util.ts";

type Arr = ArrayLike<number>;

const gpu = await getGpu();

/** Expected value of an accumulated gradient: its initial contents plus the reference gradient. */
function plus(initial: ArrayLike<number>, grad: ArrayLike<number>): Float64Array {
  return Float64Array.from(grad, (g, i) => initial[i] + g);
}

function randomTokens(n: number, V: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * V));
}

/** Same bits, not just close values. */
function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  assert.equal(ua.length, ub.length);
  for (let i = 0; i < ua.length; i++) assert.equal(ua[i], ub[i], `${what}: bits differ at ${i}`);
}

// ------------------------------------------------ float64 references vs finite differences

Deno.test("reference: layernorm backward matches finite differences", () => {
  const [R, C, eps] = [3, 5, 1e-5];
  const x = randomArray(R * C, 1),
    gamma = randomArray(C, 2),
    beta = randomArray(C, 3),
    dy = randomArray(R * C, 4);
  const { stats } = layernormForward64(x, gamma, beta, R, C, eps);
  const g = layernormBackwardRef(dy, x, gamma, stats, R, C);
  const loss = (xv: Arr, gv: Arr, bv: Arr) => dot(layernormForward64(xv, gv, bv, R, C, eps).y, dy);
  assertClose(g.dx, finiteDifferenceGradient((v) => loss(v, gamma, beta), x), 1e-7, "dx");
  assertClose(g.dgamma, finiteDifferenceGradient((v) => loss(x, v, beta), gamma), 1e-7, "dgamma");
  assertClose(g.dbeta, finiteDifferenceGradient((v) => loss(x, gamma, v), beta), 1e-7, "dbeta");
});

Deno.test("reference: gelu backward matches finite differences", () => {
  const x = [-6, -2.5, -1, -0.3, 0, 0.2, 1, 3, 7], dy = randomArray(x.length, 5);
  assertClose(
    geluBackwardRef(dy, x),
    finiteDifferenceGradient((v) => dot(geluForward64(v), dy), x),
    1e-8,
    "dx",
  );
});

Deno.test("reference: attention backward matches finite differences", () => {
  for (const [B, T, d, nHead] of [[1, 1, 2, 1], [2, 4, 6, 3], [1, 5, 8, 2]]) {
    const qkv = randomArray(B * T * 3 * d, 6, 1.5), dy = randomArray(B * T * d, 7);
    const { probs } = attentionForward64(qkv, B, T, d, nHead);
    const fd = finiteDifferenceGradient((v) => dot(attentionForward64(v, B, T, d, nHead).y, dy), qkv);
    assertClose(
      attentionBackwardRef(dy, qkv, probs, B, T, d, nHead),
      fd,
      1e-7,
      `B=${B} T=${T} d=${d} nHead=${nHead}`,
    );
  }
});

Deno.test("reference: embedding backward matches finite differences", () => {
  const [R, T, C, V, P] = [7, 3, 2, 4, 5];
  const tokens = [1, 3, 1, 0, 1, 3, 2], wte = randomArray(V * C, 8), wpe = randomArray(P * C, 9);
  const dout = randomArray(R * C, 10);
  const g = embeddingBackwardRef(dout, tokens, R, T, C, V, P);
  assertClose(
    g.dwte,
    finiteDifferenceGradient((v) => dot(embedForward64(tokens, v, wpe, R, T, C), dout), wte),
    1e-8,
    "dwte",
  );
  assertClose(
    g.dwpe,
    finiteDifferenceGradient((v) => dot(embedForward64(tokens, wte, v, R, T, C), dout), wpe),
    1e-8,
    "dwpe",
  );
});

Deno.test("reference: bias gradient (column sums) matches finite differences", () => {
  const [R, N, K] = [4, 3, 2];
  const x = randomArray(R * K, 11),
    w = randomArray(K * N, 12),
    b = randomArray(N, 13),
    dy = randomArray(R * N, 14);
  const fd = finiteDifferenceGradient((v) => dot(matmulRef(x, w, R, N, K, { bias: v }), dy), b);
  assertClose(columnSumRef(dy, R, N), fd, 1e-8, "dbias");
});

Deno.test("reference: cross-entropy gradient matches finite differences", () => {
  const [R, V] = [4, 6];
  const logits = randomArray(R * V, 15, 3), targets = [2, 0, 5, 5], weights = [1, 0, 2.5, 0.5], scale = 0.25;
  const { dlogits } = crossEntropyRef(logits, targets, R, V, weights, scale);
  const loss = (v: Arr) => {
    const { losses } = crossEntropyRef(v, targets, R, V, weights);
    return scale * dot(losses, weights);
  };
  assertClose(dlogits, finiteDifferenceGradient(loss, logits), 1e-8, "dlogits");
});

// ------------------------------------------------ GPU kernels vs references

Deno.test("layernormBackward accumulates dx, dgamma, dbeta like the float64 reference", async () => {
  for (const [R, C] of [[1, 5], [7, 13], [33, 70], [4, 768]]) {
    const x = randomArray(R * C, 20, 2), gamma = randomArray(C, 21), dy = randomArray(R * C, 22);
    const stats = Float32Array.from(layernormForward64(x, gamma, new Float64Array(C), R, C, 1e-5).stats);
    const dx0 = randomArray(R * C, 23), dgamma0 = randomArray(C, 24), dbeta0 = randomArray(C, 25);
    const [dx, dgamma, dbeta] = [gpu.tensor([R, C], dx0), gpu.tensor([C], dgamma0), gpu.tensor([C], dbeta0)];
    layernormBackward(
      gpu,
      gpu.tensor([R, C], dy),
      gpu.tensor([R, C], x),
      gpu.tensor([C], gamma),
      gpu.tensor([R, 2], stats),
      R,
      C,
      {
        dx,
        dgamma,
        dbeta,
      },
    );
    const [gdx, gdgamma, gdbeta] = await gpu.readMany([dx, dgamma, dbeta]);
    const ref = layernormBackwardRef(dy, x, gamma, stats, R, C);
    assertClose(gdx, plus(dx0, ref.dx), 1e-5, `dx R=${R} C=${C}`);
    assertClose(gdgamma, plus(dgamma0, ref.dgamma), 1e-5 * R, `dgamma R=${R} C=${C}`);
    assertClose(gdbeta, plus(dbeta0, ref.dbeta), 1e-5 * R, `dbeta R=${R} C=${C}`);
  }
});

Deno.test("layernormBackward computes only the gradients asked for, and checks sizes", async () => {
  const [R, C] = [3, 9];
  const x = randomArray(R * C, 26), gamma = randomArray(C, 27), dy = randomArray(R * C, 28);
  const stats = Float32Array.from(layernormForward64(x, gamma, new Float64Array(C), R, C, 1e-5).stats);
  const ref = layernormBackwardRef(dy, x, gamma, stats, R, C);
  const args = [
    gpu.tensor([R, C], dy),
    gpu.tensor([R, C], x),
    gpu.tensor([C], gamma),
    gpu.tensor([R, 2], stats),
  ] as const;
  const { dx } = layernormBackward(gpu, ...args, R, C);
  const dbetaOnly = layernormBackward(gpu, ...args, R, C, { dbeta: gpu.zeros([C]) }).dbeta!;
  const dgammaOnly = layernormBackward(gpu, ...args, R, C, { dgamma: gpu.zeros([C]) }).dgamma!;
  const [gdx, gdbeta, gdgamma] = await gpu.readMany([dx, dbetaOnly, dgammaOnly]);
  assertClose(gdx, ref.dx, 1e-5, "dx");
  assertClose(gdbeta, ref.dbeta, 1e-5, "dbeta alone");
  assertClose(gdgamma, ref.dgamma, 1e-5, "dgamma alone");
  assert.throws(() => layernormBackward(gpu, ...args, R, C + 1), /dy has 27 values, needs 30/);
  assert.throws(() => layernormBackward(gpu, ...args, 0, C), /R must be a positive integer, got 0/);
});

Deno.test("geluBackward matches the float64 reference, including saturated inputs", async () => {
  const extremes = [-100, -20, -8, -1, 0, 1e-3, 1, 8, 20, 100];
  for (const x of [Float32Array.from(extremes), randomArray(1, 30, 4), randomArray(1003, 31, 5)]) {
    const dy = randomArray(x.length, 32);
    const dx = await geluBackward(gpu, gpu.tensor([x.length], dy), gpu.tensor([x.length], x), x.length)
      .read();
    assertClose(dx, geluBackwardRef(dy, x), 1e-6, `n=${x.length}`);
    if (x.length > 8) {
      // n % 4 == 0 runs four values per access: the same bits as one at a time.
      const n = x.length - (x.length % 4);
      const four = await geluBackward(
        gpu,
        gpu.tensor([n], dy.subarray(0, n)),
        gpu.tensor([n], x.subarray(0, n)),
        n,
      )
        .read();
      assert.deepEqual(four, dx.subarray(0, n), `n=${n}, four values per access`);
    }
  }
});

Deno.test("attentionBackward matches the float64 reference (T=1, T=7, several heads, B=2)", async () => {
  const shapes = [[1, 1, 4, 1], [2, 7, 12, 3], [1, 7, 10, 2], [2, 5, 8, 4], [2, 19, 24, 4], [1, 16, 64, 2]];
  for (const [B, T, d, nHead] of shapes) {
    const qkv = randomArray(B * T * 3 * d, 40, 1.5), dy = randomArray(B * T * d, 41);
    const probs = Float32Array.from(attentionForward64(qkv, B, T, d, nHead).probs);
    const dqkv = await attentionBackward(
      gpu,
      gpu.tensor([B * T, d], dy),
      gpu.tensor([B * T, 3 * d], qkv),
      gpu.tensor([B, nHead, T, T], probs),
      B,
      T,
      d,
      nHead,
    ).read();
    assertClose(
      dqkv,
      attentionBackwardRef(dy, qkv, probs, B, T, d, nHead),
      1e-5,
      `B=${B} T=${T} d=${d} nHead=${nHead}`,
    );
  }
});

Deno.test("attentionBackward overwrites dqkv, ignores stale scratch contents, rejects d not divisible by nHead", async () => {
  const [B, T, d, nHead] = [1, 11, 4, 2];
  const qkv = randomArray(B * T * 3 * d, 42), dy = randomArray(B * T * d, 43);
  const probs = Float32Array.from(attentionForward64(qkv, B, T, d, nHead).probs);
  const dqkv = gpu.tensor([B * T, 3 * d], randomArray(B * T * 3 * d, 44, 100));
  const inputs = [
    gpu.tensor([B * T, d], dy),
    gpu.tensor([B * T, 3 * d], qkv),
    gpu.tensor([B, nHead, T, T], probs),
  ] as const;
  const dscores = gpu.tensor([B, nHead, T, T], randomArray(B * nHead * T * T, 45, 1e6)); // garbage scratch
  attentionBackward(gpu, ...inputs, B, T, d, nHead, { dqkv, dscores });
  assertClose(await dqkv.read(), attentionBackwardRef(dy, qkv, probs, B, T, d, nHead), 1e-5, "dqkv");
  assert.throws(() => attentionBackward(gpu, ...inputs, B, T, d, 3), /d=4 is not a multiple of nHead=3/);
});

Deno.test("attention over rows from per-sequence offsets, earlier keys and values from a cache: forward and backward are the full reference's rows", async () => {
  // Sequence b's Tq rows sit at positions starts[b] + i; the keys and values of its earlier positions
  // j are rows bases[b] + j of a cache (here after two rows of NaN that must never be read). Rows at
  // positions >= T are padding (zeros). The backward of those rows alone is the full backward with dy
  // zero at the prefix: no query before starts[b] exists to send gradient to a key at or after it.
  // hd = 4 with q|k|v rows of 36 floats: the storage-buffer path (no texture mirrors); hd = 16 with rows
  // of 192 floats: keys, values and the cache from texture mirrors. Tq = 5 and 6 make blocks of 3 query
  // rows (ops.ts attention, backward_ops.ts attentionBackward) on a software adapter.
  for (const [B, T, d, nHead, Tq] of [[3, 9, 12, 3, 5], [3, 11, 64, 4, 6]]) {
    const startsOf = [0, 4, 7];
    const qkv = randomArray(B * T * 3 * d, 46, 1.5), dyRows = randomArray(B * Tq * d, 47);
    const full = attentionForward64(qkv, B, T, d, nHead);
    const dyFull = new Float64Array(B * T * d);
    const position = (b: number, i: number) => startsOf[b] + i;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < Tq; i++) {
        if (position(b, i) < T) {
          dyFull.set(dyRows.subarray((b * Tq + i) * d, (b * Tq + i + 1) * d), (b * T + position(b, i)) * d);
        }
      }
    }
    const dFull = attentionBackwardRef(dyFull, qkv, full.probs, B, T, d, nHead);
    const [y, probs, dqkv] = [
      new Float64Array(B * Tq * d),
      new Float64Array(B * nHead * Tq * T),
      new Float64Array(B * Tq * 3 * d),
    ];
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < Tq; i++) {
        const t = position(b, i);
        if (t >= T) continue;
        y.set(full.y.subarray((b * T + t) * d, (b * T + t + 1) * d), (b * Tq + i) * d);
        dqkv.set(dFull.subarray((b * T + t) * 3 * d, (b * T + t + 1) * 3 * d), (b * Tq + i) * 3 * d);
        for (let h = 0; h < nHead; h++) {
          const from = ((b * nHead + h) * T + t) * T, to = ((b * nHead + h) * Tq + i) * T;
          probs.set(full.probs.subarray(from, from + T), to);
        }
      }
    }
    const rowsOf = new Float32Array(B * Tq * 3 * d).fill(0.5); // padding rows: any finite values
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < Tq && position(b, i) < T; i++) {
        const t = position(b, i);
        rowsOf.set(qkv.subarray((b * T + t) * 3 * d, (b * T + t + 1) * 3 * d), (b * Tq + i) * 3 * d);
      }
    }
    const cache = new Float32Array((2 + B * T) * 3 * d).fill(NaN);
    cache.set(qkv, 2 * 3 * d);
    const queries = {
      Tq,
      offsets: gpu.tensor([2 * B], [...startsOf, ...startsOf.map((_, b) => 2 + b * T)], "u32"),
      cache: gpu.tensor([2 + B * T, 3 * d], cache),
    };
    const tqkv = gpu.tensor([B * Tq, 3 * d], rowsOf);
    // Garbage beforehand: padding rows and masked entries must be written, not left alone.
    const gotProbs = gpu.tensor([B, nHead, Tq, T], new Array(B * nHead * Tq * T).fill(9));
    const gotY = attention(gpu, tqkv, B, T, d, nHead, {
      probs: gotProbs,
      queries,
      out: gpu.tensor([B * Tq, d], new Array(B * Tq * d).fill(9)),
    });
    const gotD = attentionBackward(
      gpu,
      gpu.tensor([B * Tq, d], dyRows),
      tqkv,
      gpu.tensor([B, nHead, Tq, T], Float32Array.from(probs)),
      B,
      T,
      d,
      nHead,
      {
        queries,
        dqkv: gpu.tensor([B * Tq, 3 * d], new Array(B * Tq * 3 * d).fill(9)),
      },
    );
    const [gy, gp, gd] = await gpu.readMany([gotY, gotProbs, gotD]);
    assertClose(gy, y, 1e-5, "y");
    assertClose(gp, probs, 1e-6, "probs");
    assertClose(gd, dqkv, 1e-5, "dqkv");
    assert.throws(
      () =>
        attention(gpu, tqkv, B, T, d, nHead, {
          queries: { ...queries, offsets: gpu.tensor([2], [0, 1], "u32") },
        }),
      /queries.offsets/,
    );
  }
});

Deno.test("embeddingBackward accumulates dwte and dwpe like the float64 reference", async () => {
  // Repeated tokens (V small), R a multiple of T, R not a multiple of T, R < T, R = 1.
  for (const [R, T, C, V] of [[14, 7, 13, 5], [10, 4, 3, 3], [3, 7, 9, 50], [1, 1, 1, 2]]) {
    const P = T + 2; // wpe has more rows than the sequence uses: the extra rows must stay untouched
    const tokens = randomTokens(R, V, R * 100 + C), dout = randomArray(R * C, 50);
    const dwte0 = randomArray(V * C, 51), dwpe0 = randomArray(P * C, 52);
    const [dwte, dwpe] = [gpu.tensor([V, C], dwte0), gpu.tensor([P, C], dwpe0)];
    embeddingBackward(gpu, gpu.tensor([R, C], dout), tokens, R, T, C, { dwte, dwpe });
    const [gwte, gwpe] = await gpu.readMany([dwte, dwpe]);
    const ref = embeddingBackwardRef(dout, tokens, R, T, C, V, P);
    assertClose(gwte, plus(dwte0, ref.dwte), 1e-5, `dwte R=${R} T=${T} C=${C}`);
    assertClose(gwpe, plus(dwpe0, ref.dwpe), 1e-5, `dwpe R=${R} T=${T} C=${C}`);
  }
});

Deno.test("embeddingBackward names a bad token; tokenRows groups rows in order", () => {
  const dout = gpu.zeros([3, 2]);
  assert.throws(
    () => embeddingBackward(gpu, dout, [0, 1, 9], 3, 3, 2, { dwte: gpu.zeros([4, 2]) }),
    /tokens\[2\] = 9 is not a token id in \[0, 4\)/,
  );
  assert.throws(() => embeddingBackward(gpu, dout, [0, 1, 2], 3, 3, 2, {}), /give dwte and\/or dwpe/);
  const { csr, distinct } = tokenRows([5, 2, 5, 5, 0], 5, 6);
  assert.equal(distinct, 3);
  assert.deepEqual([...csr], [0, 2, 5, /* starts */ 0, 1, 2, 5, /* rows */ 4, 1, 0, 2, 3]);
});

Deno.test("embedding and bias gradients are bit-reproducible run to run", async () => {
  // Many rows share few tokens, so any order-dependent summation would show up in the bits.
  const [R, T, C, V] = [512, 64, 24, 3];
  const tokens = randomTokens(R, V, 60), dout = randomArray(R * C, 61, 10);
  const run = async () => {
    const dwte = gpu.tensor([V, C], randomArray(V * C, 62)),
      dwpe = gpu.tensor([T, C], randomArray(T * C, 63));
    embeddingBackward(gpu, gpu.tensor([R, C], dout), tokens, R, T, C, { dwte, dwpe });
    const dbias = biasBackward(gpu, gpu.tensor([R, C], dout), R, C, {
      dbias: gpu.tensor([C], randomArray(C, 64)),
    });
    return await gpu.readMany([dwte, dwpe, dbias]);
  };
  const [first, second] = [await run(), await run()];
  first.forEach((a, i) => assertSameBits(a, second[i], ["dwte", "dwpe", "dbias"][i]));
  const ref = embeddingBackwardRef(dout, tokens, R, T, C, V, T);
  assertClose(first[0], plus(randomArray(V * C, 62), ref.dwte), 1e-3, "dwte"); // sums of ~170 values of size 10
});

Deno.test("biasBackward accumulates column sums", async () => {
  for (const [R, N] of [[1, 1], [37, 70], [300, 5]]) {
    const dy = randomArray(R * N, 70), dbias0 = randomArray(N, 71);
    const dbias = gpu.tensor([N], dbias0);
    biasBackward(gpu, gpu.tensor([R, N], dy), R, N, { dbias });
    assertClose(await dbias.read(), plus(dbias0, columnSumRef(dy, R, N)), 1e-6 * R, `R=${R} N=${N}`);
  }
});

Deno.test("sumOfSquares is the squared global norm over several tensors", async () => {
  const arrays = [randomArray(1, 80), randomArray(5000, 81), randomArray(3, 82), randomArray(1024, 83)];
  const parts = arrays.map((a) => ({ tensor: gpu.tensor([a.length], a), size: a.length }));
  const got = (await sumOfSquares(gpu, parts).read())[0];
  const expected = sumOfSquaresRef(arrays);
  assert.ok(Math.abs(got - expected) <= 1e-5 * expected, `${got} vs ${expected}`);
  // Only the first `size` values count.
  const head = (await sumOfSquares(gpu, [{ tensor: parts[1].tensor, size: 10 }]).read())[0];
  assert.ok(Math.abs(head - sumOfSquaresRef([arrays[1].subarray(0, 10)])) <= 1e-6);
});

Deno.test("crossEntropy losses and gradient match the reference (weights, masking, scale, large logits)", async () => {
  for (const [R, V, logitScale] of [[1, 1, 1], [5, 37, 1], [3, 1000, 30]]) {
    const logits = randomArray(R * V, 90, logitScale);
    const targets = randomTokens(R, V, 91);
    const weights = Float32Array.from({ length: R }, (_, r) => [1, 0, 2.5][r % 3]);
    if (R > 1) targets[1] = 4_000_000; // masked row: its target is never read
    const scale = 1 / R;
    const dlogits = gpu.tensor([R, V], randomArray(R * V, 92)); // overwritten, not accumulated
    const { losses } = crossEntropy(gpu, gpu.tensor([R, V], logits), gpu.tensor([R], targets, "u32"), R, V, {
      dlogits,
      weights: gpu.tensor([R], weights),
      scale,
    });
    const [gl, gd] = await gpu.readMany([losses, dlogits]);
    const ref = crossEntropyRef(logits, targets, R, V, weights, scale);
    assertClose(gl, ref.losses, 1e-5 * logitScale, `losses R=${R} V=${V}`);
    assertClose(gd, ref.dlogits, 1e-6, `dlogits R=${R} V=${V}`);
  }
});

Deno.test("crossEntropy without weights or dlogits reports losses only; a bad target gives NaN", async () => {
  const [R, V] = [4, 9];
  const logits = randomArray(R * V, 93, 2), targets = [0, 8, 3, 9];
  const { losses, dlogits } = crossEntropy(
    gpu,
    gpu.tensor([R, V], logits),
    gpu.tensor([R], targets, "u32"),
    R,
    V,
  );
  assert.equal(dlogits, undefined);
  const got = await losses.read();
  const ref = crossEntropyRef(logits, targets.slice(0, 3), 3, V);
  assertClose(got.subarray(0, 3), ref.losses, 1e-5, "losses");
  assert.ok(Number.isNaN(got[3]), `target 9 >= V=9 should give NaN, got ${got[3]}`);
});

// float64 log-softmax of a row.
function logSoftmax64(x: ArrayLike<number>): number[] {
  const m = Math.max(...Array.from(x));
  const lse = m + Math.log(Array.from(x).reduce((s, v) => s + Math.exp(v - m), 0));
  return Array.from(x, (v) => v - lse);
}

// KL(softmax(x) || softmax(x0)) in float64.
function klDivergence64(x: ArrayLike<number>, x0: ArrayLike<number>): number {
  const [lp, lp0] = [logSoftmax64(x), logSoftmax64(x0)];
  return lp.reduce((s, v, i) => s + Math.exp(v) * (v - lp0[i]), 0);
}

Deno.test("klGradient matches the float64 gradient of factor * KL (checked by finite differences), 0 at the reference", async () => {
  const V = 37;
  const logits = randomArray(5 * V, 41, 2), reference = randomArray(4 * V, 42, 2);
  // Row 2 of the reference equals logits row 1 + 1 = its third KL row: a zero gradient, exactly.
  reference.set(logits.subarray(3 * V, 4 * V), 2 * V);
  const rows = [{ referenceRow: 3, factor: 0.7 }, { referenceRow: 0, factor: 2 }, {
    referenceRow: 2,
    factor: 1.5,
  }];
  const tl = gpu.tensor([5, V], logits), tr = gpu.tensor([4, V], reference), out = gpu.zeros([6, V]);
  klGradient(gpu, tl, tr, V, rows, out, { logitsRow0: 1, dlogitsRow0: 2 });
  const got = await out.read();
  gpu.release(tl, tr, out);
  assert.ok(
    got.subarray(0, 2 * V).every((v) => v === 0) && got.subarray(5 * V).every((v) => v === 0),
    "other rows untouched",
  );
  rows.forEach(({ referenceRow, factor }, j) => {
    const x = Float64Array.from(logits.subarray((1 + j) * V, (2 + j) * V));
    const x0 = reference.subarray(referenceRow * V, (referenceRow + 1) * V);
    const fd = finiteDifferenceGradient((y) => factor * klDivergence64(y, x0), x);
    assertClose(got.subarray((2 + j) * V, (3 + j) * V), fd, 1e-5, `KL row ${j}`);
  });
  assert.ok(got.subarray(4 * V, 5 * V).every((v) => v === 0), "x = x0 gives exactly 0");
});

Deno.test("rewriteWeights: scale for increase, scale * -q/(1-q) of the prompt's mean NLL for decrease", async () => {
  const losses = Float32Array.from([0.3, 2.1, 0.05, 1e-9, 4.2, 0.7]);
  const rows = [
    { first: 0, count: 2, scale: 0.25, decrease: false },
    { first: 0, count: 2, scale: 0.25, decrease: true },
    { first: 2, count: 2, scale: 1, decrease: true }, // p near 1: q capped at 1 - 1e-7
    { first: 4, count: 1, scale: 0.5, decrease: true },
    { first: 5, count: 1, scale: 0, decrease: true },
  ];
  const tl = gpu.tensor([6], losses), w = gpu.zeros([rows.length]);
  rewriteWeights(gpu, tl, rows, w);
  const got = await w.read();
  assert.throws(
    () => rewriteWeights(gpu, tl, [{ first: 5, count: 2, scale: 1, decrease: false }], w),
    /losses/,
  );
  gpu.release(tl, w);
  const want = rows.map((r) => {
    if (!r.decrease) return r.scale;
    let nll = 0;
    for (let t = 0; t < r.count; t++) nll += losses[r.first + t];
    const q = Math.min(Math.exp(-nll / r.count), 1 - 1e-7);
    return r.scale * -q / (1 - q);
  });
  assertClose(got, want, 1e-5 * Math.max(...want.map(Math.abs)), "weights");
});
