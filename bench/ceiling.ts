// The adapter's arithmetic ceiling (shaders/arithmetic_peak.wgsl): GFLOP/s of a kernel that does
// nothing but fused multiply-adds on registers. bench/kernels.ts prints every matmul's share of it, so
// a figure on one adapter reads against what that adapter can do at all (on llvmpipe: what its code
// generator makes of WGSL arithmetic on this CPU; on a GPU: close to its fp32 peak).
import type { Gpu, Tensor } from "../engine/gpu.ts";

/** The probe's shape: vec4 chains per invocation, fma per chain, invocations per workgroup. */
export interface PeakShape {
  ACC: number;
  STEPS: number;
  WG: number;
}

/** Records one dispatch of `workgroups` workgroups of the probe into `out` [workgroups * WG] vec4;
 *  returns its flops (8 per vec4 fma). */
export function recordArithmeticPeak(gpu: Gpu, shape: PeakShape, workgroups: number, out: Tensor): number {
  if (out.size < 4 * workgroups * shape.WG) {
    throw new Error(`arithmetic peak: out holds ${out.size} floats, needs ${4 * workgroups * shape.WG}`);
  }
  gpu.run(gpu.pipeline("arithmetic_peak.wgsl", "arithmetic_peak", { ...shape }), [out], [workgroups]);
  return 8 * shape.ACC * shape.STEPS * workgroups * shape.WG;
}

/**
 * The best GFLOP/s over a few probe shapes (8 invocations a workgroup, one llvmpipe SIMD vector, and
 * 64 / 256 for GPUs; 4-16 chains), each timed by `secondsPerCall` (bench/kernels.ts timePerCall).
 * 2^18 invocations of 256 steps: enough to fill a large GPU, 0.1-0.3 s a call on a 2-core llvmpipe.
 */
export async function arithmeticPeak(
  gpu: Gpu,
  secondsPerCall: (record: () => void) => Promise<number>,
): Promise<{ gflops: number; shape: PeakShape }> {
  const invocations = 1 << 18;
  const out = gpu.zeros([4 * invocations]);
  let best = { gflops: 0, shape: { ACC: 0, STEPS: 0, WG: 0 } };
  for (const WG of [8, 64, 256]) {
    for (const ACC of [4, 8, 16]) {
      const shape = { ACC, STEPS: 256, WG };
      let flops = 0;
      const seconds = await secondsPerCall(() => {
        flops = recordArithmeticPeak(gpu, shape, invocations / WG, out);
      });
      const gflops = flops / seconds / 1e9;
      if (gflops > best.gflops) best = { gflops, shape };
    }
  }
  gpu.release(out);
  return best;
}
