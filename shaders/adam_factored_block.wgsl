// The body of adam_factored (adam_factored.wgsl, adam_factored_texture.wgsl): one Adam step (adam_step.wgsl)
// of G grouped [M, N] parameters whose gradient is left as its factors, formed in the same pass instead
// of being written out and read back:
//   grad[g] [M, N] = A_g^T B_g,   A_g = A[g*K .. (g+1)*K) [K, M],  B_g = B[g*K .. (g+1)*K) [K, N]
// FT-L's weight copies (experiments/editing/ft.ts): x^T dy of each copy's K rows (GPT-2's [in, out]
// weights) or dy^T x ([out, in]). The product is matmul_vec4_n's with TRANS_A (the register block of
// matmul_vec4_block.wgsl), so the step has the bits of that product into zeroed gradients followed by
// adam_vec4; it saves writing the gradient, reading it back and zeroing it (on llvmpipe,
// where every storage access is a per-lane loop, about a quarter of the two passes' time).
//
// Bindings: A, B (as vec4), param, m, v (as vec4, read_write), dims; the L-infinity ball's center at
// binding 5 is the importing file's, read through its center_of(g, i, n4) (copy g's [i, 4*n4 .. +3]; not
// called when radius < 0). Grid: [ceil(M / (TM*WG_X)), ceil(N / (TN*WG_Y)), G]; needs N % 4 == 0 and
// TN % 4 == 0. No gradient clipping (a global norm needs every gradient before any step).
//
// Compile-time parameters: TM rows x TN columns of a parameter per invocation, workgroups of WG_X x WG_Y.
//
// import: adam_step.wgsl
// import: matmul_vec4_block.wgsl

struct FactoredDims {
  M: u32, N: u32, K: u32, _pad: u32,
  h: AdamHyper,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> fd: FactoredDims;

const TN4 = TN / 4u;

// A_g^T [M, K]: op(A) transposed as stored, like matmul_vec4_n's TRANS_A.
fn block_a(base: u32, m: u32, k: u32) -> f32 { return A[base + k * fd.M + m]; }

// The whole invocation: its TM x TN block of copy gid.z's parameters.
fn adam_factored_block(gid: vec3<u32>) {
  let m0 = gid.x * TM;
  let n0 = gid.y * TN;
  if (m0 >= fd.M || n0 >= fd.N) { return; }
  let N4 = fd.N / 4u;
  let acc = vec4_n_block(m0, n0, fd.M, fd.N, fd.K, gid.z * fd.K * fd.M, gid.z * fd.K * N4);
  let base_p4 = gid.z * fd.M * N4;
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN4; j++) {
      if (m0 + i < fd.M && n0 + 4u * j < fd.N) {
        let idx = base_p4 + (m0 + i) * N4 + n0 / 4u + j;
        var c = vec4<f32>(0.0);
        if (fd.h.radius >= 0.0) { c = center_of(gid.z, m0 + i, n0 / 4u + j); }
        let s = adam_step(fd.h, param4[idx], acc[i * TN4 + j], m4[idx], v4[idx], c);
        m4[idx] = s.m;
        v4[idx] = s.v;
        param4[idx] = s.p;
      }
    }
  }
}
