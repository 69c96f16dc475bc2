// Virtual low-rank edits of the MLP output projection: each row of a batch gets its own edit's
// correction without the weights being written (engine/virtual_edits.ts). For a row r whose edit owns
// components c = first_r .. first_r + count_r - 1 (u_c a key direction, v_c a value change):
//
//   virtual_scores : scores[r, k] = key[r, :] . U[first_r + k, :]        (k < count_r, else 0)
//   virtual_apply  : out[r, j]   += sum_{k < count_r} scores[r, k] V[first_r + k, j]
//
// which is exactly what W += sum_c u_c v_c^T would add to key W at that row.
//
//   key : [R, F]; U : [C, F]; V : [C, D]; rows : [R] (first, count) u32 pairs; scores : [R, K], K = max count
//   out : [R, D], updated in place
//
// Compile-time parameter: WG, invocations per workgroup. Grids are 1-D over R*K (scores) and R*D
// (apply) invocations, spilling into y past the per-dimension limit (engine/backward_ops.ts
// elementwiseGrid). Each sum runs in a fixed order, so results are reproducible.

struct Dims { R: u32, C: u32, K: u32 }

// virtual_scores: C = F
@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read> key: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<vec2<u32>>;
@group(0) @binding(4) var<uniform> d_scores: Dims;

// virtual_apply: C = D
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> scores_in: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> rows_apply: array<vec2<u32>>;
@group(0) @binding(4) var<uniform> d_apply: Dims;

@compute @workgroup_size(WG)
fn virtual_scores(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let dm = d_scores;
  if (i >= dm.R * dm.K) { return; }
  let r = i / dm.K;
  let k = i % dm.K;
  let row = rows[r];
  var s = 0.0;
  if (k < row.y) {
    let a = r * dm.C;
    let b = (row.x + k) * dm.C;
    for (var j = 0u; j < dm.C; j++) { s += key[a + j] * U[b + j]; }
  }
  scores[i] = s;
}

@compute @workgroup_size(WG)
fn virtual_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let dm = d_apply;
  if (i >= dm.R * dm.C) { return; }
  let r = i / dm.C;
  let j = i % dm.C;
  let row = rows_apply[r];
  if (row.y == 0u) { return; }
  var s = 0.0;
  for (var k = 0u; k < row.y; k++) { s += scores_in[r * dm.K + k] * V[(row.x + k) * dm.C + j]; }
  out[i] = out[i] + s;
}
