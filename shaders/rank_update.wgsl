// Low-rank weight update: the closed-form edits of ROME, R-ROME, MEMIT and EMMET.
//
//   W[M,N] += U[M,RANK] V[RANK,N]
//
// W is a Conv1D weight stored [in, out] (mlp.c_proj: [f, d]), so the papers' update of
// W_math = W^T, W_math += r u^T, is stored as W += u (x) r: U holds the keys' directions u
// (columns, one per edited fact) and V the value changes r (rows). ROME is RANK = 1; a MEMIT
// or EMMET batch of n facts is RANK = n. The rank is a uniform (it changes with every batch);
// each invocation updates one element of W, summing RANK products in a fixed order, so an
// update is bit-reproducible.
//
// Compile-time parameter: WG, invocations per workgroup (64: elementwise, see engine/ops.ts).
// Grid: 1-D over M*N elements, spilling into y past the per-dimension limit
// (engine/backward_ops.ts elementwiseGrid).

struct Dims { M: u32, N: u32, rank: u32 }

@group(0) @binding(0) var<storage, read_write> W: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(WG)
fn rank_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= dims.M * dims.N) { return; }
  let m = i / dims.N;
  let n = i % dims.N;
  var sum = 0.0;
  for (var r = 0u; r < dims.rank; r++) {
    sum += U[m * dims.rank + r] * V[r * dims.N + n];
  }
  W[i] = W[i] + sum;
}
