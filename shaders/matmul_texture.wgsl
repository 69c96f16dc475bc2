// Matrix multiply with the B operand (a model weight) read from an rgba32float storage texture:
// C = act(alpha * A op(B) + bias + beta * C), act = gelu_new or none.
//
// Why: on llvmpipe every storage-buffer load is a bounds-checked per-lane loop, while a read-only
// storage-texture load is inlined, so the weight operand is read much faster (bench/kernels.ts).
// engine/gpu.ts keeps the texture as a mirror of the weight's buffer and refreshes it (in stream
// order) whenever a kernel, copy or write has changed the buffer, so edits and optimiser steps stay
// visible. Real GPUs use the buffer kernels of matmul.wgsl instead.
//
// The texture holds B as stored, rows x cols floats, texel (c, r) = B[r, 4c .. 4c+3]:
//   matmul_texture_n : op(B) = B   stored [K,N] (Conv1D forward x W), texel (n/4, k); needs N % 4 == 0
//   matmul_texture_n_at, matmul_texture_kt_at: the same with A read from a texture mirror instead of
//                      uniform windows
//   matmul_texture_k : op(B) = B^T stored [N,K] (tied unembedding h wte^T), texel (k/4, n). A
//                      vocabulary taller than the texture limit is split into row chunks, one
//                      dispatch each: n_offset is the chunk's first row (for the bias).
//   matmul_texture_kt: op(B) = B^T stored [N,K], from a transposed mirror: texel (n/4, k), the layout
//                      of matmul_texture_n's B, so it runs matmul_texture_n's block on that mirror;
//                      any N (the mirror's last texel of a row is padded with zeros, never stored).
//   matmul_texture_tn: op(A) = A^T and op(B) = B, both stored [K, .] and both mirrored (weight
//                      gradients X^T dY of the backward pass, whose operands are activations):
//                      see that entry point.
//   C[c_offset + m*ldc + n].
//
// Every entry point sums C[m, n] over k in order into one accumulator, as matmul.wgsl's register
// kernels do, so a product gives the same bits whichever of them runs it: matmul_texture_kt (a
// transposed mirror) and matmul_texture_k (the stored mirror) and matmul_vec4_k (no mirror, when the
// mirrors' budget is spent) agree, and so does matmul_texture_n on a weight stored transposed.
// (matmul_texture_kt and _k used to keep four partial sums per element, one per k of a texel, added
// at the end: 4x the accumulators of a block, which spilled on llvmpipe and ran the backward's
// products 20-30% slower than the forward's on the same shapes; bench/RESULTS.md.)
//
// This file holds what the entry points share: the bindings of B, the bias, C and the dimensions, the
// epilogue and the register block (block_n), which finds A's rows through block_rows(m0) and reads
// them through a_rows(rows, k4). The entry points live in the files that import it, each with its
// own A binding at @binding(0) and those two functions (an entry point may not use two resources at
// one binding): matmul_texture_window.wgsl (A in uniform windows: matmul_texture_n, _k, _kt), and
// matmul_texture_at.wgsl (matmul_texture_n_at, _kt_at, _tn) and virtual_dense.wgsl (FT-L's virtual
// edits), both with A from a texture mirror (matmul_texture_a.wgsl).
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   K4   : K / 4 (K is a multiple of 4)
//   AW   : rows of A in a uniform window (matmul_texture_window.wgsl; 1 where A is a texture)
//   TM   : rows of C per invocation
//   TN4  : vec4 column groups per invocation (matmul_texture_n, _kt: 4*TN4 columns; matmul_texture_k:
//          TN4 columns)
//   WG   : invocations per workgroup, all along columns. Neighbouring invocations read neighbouring
//          texels: invocation l of workgroup w owns column group (w*TN4 + j)*WG + l for j < TN4.
//   GELU : apply gelu_new in the epilogue
//
// import: activation.wgsl

struct Dims {
  N: u32, bias_stride: u32, alpha: f32, beta: f32,
  ldc: u32, c_offset: u32, n_offset: u32, a_row0: u32,
  m_begin: u32, m_end: u32, K: u32,
}

@group(0) @binding(1) var Bt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<uniform> d: Dims;

// Column n's bias (bias[0] of a zero placeholder when bias_stride = 0).
fn bias_of(n: u32) -> f32 {
  return bias[(d.n_offset + n) * d.bias_stride];
}

fn store(m: u32, n: u32, ab: f32) {
  store_biased(m, n, ab, bias_of(n));
}

// store with column n's bias `b` already read (a block reads each of its columns' once).
fn store_biased(m: u32, n: u32, ab: f32, b: f32) {
  let idx = d.c_offset + m * d.ldc + n;
  var v = d.alpha * ab + b;
  if (d.beta != 0.0) { v += d.beta * C[idx]; }
  if (GELU) { v = gelu_new(v); }
  C[idx] = v;
}

// Stores the block of rows m0.. and column groups (wy*TN4 + j)*WG + ly (4 columns each) that acc holds,
// acc[i*TN4 + j] = C[m0+i, 4*((wy*TN4 + j)*WG + ly) .. +3], skipping rows at or past m_end and columns
// at or past N (the clamped duplicates, and the padding of a last group of fewer than 4 columns:
// matmul_texture_kt on a transposed mirror of N % 4 != 0 rows).
fn store_block(m0: u32, wy: u32, ly: u32, acc: ptr<function, array<vec4<f32>, TM * TN4>>) {
  // Each column's bias once per block, not once per row (on llvmpipe every storage load is a per-lane
  // loop); a column past N reads the last one's, never stored.
  var b: array<vec4<f32>, TN4>;
  for (var j = 0u; j < TN4; j++) {
    let n = 4u * min((wy * TN4 + j) * WG + ly, column_group_count() - 1u);
    b[j] = vec4<f32>(
      bias_of(n),
      bias_of(min(n + 1u, d.N - 1u)),
      bias_of(min(n + 2u, d.N - 1u)),
      bias_of(min(n + 3u, d.N - 1u)),
    );
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      let n = 4u * ((wy * TN4 + j) * WG + ly);
      if (m0 + i < d.m_end && n < d.N) {
        let v = (*acc)[i * TN4 + j];
        for (var c = 0u; c < 4u; c++) {
          if (n + c < d.N) { store_biased(m0 + i, n + c, v[c], b[j][c]); }
        }
      }
    }
  }
}

// Column groups of 4 (the last may hold fewer than 4 columns).
fn column_group_count() -> u32 {
  return (d.N + 3u) / 4u;
}

// The column groups of this invocation's block, col4[j] = (wy*TN4 + j)*WG + ly (clamped to the last).
fn column_groups(wy: u32, ly: u32) -> array<u32, TN4> {
  var col4: array<u32, TN4>;
  for (var j = 0u; j < TN4; j++) { col4[j] = min((wy * TN4 + j) * WG + ly, column_group_count() - 1u); }
  return col4;
}

// The block of matmul_texture_n (and _n_at): acc[i*TN4 + j] = C[rows[i], 4*col4[j] .. +3] before the
// epilogue, k in order (like matmul.wgsl's kernels), A from the importing file's a_rows: the same sums
// whichever binding A comes from. One function owns the accumulators from start to end: llvmpipe
// compiled a k-step helper that updated them through a pointer 10-25% slower, and larger blocks slower
// still (bench/RESULTS.md, seventh session).
//
// Each accumulator takes the four k of a step in one statement, so it is loaded and stored once a step
// instead of four times (the block's accumulators do not fit llvmpipe's registers): the same additions
// in the same order, so the same bits. The rows go in two loops of half the block each: the compiler
// unrolls a loop nest only up to a size, and a nest over all 8 rows x 4 column groups x 4 k stayed a
// loop, whose run-time indices put the accumulators in memory (3x slower; bench/RESULTS.md).
fn product_n(rows: array<u32, TM>, col4: array<u32, TN4>) -> array<vec4<f32>, TM * TN4> {
  var acc: array<vec4<f32>, TM * TN4>;
  for (var k4 = 0u; k4 < K4; k4++) {
    let a = a_rows(rows, k4);
    // The four k of this vec4 as four arrays: one array of vec4 indexed by k would index the vec4
    // components at run time.
    var b0: array<vec4<f32>, TN4>;
    var b1: array<vec4<f32>, TN4>;
    var b2: array<vec4<f32>, TN4>;
    var b3: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) {
      b0[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4));
      b1[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 1u));
      b2[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 2u));
      b3[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 3u));
    }
    for (var i = 0u; i < TM / 2u; i++) {
      for (var j = 0u; j < TN4; j++) {
        acc[i * TN4 + j] = (((acc[i * TN4 + j] + a[i].x * b0[j]) + a[i].y * b1[j]) + a[i].z * b2[j]) + a[i].w * b3[j];
      }
    }
    for (var i = TM / 2u; i < TM; i++) {
      for (var j = 0u; j < TN4; j++) {
        acc[i * TN4 + j] = (((acc[i * TN4 + j] + a[i].x * b0[j]) + a[i].y * b1[j]) + a[i].z * b2[j]) + a[i].w * b3[j];
      }
    }
  }
  return acc;
}

// The whole invocation of matmul_texture_n, _n_at, _kt and _kt_at: the block of rows from m0 and
// column groups of lane ly of workgroup column wy, A's rows from the importing file's block_rows (its
// binding's addressing). Grid: x = ceil((m_end - m_begin) / TM), y = ceil(N / (4*TN4*WG)).
fn block_n(wid: vec3<u32>, lid: vec3<u32>) {
  let m0 = d.m_begin + wid.x * TM;
  var acc = product_n(block_rows(m0), column_groups(wid.y, lid.y));
  store_block(m0, wid.y, lid.y, &acc);
}
