// Token + position embedding, one invocation per output value:
//
//   out[r, c] = wte[tokens[r] - row_start, c] * scale + wpe[r % T, c]   (wpe only WITH_POSITIONS)
//       for rows r whose token lies in [row_start, row_start + wte_rows); other rows are untouched.
//
//   tokens : [R] u32, rows of a sequence are b*T + t
//   wte    : [wte_rows, C], rows row_start .. row_start + wte_rows - 1 of the token embedding
//            (a vocabulary larger than one storage binding is bound one row chunk at a time)
//   wpe    : [nPositions, C], nPositions >= T (learned positions; rotary models bind a placeholder)
//   scale  : 1, or sqrt(C) for Gemma's scaled embeddings
//   out    : [R, C]
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG             : invocations per workgroup
//   WITH_POSITIONS : add wpe

struct Dims { R: u32, T: u32, C: u32, row_start: u32, wte_rows: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(1) var<storage, read> wte: array<f32>;
@group(0) @binding(2) var<storage, read> wpe: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> d: Dims;

// grid: ceil(R*C / WG) workgroups, split over x and y when over the per-dimension limit.
@compute @workgroup_size(WG)
fn embed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= d.R * d.C) { return; }
  let r = i / d.C;
  let c = i % d.C;
  let token = tokens[r];
  // token < row_start wraps around to a huge u32, so one comparison rejects both sides.
  let local_row = token - d.row_start;
  if (local_row >= d.wte_rows) { return; }
  var v = wte[local_row * d.C + c] * d.scale;
  if (WITH_POSITIONS) { v += wpe[(r % d.T) * d.C + c]; }
  out[i] = v;
}
