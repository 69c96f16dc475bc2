// Storage-buffer loads and stores at addresses that differ between the invocations of a workgroup, under
// divergent control flow and in a partly filled SIMD vector. On a machine without a GPU, ./locus setup
// builds Mesa with a change to llvmpipe (toolchain/llvmpipe.patch) that makes each invocation's access one
// vector load or store instead of one per component (an invocation that does not run the access reads or
// writes a private spare). This checks the cases that change must get right, on whatever adapter runs the
// suite, against values computed here: scalar, vec2 and vec4 elements, accesses that some invocations of a
// vector skip, and the last element of a buffer.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { dispatchShader } from "./util.ts";

const gpu = await getGpu();

// 12 invocations a workgroup: one full vector of 8 lanes and one with 4 of its 8 lanes active.
const SHADER = `
@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read> S2: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> S4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> O4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> O2: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;

const n = 72u; // elements in S2, S4, O4 and O2; 4n in S, 2n in O

@compute @workgroup_size(12)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let i = wid.x * 12u + l;
  // Each invocation reads elements of its own; the last element of S is read by invocation 0.
  let j = (i * 7u) % n;
  var v = S4[j] + vec4<f32>(S2[(i * 5u) % n], S2[(i * 3u) % n]) + vec4<f32>(S[(i * 11u) % (4u * n)]);
  if (l % 3u == 1u) {
    v += 10.0 * S4[(j + 1u) % n];
  }
  if (l >= 9u) {
    O2[i] = v.yx;
  } else {
    O2[i] = vec2<f32>(S2[i].x, -1.0);
  }
  if (l % 2u == 0u) {
    O4[i] = v;
    O[2u * i] = v.z - v.w;
  }
  O[2u * i + 1u] = S[4u * n - 1u - i];
}`;

Deno.test("storage accesses at per-invocation addresses are right under divergent control flow", async () => {
  const groups = 6, n = groups * 12; // the shader's n
  const s = Float32Array.from({ length: 4 * n }, (_, i) => (i * 7) % 13);
  const s2 = Float32Array.from({ length: 2 * n }, (_, i) => (i * 5) % 11);
  const s4 = Float32Array.from({ length: 4 * n }, (_, i) => (i * 3) % 17);
  const vec = (a: Float32Array, width: number, k: number) => [...a.subarray(width * k, width * k + width)];
  const o4 = new Float32Array(4 * n), o2 = new Float32Array(2 * n), o = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const l = i % 12, j = (i * 7) % n;
    const pair = [...vec(s2, 2, (i * 5) % n), ...vec(s2, 2, (i * 3) % n)];
    let v = vec(s4, 4, j).map((x, c) => x + pair[c] + s[(i * 11) % (4 * n)]);
    if (l % 3 === 1) v = v.map((x, c) => x + 10 * s4[4 * ((j + 1) % n) + c]);
    o2.set(l >= 9 ? [v[1], v[0]] : [s2[2 * i], -1], 2 * i);
    if (l % 2 === 0) {
      o4.set(v, 4 * i);
      o[2 * i] = v[2] - v[3];
    }
    o[2 * i + 1] = s[4 * n - 1 - i];
  }

  const inputs = [s, s2, s4].map((a) => gpu.tensor([a.length], a));
  const outputs = [o4, o2, o].map((a) => gpu.zeros([a.length]));
  dispatchShader(gpu, SHADER, [...inputs, ...outputs].map((t) => ({ buffer: t.buffer })), groups);
  const got = await gpu.readMany(outputs);
  const wrong: string[] = [];
  [o4, o2, o].forEach((want, b) => {
    for (let k = 0; k < want.length; k++) {
      if (got[b][k] !== want[k]) {
        wrong.push(`${["O4", "O2", "O"][b]}[${k}]: ${got[b][k]}, expected ${want[k]}`);
      }
    }
  });
  assert.equal(wrong.length, 0, `${wrong.length} values wrong on ${gpu.describe()}:\n${wrong.join("\n")}`);
});
