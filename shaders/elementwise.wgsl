// Elementwise arithmetic over n values (the residual stream's additions).
//
//   add          : out[i] = a[i] + b[i]      a, b, out : [n]
//   add_in_place : acc[i] += b[i]            acc, b    : [n]   (for out === a or out === b)
//   softcap_in_place : x[i] = cap * tanh(x[i] / cap)          (Gemma 2's logit soft-capping)
//   softcap_backward : g[i] *= 1 - (y[i] / cap)^2             y the capped values, g their gradient
//   gather_columns   : a column slice of a matrix, made contiguous (see its entry point)
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG, PER : invocations per workgroup, values per invocation (elements.wgsl)
//
// import: elements.wgsl

struct Dims { n: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;

// add_in_place binds the accumulator once, read_write (WebGPU forbids binding one buffer as both
// read and read_write in a dispatch).
@group(0) @binding(0) var<storage, read_write> acc: array<f32>;
@group(0) @binding(1) var<storage, read> addend: array<f32>;
@group(0) @binding(2) var<uniform> d_in_place: Dims;

// grid: ceil(n / (WG*PER)) workgroups, split over x and y when over the per-dimension limit.
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.n) { break; }
    out[i] = a[i] + b[i];
  }
}

@compute @workgroup_size(WG)
fn add_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d_in_place.n) { break; }
    acc[i] += addend[i];
  }
}

struct Cap { n: u32, cap: f32 }

@group(0) @binding(0) var<storage, read_write> capped: array<f32>;
@group(0) @binding(1) var<uniform> d_cap: Cap;

@compute @workgroup_size(WG)
fn softcap_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d_cap.n) { break; }
    capped[i] = d_cap.cap * tanh(clamp(capped[i] / d_cap.cap, -15.0, 15.0));
  }
}

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read> capped_values: array<f32>;
@group(0) @binding(2) var<uniform> d_cap_grad: Cap;

@compute @workgroup_size(WG)
fn softcap_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d_cap_grad.n) { break; }
    let th = capped_values[i] / d_cap_grad.cap;
    grad[i] *= 1.0 - th * th;
  }
}

// gather_columns: out[r, j] = src[r * ld + off + j] for r < R, j < C (a column slice of a wider
// matrix made contiguous: the gradient of one chunk of a split unembedding).
struct Slice { R: u32, C: u32, ld: u32, off: u32 }

@group(0) @binding(0) var<storage, read> slice_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> slice_out: array<f32>;
@group(0) @binding(2) var<uniform> d_slice: Slice;

@compute @workgroup_size(WG)
fn gather_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d_slice.R * d_slice.C) { break; }
    let r = i / d_slice.C;
    slice_out[i] = slice_src[r * d_slice.ld + d_slice.off + i % d_slice.C];
  }
}
