// The matmul of a 16-bit weight B (f16/bf16 checkpoints kept in 16 bits on the GPU): the register
// kernel of matmul.wgsl with each B value converted to f32 as it is loaded, f32 products and sums.
// Needs TRANS_A = false. The file that imports this one defines how B is read:
//
//   fn b16(e: u32) -> f32 : element e of B (row-major [K,N], or [N,K] with TRANS_B)
//
// matmul_half.wgsl unpacks u32 words (any adapter); matmul_f16.wgsl reads an array<f16> (shader-f16).
// Both give the same f32 values, so the results agree bit for bit.

fn b16_at(base: u32, k: u32, n: u32) -> f32 {
  if (TRANS_B) { return b16(base + n * d.K + k); }
  return b16(base + k * d.N + n);
}

fn b_elem(base: u32, k: u32, n: u32) -> f32 { return b16_at(base, k, n); }

// Same grid and register block as matmul.wgsl's matmul, B read through b16.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_half(@builtin(global_invocation_id) gid: vec3<u32>) { register_block(gid); }
