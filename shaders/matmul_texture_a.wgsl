// A's rows from its texture mirror (texel (k4, row) = A[row, 4*k4 .. +3]), for the texture products whose
// A is an activation: matmul_texture_at.wgsl and virtual_dense.wgsl. The importing file says which rows
// a block reads (block_rows, for matmul_texture.wgsl's product_n).

@group(0) @binding(0) var At: texture_storage_2d<rgba32float, read>;

// A[rows[i], 4*k4 .. +3] for the block's rows (from block_rows), from A's texture mirror: every lane
// of a workgroup loads the same values.
fn a_rows(rows: array<u32, TM>, k4: u32) -> array<vec4<f32>, TM> {
  var a: array<vec4<f32>, TM>;
  for (var i = 0u; i < TM; i++) { a[i] = textureLoad(At, vec2<u32>(k4, rows[i])); }
  return a;
}
