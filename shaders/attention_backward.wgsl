// Causal multi-head self-attention backward.
//
// Forward (shaders/attention.wgsl), per batch b, head h (columns h*hd..(h+1)*hd), query i:
//   s[i,j] = scale * q_i . k_j   (j <= i),   p[i,:] = softmax(s[i,:]),   y_i = sum_j p[i,j] v_j
// with qkv [B*T, 3d] = [q | k | v] and probs [B, nHead, T, T] (masked entries 0).
//
// Backward, two passes (no atomics, every sum in a fixed order => bit-reproducible):
//   pass 1, one invocation per (b, h, i), loops over keys j <= i:
//     dp[i,j] = dy_i . v_j
//     ds[i,j] = p[i,j] (dp[i,j] - sum_k p[i,k] dp[i,k])       softmax backward -> dscores
//   pass 2, three products per (b, h), each [T, hd] (see attention_backward_qkv):
//     dq = scale * ds k,   dk = scale * ds^T q,   dv = p^T dy     -> dqkv [B*T, 3d]
//
// Compile-time parameters: WG (invocations per workgroup); TM, TN (pass 2's register block:
// rows and columns of one output computed per invocation, as in matmul.wgsl).
// Each entry point binds its own tensors (auto layouts), followed by its uniform block.

struct Dims { B: u32, T: u32, d: u32, n_head: u32, hd: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> dy: array<f32>;      // [B*T, d]
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [B*T, 3d]
@group(0) @binding(2) var<storage, read> probs: array<f32>;   // [B, nHead, T, T]

// ---- attention_backward_scores. Bindings: dy, qkv, probs, dscores (written), dims.
@group(0) @binding(3) var<storage, read_write> dscores_out: array<f32>; // [B, nHead, T, T], 0 above the diagonal
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn attention_backward_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
  // gid.x enumerates (b, h, i) with i fastest.
  let i = gid.x % dims.T;
  let bh = gid.x / dims.T;
  if (bh >= dims.B * dims.n_head) { return; }
  let b = bh / dims.n_head;
  let h = bh % dims.n_head;
  let row = gid.x * dims.T;                       // start of p[b,h,i,:]
  let dy_i = (b * dims.T + i) * dims.d + h * dims.hd;
  // First loop: dp[i,j] (stored in dscores for now) and its probability-weighted mean.
  var mean_dp = 0.0;
  for (var j = 0u; j <= i; j++) {
    let v_j = (b * dims.T + j) * 3u * dims.d + 2u * dims.d + h * dims.hd;
    var dp = 0.0;
    for (var e = 0u; e < dims.hd; e++) { dp += dy[dy_i + e] * qkv[v_j + e]; }
    dscores_out[row + j] = dp;
    mean_dp += probs[row + j] * dp;
  }
  for (var j = 0u; j <= i; j++) {
    dscores_out[row + j] = probs[row + j] * (dscores_out[row + j] - mean_dp);
  }
  // Zeros above the diagonal let pass 2 sweep whole blocks of rows without per-row bounds.
  for (var j = i + 1u; j < dims.T; j++) { dscores_out[row + j] = 0.0; }
}

// ---- attention_backward_qkv. Bindings: dy, qkv, probs, dscores (read), dqkv (written), dims2.
@group(0) @binding(3) var<storage, read> dscores: array<f32>;     // [B, nHead, T, T]
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;  // [B*T, 3d]
@group(0) @binding(5) var<uniform> dims2: Dims;

// The three products share one shape, out[t, e] = sum_s A(t, s) X[s, e] over one head:
//   part 0 (dq): A(t,s) = ds[t,s],  X = k,  scaled
//   part 1 (dk): A(t,s) = ds[s,t],  X = q,  scaled
//   part 2 (dv): A(t,s) = p[s,t],   X = dy
// A is zero outside the causal triangle (pass 1 zeroes ds above the diagonal; masked probs are
// 0), so a block of rows t0..t0+TM-1 sums s over [0, t0+TM) for part 0 and [t0, T) otherwise.

fn a_at(part: u32, plane: u32, t: u32, s: u32) -> f32 {
  let T = dims2.T;
  if (part == 0u) { return dscores[plane + t * T + s]; }
  if (part == 1u) { return dscores[plane + s * T + t]; }
  return probs[plane + s * T + t];
}

// X[s, column c of d] for sequence row `row` = b*T + s.
fn x_at(part: u32, row: u32, c: u32) -> f32 {
  let D = dims2.d;
  if (part == 0u) { return qkv[row * 3u * D + D + c]; }
  if (part == 1u) { return qkv[row * 3u * D + c]; }
  return dy[row * D + c];
}

// grid: x = nHead * ceil(hd / TN) column blocks (a block never straddles two heads),
//       y = ceil(T / TM) row blocks, z = B * 3 (batch, part).
@compute @workgroup_size(WG)
fn attention_backward_qkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let T = dims2.T;
  let hd = dims2.hd;
  let blocks_per_head = (hd + TN - 1u) / TN;
  let h = gid.x / blocks_per_head;
  let e0 = (gid.x % blocks_per_head) * TN;
  let t0 = gid.y * TM;
  if (h >= dims2.n_head || t0 >= T) { return; }
  let b = gid.z / 3u;
  let part = gid.z % 3u;
  let plane = (b * dims2.n_head + h) * T * T;     // start of ds[b,h,:,:] and p[b,h,:,:]
  // Clamp rows and columns at the edges (as matmul.wgsl); clamped duplicates are not stored.
  var ts: array<u32, TM>;
  var cs: array<u32, TN>;
  for (var r = 0u; r < TM; r++) { ts[r] = min(t0 + r, T - 1u); }
  for (var k = 0u; k < TN; k++) { cs[k] = h * hd + min(e0 + k, hd - 1u); }
  var s_begin = t0;
  var s_end = T;
  if (part == 0u) { s_begin = 0u; s_end = min(t0 + TM, T); }
  var acc: array<f32, TM * TN>;
  for (var s = s_begin; s < s_end; s++) {
    var x: array<f32, TN>;
    for (var k = 0u; k < TN; k++) { x[k] = x_at(part, b * T + s, cs[k]); }
    for (var r = 0u; r < TM; r++) {
      let a = a_at(part, plane, ts[r], s);
      for (var k = 0u; k < TN; k++) { acc[r * TN + k] += a * x[k]; }
    }
  }
  var scale = dims2.scale;
  if (part == 2u) { scale = 1.0; }
  for (var r = 0u; r < TM; r++) {
    let t = t0 + r;
    if (t >= T) { break; }
    for (var k = 0u; k < TN; k++) {
      let e = e0 + k;
      if (e >= hd) { break; }
      dqkv[(b * T + t) * 3u * dims2.d + part * dims2.d + h * hd + e] = scale * acc[r * TN + k];
    }
  }
}
