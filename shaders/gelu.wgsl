// GPT-2's GELU ("gelu_new", the tanh approximation), elementwise over n values:
//
//   y = gelu_new(x)
//
//   x, y : [n]   (gelu: y is a separate buffer; gelu_in_place: x is overwritten)
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG : invocations per workgroup, one value each
//
// import: activation.wgsl

struct Dims { n: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> d: Dims;

// gelu_in_place binds one buffer only (WebGPU forbids binding a buffer as both read and read_write).
@group(0) @binding(0) var<storage, read_write> xy: array<f32>;
@group(0) @binding(1) var<uniform> d_in_place: Dims;

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
