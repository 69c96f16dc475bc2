// Token + position embedding, PER output values per invocation (elements.wgsl):
//
//   out[r, c] = wte[tokens[r] - row_start, c] * scale + wpe[p(r), c]   (wpe only WITH_POSITIONS)
//       for rows r whose token lies in [row_start, row_start + wte_rows); other rows are untouched;
//       position p(r) = r % T, or with OFFSETS starts[r / T] + r % T (a suffix forward's rows: generation
//       embeds only each sequence's newest tokens, at their positions)
//
//   tokens : [R] u32, rows of a sequence are b*T + t
//   wte    : [wte_rows, C], rows row_start .. row_start + wte_rows - 1 of the token embedding
//            (a vocabulary larger than one storage binding is bound one row chunk at a time)
//   wpe    : [nPositions, C], nPositions >= T (learned positions; rotary models bind a placeholder)
//   scale  : 1, or sqrt(C) for Gemma's scaled embeddings
//   out    : [R, C]
//   starts : [R / T] u32, each sequence's first position (OFFSETS only)
//
// embed_half: the same with wte kept in its checkpoint's 16-bit format (f16/bf16 words, decoded by
// half.wgsl); a chunk of 16-bit rows starts on a whole word (engine/model.ts splits them so).
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   WG, PER        : invocations per workgroup, values per invocation (elements.wgsl)
//   WITH_POSITIONS : add wpe
//   OFFSETS        : sequence b's rows start at position starts[b]
//   HALF_BF16      : (embed_half) wte holds bf16, else f16
//
// import: half.wgsl
// import: elements.wgsl

struct Dims { R: u32, T: u32, C: u32, row_start: u32, wte_rows: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(1) var<storage, read> wte: array<f32>;
@group(0) @binding(2) var<storage, read> wpe: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> starts: array<u32>;
@group(0) @binding(5) var<uniform> d: Dims;

// wte as packed 16-bit pairs (embed_half binds this instead of wte).
@group(0) @binding(1) var<storage, read> wte16: array<u32>;

// Output element i = r*C + c and the element of the wte chunk it reads, or none (a token outside the chunk).
struct Site { i: u32, r: u32, e: u32, inside: bool }

// Element i < R*C of the output (grid: ceil(R*C / (WG*PER)) workgroups, elements.wgsl).
fn site(i: u32) -> Site {
  let r = i / d.C;
  // token < row_start wraps around to a huge u32, so one comparison rejects both sides.
  let local_row = tokens[r] - d.row_start;
  return Site(i, r, local_row * d.C + i % d.C, local_row < d.wte_rows);
}

fn write(s: Site, value: f32) {
  var v = value * d.scale;
  if (WITH_POSITIONS) {
    var position = s.r % d.T;
    if (OFFSETS) { position += starts[s.r / d.T]; }
    v += wpe[position * d.C + s.i % d.C];
  }
  out[s.i] = v;
}

@compute @workgroup_size(WG)
fn embed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.R * d.C) { break; }
    let s = site(i);
    if (s.inside) { write(s, wte[s.e]); }
  }
}

@compute @workgroup_size(WG)
fn embed_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = element_index(wid, nwg, lid, k);
    if (i >= d.R * d.C) { break; }
    let s = site(i);
    if (s.inside) { write(s, half_value(wte16[s.e >> 1u], (s.e & 1u) == 1u)); }
  }
}
