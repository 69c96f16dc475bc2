// The GPU runtime itself: recording across the automatic flush, uniform blocks, uploads' lifetime,
// bind-group reuse, the pool.
import assert from "node:assert/strict";
import { getGpu, sideBySide } from "../engine/gpu.ts";
import { folderNames, hasGpuDeviceNode } from "../engine/io.ts";
import { add, matmul, rowOps } from "../engine/ops.ts";

const gpu = await getGpu();

Deno.test("thousands of recorded dispatches with per-dispatch uploads survive the automatic flush", async () => {
  const x = gpu.zeros([2, 3]);
  const one = gpu.tensor([1, 3], [1, 2, 3]);
  const submitsBefore = gpu.submitCount;
  // Each rowOps uploads its entry table (kept by content: one upload); 5000 dispatches cross the
  // automatic flush after 4096.
  for (let i = 0; i < 5000; i++) rowOps(gpu, x, one, 3, [{ dst: i % 2, src: 0, keep: 1, take: 1 }]);
  const got = await x.read();
  assert.deepEqual([...got], [2500, 5000, 7500, 2500, 5000, 7500]);
  assert.ok(gpu.submitCount - submitsBefore >= 2, "the recording was split across submits");
});

Deno.test("more distinct uniform blocks and upload tables than one stream keeps: every dispatch reads its own", async () => {
  // 5000 products out[0, i] = i * (1 x 1): each its own alpha and output offset (5000 distinct uniform
  // blocks, over the 4096 one uniform buffer holds), recorded before one readback.
  const n = 5000, one = gpu.tensor([1, 1], [1]), out = gpu.zeros([1, n]);
  for (let i = 0; i < n; i++) matmul(gpu, one, one, 1, 1, 1, { out, alpha: i, ldc: n, outOffset: i });
  assert.deepEqual([...await out.read()], Array.from({ length: n }, (_, i) => i));
  // 3000 distinct row tables (over the 1024 uploads kept): row i of x gets row 0 of `ones` added.
  const x = gpu.zeros([3000, 1]), ones = gpu.tensor([1, 1], [1]);
  for (let i = 0; i < 3000; i++) rowOps(gpu, x, ones, 1, [{ dst: i, src: 0, keep: 1, take: 1 }]);
  assert.deepEqual([...await x.read()], new Array(3000).fill(1));
});

Deno.test("upload() keeps a table by content; its tensor is not the caller's to release", () => {
  const a = gpu.upload([3], [1, 2, 3], "u32"), b = gpu.upload([3], [1, 2, 3], "u32");
  assert.equal(a, b);
  assert.notEqual(gpu.upload([3], [1, 2, 4], "u32"), a);
  assert.notEqual(gpu.upload([3], [1, 2, 3], "f32"), a);
  assert.throws(() => gpu.release(a), /upload\(\) tensors are not the caller's to release/);
});

Deno.test("filled() recycles a released buffer and fills it in stream order, after the work that read it", async () => {
  const a = gpu.tensor([4], [1, 2, 3, 4]), out = gpu.zeros([4]);
  add(gpu, a, a, 4, { out }); // recorded, not yet submitted: reads a's old contents
  gpu.release(a);
  const f = gpu.filled([4], [10, 20, 30, 40]);
  assert.equal(f.buffer, a.buffer);
  assert.deepEqual([...await out.read()], [2, 4, 6, 8]);
  assert.deepEqual([...await f.read()], [10, 20, 30, 40]);
});

Deno.test("released buffers are reused by empty() of the same size", () => {
  const a = gpu.empty([7, 5]);
  gpu.release(a);
  const b = gpu.empty([5, 7]);
  assert.equal(b.buffer, a.buffer);
  const c = gpu.empty([5, 7]);
  assert.notEqual(c.buffer, a.buffer);
});

Deno.test("the pool serves nearby sizes from one buffer (8 sizes per power of two); a tensor sees only its values", async () => {
  // 1000 and 990 floats share a pool size (4096 bytes); a zeroed or read tensor in the larger buffer
  // is exactly its own length.
  const a = gpu.tensor([1000], Float32Array.from({ length: 1000 }, (_, i) => i + 1));
  gpu.release(a);
  // a's buffer has 4000 bytes: it serves pool sizes up to 3840 bytes (960 floats), not 990 floats'.
  const b = gpu.zeros([990]);
  assert.notEqual(b.buffer, a.buffer);
  const c = gpu.empty([950]);
  assert.equal(c.buffer, a.buffer);
  assert.equal((await c.read()).length, 950);
  gpu.release(b);
  const d = gpu.zeros([1000]);
  assert.equal(d.buffer, b.buffer, "990 and 1000 floats share a pool size");
  assert.equal(d.buffer.size, 4096);
  const ones = gpu.tensor([1000], new Float32Array(1000).fill(1));
  add(gpu, d, ones, 1000, { out: d });
  assert.deepEqual([...await d.read()].slice(995), [1, 1, 1, 1, 1]);
  gpu.release(d);
  const e = gpu.zeros([993]);
  assert.equal(e.buffer, d.buffer);
  assert.deepEqual([...await e.read()], new Array(993).fill(0));
  gpu.release(c, e, ones);
});

Deno.test("over its byte limit the pool gives up the buffers it has held longest", () => {
  const limit = gpu.poolLimitBytes;
  gpu.poolLimitBytes = 8192;
  try {
    const [a, b, c] = [gpu.empty([1024]), gpu.empty([1024]), gpu.empty([2048])];
    gpu.release(a, b); // 4096 bytes each: the pool is full
    gpu.release(c); // 8192 bytes: a and b make room
    const misses = gpu.poolMisses;
    const again = gpu.empty([2048]);
    assert.equal(again.buffer, c.buffer, "the newest buffer is kept");
    const small = gpu.empty([1024]);
    assert.ok(small.buffer !== a.buffer && small.buffer !== b.buffer, "the oldest were given up");
    assert.equal(gpu.poolMisses, misses + 1);
    gpu.release(again, small); // 12288 bytes: again (the older) makes room for small
    assert.equal(gpu.empty([1024]).buffer, small.buffer);
    assert.equal(gpu.poolMisses, misses + 1);
    assert.notEqual(gpu.empty([2048]).buffer, again.buffer);
    // A buffer over the whole limit is never pooled.
    const big = gpu.empty([4096]);
    gpu.release(big);
    assert.notEqual(gpu.empty([4096]).buffer, big.buffer);
  } finally {
    gpu.poolLimitBytes = limit;
  }
});

Deno.test("bad shapes and oversize tensors give clear errors", () => {
  assert.throws(() => gpu.tensor([2, -1]), /bad tensor shape \[2,-1\]/);
  assert.throws(() => gpu.tensor([2], [1, 2, 3]), /3 values, shape \[2\] needs 2/);
  const tooBig = Math.floor(gpu.limits.maxStorageBufferBindingSize / 4) + 1;
  assert.throws(() => gpu.zeros([tooBig]), /over this adapter's maxStorageBufferBindingSize/);
});

Deno.test("zeros() reuses released buffers and clears them in stream order", async () => {
  const a = gpu.tensor([4], [1, 2, 3, 4]);
  const before = await a.read();
  gpu.release(a);
  const z = gpu.zeros([2, 2]);
  assert.equal(z.buffer, a.buffer);
  assert.deepEqual([...before], [1, 2, 3, 4]);
  assert.deepEqual([...await z.read()], [0, 0, 0, 0]);
});

Deno.test("a training step in steady state allocates no new buffers (no pool leak)", async () => {
  const { Model, makeBatch, parameterShapes } = await import("../engine/model.ts");
  const { allocateGradients, backward } = await import("../engine/autograd.ts");
  const { crossEntropy } = await import("../engine/backward_ops.ts");
  const cfg = { vocabSize: 13, nPositions: 8, nEmbd: 16, nLayer: 2, nHead: 2, layerNormEpsilon: 1e-5 };
  const model = Model.random(gpu, cfg, 1);
  const grads = allocateGradients(model, parameterShapes(cfg).map(([n]) => n));
  const batch = makeBatch([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]);
  const rows = [0, 1, 2, 3, 5, 6, 7, 8];
  const step = async () => {
    const fwd = model.forward(batch, { outputRows: rows, keep: true });
    const targets = gpu.empty([rows.length], "u32");
    gpu.write(targets, rows.map((r) => (r + 1) % 13));
    const dlogits = gpu.empty([rows.length, 13]);
    const { losses } = crossEntropy(gpu, fwd.logits, targets, rows.length, 13, {
      dlogits,
      losses: gpu.empty([rows.length]),
    });
    backward(model, fwd, { dlogits, params: grads });
    await losses.read();
    gpu.release(targets, dlogits, losses);
    model.releaseForward(fwd);
  };
  await step();
  await step();
  const [misses, bindGroups] = [gpu.poolMisses, gpu.bindGroupsCreated];
  await step();
  await step();
  assert.equal(gpu.poolMisses, misses, "later steps reuse every buffer of the first");
  assert.equal(gpu.bindGroupsCreated, bindGroups, "later steps reuse every bind group");
});

Deno.test("the backend: DENO_WEBGPU_BACKEND wins; without it, GL on a Linux machine with Mesa's EGL and no GPU", async () => {
  // The description names the adapter, the CPU implementation behind a software adapter, the vendor and
  // the backend.
  const described = gpu.describe();
  assert.ok(described.startsWith(gpu.info.description), described);
  assert.ok(described.endsWith(` vendor=${gpu.info.vendor} backend=${gpu.info.backend}`), described);
  assert.equal(described.includes(`(software: ${gpu.info.software})`), gpu.info.software !== null, described);
  // A fresh process without the variable: the adapter is requested on the backend Locus chose, which
  // it tells Deno through DENO_WEBGPU_BACKEND (read once, at the first requestAdapter), and reports.
  const opened = async (env: Record<string, string>) => {
    const code = `import { Gpu } from "${new URL("../engine/gpu.ts", import.meta.url)}";
const gpu = await Gpu.open();
console.log(JSON.stringify({ backend: gpu.info.backend, told: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null }));`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", ...env },
      clearEnv: true,
    }).output();
    return JSON.parse(new TextDecoder().decode(out.stdout)) as { backend: string; told: string | null };
  };
  const preferred = async (env: Record<string, string>) => {
    const code = `import { preferredBackend } from "${new URL("../engine/io.ts", import.meta.url)}";
console.log(preferredBackend());`;
    const out = await new Deno.Command(Deno.execPath(), { args: ["eval", code], env, clearEnv: true })
      .output();
    return new TextDecoder().decode(out.stdout).trim();
  };
  assert.equal(await preferred({ DENO_WEBGPU_BACKEND: "vulkan" }), "vulkan");
  const softwareOnly = Deno.build.os === "linux" && !hasGpuDeviceNode();
  const mesaEgl = folderNames("/usr/share/glvnd/egl_vendor.d").includes("50_mesa.json");
  const auto = softwareOnly && mesaEgl ? "gl" : "default";
  assert.equal(await preferred({}), auto);
  assert.equal(await preferred({ DENO_WEBGPU_BACKEND: "gl" }), "gl");
  const fresh = await opened({});
  assert.deepEqual(fresh, { backend: auto, told: auto === "default" ? null : auto });
});

// Linux has no Metal, so there this backend finds no adapter (elsewhere the test is reported as ignored).
Deno.test({
  name: "no adapter for the backend: a clear error naming it and how to get a software adapter",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../experiments/commands/predict.ts", import.meta.url).pathname,
      "predict",
      "--tokens",
      "1",
    ],
    env: { DENO_WEBGPU_BACKEND: "metal" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.match(stderr, /No WebGPU adapter found \(backend: metal\)/);
  assert.match(stderr, /mesa-vulkan-drivers/);
});

Deno.test("sideBySide: starts a task only while it fits beside the running ones; waits for all, also on failure", async () => {
  const sizes = [3, 2, 2, 4, 1];
  const running = new Set<number>(), started: number[] = [], peaks: number[] = [];
  const run = async (k: number) => {
    running.add(k);
    started.push(k);
    peaks.push([...running].reduce((s, j) => s + sizes[j], 0));
    await new Promise((resolve) => setTimeout(resolve, 5 * (5 - k)));
    running.delete(k);
  };
  const fits = (now: number[], next: number) => now.reduce((s, j) => s + sizes[j], sizes[next]) <= 5;
  await sideBySide(sizes.length, fits, run);
  assert.deepEqual(started, [0, 1, 2, 3, 4], "in order");
  assert.ok(peaks.every((p) => p <= 5), `never over the budget: ${peaks}`);
  assert.ok(peaks.some((p) => p > Math.max(...sizes.slice(0, 1))), "some ran together");
  assert.equal(running.size, 0);

  // A failing task: the error comes out once the others have settled.
  const settled: number[] = [];
  await assert.rejects(
    sideBySide(3, () => true, async (k) => {
      await new Promise((resolve) => setTimeout(resolve, k === 0 ? 1 : 20));
      settled.push(k);
      if (k === 0) throw new Error("task 0 failed");
    }),
    /task 0 failed/,
  );
  assert.deepEqual(settled.sort(), [0, 1, 2], "every task settled first");
});

Deno.test("a WebGPU error (dropped work) makes the next readback throw, once, instead of returning stale values", async () => {
  const t = gpu.tensor([4], [1, 2, 3, 4]);
  // An invalid buffer (MAP_READ with STORAGE): a validation error that WebGPU only reports as an event.
  gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
  await assert.rejects(() => t.read(), /WebGPU reported 1 error\(s\) in the work before this readback: .+/);
  assert.deepEqual([...await t.read()], [1, 2, 3, 4]);
});
