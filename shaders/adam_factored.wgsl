// adam_factored (adam_factored_block.wgsl) with the L-infinity ball's center in a storage buffer: one
// center per copy, [G, M, N] like the parameters, or with CENTER_SHARED one [M, N] for every copy.
//
// Compile-time parameters: TM, TN, WG_X, WG_Y (adam_factored_block.wgsl), CENTER_SHARED.
//
// import: adam_factored_block.wgsl

@group(0) @binding(5) var<storage, read> center4: array<vec4<f32>>;

// Copy g's center at [i, 4*n4 .. +3].
fn center_of(g: u32, i: u32, n4: u32) -> vec4<f32> {
  let in_copy = i * (fd.N / 4u) + n4;
  if (CENTER_SHARED) { return center4[in_copy]; }
  return center4[g * fd.M * (fd.N / 4u) + in_copy];
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn adam_factored(@builtin(global_invocation_id) gid: vec3<u32>) {
  adam_factored_block(gid);
}
