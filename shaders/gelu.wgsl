// MLP activations, elementwise (ACT picks the function, see activation.wgsl):
//
//   gelu, gelu_in_place :  y[i] = act(x[i])                              x, y : [n]
//   glu                 :  y[r, j] = act(x[r, j]) * x[r, F + j]          x : [R, 2F], y : [R, F]
//
// glu is the gated MLP (SwiGLU for Llama, GeGLU for Gemma): x is the fused gate|up projection of a
// row, the gate's activation times the up projection is the key the down projection reads.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG, PER : invocations per workgroup, values per invocation (elements.wgsl)
//   ACT     : 0 gelu_new, 1 exact gelu, 2 silu
//
// import: activation.wgsl
// import: elements.wgsl

struct Dims { n: u32, F: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> d: Dims;

// gelu_in_place binds one buffer only (WebGPU forbids binding a buffer as both read and read_write).
@group(0) @binding(0) var<storage, read_write> xy: array<f32>;
@group(0) @binding(1) var<uniform> d_in_place: Dims;

// grid: ceil(n / (WG*PER)) workgroups, split over x and y when over the per-dimension limit (n = R*F
// for glu).
@compute @workgroup_size(WG)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.n) { break; }
    y[i] = activate(x[i]);
  }
}

@compute @workgroup_size(WG)
fn gelu_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d_in_place.n) { break; }
    xy[i] = activate(xy[i]);
  }
}

// gelu four values per access (n % 4 == 0; grid over n / 4): on llvmpipe every storage access is a per-lane
// loop. Each component is gelu's value.
@group(0) @binding(0) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gelu_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.n / 4u) { break; }
    let v = x4[i];
    y4[i] = vec4<f32>(activate(v.x), activate(v.y), activate(v.z), activate(v.w));
  }
}

@compute @workgroup_size(WG)
fn glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.n) { break; }
    let gate = (i / d.F) * 2u * d.F + i % d.F;
    y[i] = activate(x[gate]) * x[gate + d.F];
  }
}
