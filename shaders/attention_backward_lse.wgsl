// Causal self-attention backward from the rows' log-sum-exp instead of stored probabilities: no
// [B, H, Tq, T] tensor exists, so long prompts need O(B H Tq) saved floats, not O(B H Tq T) (the
// recomputation idea of Dao et al., "FlashAttention", section 3.1; here as plain loops, one query or
// key row per invocation). Same forward, layouts, grouped heads, soft-cap, window and OFFSETS as
// shaders/attention_backward.wgsl; every sum runs in a fixed order (no atomics: bit-reproducible).
//
// Per batch b, query head h reading key/value head g = h / (H/Hkv), query row i at position P(i),
// key j in [j0(P(i)), P(i)] (j0 = P(i) + 1 - window with a window, else 0):
//   c[i,j] = scale * q_i . k_j,  s = softcap * tanh(c / softcap) (or s = c),  p[i,j] = exp(s - lse_i)
//   dp[i,j] = dy_i . v_j,  D_i = sum_j p[i,j] dp[i,j],  ds = p (dp - D_i),  dc = ds (1 - (s/softcap)^2)
//   pass 1, one invocation per (b, h, i): D_i (kept in `delta` [B, H, Tq]) and
//           dq_i = scale * sum_j dc[i,j] k_j                 (two loops over the row's keys)
//   pass 2, one invocation per (b, g, key row r at position P(r)): over the query heads h of g and
//           the query rows i that see it (P(i) >= P(r), within the window, P(i) < T):
//           dk_r = scale * sum_{h,i} dc[i,r] q_i,  dv_r = sum_{h,i} p[i,r] dy_i
// Keys before a sequence's start (OFFSETS) are cached constants and get no gradient, as in
// attention_backward.wgsl. Padding rows (P >= T) get zeros.
//
// Compile-time parameters: HD (head dimension), WG (invocations per workgroup), SOFTCAP, OFFSETS.
// Tensors: dy [B*Tq, H HD]; qkv and dqkv [B*Tq, (H + 2 Hkv) HD] = [q heads | k heads | v heads];
// lse [B, H, Tq] from attention.wgsl (WITH_LSE); rows [2B] u32 and cache as in attention.wgsl.

struct Dims { B: u32, T: u32, H: u32, Hkv: u32, window: u32, scale: f32, softcap: f32, Tq: u32 }

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(7) var<uniform> d: Dims;

// import: attention_keys.wgsl

// Element `col + e` of key/value position j of sequence b (attention_keys.wgsl key_row and kv).
fn kv_at(b: u32, j: u32, col: u32, e: u32) -> f32 {
  return kv(key_row(d.B, d.Tq, b, j), (d.H + 2u * d.Hkv) * HD, col, e);
}

// The capped score s of a scaled query and key position j, and the cap's derivative ds/dc.
fn score(q: ptr<function, array<f32, HD>>, b: u32, j: u32, k_col: u32) -> vec2<f32> {
  var c = 0.0;
  for (var e = 0u; e < HD; e++) { c += (*q)[e] * kv_at(b, j, k_col, e); }
  if (SOFTCAP) {
    let th = tanh(clamp(c / d.softcap, -15.0, 15.0));
    return vec2<f32>(d.softcap * th, 1.0 - th * th);
  }
  return vec2<f32>(c, 1.0);
}

fn first_key(t: u32) -> u32 {
  if (d.window > 0u && t + 1u > d.window) { return t + 1u - d.window; }
  return 0u;
}

// ---- attention_backward_lse_rows. Bindings: dy, qkv, lse, rows, cache, delta (written), dqkv, d.
@group(0) @binding(5) var<storage, read_write> delta_out: array<f32>;   // [B, H, Tq]

// grid: ceil(B*H*Tq / WG) workgroups (over x, then y); invocation ((b*H + h)*Tq + i).
@compute @workgroup_size(WG)
fn attention_backward_lse_rows(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.B * d.H * d.Tq) { return; }
  let i_q = inv % d.Tq;
  let h = (inv / d.Tq) % d.H;
  let b = inv / (d.Tq * d.H);
  let stride = (d.H + 2u * d.Hkv) * HD;
  let row = (b * d.Tq + i_q) * stride;
  let t = position(b, i_q);
  if (t >= d.T) {
    delta_out[inv] = 0.0;
    for (var e = 0u; e < HD; e++) { dqkv[row + h * HD + e] = 0.0; }
    return;
  }
  let g = h / (d.H / d.Hkv);
  let k_col = (d.H + g) * HD;
  let v_col = (d.H + d.Hkv + g) * HD;
  var q: array<f32, HD>;
  var dyi: array<f32, HD>;
  for (var e = 0u; e < HD; e++) {
    q[e] = qkv[row + h * HD + e] * d.scale;
    dyi[e] = dy[(b * d.Tq + i_q) * d.H * HD + h * HD + e];
  }
  let l = lse[inv];
  let j0 = first_key(t);
  var mean_dp = 0.0;
  for (var j = j0; j <= t; j++) {
    var dp = 0.0;
    for (var e = 0u; e < HD; e++) { dp += dyi[e] * kv_at(b, j, v_col, e); }
    mean_dp += exp(score(&q, b, j, k_col).x - l) * dp;
  }
  var acc: array<f32, HD>;
  for (var j = j0; j <= t; j++) {
    var dp = 0.0;
    for (var e = 0u; e < HD; e++) { dp += dyi[e] * kv_at(b, j, v_col, e); }
    let s = score(&q, b, j, k_col);
    let dc = exp(s.x - l) * (dp - mean_dp) * s.y;
    for (var e = 0u; e < HD; e++) { acc[e] += dc * kv_at(b, j, k_col, e); }
  }
  delta_out[inv] = mean_dp;
  for (var e = 0u; e < HD; e++) { dqkv[row + h * HD + e] = d.scale * acc[e]; }
}

// ---- attention_backward_lse_keys. Bindings: dy, qkv, lse, rows, cache, delta (read), dqkv, d.
@group(0) @binding(5) var<storage, read> delta: array<f32>;             // [B, H, Tq]

// grid: ceil(B*Hkv*Tq / WG) workgroups (over x, then y); invocation ((b*Hkv + g)*Tq + r).
@compute @workgroup_size(WG)
fn attention_backward_lse_keys(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.B * d.Hkv * d.Tq) { return; }
  let r = inv % d.Tq;
  let g = (inv / d.Tq) % d.Hkv;
  let b = inv / (d.Tq * d.Hkv);
  let stride = (d.H + 2u * d.Hkv) * HD;
  let row = (b * d.Tq + r) * stride;
  let k_col = (d.H + g) * HD;
  let v_col = (d.H + d.Hkv + g) * HD;
  let pr = position(b, r);
  var dk: array<f32, HD>;
  var dv: array<f32, HD>;
  if (pr < d.T) {
    var v: array<f32, HD>;
    for (var e = 0u; e < HD; e++) { v[e] = qkv[row + v_col + e]; }
    // Query rows i >= r see key r while P(i) < T and, with a window, P(i) < P(r) + window.
    var i_end = min(d.Tq, d.T - (pr - r));
    if (d.window > 0u) { i_end = min(i_end, r + d.window); }
    let group = d.H / d.Hkv;
    for (var h = g * group; h < (g + 1u) * group; h++) {
      for (var i = r; i < i_end; i++) {
        var q: array<f32, HD>;
        var dp = 0.0;
        let dy_i = (b * d.Tq + i) * d.H * HD + h * HD;
        for (var e = 0u; e < HD; e++) {
          q[e] = qkv[(b * d.Tq + i) * stride + h * HD + e] * d.scale;
          dp += dy[dy_i + e] * v[e];
        }
        let at = (b * d.H + h) * d.Tq + i;
        let s = score(&q, b, pr, k_col);
        let p = exp(s.x - lse[at]);
        let dc = p * (dp - delta[at]) * s.y;
        for (var e = 0u; e < HD; e++) {
          dk[e] += dc * q[e];
          dv[e] += p * dy[dy_i + e];
        }
      }
    }
  }
  for (var e = 0u; e < HD; e++) {
    dqkv[row + k_col + e] = dk[e];
    dqkv[row + v_col + e] = dv[e];
  }
}
