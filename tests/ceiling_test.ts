// The arithmetic-ceiling probe of bench/kernels.ts (shaders/arithmetic_peak.wgsl) computes what it
// claims: each invocation's chains against the float64 recurrence acc <- acc * 0.999 + a.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { recordArithmeticPeak } from "../bench/ceiling.ts";

Deno.test("arithmetic_peak.wgsl: each invocation's fma chains match the float64 recurrence", async () => {
  const gpu = await getGpu();
  const shape = { ACC: 3, STEPS: 50, WG: 8 };
  const workgroups = 5, invocations = workgroups * shape.WG;
  const out = gpu.zeros([4 * invocations]);
  const flops = recordArithmeticPeak(gpu, shape, workgroups, out);
  assert.equal(flops, 8 * 3 * 50 * invocations);
  const got = await gpu.read(out);
  for (let i = 0; i < invocations; i++) {
    let sum = 0;
    for (let j = 0; j < shape.ACC; j++) {
      let acc = Math.fround((i + j) * 1e-6);
      for (let s = 0; s < shape.STEPS; s++) acc = acc * Math.fround(0.999) + Math.fround(i * 1e-3);
      sum += acc;
    }
    for (let c = 0; c < 4; c++) {
      const g = got[4 * i + c];
      assert.ok(
        Math.abs(g - sum) <= 1e-5 * Math.max(1, Math.abs(sum)),
        `invocation ${i}: ${g} against ${sum}`,
      );
    }
  }
  assert.throws(
    () => recordArithmeticPeak(gpu, shape, workgroups + 1, out),
    /out holds 160 floats, needs 192/,
  );
  gpu.release(out);
});
