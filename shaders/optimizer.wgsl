// Optimizer kernels, elementwise over n values (a 2-D grid when n needs more than 65535
// workgroups: the index is rebuilt from the number of workgroups along x).
//
//   adam:         one Adam/AdamW step (PyTorch semantics), gradients optionally pre-scaled by
//                 global-norm clipping read from the GPU (no readback)
//   adam_linf:    the same step, then project_linf's clamp around `center`, in one pass
//   project_linf: w = clamp(w, w0 - eps, w0 + eps)       constrained fine-tuning
//   fill:         x = value                              zeroing gradients
//
// Compile-time parameters: WG and PER (elements.wgsl). Each entry point binds its own tensors, then
// its uniforms.
//
// import: elements.wgsl

// ---- adam, adam_linf. Bindings: param, grad, m, v, norm_sq, (adam_linf: center,) dims.
// With t the step number (1-based), c = clip scale, lr_t = lr / (1 - beta1^t):
//   g = c * grad
//   param -= lr * weight_decay * param           (decoupled weight decay, AdamW)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   param -= lr_t * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Clipping (clip_norm > 0): c = min(1, clip_norm / (||all grads||_2 + 1e-6)), where norm_sq[0]
// holds the squared global norm computed earlier in the same command stream.
// adam_linf then sets param = clamp(param, center - radius, center + radius) (constrained fine-tuning),
// the bits of adam followed by project_linf.
struct AdamDims {
  n: u32, lr: f32, beta1: f32, beta2: f32,
  eps: f32, weight_decay: f32, bias_correction1: f32, bias_correction2: f32,
  clip_norm: f32, radius: f32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> norm_sq: array<f32>;
@group(0) @binding(5) var<uniform> adam_dims: AdamDims;
@group(0) @binding(5) var<storage, read> center: array<f32>;
@group(0) @binding(6) var<uniform> adam_linf_dims: AdamDims;

// Updates m[i] and v[i] and returns param[i] after the step.
fn adam_update(i: u32, a: AdamDims) -> f32 {
  var clip = 1.0;
  if (a.clip_norm > 0.0) { clip = min(1.0, a.clip_norm / (sqrt(norm_sq[0]) + 1e-6)); }
  let g = clip * grad[i];
  var p = param[i];
  p -= a.lr * a.weight_decay * p;
  let m_i = a.beta1 * m[i] + (1.0 - a.beta1) * g;
  let v_i = a.beta2 * v[i] + (1.0 - a.beta2) * g * g;
  m[i] = m_i;
  v[i] = v_i;
  let denom = sqrt(v_i) / sqrt(a.bias_correction2) + a.eps;
  return p - (a.lr / a.bias_correction1) * m_i / denom;
}

@compute @workgroup_size(WG)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= adam_dims.n) { break; }
    param[i] = adam_update(i, adam_dims);
  }
}

@compute @workgroup_size(WG)
fn adam_linf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let a = adam_linf_dims;
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= a.n) { break; }
    param[i] = clamp(adam_update(i, a), center[i] - a.radius, center[i] + a.radius);
  }
}

// ---- project_linf. Bindings: w (updated), w0, dims.
struct ProjectDims { n: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read> w0: array<f32>;
@group(0) @binding(2) var<uniform> project_dims: ProjectDims;

@compute @workgroup_size(WG)
fn project_linf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= project_dims.n) { break; }
    w[i] = clamp(w[i], w0[i] - project_dims.eps, w0[i] + project_dims.eps);
  }
}

// ---- fill. Bindings: x (written), dims.
struct FillDims { n: u32, value: f32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> fill_dims: FillDims;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= fill_dims.n) { break; }
    x[i] = fill_dims.value;
  }
}
