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
// cos and sin are computed here (sin_cos) rather than by WGSL's builtins, whose accuracy the spec leaves
// at 2^-11 absolute within [-pi, pi] and nothing outside: Chromium's SwiftShader is 2e-4 off at
// angle 6, which moved a Qwen2 model's probabilities by 1e-4 against Mesa's llvmpipe.
//
// Compile-time parameters: WG (invocations per workgroup), INTERLEAVED, OFFSETS.

struct Dims { R: u32, T: u32, H: u32, Hkv: u32, HD: u32, ROT: u32, sign: f32 }

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
@group(0) @binding(3) var<uniform> d: Dims;

// (sin x, cos x) within 2e-6 of float64's for 0 <= x < 4096 (angles t * inv_freq, t a position; checked
// in tests/family_ops_test.ts), slowly less exact beyond: x is reduced to r in [-pi/4, pi/4] by
// k = round(x * 2/pi) quarter turns (Cody-Waite: pi/2 split in three parts, the first of 8 significant
// bits so that k * P1 is exact for k < 2^16), then Cephes' sinf/cosf minimax polynomials.
fn sin_cos(x: f32) -> vec2<f32> {
  let k = round(x * 0.63661977236758134);
  let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
  let z = r * r;
  let s = r + r * z * ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1);
  let c = 1.0 - 0.5 * z + z * z * ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2);
  // sin(r + k pi/2) and cos(r + k pi/2) for k mod 4 = 0, 1, 2, 3.
  switch (i32(k) & 3) {
    case 0: { return vec2(s, c); }
    case 1: { return vec2(c, -s); }
    case 2: { return vec2(-s, -c); }
    default: { return vec2(-c, s); }
  }
}

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
  let sc = sin_cos(angle);
  let c = sc.y;
  let s = sc.x * d.sign;
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
