// Variables carried through loops and branches whose conditions are the same in every invocation of a
// workgroup (uniform) or differ between them (divergent), in a partly filled SIMD vector. On a machine
// without a GPU, ./locus setup builds Mesa with a change to llvmpipe (toolchain/llvmpipe.patch) that
// stores such variables without blending them by the execution mask where no invocation can have left
// the others, and skips the rest of a loop's body after a uniform break or continue and the body of a
// uniform branch that no invocation takes. This checks the cases that change must get right, on
// whatever adapter runs the suite, against values computed here: uniform breaks and continues nested in
// uniform branches, a uniform branch with a short body that no invocation takes, a uniform loop inside a
// divergent branch, a divergent loop inside a uniform one, and a loop whose only exit is a break at its
// end; the parameters are read from a buffer, so the compiler cannot fold them.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { dispatchShader } from "./util.ts";

const gpu = await getGpu();

// 12 invocations a workgroup: one full vector of 8 lanes and one with 4 of its 8 lanes active.
const SHADER = `
@group(0) @binding(0) var<storage, read> P: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(12)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let p = P[wid.x];
  let n = p.x;     // a trip count
  let stop = p.y;  // where loops break early
  let skip = p.z;  // where the first loop continues
  let flag = p.w;  // a branch taken by all or none
  var a = l;
  var b = 0u;
  for (var k = 0u; k < n; k++) {
    if (k == skip) { continue; }
    b += 3u * k + a;
    if (flag != 0u) {
      if (k == stop) { break; }
      a += 1u;
    }
    b += 1u;
  }
  if (flag == 7u) { a = 1000u; } else { b += 5u; }
  if (l % 3u == 1u) {
    for (var k = 0u; k < n; k++) {
      if (k == stop) { break; }
      a += 2u;
    }
  }
  for (var k = 0u; k < 3u; k++) {
    for (var m = 0u; m < l % 4u + k; m++) {
      if (m == stop) { break; }
      b += m;
    }
    a += k;
  }
  var c = 0u;
  loop {
    c += 1u;
    if (c >= n) { break; }
  }
  let i = 3u * (wid.x * 12u + l);
  out[i] = a;
  out[i + 1u] = b;
  out[i + 2u] = c;
}`;

/** The shader's a, b and c for one invocation, computed here. */
function expected(l: number, [n, stop, skip, flag]: number[]): number[] {
  let a = l, b = 0;
  for (let k = 0; k < n; k++) {
    if (k === skip) continue;
    b += 3 * k + a;
    if (flag !== 0) {
      if (k === stop) break;
      a += 1;
    }
    b += 1;
  }
  if (flag === 7) a = 1000;
  else b += 5;
  if (l % 3 === 1) {
    for (let k = 0; k < n; k++) {
      if (k === stop) break;
      a += 2;
    }
  }
  for (let k = 0; k < 3; k++) {
    for (let m = 0; m < (l % 4) + k; m++) {
      if (m === stop) break;
      b += m;
    }
    a += k;
  }
  let c = 0;
  do c += 1; while (c < n);
  return [a, b, c];
}

Deno.test("variables carried through uniform and divergent loops and branches", async () => {
  // (n, stop, skip, flag) per workgroup: no iteration, breaks and continues at the first, a middle and
  // no iteration, the branch taken and not, and the short branch taken by all.
  const params = [
    [0, 99, 99, 0],
    [1, 0, 99, 1],
    [5, 2, 99, 1],
    [5, 2, 3, 0],
    [8, 99, 0, 1],
    [8, 3, 1, 1],
    [6, 4, 2, 7],
    [3, 1, 99, 7],
    [9, 5, 5, 1],
    [2, 99, 1, 0],
  ];
  const P = gpu.tensor([params.length * 4], Uint32Array.from(params.flat()), "u32");
  const out = gpu.zeros([params.length * 12 * 3], "u32");
  dispatchShader(gpu, SHADER, [{ buffer: P.buffer }, { buffer: out.buffer }], params.length);
  const got = await gpu.readU32(out);
  const wrong: string[] = [];
  params.forEach((p, w) => {
    for (let l = 0; l < 12; l++) {
      const want = expected(l, p);
      const have = [...got.subarray(3 * (w * 12 + l), 3 * (w * 12 + l) + 3)];
      if (have.some((v, i) => v !== want[i])) {
        wrong.push(
          `workgroup ${w} (n, stop, skip, flag = ${p}) invocation ${l}: a, b, c = ${have}, expected ${want}`,
        );
      }
    }
  });
  assert.equal(
    wrong.length,
    0,
    `${wrong.length} of ${params.length * 12} invocations wrong on ${gpu.describe()}:\n${wrong.join("\n")}`,
  );
});
