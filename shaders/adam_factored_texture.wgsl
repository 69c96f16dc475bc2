// adam_factored (adam_factored_block.wgsl) with one L-infinity center for every copy, [M, N], read from
// its texture mirror (engine/gpu.ts mirror(): texel (n4, i) = center[i, 4*n4 .. +3]): on llvmpipe a
// storage load is a per-lane loop, while a read-only texture load is inlined (20 copies of [512, 128]
// from 10-row factors: 3.08 ms with a center per copy, 2.88 ms with this one, 2.69 ms without a ball;
// bench/RESULTS.md). The same values, so the same bits as adam_factored.
//
// import: adam_factored_block.wgsl

@group(0) @binding(5) var center_t: texture_storage_2d<rgba32float, read>;

// Copy g's center at [i, 4*n4 .. +3]: the shared one's.
fn center_of(g: u32, i: u32, n4: u32) -> vec4<f32> {
  return textureLoad(center_t, vec2<u32>(n4, i));
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn adam_factored_texture(@builtin(global_invocation_id) gid: vec3<u32>) {
  adam_factored_block(gid);
}
