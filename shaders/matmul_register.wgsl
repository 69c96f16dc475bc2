// The scalar register-block kernel, whole: matmul (B in f32, matmul.wgsl) and matmul_half (B in 16 bits,
// matmul_half_kernel.wgsl) run it. The file that imports this one defines how B is read:
//
//   fn b_elem(base: u32, k: u32, n: u32) -> f32 : op(B)[k, n] of the batch whose B starts at `base`
//
// Grid: x = ceil(M / (TM*WG_X)) row blocks (x first so a column stripe of B stays in cache),
// y = ceil(N / (TN*WG_Y)) column blocks, z = batch.
fn register_block(gid: vec3<u32>) {
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
    for (var j = 0u; j < TN; j++) { bk[j] = b_elem(base_b, k, cols[j]); }
    for (var i = 0u; i < TM; i++) {
      let a = a_at(base_a, rows[i], k);
      for (var j = 0u; j < TN; j++) { acc[i * TN + j] += a * bk[j]; }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      if (m0 + i < d.M && n0 + j < d.N) { store(base_c, m0 + i, n0 + j, acc[i * TN + j]); }
    }
  }
}
