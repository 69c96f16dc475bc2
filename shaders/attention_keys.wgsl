// Where the attention kernels find a key/value position (imported by attention.wgsl,
// attention_backward.wgsl and attention_backward_lse.wgsl). With OFFSETS (a forward that computed only the rows from some position
// on), sequence b's rows start at position rows[b], and key j < rows[b] is row rows[B + b] + j of `cache`;
// without it row i is position i. The importing shader declares rows (array<u32>), qkv and cache
// (array<f32>, rows of `stride` floats) and the constant OFFSETS.

// The position of row i of sequence b.
fn position(b: u32, i: u32) -> u32 {
  if (OFFSETS) { return rows[b] + i; }
  return i;
}

// Where key/value position j of sequence b (B sequences of Tq rows) lives: (1, its row of cache) before
// the sequence's start, else (0, its own row of qkv).
fn key_row(B: u32, Tq: u32, b: u32, j: u32) -> vec2<u32> {
  if (OFFSETS) {
    let s = rows[b];
    if (j < s) { return vec2<u32>(1u, rows[B + b] + j); }
    return vec2<u32>(0u, b * Tq + j - s);
  }
  return vec2<u32>(0u, b * Tq + j);
}

// Sequence b's rows of the key/value positions (key_row with the sequence's offsets read once, for
// a loop over its keys): its start and base (rows[b], rows[B + b] with OFFSETS) and its own first row.
struct SequenceKeys { start: u32, base: u32, own: u32 }

fn sequence_keys(B: u32, Tq: u32, b: u32) -> SequenceKeys {
  if (OFFSETS) { return SequenceKeys(rows[b], rows[B + b], b * Tq); }
  return SequenceKeys(0u, 0u, b * Tq);
}

// key_row(B, Tq, b, j) from sequence_keys(B, Tq, b).
fn key_row_in(s: SequenceKeys, j: u32) -> vec2<u32> {
  if (OFFSETS && j < s.start) { return vec2<u32>(1u, s.base + j); }
  return vec2<u32>(0u, s.own + j - s.start);
}

// Element `col + e` of key row r (from key_row).
fn kv(r: vec2<u32>, stride: u32, col: u32, e: u32) -> f32 {
  if (OFFSETS && r.x == 1u) { return cache[r.y * stride + col + e]; }
  return qkv[r.y * stride + col + e];
}
