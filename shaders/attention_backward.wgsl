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
//   pass 2, one invocation per (b, t, column c of the head dimension), writes dqkv [B*T, 3d]:
//     dq_t[c] = scale * sum_{j <= t} ds[t,j] k_j[c]
//     dk_t[c] = scale * sum_{i >= t} ds[i,t] q_i[c]
//     dv_t[c] =         sum_{i >= t} p[i,t] dy_i[c]
//
// Compile-time parameters: WG. Each entry point binds its own tensors (auto layouts),
// followed by its uniform block.

struct Dims { B: u32, T: u32, d: u32, n_head: u32, hd: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> dy: array<f32>;      // [B*T, d]
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [B*T, 3d]
@group(0) @binding(2) var<storage, read> probs: array<f32>;   // [B, nHead, T, T]

// ---- attention_backward_scores. Bindings: dy, qkv, probs, dscores (written), dims.
@group(0) @binding(3) var<storage, read_write> dscores_out: array<f32>; // [B, nHead, T, T], j <= i
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
}

// ---- attention_backward_qkv. Bindings: dy, qkv, probs, dscores (read), dqkv (written), dims2.
@group(0) @binding(3) var<storage, read> dscores: array<f32>;     // [B, nHead, T, T]
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;  // [B*T, 3d]
@group(0) @binding(5) var<uniform> dims2: Dims;

@compute @workgroup_size(WG)
fn attention_backward_qkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;      // column in [0, d): head h = c / hd
  let bt = gid.y;     // row b*T + t
  let D = dims2.d;
  let T = dims2.T;
  if (c >= D || bt >= dims2.B * T) { return; }
  let b = bt / T;
  let t = bt % T;
  let h = c / dims2.hd;
  let plane = (b * dims2.n_head + h) * T * T;    // start of p[b,h,:,:]
  let row0 = b * T;                              // first row of batch b
  var dq = 0.0;
  for (var j = 0u; j <= t; j++) {
    dq += dscores[plane + t * T + j] * qkv[(row0 + j) * 3u * D + D + c];
  }
  var dk = 0.0;
  var dv = 0.0;
  for (var i = t; i < T; i++) {
    dk += dscores[plane + i * T + t] * qkv[(row0 + i) * 3u * D + c];
    dv += probs[plane + i * T + t] * dy[(row0 + i) * D + c];
  }
  dqkv[bt * 3u * D + c] = dims2.scale * dq;
  dqkv[bt * 3u * D + D + c] = dims2.scale * dk;
  dqkv[bt * 3u * D + 2u * D + c] = dv;
}
