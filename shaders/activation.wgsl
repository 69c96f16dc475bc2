// GPT-2's GELU ("gelu_new", the tanh approximation), shared by the shaders that `// import:` it
// (gelu.wgsl, and the matmul epilogues that fuse it):
//
//   gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//
// tanh's argument is clamped to [-15, 15] (tanh(15) is 1 in f32) so that backends computing tanh
// as a ratio of exponentials cannot overflow to inf/inf = NaN for large |x|.

const SQRT_2_OVER_PI = 0.7978845608028654;

fn gelu_new(v: f32) -> f32 {
  let u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
  return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}
