// The texture matmuls whose A [M,K] is read through a uniform-buffer window of AW rows starting at
// row a_row0 (matmul_texture_n, _k, _kt; see matmul_texture.wgsl for the kernels, their layouts and
// parameters): every lane of a workgroup reads the same A value, and llvmpipe loads a uniform buffer
// at a workgroup-uniform index once, where a storage-buffer load is a bounds-checked per-lane gather
// (on GL: 27 -> 40 GFLOP/s for [16,768]x[768,3072], bench/kernels.ts). A window holds at most
// maxUniformBufferBindingSize bytes, so ops.ts records one dispatch per window; each computes rows
// [m_begin, m_end) of C, all inside its window.
//
// import: matmul_texture.wgsl

@group(0) @binding(0) var<uniform> A4: array<vec4<f32>, AW * K4>;

// The first element in the window of each row of the block from row m0 (a clamped duplicate of the
// last row past m_end, never stored).
fn block_rows(m0: u32) -> array<u32, TM> {
  var rows: array<u32, TM>;
  for (var i = 0u; i < TM; i++) { rows[i] = (min(m0 + i, d.m_end - 1u) - d.a_row0) * K4; }
  return rows;
}

// A[rows[i], 4*k4 .. +3] for the block's rows (from block_rows), from the uniform window: every lane
// of a workgroup loads the same values.
fn a_rows(rows: array<u32, TM>, k4: u32) -> array<vec4<f32>, TM> {
  var a: array<vec4<f32>, TM>;
  for (var i = 0u; i < TM; i++) { a[i] = A4[rows[i] + k4]; }
  return a;
}

// Grid: x = ceil((m_end - m_begin) / TM), y = ceil(N / (4*TN4*WG)).
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_n(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  block_n(wid, lid);
}

// Grid: x = ceil((m_end - m_begin) / TM), y = ceil(N / (TN4*WG)). acc[i*TN4 + j] = C[m0+i, col[j]]
// before the epilogue, its four k of a texel step added in order in one statement (as product_n does).
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = d.m_begin + wid.x * TM;
  let rows = block_rows(m0);
  var col: array<u32, TN4>;
  for (var j = 0u; j < TN4; j++) { col[j] = min((wid.y * TN4 + j) * WG + lid.y, d.N - 1u); }
  var acc: array<f32, TM * TN4>;
  for (var k4 = 0u; k4 < K4; k4++) {
    var bk: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(k4, col[j])); }
    for (var i = 0u; i < TM; i++) {
      let a = A4[rows[i] + k4];
      for (var j = 0u; j < TN4; j++) {
        let p = a * bk[j];
        acc[i * TN4 + j] = (((acc[i * TN4 + j] + p.x) + p.y) + p.z) + p.w;
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      let n = (wid.y * TN4 + j) * WG + lid.y;
      if (m0 + i < d.m_end && n < d.N) { store(m0 + i, n, acc[i * TN4 + j]); }
    }
  }
}

// Grid as matmul_texture_n's.
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_kt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  block_n(wid, lid);
}
