// Which elements an invocation of an elementwise kernel takes (imported by gelu.wgsl, embedding.wgsl,
// gelu_backward.wgsl, elementwise.wgsl, optimizer.wgsl): PER of them. Workgroup w (its index
// flattened from a grid split over x and y when over the per-dimension limit) covers elements
// [w*WG*PER, (w+1)*WG*PER); lane l takes w*WG*PER + k*WG + l for k = 0 .. PER-1. Neighbouring lanes
// touch neighbouring elements at every k (coalesced on a GPU), and a lane's indices increase with k,
// so it stops at the first one past the end.
//
// Why PER > 1: on llvmpipe an invocation's fixed cost (its index, the bounds checks of every storage
// access) is most of an elementwise kernel's time; 8 elements per invocation ran GELU 2-2.5x faster
// than 1 (engine/ops.ts ELEMENTS_PER_INVOCATION).
//
// Compile-time parameters: WG (invocations per workgroup), PER (elements per invocation).

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, k: u32) -> u32 {
  return ((wid.y * nwg.x + wid.x) * PER + k) * WG + lid;
}
