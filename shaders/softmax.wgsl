// Row-wise reductions over logits, one row per invocation (R is small at inference; a row of a
// 50257-token vocabulary is a plain loop).
//
//   softmax     : probs[r, v] = exp(logits[r, v] - m_r) / sum_v exp(logits[r, v] - m_r),  m_r = max_v logits[r, v]
//   log_prob_of : out[r] = logits[r, targets[r]] - logsumexp_v logits[r, v]   (NaN if targets[r] >= V)
//   top_k       : indices[r, :], values[r, :] = the k largest logits[r, v], sorted descending;
//                 equal values keep the lower index first, so the result is deterministic.
//
//   logits : [R, V]; probs : [R, V]; targets : [R] u32; out : [R]; indices : [R, k] u32; values : [R, k]
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG : invocations per workgroup

struct Dims { R: u32, V: u32 }
struct TopKDims { R: u32, V: u32, k: u32 }

const K_MAX = 64u; // largest k of top_k: the size of its private insertion arrays (TOPK_MAX in engine/ops.ts)

@group(0) @binding(0) var<storage, read> logits: array<f32>;

// softmax
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<uniform> d_softmax: Dims;

// log_prob_of
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> log_probs: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;

// top_k
@group(0) @binding(1) var<storage, read_write> top_indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> top_values: array<f32>;
@group(0) @binding(3) var<uniform> d_top_k: TopKDims;

fn row_max(row: u32, V: u32) -> f32 {
  var m = logits[row];
  for (var v = 1u; v < V; v++) { m = max(m, logits[row + v]); }
  return m;
}

fn row_exp_sum(row: u32, V: u32, m: f32) -> f32 {
  var s = 0.0;
  for (var v = 0u; v < V; v++) { s += exp(logits[row + v] - m); }
  return s;
}

// grid for all three: ceil(R / WG) workgroups, split over x and y when over the per-dimension limit.
@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= d_softmax.R) { return; }
  let V = d_softmax.V;
  let row = r * V;
  let m = row_max(row, V);
  let inv_sum = 1.0 / row_exp_sum(row, V, m);
  for (var v = 0u; v < V; v++) { probs[row + v] = exp(logits[row + v] - m) * inv_sum; }
}

@compute @workgroup_size(WG)
fn log_prob_of(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= d.R) { return; }
  let want = targets[r];
  if (want >= d.V) {
    // NaN: a target outside the vocabulary. Built from a `var`, as a constant expression may not be
    // NaN in WGSL (Chromium's compiler rejects the module).
    var nan_bits = 0x7fc00000u;
    log_probs[r] = bitcast<f32>(nan_bits);
    return;
  }
  let row = r * d.V;
  let m = row_max(row, d.V);
  log_probs[r] = (logits[row + want] - m) - log(row_exp_sum(row, d.V, m));
}

@compute @workgroup_size(WG)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= d_top_k.R) { return; }
  let V = d_top_k.V;
  let K = d_top_k.k;
  let row = r * V;
  // Kept entries, sorted descending; `kept` of them are valid.
  var vals: array<f32, K_MAX>;
  var idx: array<u32, K_MAX>;
  var kept = 0u;
  for (var v = 0u; v < V; v++) {
    let x = logits[row + v];
    // Strictly greater than the smallest kept value: a later (higher-index) tie never displaces it.
    if (kept < K || x > vals[K - 1u]) {
      // Insertion: shift smaller entries down one slot; equal entries stay ahead of x.
      var p = min(kept, K - 1u);
      while (p > 0u && vals[p - 1u] < x) {
        vals[p] = vals[p - 1u];
        idx[p] = idx[p - 1u];
        p--;
      }
      vals[p] = x;
      idx[p] = v;
      kept = min(kept + 1u, K);
    }
  }
  for (var i = 0u; i < K; i++) {
    top_indices[r * K + i] = idx[i];
    top_values[r * K + i] = vals[i];
  }
}
