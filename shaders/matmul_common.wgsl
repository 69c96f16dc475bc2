// What every kernel of the matmul family shares (shaders/matmul.wgsl describes the family and its
// parameters): the dimensions, A, bias and C, op(A)'s element, and the epilogue that stores one dot
// product. Imported by matmul.wgsl, matmul_half.wgsl and matmul_f16.wgsl.
// import: activation.wgsl

struct Dims {
  M: u32, N: u32, K: u32, bias_stride: u32,
  alpha: f32, beta: f32, stride_a: u32, stride_b: u32,
  stride_c: u32, ldc: u32, c_offset: u32,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<uniform> d: Dims;

fn a_at(base: u32, m: u32, k: u32) -> f32 {
  if (TRANS_A) { return A[base + k * d.M + m]; }
  return A[base + m * d.K + k];
}

// Writes one finished dot product (ab = op(A)[m,:] . op(B)[:,n]) to C, with alpha, bias and beta.
fn store(base_c: u32, m: u32, n: u32, ab: f32) {
  let idx = base_c + m * d.ldc + n;
  var v = d.alpha * ab + bias[n * d.bias_stride];
  if (d.beta != 0.0) { v += d.beta * C[idx]; }
  if (GELU) { v = gelu_new(v); }
  C[idx] = v;
}
