// Layer normalisation, one row per invocation:
//
//   y[r, c] = (x[r, c] - mean_r) * rstd_r * gamma[c] + beta[c],   rstd_r = 1 / sqrt(var_r + eps)
//
//   x, y  : [R, C]
//   gamma, beta : [C]
//   stats : [R, 2] = (mean_r, rstd_r), written only when WITH_STATS (the backward pass needs them);
//           otherwise a 1-element placeholder is bound and never touched.
//
// The variance is biased (divided by C), like PyTorch. It is computed as the mean of (x - mean)^2
// in a second pass rather than E[x^2] - mean^2, which cancels badly in f32 when |mean| >> std.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG         : invocations per workgroup (8 = one llvmpipe SIMD vector)
//   WITH_STATS : write stats
// One row per invocation (no workgroup reduction) is the fast shape on llvmpipe: barriers there cost
// more than the loop over C (see PERF-NOTES).

struct Dims { R: u32, C: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<uniform> d: Dims;

// grid: ceil(R / WG) workgroups, split over x and y when over the per-dimension limit.
@compute @workgroup_size(WG)
fn layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= d.R) { return; }
  let row = r * d.C;
  var sum = 0.0;
  for (var c = 0u; c < d.C; c++) { sum += x[row + c]; }
  let mean = sum / f32(d.C);
  var sq = 0.0;
  for (var c = 0u; c < d.C; c++) {
    let dev = x[row + c] - mean;
    sq += dev * dev;
  }
  let rstd = inverseSqrt(sq / f32(d.C) + d.eps);
  for (var c = 0u; c < d.C; c++) {
    y[row + c] = (x[row + c] - mean) * rstd * gamma[c] + beta[c];
  }
  if (WITH_STATS) {
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
  }
}
