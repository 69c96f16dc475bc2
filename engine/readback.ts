// Readbacks without Deno's 10 ms wait, through an OffscreenCanvas.
//
// Deno resolves every GPUBuffer.mapAsync (and queue.onSubmittedWorkDone) 10 ms after its work is done
// at the earliest: the promise joins the map's callback with a loop that polls the device and then
// sleeps 10 ms before it looks again (Deno's ext/webgpu/buffer.rs, map_async). A loop that reads back
// every step (ROME's v*, FT-L's training, every trace chunk) waits 11 ms a step for that alone, longer
// than a step's kernels on a GPU. Deno's OffscreenCanvas (2.8 and later) reads its WebGPU texture back
// at once, in the call of convertToBlob (a copy, a blocking wait for that work, the bytes): so a
// readback copies the bytes into the texture of an rgba8unorm canvas (one texel holds four bytes of
// any value, copied as they are), asks for a BMP (uncompressed: the texels' bytes in B, G, R, A order,
// rows bottom-up) and takes the bytes out again. Measured on llvmpipe: 0.25-0.8 ms against 11.5 ms for a
// 48 KiB read (bench/RESULTS.md).
//
// Whether the path gives back exactly what it was given is checked once per device, on every byte
// value and on floats' special patterns (NaN, -0, subnormals, infinities); where it does not (a
// browser, which has no OffscreenCanvas.convertToBlob to BMP, or a Deno that changes it) readbacks
// use mapAsync. Deno 2.9's convertToBlob keeps about 3 KB of native memory per call (also without
// Locus's copy, and on a new canvas each time; not given back by garbage collection): a full-coverage
// study makes about 1900 readbacks, the papers' scale about 50,000 per process. A device reads through
// the canvas at most CANVAS_READS_MAX times (about 750 MB), then through mapAsync.

/** The narrowest canvas: a buffer-to-texture copy's rows are whole multiples of 256 bytes (64 texels). */
const MIN_WIDTH = 64;
/** Reads above this size use mapAsync: the canvas path copies the bytes several times (texture, image,
 *  BMP, blob, result), so that from about 4 MiB it is no faster than mapAsync's 10 ms (llvmpipe, median
 *  reads of 1, 2, 3, 4 and 8 MiB: 4.8, 4.0, 6.1, 10.5 and 31 ms against 11.4-12.8 ms). */
export const CANVAS_READ_MAX_BYTES = 2 << 20;
/** Canvas reads per device before mapAsync takes over (the memory Deno keeps per call: the header). */
export const CANVAS_READS_MAX = 250_000;

/** A canvas of W x H texels (W a power of two) holding `bytes`, H as small as it can be. */
export function canvasShape(bytes: number, maxDim: number): { width: number; height: number } | null {
  const texels = Math.max(1, Math.ceil(bytes / 4));
  let width = MIN_WIDTH;
  while (width * width < texels && width < maxDim) width *= 2;
  const height = Math.ceil(texels / width);
  return height <= maxDim ? { width, height } : null;
}

/**
 * The texels of a 32-bit BMP of `width` x `height` as the bytes they hold (R, G, B, A per texel, rows
 * top-down), the first `bytes` of them. Throws on any other BMP layout.
 */
export function bmpBytes(bmp: Uint8Array, width: number, height: number, bytes: number): ArrayBuffer {
  const view = new DataView(bmp.buffer, bmp.byteOffset, bmp.byteLength);
  const fail = (what: string) => {
    throw new Error(`canvas readback: unexpected BMP (${what})`);
  };
  if (bmp.length < 54 || bmp[0] !== 0x42 || bmp[1] !== 0x4d) fail("no BM signature");
  const pixels = view.getUint32(10, true);
  const w = view.getInt32(18, true), h = view.getInt32(22, true), bpp = view.getUint16(28, true);
  if (w !== width || Math.abs(h) !== height || bpp !== 32) fail(`${w} x ${h} at ${bpp} bits per pixel`);
  if (pixels + width * height * 4 > bmp.length) fail("pixel data past the end");
  // BGRA texel words (little-endian 0xAARRGGBB) in file order, copied out to an aligned buffer.
  const words = new Uint32Array(bmp.slice(pixels, pixels + width * height * 4).buffer);
  const out = new Uint32Array(Math.ceil(bytes / 4));
  const bottomUp = h > 0;
  for (let row = 0, at = 0; row < height && at < out.length; row++) {
    const src = (bottomUp ? height - 1 - row : row) * width;
    const n = Math.min(width, out.length - at);
    for (let i = 0; i < n; i++) {
      const v = words[src + i];
      // B <-> R: the texel's bytes in the order they were copied in.
      out[at + i] = (v & 0xff00ff00) | ((v & 0xff) << 16) | ((v >>> 16) & 0xff);
    }
    at += n;
  }
  return out.buffer.byteLength === bytes ? out.buffer : out.buffer.slice(0, bytes);
}

/** What GPUCanvasContext offers on an OffscreenCanvas (the DOM library types do not name it in Deno). */
interface ReadbackCanvas {
  width: number;
  height: number;
  getContext(kind: "webgpu"): GPUCanvasContext | null;
  convertToBlob(o: { type: string }): Promise<Blob>;
}

/**
 * Reads buffers back through an OffscreenCanvas (see the file's header). `record` copies the bytes
 * into a texture and submits; `collect` then returns them.
 */
export class CanvasReadback {
  private constructor(
    private device: GPUDevice,
    private canvas: ReadbackCanvas,
    private context: GPUCanvasContext,
    /** Canvas reads left (the probe's included) before stagingBytes sends every read to mapAsync. */
    private readsLeft: number,
  ) {}

  /** The path for `device` if it returns exactly the bytes it is given here, else null; at most `reads`
   *  canvas reads, the probe's included. */
  static async create(device: GPUDevice, reads = CANVAS_READS_MAX): Promise<CanvasReadback | null> {
    const Offscreen = (globalThis as { OffscreenCanvas?: new (w: number, h: number) => ReadbackCanvas })
      .OffscreenCanvas;
    if (typeof Deno === "undefined" || !Offscreen) return null;
    try {
      const canvas = new Offscreen(MIN_WIDTH, 1);
      if (typeof canvas.convertToBlob !== "function") return null;
      const context = canvas.getContext("webgpu");
      if (!context) return null;
      context.configure({
        device,
        format: "rgba8unorm",
        usage: GPUTextureUsage.COPY_DST,
        // Not "opaque", which lets an implementation treat alpha as 1: the alpha byte is a value's byte.
        alphaMode: "premultiplied",
      });
      const path = new CanvasReadback(device, canvas, context, reads);
      return (await path.roundTrips()) ? path : null;
    } catch {
      return null;
    }
  }

  /** Every byte value in each of a texel's four bytes, and NaN, -0, a subnormal and both infinities. */
  private async roundTrips(): Promise<boolean> {
    const probe = new Uint8Array(4 * 256 + 20);
    // Byte c of texel t holds (t + 64 c) mod 256: over the 256 texels, every value in every byte.
    for (let i = 0; i < 1024; i++) probe[i] = ((i >> 2) + 64 * (i & 3)) & 0xff;
    new Float32Array(probe.buffer, 1024).set([NaN, -0, 1e-42, Infinity, -Infinity]);
    const buffer = this.device.createBuffer({
      size: this.stagingBytes(probe.length)!,
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    try {
      this.device.queue.writeBuffer(buffer, 0, probe);
      const encoder = this.device.createCommandEncoder();
      const shape = this.record(encoder, buffer, probe.length);
      this.device.queue.submit([encoder.finish()]);
      const back = new Uint8Array(await this.collect(shape, probe.length));
      return back.length === probe.length && back.every((b, i) => b === probe[i]);
    } finally {
      buffer.destroy();
    }
  }

  /**
   * Records the copy of the first `bytes` of `buffer` (COPY_SRC; at least the canvas's W x H x 4 bytes
   * long, see stagingBytes) into the canvas's texture; submit it, then call collect with the shape.
   */
  record(encoder: GPUCommandEncoder, buffer: GPUBuffer, bytes: number): { width: number; height: number } {
    const shape = canvasShape(bytes, this.device.limits.maxTextureDimension2D)!;
    this.readsLeft--;
    if (this.canvas.width !== shape.width) this.canvas.width = shape.width;
    if (this.canvas.height !== shape.height) this.canvas.height = shape.height;
    encoder.copyBufferToTexture(
      { buffer, bytesPerRow: shape.width * 4, rowsPerImage: shape.height },
      { texture: this.context.getCurrentTexture() },
      [shape.width, shape.height],
    );
    return shape;
  }

  /** The bytes of the last recorded copy, once it is submitted. */
  async collect(shape: { width: number; height: number }, bytes: number): Promise<ArrayBuffer> {
    // convertToBlob reads the texture before it returns: a later record() cannot change what it read.
    const blob = await this.canvas.convertToBlob({ type: "image/bmp" });
    return bmpBytes(new Uint8Array(await blob.arrayBuffer()), shape.width, shape.height, bytes);
  }

  /** The staging size a read of `bytes` needs (the canvas's texels), or null where it takes mapAsync. */
  stagingBytes(bytes: number): number | null {
    if (bytes > CANVAS_READ_MAX_BYTES || this.readsLeft <= 0) return null;
    const shape = canvasShape(bytes, this.device.limits.maxTextureDimension2D);
    return shape && shape.width * shape.height * 4;
  }
}
