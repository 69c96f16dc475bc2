// Loads whose address is the same in every invocation of a workgroup, under divergent control flow and
// in a partly filled SIMD vector. On a machine without a GPU, ./locus setup builds Mesa with a change to
// llvmpipe (toolchain/llvmpipe.patch) that turns such loads into one scalar load per vector (the first
// active invocation's address, broadcast), as the texture products read their A operand. This checks the cases the change must get right, on whatever adapter runs the suite, against
// values computed here: a uniform loop, a divergent branch, a loop whose trip count differs between
// invocations, a branch that no invocation of a vector takes, and an address read from a buffer. The
// values are small integers and every sum stays below 2^24, so exact in float32.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { dispatchShader } from "./util.ts";

const gpu = await getGpu();

// 12 invocations a workgroup: one full vector of 8 lanes and one with 4 of its 8 lanes active.
const SHADER = `
@group(0) @binding(0) var T: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<uniform> U: array<vec4<f32>, 16>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> I: array<u32>;

@compute @workgroup_size(12)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let w = wid.x;
  var acc = 0.0;
  for (var k = 0u; k < 4u; k++) {
    acc += textureLoad(T, vec2<u32>(k, w)).y + S[w * 4u + k] + U[w + k].z;
  }
  if (l % 3u == 1u) {
    acc += 10.0 * textureLoad(T, vec2<u32>(w % 4u, 1u)).x + 100.0 * S[w] + 1000.0 * U[w].w;
  }
  for (var k = 0u; k < l % 5u; k++) {
    acc += 10000.0 * (textureLoad(T, vec2<u32>(k, w)).w + S[k]);
  }
  if (l >= 9u) {
    acc += 3000.0 * (textureLoad(T, vec2<u32>(1u, w)).z + S[w + 1u] + U[w + 1u].x);
  }
  let j = I[w];
  acc += 100000.0 * (textureLoad(T, vec2<u32>(j % 4u, j)).x + S[j]);
  out[w * 12u + l] = acc;
}`;

Deno.test("loads at workgroup-uniform addresses are right under divergent control flow", async () => {
  // A stored mirror's rows are whole multiples of 64 floats: 16 texels.
  const groups = 8, width = 16, height = groups;
  // texel (x, y) channel c of the mirror = tex[y * 4 * width + 4 * x + c] (rows of 4 * width floats)
  const tex = Float32Array.from({ length: height * 4 * width }, (_, i) => (i * 7) % 11);
  const storage = Float32Array.from({ length: 64 }, (_, i) => (i * 5) % 9);
  const uniform = Float32Array.from({ length: 64 }, (_, i) => (i * 3) % 7);
  const index = Uint32Array.from({ length: groups }, (_, w) => (w * 5 + 3) % groups);
  const texel = (x: number, y: number, c: number) => tex[y * 4 * width + 4 * x + c];
  const u = (row: number, c: number) => uniform[row * 4 + c];
  const expected = new Float32Array(groups * 12);
  for (let w = 0; w < groups; w++) {
    for (let l = 0; l < 12; l++) {
      let acc = 0;
      for (let k = 0; k < 4; k++) acc += texel(k, w, 1) + storage[w * 4 + k] + u(w + k, 2);
      if (l % 3 === 1) acc += 10 * texel(w % 4, 1, 0) + 100 * storage[w] + 1000 * u(w, 3);
      for (let k = 0; k < l % 5; k++) acc += 10000 * (texel(k, w, 3) + storage[k]);
      if (l >= 9) acc += 3000 * (texel(1, w, 2) + storage[w + 1] + u(w + 1, 0));
      const j = index[w];
      acc += 100000 * (texel(j % 4, j, 0) + storage[j]);
      expected[w * 12 + l] = acc;
    }
  }

  const texSource = gpu.tensor([height, 4 * width], tex);
  const [{ view }] = gpu.mirror(texSource, height, 4 * width);
  const storageBuffer = gpu.tensor([storage.length], storage);
  const indexBuffer = gpu.tensor([index.length], index, "u32");
  const out = gpu.zeros([groups * 12]);
  const uniformBuffer = gpu.device.createBuffer({
    size: uniform.byteLength,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  gpu.device.queue.writeBuffer(uniformBuffer, 0, uniform);
  await gpu.sync(); // the mirror's copy submitted before the dispatch below
  const resources = [
    view,
    { buffer: storageBuffer.buffer },
    { buffer: uniformBuffer },
    { buffer: out.buffer },
    { buffer: indexBuffer.buffer },
  ];
  dispatchShader(gpu, SHADER, resources, groups);
  const got = await gpu.read(out);
  const wrong: string[] = [];
  for (let i = 0; i < expected.length; i++) {
    if (got[i] !== expected[i]) {
      wrong.push(`workgroup ${Math.floor(i / 12)} invocation ${i % 12}: ${got[i]}, expected ${expected[i]}`);
    }
  }
  assert.equal(
    wrong.length,
    0,
    `${wrong.length} of ${expected.length} values wrong on ${gpu.describe()}:\n${wrong.join("\n")}`,
  );
  uniformBuffer.destroy();
});
