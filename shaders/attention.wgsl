// Causal self-attention core with grouped key/value heads, one invocation per (sequence b,
// query head h, query row i), the query at position t = i (or t = rows[b] + i with OFFSETS):
//
//   s_j   = (q_t . k_j) * scale                     for keys j in [j0, t]
//   s_j   = softcap * tanh(s_j / softcap)           when softcap > 0 (Gemma 2)
//   p_j   = exp(s_j - max_j s_j) / sum_j exp(s_j - max_j s_j)
//   y_t   = sum_j p_j v_j
//
// j0 = 0, or t + 1 - window for a sliding-window layer (key j is seen when j > t - window).
// Query head h reads key/value head h / (H / Hkv): Hkv = H is multi-head attention, 1 < Hkv < H
// grouped-query, Hkv = 1 multi-query attention.
//
//   qkv   : [B*Tq, (H + 2 Hkv) * HD], the fused projection's output: row b*Tq + i is
//           [q heads | k heads | v heads], head h at columns h*HD .. h*HD+HD-1 of its part
//   y     : [B*Tq, H * HD], heads concatenated (the input of the output projection)
//   probs : [B, H, Tq, T], p written when WITH_PROBS, with 0 for masked keys (the backward pass
//           of shaders/attention_backward.wgsl needs p); or [B, H, Tq] when WITH_LSE: the row's
//           log-sum-exp max_j s_j + log sum_j exp(s_j - max_j s_j), from which
//           shaders/attention_backward_lse.wgsl recomputes p_j = exp(s_j - lse) without any
//           [Tq, T] tensor; otherwise a 1-element placeholder is bound and never touched.
// Without OFFSETS, Tq = T and row i is position i. With OFFSETS (a forward that computes only the
// rows from some position on, the earlier rows' keys and values cached):
//   rows  : [2B] u32: starts[b] = rows[b], the position of sequence b's first row, and
//           bases[b] = rows[B + b]: key j < starts[b] of sequence b is row bases[b] + j of `cache`
//           (keys j >= starts[b] are the sequence's own rows of qkv)
//   cache : [*, (H + 2 Hkv) * HD], q|k|v rows of the earlier positions (read only)
// A row at a position >= T (padding) gets y = 0 and probs = 0 (lse = 0).
//
// Masked keys are never read, so nothing uninitialised can leak in through the mask.
// Passes over the keys: 1) the max score, 2) the exp-sum and the weighted sum of values (with
// WITH_PROBS the exps are stored in probs), 3) (WITH_PROBS only) the stored exps divided by the sum,
// zeros for masked keys. Recomputing the dot products in pass 2 is cheaper here than storing a row
// of T scores per invocation.
//
// With TEXTURE (HD % 4 == 0) keys and values are read from `qkvT`, an rgba32float mirror of qkv
// (texel (c, r) = qkv[r, 4c .. 4c+3]), and with OFFSETS the cached ones from `cacheT`, the same mirror
// of cache: on llvmpipe a texture load is inlined where a storage-buffer load is a bounds-checked
// per-lane gather. The sums are the same, term by term in the same order (each texel's four products
// added one at a time), so both paths give the same bits.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   HD         : head dimension (sizes the private q and accumulator arrays; any value >= 1)
//   WG         : invocations per workgroup
//   WITH_PROBS : write probs
//   WITH_LSE   : write the rows' log-sum-exp into probs instead (never together with WITH_PROBS)
//   OFFSETS    : rows start at rows[b], earlier keys and values come from cache
//   TEXTURE    : keys and values from qkvT and cacheT (otherwise placeholder textures are bound there)

struct Dims { B: u32, T: u32, H: u32, Hkv: u32, window: u32, scale: f32, softcap: f32, Tq: u32 }

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> cache: array<f32>;
@group(0) @binding(5) var qkvT: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var cacheT: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var<uniform> d: Dims;

// import: attention_keys.wgsl

// Texel c4 (elements 4*c4 .. 4*c4+3) of key row r (from key_row), from the mirrors (TEXTURE).
fn kv4(r: vec2<u32>, c4: u32) -> vec4<f32> {
  if (OFFSETS && r.x == 1u) { return textureLoad(cacheT, vec2<u32>(c4, r.y)); }
  return textureLoad(qkvT, vec2<u32>(c4, r.y));
}

fn score(q: ptr<function, array<f32, HD>>, r: vec2<u32>, stride: u32, col: u32) -> f32 {
  var s = 0.0;
  if (TEXTURE) {
    for (var c = 0u; c < HD / 4u; c++) {
      let k = kv4(r, col / 4u + c);
      s += (*q)[4u * c] * k.x;
      s += (*q)[4u * c + 1u] * k.y;
      s += (*q)[4u * c + 2u] * k.z;
      s += (*q)[4u * c + 3u] * k.w;
    }
  } else {
    for (var i = 0u; i < HD; i++) { s += (*q)[i] * kv(r, stride, col, i); }
  }
  if (d.softcap > 0.0) { s = d.softcap * tanh(clamp(s / d.softcap, -15.0, 15.0)); }
  return s;
}

// grid: ceil(B*H*Tq / WG) workgroups (split over x and y when over the per-dimension limit);
// invocation ((b*H + h)*Tq + i), so neighbouring lanes share the keys and values of one head.
@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.B * d.H * d.Tq) { return; }
  let i_q = inv % d.Tq;
  let h = (inv / d.Tq) % d.H;
  let b = inv / (d.Tq * d.H);
  let t = position(b, i_q);
  let out = (b * d.Tq + i_q) * d.H * HD + h * HD;
  if (t >= d.T) {
    for (var i = 0u; i < HD; i++) { y[out + i] = 0.0; }
    if (WITH_PROBS) { for (var j = 0u; j < d.T; j++) { probs[inv * d.T + j] = 0.0; } }
    if (WITH_LSE) { probs[inv] = 0.0; }
    return;
  }
  let kvh = h / (d.H / d.Hkv);
  let stride = (d.H + 2u * d.Hkv) * HD;   // elements per qkv row
  let k_col = (d.H + kvh) * HD;
  let v_col = (d.H + d.Hkv + kvh) * HD;
  var j0 = 0u;
  if (d.window > 0u && t + 1u > d.window) { j0 = t + 1u - d.window; }

  var q: array<f32, HD>;
  for (var i = 0u; i < HD; i++) { q[i] = qkv[(b * d.Tq + i_q) * stride + h * HD + i] * d.scale; }

  var max_s = -3.0e38;
  for (var j = j0; j <= t; j++) { max_s = max(max_s, score(&q, key_row(d.B, d.Tq, b, j), stride, k_col)); }

  var sum = 0.0;
  var acc: array<f32, HD>;
  let row = inv * d.T;             // probs[b, h, i_q, :]
  for (var j = j0; j <= t; j++) {
    let r = key_row(d.B, d.Tq, b, j);
    let p = exp(score(&q, r, stride, k_col) - max_s);
    if (WITH_PROBS) { probs[row + j] = p; }
    sum += p;
    if (TEXTURE) {
      for (var c = 0u; c < HD / 4u; c++) {
        let v = kv4(r, v_col / 4u + c);
        acc[4u * c] += p * v.x;
        acc[4u * c + 1u] += p * v.y;
        acc[4u * c + 2u] += p * v.z;
        acc[4u * c + 3u] += p * v.w;
      }
    } else {
      for (var i = 0u; i < HD; i++) { acc[i] += p * kv(r, stride, v_col, i); }
    }
  }
  for (var i = 0u; i < HD; i++) { y[out + i] = acc[i] / sum; }
  if (WITH_LSE) { probs[inv] = max_s + log(sum); }

  if (WITH_PROBS) {
    for (var j = 0u; j < d.T; j++) {
      var p = 0.0;
      if (j >= j0 && j <= t) { p = probs[row + j] / sum; }
      probs[row + j] = p;
    }
  }
}
