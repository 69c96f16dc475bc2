// Layer normalisation and RMS normalisation, one row per invocation:
//
//   LayerNorm: y[r, c] = (x[r, c] - mean_r) * rstd_r * (gamma[c] + g0) + beta[c],  rstd_r = 1/sqrt(var_r + eps)
//   RMSNorm:   y[r, c] = x[r, c] * rstd_r * (gamma[c] + g0),                      rstd_r = 1/sqrt(mean_r(x^2) + eps)
//
// g0 (gain_offset) is 1 for Gemma's RMSNorm, which multiplies by (1 + w), and 0 otherwise.
//   x, y  : rows of C values. Row r starts at (r / G) * ld + off + (r % G) * C: G = 1, ld = C, off = 0
//           for a plain [R, C] tensor; Gemma 3's per-head q/k norms use G heads of C = hd values
//           inside each row of the fused q|k|v tensor (ld its width, off the q or k column).
//   gamma, beta : [C]   (beta read only when HAS_BETA)
//   stats : [R, 2] = (mean_r, rstd_r) with mean_r = 0 for RMSNorm, written only when WITH_STATS
//           (the backward pass needs them); otherwise a 1-element placeholder is bound.
//
// The variance is biased (divided by C), like PyTorch. It is computed as the mean of (x - mean)^2
// in a second pass rather than E[x^2] - mean^2, which cancels badly in f32 when |mean| >> std.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG         : invocations per workgroup (8 = one llvmpipe SIMD vector)
//   WITH_STATS : write stats
//   RMS        : RMSNorm (no mean subtracted, no beta)
//   HAS_BETA   : add beta
// One row per invocation (no workgroup reduction) is the fast shape on llvmpipe, where barriers
// cost more than the loop over C.

struct Dims { R: u32, C: u32, eps: f32, gain_offset: f32, G: u32, ld: u32, off: u32 }

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
  let row = (r / d.G) * d.ld + d.off + (r % d.G) * d.C;
  var mean = 0.0;
  if (!RMS) {
    var sum = 0.0;
    for (var c = 0u; c < d.C; c++) { sum += x[row + c]; }
    mean = sum / f32(d.C);
  }
  var sq = 0.0;
  for (var c = 0u; c < d.C; c++) {
    let dev = x[row + c] - mean;
    sq += dev * dev;
  }
  let rstd = inverseSqrt(sq / f32(d.C) + d.eps);
  for (var c = 0u; c < d.C; c++) {
    var v = (x[row + c] - mean) * rstd * (gamma[c] + d.gain_offset);
    if (HAS_BETA) { v += beta[c]; }
    y[row + c] = v;
  }
  if (WITH_STATS) {
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
  }
}

// layernorm four values per access, where C, ld and off are multiples of 4 (on llvmpipe every storage
// access is a per-lane loop): the same values, each sum still adding one value at a time in order.
// Binds beta4 = gamma when there is no beta (never read then).
@group(0) @binding(0) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn layernorm_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= d.R) { return; }
  let row = ((r / d.G) * d.ld + d.off + (r % d.G) * d.C) / 4u;
  let C4 = d.C / 4u;
  var mean = 0.0;
  if (!RMS) {
    var sum = 0.0;
    for (var c = 0u; c < C4; c++) {
      let v = x4[row + c];
      sum += v.x;
      sum += v.y;
      sum += v.z;
      sum += v.w;
    }
    mean = sum / f32(d.C);
  }
  var sq = 0.0;
  for (var c = 0u; c < C4; c++) {
    let dev = x4[row + c] - mean;
    sq += dev.x * dev.x;
    sq += dev.y * dev.y;
    sq += dev.z * dev.z;
    sq += dev.w * dev.w;
  }
  let rstd = inverseSqrt(sq / f32(d.C) + d.eps);
  for (var c = 0u; c < C4; c++) {
    var v = (x4[row + c] - mean) * rstd * (gamma4[c] + d.gain_offset);
    if (HAS_BETA) { v += beta4[c]; }
    y4[row + c] = v;
  }
  if (WITH_STATS) {
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
  }
}
