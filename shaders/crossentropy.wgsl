// Fused softmax + cross-entropy, forward and gradient, one invocation per row of logits [R, V]:
//   losses[r]    = logsumexp(logits[r]) - logits[r, target[r]]      (= -log softmax[target])
//   dlogits[r,c] = scale * w[r] * (softmax(logits[r])[c] - (c == target[r]))
// w[r] is a per-row weight (0 masks a row: its loss and gradient are 0 and its target is never
// read, so padding rows may hold any target). The loss is reported unweighted so per-token
// losses stay readable; a masked row reports 0. A weighted row whose target is >= V reports
// NaN in its loss and gradient instead of reading out of bounds.
//
// Bindings: logits, targets (u32), weights ([R], or one value with weight_stride 0),
// losses (written), dlogits (written when write_grad != 0; else a placeholder), dims.
// Compile-time parameters: WG.

struct Dims { R: u32, V: u32, weight_stride: u32, write_grad: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> logits: array<f32>;     // [R, V]
@group(0) @binding(1) var<storage, read> targets: array<u32>;    // [R]
@group(0) @binding(2) var<storage, read> weights: array<f32>;    // [R] or [1]
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;  // [R]
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // [R, V]
@group(0) @binding(5) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn cross_entropy(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= dims.R) { return; }
  let base = r * dims.V;
  let w = weights[r * dims.weight_stride];
  let label = targets[r];
  if (w == 0.0) {
    losses[r] = 0.0;
    if (dims.write_grad != 0u) {
      for (var c = 0u; c < dims.V; c++) { dlogits[base + c] = 0.0; }
    }
    return;
  }
  if (label >= dims.V) {
    // NaN from a `var`: bitcast of a constant to NaN is a constant expression, which WGSL forbids
    // (Chromium's compiler rejects the module), whereas a run-time value may be NaN.
    var nan_bits = 0x7fc00000u;
    let nan = bitcast<f32>(nan_bits);
    losses[r] = nan;
    if (dims.write_grad != 0u) {
      for (var c = 0u; c < dims.V; c++) { dlogits[base + c] = nan; }
    }
    return;
  }
  // Online softmax normaliser: one pass keeps the running max and the sum of exp(l - max),
  // rescaling the sum whenever the max grows.
  var max_logit = logits[base];
  var sum_exp = 1.0;
  for (var c = 1u; c < dims.V; c++) {
    let l = logits[base + c];
    if (l > max_logit) {
      sum_exp = sum_exp * exp(max_logit - l) + 1.0;
      max_logit = l;
    } else {
      sum_exp += exp(l - max_logit);
    }
  }
  losses[r] = log(sum_exp) + max_logit - logits[base + label];
  if (dims.write_grad != 0u) {
    let k = dims.scale * w;
    let inv_sum = 1.0 / sum_exp;
    for (var c = 0u; c < dims.V; c++) {
      dlogits[base + c] = k * exp(logits[base + c] - max_logit) * inv_sum;
    }
    dlogits[base + label] -= k;
  }
}
