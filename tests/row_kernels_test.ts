// The row kernels in both shapes (engine/ops.ts rowKernels: one row per invocation, or one row per
// workgroup with tree reductions, shaders/rows_workgroup.wgsl) against the float64 references:
// LayerNorm with stats, softmax, log-probabilities and the fused cross-entropy (weights, masked rows,
// targets outside the vocabulary), at rows shorter than a workgroup, not a multiple of it, and longer.
// RMSNorm with a gain offset over strided per-head rows (Gemma 3's q/k norms) is compared between the
// shapes (the per-invocation kernel is checked against its float64 reference in family_ops_test.ts).
import assert from "node:assert/strict";
import { crossEntropy } from "../engine/backward_ops.ts";
import { getGpu } from "../engine/gpu.ts";
import { layernorm, logProbOf, type RowKernels, rowKernels, setRowKernels, softmax } from "../engine/ops.ts";
import { layernormRef, logProbRef, softmaxRef } from "./reference.ts";
import { crossEntropyRef } from "./reference_backward.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();
const chosen = rowKernels(gpu);

Deno.test("row kernels: software adapters keep one row per invocation, GPUs one row per workgroup", () => {
  assert.equal(chosen, gpu.info.isFallback ? "invocation" : "workgroup");
});

for (const kernels of ["invocation", "workgroup"] as RowKernels[]) {
  Deno.test(`row kernels (${kernels}): LayerNorm, softmax, log-probabilities, cross-entropy match float64`, async () => {
    setRowKernels(gpu, kernels);
    try {
      for (const [R, C] of [[1, 1], [3, 7], [5, 64], [2, 200], [4, 633]]) {
        const what = `${kernels} R=${R} C=${C}`;
        const x = randomArray(R * C, R + C, 3), gamma = randomArray(C, 2), beta = randomArray(C, 3);
        // Large logits: the max subtraction matters.
        const logits = randomArray(R * C, 4 + C, 20);
        const targets = Array.from({ length: R }, (_, r) => (r * 7) % C);
        const weights = Array.from({ length: R }, (_, r) => r === 1 ? 0 : 0.5 + r);
        const stats = gpu.zeros([R, 2]);
        const tl = gpu.tensor([R, C], logits), tt = gpu.tensor([R], targets, "u32");
        const y = layernorm(
          gpu,
          gpu.tensor([R, C], x),
          gpu.tensor([C], gamma),
          gpu.tensor([C], beta),
          R,
          C,
          1e-5,
          {
            stats,
          },
        );
        const probs = softmax(gpu, tl, R, C);
        const lp = logProbOf(gpu, tl, tt, R, C);
        const ce = crossEntropy(gpu, tl, tt, R, C, {
          weights: gpu.tensor([R], weights),
          dlogits: gpu.tensor([R, C], new Array(R * C).fill(9)),
          scale: 0.25,
        });
        const [gy, gs, gp, glp, gl, gd] = await gpu.readMany([y, stats, probs, lp, ce.losses, ce.dlogits!]);
        const ln = layernormRef(x, gamma, beta, R, C, 1e-5);
        assertClose(gy, ln.y, 1e-5, `layernorm ${what}`);
        // rstd is 1/sqrt(eps) for C = 1: relative to the largest statistic.
        assertClose(gs, ln.stats, 1e-6 * Math.max(1, ...ln.stats.map(Math.abs)), `stats ${what}`);
        assertClose(gp, softmaxRef(logits, R, C), 1e-6, `softmax ${what}`);
        assertClose(glp, logProbRef(logits, targets, R, C), 1e-4, `logProbOf ${what}`);
        const want = crossEntropyRef(logits, targets, R, C, weights, 0.25);
        // The loss is reported unweighted, 0 on a masked row.
        const losses = Float64Array.from(
          logProbRef(logits, targets, R, C),
          (v, r) => weights[r] === 0 ? 0 : -v,
        );
        assertClose(gl, losses, 1e-4, `cross-entropy losses ${what}`);
        assertClose(gd, want.dlogits, 1e-6, `cross-entropy dlogits ${what}`);
      }
      // A target outside the vocabulary: NaN, in the loss and the gradient of a weighted row.
      const tl = gpu.tensor([2, 5], randomArray(10, 9)), tt = gpu.tensor([2], [1, 5], "u32");
      const [lp] = await gpu.readMany([logProbOf(gpu, tl, tt, 2, 5)]);
      assert.ok(!Number.isNaN(lp[0]) && Number.isNaN(lp[1]), `${kernels}: NaN for a target >= V`);
      const ce = crossEntropy(gpu, tl, tt, 2, 5, { dlogits: gpu.zeros([2, 5]) });
      const [l, d] = await gpu.readMany([ce.losses, ce.dlogits!]);
      assert.ok(Number.isNaN(l[1]) && d.subarray(5).every(Number.isNaN), `${kernels}: NaN cross-entropy row`);
    } finally {
      setRowKernels(gpu, chosen);
    }
  });
}

Deno.test("row kernels: RMSNorm (1 + w) over strided per-head rows is the same in both shapes", async () => {
  const [R, G, C, ld, off] = [3, 4, 6, 40, 5]; // G heads of C values at column off of rows ld wide
  const x = randomArray(R * ld, 21, 2), gamma = randomArray(C, 22);
  const run = async (kernels: RowKernels) => {
    setRowKernels(gpu, kernels);
    try {
      const out = gpu.tensor([R, ld], new Array(R * ld).fill(7)), stats = gpu.zeros([R * G, 2]);
      layernorm(gpu, gpu.tensor([R, ld], x), gpu.tensor([C], gamma), null, R * G, C, 1e-6, {
        out,
        stats,
        rms: true,
        gainOffset: 1,
        rows: { G, ld, off },
      });
      return await gpu.readMany([out, stats]);
    } finally {
      setRowKernels(gpu, chosen);
    }
  };
  const [a, b] = [await run("invocation"), await run("workgroup")];
  assertClose(b[0], a[0], 1e-5, "y (columns outside the heads untouched in both)");
  assertClose(b[1], a[1], 1e-5, "stats");
});
