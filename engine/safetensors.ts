// Safetensors reader/writer: the weight format of Hugging Face checkpoints.
//
// File layout:  [u64 little-endian N] [N bytes of UTF-8 JSON header] [data section]
// Header JSON:  { "name": {"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]}, ...,
//                 "__metadata__": {"key": "value"} }   (offsets are bytes from the data section start)
//
// Reading never loads a file whole: openSafetensors reads and validates only the header, and
// read(name) seeks to that one tensor (GPT-2 XL is 6 GB; its largest tensor alone is 321 MB).
// Every check happens before any tensor data is touched, so a malformed file fails at open
// with a SafetensorsError that names the file and the offending tensor, never halfway through
// a model load. Tensors come back as f32 whatever their stored float type (F32, F16, BF16).
// A header naming a tensor (or a field) twice is rejected: JSON.parse would silently keep the last.
// read(name) rejects NaN and +-Inf values (one NaN in an unused embedding row poisons every softmax)
// unless asked for the raw values: one more pass over the bits, about 1 ns a value on one CPU core.

import { writeAll, writeFileAtomic } from "./files.ts";
import { type ByteReader, io, joinPath as join } from "./io.ts";

/** Any problem with a safetensors file or checkpoint folder; `file` and `tensor` say where. */
export class SafetensorsError extends Error {
  /** `message` about `file` (and `tensor`, when one is concerned). */
  constructor(readonly file: string, readonly tensor: string | undefined, message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/** The stored dtypes Locus can load (converted to f32 on read). */
export type Dtype = "F32" | "F16" | "BF16";

const BYTES_PER_ELEMENT: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** Dtypes of the safetensors spec that Locus recognises but cannot load (no f32 meaning for a model weight). */
const UNSUPPORTED_DTYPES = new Set([
  "F64",
  "I64",
  "I32",
  "I16",
  "I8",
  "U64",
  "U32",
  "U16",
  "U8",
  "BOOL",
  "F8_E4M3",
  "F8_E5M2",
]);

/** The safetensors reference implementation's bound; a real header is a few kB to a few MB. */
export const MAX_HEADER_BYTES = 100_000_000;

/** The key of the optional string->string metadata record in the header. */
const METADATA_KEY = "__metadata__";

/** A tensor's stored element type and shape, as the header declares them. */
export interface TensorInfo {
  /** Element type as stored (reads convert to f32). */
  dtype: Dtype;
  /** Dimensions, row-major. */
  shape: number[];
}

/** One tensor of a parsed header; [begin, end) are byte offsets from the data section start. */
export interface TensorEntry extends TensorInfo {
  /** The tensor's name in the header. */
  name: string;
  /** First byte, from the data section start. */
  begin: number;
  /** One past the last byte, from the data section start. */
  end: number;
}

/** A parsed, validated safetensors header. */
export interface SafetensorsHeader {
  /** Header length N from the first 8 bytes; the data section starts at byte 8 + N. */
  headerLength: number;
  /** Byte offset of the data section in the file: 8 + headerLength. */
  dataStart: number;
  /** Data section size in bytes: fileSize - 8 - N. */
  dataSize: number;
  /** In header order. A Map, so a tensor named "__proto__" is just a name. */
  tensors: Map<string, TensorEntry>;
  /** The header's optional "__metadata__" string->string record ({} when absent). */
  metadata: Record<string, string>;
}

/** Options of a tensor read. */
export interface ReadOptions {
  /** Return NaN and +-Inf values instead of rejecting the tensor (raw round trips). */
  allowNonFinite?: boolean;
}

/** What a single file and a (sharded) checkpoint folder both offer. */
export interface TensorSource {
  /** Every tensor's name, in header (or weight_map) order. */
  names(): string[];
  /** A tensor's dtype and shape; throws SafetensorsError naming the file when there is no such tensor. */
  info(name: string): TensorInfo;
  /** The whole tensor as f32, row-major in `info(name).shape`; non-finite values are an error. */
  read(name: string, o?: ReadOptions): Promise<Float32Array>;
  /** An F16/BF16 tensor's stored bit patterns (checked for non-finite values like read). */
  readHalf(name: string): Promise<HalfTensor>;
  /** Closes the file(s); later reads throw. */
  close(): void;
}

/** A 16-bit tensor as stored: IEEE half ("f16") or bfloat16 ("bf16") bit patterns. */
export interface HalfTensor {
  /** Which 16-bit format the bits are in. */
  dtype: "f16" | "bf16";
  /** One stored bit pattern per element, row-major. */
  bits: Uint16Array;
}

// ---------------------------------------------------------------------------------------------
// Header parsing and validation

function quote(name: string): string {
  return JSON.stringify(name);
}

/** A value echoed into an error message, cut short: a corrupt header can hold megabytes in one field. */
function excerpt(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads and bounds-checks N from the first 8 bytes (the only part of the file needed to know how much more to read). */
function readHeaderLength(bytes: Uint8Array, file: string, fileSize: number): number {
  if (fileSize < 8 || bytes.length < 8) {
    throw new SafetensorsError(
      file,
      undefined,
      `file ${file} is ${fileSize} bytes, too short for the 8-byte header length`,
    );
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n === 0n) throw new SafetensorsError(file, undefined, `header length is 0 in file ${file}`);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      file,
      undefined,
      `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit in file ${file}`,
    );
  }
  if (8n + n > BigInt(fileSize)) {
    throw new SafetensorsError(
      file,
      undefined,
      `header length ${n} runs past the end of file ${file} (${fileSize} bytes; truncated?)`,
    );
  }
  return Number(n);
}

/** Parses and validates a header. `bytes` holds at least the first 8 + N bytes of a file of `fileSize` bytes. */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  fileName: string,
  fileSize: number,
): SafetensorsHeader {
  const fail = (message: string): never => {
    throw new SafetensorsError(fileName, undefined, `${message} in file ${fileName}`);
  };
  const headerLength = readHeaderLength(bytes, fileName, fileSize);
  const dataStart = 8 + headerLength;
  if (bytes.length < dataStart) fail(`only ${bytes.length} of the ${dataStart} header bytes were given`);

  let text = "";
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart));
  } catch {
    fail("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) return fail("header is not a JSON object");
  const duplicate = firstDuplicateKey(text);
  if (duplicate) {
    const [key, owner] = duplicate;
    if (owner === undefined) {
      throw new SafetensorsError(
        fileName,
        key,
        `tensor ${quote(key)} is named twice in the header of file ${fileName}`,
      );
    }
    if (owner === METADATA_KEY) fail(`key ${quote(key)} appears twice in ${METADATA_KEY}`);
    throw new SafetensorsError(
      fileName,
      owner,
      `field ${quote(key)} appears twice in the header entry of tensor ${quote(owner)} in file ${fileName}`,
    );
  }

  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, fileName);
    else tensors.set(name, parseTensorEntry(name, value, fileName, dataSize));
  }
  checkNoOverlaps(tensors, fileName);
  return { headerLength, dataStart, dataSize, tensors, metadata };
}

/**
 * The first key that some object of `text` (valid JSON) holds twice, with the top-level key of the
 * object it is in (undefined when the duplicate is itself a top-level key, i.e. a tensor name).
 * A scan of the raw text: JSON.parse keeps only the last of duplicate keys.
 */
function firstDuplicateKey(text: string): [string, string | undefined] | undefined {
  // One frame per open object or array: its keys so far (null for arrays), whether a key comes next,
  // and the key whose value is being read (names the object a nested duplicate is in).
  const stack: { keys: Set<string> | null; expectKey: boolean; current?: string }[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return [key, stack.length === 1 ? undefined : stack[0].current];
        top.keys.add(key);
        top.expectKey = false;
        top.current = key;
      }
      i = j;
    } else if (c === "{") stack.push({ keys: new Set(), expectKey: true });
    else if (c === "[") stack.push({ keys: null, expectKey: false });
    else if (c === "}" || c === "]") stack.pop();
    else if (c === ",") {
      const top = stack.at(-1);
      if (top?.keys) top.expectKey = true;
    }
  }
  return undefined;
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (!isPlainObject(value)) {
    throw new SafetensorsError(file, undefined, `${METADATA_KEY} is not an object in file ${file}`);
  }
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw new SafetensorsError(
        file,
        undefined,
        `${METADATA_KEY} value of key ${quote(key)} is not a string in file ${file}`,
      );
    }
  }
  // fromEntries defines own properties, so a key "__proto__" cannot change the prototype.
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function parseTensorEntry(name: string, value: unknown, file: string, dataSize: number): TensorEntry {
  const fail = (message: string): never => {
    throw new SafetensorsError(file, name, `${message} for tensor ${quote(name)} in file ${file}`);
  };
  if (!isPlainObject(value)) return fail("header entry is not an object");
  const { dtype, shape, data_offsets: offsets } = value;

  if (typeof dtype !== "string") return fail(`dtype is missing or not a string (${excerpt(dtype)})`);
  if (UNSUPPORTED_DTYPES.has(dtype)) return fail(`unsupported dtype ${dtype} (Locus loads F32, F16, BF16)`);
  if (!Object.hasOwn(BYTES_PER_ELEMENT, dtype)) return fail(`unknown dtype ${quote(dtype)}`);

  if (!Array.isArray(shape)) return fail(`shape is missing or not an array (${excerpt(shape)})`);
  // Bytes the shape needs, checked to stay exact (a safe integer) after every multiplication.
  let byteLength = BYTES_PER_ELEMENT[dtype as Dtype];
  for (const dim of shape) {
    if (!isCount(dim)) {
      return fail(`shape ${excerpt(shape)} has a dimension that is not a non-negative integer`);
    }
    byteLength *= dim;
    if (!Number.isSafeInteger(byteLength)) return fail(`shape ${excerpt(shape)} is too large`);
  }

  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    return fail(`data_offsets ${excerpt(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`data_offsets [${begin}, ${end}] begin after they end`);
  if (end > dataSize) fail(`data_offsets [${begin}, ${end}] run past the ${dataSize}-byte data section`);
  if (end - begin !== byteLength) {
    fail(
      `data_offsets [${begin}, ${end}] hold ${
        end - begin
      } bytes but ${dtype} shape [${shape}] needs ${byteLength}`,
    );
  }
  return { name, dtype: dtype as Dtype, shape: shape as number[], begin, end };
}

/**
 * Two tensors sharing bytes would alias each other's weights: reject. Empty tensors own no bytes.
 * Sorted by start, ranges are disjoint iff each starts at or after the previous one ends.
 */
function checkNoOverlaps(tensors: Map<string, TensorEntry>, file: string): void {
  const byStart = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const [prev, t] = [byStart[i - 1], byStart[i]];
    if (t.begin < prev.end) {
      throw new SafetensorsError(
        file,
        t.name,
        `data_offsets [${t.begin}, ${t.end}] overlap tensor ${
          quote(prev.name)
        } [${prev.begin}, ${prev.end}] ` +
          `for tensor ${quote(t.name)} in file ${file}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// f16 / bf16 -> f32

// Reinterprets bits through a shared scratch word (safetensors and every Deno target are little-endian).
const scratchBits = new Uint32Array(1);
const scratchFloat = new Float32Array(scratchBits.buffer);

function bitsToF32(bits: number): number {
  scratchBits[0] = bits;
  return scratchFloat[0];
}

/** IEEE half (1 sign, 5 exponent, 10 mantissa bits) -> the f32 bit pattern of the same value, exactly. */
function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // inf, NaN (payload kept)
  if (exponent !== 0) return (sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)) >>> 0; // normal: rebias
  if (mantissa === 0) return sign >>> 0; // +-0
  // Subnormal half, mantissa * 2^-24, is a normal f32: shift the leading 1 up to the implicit bit.
  let f32Exponent = 127 - 14;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    f32Exponent--;
  }
  return (sign | (f32Exponent << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

/** The value of one f16 bit pattern (0..0xffff). */
export function f16ToF32(bits: number): number {
  return bitsToF32(f16ToF32Bits(bits & 0xffff));
}

/** bf16 is the top half of an f32, so widening is a shift. */
export function bf16ToF32(bits: number): number {
  return bitsToF32(((bits & 0xffff) << 16) >>> 0);
}

let f16Table: Uint32Array | undefined; // f32 bits of all 65536 halves (256 kB), built on first use

/** Converts f16 bit patterns to f32 (bit-exact, via a lookup table). */
export function f16ArrayToF32(half: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  const out = new Uint32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = f16Table[half[i]];
  return new Float32Array(out.buffer);
}

/** Converts bf16 bit patterns to f32 (bit-exact). */
export function bf16ArrayToF32(half: Uint16Array): Float32Array {
  const out = new Uint32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = half[i] << 16;
  return new Float32Array(out.buffer);
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Bytes [offset, offset + length) of the file; a short file is an error, never partial data. */
async function readExactly(
  reader: ByteReader,
  offset: number,
  length: number,
  file: string,
  tensor: string | undefined,
  what: string,
): Promise<Uint8Array> {
  const bytes = await reader.read(offset, length);
  if (bytes.length < length) {
    const where = tensor === undefined ? "" : ` for tensor ${quote(tensor)}`;
    throw new SafetensorsError(
      file,
      tensor,
      `file ended after ${bytes.length} of the ${length} bytes of ${what}${where} in file ${file} (changed since it was opened?)`,
    );
  }
  // A fresh buffer starting at byte offset 0, so it can be viewed as u16/f32 without copying.
  return bytes.byteOffset === 0 && bytes.buffer.byteLength === length ? bytes : bytes.slice();
}

/** One open .safetensors file. Reads are queued so concurrent read() calls never interleave their seeks. */
export class SafetensorsFile implements TensorSource {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  /** Wraps an open file whose header is already parsed (openSafetensors does both). */
  constructor(readonly path: string, readonly header: SafetensorsHeader, private handle: ByteReader) {}

  /** A copy of the header's "__metadata__" record. */
  get metadata(): Record<string, string> {
    return { ...this.header.metadata };
  }

  /** Every tensor's name, in header order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  /** Whether the file holds a tensor of this name. */
  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  /** A tensor's dtype and a copy of its shape. */
  info(name: string): TensorInfo {
    const { dtype, shape } = this.entry(name);
    return { dtype, shape: [...shape] };
  }

  /** The whole tensor as f32, row-major; non-finite values are an error unless o.allowNonFinite. */
  read(name: string, o: ReadOptions = {}): Promise<Float32Array> {
    const { entry, bytes } = this.queueRead(name);
    return bytes.then((b) => {
      const values = toFloat32(b, entry.dtype);
      if (!o.allowNonFinite) checkFinite(values, entry, this.path);
      return values;
    });
  }

  /** An F16/BF16 tensor's stored bit patterns; an F32 tensor or non-finite values are an error. */
  readHalf(name: string): Promise<HalfTensor> {
    const { entry, bytes } = this.queueRead(name);
    if (entry.dtype === "F32") {
      throw new SafetensorsError(
        this.path,
        name,
        `tensor ${quote(name)} in file ${this.path} is F32, not 16-bit`,
      );
    }
    return bytes.then((b) => {
      checkFinite(toFloat32(b, entry.dtype), entry, this.path);
      return {
        dtype: entry.dtype === "F16" ? "f16" : "bf16",
        bits: new Uint16Array(b.buffer, 0, b.length / 2),
      };
    });
  }

  /** Queues the read of a tensor's bytes behind earlier reads (one file position at a time). */
  private queueRead(name: string): { entry: TensorEntry; bytes: Promise<Uint8Array> } {
    const entry = this.entry(name);
    if (this.closed) {
      throw new SafetensorsError(
        this.path,
        name,
        `read of tensor ${quote(name)} after file ${this.path} was closed`,
      );
    }
    const bytes = this.queue.then(() => this.readBytes(entry));
    this.queue = bytes.catch(() => {}); // one failed read must not block the next
    return { entry, bytes };
  }

  /** Closes the file (idempotent); later reads throw. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
  }

  /** The header entry of a tensor, or a SafetensorsError naming the file and tensor. */
  private entry(name: string): TensorEntry {
    const entry = this.header.tensors.get(name);
    if (!entry) throw new SafetensorsError(this.path, name, `no tensor ${quote(name)} in file ${this.path}`);
    return entry;
  }

  /** A tensor's raw bytes [begin, end) of the data section. */
  private async readBytes(t: TensorEntry): Promise<Uint8Array> {
    try {
      return await readExactly(
        this.handle,
        this.header.dataStart + t.begin,
        t.end - t.begin,
        this.path,
        t.name,
        "its data",
      );
    } catch (e) {
      if (e instanceof SafetensorsError) throw e;
      throw new SafetensorsError(
        this.path,
        t.name,
        `cannot read tensor ${quote(t.name)} in file ${this.path}: ${(e as Error).message}`,
      );
    }
  }
}

/** Rejects a tensor holding NaN or +-Inf, naming the first such element and how many there are. */
function checkFinite(values: Float32Array, t: TensorEntry, file: string): void {
  // An f32 is NaN or infinite exactly when its 8 exponent bits are all ones.
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let first = -1, count = 0;
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & 0x7f800000) === 0x7f800000) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (first < 0) return;
  // Row-major index -> coordinates in the tensor's shape, e.g. 12345 in [50257, 768] -> [16, 57].
  const at: number[] = [];
  let rest = first;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    at.unshift(rest % t.shape[d]);
    rest = Math.floor(rest / t.shape[d]);
  }
  throw new SafetensorsError(
    file,
    t.name,
    `tensor ${quote(t.name)} in file ${file} holds ${count} non-finite value${count > 1 ? "s" : ""}; ` +
      `the first, ${values[first]}, at flat index ${first} ([${at}] of shape [${t.shape}])`,
  );
}

/** A 16-bit tensor's values as f32 (exact). */
export function widenHalf(t: HalfTensor): Float32Array {
  return t.dtype === "f16" ? f16ArrayToF32(t.bits) : bf16ArrayToF32(t.bits);
}

function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  if (dtype === "F32") return new Float32Array(bytes.buffer, 0, bytes.length / 4);
  const half = new Uint16Array(bytes.buffer, 0, bytes.length / 2);
  return dtype === "F16" ? f16ArrayToF32(half) : bf16ArrayToF32(half);
}

/** Opens a .safetensors file, reading and validating only its header against the real file size. */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let handle: ByteReader | null;
  try {
    handle = await io().open(path);
  } catch (e) {
    throw new SafetensorsError(path, undefined, `cannot open ${path}: ${(e as Error).message}`);
  }
  if (!handle) throw new SafetensorsError(path, undefined, `cannot open ${path}: no such file`);
  try {
    const prefix = await readExactly(
      handle,
      0,
      Math.min(8, handle.size),
      path,
      undefined,
      "the header length",
    );
    const headerLength = readHeaderLength(prefix, path, handle.size);
    const headerBytes = new Uint8Array(8 + headerLength);
    headerBytes.set(prefix);
    headerBytes.set(await readExactly(handle, 8, headerLength, path, undefined, "the header"), 8);
    return new SafetensorsFile(path, parseSafetensorsHeader(headerBytes, path, handle.size), handle);
  } catch (e) {
    handle.close();
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, undefined, `cannot read ${path}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint folders (single file or sharded)

/** A Hugging Face model folder: model.safetensors, or shards listed in model.safetensors.index.json. */
export class Checkpoint implements TensorSource {
  /** Wraps open files and the tensor-to-file map (openCheckpoint builds them from the folder). */
  constructor(
    /** The model folder. */
    readonly dir: string,
    /** Every open file (one, or one per shard). */
    readonly files: SafetensorsFile[],
    /** tensor name -> the file holding it, in weight_map (or header) order. */
    private owners: Map<string, SafetensorsFile>,
  ) {}

  /** Every tensor's name, in weight_map (or header) order. */
  names(): string[] {
    return [...this.owners.keys()];
  }

  /** A tensor's dtype and shape, from the file holding it. */
  info(name: string): TensorInfo {
    return this.owner(name).info(name);
  }

  /** The whole tensor as f32, row-major, from the file holding it (see SafetensorsFile.read). */
  read(name: string, o?: ReadOptions): Promise<Float32Array> {
    return this.owner(name).read(name, o);
  }

  /** An F16/BF16 tensor's stored bit patterns, from the file holding it. */
  readHalf(name: string): Promise<HalfTensor> {
    return this.owner(name).readHalf(name);
  }

  /** Closes every file. */
  close(): void {
    for (const f of this.files) f.close();
  }

  /** The file holding a tensor, or a SafetensorsError naming the folder and tensor. */
  private owner(name: string): SafetensorsFile {
    const file = this.owners.get(name);
    if (!file) {
      throw new SafetensorsError(this.dir, name, `no tensor ${quote(name)} in checkpoint ${this.dir}`);
    }
    return file;
  }
}

async function isFile(path: string): Promise<boolean> {
  const reader = await io().open(path).catch(() => null);
  reader?.close();
  return reader !== null;
}

/**
 * Opens a checkpoint folder. Every shard header is validated, and every weight_map entry checked
 * to exist in its shard, before this returns: a broken checkpoint fails here, not mid-load.
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const single = join(dir, "model.safetensors");
  const indexPath = join(dir, "model.safetensors.index.json");
  if (await isFile(single)) {
    const file = await openSafetensors(single);
    return new Checkpoint(dir, [file], new Map(file.names().map((n) => [n, file])));
  }
  if (!(await isFile(indexPath))) {
    throw new SafetensorsError(
      dir,
      undefined,
      `folder ${dir} has neither model.safetensors nor model.safetensors.index.json`,
    );
  }

  let indexText: string | null;
  try {
    indexText = await io().readText(indexPath);
  } catch (e) {
    throw new SafetensorsError(indexPath, undefined, `cannot read ${indexPath}: ${(e as Error).message}`);
  }
  if (indexText === null) throw new SafetensorsError(indexPath, undefined, `cannot read ${indexPath}`);
  const weightMap = parseIndex(indexText, indexPath);
  const shards = new Map<string, SafetensorsFile>(); // shard file name -> open file
  try {
    for (const shardName of new Set(weightMap.values())) {
      shards.set(shardName, await openSafetensors(join(dir, shardName)));
    }
    const owners = new Map<string, SafetensorsFile>();
    for (const [tensor, shardName] of weightMap) {
      const shard = shards.get(shardName)!;
      if (!shard.has(tensor)) {
        throw new SafetensorsError(
          shard.path,
          tensor,
          `tensor ${quote(tensor)} is listed in ${indexPath} but missing from file ${shard.path}`,
        );
      }
      owners.set(tensor, shard);
    }
    return new Checkpoint(dir, [...shards.values()], owners);
  } catch (e) {
    for (const shard of shards.values()) shard.close();
    throw e;
  }
}

/** Validates model.safetensors.index.json and returns its weight_map (tensor name -> shard file name). */
function parseIndex(text: string, indexPath: string): Map<string, string> {
  const fail = (message: string, tensor?: string): never => {
    throw new SafetensorsError(indexPath, tensor, `${message} in file ${indexPath}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json) || !isPlainObject(json.weight_map)) return fail(`no "weight_map" object`);
  const weightMap = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(json.weight_map)) {
    // Shards live next to the index: a path could point anywhere on disk.
    if (typeof shard !== "string" || shard === "" || shard === "." || shard === ".." || /[/\\]/.test(shard)) {
      fail(
        `weight_map entry ${excerpt(shard)} for tensor ${quote(tensor)} is not a file name in the folder`,
        tensor,
      );
    }
    weightMap.set(tensor, shard as string);
  }
  if (weightMap.size === 0) fail(`"weight_map" is empty`);
  return weightMap;
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Writes F32 tensors as a safetensors file (encodeSafetensors). Deterministic (names and metadata keys sorted), data
 * section 8-byte aligned (header padded with spaces), and atomic: written to a temp file in the
 * same folder, synced, then renamed over `path`, so a killed write never leaves a half file.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, { shape: number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
): Promise<void> {
  const parts = encodeSafetensors(path, tensors, metadata);
  await writeFileAtomic(path, async (file) => {
    for (const part of parts) await writeAll(file, part);
  });
}

/**
 * The bytes of a safetensors file as parts (the header, then each tensor's data as a view of its
 * array), for writeSafetensors and for a web page's download (`path` only names the file in errors).
 */
export function encodeSafetensors(
  path: string,
  tensors: Record<string, { shape: number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const names = Object.keys(tensors).sort();
  const fields: string[] = [];
  if (metadata) {
    const keys = Object.keys(metadata).sort();
    for (const k of keys) {
      if (typeof metadata[k] !== "string") {
        throw new SafetensorsError(
          path,
          undefined,
          `metadata value of key ${quote(k)} is not a string for file ${path}`,
        );
      }
    }
    fields.push(`${quote(METADATA_KEY)}:{${keys.map((k) => `${quote(k)}:${quote(metadata[k])}`).join(",")}}`);
  }
  let offset = 0;
  for (const name of names) {
    const { shape, data } = tensors[name];
    const fail = (message: string): never => {
      throw new SafetensorsError(path, name, `${message} for tensor ${quote(name)} written to file ${path}`);
    };
    if (name === METADATA_KEY) fail(`${METADATA_KEY} is reserved for metadata`);
    if (!(data instanceof Float32Array)) fail("data is not a Float32Array");
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      fail(`shape ${excerpt(shape)} is not a list of non-negative integers`);
    }
    const numel = shape.reduce((a, b) => a * b, 1);
    if (numel !== data.length) fail(`shape [${shape}] has ${numel} elements but data has ${data.length}`);
    // Fields built by hand (not JSON.stringify of an object) so integer-like names keep the sorted order.
    fields.push(
      `${quote(name)}:{"dtype":"F32","shape":[${shape.join(",")}],"data_offsets":[${offset},${
        offset + data.byteLength
      }]}`,
    );
    offset += data.byteLength;
  }
  const json = new TextEncoder().encode(`{${fields.join(",")}}`);
  const headerLength = Math.ceil((8 + json.length) / 8) * 8 - 8; // data section starts at a multiple of 8
  const prefix = new Uint8Array(8 + headerLength).fill(0x20); // spaces: valid trailing JSON whitespace
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerLength), true);
  prefix.set(json, 8);

  return [
    prefix,
    ...names.map((name) => {
      const { data } = tensors[name];
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    }),
  ];
}
