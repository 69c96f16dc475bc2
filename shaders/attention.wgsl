// Causal multi-head self-attention core, one invocation per (sequence b, head h, query t):
//
//   s_j   = (q_t . k_j) * scale           for keys j <= t  (scale = 1/sqrt(HD))
//   p_j   = exp(s_j - max_j s_j) / sum_j exp(s_j - max_j s_j)
//   y_t   = sum_j p_j v_j
//
//   qkv   : [B*T, 3*D], c_attn's output; row b*T + t is [q | k | v], and head h occupies
//           columns h*HD .. h*HD+HD-1 of each of q, k, v (D = H*HD)
//   y     : [B*T, D], heads concatenated (the input of c_proj)
//   probs : [B, H, T, T], p written when WITH_PROBS, with 0 for masked keys j > t (the backward
//           pass needs p); otherwise a 1-element placeholder is bound and never touched.
//
// Keys j > t are never read, so nothing uninitialised can leak in through the mask.
// Passes over the keys: 1) the max score, 2) the exp-sum and the weighted sum of values,
// 3) (WITH_PROBS only) the normalised probabilities. Recomputing the dot products is cheaper here
// than storing a row of T scores per invocation.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   HD         : head dimension (sizes the private q and accumulator arrays; any value >= 1)
//   WG         : invocations per workgroup
//   WITH_PROBS : write probs

struct Dims { B: u32, T: u32, D: u32, H: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;

// grid: ceil(B*H*T / WG) workgroups (split over x and y when over the per-dimension limit);
// invocation ((b*H + h)*T + t), so neighbouring lanes share the keys and values of one head.
@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.B * d.H * d.T) { return; }
  let t = inv % d.T;
  let h = (inv / d.T) % d.H;
  let b = inv / (d.T * d.H);
  let stride = 3u * d.D;           // elements per qkv row
  let seq = b * d.T * stride;      // qkv row b*T
  let q_col = h * HD;
  let k_col = d.D + h * HD;
  let v_col = 2u * d.D + h * HD;

  var q: array<f32, HD>;
  for (var i = 0u; i < HD; i++) { q[i] = qkv[seq + t * stride + q_col + i] * d.scale; }

  var max_s = -3.0e38;
  for (var j = 0u; j <= t; j++) {
    let k = seq + j * stride + k_col;
    var s = 0.0;
    for (var i = 0u; i < HD; i++) { s += q[i] * qkv[k + i]; }
    max_s = max(max_s, s);
  }

  var sum = 0.0;
  var acc: array<f32, HD>;
  for (var j = 0u; j <= t; j++) {
    let k = seq + j * stride + k_col;
    let v = seq + j * stride + v_col;
    var s = 0.0;
    for (var i = 0u; i < HD; i++) { s += q[i] * qkv[k + i]; }
    let p = exp(s - max_s);
    sum += p;
    for (var i = 0u; i < HD; i++) { acc[i] += p * qkv[v + i]; }
  }
  let out = (b * d.T + t) * d.D + h * HD;
  for (var i = 0u; i < HD; i++) { y[out + i] = acc[i] / sum; }

  if (WITH_PROBS) {
    let row = inv * d.T;           // probs[b, h, t, :]
    for (var j = 0u; j < d.T; j++) {
      var p = 0.0;
      if (j <= t) {
        let k = seq + j * stride + k_col;
        var s = 0.0;
        for (var i = 0u; i < HD; i++) { s += q[i] * qkv[k + i]; }
        p = exp(s - max_s) / sum;
      }
      probs[row + j] = p;
    }
  }
}
