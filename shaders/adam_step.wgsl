// One Adam/AdamW step of four values, component by component (PyTorch semantics), imported by
// optimizer.wgsl and adam_factored.wgsl so that both give the same bits. With t the step number
// (1-based) and g the (already clipped) gradient:
//   param -= lr * weight_decay * param           (decoupled weight decay, AdamW)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// With radius >= 0 the parameter is then clamped into [center - radius, center + radius] (an
// L-infinity ball: constrained fine-tuning), the bits of the plain step followed by project_linf.

struct AdamHyper {
  lr: f32, beta1: f32, beta2: f32, eps: f32,
  weight_decay: f32, bias_correction1: f32, bias_correction2: f32, radius: f32,
}

struct AdamStep { p: vec4<f32>, m: vec4<f32>, v: vec4<f32> }

fn adam_step(h: AdamHyper, param0: vec4<f32>, g: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>, ball_center: vec4<f32>) -> AdamStep {
  let p = param0 - h.lr * h.weight_decay * param0;
  let m_i = h.beta1 * m0 + (1.0 - h.beta1) * g;
  let v_i = h.beta2 * v0 + (1.0 - h.beta2) * g * g;
  let denom = sqrt(v_i) / sqrt(h.bias_correction2) + h.eps;
  let stepped = p - (h.lr / h.bias_correction1) * m_i / denom;
  if (h.radius < 0.0) { return AdamStep(stepped, m_i, v_i); }
  return AdamStep(clamp(stepped, ball_center - h.radius, ball_center + h.radius), m_i, v_i);
}
