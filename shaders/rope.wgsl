// Rotary position embedding (Su et al., "RoFormer", 2021), in place on the fused q|k|v rows, one
// invocation per (row, head, rotated pair):
//
//   angle = t * inv_freq[i],  t = r % T the row's position (prompts are right-padded from 0), or
//           t = starts[r / T] + r % T with OFFSETS (rows from a position on, after a cached prefix)
//   (x0, x1) <- (x0 cos(angle) - x1 sin(angle) * sign,  x1 cos(angle) + x0 sin(angle) * sign)
//
// The pair is (2i, 2i+1) when INTERLEAVED (GPT-J's rotate_every_two), else (i, i + ROT/2) (NeoX,
// Llama and Gemma's rotate_half), for i < ROT/2 over the first ROT dims of each head; the others
// pass through (partial rotary). sign = -1 rotates back: the backward pass of a rotation is its
// inverse applied to the gradient.
//
//   qkv      : [R, (H + 2 Hkv) * HD], q heads, then k heads, then v heads (v is not rotated)
//   inv_freq : [ROT / 2]
//   starts   : [R / T] u32, each sequence's first position (OFFSETS)
//
// Compile-time parameters: WG (invocations per workgroup), INTERLEAVED, OFFSETS.

struct Dims { R: u32, T: u32, H: u32, Hkv: u32, HD: u32, ROT: u32, sign: f32 }

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
@group(0) @binding(3) var<uniform> d: Dims;

// grid: ceil(R * (H + Hkv) * ROT/2 / WG) workgroups, split over x and y past the per-dimension limit.
@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let pairs = d.ROT / 2u;
  let heads = d.H + d.Hkv;           // q and k heads are contiguous: k head j is column (H + j) * HD
  let inv = (wid.y * nwg.x + wid.x) * WG + lid;
  if (inv >= d.R * heads * pairs) { return; }
  let i = inv % pairs;
  let head = (inv / pairs) % heads;
  let r = inv / (pairs * heads);
  var t = r % d.T;
  if (OFFSETS) { t += starts[r / d.T]; }
  let angle = f32(t) * inv_freq[i];
  let c = cos(angle);
  let s = sin(angle) * d.sign;
  let base = r * (d.H + 2u * d.Hkv) * d.HD + head * d.HD;
  var a = base + i;
  var b = base + i + pairs;
  if (INTERLEAVED) {
    a = base + 2u * i;
    b = a + 1u;
  }
  let x0 = qkv[a];
  let x1 = qkv[b];
  qkv[a] = x0 * c - x1 * s;
  qkv[b] = x1 * c + x0 * s;
}
