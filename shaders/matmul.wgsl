// Matrix multiply family: C = act(alpha * op(A) op(B) + bias + beta * C), act = gelu_new or none
//
//   op(A) is [M,K]: A stored [M,K] (TRANS_A = false) or [K,M] (TRANS_A = true)
//   op(B) is [K,N]: B stored [K,N] (TRANS_B = false) or [N,K] (TRANS_B = true)
//   bias  is [N], read as bias[n * bias_stride] (bias_stride = 0 with a 1-element zero tensor = no bias)
//   batched over workgroup z with element strides (0 = shared operand).
//   C is written at C[c_offset + batch*stride_c + m*ldc + n], so a product can fill a column
//   slice of a wider matrix (the unembedding of a vocabulary split into chunks does this).
//
// GPT-2 uses every variant: Conv1D forward x[M,in] W[in,out] (NN), the tied unembedding
// h[M,d] wte[V,d]^T (NT), input gradients dY W^T (NT) and weight gradients X^T dY (TN).
//
// Entry points (engine/ops.ts picks one per call):
//   matmul        : scalar register block, any layout and shape (the general fallback)
//   matmul_vec4_n : B read as vec4 along N; needs TRANS_B = false, N % 4 == 0, stride_b % 4 == 0, TN % 4 == 0
//   matmul_vec4_n_c4 : the same, C written as vec4; also needs c_offset, ldc and stride_c % 4 == 0
//   matmul_vec4_k : A and B read as vec4 along K; needs TRANS_A = false, TRANS_B = true (the NT
//                   unembedding), K % 4 == 0, stride_a and stride_b % 4 == 0, TN % 4 == 0
//   matmul_vec4_n holds TM x TN/4 vec4 accumulators, as many floats as the scalar kernel's TM x TN;
//   matmul_vec4_k one float per column of its TM x TN/4 block.
//   matmul_tiled  : BK-deep tiles of A and B staged in workgroup memory, any layout and shape;
//                   the habit of real GPUs (slow on llvmpipe, whose barriers are expensive).
//                   With KSPLIT > 1 (split-K) each workgroup sums one of KSPLIT slices of K and writes
//                   its raw partial sums to C bound as a [batch * KSPLIT, M, N] scratch buffer;
//   matmul_split_reduce : then adds the KSPLIT partials of each element (A bound as that scratch) and
//                   applies the epilogue. For products whose tiles are too few to fill a GPU (a prompt
//                   of 16 rows: 12 workgroups on a GPU of 100+ cores, each looping over all of K).
//   (matmul_half, B a model weight kept in its checkpoint's 16-bit format, is matmul_half_kernel.wgsl,
//   reached through matmul_half.wgsl or matmul_f16.wgsl; it runs matmul's register block,
//   matmul_register.wgsl, with B converted as it is loaded.)
//
// Compile-time parameters (prepended by engine/gpu.ts):
//   TM, TN   : rows and columns of C computed by one invocation (register block); matmul_vec4_k
//              computes TN/4 columns
//   WG_X     : invocations per workgroup along rows; WG_Y along columns
//   BK       : (matmul_tiled) depth of a staged k-tile
//   KSPLIT   : (matmul_tiled, matmul_split_reduce) slices of K, 1 = no split
//   TRANS_A, TRANS_B : storage layouts above
//   GELU     : apply gelu_new in the epilogue (the MLP's c_fc, one kernel instead of two)
//
// import: matmul_common.wgsl
// import: matmul_register.wgsl
// import: matmul_vec4_block.wgsl
// Register blocking without workgroup memory is the fast shape on llvmpipe (bench/kernels.ts measures it).
// There every storage-buffer load is a per-lane scalar loop with a bounds check (about 13
// instructions per lane and float, vec4 or not), so throughput follows the FMAs per loaded float,
// TM*TN / (TM+TN). Measured (bench/kernels.ts --sweep): 8x8 blocks of the vec4 kernels are best;
// more than 16 vec4 accumulators, or the scalar kernel's 64 f32 ones, run 3-4x slower, as the
// accumulators stop living in registers. Loops over the register block have constant trip counts
// and no `break`, so that they unroll fully and every acc[] index is a constant.

@group(0) @binding(1) var<storage, read> B: array<f32>;

// The same buffers seen as vec4 (the vec4 entry points bind these instead of A and B).
@group(0) @binding(0) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B4: array<vec4<f32>>;

fn b_at(base: u32, k: u32, n: u32) -> f32 {
  if (TRANS_B) { return B[base + n * d.K + k]; }
  return B[base + k * d.N + n];
}

fn b_elem(base: u32, k: u32, n: u32) -> f32 { return b_at(base, k, n); }

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) { register_block(gid); }

// vec4 accumulators per row of the register block in the vec4 kernels, which the host runs only
// when TN % 4 == 0 (the max keeps their array types valid in pipelines built for other entry points).
const TN4 = max(TN / 4u, 1u);

// The vec4 kernels' register blocks (matmul_vec4_block.wgsl) read op(A) as the scalar kernel does.
fn block_a(base: u32, m: u32, k: u32) -> f32 { return a_at(base, m, k); }

// Same grid as matmul. Each invocation: TM rows x TN4 vec4 columns from m0 = gid.x*TM < M and
// n0 = gid.y*TN < N; accumulator acc[i*TN4 + j] holds C[m0+i, n0+4j .. n0+4j+3].
fn vec4_n_acc(gid: vec3<u32>) -> array<vec4<f32>, TM * TN4> {
  return vec4_n_block(gid.x * TM, gid.y * TN, d.M, d.N, d.K, gid.z * d.stride_a, gid.z * d.stride_b / 4u);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_vec4_n(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN;
  if (m0 >= d.M || n0 >= d.N) { return; }
  let acc = vec4_n_acc(gid);
  let base_c = d.c_offset + gid.z * d.stride_c;
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      let n = n0 + 4u * j;
      if (m0 + i < d.M && n < d.N) {
        let v = acc[i * TN4 + j];
        for (var c = 0u; c < 4u; c++) { store(base_c, m0 + i, n + c, v[c]); }
      }
    }
  }
}

// C seen as vec4, for matmul_vec4_n_c4.
@group(0) @binding(3) var<storage, read_write> C4: array<vec4<f32>>;

// matmul_vec4_n storing each accumulator as one vec4 (needs c_offset, ldc and stride_c % 4 == 0): store()'s
// epilogue four columns at a time, each column's bias read once per invocation, the same bits. On
// llvmpipe, where every storage access is a per-lane loop, this ran FT-L's weight gradients (X^T dY,
// 20 copies of [512, 128] from 10 rows each, accumulated) 1.6-2x faster.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_vec4_n_c4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN;
  if (m0 >= d.M || n0 >= d.N) { return; }
  let acc = vec4_n_acc(gid);
  let base_c4 = (d.c_offset + gid.z * d.stride_c) / 4u;
  for (var j = 0u; j < TN4; j++) {
    let n = n0 + 4u * j;
    if (n < d.N) {
      let s = d.bias_stride;
      let b = vec4<f32>(bias[n * s], bias[(n + 1u) * s], bias[(n + 2u) * s], bias[(n + 3u) * s]);
      for (var i = 0u; i < TM; i++) {
        if (m0 + i < d.M) {
          let idx = base_c4 + ((m0 + i) * d.ldc + n) / 4u;
          var v = d.alpha * acc[i * TN4 + j] + b;
          if (d.beta != 0.0) { v += d.beta * C4[idx]; }
          if (GELU) { v = vec4<f32>(gelu_new(v.x), gelu_new(v.y), gelu_new(v.z), gelu_new(v.w)); }
          C4[idx] = v;
        }
      }
    }
  }
}

// Grid: x = ceil(M / (TM*WG_X)), y = ceil(N / (TN4*WG_Y)), z = batch. Each invocation: TM rows x
// TN4 columns, each a dot product of K/4 vec4 pairs summed over k in order into one accumulator (the
// bits of the register kernels and of matmul_texture.wgsl's, whichever runs a product).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_vec4_k(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN4;
  if (m0 >= d.M || n0 >= d.N) { return; }
  let K4 = d.K / 4u;
  let base_a4 = gid.z * d.stride_a / 4u;
  let base_b4 = gid.z * d.stride_b / 4u;
  let base_c = d.c_offset + gid.z * d.stride_c;
  var rows: array<u32, TM>;
  var cols: array<u32, TN4>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(m0 + i, d.M - 1u); }
  for (var j = 0u; j < TN4; j++) { cols[j] = min(n0 + j, d.N - 1u); }
  var acc: array<f32, TM * TN4>;
  for (var k4 = 0u; k4 < K4; k4++) {
    var bk: array<vec4<f32>, TN4>;
    for (var j = 0u; j < TN4; j++) { bk[j] = B4[base_b4 + cols[j] * K4 + k4]; }
    for (var i = 0u; i < TM; i++) {
      let a = A4[base_a4 + rows[i] * K4 + k4];
      for (var j = 0u; j < TN4; j++) {
        let p = a * bk[j];
        acc[i * TN4 + j] = (((acc[i * TN4 + j] + p.x) + p.y) + p.z) + p.w;
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      if (m0 + i < d.M && n0 + j < d.N) { store(base_c, m0 + i, n0 + j, acc[i * TN4 + j]); }
    }
  }
}

const BM = TM * WG_X; // rows of C per workgroup in matmul_tiled
const BN = TN * WG_Y; // columns of C per workgroup in matmul_tiled
const THREADS = WG_X * WG_Y;

// tile_a[kk*BM + mm] = op(A)[row0 + mm, k0 + kk];  tile_b[kk*BN + nn] = op(B)[k0 + kk, col0 + nn]
// (zero outside the matrices, so edge tiles need no checks in the inner loop).
var<workgroup> tile_a: array<f32, BK * BM>;
var<workgroup> tile_b: array<f32, BK * BN>;

// grid: x = ceil(M / BM), y = ceil(N / BN), z = batch * KSPLIT. Invocation (lx, ly) owns rows
// row0 + lx + i*WG_X and columns col0 + ly + j*WG_Y: interleaved, so neighbouring invocations
// read neighbouring workgroup-memory words. No early return: every invocation must reach the barriers.
// Slice s of K is [s * k_per, (s + 1) * k_per), k_per a multiple of BK (KSPLIT = 1: all of K).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let batch = wid.z / KSPLIT;
  let k_per = (d.K + KSPLIT * BK - 1u) / (KSPLIT * BK) * BK;
  let k_begin = (wid.z % KSPLIT) * k_per;
  let k_end = min(d.K, k_begin + k_per);
  let row0 = wid.x * BM;
  let col0 = wid.y * BN;
  let base_a = batch * d.stride_a;
  let base_b = batch * d.stride_b;
  let base_c = d.c_offset + batch * d.stride_c;
  var acc: array<f32, TM * TN>;
  for (var k0 = k_begin; k0 < k_end; k0 += BK) {
    // Cooperative loads; consecutive e walk the operand's contiguous dimension.
    for (var e = tid; e < BK * BM; e += THREADS) {
      var mm = e / BK;
      var kk = e % BK;
      if (TRANS_A) { mm = e % BM; kk = e / BM; }
      let m = row0 + mm;
      let k = k0 + kk;
      var v = 0.0;
      if (m < d.M && k < k_end) { v = a_at(base_a, m, k); }
      tile_a[kk * BM + mm] = v;
    }
    for (var e = tid; e < BK * BN; e += THREADS) {
      var nn = e % BN;
      var kk = e / BN;
      if (TRANS_B) { nn = e / BK; kk = e % BK; }
      let n = col0 + nn;
      let k = k0 + kk;
      var v = 0.0;
      if (n < d.N && k < k_end) { v = b_at(base_b, k, n); }
      tile_b[kk * BN + nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<f32, TM>;
      for (var i = 0u; i < TM; i++) { a[i] = tile_a[kk * BM + lid.x + i * WG_X]; }
      for (var j = 0u; j < TN; j++) {
        let b = tile_b[kk * BN + lid.y + j * WG_Y];
        for (var i = 0u; i < TM; i++) { acc[i * TN + j] += a[i] * b; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      let m = row0 + lid.x + i * WG_X;
      let n = col0 + lid.y + j * WG_Y;
      if (m >= d.M || n >= d.N) { continue; }
      if (KSPLIT == 1u) {
        store(base_c, m, n, acc[i * TN + j]);
      } else {
        C[(wid.z * d.M + m) * d.N + n] = acc[i * TN + j];
      }
    }
  }
}

// grid: x = ceil(N / WG_X), y = ceil(M / WG_Y), z = batch; one invocation per element of C, which adds
// its KSPLIT partial sums (A bound as matmul_tiled's scratch) in slice order and stores the result.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_split_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let m = gid.y;
  if (m >= d.M || n >= d.N) { return; }
  var sum = 0.0;
  for (var s = 0u; s < KSPLIT; s++) { sum += A[((gid.z * KSPLIT + s) * d.M + m) * d.N + n]; }
  store(d.c_offset + gid.z * d.stride_c, m, n, sum);
}
