// The GPU runtime itself: recording across the automatic flush, uploads' lifetime, the pool.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { rowOps } from "../engine/ops.ts";

const gpu = await getGpu();

Deno.test("thousands of recorded dispatches with per-dispatch uploads survive the automatic flush", async () => {
  const x = gpu.zeros([2, 3]);
  const one = gpu.tensor([1, 3], [1, 2, 3]);
  const submitsBefore = gpu.submitCount;
  // Each rowOps uploads its own entry table; 5000 dispatches cross the 4096-slot uniform ring.
  for (let i = 0; i < 5000; i++) rowOps(gpu, x, one, 3, [{ dst: i % 2, src: 0, keep: 1, take: 1 }]);
  const got = await x.read();
  assert.deepEqual([...got], [2500, 5000, 7500, 2500, 5000, 7500]);
  assert.ok(gpu.submitCount - submitsBefore >= 2, "the recording was split across submits");
});

Deno.test("released buffers are reused by empty() of the same size", () => {
  const a = gpu.empty([7, 5]);
  gpu.release(a);
  const b = gpu.empty([5, 7]);
  assert.equal(b.buffer, a.buffer);
  const c = gpu.empty([5, 7]);
  assert.notEqual(c.buffer, a.buffer);
});

Deno.test("bad shapes and oversize tensors give clear errors", () => {
  assert.throws(() => gpu.tensor([2, -1]), /bad tensor shape \[2,-1\]/);
  assert.throws(() => gpu.tensor([2], [1, 2, 3]), /3 values, shape \[2\] needs 2/);
  const tooBig = Math.floor(gpu.limits.maxStorageBufferBindingSize / 4) + 1;
  assert.throws(() => gpu.zeros([tooBig]), /over this adapter's maxStorageBufferBindingSize/);
});
