// matmul_half (see matmul_half_kernel.wgsl) on any adapter: B as packed 16-bit pairs in u32 words,
// decoded by half.wgsl (f16 or bf16 per HALF_BF16).
//
// import: matmul_common.wgsl
// import: matmul_register.wgsl
// import: half.wgsl
// import: matmul_half_kernel.wgsl

// B as packed 16-bit pairs, bound where matmul.wgsl binds B.
@group(0) @binding(1) var<storage, read> B16: array<u32>;

fn b16(e: u32) -> f32 {
  return half_value(B16[e >> 1u], (e & 1u) == 1u);
}
