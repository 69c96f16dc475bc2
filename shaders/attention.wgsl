// Causal self-attention core with grouped key/value heads, one invocation per (sequence b,
// query head h, block of QB query rows i), the query at position t = i (or t = rows[b] + i with OFFSETS):
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
//   QB         : query rows per invocation (of one sequence and head; see the entry point)

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

// The scores s_j of an invocation's QB query rows at key row r (from key_row): each key texel (or value,
// without TEXTURE) read once for all of them, every row's terms added in index order.
fn block_scores(q: ptr<function, array<array<f32, HD>, QB>>, r: vec2<u32>, stride: u32, col: u32) -> array<f32, QB> {
  var s: array<f32, QB>;
  if (TEXTURE) {
    for (var c = 0u; c < HD / 4u; c++) {
      let k = kv4(r, col / 4u + c);
      for (var b = 0u; b < QB; b++) {
        s[b] += (*q)[b][4u * c] * k.x;
        s[b] += (*q)[b][4u * c + 1u] * k.y;
        s[b] += (*q)[b][4u * c + 2u] * k.z;
        s[b] += (*q)[b][4u * c + 3u] * k.w;
      }
    }
  } else {
    for (var i = 0u; i < HD; i++) {
      let k = kv(r, stride, col, i);
      for (var b = 0u; b < QB; b++) { s[b] += (*q)[b][i] * k; }
    }
  }
  if (d.softcap > 0.0) {
    for (var b = 0u; b < QB; b++) { s[b] = d.softcap * tanh(clamp(s[b] / d.softcap, -15.0, 15.0)); }
  }
  return s;
}

// acc[b] += p[b] * v_j for the rows b that see key j (seen[b]; the others are outside its range), each value
// texel (or value) read once for all of them, every row's elements updated in index order.
fn add_values(acc: ptr<function, array<array<f32, HD>, QB>>, p: ptr<function, array<f32, QB>>, seen: ptr<function, array<bool, QB>>, r: vec2<u32>, stride: u32, col: u32) {
  if (TEXTURE) {
    for (var c = 0u; c < HD / 4u; c++) {
      let v = kv4(r, col / 4u + c);
      for (var b = 0u; b < QB; b++) {
        if (!(*seen)[b]) { continue; }
        (*acc)[b][4u * c] += (*p)[b] * v.x;
        (*acc)[b][4u * c + 1u] += (*p)[b] * v.y;
        (*acc)[b][4u * c + 2u] += (*p)[b] * v.z;
        (*acc)[b][4u * c + 3u] += (*p)[b] * v.w;
      }
    }
  } else {
    for (var i = 0u; i < HD; i++) {
      let v = kv(r, stride, col, i);
      for (var b = 0u; b < QB; b++) { if ((*seen)[b]) { (*acc)[b][i] += (*p)[b] * v; } }
    }
  }
}

// grid: ceil(B*H*ceil(Tq/QB) / WG) workgroups (split over x and y when over the per-dimension limit);
// invocation ((b*H + h)*ceil(Tq/QB) + ib) computes query rows ib*QB .. ib*QB + QB - 1 of head h of
// sequence b, so neighbouring lanes share the keys and values of one head, and an invocation reads each
// key and value row once for its QB rows (QB, query rows per invocation: on llvmpipe every key texel is a
// per-lane load, which QB rows share; 1 on GPUs, whose lanes share them through the cache). Each row's
// sums are the same terms in the same order whatever QB is.
@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let blocks = (d.Tq + QB - 1u) / QB;
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.B * d.H * blocks) { return; }
  let ib = inv % blocks;
  let h = (inv / blocks) % d.H;
  let b = inv / (blocks * d.H);
  let kvh = h / (d.H / d.Hkv);
  let stride = (d.H + 2u * d.Hkv) * HD;   // elements per qkv row
  let k_col = (d.H + kvh) * HD;
  let v_col = (d.H + d.Hkv + kvh) * HD;

  // Row r of the block: query row i = ib*QB + r at position t[r], keys [j0[r], t[r]]; `live` rows are
  // inside Tq and before T (a row at a position >= T is padding: y = 0, probs = 0, lse = 0).
  var t: array<u32, QB>;
  var j0: array<u32, QB>;
  var live: array<bool, QB>;
  var q: array<array<f32, HD>, QB>;
  var j_first = 0xffffffffu;
  var j_last = 0u;
  for (var r = 0u; r < QB; r++) {
    let i_q = ib * QB + r;
    live[r] = false;
    if (i_q >= d.Tq) { continue; }
    let row = (b * d.H + h) * d.Tq + i_q;   // probs[b, h, i_q, :] (lse[b, h, i_q])
    let out = (b * d.Tq + i_q) * d.H * HD + h * HD;
    t[r] = position(b, i_q);
    if (t[r] >= d.T) {
      for (var i = 0u; i < HD; i++) { y[out + i] = 0.0; }
      if (WITH_PROBS) { for (var j = 0u; j < d.T; j++) { probs[row * d.T + j] = 0.0; } }
      if (WITH_LSE) { probs[row] = 0.0; }
      continue;
    }
    live[r] = true;
    j0[r] = 0u;
    if (d.window > 0u && t[r] + 1u > d.window) { j0[r] = t[r] + 1u - d.window; }
    if (TEXTURE) {
      for (var c = 0u; c < HD / 4u; c++) {
        let q4 = textureLoad(qkvT, vec2<u32>(h * HD / 4u + c, b * d.Tq + i_q)) * d.scale;
        q[r][4u * c] = q4.x;
        q[r][4u * c + 1u] = q4.y;
        q[r][4u * c + 2u] = q4.z;
        q[r][4u * c + 3u] = q4.w;
      }
    } else {
      for (var i = 0u; i < HD; i++) { q[r][i] = qkv[(b * d.Tq + i_q) * stride + h * HD + i] * d.scale; }
    }
    j_first = min(j_first, j0[r]);
    j_last = max(j_last, t[r]);
  }
  if (j_first > j_last) { return; }
  let keys = sequence_keys(d.B, d.Tq, b);

  var max_s: array<f32, QB>;
  for (var r = 0u; r < QB; r++) { max_s[r] = -3.0e38; }
  for (var j = j_first; j <= j_last; j++) {
    let s = block_scores(&q, key_row_in(keys, j), stride, k_col);
    for (var r = 0u; r < QB; r++) {
      if (live[r] && j >= j0[r] && j <= t[r]) { max_s[r] = max(max_s[r], s[r]); }
    }
  }

  var sum: array<f32, QB>;
  var acc: array<array<f32, HD>, QB>;
  for (var j = j_first; j <= j_last; j++) {
    let kr = key_row_in(keys, j);
    let s = block_scores(&q, kr, stride, k_col);
    var p: array<f32, QB>;
    var seen: array<bool, QB>;
    for (var r = 0u; r < QB; r++) {
      seen[r] = live[r] && j >= j0[r] && j <= t[r];
      if (!seen[r]) { continue; }
      p[r] = exp(s[r] - max_s[r]);
      if (WITH_PROBS) { probs[((b * d.H + h) * d.Tq + ib * QB + r) * d.T + j] = p[r]; }
      sum[r] += p[r];
    }
    add_values(&acc, &p, &seen, kr, stride, v_col);
  }
  for (var r = 0u; r < QB; r++) {
    if (!live[r]) { continue; }
    let i_q = ib * QB + r;
    let row = (b * d.H + h) * d.Tq + i_q;
    let out = (b * d.Tq + i_q) * d.H * HD + h * HD;
    for (var i = 0u; i < HD; i++) { y[out + i] = acc[r][i] / sum[r]; }
    if (WITH_LSE) { probs[row] = max_s[r] + log(sum[r]); }
    if (WITH_PROBS) {
      for (var j = 0u; j < d.T; j++) {
        var p = 0.0;
        if (j >= j0[r] && j <= t[r]) { p = probs[row * d.T + j] / sum[r]; }
        probs[row * d.T + j] = p;
      }
    }
  }
}
