// Matrix multiply family: C = alpha * op(A) op(B) + bias + beta * C
//
//   op(A) is [M,K]: A stored [M,K] (TRANS_A = false) or [K,M] (TRANS_A = true)
//   op(B) is [K,N]: B stored [K,N] (TRANS_B = false) or [N,K] (TRANS_B = true)
//   bias  is [N], read as bias[n * bias_stride] (bias_stride = 0 with a 1-element zero tensor = no bias)
//   batched over workgroup z with element strides (0 = shared operand).
//   C is written at C[c_offset + batch*stride_c + m*ldc + n], so a product can fill a column
//   slice of a wider matrix (the unembedding of a vocabulary split into chunks does this).
//
// GPT-2 uses every variant: Conv1D forward x[M,in] W[in,out] (NN), the tied unembedding
// h[M,d] wte[V,d]^T (NT), input gradients dY W^T (NT) and weight gradients X^T dY (TN).
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   TM, TN   : rows and columns of C computed by one invocation (register block)
//   WG_X     : invocations per workgroup along rows; WG_Y along columns
//   TRANS_A, TRANS_B : storage layouts above
// Register blocking without workgroup memory is the fast shape on llvmpipe (see PERF-NOTES);

struct Dims {
  M: u32, N: u32, K: u32, bias_stride: u32,
  alpha: f32, beta: f32, stride_a: u32, stride_b: u32,
  stride_c: u32, ldc: u32, c_offset: u32,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<uniform> d: Dims;

fn a_at(base: u32, m: u32, k: u32) -> f32 {
  if (TRANS_A) { return A[base + k * d.M + m]; }
  return A[base + m * d.K + k];
}

fn b_at(base: u32, k: u32, n: u32) -> f32 {
  if (TRANS_B) { return B[base + n * d.K + k]; }
  return B[base + k * d.N + n];
}

// grid: x = ceil(M / (TM*WG_X)) row blocks (x first so a column stripe of B stays in cache),
//       y = ceil(N / (TN*WG_Y)) column blocks, z = batch.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN;
  if (m0 >= d.M || n0 >= d.N) { return; }
  let base_a = gid.z * d.stride_a;
  let base_b = gid.z * d.stride_b;
  let base_c = d.c_offset + gid.z * d.stride_c;
  // Clamp indices at the edges instead of branching in the inner loop; the clamped
  // lanes compute duplicates that are simply not stored.
  var rows: array<u32, TM>;
  var cols: array<u32, TN>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(m0 + i, d.M - 1u); }
  for (var j = 0u; j < TN; j++) { cols[j] = min(n0 + j, d.N - 1u); }
  var acc: array<f32, TM * TN>;
  for (var k = 0u; k < d.K; k++) {
    var bk: array<f32, TN>;
    for (var j = 0u; j < TN; j++) { bk[j] = b_at(base_b, k, cols[j]); }
    for (var i = 0u; i < TM; i++) {
      let a = a_at(base_a, rows[i], k);
      for (var j = 0u; j < TN; j++) { acc[i * TN + j] += a * bk[j]; }
    }
  }
  for (var i = 0u; i < TM; i++) {
    let m = m0 + i;
    if (m >= d.M) { break; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j;
      if (n >= d.N) { break; }
      let idx = base_c + m * d.ldc + n;
      var v = d.alpha * acc[i * TN + j] + bias[n * d.bias_stride];
      if (d.beta != 0.0) { v += d.beta * C[idx]; }
      C[idx] = v;
    }
  }
}
