// Causal self-attention backward (grouped key/value heads, optional soft-cap and sliding window).
//
// Forward (shaders/attention.wgsl), per batch b, query head h reading key/value head g = h / (H/Hkv),
// query i:  c[i,j] = scale * q_i . k_j,  s = softcap * tanh(c / softcap) (or s = c),
//           p[i,:] = softmax(s[i,:]) over the unmasked keys,  y_i = sum_j p[i,j] v_j
// with qkv [B*Tq, (H + 2 Hkv) HD] = [q heads | k heads | v heads] and probs [B, H, Tq, T] (masked 0).
// Row i of sequence b is at position P(i) = i (Tq = T), or P(i) = starts[b] + i with OFFSETS: a
// forward that computed only the rows from starts[b] on, the earlier positions' keys and values read
// from `cache` (a constant; rows as in attention.wgsl). The gradients of those cached keys and values
// are not formed; every other key is one of the Tq rows (a key at position >= starts[b] is only seen
// by queries at positions >= starts[b], all of which are among the rows).
//
// Backward, two passes (no atomics, every sum in a fixed order => bit-reproducible):
//   pass 1, one invocation per (b, h, block of QB query rows i), loops over keys j <= P(i):
//     dp[i,j] = dy_i . v_j
//     ds[i,j] = p[i,j] (dp[i,j] - sum_k p[i,k] dp[i,k])        softmax backward
//     dc[i,j] = ds[i,j] (1 - (s[i,j] / softcap)^2)             through the cap (SOFTCAP only)
//   pass 2, three products per (b, head), each [Tq, HD] (see attention_backward_qkv):
//     dq_h = scale * dc_h k_g,   dk_g = scale * sum_{h in g} dc_h^T q_h,   dv_g = sum_{h in g} p_h^T dy_h
//
// Masked keys have p = 0, hence ds = dc = 0: no mask is needed in pass 2.
// Compile-time parameters: WG (invocations per workgroup); QB (pass 1's query rows per invocation);
// TM, TN (pass 2's register block: rows and columns of one output computed per invocation, as in
// matmul.wgsl); SOFTCAP; OFFSETS; HD_MAX4 (hd / 4: pass 1 keeps each row's dy as that many texels);
// TEXTURE (hd % 4 == 0; TN a multiple of 4): both passes read dy, q, k and v from rgba32float mirrors of dy and
// qkv (texel (c, r) = row r's values 4c .. 4c+3), and with OFFSETS the cached keys and values from the
// cache's mirror: inlined loads on llvmpipe where storage loads are per-lane gathers. The values are the
// same and so is every sum (pass 1 adds each texel's four products one at a time, in the order of the
// buffer loop): both give the same bits.
// Each entry point binds its own tensors (auto layouts), followed by its uniform block.

struct Dims { B: u32, T: u32, H: u32, Hkv: u32, hd: u32, scale: f32, softcap: f32, Tq: u32 }

@group(0) @binding(0) var<storage, read> dy: array<f32>;      // [B*Tq, H*hd]
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [B*Tq, (H + 2 Hkv) hd]
@group(0) @binding(2) var<storage, read> probs: array<f32>;   // [B, H, Tq, T]
@group(0) @binding(3) var<storage, read> rows: array<u32>;    // [2B] starts, then cache bases (OFFSETS)
@group(0) @binding(4) var<storage, read> cache: array<f32>;   // [*, (H + 2 Hkv) hd] (OFFSETS)

// import: attention_keys.wgsl

// ---- attention_backward_scores. Bindings: dy, qkv, probs, rows, cache, dscores (written), the
// mirrors of qkv, dy and the cache (TEXTURE; placeholders otherwise, and for the cache without
// OFFSETS), dims.
@group(0) @binding(5) var<storage, read_write> dscores_out: array<f32>; // [B, H, Tq, T], 0 after P(i)
@group(0) @binding(6) var qkvT: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var dyT: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var cacheT: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var<uniform> dims: Dims;

// Texel c4 (elements 4*c4 .. 4*c4+3) of key/value position j of sequence b, from the mirror of qkv or
// of the cache (TEXTURE; pass 2 has its own, below: each entry point binds its own textures).
fn kv_texel_scores(r: vec2<u32>, c4: u32) -> vec4<f32> {
  if (r.x == 1u) { return textureLoad(cacheT, vec2<u32>(c4, r.y)); }
  return textureLoad(qkvT, vec2<u32>(c4, r.y));
}

// grid: ceil(B*H*ceil(Tq/QB) / WG) workgroups; invocation ((b*H + h)*ceil(Tq/QB) + ib) takes query rows
// ib*QB .. ib*QB + QB - 1 of head h of sequence b, and reads each value texel once for all of them (QB,
// as attention.wgsl's: on llvmpipe every texel is a per-lane load). Each row's sums are the same terms
// in the same order whatever QB is.
@compute @workgroup_size(WG)
fn attention_backward_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
  let blocks = (dims.Tq + QB - 1u) / QB;
  let ib = gid.x % blocks;
  let bh = gid.x / blocks;
  if (bh >= dims.B * dims.H) { return; }
  let b = bh / dims.H;
  let h = bh % dims.H;
  let g = h / (dims.H / dims.Hkv);
  let stride = (dims.H + 2u * dims.Hkv) * dims.hd;
  let v_col = (dims.H + dims.Hkv + g) * dims.hd;
  // Row r of the block: query row i_q = ib*QB + r (live when < Tq), its last key i (= T for a padding
  // row past the keys, all zero) and the start of its p[b,h,i_q,:].
  var live: array<bool, QB>;
  var last: array<u32, QB>;
  var row: array<u32, QB>;
  var dy4: array<array<vec4<f32>, HD_MAX4>, QB>;  // the rows' dy texels (TEXTURE; HD_MAX4 bounds hd / 4)
  var j_end = 0u;                                  // keys [0, j_end) cover every row's
  for (var r = 0u; r < QB; r++) {
    let i_q = ib * QB + r;
    live[r] = i_q < dims.Tq;
    if (!live[r]) { continue; }
    row[r] = ((b * dims.H + h) * dims.Tq + i_q) * dims.T;
    last[r] = min(position(b, i_q), dims.T);
    j_end = max(j_end, min(last[r] + 1u, dims.T));
    if (TEXTURE) {
      for (var c = 0u; c < dims.hd / 4u; c++) {
        dy4[r][c] = textureLoad(dyT, vec2<u32>(h * dims.hd / 4u + c, b * dims.Tq + i_q));
      }
    }
  }
  // First loop: dp[i,j] (stored in dscores for now) and its probability-weighted mean.
  var mean_dp: array<f32, QB>;
  let keys = sequence_keys(dims.B, dims.Tq, b);
  for (var j = 0u; j < j_end; j++) {
    var dp = array<f32, QB>();  // zeros, every key (a loop body's var without an initializer is not re-zeroed on every backend)
    let kr = key_row_in(keys, j);
    if (TEXTURE) {
      for (var c = 0u; c < dims.hd / 4u; c++) {
        let v4 = kv_texel_scores(kr, v_col / 4u + c);
        for (var r = 0u; r < QB; r++) {
          let g4 = dy4[r][c];
          dp[r] += g4.x * v4.x;
          dp[r] += g4.y * v4.y;
          dp[r] += g4.z * v4.z;
          dp[r] += g4.w * v4.w;
        }
      }
    } else {
      for (var e = 0u; e < dims.hd; e++) {
        let v = kv(kr, stride, v_col, e);
        for (var r = 0u; r < QB; r++) {
          if (live[r]) { dp[r] += dy[(b * dims.Tq + ib * QB + r) * dims.H * dims.hd + h * dims.hd + e] * v; }
        }
      }
    }
    for (var r = 0u; r < QB; r++) {
      if (!live[r] || j > last[r]) { continue; }
      dscores_out[row[r] + j] = dp[r];
      mean_dp[r] += probs[row[r] + j] * dp[r];
    }
  }
  let k_col = (dims.H + g) * dims.hd;
  for (var r = 0u; r < QB; r++) {
    if (!live[r]) { continue; }
    let i = last[r];
    let q_i = (b * dims.Tq + ib * QB + r) * stride + h * dims.hd;
    for (var j = 0u; j <= i && j < dims.T; j++) {
      var ds = probs[row[r] + j] * (dscores_out[row[r] + j] - mean_dp[r]);
      if (SOFTCAP) {
        var c = 0.0;
        let kr = key_row_in(keys, j);
        for (var e = 0u; e < dims.hd; e++) { c += qkv[q_i + e] * kv(kr, stride, k_col, e); }
        let th = tanh(clamp(c * dims.scale / dims.softcap, -15.0, 15.0));
        ds *= 1.0 - th * th;
      }
      dscores_out[row[r] + j] = ds;
    }
    // Zeros above the diagonal let pass 2 sweep whole blocks of rows without per-row bounds.
    for (var j = i + 1u; j < dims.T; j++) { dscores_out[row[r] + j] = 0.0; }
  }
}

// ---- attention_backward_qkv. Bindings: dy, qkv, probs, rows, cache, dscores (read), dqkv (written),
// the mirrors of qkv, dy and the cache (as in pass 1), dims2.
@group(0) @binding(5) var<storage, read> dscores: array<f32>;     // [B, H, Tq, T]
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;  // [B*Tq, (H + 2 Hkv) hd]
@group(0) @binding(7) var qkvT2: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var dyT2: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var cacheT2: texture_storage_2d<rgba32float, read>;
@group(0) @binding(10) var<uniform> dims2: Dims;

fn kv_texel_qkv(r: vec2<u32>, c4: u32) -> vec4<f32> {
  if (r.x == 1u) { return textureLoad(cacheT2, vec2<u32>(c4, r.y)); }
  return textureLoad(qkvT2, vec2<u32>(c4, r.y));
}

// The three products share one shape, out[t, e] = sum_{h} sum_s A_h(t, s) X_h[s, e] over query
// rows t (the output's rows):
//   part 0 (dq of head h):     A(t,s) = dc_h[t,s],     X = k of h's group at key s,    scaled (one h)
//   part 1 (dk of kv head g):  A(t,s) = dc_h[s,P(t)],  X = q_h of query row s,         scaled (h in g)
//   part 2 (dv of kv head g):  A(t,s) = p_h[s,P(t)],   X = dy_h of query row s         (h in g)
// A is zero outside the causal triangle, so a block of rows t0..t0+TM-1 sums s over keys
// [0, P(t0+TM-1)] for part 0 and over query rows [t0, Tq) otherwise (P is increasing).

// p: position(b, t), read by the caller once per row.
fn a_at(part: u32, plane: u32, t: u32, p: u32, s: u32) -> f32 {
  let T = dims2.T;
  if (part == 0u) { return dscores[plane + t * T + s]; }
  if (p >= T) { return 0.0; }     // a padding row past the keys
  if (part == 1u) { return dscores[plane + s * T + p]; }
  return probs[plane + s * T + p];
}

// X[s, e] of query head h in sequence b: key s (part 0) or query row s (parts 1, 2).
fn x_at(part: u32, b: u32, s: u32, h: u32, e: u32) -> f32 {
  let hd = dims2.hd;
  let stride = (dims2.H + 2u * dims2.Hkv) * hd;
  if (part == 0u) {
    return kv(key_row(dims2.B, dims2.Tq, b, s), stride, (dims2.H + h / (dims2.H / dims2.Hkv)) * hd, e);
  }
  if (part == 1u) { return qkv[(b * dims2.Tq + s) * stride + h * hd + e]; }
  return dy[(b * dims2.Tq + s) * dims2.H * hd + h * hd + e];
}

// X[s, e0 .. e0+3] (TEXTURE, e0 % 4 == 0): one texel of the mirrors.
// keys: sequence_keys of sequence b (part 0 reads key s through it).
fn x_texel(part: u32, b: u32, keys: SequenceKeys, s: u32, h: u32, e0: u32) -> vec4<f32> {
  let hd = dims2.hd;
  let row = b * dims2.Tq + s;
  if (part == 0u) {
    let c4 = ((dims2.H + h / (dims2.H / dims2.Hkv)) * hd + e0) / 4u;
    return kv_texel_qkv(key_row_in(keys, s), c4);
  }
  if (part == 1u) { return textureLoad(qkvT2, vec2<u32>((h * hd + e0) / 4u, row)); }
  return textureLoad(dyT2, vec2<u32>((h * hd + e0) / 4u, row));
}

// grid: x = H * ceil(hd / TN) column blocks (a block never straddles two heads; parts 1 and 2 use
//       the first Hkv heads' blocks), y = ceil(Tq / TM) row blocks, z = B * 3 (batch, part).
@compute @workgroup_size(WG)
fn attention_backward_qkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let T = dims2.T;
  let Tq = dims2.Tq;
  let hd = dims2.hd;
  let blocks_per_head = (hd + TN - 1u) / TN;
  let head = gid.x / blocks_per_head;
  let e0 = (gid.x % blocks_per_head) * TN;
  let t0 = gid.y * TM;
  let b = gid.z / 3u;
  let part = gid.z % 3u;
  let group = dims2.H / dims2.Hkv;
  // part 0: one query head; parts 1, 2: kv head `head` summing its group of query heads.
  var h_begin = head;
  var h_end = head + 1u;
  var heads = dims2.H;
  if (part > 0u) {
    h_begin = head * group;
    h_end = h_begin + group;
    heads = dims2.Hkv;
  }
  if (head >= heads || t0 >= Tq) { return; }
  // Clamp rows and columns at the edges (as matmul.wgsl); clamped duplicates are not stored.
  var ts: array<u32, TM>;
  var es: array<u32, TN>;
  for (var r = 0u; r < TM; r++) { ts[r] = min(t0 + r, Tq - 1u); }
  for (var k = 0u; k < TN; k++) { es[k] = min(e0 + k, hd - 1u); }
  var ps: array<u32, TM>;   // the rows' positions
  for (var r = 0u; r < TM; r++) { ps[r] = position(b, ts[r]); }
  let keys = sequence_keys(dims2.B, Tq, b);
  var s_begin = t0;
  var s_end = Tq;
  if (part == 0u) { s_begin = 0u; s_end = min(ps[TM - 1u] + 1u, T); }
  var acc: array<f32, TM * TN>;
  for (var h = h_begin; h < h_end; h++) {
    let plane = (b * dims2.H + h) * Tq * T;    // start of ds[b,h,:,:] and p[b,h,:,:]
    for (var s = s_begin; s < s_end; s++) {
      var x: array<f32, TN>;
      if (TEXTURE) {
        // TN / 4 texels; a block's columns past hd (clamped duplicates, never stored) read none.
        for (var k4 = 0u; k4 < TN / 4u; k4++) {
          if (e0 + 4u * k4 >= hd) { break; }
          let x4 = x_texel(part, b, keys, s, h, e0 + 4u * k4);
          for (var c = 0u; c < 4u; c++) { x[4u * k4 + c] = x4[c]; }
        }
      } else {
        for (var k = 0u; k < TN; k++) { x[k] = x_at(part, b, s, h, es[k]); }
      }
      for (var r = 0u; r < TM; r++) {
        let a = a_at(part, plane, ts[r], ps[r], s);
        for (var k = 0u; k < TN; k++) { acc[r * TN + k] += a * x[k]; }
      }
    }
  }
  var scale = dims2.scale;
  if (part == 2u) { scale = 1.0; }
  // Column of this head's part in dqkv: q heads, then k heads, then v heads.
  var col = head * hd;
  if (part == 1u) { col = (dims2.H + head) * hd; }
  if (part == 2u) { col = (dims2.H + dims2.Hkv + head) * hd; }
  let stride = (dims2.H + 2u * dims2.Hkv) * hd;
  for (var r = 0u; r < TM; r++) {
    let t = t0 + r;
    if (t >= Tq) { break; }
    for (var k = 0u; k < TN; k++) {
      let e = e0 + k;
      if (e >= hd) { break; }
      dqkv[(b * Tq + t) * stride + col + e] = scale * acc[r * TN + k];
    }
  }
}
