// Deterministic reductions: no atomics, every sum runs in a fixed order, so results are
// bit-identical from run to run (and the same on any adapter that rounds f32 the same way).
//
//   column_sum:  out[n] += sum_{r < R} x[r*N + n]            bias gradients: one invocation per column
//   sum_squares: partials[offset + i] = sum_k x[i + k*P]^2   first stage of a squared norm; P = parts
//                invocations each stride over the tensor, so neighbouring lanes read neighbouring values
//   sum_all:     out[0] = sum_{i < n} x[i]                   second stage: one invocation, in index order
//
// Compile-time parameters: WG. Each entry point binds its own tensors, then its uniforms.

@group(0) @binding(0) var<storage, read> x: array<f32>;

// ---- column_sum. Bindings: x [R, N], out [N] (accumulated), dims.
struct ColumnDims { R: u32, N: u32 }
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> column_dims: ColumnDims;

@compute @workgroup_size(WG)
fn column_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  if (n >= column_dims.N) { return; }
  var sum = 0.0;
  for (var r = 0u; r < column_dims.R; r++) { sum += x[r * column_dims.N + n]; }
  out[n] += sum;
}

// ---- sum_squares. Bindings: x [n], partials (written at offset .. offset+parts), dims.
struct SquaresDims { n: u32, parts: u32, offset: u32 }
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> squares_dims: SquaresDims;

@compute @workgroup_size(WG)
fn sum_squares(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= squares_dims.parts) { return; }
  var sum = 0.0;
  for (var k = i; k < squares_dims.n; k += squares_dims.parts) { sum += x[k] * x[k]; }
  partials[squares_dims.offset + i] = sum;
}

// ---- sum_all (dispatch one workgroup). Bindings: x [n], total [1] (written), dims.
struct SumDims { n: u32 }
@group(0) @binding(1) var<storage, read_write> total: array<f32>;
@group(0) @binding(2) var<uniform> sum_dims: SumDims;

@compute @workgroup_size(1)
fn sum_all() {
  var sum = 0.0;
  for (var i = 0u; i < sum_dims.n; i++) { sum += x[i]; }
  total[0] = sum;
}
