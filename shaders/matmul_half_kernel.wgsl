// The matmul of a 16-bit weight B (f16/bf16 checkpoints kept in 16 bits on the GPU): the register
// kernel of matmul.wgsl with each B value converted to f32 as it is loaded, f32 products and sums.
// Needs TRANS_A = false. The file that imports this one defines how B is read:
//
//   fn b16(e: u32) -> f32 : element e of B (row-major [K,N], or [N,K] with TRANS_B)
//
// matmul_half.wgsl unpacks u32 words (any adapter); matmul_f16.wgsl reads an array<f16> (shader-f16).
// Both give the same f32 values, so the results agree bit for bit.

fn b16_at(base: u32, k: u32, n: u32) -> f32 {
  if (TRANS_B) { return b16(base + n * d.K + k); }
  return b16(base + k * d.N + n);
}

// Same grid and register block as matmul.wgsl's matmul, B read through b16.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_half(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN;
  if (m0 >= d.M || n0 >= d.N) { return; }
  let base_a = gid.z * d.stride_a;
  let base_b = gid.z * d.stride_b;
  let base_c = d.c_offset + gid.z * d.stride_c;
  var rows: array<u32, TM>;
  var cols: array<u32, TN>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(m0 + i, d.M - 1u); }
  for (var j = 0u; j < TN; j++) { cols[j] = min(n0 + j, d.N - 1u); }
  var acc: array<f32, TM * TN>;
  for (var k = 0u; k < d.K; k++) {
    var bk: array<f32, TN>;
    for (var j = 0u; j < TN; j++) { bk[j] = b16_at(base_b, k, cols[j]); }
    for (var i = 0u; i < TM; i++) {
      let a = A[base_a + rows[i] * d.K + k];
      for (var j = 0u; j < TN; j++) { acc[i * TN + j] += a * bk[j]; }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      if (m0 + i < d.M && n0 + j < d.N) { store(base_c, m0 + i, n0 + j, acc[i * TN + j]); }
    }
  }
}

