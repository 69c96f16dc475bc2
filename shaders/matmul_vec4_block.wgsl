// The vec4 register block of matmul_vec4_n and matmul_vec4_n_c4 (matmul.wgsl) and of adam_factored.wgsl,
// which forms a weight gradient with these same loads and sums. The file that imports this one declares
// `B4: array<vec4<f32>>`, the constant TN4 (vec4 columns per invocation, TN / 4) and how A is read:
//
//   fn block_a(base: u32, m: u32, k: u32) -> f32 : op(A)[m, k] of the batch whose A starts at `base`
//
// Rows m0 .. m0+TM-1 and vec4 columns n0/4 .. n0/4+TN4-1 of C [M, N], each summed over k = 0 .. K-1 in
// order: acc[i*TN4 + j] = C[m0+i, n0+4j .. n0+4j+3]. Rows and columns past the end repeat the last one
// (clamped loads, results never stored). B's batch starts at vec4 `base_b4`.
fn vec4_n_block(m0: u32, n0: u32, M: u32, N: u32, K: u32, base_a: u32, base_b4: u32) -> array<vec4<f32>, TM * TN4> {
  let N4 = N / 4u;
  var rows: array<u32, TM>;
  var cols4: array<u32, TN4>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(m0 + i, M - 1u); }
  for (var j = 0u; j < TN4; j++) { cols4[j] = min(n0 / 4u + j, N4 - 1u); }
  var acc: array<vec4<f32>, TM * TN4>;
  for (var k = 0u; k < K; k++) {
    var bk: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) { bk[j] = B4[base_b4 + k * N4 + cols4[j]]; }
    for (var i = 0u; i < TM; i++) {
      let a = block_a(base_a, rows[i], k);
      for (var j = 0u; j < TN4; j++) { acc[i * TN4 + j] += a * bk[j]; }
    }
  }
  return acc;
}
