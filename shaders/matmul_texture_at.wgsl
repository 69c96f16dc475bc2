// The texture matmuls whose A is read from a texture mirror (matmul_texture_n_at, _kt_at, _tn; see
// matmul_texture.wgsl for the kernels, their layouts and parameters). AW is 1 here (no window).
//
// import: matmul_texture.wgsl
// import: matmul_texture_a.wgsl

// The row in A's texture mirror, whose first row is A's row a_row0, of each row of the block from row
// m0 (a clamped duplicate of the last row past m_end, never stored).
fn block_rows(m0: u32) -> array<u32, TM> {
  var rows: array<u32, TM>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(m0 + i, d.m_end - 1u) - d.a_row0; }
  return rows;
}

// matmul_texture_n with A [M, K] read from a texture mirror (texel (k4, m - a_row0) = A[m, 4*k4 ..
// +3]; rows [a_row0, a_row0 + the texture's height) of A), all rows [m_begin, m_end) in one dispatch:
// the same sums. A product of more rows than one uniform window holds would otherwise take one
// dispatch per window (K = 512: 32 rows each), each too small to keep llvmpipe's threads busy; every
// lane still loads A at workgroup-uniform coordinates. Grid as matmul_texture_n's.
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_n_at(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  block_n(wid, lid);
}

// matmul_texture_kt with A read from its texture mirror, like matmul_texture_n_at.
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_kt_at(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  block_n(wid, lid);
}

// C[M,N] = A^T B with A [K,M] and B [K,N] both in textures, texel (m/4, k) and (n/4, k); M = m_end
// (m_begin = 0), K = d.K; M and N multiples of 4. A weight gradient's operands are an activation
// and a gradient, both [R, width] rows, too long in K for a uniform window (and a window over K
// would split the sum): here both are inlined texture loads, and each lane reads the A texels of
// its workgroup's rows, so llvmpipe loads them once. Every C[m, n] is the sum over k = 0..K-1 in
// order of A[k, m] * B[k, n], each step `acc += a * b` with a scalar a and a vec4 b, like
// matmul.wgsl's matmul_vec4_n with TRANS_A: the two kernels give the same bits.
// Grid: x = ceil(M / TM), y = ceil(N / (4*TN4*WG)); TM % 4 == 0.
@compute @workgroup_size(1, WG, 1)
fn matmul_texture_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wid.x * TM;
  let M4 = d.m_end / 4u;
  let N4 = d.N / 4u;
  // (The max keeps the type valid in the other entry points' pipelines, whose TM may be below 4.)
  var row4: array<u32, max(TM / 4u, 1u)>;
  var col4: array<u32, TN4>;
  for (var i = 0u; i < TM / 4u; i++) { row4[i] = min(m0 / 4u + i, M4 - 1u); }
  for (var j = 0u; j < TN4; j++) { col4[j] = min((wid.y * TN4 + j) * WG + lid.y, N4 - 1u); }
  var acc: array<vec4<f32>, TM * TN4>;
  for (var k = 0u; k < d.K; k++) {
    var bk: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(col4[j], k)); }
    for (var i = 0u; i < TM / 4u; i++) {
      // The four rows of this texel, written out: a loop would index the vec4 components dynamically.
      let a = textureLoad(At, vec2<u32>(row4[i], k));
      for (var j = 0u; j < TN4; j++) { acc[(4u * i) * TN4 + j] += a.x * bk[j]; }
      for (var j = 0u; j < TN4; j++) { acc[(4u * i + 1u) * TN4 + j] += a.y * bk[j]; }
      for (var j = 0u; j < TN4; j++) { acc[(4u * i + 2u) * TN4 + j] += a.z * bk[j]; }
      for (var j = 0u; j < TN4; j++) { acc[(4u * i + 3u) * TN4 + j] += a.w * bk[j]; }
    }
  }
  store_block(m0, wid.y, lid.y, &acc);
}
