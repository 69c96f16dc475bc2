// LayerNorm / RMSNorm backward. The forward (shaders/layernorm.wgsl) normalises each row r:
//   xhat = (x - mean) * rstd,   y = xhat * (gamma + g0) + beta,   stats[r] = (mean, rstd)
// (RMSNorm: mean = 0, no beta.) Its gradients, with g = dy * (gamma + g0):
//   LayerNorm: dx[r,c] += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
//   RMSNorm:   dx[r,c] += rstd * (g - xhat * mean_c(g * xhat))
//   dgamma[c] += sum_r dy[r,c] * xhat[r,c]
//   dbeta[c]  += sum_r dy[r,c]
// Everything accumulates into the existing gradients: dx is the residual stream's gradient
// (a norm reads the stream, which also flows on unchanged), and dgamma/dbeta add up over
// micro-batches. Rows are summed in a fixed order, so results are bit-reproducible.
// Rows are addressed as in the forward: row r starts at (r / G) * ld + off + (r % G) * C in dy, x, dx.
//
// Compile-time parameters: WG (invocations per workgroup), RMS, ACCUMULATE (dx += ...; else dx = ...,
// for Gemma 3's q/k norms, whose input gradient replaces the q/k part of a copied gradient).
// Each entry point binds its own tensors (pipeline layouts are "auto"), followed by the uniforms.

struct Dims { R: u32, C: u32, gain_offset: f32, G: u32, ld: u32, off: u32 }

fn row_start(r: u32) -> u32 { return (r / dims.G) * dims.ld + dims.off + (r % dims.G) * dims.C; }

// ---- layernorm_backward_input: one invocation per row. Bindings: dy, x, stats, gamma, dx, dims.
@group(0) @binding(0) var<storage, read> dy: array<f32>;         // rows of C
@group(0) @binding(1) var<storage, read> x: array<f32>;          // forward input
@group(0) @binding(2) var<storage, read> stats: array<f32>;      // [R, 2] (mean, rstd)
@group(0) @binding(3) var<storage, read> gamma: array<f32>;      // [C]
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;   // accumulated
@group(0) @binding(5) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn layernorm_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= dims.R) { return; }
  let base = row_start(r);
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  // The two row means the formula needs, in one pass.
  var sum_g = 0.0;
  var sum_g_xhat = 0.0;
  for (var c = 0u; c < dims.C; c++) {
    let g = dy[base + c] * (gamma[c] + dims.gain_offset);
    sum_g += g;
    sum_g_xhat += g * (x[base + c] - mean) * rstd;
  }
  var mean_g = sum_g / f32(dims.C);
  if (RMS) { mean_g = 0.0; }
  let mean_g_xhat = sum_g_xhat / f32(dims.C);
  for (var c = 0u; c < dims.C; c++) {
    let xhat = (x[base + c] - mean) * rstd;
    let g = dy[base + c] * (gamma[c] + dims.gain_offset);
    let v = rstd * (g - mean_g - xhat * mean_g_xhat);
    if (ACCUMULATE) { dx[base + c] += v; } else { dx[base + c] = v; }
  }
}

// layernorm_backward_input four values per access, where C, ld and off are multiples of 4 (on llvmpipe
// every storage access is a per-lane loop): the same values, each sum adding one value at a time in order.
@group(0) @binding(0) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dx4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn layernorm_backward_input_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= dims.R) { return; }
  let base = row_start(r) / 4u;
  let C4 = dims.C / 4u;
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  var sum_g = 0.0;
  var sum_g_xhat = 0.0;
  for (var c = 0u; c < C4; c++) {
    let g = dy4[base + c] * (gamma4[c] + dims.gain_offset);
    let gx = g * (x4[base + c] - mean) * rstd;
    sum_g += g.x;
    sum_g_xhat += gx.x;
    sum_g += g.y;
    sum_g_xhat += gx.y;
    sum_g += g.z;
    sum_g_xhat += gx.z;
    sum_g += g.w;
    sum_g_xhat += gx.w;
  }
  var mean_g = sum_g / f32(dims.C);
  if (RMS) { mean_g = 0.0; }
  let mean_g_xhat = sum_g_xhat / f32(dims.C);
  for (var c = 0u; c < C4; c++) {
    let xhat = (x4[base + c] - mean) * rstd;
    let g = dy4[base + c] * (gamma4[c] + dims.gain_offset);
    let v = rstd * (g - mean_g - xhat * mean_g_xhat);
    if (ACCUMULATE) { dx4[base + c] += v; } else { dx4[base + c] = v; }
  }
}

// ---- layernorm_backward_params: one invocation per column, rows summed in order 0..R-1.
// Bindings: dy, x, stats (as above), dgamma, dbeta, dims.
@group(0) @binding(3) var<storage, read_write> dgamma: array<f32>; // [C] accumulated
@group(0) @binding(4) var<storage, read_write> dbeta: array<f32>;  // [C] accumulated

@compute @workgroup_size(WG)
fn layernorm_backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= dims.C) { return; }
  var sum_dy_xhat = 0.0;
  var sum_dy = 0.0;
  for (var r = 0u; r < dims.R; r++) {
    let i = row_start(r) + c;
    let g = dy[i];
    sum_dy_xhat += g * (x[i] - stats[2u * r]) * stats[2u * r + 1u];
    sum_dy += g;
  }
  dgamma[c] += sum_dy_xhat;
  dbeta[c] += sum_dy;
}
