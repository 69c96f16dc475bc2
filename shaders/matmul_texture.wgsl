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
//   matmul_texture_kt: op(B) = B^T stored [N,K], from a transposed mirror: texel (n/4, k), like
//                      matmul_texture_n; the same bits as matmul_texture_k (see that entry point).
//   matmul_texture_tn: op(A) = A^T and op(B) = B, both stored [K, .] and both mirrored (weight
//                      gradients X^T dY of the backward pass, whose operands are activations):
//                      see that entry point.
//   C[c_offset + m*ldc + n].
//
// This file holds what the entry points share: the bindings of B, the bias, C and the dimensions, the
// epilogue and the register blocks (block_n, block_kt), which find A's rows through block_rows(m0)
// and read them through a_rows(rows, k4). The entry points live in two files that import it, each
// with its own A binding at @binding(0) and those two functions (an entry point may not use two
// resources at one binding): matmul_texture_window.wgsl (A in uniform windows: matmul_texture_n, _k,
// _kt) and matmul_texture_at.wgsl (A from a texture mirror: matmul_texture_n_at, _kt_at, _tn).
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   K4   : K / 4 (K is a multiple of 4)
//   AW   : rows of A in a uniform window (matmul_texture_window.wgsl; 1 where A is a texture)
//   TM   : rows of C per invocation
//   TN4  : vec4 column groups per invocation (matmul_texture_n, _kt: 4*TN4 columns; matmul_texture_k:
//          TN4 columns, each as four partial sums)
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
// past N (the clamped duplicates).
fn store_block(m0: u32, wy: u32, ly: u32, acc: ptr<function, array<vec4<f32>, TM * TN4>>) {
  // Each column's bias once per block, not once per row (on llvmpipe every storage load is a per-lane
  // loop); a column past N reads the last one's, never stored.
  var b: array<vec4<f32>, TN4>;
  for (var j = 0u; j < TN4; j++) {
    let n = min(4u * ((wy * TN4 + j) * WG + ly), d.N - 4u);
    b[j] = vec4<f32>(bias_of(n), bias_of(n + 1u), bias_of(n + 2u), bias_of(n + 3u));
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      let n = 4u * ((wy * TN4 + j) * WG + ly);
      if (m0 + i < d.m_end && n < d.N) {
        let v = (*acc)[i * TN4 + j];
        for (var c = 0u; c < 4u; c++) { store_biased(m0 + i, n + c, v[c], b[j][c]); }
      }
    }
  }
}

// The column groups of this invocation's block, col4[j] = (wy*TN4 + j)*WG + ly (clamped to the last).
fn column_groups(wy: u32, ly: u32) -> array<u32, TN4> {
  var col4: array<u32, TN4>;
  for (var j = 0u; j < TN4; j++) { col4[j] = min((wy * TN4 + j) * WG + ly, d.N / 4u - 1u); }
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

// op(B) = B^T with B stored [N,K], read from its transposed mirror (engine/gpu.ts mirror() with
// `transposed`: texel (n/4, k) = B[n .. n+3, k], like matmul_texture_n's B); needs N % 4 == 0.
// The same sums as matmul_texture_k, bit for bit: each C[m, n] is four partial sums, partial c
// adding A[m, 4*k4 + c] * B[n, 4*k4 + c] for k4 in order, finished by the same dot with 1.0. Here
// partial c of the 4 columns of a texel is one vec4, acc[4*(i*TN4 + j) + c], so neighbouring lanes
// read neighbouring texels of a row (matmul_texture_k's lanes read texels of different rows), at
// 4x the accumulators of matmul_texture_n for the same block.
//
// The block of matmul_texture_kt (and _kt_at): acc[4*(i*TN4 + j) + c] = the sum over k4 in order of
// a[i][c] * B^T[4*k4 + c, 4*col4[j] .. +3], A and the accumulators as in product_n.
fn product_kt(rows: array<u32, TM>, col4: array<u32, TN4>) -> array<vec4<f32>, 4u * TM * TN4> {
  var acc: array<vec4<f32>, 4u * TM * TN4>;
  for (var k4 = 0u; k4 < K4; k4++) {
    let a = a_rows(rows, k4);
    var bk: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4)); }
    for (var i = 0u; i < TM; i++) { for (var j = 0u; j < TN4; j++) { acc[4u * (i * TN4 + j)] += a[i].x * bk[j]; } }
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 1u)); }
    for (var i = 0u; i < TM; i++) { for (var j = 0u; j < TN4; j++) { acc[4u * (i * TN4 + j) + 1u] += a[i].y * bk[j]; } }
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 2u)); }
    for (var i = 0u; i < TM; i++) { for (var j = 0u; j < TN4; j++) { acc[4u * (i * TN4 + j) + 2u] += a[i].z * bk[j]; } }
    for (var j = 0u; j < TN4; j++) { bk[j] = textureLoad(Bt, vec2<u32>(col4[j], 4u * k4 + 3u)); }
    for (var i = 0u; i < TM; i++) { for (var j = 0u; j < TN4; j++) { acc[4u * (i * TN4 + j) + 3u] += a[i].w * bk[j]; } }
  }
  return acc;
}

// Stores matmul_texture_kt's block: sums[i*TN4 + j][c], matmul_texture_k's dot over the four partial
// sums of column 4*col4[j] + c.
fn store_kt(m0: u32, wy: u32, ly: u32, acc: ptr<function, array<vec4<f32>, 4u * TM * TN4>>) {
  var sums: array<vec4<f32>, TM * TN4>;
  for (var b = 0u; b < TM * TN4; b++) {
    let p0 = (*acc)[4u * b];
    let p1 = (*acc)[4u * b + 1u];
    let p2 = (*acc)[4u * b + 2u];
    let p3 = (*acc)[4u * b + 3u];
    let one = vec4<f32>(1.0);
    sums[b] = vec4<f32>(
      dot(vec4<f32>(p0.x, p1.x, p2.x, p3.x), one),
      dot(vec4<f32>(p0.y, p1.y, p2.y, p3.y), one),
      dot(vec4<f32>(p0.z, p1.z, p2.z, p3.z), one),
      dot(vec4<f32>(p0.w, p1.w, p2.w, p3.w), one),
    );
  }
  store_block(m0, wy, ly, &sums);
}

// The whole invocation of matmul_texture_n and _n_at (and below of _kt and _kt_at): the block of rows
// from m0 and column groups of lane ly of workgroup column wy, A's rows from the importing file's
// block_rows (its binding's addressing). Grid: x = ceil((m_end - m_begin) / TM), y = ceil(N /
// (4*TN4*WG)).
fn block_n(wid: vec3<u32>, lid: vec3<u32>) {
  let m0 = d.m_begin + wid.x * TM;
  var acc = product_n(block_rows(m0), column_groups(wid.y, lid.y));
  store_block(m0, wid.y, lid.y, &acc);
}

fn block_kt(wid: vec3<u32>, lid: vec3<u32>) {
  let m0 = d.m_begin + wid.x * TM;
  var acc = product_kt(block_rows(m0), column_groups(wid.y, lid.y));
  store_kt(m0, wid.y, lid.y, &acc);
}
