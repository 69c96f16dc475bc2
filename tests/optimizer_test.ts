// Adam/AdamW, clipping, L-infinity projection and gradient zeroing vs float64 references.
import assert from "node:assert/strict";
import { getGpu, Tensor } from "../engine/gpu.ts";
import { ELEMENT_WG, ELEMENTS_PER_INVOCATION, matmul } from "../engine/ops.ts";
import { biasBackward, crossEntropy } from "../engine/backward_ops.ts";
import { Adam, type AdamOptions, fill, projectLinf, zeroGrads } from "../engine/optimizer.ts";
import { AdamRef } from "./reference_backward.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();
const sizes = [1, 37, 300];

/**
 * Runs steps of the GPU Adam and the float64 reference from the same start and compares after each;
 * step s uses gradients uniform in +-gradScales[s].
 */
async function compareWithReference(
  o: AdamOptions & { decayOverride?: number },
  gradScales = [1, 1, 1, 1, 1],
) {
  const steps = gradScales.length;
  const initial = sizes.map((n, i) => randomArray(n, 100 + i));
  const params = initial.map((a, i) => ({
    name: `p${i}`,
    tensor: gpu.tensor([a.length], a),
    size: a.length,
    weightDecay: i === 0 ? o.decayOverride : undefined,
  }));
  const adam = new Adam(gpu, params, o);
  const wd = o.weightDecay ?? 0;
  const ref = new AdamRef(sizes, {
    lr: o.lr,
    beta1: o.beta1 ?? 0.9,
    beta2: o.beta2 ?? 0.999,
    eps: o.eps ?? 1e-8,
    weightDecay: sizes.map((_, i) => (i === 0 && o.decayOverride !== undefined ? o.decayOverride : wd)),
    clipNorm: o.clipNorm,
  });
  const refParams = initial.map((a) => Float64Array.from(a));
  for (let s = 0; s < steps; s++) {
    const grads = sizes.map((n, i) => randomArray(n, 200 + 10 * s + i, gradScales[s]));
    const lr = o.lr * (1 + s) / steps; // a warmup schedule: lr may change between steps
    adam.lr = lr;
    adam.step(grads.map((g) => gpu.tensor([g.length], g)));
    const refNorm = ref.step(refParams, grads, lr);
    const got = await gpu.readMany(params.map((p) => p.tensor));
    got.forEach((g, i) => assertClose(g, refParams[i], 2e-6, `step ${s + 1} param ${i}`));
    const norm = await adam.gradNorm();
    assert.ok(Math.abs(norm - refNorm) <= 1e-5 * refNorm, `step ${s + 1} grad norm ${norm} vs ${refNorm}`);
  }
}

Deno.test("Adam steps match the float64 reference (lr schedule)", async () => {
  await compareWithReference({ lr: 1e-2 });
});

Deno.test("AdamW decoupled weight decay, with a per-parameter override, matches the reference", async () => {
  await compareWithReference({
    lr: 3e-2,
    beta1: 0.8,
    beta2: 0.95,
    eps: 1e-6,
    weightDecay: 0.1,
    decayOverride: 0,
  });
});

Deno.test("global-norm clipping matches the reference: always, sometimes and never active", async () => {
  // Adam is invariant to a constant gradient scale, so clipping only shows when the clip factor
  // changes between steps: gradient norms here vary from ~0.1 to ~500 (338 values of size +-scale).
  const scales = [50, 0.01, 20, 0.5, 5];
  for (const clipNorm of [0.01, 8, 1e4]) await compareWithReference({ lr: 1e-2, clipNorm }, scales);
});

Deno.test("clipping changes the update (the reference comparison can tell clipped from unclipped)", async () => {
  const w = randomArray(37, 301), g1 = randomArray(37, 302, 50), g2 = randomArray(37, 303, 0.5);
  const run = async (clipNorm?: number) => {
    const t = gpu.tensor([37], w);
    const adam = new Adam(gpu, [{ name: "w", tensor: t, size: 37 }], { lr: 0.1, clipNorm });
    adam.step([gpu.tensor([37], g1)]);
    adam.step([gpu.tensor([37], g2)]);
    return await t.read();
  };
  const [clipped, free] = [await run(1), await run()];
  assert.ok(Math.max(...clipped.map((v, i) => Math.abs(v - free[i]))) > 1e-3, "clipping had no effect");
});

Deno.test("Adam state saved and restored continues bit-identically", async () => {
  const w0 = randomArray(300, 400), grads = Array.from({ length: 5 }, (_, s) => randomArray(300, 410 + s));
  const makeAdam = (tensor: Tensor) =>
    new Adam(gpu, [{ name: "w", tensor, size: 300 }], { lr: 1e-2, weightDecay: 0.05, clipNorm: 5 });
  const tensorA = gpu.tensor([300], w0);
  const a = makeAdam(tensorA);
  for (let s = 0; s < 3; s++) a.step([gpu.tensor([300], grads[s])]);
  const saved = await a.saveState();
  const tensorB = gpu.tensor([300], await tensorA.read());
  for (let s = 3; s < 5; s++) a.step([gpu.tensor([300], grads[s])]);

  const b = makeAdam(tensorB);
  b.loadState(saved);
  assert.equal(b.stepCount, 3);
  for (let s = 3; s < 5; s++) b.step([gpu.tensor([300], grads[s])]);
  const [wa, wb] = await gpu.readMany([tensorA, tensorB]);
  assert.deepEqual(
    new Uint32Array(wa.buffer, wa.byteOffset, 300),
    new Uint32Array(wb.buffer, wb.byteOffset, 300),
  );

  assert.throws(() => b.loadState({ ...saved, names: ["x"] }), /parameter 0 is "x" in the state, "w" here/);
  assert.throws(
    () => b.loadState({ ...saved, m: [new Float32Array(3)] }),
    /m of "w" has 3 values, needs 300/,
  );
});

Deno.test("Adam rejects bad options and mismatched gradients", () => {
  const t = gpu.zeros([4]);
  assert.throws(
    () => new Adam(gpu, [{ name: "a", tensor: t, size: 4 }], { lr: 1, beta2: 1 }),
    /beta2 must be in \[0, 1\)/,
  );
  assert.throws(
    () => new Adam(gpu, [{ name: "a", tensor: t, size: 5 }], { lr: 1 }),
    /parameter "a" has 4 values, needs 5/,
  );
  assert.throws(
    () => new Adam(gpu, [{ name: "a", tensor: t, size: 4 }, { name: "a", tensor: t, size: 4 }], { lr: 1 }),
    /"a" appears twice/,
  );
  const adam = new Adam(gpu, [{ name: "a", tensor: t, size: 4 }], { lr: 1 });
  assert.throws(() => adam.step([]), /got 0 gradients for 1 parameters/);
  assert.throws(() => adam.step([gpu.zeros([2])]), /gradient of "a" has 2 values, needs 4/);
});

Deno.test("projectLinf clamps into [w0 - eps, w0 + eps], including a 2-D grid of workgroups", async () => {
  // 65535 workgroups of 64 invocations x 8 values, and 77 more: more workgroups than one grid dimension
  // allows (134 MB per tensor, so the values come from a formula and are compared in float32).
  const maxX = gpu.limits.maxComputeWorkgroupsPerDimension;
  for (const n of [1, 1000, maxX * ELEMENT_WG * ELEMENTS_PER_INVOCATION + 77]) {
    // Filled by a loop: Float32Array.from with a map function takes seconds at this size.
    const w = new Float32Array(n), w0 = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      w[i] = Math.sin(i * 1.3);
      w0[i] = Math.cos(i * 0.7);
    }
    const eps = 0.25;
    const tw = gpu.tensor([n], w);
    projectLinf(gpu, tw, gpu.tensor([n], w0), eps);
    const got = await tw.read();
    let wrong = 0, clamped = 0;
    for (let i = 0; i < n; i++) {
      const expected = Math.min(Math.max(w[i], Math.fround(w0[i] - eps)), Math.fround(w0[i] + eps));
      if (got[i] !== expected) wrong++;
      if (expected !== w[i]) clamped++;
    }
    assert.equal(wrong, 0, `n=${n}: ${wrong} values clamped wrongly`);
    if (n > 1) assert.ok(clamped > 0 && clamped < n, `n=${n}: the test clamps some values, not all`);
  }
});

Deno.test("Adam with an L-infinity ball: the bits of each step followed by projectLinf; trackNorm: false", async () => {
  // Gradients large enough (lr 0.3) that the ball of radius 0.05 clamps most values after a few steps.
  const initial = sizes.map((n, i) => randomArray(n, 800 + i));
  const centers = initial.map((a) => gpu.tensor([a.length], a));
  const [fused, separate] = [0, 1].map(() =>
    initial.map((a, i) => ({ name: `p${i}`, tensor: gpu.tensor([a.length], a), size: a.length }))
  );
  const radius = 0.05;
  const ball = new Adam(
    gpu,
    fused.map((p, i) => ({ ...p, linf: { center: centers[i], radius } })),
    { lr: 0.3, weightDecay: 0.1, trackNorm: false },
  );
  const plain = new Adam(gpu, separate, { lr: 0.3, weightDecay: 0.1 });
  for (let s = 0; s < 4; s++) {
    const grads = sizes.map((n, i) => gpu.tensor([n], randomArray(n, 900 + 10 * s + i)));
    ball.step(grads);
    plain.step(grads);
    separate.forEach((p, i) => projectLinf(gpu, p.tensor, centers[i], radius));
  }
  const got = await gpu.readMany([...fused, ...separate].map((p) => p.tensor));
  const n = sizes.length;
  got.slice(0, n).forEach((g, i) => assert.deepEqual(g, got[n + i], `parameter ${i}: fused vs separate`));
  const clamped = got.slice(0, n).flatMap((g, i) => [...g].map((v, j) => Math.abs(v - initial[i][j])));
  assert.ok(clamped.every((d) => d <= radius + 1e-7), "every value within the ball");
  assert.ok(clamped.filter((d) => d > radius - 1e-6).length > 100, "the ball is reached (not vacuous)");
  await assert.rejects(() => ball.gradNorm(), /trackNorm: false and no clipping/);
  const t = gpu.tensor([4], [1, 2, 3, 4]);
  assert.throws(
    () => new Adam(gpu, [{ name: "a", tensor: t, size: 4, linf: { center: t, radius: -1 } }], { lr: 1 }),
    /L-infinity radius of "a" must be >= 0, got -1/,
  );
  assert.throws(
    () =>
      new Adam(gpu, [{ name: "a", tensor: t, size: 4, linf: { center: gpu.zeros([2]), radius: 1 } }], {
        lr: 1,
      }),
    /L-infinity center of "a" has 2 values, needs 4/,
  );
});

Deno.test("zeroGrads and fill write every value", async () => {
  const a = gpu.tensor([1000], randomArray(1000, 600)), b = gpu.tensor([3], [1, 2, 3]);
  zeroGrads(gpu, [a, b]);
  const c = gpu.zeros([10]);
  fill(gpu, c, 2.5, 7);
  const [ga, gb, gc] = await gpu.readMany([a, b, c]);
  assert.ok(ga.every((v) => v === 0) && gb.every((v) => v === 0));
  assert.deepEqual([...gc], [2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 0, 0, 0]);
});

Deno.test("end to end: softmax regression trained with matmul + crossEntropy + biasBackward + AdamW", async () => {
  // Learn labels y = argmax(x A) from 64 examples with logits = x W + b; the loss must fall.
  const [R, K, V] = [64, 6, 4];
  const x = randomArray(R * K, 700), A = randomArray(K * V, 701);
  const labels = Array.from({ length: R }, (_, r) => {
    const scores = Array.from({ length: V }, (_, v) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[r * K + k] * A[k * V + v];
      return s;
    });
    return scores.indexOf(Math.max(...scores));
  });
  const tx = gpu.tensor([R, K], x), targets = gpu.tensor([R], labels, "u32");
  const W = gpu.tensor([K, V], randomArray(K * V, 702, 0.01)), b = gpu.zeros([V]);
  const dW = gpu.zeros([K, V]), db = gpu.zeros([V]), logits = gpu.zeros([R, V]), dlogits = gpu.zeros([R, V]);
  const losses = gpu.zeros([R]);
  const adam = new Adam(gpu, [{ name: "W", tensor: W, size: K * V }, {
    name: "b",
    tensor: b,
    size: V,
    weightDecay: 0,
  }], {
    lr: 0.1,
    weightDecay: 0.01,
    clipNorm: 10,
  });
  const meanLoss = async () => (await losses.read()).reduce((s, v) => s + v, 0) / R;
  let first = 0;
  for (let step = 0; step < 40; step++) {
    zeroGrads(gpu, [dW, db]);
    matmul(gpu, tx, W, R, V, K, { bias: b, out: logits });
    crossEntropy(gpu, logits, targets, R, V, { losses, dlogits, scale: 1 / R });
    matmul(gpu, tx, dlogits, K, V, R, { transA: true, out: dW, beta: 1 });
    biasBackward(gpu, dlogits, R, V, { dbias: db });
    adam.step([dW, db]);
    if (step === 0) first = await meanLoss();
  }
  const last = await meanLoss();
  assert.ok(first > 1.3 && last < 0.5 * first, `loss went from ${first} to ${last}`);
});

Deno.test("Adam: copies around one shared center (its texture mirror, or its buffer) step as with a center per copy, bit for bit", async () => {
  // FT-L's weight copies all start at, and stay within a ball around, the model's own weight. [3, 16, 64]
  // reads the shared center from its texture mirror on a software adapter (64 columns), [3, 20, 12] from
  // its buffer (shaders/adam_factored.wgsl CENTER_SHARED).
  for (
    const { groups, rows, M, N } of [{ groups: 3, rows: 5, M: 16, N: 64 }, {
      groups: 3,
      rows: 4,
      M: 20,
      N: 12,
    }]
  ) {
    const size = groups * M * N, radius = 0.02;
    const center = randomArray(M * N, 1300 + N);
    const repeated = new Float32Array(size);
    for (let g = 0; g < groups; g++) repeated.set(center, g * M * N);
    const shared = { name: "w", tensor: gpu.tensor([size], repeated), size };
    const perCopy = { name: "w", tensor: gpu.tensor([size], repeated), size };
    const adamShared = new Adam(gpu, [{
      ...shared,
      linf: { center: gpu.tensor([M * N], center), radius, copies: groups },
    }], {
      lr: 0.05,
      trackNorm: false,
    });
    const adamPerCopy = new Adam(gpu, [{
      ...perCopy,
      linf: { center: gpu.tensor([size], repeated), radius },
    }], {
      lr: 0.05,
      trackNorm: false,
    });
    for (let step = 0; step < 4; step++) {
      const a = gpu.tensor([groups * rows * M], randomArray(groups * rows * M, 1400 + step));
      const b = gpu.tensor([groups * rows * N], randomArray(groups * rows * N, 1500 + step));
      const factor = { groups, rows, M, N, a, b, held: b };
      adamShared.step([factor]);
      adamPerCopy.step([factor]);
    }
    const [got, want] = await gpu.readMany([shared.tensor, perCopy.tensor]);
    assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `[${groups}, ${M}, ${N}]`);
    const moved = [...got].map((v, j) => Math.abs(v - repeated[j]));
    assert.ok(moved.filter((d) => d > radius - 1e-6).length > 20, "the ball is reached (not vacuous)");
    // A shared center needs the gradient formed in the update, of as many groups.
    assert.throws(() => adamShared.step([gpu.zeros([size])]), /shares one center among 3 copies/);
  }
  assert.throws(
    () =>
      new Adam(gpu, [{
        name: "x",
        tensor: gpu.zeros([10]),
        size: 10,
        linf: { center: gpu.zeros([5]), radius: 1, copies: 3 },
      }], { lr: 1 }),
    /of 10 values cannot be 3 copies/,
  );
});

Deno.test("Adam forms a factored gradient in its update: the float64 reference, and the step of the gradient written out", async () => {
  // Two grouped parameters whose gradients are each group's a^T b (engine/autograd.ts FactoredGradient):
  // [3, 20, 12] (formed inside the update, shaders/adam_factored.wgsl: 20 rows are two and a half register
  // blocks) and [2, 5, 6] (6 columns are not whole vec4s: written out first).
  const shapes = [{ groups: 3, rows: 5, M: 20, N: 12 }, { groups: 2, rows: 3, M: 5, N: 6 }];
  const sizeOf = (s: (typeof shapes)[number]) => s.groups * s.M * s.N;
  const initial = shapes.map((s, i) => randomArray(sizeOf(s), 1000 + i));
  const steps = 4, lr = 0.05, radius = 0.04;
  const factorsAt = (step: number) =>
    shapes.map((s, i) => {
      const a = randomArray(s.groups * s.rows * s.M, 1100 + 10 * step + i);
      const b = randomArray(s.groups * s.rows * s.N, 1200 + 10 * step + i);
      const grad = new Float64Array(sizeOf(s));
      for (let g = 0; g < s.groups; g++) {
        for (let r = g * s.rows; r < (g + 1) * s.rows; r++) {
          for (let m = 0; m < s.M; m++) {
            for (let n = 0; n < s.N; n++) grad[(g * s.M + m) * s.N + n] += a[r * s.M + m] * b[r * s.N + n];
          }
        }
      }
      const held = gpu.tensor([b.length], b);
      return { factor: { ...s, a: gpu.tensor([a.length], a), b: held, held }, grad };
    });
  const params = (tag: string, ball: boolean) =>
    initial.map((w, i) => ({
      name: `${tag}${i}`,
      tensor: gpu.tensor([w.length], w),
      size: w.length,
      ...(ball ? { linf: { center: gpu.tensor([w.length], w), radius } } : {}),
    }));
  // Without a ball against the float64 reference; with one, factored against written-out gradients.
  const free = params("free", false), fused = params("fused", true), written = params("written", true);
  const adamFree = new Adam(gpu, free, { lr, weightDecay: 0.1, trackNorm: false });
  const adamFused = new Adam(gpu, fused, { lr, weightDecay: 0.1, trackNorm: false });
  const adamWritten = new Adam(gpu, written, { lr, weightDecay: 0.1, trackNorm: false });
  const ref = new AdamRef(shapes.map(sizeOf), {
    lr,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: [0.1, 0.1],
  });
  const refParams = initial.map((w) => Float64Array.from(w));
  for (let s = 0; s < steps; s++) {
    const at = factorsAt(s);
    adamFree.step(at.map((x) => x.factor));
    adamFused.step(at.map((x) => x.factor));
    adamWritten.step(at.map((x) => gpu.tensor([x.grad.length], Float32Array.from(x.grad))));
    ref.step(refParams, at.map((x) => x.grad));
    const got = await gpu.readMany(free.map((p) => p.tensor));
    got.forEach((g, i) => assertClose(g, refParams[i], 2e-5, `step ${s + 1} parameter ${i}`));
  }
  const [f0, f1, w0, w1] = await gpu.readMany([...fused, ...written].map((p) => p.tensor));
  assertClose(f0, w0, 1e-6, "formed in the update vs written out");
  assertClose(f1, w1, 1e-6, "written out by the step vs by the caller");
  const moved = [...f0].map((v, j) => Math.abs(v - initial[0][j]));
  assert.ok(moved.every((d) => d <= radius + 1e-7), "every value within the ball");
  assert.ok(moved.filter((d) => d > radius - 1e-6).length > 50, "the ball is reached (not vacuous)");

  // With clipping the step needs every gradient's norm first: the factored one is written out.
  const clipped = (tag: string) => params(tag, false).slice(0, 1);
  const [c1, c2] = [clipped("c"), clipped("d")];
  const clipA = new Adam(gpu, c1, { lr, clipNorm: 0.5 }), clipB = new Adam(gpu, c2, { lr, clipNorm: 0.5 });
  const at = factorsAt(9)[0];
  clipA.step([at.factor]);
  clipB.step([gpu.tensor([at.grad.length], Float32Array.from(at.grad))]);
  const [normA, normB] = [await clipA.gradNorm(), await clipB.gradNorm()];
  assert.ok(normA > 1 && Math.abs(normA - normB) <= 1e-5 * normB, `gradient norm ${normA} vs ${normB}`);
  assertClose(await c1[0].tensor.read(), await c2[0].tensor.read(), 1e-6, "clipped step");
  assert.throws(
    () => clipA.step([{ ...at.factor, groups: 2 }]),
    /factored gradient of "c0" has 2 x 20 x 12 values, the parameter 720/,
  );
});
