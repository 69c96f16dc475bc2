// Loss gradients of the v*/z objective (experiments/editing/values.ts) at its scored rows, computed on
// the GPU so that an optimisation step needs one readback, not one for the losses and another for the
// gradient: Deno resolves every readback at least 10 ms after its work is done.
//
// rewrite_weights: the weight of each target-token row's cross-entropy gradient. Row i belongs to a
// rewrite prompt whose target rows are losses[first .. first + count) (teacher forcing, one row per
// target token), NLL = their mean (losses hold -log p of each target token):
//   increase (ROME's objective):        w[i] = scale
//   decrease (fact erasure, -log(1 - p), p = exp(-NLL), q = min(p, 1 - 1e-7)):
//                                       w[i] = scale * -q / (1 - q)
// so that the cross-entropy gradient w[i] * (softmax - onehot) is d objective / d logits of the row.
// Bindings: losses [R], table [n] (first, count, scale as f32 bits, decrease), weights [n] (written).
//
// kl_gradient: per KL row j, its logits x (row logits_row0 + j of `logits`) and the reference x0 (row
// table[j].x of `reference`, the logits at delta = 0), with lp = log_softmax(x), lp0 = log_softmax(x0),
// p = exp(lp):
//   KL(p || p0) = sum_v p[v] (lp[v] - lp0[v])
//   dlogits[dlogits_row0 + j, v] = factor * p[v] * (lp[v] - lp0[v] - KL)     (factor: table[j].y bits)
// the gradient of factor * KL with respect to x. At x = x0 it is exactly 0 (lp - lp0 is 0 term by term).
// Bindings: logits [*, V], reference [*, V], table [n] (reference row, factor as f32 bits), dlogits
// [*, V] (written).
//
// One invocation per row (a few dozen rows a step). Compile-time parameters: WG.

struct WeightDims { n: u32 }
struct KlDims { n: u32, V: u32, logits_row0: u32, dlogits_row0: u32 }

@group(0) @binding(0) var<storage, read> losses: array<f32>;
@group(0) @binding(1) var<storage, read> rows: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<uniform> wdims: WeightDims;

@compute @workgroup_size(WG)
fn rewrite_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= wdims.n) { return; }
  let row = rows[i];
  let scale = bitcast<f32>(row.z);
  if (row.w == 0u) {
    weights[i] = scale;
    return;
  }
  var nll = 0.0;
  for (var t = 0u; t < row.y; t++) { nll += losses[row.x + t]; }
  let q = min(exp(-nll / f32(row.y)), 1.0 - 1e-7);
  weights[i] = scale * -q / (1.0 - q);
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> reference: array<f32>;
@group(0) @binding(2) var<storage, read> kl_rows: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<uniform> kdims: KlDims;

// Element i of the current logits (from_reference false) or of the reference logits.
fn logit(from_reference: bool, i: u32) -> f32 {
  if (from_reference) { return reference[i]; }
  return logits[i];
}

// log-sum-exp of the row of V logits starting at `base` (a max pass, then a sum pass).
fn logsumexp(from_reference: bool, base: u32) -> f32 {
  var m = logit(from_reference, base);
  for (var v = 1u; v < kdims.V; v++) { m = max(m, logit(from_reference, base + v)); }
  var s = 0.0;
  for (var v = 0u; v < kdims.V; v++) { s += exp(logit(from_reference, base + v) - m); }
  return m + log(s);
}

@compute @workgroup_size(WG)
fn kl_gradient(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= kdims.n) { return; }
  let base = (kdims.logits_row0 + j) * kdims.V;
  let base0 = kl_rows[j].x * kdims.V;
  let factor = bitcast<f32>(kl_rows[j].y);
  let out = (kdims.dlogits_row0 + j) * kdims.V;
  let lse = logsumexp(false, base);
  let lse0 = logsumexp(true, base0);
  var kl = 0.0;
  for (var v = 0u; v < kdims.V; v++) {
    let lp = logits[base + v] - lse;
    kl += exp(lp) * (lp - (reference[base0 + v] - lse0));
  }
  for (var v = 0u; v < kdims.V; v++) {
    let lp = logits[base + v] - lse;
    dlogits[out + v] = factor * exp(lp) * (lp - (reference[base0 + v] - lse0) - kl);
  }
}
