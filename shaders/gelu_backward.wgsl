// Backward of the MLP activations of gelu.wgsl (ACT picks the function, see activation.wgsl):
//   gelu_backward : dx[i] = dy[i] * act'(x[i])   (gelu_backward_vec4: the same, four values per access)
//   glu_backward  : for y[r,j] = act(g) * u with g = x[r, j], u = x[r, F + j]:
//                   dx[r, j] = dy[r,j] * u * act'(g),   dx[r, F + j] = dy[r,j] * act(g)
// Both are written, not accumulated: x is an MLP hidden activation.
//
// Compile-time parameters: WG and PER (elements.wgsl), ACT. The grid may be 2-D (more than 65535
// workgroups), so the element index is rebuilt from the number of workgroups along x.
//
// import: activation.wgsl
// import: elements.wgsl

struct Dims { n: u32, F: u32 }

@group(0) @binding(0) var<storage, read> dy: array<f32>;        // [n]
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [n] pre-activation ([R, 2F] for glu)
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;  // like x
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= dims.n) { break; }
    dx[i] = dy[i] * activate_grad(x[i]);
  }
}

// gelu_backward four values per access (n % 4 == 0; grid over n / 4): on llvmpipe every storage access is a
// per-lane loop. Each component is gelu_backward's value.
@group(0) @binding(0) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dx4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gelu_backward_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= dims.n / 4u) { break; }
    let v = x4[i];
    dx4[i] = dy4[i] * vec4<f32>(activate_grad(v.x), activate_grad(v.y), activate_grad(v.z), activate_grad(v.w));
  }
}

@compute @workgroup_size(WG)
fn glu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= dims.n) { break; }
    let gate = (i / dims.F) * 2u * dims.F + i % dims.F;
    let g = x[gate];
    dx[gate] = dy[i] * x[gate + dims.F] * activate_grad(g);
    dx[gate + dims.F] = dy[i] * activate(g);
  }
}
