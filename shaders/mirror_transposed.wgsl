// Fills a transposed texture mirror (engine/gpu.ts mirror() with `transposed`): for a row-major
// matrix B [R, C] (the first R*C floats of a weight's buffer), one rgba32float texture holding rows
// [col0, col0 + chunk_cols) of B^T [C, R], texel (x, y) = B[4x .. 4x+3, col0 + y]. R % 4 == 0.
// matmul_texture_kt then reads B^T the way matmul_texture_n reads an untransposed weight. Plain
// copies (no arithmetic), so the texture holds B's exact bits.

struct Dims { rows4: u32, cols: u32, col0: u32, chunk_cols: u32 }

@group(0) @binding(0) var<storage, read> B: array<f32>;
@group(0) @binding(1) var BT: texture_storage_2d<rgba32float, write>;
@group(0) @binding(2) var<uniform> d: Dims;

// Grid: x = ceil(rows4 / 8), y = ceil(chunk_cols / 8); one texel per invocation.
@compute @workgroup_size(8, 8, 1)
fn mirror_transposed(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x >= d.rows4 || g.y >= d.chunk_cols) { return; }
  let at = 4u * g.x * d.cols + d.col0 + g.y; // B[4x, col0 + y]
  textureStore(BT, vec2<u32>(g.x, g.y), vec4<f32>(B[at], B[at + d.cols], B[at + 2u * d.cols], B[at + 3u * d.cols]));
}
