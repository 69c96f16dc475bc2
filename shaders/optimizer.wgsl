// Optimizer kernels, elementwise over n values (a 2-D grid when n needs more than 65535
// workgroups: the index is rebuilt from the number of workgroups along x).
//
//   adam:         one Adam/AdamW step (PyTorch semantics), gradients optionally pre-scaled by
//                 global-norm clipping read from the GPU (no readback), then, with a radius >= 0,
//                 project_linf's clamp around `center` in the same pass
//   adam_vec4:    the same, four values per storage access (n % 4 == 0)
//   project_linf: w = clamp(w, w0 - eps, w0 + eps)       constrained fine-tuning
//   fill:         x = value                              zeroing gradients
//
// Compile-time parameters: WG and PER (elements.wgsl). Each entry point binds its own tensors, then
// its uniforms.
//
// import: elements.wgsl
// import: adam_step.wgsl

// ---- adam, adam_vec4. Bindings: param, grad, m, v, norm_sq, center, dims.
// adam_step.wgsl's step of g = c * grad, c the clipping scale: with clip_norm > 0,
// c = min(1, clip_norm / (||all grads||_2 + 1e-6)), where norm_sq[0] holds the squared global norm
// computed earlier in the same command stream; else 1. With radius < 0 `center` is not read (the host
// binds the gradient there).
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
@group(0) @binding(5) var<storage, read> center: array<f32>;
@group(0) @binding(6) var<uniform> adam_dims: AdamDims;

// The same tensors four values at a time, for adam_vec4 (n % 4 == 0): on llvmpipe every storage
// access is a per-lane loop, and a quarter of the accesses ran a step 1.8x faster.
@group(0) @binding(0) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> center4: array<vec4<f32>>;

// The clipping scale c (1 without clipping).
fn clip_scale(a: AdamDims) -> f32 {
  if (a.clip_norm > 0.0) { return min(1.0, a.clip_norm / (sqrt(norm_sq[0]) + 1e-6)); }
  return 1.0;
}

fn adam_hyper(a: AdamDims) -> AdamHyper {
  return AdamHyper(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.bias_correction1, a.bias_correction2, a.radius);
}

// adam uses component x of adam_step's vec4s, so both entry points give the same bits.
@compute @workgroup_size(WG)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let clip = clip_scale(adam_dims);
  let h = adam_hyper(adam_dims);
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= adam_dims.n) { break; }
    var c = 0.0;
    if (adam_dims.radius >= 0.0) { c = center[i]; }
    let s = adam_step(h, vec4<f32>(param[i]), clip * vec4<f32>(grad[i]), vec4<f32>(m[i]), vec4<f32>(v[i]), vec4<f32>(c));
    m[i] = s.m.x;
    v[i] = s.v.x;
    param[i] = s.p.x;
  }
}

// adam over n / 4 groups of four values (grid: elements.wgsl over n / 4).
@compute @workgroup_size(WG)
fn adam_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let clip = clip_scale(adam_dims);
  let h = adam_hyper(adam_dims);
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= adam_dims.n / 4u) { break; }
    var c = vec4<f32>(0.0);
    if (adam_dims.radius >= 0.0) { c = center4[i]; }
    let s = adam_step(h, param4[i], clip * grad4[i], m4[i], v4[i], c);
    m4[i] = s.m;
    v4[i] = s.v;
    param4[i] = s.p;
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
