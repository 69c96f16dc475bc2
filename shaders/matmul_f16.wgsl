// matmul_half (see matmul_half_kernel.wgsl) for f16 weights on adapters with the shader-f16 feature:
// B is read as f16 values, widened to f32 and accumulated in f32 (the same values and sums as
// matmul_half.wgsl's unpacking, without the word arithmetic). engine/ops.ts uses it only when the
// device was opened with shader-f16; bf16 has no WGSL type and always goes through matmul_half.wgsl.
//
// import: matmul_common.wgsl
// import: matmul_register.wgsl
// import: matmul_half_kernel.wgsl

enable f16;

// B as f16 values, bound where matmul.wgsl binds B.
@group(0) @binding(1) var<storage, read> B16h: array<f16>;

fn b16(e: u32) -> f32 {
  return f32(B16h[e]);
}
