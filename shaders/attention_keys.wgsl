// Where the attention backward kernels find a key/value position (imported by attention_backward.wgsl and
// attention_backward_lse.wgsl). With OFFSETS (a forward that computed only the rows from some position
// on), sequence b's rows start at position rows[b], and key j < rows[b] is row rows[B + b] + j of `cache`;
// without it row i is position i. The importing shader declares rows (array<u32>), qkv and cache
// (array<f32>, rows of `stride` floats) and the constant OFFSETS.

// The position of row i of sequence b.
fn position(b: u32, i: u32) -> u32 {
  if (OFFSETS) { return rows[b] + i; }
  return i;
}

// Element e of column block `col` of key position j of sequence b (B sequences of Tq rows): a row of
// cache before the sequence's start, else one of its own rows of qkv.
fn kv(B: u32, Tq: u32, stride: u32, b: u32, j: u32, col: u32, e: u32) -> f32 {
  if (OFFSETS) {
    let s = rows[b];
    if (j < s) { return cache[(rows[B + b] + j) * stride + col + e]; }
    return qkv[(b * Tq + j - s) * stride + col + e];
  }
  return qkv[(b * Tq + j) * stride + col + e];
}
