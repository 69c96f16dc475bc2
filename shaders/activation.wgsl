// MLP activations, shared by the shaders that `// import:` them (gelu.wgsl, gelu_backward.wgsl,
// and the matmul epilogues that fuse GPT-2's GELU):
//
//   gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   GPT-2, GPT-J, Gemma ("gelu_pytorch_tanh")
//   gelu_erf(x) = x Phi(x) = 0.5 x erfc(-x / sqrt(2))                NeoX/Pythia ("gelu", exact)
//   silu(x)     = x sigmoid(x)                                        Llama, Mistral, Qwen2 (SwiGLU)
//
// activate / activate_grad pick one by the compile-time parameter ACT (0 gelu_new, 1 gelu_erf,
// 2 silu) of the shader that imports this file.
// tanh's argument is clamped to [-15, 15] (tanh(15) is 1 in f32) so that backends computing tanh
// as a ratio of exponentials cannot overflow to inf/inf = NaN for large |x|.

const SQRT_2_OVER_PI = 0.7978845608028654;
const GELU_COEF = 0.044715;
const SQRT_HALF = 0.7071067811865476;
const INV_SQRT_2PI = 0.3989422804014327;

fn gelu_new(v: f32) -> f32 {
  let u = SQRT_2_OVER_PI * (v + GELU_COEF * v * v * v);
  return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}

// erfc(a) for a >= 0 (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
fn erfc_nonneg(a: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * a);
  let p = -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p);
}

// Phi(x), the standard normal CDF, = 0.5 erfc(-x / sqrt(2)), accurate in both tails.
fn normal_cdf(v: f32) -> f32 {
  let a = abs(v) * SQRT_HALF;
  let tail = 0.5 * erfc_nonneg(a);
  return select(tail, 1.0 - tail, v >= 0.0);
}

fn sigmoid(v: f32) -> f32 {
  let e = exp(-abs(v));                 // in (0, 1]: never overflows
  return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

// d gelu_new / dx. Both tanh terms come from e = exp(-2|u|) in (0, 1], which never overflows and
// avoids the cancellation of 1 - tanh^2 near saturation:
//   0.5 (1 + tanh(u)) = sigmoid(2u),   1 - tanh(u)^2 = 4 sigmoid(2u) sigmoid(-2u)
fn gelu_new_grad(v: f32) -> f32 {
  let u = SQRT_2_OVER_PI * (v + GELU_COEF * v * v * v);
  let du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEF * v * v);
  let e = exp(-2.0 * abs(u));
  let sigmoid_minus = e / (1.0 + e);   // sigmoid(-2|u|), in (0, 0.5]
  let sigmoid_plus = 1.0 / (1.0 + e);  // sigmoid(2|u|),  in [0.5, 1)
  let half_one_plus_tanh = select(sigmoid_minus, sigmoid_plus, u >= 0.0);
  let one_minus_tanh_sq = 4.0 * sigmoid_minus * sigmoid_plus;
  return half_one_plus_tanh + 0.5 * v * one_minus_tanh_sq * du_dx;
}

fn activate(v: f32) -> f32 {
  if (ACT == 1u) { return v * normal_cdf(v); }
  if (ACT == 2u) { return v * sigmoid(v); }
  return gelu_new(v);
}

fn activate_grad(v: f32) -> f32 {
  if (ACT == 1u) { return normal_cdf(v) + v * INV_SQRT_2PI * exp(-0.5 * v * v); }
  if (ACT == 2u) {
    let s = sigmoid(v);
    return s + v * s * (1.0 - s);
  }
  return gelu_new_grad(v);
}
