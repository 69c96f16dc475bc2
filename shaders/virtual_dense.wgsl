// The dense changes of virtual edits (FT-L's, engine/virtual_edits.ts) as one grouped texture product:
// each block of up to TM consecutive rows of one edit gets
//
//   C[r, n] += sum_k key[r, k] * U[first_key + n, k]          (n < N = d, k < K = f, in order)
//
// where U's rows first_key .. first_key + d - 1 are the edit's dense change, column n of it a row (the
// `keys` of a VirtualEdit). virtual_scores_vec4 (virtual_edit.wgsl) computes these sums as the edit's
// scores, in the same order, four k per statement: so this gives the same bits. It reads U from its
// transposed texture mirror (texel (c, k) = U[4c .. 4c+3, k], the layout of a forward weight's mirror,
// each edit's change a slice of texel columns from first_key / 4) and the keys from their texture mirror,
// with the texture products' register block (matmul_texture.wgsl product_n): on llvmpipe
// virtual_scores_vec4 reloads U per block of 4 rows through storage loads, a per-lane loop each: 16
// edits x 25 rows, f = 512, d = 128 took it 8.3 ms, this kernel 1.8 ms (bench/RESULTS.md).
//
//   At : the keys' mirror (a chunk of it: row r of the batch is texel row r - a_row0)
//   Bt : U's transposed mirror
//   blocks : [G] (first row, rows <= TM, first_key / 4, 0) u32, one workgroup column each (at the
//            binding of matmul_texture.wgsl's bias, which this entry point does not use)
//   C : [R, ldc] (the MLP output), updated in place (d.beta = 1, no bias)
//
// Compile-time parameters: as matmul_texture.wgsl's (K4 = f / 4, TM, TN4, WG; AW = 1, GELU false).
// Grid: x = G, y = ceil(N / (4*TN4*WG)).
//
// import: matmul_texture.wgsl
// import: matmul_texture_a.wgsl

@group(0) @binding(2) var<storage, read> blocks: array<vec4<u32>>;

// The rows of block b in the keys' mirror (its last row again past its end, computed and never stored).
// (matmul_texture.wgsl's block_n, not used here, would pass a row.)
fn block_rows(b: u32) -> array<u32, TM> {
  let block = blocks[b];
  var rows: array<u32, TM>;
  for (var i = 0u; i < TM; i++) { rows[i] = block.x + min(i, block.y - 1u) - d.a_row0; }
  return rows;
}

@compute @workgroup_size(1, WG, 1)
fn virtual_dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let block = blocks[wid.x];
  // The edit's columns in U's mirror: column group c of its change is texel column first_key / 4 + c.
  var col4 = column_groups(wid.y, lid.y);
  for (var j = 0u; j < TN4; j++) { col4[j] += block.z; }
  let acc = product_n(block_rows(wid.x), col4);
  for (var i = 0u; i < TM; i++) {
    if (i >= block.y) { break; }
    for (var j = 0u; j < TN4; j++) {
      let n = 4u * ((wid.y * TN4 + j) * WG + lid.y);
      for (var c = 0u; c < 4u; c++) {
        if (n + c < d.N) { store_biased(block.x + i, n + c, acc[i * TN4 + j][c], 0.0); }
      }
    }
  }
}
