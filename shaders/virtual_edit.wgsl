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
// KB scores of RB rows per invocation with keys and U read four values per access: on llvmpipe every
// storage access is a per-lane loop, and this ran FT-L's dense scores (16 edits' 128 columns, F = 512,
// 400 rows) 3x faster than one score per invocation of scalar reads (KB = 4, RB = 1), and RB = 4 rows
// of one edit, sharing their U loads, 1.8x faster again. Where the adapter reads textures (llvmpipe),
// the edits that are only a dense change skip these kernels: virtual_dense.wgsl, the same sums.
//
// Compile-time parameters: WG, invocations per workgroup; KB and RB (virtual_scores_vec4), scores and
// rows per invocation. Grids are 1-D over R*K (scores; ceil(R/RB)*ceil(K/KB) for the vec4 one) and R*D
// (apply) invocations, spilling into y past the per-dimension limit (engine/ops.ts grid1d).
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

// s + x.x u.x + x.y u.y + x.z u.z + x.w u.w, added one product at a time in that order (the scalar
// kernel's order over four consecutive values).
fn add_products(s: f32, x: vec4<f32>, u: vec4<f32>) -> f32 {
  return (((s + x.x * u.x) + x.y * u.y) + x.z * u.z) + x.w * u.w;
}

// Scores k0 .. k0+KB-1 of rows RB*q0 .. RB*q0 + RB - 1 (invocation q0 * ceil(K / KB) + k0 / KB). Rows
// of one edit (the same key rows U, as a prompt's tokens are) read each U texel once for all of them;
// rows of different edits are scored one after another. A row's scores past its keys_r are 0 (within a
// block that has some of its keys, their sums run on its last key row and are not kept).
@compute @workgroup_size(WG)
fn virtual_scores_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let dm = d_scores;
  let blocks = (dm.K + KB - 1u) / KB;
  let row_blocks = (dm.R + RB - 1u) / RB;
  if (i >= row_blocks * blocks) { return; }
  let r0 = (i / blocks) * RB;
  let k0 = (i % blocks) * KB;
  let C4 = dm.C / 4u;
  var s: array<array<f32, KB>, RB>;
  var row: array<vec4<u32>, RB>;
  var one_edit = true;
  for (var q = 0u; q < RB; q++) {
    row[q] = rows[min(r0 + q, dm.R - 1u)];
    one_edit = one_edit && row[q].x == row[0].x && row[q].y == row[0].y;
  }
  if (one_edit && k0 < row[0].y) {
    // One edit's rows: each U texel once for the block.
    var u_at: array<u32, KB>;
    for (var t = 0u; t < KB; t++) { u_at[t] = (row[0].x + min(k0 + t, row[0].y - 1u)) * C4; }
    for (var j = 0u; j < C4; j++) {
      var u: array<vec4<f32>, KB>;
      for (var t = 0u; t < KB; t++) { u[t] = U4[u_at[t] + j]; }
      for (var q = 0u; q < RB; q++) {
        let x = key4[min(r0 + q, dm.R - 1u) * C4 + j];
        for (var t = 0u; t < KB; t++) { s[q][t] = add_products(s[q][t], x, u[t]); }
      }
    }
  } else if (!one_edit) {
    for (var q = 0u; q < RB; q++) {
      if (k0 >= row[q].y) { continue; }
      var u_at: array<u32, KB>;
      for (var t = 0u; t < KB; t++) { u_at[t] = (row[q].x + min(k0 + t, row[q].y - 1u)) * C4; }
      let a = min(r0 + q, dm.R - 1u) * C4;
      for (var j = 0u; j < C4; j++) {
        let x = key4[a + j];
        for (var t = 0u; t < KB; t++) { s[q][t] = add_products(s[q][t], x, U4[u_at[t] + j]); }
      }
    }
  }
  // Past a row's keys (an unedited row, or a low-rank edit in a set with dense ones): zeros.
  for (var q = 0u; q < RB; q++) {
    let r = r0 + q;
    if (r >= dm.R) { break; }
    for (var t = 0u; t < KB; t++) {
      if (k0 + t < dm.K) { scores[r * dm.K + k0 + t] = select(0.0, s[q][t], k0 + t < row[q].y); }
    }
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
