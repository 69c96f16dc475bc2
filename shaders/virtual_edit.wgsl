// Virtual edits of the MLP output projection: each row of a batch gets its own edit's correction
// without the weights being written (engine/virtual_edits.ts). Row r's edit owns `keys_r` key rows
// from first_key_r: its `low_r` low-rank components (u_c a key direction, v_c a value change, v_c at
// value row first_value_r + c), then, where keys_r > low_r, a dense change as D rows u_j (column j of
// the change; its value would be the unit vector e_j, so its score is the correction's column j):
//
//   virtual_scores : scores[r, k] = key[r, :] . U[first_key_r + k, :]          (k < keys_r, else 0)
//   virtual_apply  : out[r, j]   += sum_{c < low_r} scores[r, c] V[first_value_r + c, j]
//                                   + scores[r, low_r + j]                     (if dense)
//
// which is exactly what W += sum_c u_c v_c^T (+ the dense change) would add to key W at that row. A
// dense change read as D components with identity values would cost R*D*D more and a [D, D] upload.
//
//   key : [R, F]; U : [C, F]; V : [L, D]; rows : [R] (first_key, keys, first_value, low) u32
//   scores : [R, K], K = max keys_r; out : [R, D], updated in place
//
// Compile-time parameter: WG, invocations per workgroup. Grids are 1-D over R*K (scores) and R*D
// (apply) invocations, spilling into y past the per-dimension limit (engine/backward_ops.ts
// elementwiseGrid). Each sum runs in a fixed order, so results are reproducible.

struct Dims { R: u32, C: u32, K: u32 }

// virtual_scores: C = F
@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read> key: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;
@group(0) @binding(4) var<uniform> d_scores: Dims;

// virtual_apply: C = D
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> scores_in: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> rows_apply: array<vec4<u32>>;
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
  for (var c = 0u; c < row.w; c++) { s += scores_in[r * dm.K + c] * V[(row.z + c) * dm.C + j]; }
  if (row.y > row.w) { s += scores_in[r * dm.K + row.w + j]; }
  out[i] = out[i] + s;
}
