// Decoding of model weights kept in their checkpoint's 16-bit format, packed two values per u32
// word (element e in the low half of word e/2 when e is even). Imported by the kernels that read
// such weights without the shader-f16 feature (matmul_half.wgsl, embedding.wgsl's embed_half).
//
//   f16  : unpack2x16float (core WGSL)
//   bf16 : its bits shifted into the top of an f32 (bf16 is an f32 with the low 16 mantissa bits cut)
//
// Compile-time parameter (prepended by engine/gpu.ts):
//   HALF_BF16 : the words hold bf16 values, else f16

// The value of the element in the low (odd = false) or high half of `word`, as f32 (exact: every f16
// and bf16 value is an f32 value).
fn half_value(word: u32, odd: bool) -> f32 {
  if (HALF_BF16) {
    if (odd) { return bitcast<f32>(word & 0xffff0000u); }
    return bitcast<f32>(word << 16u);
  }
  return unpack2x16float(word)[select(0u, 1u, odd)];
}
