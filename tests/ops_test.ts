// Forward kernels against their float64 references, on odd shapes (R = 1, C not a multiple of 4,
// T = 1, several heads, B > 1). Each test records all its dispatches and reads back once.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { layernormBackward } from "../engine/backward_ops.ts";
import {
  add,
  attention,
  ELEMENT_WG,
  ELEMENTS_PER_INVOCATION,
  embed,
  gelu,
  layernorm,
  logProbOf,
  type RowEntry,
  rowOps,
  softmax,
  topK,
} from "../engine/ops.ts";
import {
  attentionRef,
  embedRef,
  geluRef,
  layernormRef,
  logProbRef,
  rowOpsRef,
  softmaxRef,
  topKRef,
} from "./reference.ts";
import { assertClose, randomArray, rng } from "./util.ts";

const gpu = await getGpu();

/** Deno.test that also fails on any WebGPU validation error (a shader that does not compile would
 *  otherwise only print a warning and leave zeros behind). */
function test(name: string, body: () => void | Promise<void>): void {
  Deno.test(name, async () => {
    gpu.device.pushErrorScope("validation");
    try {
      await body();
    } finally {
      const error = await gpu.device.popErrorScope();
      assert.equal(error?.message ?? null, null, "WebGPU validation error");
    }
  });
}

test("layernorm matches reference, with and without stats, on rows with a large mean", async () => {
  for (const [R, C] of [[1, 1], [1, 5], [7, 13], [16, 768]]) {
    // An offset of 50 makes E[x^2] - mean^2 cancel badly in f32; the two-pass variance must not.
    const x = randomArray(R * C, 1).map((v) => v + 50), gamma = randomArray(C, 2), beta = randomArray(C, 3);
    const ref = layernormRef(x, gamma, beta, R, C, 1e-5);
    const tx = gpu.tensor([R, C], x), tg = gpu.tensor([C], gamma), tb = gpu.tensor([C], beta);
    const stats = gpu.tensor([R, 2], new Array(R * 2).fill(7));
    const withStats = layernorm(gpu, tx, tg, tb, R, C, 1e-5, { stats });
    const plain = layernorm(gpu, tx, tg, tb, R, C, 1e-5);
    const [y1, s, y2] = await gpu.readMany([withStats, stats, plain]);
    assertClose(y1, ref.y, 2e-4, `y [${R},${C}]`);
    assertClose(y2, ref.y, 2e-4, `y without stats [${R},${C}]`);
    for (let r = 0; r < R; r++) {
      assertClose([s[2 * r]], [ref.stats[2 * r]], 1e-4, `mean row ${r}`);
      const rstd = ref.stats[2 * r + 1];
      assertClose([s[2 * r + 1] / rstd], [1], 1e-3, `rstd row ${r} (relative)`);
    }
  }
});

test("layernorm and its input gradient four values per access: the bits of one value at a time", async () => {
  // The same rows as a plain [R, C] tensor (C % 4 == 0: four values per access) and at odd offsets inside
  // wider rows (one value at a time); LayerNorm and RMSNorm, accumulating and not.
  const R = 5, C = 12, ld = 15, off = 1;
  const plain = randomArray(R * C, 81, 3), dyPlain = randomArray(R * C, 82);
  const wide = new Float32Array(R * ld).fill(NaN), dyWide = new Float32Array(R * ld).fill(NaN);
  for (let r = 0; r < R; r++) {
    wide.set(plain.subarray(r * C, (r + 1) * C), r * ld + off);
    dyWide.set(dyPlain.subarray(r * C, (r + 1) * C), r * ld + off);
  }
  const gamma = gpu.tensor([C], randomArray(C, 83)), beta = gpu.tensor([C], randomArray(C, 84));
  const rows = { G: 1, ld, off };
  for (const rms of [false, true]) {
    for (const accumulate of [true, false]) {
      const b = rms ? null : beta;
      const stats4 = gpu.zeros([R, 2]), stats1 = gpu.zeros([R, 2]);
      const y4 = layernorm(gpu, gpu.tensor([R, C], plain), gamma, b, R, C, 1e-5, { stats: stats4, rms });
      const y1 = layernorm(gpu, gpu.tensor([R, ld], wide), gamma, b, R, C, 1e-5, {
        stats: stats1,
        rms,
        rows,
        out: gpu.zeros([R, ld]),
      });
      const dx4 =
        layernormBackward(gpu, gpu.tensor([R, C], dyPlain), gpu.tensor([R, C], plain), gamma, stats4, R, C, {
          rms,
          accumulate,
          dx: gpu.tensor([R, C], randomArray(R * C, 85)),
        }).dx;
      const dx1Init = new Float32Array(R * ld).fill(0);
      for (let r = 0; r < R; r++) {
        dx1Init.set(randomArray(R * C, 85).subarray(r * C, (r + 1) * C), r * ld + off);
      }
      const dx1 =
        layernormBackward(gpu, gpu.tensor([R, ld], dyWide), gpu.tensor([R, ld], wide), gamma, stats1, R, C, {
          rms,
          accumulate,
          rows,
          dx: gpu.tensor([R, ld], dx1Init),
        }).dx;
      const [gy4, gy1, gs4, gs1, gd4, gd1] = await gpu.readMany([y4, y1, stats4, stats1, dx4, dx1]);
      const at = (a: Float32Array, r: number) => a.subarray(r * ld + off, r * ld + off + C);
      for (let r = 0; r < R; r++) {
        const what = `${rms ? "RMSNorm" : "LayerNorm"}${accumulate ? ", accumulated" : ""}, row ${r}`;
        assert.deepEqual(gy4.subarray(r * C, (r + 1) * C), at(gy1, r), `${what}: y`);
        assert.deepEqual(gd4.subarray(r * C, (r + 1) * C), at(gd1, r), `${what}: dx`);
      }
      assert.deepEqual(gs4, gs1, "stats");
    }
  }
});

test("gelu matches gelu_new reference, including large |x| and in place", async () => {
  const x = Float32Array.from([...randomArray(1001, 4, 6), 30, -30, 1e4, -1e4, 0]);
  const tx = gpu.tensor([x.length], x);
  const y = gelu(gpu, tx, x.length);
  const one = gelu(gpu, gpu.tensor([1], [0.5]), 1);
  const inPlace = gpu.tensor([x.length], x);
  assert.equal(gelu(gpu, inPlace, x.length, { out: inPlace }), inPlace);
  const [gy, g1, gi] = await gpu.readMany([y, one, inPlace]);
  const ref = geluRef(x);
  // gelu(x) ~ x for large x: compare relative to |x|.
  const scaled = (a: ArrayLike<number>) => Float64Array.from(a, (v, i) => v / Math.max(1, Math.abs(x[i])));
  assertClose(scaled(gy), scaled(ref), 1e-6, "gelu");
  assertClose(scaled(gi), scaled(ref), 1e-6, "gelu in place");
  assertClose(g1, geluRef([0.5]), 1e-6, "gelu n=1");
  // n % 4 == 0 runs four values per access: the same bits as one at a time (the first 1004 of the above).
  const vec4 = await gelu(gpu, gpu.tensor([1004], x.subarray(0, 1004)), 1004).read();
  assert.deepEqual(vec4, gy.subarray(0, 1004), "gelu four values per access");
});

test("add: new output, given output, and in place on either operand", async () => {
  for (const n of [1, 1003]) {
    const a = randomArray(n, 5), b = randomArray(n, 6);
    const ref = a.map((v, i) => v + b[i]);
    const fresh = add(gpu, gpu.tensor([n], a), gpu.tensor([n], b), n);
    const intoA = gpu.tensor([n], a), intoB = gpu.tensor([n], b);
    add(gpu, intoA, gpu.tensor([n], b), n, { out: intoA });
    add(gpu, gpu.tensor([n], a), intoB, n, { out: intoB });
    const given = gpu.zeros([n]);
    add(gpu, gpu.tensor([n], a), gpu.tensor([n], b), n, { out: given });
    const got = await gpu.readMany([fresh, intoA, intoB, given]);
    got.forEach((g, i) => assertClose(g, ref, 1e-6, `n=${n} variant ${i}`));
  }
});

test("add refuses one tensor as a, b and out (one buffer cannot be both read and written in a dispatch)", () => {
  const x = gpu.tensor([3], [1, 2, 3]);
  assert.throws(() => add(gpu, x, x, 3, { out: x }), /add: a, b and out are the same tensor/);
  gpu.release(x);
});

test("add over more values than one grid dimension holds (the workgroup grid spills into y)", async () => {
  // 65535 workgroups of 64 invocations x 8 values, and 100 more (134 MB per tensor, under the 128 MiB
  // binding limit): the last values are added by workgroups of the grid's second row.
  const n = gpu.limits.maxComputeWorkgroupsPerDimension * ELEMENT_WG * ELEMENTS_PER_INVOCATION + 100;
  // Filled by a loop: Float32Array.from with a map function takes seconds at this size.
  const a = new Float32Array(n), b = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = i % 7;
    b[i] = i % 5;
  }
  const got = await add(gpu, gpu.tensor([n], a), gpu.tensor([n], b), n).read();
  let wrong = 0;
  for (let i = 0; i < n; i++) if (got[i] !== a[i] + b[i]) wrong++;
  assert.equal(wrong, 0, `${wrong} of ${n} sums wrong`);
});

test("attention matches reference (y and probs) for T=1, odd head dims, several heads, B=3", async () => {
  // [B, T, d, nHead]: hd = 4, 4, 5 (not a multiple of 4), 3, 64 (GPT-2's).
  for (const [B, T, d, nHead] of [[1, 1, 4, 1], [1, 7, 12, 3], [3, 7, 10, 2], [2, 5, 9, 3], [2, 9, 128, 2]]) {
    const qkv = randomArray(B * T * 3 * d, 7, 2);
    const ref = attentionRef(qkv, B, T, d, nHead);
    // Garbage in probs beforehand: masked entries must be written as 0, not left alone.
    const probs = gpu.tensor([B, nHead, T, T], new Array(B * nHead * T * T).fill(9));
    const tq = gpu.tensor([B * T, 3 * d], qkv);
    const y = attention(gpu, tq, B, T, d, nHead, { probs });
    const yPlain = attention(gpu, tq, B, T, d, nHead);
    const [gy, gp, gy2] = await gpu.readMany([y, probs, yPlain]);
    const what = `B=${B} T=${T} d=${d} nHead=${nHead}`;
    assertClose(gy, ref.y, 1e-5, `y ${what}`);
    assertClose(gy2, ref.y, 1e-5, `y without probs ${what}`);
    assertClose(gp, ref.probs, 1e-6, `probs ${what}`);
  }
});

test("attention never reads keys or values after the query (NaN there stays out)", async () => {
  const [B, T, d, nHead] = [2, 6, 8, 2];
  const qkv = randomArray(B * T * 3 * d, 8);
  // Poison k and v of the last position of each sequence: only query T-1 may see them.
  const poisoned = Float32Array.from(qkv);
  for (let b = 0; b < B; b++) poisoned.fill(NaN, (b * T + T - 1) * 3 * d + d, (b * T + T) * 3 * d);
  const got = await attention(gpu, gpu.tensor([B * T, 3 * d], poisoned), B, T, d, nHead).read();
  const ref = attentionRef(qkv, B, T, d, nHead).y;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      const row = (b * T + t) * d;
      assertClose(got.subarray(row, row + d), ref.subarray(row, row + d), 1e-5, `b=${b} t=${t}`);
    }
  }
});

test("attention rejects a width not divisible by the head count", () => {
  assert.throws(() => attention(gpu, gpu.zeros([2, 30]), 1, 2, 10, 3), /not divisible by nHead=3/);
});

test("ops without an in-place variant refuse an output that is also an input", () => {
  const x = gpu.zeros([2, 4]), g = gpu.zeros([4]);
  assert.throws(
    () => layernorm(gpu, x, g, g, 2, 4, 1e-5, { out: x }),
    /layernorm: the output must not be the input x/,
  );
  assert.throws(() => softmax(gpu, x, 2, 4, { out: x }), /softmax: the output must not be the input logits/);
  assert.throws(() => rowOps(gpu, x, x, 4, [{ dst: 0, src: 1, keep: 0, take: 1 }]), /pass src = null/);
});

test("embed: whole vocabulary, and the same result from two row chunks with rowStart", async () => {
  const [B, T, C, V, nPositions] = [2, 3, 5, 10, 4];
  const R = B * T;
  const tokens = [9, 0, 5, 6, 2, 9];
  const wte = randomArray(V * C, 9), wpe = randomArray(nPositions * C, 10);
  const sentinel = new Array(R * C).fill(-3);
  const ref = embedRef(tokens, wte, wpe, R, T, C, sentinel);
  const tt = gpu.tensor([R], tokens, "u32"), twpe = gpu.tensor([nPositions, C], wpe);

  const whole = gpu.tensor([R, C], sentinel);
  embed(gpu, tt, gpu.tensor([V, C], wte), twpe, R, T, C, { out: whole });
  const chunked = gpu.tensor([R, C], sentinel);
  const split = 6;
  const firstOnly = gpu.tensor([R, C], sentinel);
  embed(gpu, tt, gpu.tensor([split, C], wte.subarray(0, split * C)), twpe, R, T, C, { out: firstOnly });
  embed(gpu, tt, gpu.tensor([split, C], wte.subarray(0, split * C)), twpe, R, T, C, {
    out: chunked,
    rowStart: 0,
  });
  embed(gpu, tt, gpu.tensor([V - split, C], wte.subarray(split * C)), twpe, R, T, C, {
    out: chunked,
    rowStart: split,
  });
  const [gw, gc, gf] = await gpu.readMany([whole, chunked, firstOnly]);
  assertClose(gw, ref, 1e-6, "whole wte");
  assertClose(gc, ref, 1e-6, "two chunks");
  // Tokens 9, 6, 9 (rows 0, 3, 5) are not in the first chunk: those rows keep the sentinel.
  assertClose(
    gf,
    embedRef(tokens, wte.subarray(0, split * C), wpe, R, T, C, sentinel),
    1e-6,
    "first chunk only",
  );
  assert.equal(gf[3 * C], -3);
});

test("embed with starts: sequence b's rows at positions starts[b] + t, each row the whole embedding's", async () => {
  const [B, T, C, V, nPositions] = [3, 2, 8, 10, 7];
  const R = B * T, starts = [0, 4, 2];
  const tokens = [9, 0, 5, 6, 2, 9];
  const wte = randomArray(V * C, 11), wpe = randomArray(nPositions * C, 12);
  const twte = gpu.tensor([V, C], wte), twpe = gpu.tensor([nPositions, C], wpe);
  const got = gpu.zeros([R, C]);
  embed(gpu, gpu.tensor([R], tokens, "u32"), twte, twpe, R, T, C, {
    out: got,
    starts: gpu.tensor([B], starts, "u32"),
  });
  // The same rows of a whole embedding of nPositions rows per sequence (sequence b's tokens placed at
  // starts[b]..), bit for bit.
  const wholeTokens = new Array(B * nPositions).fill(0);
  tokens.forEach((
    tk,
    r,
  ) => (wholeTokens[Math.floor(r / T) * nPositions + starts[Math.floor(r / T)] + (r % T)] = tk));
  const whole = gpu.zeros([B * nPositions, C]);
  embed(gpu, gpu.tensor([B * nPositions], wholeTokens, "u32"), twte, twpe, B * nPositions, nPositions, C, {
    out: whole,
  });
  const [g, w] = await gpu.readMany([got, whole]);
  const expected = new Float32Array(R * C);
  for (let r = 0; r < R; r++) {
    const at = Math.floor(r / T) * nPositions + starts[Math.floor(r / T)] + (r % T);
    expected.set(w.subarray(at * C, (at + 1) * C), r * C);
  }
  assert.deepEqual(g, expected);
  const positions = Array.from({ length: R }, (_, r) => starts[Math.floor(r / T)] + (r % T));
  const ref = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) ref[r * C + c] = wte[tokens[r] * C + c] + wpe[positions[r] * C + c];
  }
  assertClose(g, ref, 1e-6, "float64 reference");
});

test("embed rejects f32 tokens and a wpe shorter than T", () => {
  const wte = gpu.zeros([4, 3]);
  assert.throws(
    () => embed(gpu, gpu.zeros([2]), wte, gpu.zeros([2, 3]), 2, 2, 3, { out: gpu.zeros([2, 3]) }),
    /tokens must be a u32/,
  );
  assert.throws(
    () => embed(gpu, gpu.zeros([2], "u32"), wte, gpu.zeros([1, 3]), 2, 2, 3, { out: gpu.zeros([2, 3]) }),
    /wpe/,
  );
});

test("rowOps: copy, add, zero and scale from another buffer in one dispatch (one value or four per access)", async () => {
  for (const C of [13, 12]) await rowOpsCase(C);
});

async function rowOpsCase(C: number): Promise<void> {
  const rows = 6;
  const dst = randomArray(rows * C, 11), src = randomArray(4 * C, 12);
  dst.fill(NaN, 0, C); // row 0 is garbage: copy must overwrite it exactly, not compute 0 * NaN
  dst[2 * C + 3] = Infinity; // row 2 likewise for zero
  const entries: RowEntry[] = [
    { dst: 0, src: 3, keep: 0, take: 1 }, // copy
    { dst: 1, src: 1, keep: 1, take: 1 }, // add
    { dst: 2, src: 0, keep: 0, take: 0 }, // zero
    { dst: 4, src: 2, keep: -0.5, take: 0 }, // scale
    { dst: 5, src: 0, keep: 0.25, take: 2 }, // mix
  ];
  const t = gpu.tensor([rows, C], dst);
  const before = gpu.dispatchCount;
  rowOps(gpu, t, gpu.tensor([4, C], src), C, entries);
  assert.equal(gpu.dispatchCount - before, 1);
  const got = await t.read();
  const ref = rowOpsRef(dst, src, C, entries);
  assert.ok(got.every(Number.isFinite), `C=${C}: every row is finite after copy/zero over garbage`);
  assertClose(got, ref, 1e-6, `rowOps, C=${C}`);
}

test("rowOps in place copies and mixes between disjoint rows of one buffer", async () => {
  const [rows, C] = [8, 7];
  const data = randomArray(rows * C, 13);
  const entries: RowEntry[] = [
    { dst: 5, src: 0, keep: 0, take: 1 },
    { dst: 6, src: 1, keep: 1, take: -1 },
    { dst: 2, src: 2, keep: 3, take: 0 },
    { dst: 7, src: 0, keep: 0, take: 0 },
  ];
  const t = gpu.tensor([rows, C], data);
  rowOps(gpu, t, null, C, entries);
  assertClose(await t.read(), rowOpsRef(data, null, C, entries), 1e-6, "in place");
});

test("rowOps from another buffer applies a repeated dst row's entries in order, in one dispatch", async () => {
  const [rows, C] = [5, 37];
  const dst = randomArray(rows * C, 21), src = randomArray(6 * C, 22);
  dst.fill(NaN, 3 * C, 4 * C); // row 3 is garbage: its first entry copies over it
  const entries: RowEntry[] = [
    { dst: 1, src: 0, keep: 1, take: 1 },
    { dst: 3, src: 5, keep: 0, take: 1 }, // copy, then adds
    { dst: 1, src: 4, keep: 1, take: -2 },
    { dst: 0, src: 2, keep: 0.5, take: 1 }, // a single entry among runs
    { dst: 3, src: 1, keep: 1, take: 1 },
    { dst: 1, src: 4, keep: 0.25, take: 0 }, // scale
    { dst: 3, src: 3, keep: 1, take: 0.5 },
  ];
  // float64 reference: the entries one after another.
  const want = Float64Array.from(dst);
  for (const e of entries) {
    for (let c = 0; c < C; c++) {
      const kept = e.keep === 0 ? 0 : e.keep * want[e.dst * C + c];
      want[e.dst * C + c] = kept + (e.take === 0 ? 0 : e.take * src[e.src * C + c]);
    }
  }
  const t = gpu.tensor([rows, C], dst), from = gpu.tensor([6, C], src);
  const before = gpu.dispatchCount;
  rowOps(gpu, t, from, C, entries);
  assert.equal(gpu.dispatchCount - before, 1);
  const got = await t.read();
  assertClose(got, want, 1e-6, "ordered rowOps");
  // The same bits as one dispatch per entry.
  const each = gpu.tensor([rows, C], dst);
  for (const e of entries) rowOps(gpu, each, from, C, [e]);
  assert.deepEqual(got, await each.read());
});

test("rowOps in place rejects duplicate dst rows; out-of-range rows and in-place overlaps too", () => {
  const t = gpu.zeros([4, 3]);
  assert.throws(
    () =>
      rowOps(gpu, t, null, 3, [{ dst: 1, src: 0, keep: 0, take: 1 }, { dst: 1, src: 2, keep: 0, take: 1 }]),
    /appears twice/,
  );
  assert.throws(
    () => rowOps(gpu, t, gpu.zeros([2, 3]), 3, [{ dst: 0, src: 2, keep: 0, take: 1 }]),
    /src row outside \[0, 2\)/,
  );
  assert.throws(() => rowOps(gpu, t, null, 3, [{ dst: 4, src: 0, keep: 0, take: 1 }]), /dst row outside/);
  assert.throws(
    () =>
      rowOps(gpu, t, null, 3, [{ dst: 1, src: 0, keep: 0, take: 1 }, { dst: 0, src: 2, keep: 0, take: 1 }]),
    /also a dst row/,
  );
});

test("softmax and logProbOf match reference on a GPT-2 vocabulary row and small rows", async () => {
  for (const [R, V, scale] of [[1, 50257, 10], [3, 7, 30], [5, 1, 1]]) {
    const logits = randomArray(R * V, 14, scale).map((v) => v + 100); // a large offset: max subtraction matters
    const targets = Array.from({ length: R }, (_, r) => (r * 7919) % V);
    const tl = gpu.tensor([R, V], logits);
    const p = softmax(gpu, tl, R, V);
    const lp = logProbOf(gpu, tl, gpu.tensor([R], targets, "u32"), R, V);
    const [gp, glp] = await gpu.readMany([p, lp]);
    // Probabilities of a 50257-way row are tiny: compare them relative to the reference.
    const ref = softmaxRef(logits, R, V);
    assertClose(gp.map((p, i) => p / ref[i]), new Float64Array(R * V).fill(1), 1e-4, `softmax R=${R} V=${V}`);
    assertClose(glp, logProbRef(logits, targets, R, V), 2e-4, `logProbOf R=${R} V=${V}`);
  }
});

test("logProbOf gives NaN for a target outside the vocabulary", async () => {
  const got = await logProbOf(
    gpu,
    gpu.tensor([2, 3], [1, 2, 3, 4, 5, 6]),
    gpu.tensor([2], [1, 3], "u32"),
    2,
    3,
  ).read();
  assertClose([got[0]], logProbRef([1, 2, 3], [1], 1, 3), 1e-6, "valid target");
  assert.ok(Number.isNaN(got[1]), `target 3 of V=3 gave ${got[1]}`);
});

test("topK on GPT-2-sized rows, with ties resolved lower index first", async () => {
  const [R, V] = [3, 50257];
  // Values on a coarse grid (multiples of 1/8) so that many entries tie, plus a planted tie at the top.
  const r = rng(15);
  const x = Float32Array.from({ length: R * V }, () => Math.floor(r() * 400) / 8);
  for (const v of [40000, 17, 3000]) x[V + v] = 99; // row 1: three-way tie for first place
  x[2 * V + V - 1] = 100; // row 2: the last entry is the largest
  const cases = [64, 5, 1].map((k) => ({ k, ...topK(gpu, gpu.tensor([R, V], x), R, V, k) }));
  const got = await gpu.readMany(cases.flatMap((c) => [c.indices, c.values]));
  cases.forEach(({ k }, i) => {
    const ref = topKRef(x, R, V, k);
    const indices = Array.from(new Uint32Array(got[2 * i].buffer, got[2 * i].byteOffset, R * k));
    assert.deepEqual(indices, ref.indices, `indices k=${k}`);
    assert.deepEqual(Array.from(got[2 * i + 1]), ref.values, `values k=${k}`);
  });
  const top64 = new Uint32Array(got[0].buffer, got[0].byteOffset, R * 64);
  assert.deepEqual(Array.from(top64.subarray(64, 67)), [17, 3000, 40000]);
  assert.equal(top64[128], V - 1);
});

test("topK on rows that are all equal keeps the first k indices", async () => {
  const { indices, values } = topK(gpu, gpu.tensor([2, 9], new Array(18).fill(-2)), 2, 9, 4);
  const [gi, gv] = await gpu.readMany([indices, values]);
  assert.deepEqual(Array.from(new Uint32Array(gi.buffer, gi.byteOffset, 8)), [0, 1, 2, 3, 0, 1, 2, 3]);
  assert.deepEqual(Array.from(gv), new Array(8).fill(-2));
  assert.throws(() => topK(gpu, gpu.zeros([1, 100]), 1, 100, 65), /k=65 must be <= 64/);
});
