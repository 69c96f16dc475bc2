// GPT-2's GELU ("gelu_new", the tanh approximation), elementwise over n values:
//
//   y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//
//   x, y : [n]   (gelu: y is a separate buffer; gelu_in_place: x is overwritten)
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG : invocations per workgroup, one value each
//
// tanh's argument is clamped to [-15, 15] (tanh(15) is 1 in f32) so that backends computing tanh
// as a ratio of exponentials cannot overflow to inf/inf = NaN for large |x|.

struct Dims { n: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> d: Dims;

// gelu_in_place binds one buffer only (WebGPU forbids binding a buffer as both read and read_write).
@group(0) @binding(0) var<storage, read_write> xy: array<f32>;
@group(0) @binding(1) var<uniform> d_in_place: Dims;

const SQRT_2_OVER_PI = 0.7978845608028654;

fn gelu_new(v: f32) -> f32 {
  let u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
  return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}

// grid: ceil(n / WG) workgroups, split over x and y when over the per-dimension limit.
@compute @workgroup_size(WG)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i < d.n) { y[i] = gelu_new(x[i]); }
}

@compute @workgroup_size(WG)
fn gelu_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i < d_in_place.n) { xy[i] = gelu_new(xy[i]); }
}
