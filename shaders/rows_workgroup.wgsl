// Row kernels shaped for hardware GPUs: one row per workgroup of WG lanes (a power of two), lane i
// taking columns i, i + WG, i + 2 WG, ..., the lanes' partial results combined by tree reductions in
// workgroup memory. They compute exactly what the one-row-per-invocation kernels compute:
//   layernorm_rows     = layernorm.wgsl's layernorm (LayerNorm / RMSNorm, strided rows, stats)
//   softmax_rows       = softmax.wgsl's softmax
//   log_prob_of_rows   = softmax.wgsl's log_prob_of
//   cross_entropy_rows = crossentropy.wgsl's cross_entropy
// (see those files for the formulas, layouts and NaN rules). One row per invocation is the fast shape
// on llvmpipe, where a barrier costs more than a loop over a row; on a GPU it leaves most lanes idle
// (a forward scores a handful of rows, and a row of a 50257-token vocabulary is a long serial loop).
// engine/ops.ts's rowKernels picks the shape per adapter.
//
// Every workgroup takes row wid.y * nwg.x + wid.x (the grid split over x and y past the per-dimension
// limit); that index is uniform across the workgroup, so the early return keeps barriers uniform.
// Compile-time parameters: WG (lanes per workgroup, a power of two); RMS, HAS_BETA, WITH_STATS
// (layernorm_rows).

var<workgroup> part: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
  part[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] += part[lid + s]; }
    workgroupBarrier();
  }
  let total = part[0];
  workgroupBarrier(); // part is reused by the next reduction
  return total;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
  part[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] = max(part[lid], part[lid + s]); }
    workgroupBarrier();
  }
  let total = part[0];
  workgroupBarrier();
  return total;
}

// ---- layernorm_rows. Bindings: x, gamma, beta, y, stats, norm (as layernorm.wgsl).
struct NormDims { R: u32, C: u32, eps: f32, gain_offset: f32, G: u32, ld: u32, off: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<uniform> norm: NormDims;

@compute @workgroup_size(WG)
fn layernorm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= norm.R) { return; }
  let C = norm.C;
  let row = (r / norm.G) * norm.ld + norm.off + (r % norm.G) * C;
  var mean = 0.0;
  if (!RMS) {
    var sum = 0.0;
    for (var c = lid; c < C; c += WG) { sum += x[row + c]; }
    mean = reduce_sum(lid, sum) / f32(C);
  }
  var sq = 0.0;
  for (var c = lid; c < C; c += WG) {
    let dev = x[row + c] - mean;
    sq += dev * dev;
  }
  let rstd = inverseSqrt(reduce_sum(lid, sq) / f32(C) + norm.eps);
  for (var c = lid; c < C; c += WG) {
    var v = (x[row + c] - mean) * rstd * (gamma[c] + norm.gain_offset);
    if (HAS_BETA) { v += beta[c]; }
    y[row + c] = v;
  }
  if (WITH_STATS && lid == 0u) {
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
  }
}

// ---- the logits kernels share the row's max and sum of exp(l - max).
struct LogitDims { R: u32, V: u32 }

@group(0) @binding(0) var<storage, read> logits: array<f32>;

// (max, sum_v exp(logits[row + v] - max)) over a row of V logits.
fn row_normaliser(lid: u32, row: u32, V: u32) -> vec2<f32> {
  var m = -3.0e38;
  for (var v = lid; v < V; v += WG) { m = max(m, logits[row + v]); }
  let mx = reduce_max(lid, m);
  var s = 0.0;
  for (var v = lid; v < V; v += WG) { s += exp(logits[row + v] - mx); }
  return vec2<f32>(mx, reduce_sum(lid, s));
}

// softmax_rows. Bindings: logits, probs, dims.
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<uniform> d_softmax: LogitDims;

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= d_softmax.R) { return; }
  let V = d_softmax.V;
  let row = r * V;
  let n = row_normaliser(lid, row, V);
  let inv_sum = 1.0 / n.y;
  for (var v = lid; v < V; v += WG) { probs[row + v] = exp(logits[row + v] - n.x) * inv_sum; }
}

// log_prob_of_rows. Bindings: logits, targets, log_probs, dims.
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> log_probs: array<f32>;
@group(0) @binding(3) var<uniform> d_log_prob: LogitDims;

@compute @workgroup_size(WG)
fn log_prob_of_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= d_log_prob.R) { return; }
  let V = d_log_prob.V;
  let want = targets[r];
  if (want >= V) {
    if (lid == 0u) {
      var nan_bits = 0x7fc00000u; // a run-time NaN (a constant expression may not be NaN)
      log_probs[r] = bitcast<f32>(nan_bits);
    }
    return;
  }
  let row = r * V;
  let n = row_normaliser(lid, row, V);
  if (lid == 0u) { log_probs[r] = (logits[row + want] - n.x) - log(n.y); }
}

// cross_entropy_rows. Bindings: logits, targets, weights, losses, dlogits, dims (as crossentropy.wgsl).
struct CrossEntropyDims { R: u32, V: u32, weight_stride: u32, write_grad: u32, scale: f32 }

@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<uniform> d_ce: CrossEntropyDims;

@compute @workgroup_size(WG)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= d_ce.R) { return; }
  let V = d_ce.V;
  let base = r * V;
  let w = weights[r * d_ce.weight_stride];
  let label = targets[r];
  if (w == 0.0 || label >= V) {
    var value = 0.0;
    if (w != 0.0) {
      var nan_bits = 0x7fc00000u;
      value = bitcast<f32>(nan_bits);
    }
    if (lid == 0u) { losses[r] = value; }
    if (d_ce.write_grad != 0u) {
      for (var c = lid; c < V; c += WG) { dlogits[base + c] = value; }
    }
    return;
  }
  let n = row_normaliser(lid, base, V);
  if (lid == 0u) { losses[r] = log(n.y) + n.x - logits[base + label]; }
  if (d_ce.write_grad != 0u) {
    let k = d_ce.scale * w;
    let inv_sum = 1.0 / n.y;
    for (var c = lid; c < V; c += WG) {
      var g = k * exp(logits[base + c] - n.x) * inv_sum;
      if (c == label) { g -= k; }
      dlogits[base + c] = g;
    }
  }
}
