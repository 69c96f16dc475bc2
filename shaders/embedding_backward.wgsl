// Embedding backward. Forward (shaders/embedding.wgsl): out[r] = wte[tokens[r]] + wpe[r % T].
//   dwte[v] += sum of dout[r] over rows r with tokens[r] = v
//   dwpe[p] += sum of dout[r] over rows r with r % T = p
// WGSL has no float atomics, and a token may appear on many rows, so rows are grouped on
// the CPU into a CSR list (engine/backward_ops.ts): the distinct tokens, and for each one the
// rows holding it in increasing order. One invocation owns one (distinct token, column) and
// adds its rows in that fixed order: no races, bit-reproducible results.
//
// Compile-time parameters: WG. Each entry point binds its own tensors, then its uniforms.

// csr layout (u32): [ tokens: U | starts: U+1 | rows: R ]; token u's rows are
// rows[starts[u] .. starts[u+1]).
struct Dims { R: u32, T: u32, C: u32, U: u32 }

@group(0) @binding(0) var<storage, read> dout: array<f32>;   // [R, C]

// ---- embedding_backward_tokens: gid.x = column, gid.y = distinct token.
// Bindings: dout, csr, dwte, dims.
@group(0) @binding(1) var<storage, read> csr: array<u32>;
@group(0) @binding(2) var<storage, read_write> dwte: array<f32>; // [V, C] accumulated
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn embedding_backward_tokens(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let u = gid.y;
  if (c >= dims.C || u >= dims.U) { return; }
  let starts = dims.U;
  let rows = 2u * dims.U + 1u;
  var sum = 0.0;
  for (var k = csr[starts + u]; k < csr[starts + u + 1u]; k++) {
    sum += dout[csr[rows + k] * dims.C + c];
  }
  let token = csr[u];
  dwte[token * dims.C + c] += sum;
}

// ---- embedding_backward_positions: gid.x = column, gid.y = position p < min(T, R).
// Bindings: dout, dwpe, dims2.
@group(0) @binding(1) var<storage, read_write> dwpe: array<f32>; // [P, C] accumulated
@group(0) @binding(2) var<uniform> dims2: Dims;

@compute @workgroup_size(WG)
fn embedding_backward_positions(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let p = gid.y;
  if (c >= dims2.C || p >= min(dims2.T, dims2.R)) { return; }
  var sum = 0.0;
  for (var r = p; r < dims2.R; r += dims2.T) { sum += dout[r * dims2.C + c]; }
  dwpe[p * dims2.C + c] += sum;
}
