// Readbacks through an OffscreenCanvas (engine/readback.ts): the canvas's shape, the BMP parser on
// files made here, and on the device the bytes of every read exactly as written, whichever path
// (canvas or mapAsync) the read takes.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { add } from "../engine/ops.ts";
import { bmpBytes, CANVAS_READ_MAX_BYTES, CanvasReadback, canvasShape } from "../engine/readback.ts";
import { rng } from "./util.ts";

/** A 32-bit BMP (BITMAPV4 header, BI_BITFIELDS) of width x height texels given as R, G, B, A bytes,
 *  rows top-down; stored bottom-up unless `topDown`. */
function makeBmp(rgba: Uint8Array, width: number, height: number, topDown = false): Uint8Array {
  const header = 14 + 108, size = header + width * height * 4;
  const out = new Uint8Array(size), view = new DataView(out.buffer);
  out.set([0x42, 0x4d]);
  view.setUint32(2, size, true);
  view.setUint32(10, header, true);
  view.setUint32(14, 108, true);
  view.setInt32(18, width, true);
  view.setInt32(22, topDown ? -height : height, true);
  view.setUint16(26, 1, true);
  view.setUint16(28, 32, true);
  view.setUint32(30, 3, true);
  for (let row = 0; row < height; row++) {
    const at = header + (topDown ? row : height - 1 - row) * width * 4;
    for (let i = 0; i < width; i++) {
      const s = (row * width + i) * 4;
      out.set([rgba[s + 2], rgba[s + 1], rgba[s], rgba[s + 3]], at + i * 4);
    }
  }
  return out;
}

Deno.test("canvasShape: rows of a power-of-two width from 64 texels, as few rows as hold the bytes", () => {
  assert.deepEqual(canvasShape(0, 8192), { width: 64, height: 1 });
  assert.deepEqual(canvasShape(4, 8192), { width: 64, height: 1 });
  assert.deepEqual(canvasShape(4 * 64 + 1, 8192), { width: 64, height: 2 });
  assert.deepEqual(canvasShape(4 * 4096, 8192), { width: 64, height: 64 });
  assert.deepEqual(canvasShape(4 * 4097, 8192), { width: 128, height: 33 });
  assert.deepEqual(canvasShape(4 * 8192 * 8192, 8192), { width: 8192, height: 8192 });
  assert.equal(canvasShape(4 * 8192 * 8192 + 4, 8192), null, "more than the largest texture");
  for (const bytes of [1, 17, 1000, 123457, 5_000_000]) {
    const { width, height } = canvasShape(bytes, 8192)!;
    assert.ok(width * height * 4 >= bytes && (height - 1) * width * 4 < bytes, `${bytes} bytes`);
  }
});

Deno.test("bmpBytes: the texels' bytes back in order, bottom-up or top-down, cut to the bytes asked", () => {
  const random = rng(7);
  const rgba = Uint8Array.from({ length: 3 * 5 * 4 }, () => Math.floor(random() * 256));
  for (const topDown of [false, true]) {
    const bmp = makeBmp(rgba, 3, 5, topDown);
    assert.deepEqual(new Uint8Array(bmpBytes(bmp, 3, 5, rgba.length)), rgba);
    assert.deepEqual(new Uint8Array(bmpBytes(bmp, 3, 5, 22)), rgba.subarray(0, 22));
  }
});

Deno.test("bmpBytes: any other file is an error naming what is off", () => {
  const bmp = makeBmp(new Uint8Array(2 * 2 * 4), 2, 2);
  assert.throws(() => bmpBytes(bmp, 2, 3, 16), /unexpected BMP \(2 x 2 at 32 bits per pixel\)/);
  const rgb = bmp.slice();
  new DataView(rgb.buffer).setUint16(28, 24, true);
  assert.throws(() => bmpBytes(rgb, 2, 2, 16), /2 x 2 at 24 bits per pixel/);
  const png = bmp.slice();
  png[0] = 0x89;
  assert.throws(() => bmpBytes(png, 2, 2, 16), /no BM signature/);
  assert.throws(() => bmpBytes(bmp.subarray(0, bmp.length - 1), 2, 2, 16), /pixel data past the end/);
});

const gpu = await getGpu();

Deno.test("Deno's readbacks take the canvas path here, and sync() waits for the work before it", async () => {
  assert.equal(gpu.readbackPath, "canvas", "Deno 2.8+ with OffscreenCanvas: readbacks without mapAsync");
  const a = gpu.tensor([3], [1, 2, 3]), out = gpu.zeros([3]);
  add(gpu, a, a, 3, { out });
  await gpu.sync();
  assert.deepEqual([...await out.read()], [2, 4, 6]);
});

Deno.test("readbacks return every byte as written: sizes around the canvas's rows, special floats, both paths", async () => {
  const random = rng(11);
  const specials = [NaN, -0, 1e-42, -1e-45, Infinity, -Infinity, 3.4028234663852886e38];
  for (const n of [1, 2, 63, 64, 65, 4095, 4097, 300_001, CANVAS_READ_MAX_BYTES / 4 + 1]) {
    const values = Float32Array.from({ length: n }, () => (random() - 0.5) * 1e6);
    values.set(specials.slice(0, Math.min(n, specials.length)));
    const t = gpu.tensor([n], values);
    const back = await t.read();
    assert.deepEqual(
      new Uint32Array(back.buffer, back.byteOffset, n),
      new Uint32Array(values.buffer),
      `${n} floats`,
    );
    t.destroy();
  }
});

Deno.test("readbacks of several tensors at once, and of many reads in flight together, each get their own bytes", async () => {
  const random = rng(3);
  const tensors = [5, 64, 1000, 3].map((n) =>
    gpu.tensor([n], Float32Array.from({ length: n }, () => random()))
  );
  const [values, many] = await Promise.all([
    Promise.all(tensors.map((t) => t.read())),
    gpu.readMany(tensors),
  ]);
  for (const [i, t] of tensors.entries()) {
    const expected = [...(await t.read())];
    assert.deepEqual([...values[i]], expected);
    assert.deepEqual([...many[i]], expected);
  }
  const halves = gpu.tensor([3], new Uint16Array([0x3c00, 0x8001, 0x7bff]), "f16");
  assert.deepEqual([...await halves.read()], [1, -Math.pow(2, -24), 65504]);
});

Deno.test("a WebGPU error of work before a canvas readback makes that readback throw", async () => {
  const t = gpu.tensor([4], [1, 2, 3, 4]);
  // Writing past the end of a buffer: a validation error of the queue, reported as an event.
  gpu.device.queue.writeBuffer(t.buffer, 16, new Float32Array([5]));
  await assert.rejects(() => t.read(), /WebGPU reported 1 error\(s\) in the work before this readback: .+/);
  assert.deepEqual([...await t.read()], [1, 2, 3, 4]);
});

Deno.test("a device reads through the canvas at most the reads it was given (Deno keeps memory per call), then through mapAsync", async () => {
  const path = (await CanvasReadback.create(gpu.device, 3))!;
  assert.ok(path, "the probe passed");
  const staging = gpu.device.createBuffer({
    size: path.stagingBytes(64)!,
    usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  gpu.device.queue.writeBuffer(staging, 0, new Uint8Array(64).map((_, i) => i));
  for (let read = 0; read < 2; read++) {
    assert.ok(path.stagingBytes(64) !== null, `read ${read + 2} of 3 goes through the canvas`);
    const encoder = gpu.device.createCommandEncoder();
    const shape = path.record(encoder, staging, 64);
    gpu.device.queue.submit([encoder.finish()]);
    assert.deepEqual(
      [...new Uint8Array(await path.collect(shape, 64))],
      Array.from({ length: 64 }, (_, i) => i),
    );
  }
  assert.equal(path.stagingBytes(64), null, "the fourth read takes mapAsync");
  staging.destroy();
});
