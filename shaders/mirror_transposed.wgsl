// Fills a transposed texture mirror (engine/gpu.ts mirror() with `transposed`): for a row-major
// matrix B [R, C] (the first R*C floats of a weight's buffer), one rgba32float texture holding rows
// [col0, col0 + chunk_cols) of B^T [C, R], texel (x, y) = B[4x .. 4x+3, col0 + y], zeros past row R - 1
// (the last texel of a row when R % 4 != 0: a vocabulary of 451 tokens). matmul_texture_kt then reads
// B^T the way matmul_texture_n reads an untransposed weight. Plain copies (no arithmetic), so the
// texture holds B's exact bits.

struct Dims { rows: u32, cols: u32, col0: u32, chunk_cols: u32 }

@group(0) @binding(0) var<storage, read> B: array<f32>;
@group(0) @binding(1) var BT: texture_storage_2d<rgba32float, write>;
@group(0) @binding(2) var<uniform> d: Dims;

// B[r, c], or 0 past the last row.
fn b_or_zero(r: u32, c: u32) -> f32 {
  if (r >= d.rows) { return 0.0; }
  return B[r * d.cols + c];
}

// Grid: x = ceil(ceil(rows / 4) / 8), y = ceil(chunk_cols / 8); one texel per invocation.
@compute @workgroup_size(8, 8, 1)
fn mirror_transposed(@builtin(global_invocation_id) g: vec3<u32>) {
  if (4u * g.x >= d.rows || g.y >= d.chunk_cols) { return; }
  let r = 4u * g.x;
  let c = d.col0 + g.y;
  textureStore(BT, vec2<u32>(g.x, g.y), vec4<f32>(b_or_zero(r, c), b_or_zero(r + 1u, c), b_or_zero(r + 2u, c), b_or_zero(r + 3u, c)));
}
