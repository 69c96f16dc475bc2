// GPU runtime: adapter/device acquisition, a pipeline cache, and a recorder that
// batches every dispatch into one command encoder until something must be read back.
//
// Why batching: every readback waits for the work recorded before it (and Deno's mapAsync 10 ms more,
// where engine/readback.ts cannot avoid it), and one submit per dispatch is 4x slower than many
// dispatches in one pass. So kernels are *recorded* (gpu.run) and only submitted when a result is read
// (gpu.read) or gpu.flush() is called.
//
// WGSL lives in shaders/*.wgsl, one kernel family per file. A kernel's compile-time
// parameters (tile sizes, flags) are prepended as `const NAME = value;` lines, so one
// file yields a specialised pipeline per parameter set (cached by file+entry+params).
import { CanvasReadback } from "./readback.ts";
import { widenHalf } from "./safetensors.ts";
import { io } from "./io.ts";
import {
  type AdapterFacts,
  chooseKernels,
  type KernelChoice,
  type SoftwareAdapter,
} from "./kernel_choice.ts";

/** WGSL constants a pipeline is specialised with: a number becomes `const NAME = <value>u;` (u32),
 *  a boolean a bool. */
export type KernelParams = Record<string, number | boolean>;

/** Bytes [offset, offset + size) of a tensor's buffer, bound on their own (e.g. as a uniform block). */
export interface TensorWindow {
  /** The tensor whose buffer is bound. */
  tensor: Tensor;
  /** First byte of the window. */
  offset: number;
  /** Length of the window in bytes. */
  size: number;
}

/** Element types: f32 and u32 take a word each; f16 and bf16 (model weights kept as their checkpoint
 *  stores them) are packed two per 32-bit word, element e in the low half of word e/2 when e is even. */
export type Dtype = "f32" | "u32" | "f16" | "bf16";

/** Bytes a tensor of `size` elements of `dtype` occupies (at least one word). */
export function tensorBytes(size: number, dtype: Dtype): number {
  return Math.max(4, dtype === "f16" || dtype === "bf16" ? 4 * Math.ceil(size / 2) : 4 * size);
}

/** A GPU tensor: one storage buffer holding `dtype` values, row-major `shape`. */
export class Tensor {
  /** Wraps `buffer` (owned by `gpu`) as a tensor of `shape`; Gpu.tensor/upload make them. */
  constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: Dtype = "f32",
  ) {}
  /** Number of elements: the product of the shape. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  /** Bytes of the data (2 per element for f16/bf16, 4 otherwise). */
  get bytes(): number {
    return tensorBytes(this.size, this.dtype);
  }
  /** Copies the tensor to the CPU (flushes pending work). */
  read(): Promise<Float32Array> {
    return this.gpu.read(this);
  }
  /** Frees the buffer and its texture mirror, if any (after submitting recorded work that may use them). */
  destroy(): void {
    this.gpu.flush();
    this.gpu.dropMirror(this.buffer);
    this.buffer.destroy();
  }
}

/** Rows [rowStart, rowStart + rows) of a mirrored matrix (the stored one, or its transpose for a
 *  transposed mirror) in one rgba32float texture (cols/4 x rows texels). */
export interface TextureChunk {
  /** The texture's view, bound where the kernel reads the matrix. */
  view: GPUTextureView;
  /** First matrix row in the texture (texel row 0). */
  rowStart: number;
  /** Number of matrix rows (texel rows) in this chunk. */
  rows: number;
}

/** How a mirror lays out a buffer's matrix: as stored, or transposed (see Gpu.mirror). */
export type MirrorLayout = "stored" | "transposed";

/** The bytes of the textures mirroring a [rows, cols] matrix in `layout` (a transposed mirror's texel
 *  rows hold ceil(rows / 4) texels: its last may be part padding). */
function mirrorTextureBytes(rows: number, cols: number, layout: MirrorLayout): number {
  return layout === "transposed" ? Math.ceil(rows / 4) * 16 * cols : rows * cols * 4;
}

/** A buffer's texture copy; `stale` once recorded work may have changed the buffer since the copy. */
interface Mirror {
  rows: number;
  cols: number;
  stale: boolean;
  chunks: (TextureChunk & { texture: GPUTexture })[];
}

/** What the adapter says about itself, as shown to users and recorded with benchmark results. */
export interface AdapterSummary {
  /** GPUAdapterInfo's description (the driver's name for the device; may be empty). */
  description: string;
  /** GPUAdapterInfo's vendor. */
  vendor: string;
  /** GPUAdapterInfo's architecture. */
  architecture: string;
  /** The adapter's own isFallbackAdapter (false where the runtime does not report it). */
  isFallback: boolean;
  /** The CPU implementation of WebGPU behind it (engine/kernel_choice.ts), null on a GPU. */
  software: SoftwareAdapter | null;
  /** The WebGPU backend the runtime was asked for (Deno's DENO_WEBGPU_BACKEND, or "default"). */
  backend: string;
}

const UNIFORM_SLOT = 256; // bytes per uniform block (minUniformBufferOffsetAlignment <= 256)
const UNIFORM_SLOTS = 4096; // distinct uniform blocks per uniform buffer (then a fresh buffer starts)
const DISPATCHES_PER_SUBMIT = 4096; // dispatches recorded before an automatic flush
const BIND_GROUPS_KEPT = 8192; // bind groups kept for reuse (the most recently used)
const UPLOADS_KEPT = 1024; // upload() tables kept by content; beyond this the cache starts over
const UPLOAD_KEPT_ELEMENTS = 16384; // longer uploads are not kept
const POOL_LIMIT_BYTES = 1 << 30; // released buffers kept for reuse; beyond this they are freed

/** The spacing of the buffer pool's sizes around `bytes`: 8 sizes per power of two (Gpu.poolBytes). */
function poolStep(bytes: number): number {
  return 2 ** Math.max(2, Math.floor(Math.log2(bytes)) - 3);
}

/** Builds the little uniform block a kernel reads its sizes from (all fields 4 bytes). */
export class Uniforms {
  private view = new DataView(new ArrayBuffer(UNIFORM_SLOT));
  private n = 0;
  /** Appends unsigned 32-bit integers (values wrap modulo 2^32). */
  u32(...values: number[]): this {
    for (const v of values) this.view.setUint32(4 * this.n++, v >>> 0, true);
    return this;
  }
  /** Appends signed 32-bit integers. */
  i32(...values: number[]): this {
    for (const v of values) this.view.setInt32(4 * this.n++, v | 0, true);
    return this;
  }
  /** Appends 32-bit floats. */
  f32(...values: number[]): this {
    for (const v of values) this.view.setFloat32(4 * this.n++, v, true);
    return this;
  }
  /** The whole 256-byte block (fields in order, zeros after them), as uploaded for one dispatch. */
  bytes(): Uint8Array {
    return new Uint8Array(this.view.buffer, 0, UNIFORM_SLOT);
  }
  /** The fields' bits as a string: blocks with equal keys have equal bytes. */
  key(): string {
    return new Uint32Array(this.view.buffer, 0, this.n).join(",");
  }
}

/** A builder of a kernel's uniform block (u32 and f32 fields in order). */
export function uniforms(): Uniforms {
  return new Uniforms();
}

/** No WebGPU adapter: the message says which backend was tried and how to get one. */
export class NoAdapterError extends Error {}

/** What the runtime reports about `adapter` (engine/kernel_choice.ts decides from it). Deno and current
 *  browsers put isFallbackAdapter on the adapter's info, older browsers on the adapter itself. */
export function adapterFacts(adapter: GPUAdapter, backend: string): AdapterFacts {
  const ai = adapter.info;
  const fallback = (x: unknown) => (x as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return {
    vendor: ai.vendor ?? "",
    architecture: ai.architecture ?? "",
    device: ai.device ?? "",
    description: ai.description ?? "",
    isFallbackAdapter: fallback(ai) ?? fallback(adapter),
    backend,
    limits: adapter.limits,
    features: [...adapter.features],
  };
}

/** The WebGPU device with the adapter's real limits: tensors, a buffer pool, cached pipelines and one
 *  recorded submit stream (readbacks flush it). */
export class Gpu {
  private pipelines = new Map<string, GPUComputePipeline>();
  private pool = new Map<number, GPUBuffer[]>();
  private pooledBytes = 0;
  /** Every pooled buffer with its pool size, the longest pooled first (what the pool gives up first). */
  private pooledOrder = new Map<GPUBuffer, number>();
  private transients: GPUBuffer[] = [];
  private shaderSources = new Map<string, string>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  // Uniform blocks are stored once per distinct content (a loop's steps repeat theirs): slot of each
  // block in uniformBuffer, mirrored in uniformStaging; slots from uploadedSlots on are not uploaded yet.
  private uniformBuffer: GPUBuffer;
  private uniformStaging = new Uint8Array(UNIFORM_SLOT * UNIFORM_SLOTS);
  private uniformSlots = new Map<string, number>();
  private uploadedSlots = 0;
  private dispatchesSinceFlush = 0;
  // createBindGroup is most of a dispatch's recording cost (about 20 us in Deno, 40 on some hosts), and
  // a loop binds the same pooled buffers, uniform slots and pipelines step after step: bind groups are
  // kept by what they bind. Keys name objects by number; a destroyed buffer's number is never reused.
  // Two generations: a bind group found in the older one moves to the newer; when the newer one is full
  // it becomes the older and the older's (not used since) are dropped.
  private bindGroups = new Map<string, GPUBindGroup>();
  private olderBindGroups = new Map<string, GPUBindGroup>();
  private objectIds = new WeakMap<object, number>();
  private uploads = new Map<string, Tensor>();
  private uploadBuffers = new WeakSet<GPUBuffer>();
  private nextObjectId = 0;
  /** Number of dispatches recorded since the Gpu was opened (for benchmarks and tests). */
  dispatchCount = 0;
  /** Number of queue submits since the Gpu was opened (for benchmarks and tests). */
  submitCount = 0;
  /** Bind groups created (a steady loop should stop adding to this: see run()). */
  bindGroupsCreated = 0;
  /** empty()/zeros() calls that had to create a buffer (a steady loop should stop adding to this). */
  poolMisses = 0;
  /** The most bytes of released buffers the pool keeps for reuse. */
  poolLimitBytes: number = POOL_LIMIT_BYTES;
  /** Bytes held by texture mirrors of buffers (see mirror()). */
  mirrorBytes = 0;
  /**
   * Most bytes that texture mirrors may hold; weights beyond it are read from their buffers (with
   * the same results: the texture and buffer kernels sum in the same order). A software adapter's
   * "GPU memory" is the machine's memory, where GPT-2 XL's 6 GB of weights already take three
   * copies while loading (the loader's arrays, Mesa's upload copy, the buffers); so there it is a
   * sixteenth of the memory (1.5 GB of 24: GPT-2 small and medium whole, part of XL).
   */
  mirrorBudgetBytes: number;
  /** Binding indices each pipeline may write (its read_write storage bindings). */
  private writableBindings = new WeakMap<GPUComputePipeline, number[]>();
  private mirrors: Record<MirrorLayout, WeakMap<GPUBuffer, Mirror>> = {
    stored: new WeakMap(),
    transposed: new WeakMap(),
  };

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly info: AdapterSummary,
    /** The kernel variants chosen for this adapter (engine/kernel_choice.ts). */
    readonly kernels: KernelChoice,
    /** WebGPU errors reported since the last readback or sync (throwIfFailed takes them). */
    private readonly errors: string[] = [],
    /** Readbacks without Deno's 10 ms wait where this runtime offers them (engine/readback.ts). */
    private readonly canvasReadback: CanvasReadback | null = null,
  ) {
    // Where the memory is unknown (a browser may not say), 256 MiB: the embedded model whole.
    this.mirrorBudgetBytes = info.software ? (io().memoryBytes() ?? 2 ** 32) / 16 : Infinity;
    this.uniformBuffer = this.newUniformBuffer();
  }

  /** A buffer of UNIFORM_SLOTS uniform blocks. */
  private newUniformBuffer(): GPUBuffer {
    return this.device.createBuffer({
      size: this.uniformStaging.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  /** Requests the adapter with its real limits. Throws NoAdapterError with a how-to when none exists. */
  static async open(options: { powerPreference?: GPUPowerPreference } = {}): Promise<Gpu> {
    if (typeof navigator === "undefined" || !("gpu" in navigator)) {
      throw new NoAdapterError("This runtime has no WebGPU (navigator.gpu). Run Locus with Deno 2.x.");
    }
    const { backend, userChosen } = io().chooseBackend();
    const adapter = await navigator.gpu.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
    if (!adapter) {
      const chosen = backend === "gl" && !userChosen
        ? "Locus chose Mesa's GL driver (no GPU device here); DENO_WEBGPU_BACKEND=vulkan tries Vulkan instead.\n"
        : "";
      throw new NoAdapterError(
        `No WebGPU adapter found (backend: ${backend}). ${chosen}` +
          "On a machine without a GPU install Mesa's software drivers:\n" +
          "  apt-get install -y mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri   " +
          "(Debian bookworm-backports has the ~5x faster Mesa 25)\n" +
          "and make sure XDG_RUNTIME_DIR is set (e.g. export XDG_RUNTIME_DIR=/tmp). " +
          "DENO_WEBGPU_BACKEND=vulkan|gl selects the backend.",
      );
    }
    const wanted: Record<string, number> = {};
    for (
      const name of [
        "maxStorageBufferBindingSize",
        "maxBufferSize",
        "maxComputeWorkgroupStorageSize",
        "maxComputeInvocationsPerWorkgroup",
        "maxComputeWorkgroupSizeX",
        "maxComputeWorkgroupSizeY",
        "maxComputeWorkgroupsPerDimension",
        "maxStorageBuffersPerShaderStage",
        "maxTextureDimension2D",
        "maxUniformBufferBindingSize",
      ] as const
    ) wanted[name] = adapter.limits[name];
    const facts = adapterFacts(adapter, backend);
    const kernels = chooseKernels(facts);
    // The features the chosen kernels need (shader-f16: f16 weights read as f16 by the matmul).
    const requiredFeatures: GPUFeatureName[] = kernels.nativeF16 ? ["shader-f16"] : [];
    const device = await adapter.requestDevice({ requiredLimits: wanted, requiredFeatures });
    // A WebGPU error (a shader that does not compile, an invalid binding) drops the work it names and
    // is only reported here: the next readback or sync throws it (throwIfFailed), so that results computed
    // from dropped work are never stored.
    const errors: string[] = [];
    device.addEventListener?.("uncapturederror", (e: Event) => {
      const message = (e as GPUUncapturedErrorEvent).error.message;
      console.error("WebGPU error:", message);
      errors.push(message);
    });
    const info: AdapterSummary = {
      // Chromium leaves description and device empty and names the implementation in vendor and
      // architecture ("google", "swiftshader").
      description: facts.description || facts.device ||
        [facts.vendor, facts.architecture].filter(Boolean).join(" ") || "unknown adapter",
      vendor: facts.vendor,
      architecture: facts.architecture,
      isFallback: facts.isFallbackAdapter ?? false,
      software: kernels.software,
      backend,
    };
    return new Gpu(adapter, device, info, kernels, errors, await CanvasReadback.create(device));
  }

  /** One line naming the adapter, for logs and result records. */
  describe(): string {
    const i = this.info;
    return `${i.description}${i.software ? ` (software: ${i.software})` : ""} vendor=${i.vendor} ` +
      `backend=${i.backend}`;
  }

  /** The device's limits (the adapter's real ones, requested at creation). */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  // ---------------------------------------------------------------- tensors

  /** Allocates a tensor; `data` (if given) is uploaded at creation, so it never races recorded work.
   *  `bufferBytes` (at least the tensor's bytes) sizes the buffer of a pooled tensor (poolBytes). */
  tensor(
    shape: readonly number[],
    data?: ArrayLike<number>,
    dtype: Dtype = "f32",
    bufferBytes?: number,
  ): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(size) || size < 0) throw new Error(`bad tensor shape [${shape}]`);
    const bytes = tensorBytes(size, dtype);
    const limit = this.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new Error(
        `tensor of shape [${shape}] needs ${bytes} bytes, over this adapter's maxStorageBufferBindingSize ` +
          `(${limit}); split it (see ChunkedWeight in engine/model.ts)`,
      );
    }
    const buffer = this.device.createBuffer({
      size: Math.max(Math.ceil(bytes / 4) * 4, bufferBytes ?? 0),
      // UNIFORM too: the texture matmuls read their activation operand through uniform windows.
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_SRC |
        GPUBufferUsage.COPY_DST,
      mappedAtCreation: data !== undefined,
    });
    if (data !== undefined) {
      if (data.length !== size) {
        throw new Error(`tensor data has ${data.length} values, shape [${shape}] needs ${size}`);
      }
      const range = buffer.getMappedRange();
      // 16-bit tensors take their checkpoint's bit patterns.
      if (dtype === "u32") new Uint32Array(range).set(data);
      else if (dtype === "f32") new Float32Array(range).set(data);
      else new Uint16Array(range).set(data);
      buffer.unmap();
    }
    return new Tensor(this, buffer, shape, dtype);
  }

  /**
   * Uploads small per-dispatch data (index tables, token ids) that kernels only read. Tables are kept
   * by content, so a loop that records the same table step after step uploads it once (and its
   * dispatches reuse their bind groups); the caller may use the tensor until the next submit, and
   * must neither write nor release it.
   */
  upload(shape: readonly number[], data: ArrayLike<number>, dtype: "f32" | "u32" = "f32"): Tensor {
    if (data.length > UPLOAD_KEPT_ELEMENTS) {
      const t = this.tensor(shape, data, dtype);
      this.transients.push(t.buffer);
      this.uploadBuffers.add(t.buffer);
      return t;
    }
    const key = `${dtype} ${shape} ${Array.prototype.join.call(data, ",")}`;
    let t = this.uploads.get(key);
    if (t) return t;
    if (this.uploads.size >= UPLOADS_KEPT) {
      // Destroyed after the next submit, like any upload: work recorded so far may still read them.
      for (const kept of this.uploads.values()) this.transients.push(kept.buffer);
      this.uploads.clear();
    }
    t = this.tensor(shape, data, dtype);
    this.uploads.set(key, t);
    this.uploadBuffers.add(t.buffer);
    return t;
  }

  /**
   * A tensor holding `data`: a recycled buffer filled in stream order (a copy from upload()'s table),
   * for inputs a loop makes again and again and releases after use. (tensor(shape, data) makes a new
   * buffer every time, which release() then adds to the pool for good.)
   */
  filled(shape: readonly number[], data: ArrayLike<number>, dtype: "f32" | "u32" = "f32"): Tensor {
    const t = this.empty(shape, dtype);
    this.copy(this.upload(shape, data, dtype), t);
    return t;
  }

  /** A zero-filled tensor: a recycled buffer cleared in stream order, or a new (zeroed) one. */
  zeros(shape: readonly number[], dtype: "f32" | "u32" = "f32"): Tensor {
    const buffer = this.takeFromPool(shape);
    if (!buffer) return this.tensor(shape, undefined, dtype, this.poolBytes(shape));
    const t = new Tensor(this, buffer, shape, dtype);
    this.clear(t);
    return t;
  }

  /** Records t = 0 (the whole buffer) in stream order: a buffer clear, cheaper than a kernel. */
  clear(t: Tensor): void {
    this.endPass();
    this.encoder!.clearBuffer(t.buffer);
    this.touch(t.buffer);
  }

  /**
   * A tensor with undefined contents, recycled from released buffers of the same byte size when
   * possible (creating buffers per op per forward pass is the slow part otherwise). Use it for
   * outputs that a kernel overwrites completely.
   */
  empty(shape: readonly number[], dtype: "f32" | "u32" = "f32"): Tensor {
    const buffer = this.takeFromPool(shape);
    return buffer
      ? new Tensor(this, buffer, shape, dtype)
      : this.tensor(shape, undefined, dtype, this.poolBytes(shape));
  }

  /**
   * The buffer size of a pooled tensor of this shape: its bytes rounded up to one of 8 sizes per
   * power of two (at most 1/8 more), so that activations whose row counts differ a little from batch
   * to batch (suffix parts, generation, FT batches) reuse each other's buffers, and their bind groups.
   * Kernels read only the tensor's own values; a tensor near the binding limit keeps its exact size.
   */
  private poolBytes(shape: readonly number[]): number {
    const bytes = Math.max(4, shape.reduce((a, b) => a * b, 1) * 4);
    const rounded = Math.ceil(bytes / poolStep(bytes)) * poolStep(bytes);
    return rounded <= this.limits.maxStorageBufferBindingSize ? rounded : bytes;
  }

  /** A released buffer of the shape's pool size (poolBytes), if the pool holds one. */
  private takeFromPool(shape: readonly number[]): GPUBuffer | undefined {
    const bytes = this.poolBytes(shape);
    const buffer = this.pool.get(bytes)?.pop();
    if (buffer) {
      this.pooledBytes -= buffer.size;
      this.pooledOrder.delete(buffer);
    } else this.poolMisses++;
    return buffer;
  }

  /**
   * Gives tensors back to the pool. Safe right away: any later kernel that reuses the buffer is
   * recorded after the kernels that used it, and the GPU runs one stream in order.
   */
  release(...tensors: (Tensor | undefined)[]): void {
    for (const t of tensors) {
      if (!t) continue;
      if (this.uploadBuffers.has(t.buffer)) {
        throw new Error("release: upload() tensors are not the caller's to release");
      }
      if (t.buffer.size > this.poolLimitBytes) {
        this.transients.push(t.buffer); // over the cap: destroyed after the next submit
        continue;
      }
      // Over the cap, the buffers pooled longest make room (destroyed after the next submit): the pool
      // keeps what the work of the moment uses (a sweep's generation caches, released and asked for
      // again block after block, stayed out of a pool full of an earlier phase's sizes).
      for (const [old, key] of this.pooledOrder) {
        if (this.pooledBytes + t.buffer.size <= this.poolLimitBytes) break;
        const list = this.pool.get(key)!;
        list.splice(list.indexOf(old), 1);
        this.pooledOrder.delete(old);
        this.pooledBytes -= old.size;
        this.transients.push(old);
      }
      // Kept under the largest pool size it holds, so that a buffer of any size (an exact one from
      // tensor(), or a pooled one) serves every request of that pool size (poolBytes).
      const key = Math.floor(t.buffer.size / poolStep(t.buffer.size)) * poolStep(t.buffer.size);
      const list = this.pool.get(key) ?? [];
      list.push(t.buffer);
      this.pool.set(key, list);
      this.pooledOrder.set(t.buffer, key);
      this.pooledBytes += t.buffer.size;
    }
  }

  /** Destroys every pooled buffer (after flushing work that may still use them). */
  trimPool(): void {
    this.flush();
    for (const list of this.pool.values()) for (const b of list) this.destroyBuffer(b);
    this.pool.clear();
    this.pooledOrder.clear();
    this.pooledBytes = 0;
  }

  /** Overwrites a tensor's contents. Flushes first so already-recorded kernels see the old values. */
  write(t: Tensor, data: ArrayLike<number>, offsetElements = 0): void {
    if (t.dtype === "f16" || t.dtype === "bf16") throw new Error(`write: a ${t.dtype} tensor is read-only`);
    this.flush();
    const arr = t.dtype === "u32" ? Uint32Array.from(data) : Float32Array.from(data);
    this.device.queue.writeBuffer(t.buffer, offsetElements * 4, arr);
    this.touch(t.buffer);
  }

  /** Records a copy of `count` elements between tensors (in stream order with dispatches). */
  copy(src: Tensor, dst: Tensor, count = src.size, srcOffset = 0, dstOffset = 0): void {
    this.endPass();
    this.encoder!.copyBufferToBuffer(src.buffer, srcOffset * 4, dst.buffer, dstOffset * 4, count * 4);
    this.touch(dst.buffer);
  }

  // ---------------------------------------------------------------- texture mirrors

  /** Marks a buffer as (possibly) changed by recorded work, so its texture mirror is refreshed. */
  private touch(buffer: GPUBuffer): void {
    for (const mirrors of Object.values(this.mirrors)) {
      const m = mirrors.get(buffer);
      if (m) m.stale = true;
    }
  }

  /** Whether mirror(t, rows, cols, layout) is possible here (see mirror()) and exists already or fits in
   *  the mirror budget. */
  canMirror(t: Tensor, rows: number, cols: number, layout: MirrorLayout = "stored"): boolean {
    if (!this.mirrorPossible(t, rows, cols, layout)) return false;
    const m = this.mirrors[layout].get(t.buffer);
    if (m && m.rows === rows && m.cols === cols) return true;
    return this.mirrorBytes + mirrorTextureBytes(rows, cols, layout) <= this.mirrorBudgetBytes;
  }

  /** Whether this adapter's textures can hold mirror(t, rows, cols, layout) (the conditions its doc gives). */
  private mirrorPossible(t: Tensor, rows: number, cols: number, layout: MirrorLayout): boolean {
    const transposed = layout === "transposed";
    const width = transposed ? rows : cols;
    return (transposed || width % 64 === 0) && Math.ceil(width / 4) <= this.limits.maxTextureDimension2D &&
      rows * cols <= t.size && rows >= 1 && cols >= 1 &&
      (!transposed || rows * cols * 4 <= this.limits.maxStorageBufferBindingSize);
  }

  /**
   * The first rows x cols floats of `t` (a row-major matrix [rows, cols]) as rgba32float textures:
   * "stored", the matrix as it is, cols/4 x rows texels (texel (c, r) = t[r, 4c .. 4c+3]); or
   * "transposed", its transpose [cols, rows], ceil(rows/4) x cols texels (texel (c, r) = t[4c .. 4c+3,
   * r], zeros past the last row: a vocabulary of 451 rows ends in a texel of 3), for kernels that read
   * a transposed weight along its rows (matmul_texture_kt). Split into chunks of
   * at most maxTextureDimension2D texture rows. Created on first use and refreshed, in stream order,
   * when recorded work has changed the buffer since the last copy; so a weight that kernels, copies
   * and writes update (edits, optimiser steps, undo) is always seen current. A buffer may have one
   * mirror of each layout. "stored" needs cols % 64 == 0 (a copy's bytes per row must be a multiple of
   * 256) and is a buffer-to-texture copy; "transposed" is written by a kernel
   * (shaders/mirror_transposed.wgsl) that reads the first rows x cols floats of the buffer through one
   * storage binding.
   */
  mirror(t: Tensor, rows: number, cols: number, layout: MirrorLayout = "stored"): TextureChunk[] {
    const maxDim = this.limits.maxTextureDimension2D;
    const transposed = layout === "transposed";
    // The texture's matrix: texel rows x floats per row (a transposed one's last texel maybe part padding).
    const [height, width] = transposed ? [cols, rows] : [rows, cols];
    const texelsPerRow = Math.ceil(width / 4);
    if (!this.mirrorPossible(t, rows, cols, layout)) {
      throw new Error(
        `mirror: a ${layout} [${rows},${cols}] texture of tensor [${t.shape}] is not possible here`,
      );
    }
    const mirrors = this.mirrors[layout];
    let m = mirrors.get(t.buffer);
    if (m && (m.rows !== rows || m.cols !== cols)) {
      this.dropMirror(t.buffer, layout);
      m = undefined;
    }
    if (m && !m.stale) return m.chunks;
    if (!m) {
      m = { rows, cols, stale: true, chunks: [] };
      for (let rowStart = 0; rowStart < height; rowStart += maxDim) {
        const chunkRows = Math.min(maxDim, height - rowStart);
        const texture = this.device.createTexture({
          size: [texelsPerRow, chunkRows],
          format: "rgba32float",
          usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
        });
        m.chunks.push({ texture, view: texture.createView(), rowStart, rows: chunkRows });
      }
      this.mirrorBytes += mirrorTextureBytes(rows, cols, layout);
      mirrors.set(t.buffer, m);
    }
    for (const { texture, view, rowStart, rows: chunkRows } of m.chunks) {
      if (transposed) {
        this.run(
          this.pipeline("mirror_transposed.wgsl", "mirror_transposed"),
          [{ tensor: t, offset: 0, size: rows * cols * 4 }, view],
          [cdiv(texelsPerRow, 8), cdiv(chunkRows, 8)],
          uniforms().u32(width, height, rowStart, chunkRows),
        );
        continue;
      }
      this.endPass();
      this.encoder!.copyBufferToTexture(
        { buffer: t.buffer, offset: rowStart * width * 4, bytesPerRow: width * 4, rowsPerImage: chunkRows },
        { texture },
        [width / 4, chunkRows],
      );
    }
    m.stale = false;
    return m.chunks;
  }

  /** Destroys a buffer and its texture mirrors (an activation's, read by the matmul_texture_*_at
   *  kernels or _tn), once the work recorded so far is submitted: a pooled buffer mirrored earlier would
   *  otherwise leave its textures, and their bytes in the mirror budget, behind. */
  private destroyBuffer(buffer: GPUBuffer): void {
    this.dropMirror(buffer);
    buffer.destroy();
  }

  /** Frees a buffer's texture mirrors (of one layout, or both), after submitting work that may read them. */
  dropMirror(buffer: GPUBuffer, only?: MirrorLayout): void {
    for (const layout of only ? [only] : (["stored", "transposed"] as const)) {
      const m = this.mirrors[layout].get(buffer);
      if (!m) continue;
      this.flush();
      for (const { texture } of m.chunks) texture.destroy();
      this.mirrorBytes -= mirrorTextureBytes(m.rows, m.cols, layout);
      this.mirrors[layout].delete(buffer);
    }
  }

  /** How readbacks reach the CPU here: "canvas" (engine/readback.ts: Deno without its 10 ms wait, up to
   *  CANVAS_READ_MAX_BYTES a read and CANVAS_READS_MAX reads) or "map" (GPUBuffer.mapAsync). */
  get readbackPath(): "canvas" | "map" {
    return this.canvasReadback?.stagingBytes(0) ? "canvas" : "map";
  }

  /** Reads tensors back as their stored bytes: one submit and one readback for all of them. */
  async readBytes(tensors: Tensor[]): Promise<ArrayBuffer[]> {
    this.ensureEncoder();
    this.endPass();
    const total = tensors.reduce((s, t) => s + t.bytes, 0);
    const canvasBytes = this.canvasReadback?.stagingBytes(total) ?? null;
    const staging = this.device.createBuffer({
      size: canvasBytes ?? Math.max(4, total),
      usage: canvasBytes === null
        ? GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST
        : GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    let off = 0;
    for (const t of tensors) {
      if (t.size > 0) this.encoder!.copyBufferToBuffer(t.buffer, 0, staging, off, t.bytes);
      off += t.bytes;
    }
    const split = (all: ArrayBuffer) => {
      let at = 0;
      return tensors.map((t) => all.slice(at, at += t.bytes));
    };
    let out: ArrayBuffer[];
    if (canvasBytes !== null) {
      const shape = this.canvasReadback!.record(this.encoder!, staging, total);
      this.flush();
      try {
        out = split(await this.canvasReadback!.collect(shape, total));
      } finally {
        staging.destroy();
      }
      // Deno reports a WebGPU error of the work read (the "uncapturederror" event that fills `errors`)
      // from a task of the next turn of its event loop: wait for that turn (microseconds; mapAsync's
      // 10 ms hid it), so that throwIfFailed below sees it.
      await new Promise((resolve) => setImmediate(resolve));
    } else {
      this.flush();
      await staging.mapAsync(GPUMapMode.READ);
      out = split(staging.getMappedRange());
      staging.unmap();
      staging.destroy();
    }
    this.throwIfFailed();
    return out;
  }

  /** Throws the WebGPU errors reported since the last readback or sync (the work they name was dropped,
   *  so what was read may be wrong), once. */
  private throwIfFailed(): void {
    if (this.errors.length === 0) return;
    const messages = this.errors.splice(0);
    throw new Error(
      `WebGPU reported ${messages.length} error(s) in the work before this readback: ${
        messages.slice(0, 3).join(" | ")
      }`,
    );
  }

  /** Reads tensors back as f32 (16-bit tensors widened, exactly); one submit for all of them. */
  async readMany(tensors: Tensor[]): Promise<Float32Array[]> {
    const bytes = await this.readBytes(tensors);
    return tensors.map((t, i) => {
      if (t.dtype === "f16" || t.dtype === "bf16") {
        return widenHalf({ dtype: t.dtype, bits: new Uint16Array(bytes[i], 0, t.size) });
      }
      return new Float32Array(bytes[i], 0, t.size);
    });
  }

  /** Overwrites a tensor with bytes read by readBytes (any dtype; a 16-bit weight's undo). */
  writeBytes(t: Tensor, bytes: ArrayBuffer): void {
    if (bytes.byteLength !== t.bytes) {
      throw new Error(`writeBytes: ${bytes.byteLength} bytes for a ${t.bytes}-byte tensor`);
    }
    this.flush();
    this.device.queue.writeBuffer(t.buffer, 0, bytes);
    this.touch(t.buffer);
  }

  /** Copies `t` to the CPU as f32 values (flushes pending work). */
  async read(t: Tensor): Promise<Float32Array> {
    return (await this.readMany([t]))[0];
  }

  /** Copies `t` to the CPU as u32 values (token ids, argmaxes; flushes pending work). */
  async readU32(t: Tensor): Promise<Uint32Array> {
    const f = await this.read(t);
    return new Uint32Array(f.buffer, f.byteOffset, f.length);
  }

  // ---------------------------------------------------------------- kernels

  /** A shader's WGSL followed by the function files it names on `// import: NAME.wgsl` lines. */
  shaderSource(file: string): string {
    let src = this.shaderSources.get(file);
    if (src === undefined) {
      const text = io().shader(file);
      const imports = [...text.matchAll(/^\/\/ import: (\S+\.wgsl)$/gm)].map((m) => this.shaderSource(m[1]));
      src = [text, ...imports].join("\n");
      this.shaderSources.set(file, src);
    }
    return src;
  }

  /** Compiles (once) the entry point `entry` of shaders/`file` specialised with `params`. */
  pipeline(file: string, entry: string, params: KernelParams = {}): GPUComputePipeline {
    const names = Object.keys(params).sort();
    const key = `${file}:${entry}:${names.map((n) => `${n}=${params[n]}`).join(",")}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const header = names.map((n) => {
        const v = params[n];
        return typeof v === "boolean" ? `const ${n} = ${v};` : `const ${n} = ${v}u;`;
      }).join("\n");
      // Directives (`enable f16;`) must precede every declaration, the parameters included.
      const source = this.shaderSource(file);
      const directives = source.match(/^enable \w+;$/gm) ?? [];
      const code = [...directives, header, source.replace(/^enable \w+;$/gm, "")].join("\n");
      const module = this.device.createShaderModule({ code, label: key });
      p = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: entry },
        label: key,
      });
      this.pipelines.set(key, p);
      const writable = [
        ...this.shaderSource(file).matchAll(/@binding\((\d+)\)\s*var<storage,\s*read_write>/g),
      ];
      this.writableBindings.set(p, writable.map((w) => Number(w[1])));
    }
    return p;
  }

  /**
   * Records one dispatch. `buffers` (tensors, byte windows of tensors, or texture views from
   * mirror()) bind to @group(0) @binding(0..n-1) in order (null for a binding this entry point does
   * not use); a uniform block, if given, binds to @binding(n) (the next index).
   */
  run(
    pipeline: GPUComputePipeline,
    buffers: (Tensor | TensorWindow | GPUTextureView | null)[],
    workgroups: [number, number?, number?],
    u?: Uniforms,
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxGroups = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxGroups || y > maxGroups || z > maxGroups) {
      throw new Error(
        `dispatch of [${x},${y},${z}] workgroups exceeds the adapter limit ${maxGroups} per dimension`,
      );
    }
    this.ensureEncoder();
    for (const i of this.writableBindings.get(pipeline)!) {
      const t = buffers[i];
      if (t instanceof Tensor) this.touch(t.buffer);
      else if (t && "tensor" in t) this.touch(t.tensor.buffer);
    }
    const slot = u ? this.uniformSlot(u) : -1;
    const key =
      [pipeline, ...buffers].map((t) =>
        t === null
          ? "-"
          : t instanceof Tensor
          ? this.idOf(t.buffer)
          : "tensor" in t
          ? `${this.idOf(t.tensor.buffer)}:${t.offset}:${t.size}`
          : this.idOf(t)
      ).join(" ") + ` u${slot}`;
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      bindGroup = this.olderBindGroups.get(key);
      if (bindGroup) this.keepBindGroup(key, bindGroup);
    }
    if (!bindGroup) {
      // null: a binding of the shader module that this entry point does not use (its layout has none).
      const entries: GPUBindGroupEntry[] = buffers.flatMap((t, i) =>
        t === null ? [] : [{
          binding: i,
          resource: t instanceof Tensor
            ? { buffer: t.buffer }
            : "tensor" in t
            ? { buffer: t.tensor.buffer, offset: t.offset, size: t.size }
            : t,
        }]
      );
      if (u) {
        entries.push({
          binding: buffers.length,
          resource: { buffer: this.uniformBuffer, offset: slot * UNIFORM_SLOT, size: UNIFORM_SLOT },
        });
      }
      bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      this.bindGroupsCreated++;
      this.keepBindGroup(key, bindGroup);
    }
    if (!this.pass) this.pass = this.encoder!.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    this.dispatchCount++;
    // Flush every so many dispatches, so a GPU starts on them while more are recorded. Only *after*
    // recording: tensors uploaded for this dispatch (gpu.upload) are destroyed after the submit that
    // uses them, never before.
    if (++this.dispatchesSinceFlush >= DISPATCHES_PER_SUBMIT) this.flush();
  }

  /** Keeps a bind group in the newer generation (which first becomes the older one when full). */
  private keepBindGroup(key: string, bindGroup: GPUBindGroup): void {
    if (this.bindGroups.size >= BIND_GROUPS_KEPT / 2) {
      this.olderBindGroups = this.bindGroups;
      this.bindGroups = new Map();
    }
    this.bindGroups.set(key, bindGroup);
  }

  /** A number naming a buffer, texture view or pipeline in bind-group keys. */
  private idOf(o: object): number {
    let id = this.objectIds.get(o);
    if (id === undefined) this.objectIds.set(o, id = this.nextObjectId++);
    return id;
  }

  /**
   * The slot of uniformBuffer holding `u`'s block, added (and uploaded at the next flush) if no slot
   * holds those bytes yet. A full buffer is left to the work already recorded (destroyed after the next
   * submit) and a fresh one starts, with no slots and no bind groups (theirs bind the old buffer).
   */
  private uniformSlot(u: Uniforms): number {
    const key = u.key();
    let slot = this.uniformSlots.get(key);
    if (slot !== undefined) return slot;
    if (this.uniformSlots.size === UNIFORM_SLOTS) {
      this.uploadUniforms();
      this.transients.push(this.uniformBuffer);
      this.uniformBuffer = this.newUniformBuffer();
      this.uniformSlots.clear();
      this.uploadedSlots = 0;
      this.bindGroups.clear();
      this.olderBindGroups.clear();
    }
    slot = this.uniformSlots.size;
    this.uniformSlots.set(key, slot);
    this.uniformStaging.set(u.bytes(), slot * UNIFORM_SLOT);
    return slot;
  }

  /** Uploads the uniform slots added since the last upload (before the submit that reads them). */
  private uploadUniforms(): void {
    const from = this.uploadedSlots, to = this.uniformSlots.size;
    if (to === from) return;
    const offset = from * UNIFORM_SLOT;
    this.device.queue.writeBuffer(
      this.uniformBuffer,
      offset,
      this.uniformStaging,
      offset,
      (to - from) * UNIFORM_SLOT,
    );
    this.uploadedSlots = to;
  }

  /** Opens a command encoder if none is recording. */
  private ensureEncoder(): void {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
  }

  /** Ends the open compute pass, if any, so that copies can be recorded. */
  private endPass(): void {
    this.ensureEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    this.uploadUniforms();
    this.dispatchesSinceFlush = 0;
    this.device.queue.submit([this.encoder!.finish()]);
    this.encoder = null;
    for (const b of this.transients) this.destroyBuffer(b);
    this.transients = [];
    this.submitCount++;
  }

  /** Waits until the GPU has finished everything submitted (for timing). */
  async sync(): Promise<void> {
    // A readback of nothing waits for the work before it like onSubmittedWorkDone, without Deno's 10 ms.
    if (this.canvasReadback) {
      await this.readBytes([]);
      return;
    }
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwIfFailed();
  }

  /** Destroys the device; the Gpu and its tensors are unusable afterwards. */
  destroy(): void {
    this.device.destroy();
  }
}

let shared: Promise<Gpu> | null = null;
/** The process-wide Gpu (tests and CLIs share one device). */
export function getGpu(): Promise<Gpu> {
  if (!shared) shared = Gpu.open();
  return shared;
}

/** Ceil division, for workgroup counts. */
export function cdiv(a: number, b: number): number {
  return Math.ceil(a / b);
}

/**
 * Runs tasks 0..count-1 side by side: task k starts once fits(running, k) holds for the tasks still
 * running (at once when none is). A readback waits for its work (a GPU's kernels, and 10 ms more where
 * Deno's mapAsync serves it: engine/readback.ts), so independent tasks that wait on readbacks overlap
 * one's wait with another's work. Returns, or throws the first failure, once every started task has settled.
 */
export async function sideBySide(
  count: number,
  fits: (running: number[], next: number) => boolean,
  run: (k: number) => Promise<void>,
): Promise<void> {
  const running = new Map<number, Promise<void>>();
  try {
    for (let k = 0; k < count; k++) {
      while (running.size > 0 && !fits([...running.keys()], k)) await Promise.race(running.values());
      running.set(k, run(k).finally(() => running.delete(k)));
    }
    await Promise.all(running.values());
  } finally {
    await Promise.allSettled(running.values());
  }
}
