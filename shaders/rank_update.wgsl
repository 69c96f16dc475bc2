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
// (engine/ops.ts grid1d).
//
// import: half.wgsl

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

// rank_update_half: the same update of a weight kept in 16 bits (two values per u32 word, element e in
// the low half of word e/2 when e is even), one invocation per word, so no two invocations write one
// word. Each value is widened (half.wgsl), updated in f32 and rounded back: f16 by pack2x16float, bf16 to nearest
// (ties to even) by integer arithmetic on its f32 bits. Compile-time parameter HALF_BF16.
@group(0) @binding(0) var<storage, read_write> W16: array<u32>;
@group(0) @binding(1) var<storage, read> U16: array<f32>;
@group(0) @binding(2) var<storage, read> V16: array<f32>;
@group(0) @binding(3) var<uniform> dims16: Dims;

fn bf16_bits(v: f32) -> u32 {
  let u = bitcast<u32>(v);
  return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

fn updated(e: u32, old: f32) -> f32 {
  let m = e / dims16.N;
  let n = e % dims16.N;
  var sum = 0.0;
  for (var r = 0u; r < dims16.rank; r++) { sum += U16[m * dims16.rank + r] * V16[r * dims16.N + n]; }
  return old + sum;
}

@compute @workgroup_size(WG)
fn rank_update_half(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let w = gid.x + gid.y * groups.x * WG;
  let count = dims16.M * dims16.N;
  if (2u * w >= count) { return; }
  let word = W16[w];
  let lo = updated(2u * w, half_value(word, false));
  var hi = half_value(word, true); // a last odd element's partner is padding: left as it is
  if (2u * w + 1u < count) { hi = updated(2u * w + 1u, hi); }
  if (HALF_BF16) {
    W16[w] = bf16_bits(lo) | (bf16_bits(hi) << 16u);
  } else {
    W16[w] = pack2x16float(vec2<f32>(lo, hi));
  }
}
