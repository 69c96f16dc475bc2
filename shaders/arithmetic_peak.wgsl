// The adapter's arithmetic ceiling, for bench/kernels.ts: each invocation runs ACC independent chains
// of vec4 fused multiply-adds on registers, STEPS deep, with no memory traffic but one store at the end
// (which keeps the compiler from removing the chains). 8 * ACC * STEPS flops per invocation. Every
// kernel's GFLOP/s can then be read against what the adapter reaches with nothing but arithmetic
// (on llvmpipe: what its code generator makes of WGSL arithmetic on this CPU, not the CPU's peak).
//
//   out : [invocations] vec4, the sum of each invocation's chains (a 1-D grid)
//
// Compile-time parameters (prepended by engine/gpu.ts): ACC (vec4 chains per invocation; enough to
// hide the fma latency), STEPS (fma per chain), WG (invocations per workgroup).

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn arithmetic_peak(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  var acc: array<vec4<f32>, ACC>;
  for (var j = 0u; j < ACC; j++) { acc[j] = vec4<f32>(f32(i + j) * 1e-6); }
  let a = vec4<f32>(f32(i) * 1e-3);
  let c = vec4<f32>(0.999);
  for (var s = 0u; s < STEPS; s++) {
    for (var j = 0u; j < ACC; j++) { acc[j] = fma(acc[j], c, a); }
  }
  var sum = vec4<f32>(0.0);
  for (var j = 0u; j < ACC; j++) { sum += acc[j]; }
  out[i] = sum;
}
