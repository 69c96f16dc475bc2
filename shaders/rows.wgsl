// Row operations for interventions (patching, noising, zeroing, capturing, scaling), one dispatch
// for a whole list of entries. For each entry e and column c < C:
//
//   dst[e.dst, c] = e.keep * dst[e.dst, c] + e.take * src[e.src, c]
//
//   dst, src : [rows, C]
//   entries  : [n_entries] RowEntry; dst rows are distinct (each value is written by one invocation)
//
// A term whose factor is exactly 0 is not read, so copy (keep 0, take 1) and zero (keep 0, take 0)
// are exact even over inf/NaN garbage in the overwritten row.
//
// Entry points:
//   row_ops          : src is its own buffer
//   row_ops_in_place : src is dst itself (rows copied within one buffer; the host checks that no
//                      entry's src row is another entry's dst row). A separate entry point because
//                      WebGPU forbids binding one buffer as both read and read_write.
//   row_ops_ordered  : src is its own buffer and dst rows repeat (a backward pass's scatter-adds: the
//                      many prompts of one v* request add into its delta's gradient): each dst row's
//                      entries, in list order, are one run, applied one after another by the same
//                      invocation, the float operations of one row_ops dispatch per entry.
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG : invocations per workgroup, along columns

struct RowEntry { dst: u32, src: u32, keep: f32, take: f32 }
struct Dims { C: u32 }

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> entries: array<RowEntry>;
@group(0) @binding(3) var<uniform> d: Dims;

@group(0) @binding(1) var<storage, read> entries_in_place: array<RowEntry>;
@group(0) @binding(2) var<uniform> d_in_place: Dims;

// grid: x = ceil(C / WG) column blocks, y = one per entry.
@compute @workgroup_size(WG)
fn row_ops(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= d.C) { return; }
  let e = entries[gid.y];
  let at = e.dst * d.C + c;
  var v = 0.0;
  if (e.take != 0.0) { v = e.take * src[e.src * d.C + c]; }
  if (e.keep != 0.0) { v += e.keep * dst[at]; }
  dst[at] = v;
}

// row_ops four values per access (C % 4 == 0; grid x over C / 4): on llvmpipe every storage access is a
// per-lane loop. The same values.
@group(0) @binding(0) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn row_ops_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let C4 = d.C / 4u;
  let c = gid.x;
  if (c >= C4) { return; }
  let e = entries[gid.y];
  let at = e.dst * C4 + c;
  var v = vec4<f32>(0.0);
  if (e.take != 0.0) { v = e.take * src4[e.src * C4 + c]; }
  if (e.keep != 0.0) { v += e.keep * dst4[at]; }
  dst4[at] = v;
}

@compute @workgroup_size(WG)
fn row_ops_in_place(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= d_in_place.C) { return; }
  let e = entries_in_place[gid.y];
  let at = e.dst * d_in_place.C + c;
  var v = 0.0;
  if (e.take != 0.0) { v = e.take * dst[e.src * d_in_place.C + c]; }
  if (e.keep != 0.0) { v += e.keep * dst[at]; }
  dst[at] = v;
}

struct RowRun { dst: u32, first: u32, count: u32, unused: u32 }

@group(0) @binding(2) var<storage, read> runs: array<RowRun>;
@group(0) @binding(3) var<storage, read> run_entries: array<RowEntry>; // .dst unused: the run's
@group(0) @binding(4) var<uniform> d_ordered: Dims;

// grid: x = ceil(C / WG) column blocks, y = one per run (distinct dst row).
@compute @workgroup_size(WG)
fn row_ops_ordered(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= d_ordered.C) { return; }
  let run = runs[gid.y];
  let at = run.dst * d_ordered.C + c;
  var v = dst[at];
  for (var i = 0u; i < run.count; i++) {
    let e = run_entries[run.first + i];
    var next = 0.0;
    if (e.take != 0.0) { next = e.take * src[e.src * d_ordered.C + c]; }
    if (e.keep != 0.0) { next += e.keep * v; }
    v = next;
  }
  dst[at] = v;
}
