// Builds small safetensors files in memory for tests: any stored dtype, raw bytes, and headers
// that may be deliberately wrong (the reader's own writer only writes valid F32 files).

/** One tensor as stored: its dtype name, shape and raw little-endian data bytes. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** The bytes of an array of 16-bit patterns (f16 or bf16 bits), little-endian. */
export function u16Bytes(bits: number[]): Uint8Array {
  return new Uint8Array(new Uint16Array(bits).buffer);
}

export function f32Bytes(values: number[] | Float32Array): Uint8Array {
  const f = Float32Array.from(values);
  return new Uint8Array(f.buffer);
}

/**
 * A header object and data section for tensors stored back to back in the given order, as a
 * writer would lay them out. Returned separately so tests can corrupt the header before assembling.
 */
export function layoutSafetensors(
  tensors: [string, RawTensor][],
  metadata?: Record<string, string>,
): { header: Record<string, unknown>; data: Uint8Array } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const data = new Uint8Array(tensors.reduce((n, [, t]) => n + t.bytes.length, 0));
  let offset = 0;
  for (const [name, t] of tensors) {
    // defineProperty: a tensor named "__proto__" must become a key, not the prototype.
    Object.defineProperty(header, name, {
      value: { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] },
      enumerable: true,
      configurable: true,
      writable: true,
    });
    data.set(t.bytes, offset);
    offset += t.bytes.length;
  }
  return { header, data };
}

/**
 * File bytes: 8-byte little-endian header length, header text, data. `headerLength` overrides the
 * length field (default: the true UTF-8 length of `headerText`), to build lying prefixes.
 */
export function assembleSafetensors(
  headerText: string | Uint8Array,
  data: Uint8Array,
  headerLength?: bigint,
): Uint8Array {
  const header = typeof headerText === "string" ? new TextEncoder().encode(headerText) : headerText;
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** A complete valid file from tensors stored back to back. */
export function buildSafetensors(
  tensors: [string, RawTensor][],
  metadata?: Record<string, string>,
): Uint8Array {
  const { header, data } = layoutSafetensors(tensors, metadata);
  return assembleSafetensors(JSON.stringify(header), data);
}
