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
// virtual_scores_vec4 computes the same scores (the same sums in the same order) where F % 4 == 0,
// KB of a row's scores per invocation with its key and U read four values per access: on llvmpipe
// every storage access is a per-lane loop, and this ran FT-L's dense scores (16 edits' 128 columns,
// F = 512, 400 rows) 3x faster than one score per invocation of scalar reads.
//
// Compile-time parameters: WG, invocations per workgroup; KB (virtual_scores_vec4), scores per
// invocation. Grids are 1-D over R*K (scores; R*ceil(K/KB) for the vec4 one) and R*D (apply)
// invocations, spilling into y past the per-dimension limit (engine/ops.ts grid1d).
// Each sum runs in a fixed order, so results are reproducible.

struct Dims { R: u32, C: u32, K: u32 }

// virtual_scores: C = F
@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read> key: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;
@group(0) @binding(4) var<uniform> d_scores: Dims;

// virtual_scores_vec4: key and U four values per element (C = F, a multiple of 4)
@group(0) @binding(1) var<storage, read> key4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> U4: array<vec4<f32>>;

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

// Scores k0 .. k0+KB-1 of row r (invocation r * ceil(K / KB) + k0 / KB); a row's scores past its
// keys_r are 0 (within a block that has some of its keys, their sums run on its last key row and
// are not kept).
@compute @workgroup_size(WG)
fn virtual_scores_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let dm = d_scores;
  let blocks = (dm.K + KB - 1u) / KB;
  if (i >= dm.R * blocks) { return; }
  let r = i / blocks;
  let k0 = (i % blocks) * KB;
  let row = rows[r];
  if (k0 >= row.y) {
    // Past this row's keys (an unedited row, or a low-rank edit in a set with dense ones): zeros.
    for (var t = 0u; t < KB; t++) { if (k0 + t < dm.K) { scores[r * dm.K + k0 + t] = 0.0; } }
    return;
  }
  let C4 = dm.C / 4u;
  var u_at: array<u32, KB>;
  for (var t = 0u; t < KB; t++) { u_at[t] = (row.x + min(k0 + t, max(row.y, 1u) - 1u)) * C4; }
  var s: array<f32, KB>;
  let a = r * C4;
  for (var j = 0u; j < C4; j++) {
    let x = key4[a + j];
    for (var t = 0u; t < KB; t++) {
      let u = U4[u_at[t] + j];
      s[t] += x.x * u.x;
      s[t] += x.y * u.y;
      s[t] += x.z * u.z;
      s[t] += x.w * u.w;
    }
  }
  for (var t = 0u; t < KB; t++) {
    if (k0 + t < dm.K) { scores[r * dm.K + k0 + t] = select(0.0, s[t], k0 + t < row.y); }
  }
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
