// Safetensors reader/writer: conversions against float64 formulas, round trips, one test per
// malformation (the error must name the file and the tensor), and property-based tests that
// random valid files round-trip exactly and random corruptions only ever raise SafetensorsError.
import assert from "node:assert/strict";
import fc from "npm:fast-check@3";
import {
  bf16ArrayToF32,
  bf16ToF32,
  f16ArrayToF32,
  f16ToF32,
  openCheckpoint,
  openSafetensors,
  parseSafetensorsHeader,
  SafetensorsError,
  type SafetensorsHeader,
  writeSafetensors,
} from "../engine/safetensors.ts";
import {
  assembleSafetensors,
  buildSafetensors,
  f32Bytes,
  layoutSafetensors,
  type RawTensor,
  u16Bytes,
} from "./fixtures_safetensors.ts";
import { randomArray } from "./util.ts";

// A fixed seed keeps the property tests reproducible; fast-check prints the failing case if one fails.
const SEED = 20240611;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "locus-safetensors-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** How many file descriptors of this process point into `dir` (Linux /proc): catches leaked handles. */
function openFilesUnder(dir: string): number {
  let count = 0;
  for (const fd of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${fd.name}`).startsWith(dir)) count++;
    } catch { /* the fd used to list the folder is gone by now */ }
  }
  return count;
}

/** Runs fn, which must throw a SafetensorsError, and returns that error. */
async function expectSafetensorsError(fn: () => unknown): Promise<SafetensorsError> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof SafetensorsError) return e;
    throw new Error(`expected a SafetensorsError, got ${e}`);
  }
  throw new Error("expected a SafetensorsError, but nothing was thrown");
}

function assertSameBits(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.deepEqual(
    new Uint32Array(actual.buffer, actual.byteOffset, actual.length),
    new Uint32Array(expected.buffer, expected.byteOffset, expected.length),
    what,
  );
}

// ---------------------------------------------------------------------------------------------
// float64 references for the 16-bit formats, written from the definitions, not from bit tricks

function f16Reference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function bf16Reference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 7) & 0xff, mantissa = h & 0x7f;
  if (exponent === 0xff) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * 2 ** -133;
  return sign * (1 + mantissa / 128) * 2 ** (exponent - 127);
}

/** What reading `bytes` stored as `dtype` must give, as float64 values (all exactly representable in f32). */
function expectedValues(bytes: Uint8Array, dtype: string): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  if (dtype === "F32") { for (let i = 0; i < bytes.length; i += 4) out.push(view.getFloat32(i, true)); }
  else {
    const ref = dtype === "F16" ? f16Reference : bf16Reference;
    for (let i = 0; i < bytes.length; i += 2) out.push(ref(view.getUint16(i, true)));
  }
  return out;
}

function assertValues(actual: Float32Array, expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Object.is(actual[i], expected[i]), `${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Conversions

Deno.test("f16 -> f32: known bit patterns (zeros, normals, subnormals, max, inf, NaN)", () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x8000, -0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0400, 2 ** -14],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x7e00, NaN],
    [0xfe01, NaN],
  ];
  const array = f16ArrayToF32(new Uint16Array(cases.map(([h]) => h)));
  cases.forEach(([h, v], i) => {
    assert.ok(Object.is(f16ToF32(h), v), `f16ToF32(0x${h.toString(16)}) = ${f16ToF32(h)}, expected ${v}`);
    assert.ok(Object.is(array[i], v), `f16ArrayToF32 0x${h.toString(16)} = ${array[i]}, expected ${v}`);
  });
  // NaN payloads and signs survive: 0x7e01 (quiet NaN, payload 1) -> f32 bits 0x7fc02000.
  assert.equal(new Uint32Array(f16ArrayToF32(new Uint16Array([0x7e01, 0xfd00])).buffer)[0], 0x7fc02000);
  assert.equal(new Uint32Array(f16ArrayToF32(new Uint16Array([0x7e01, 0xfd00])).buffer)[1], 0xffa00000);
});

Deno.test("f16 -> f32: all 65536 patterns match the float64 definition", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const converted = f16ArrayToF32(all);
  for (let h = 0; h < 65536; h++) {
    const expected = f16Reference(h);
    assert.ok(
      Object.is(converted[h], expected),
      `0x${h.toString(16)}: got ${converted[h]}, expected ${expected}`,
    );
    assert.ok(Object.is(f16ToF32(h), expected), `scalar 0x${h.toString(16)}`);
  }
});

Deno.test("bf16 -> f32: known bit patterns and all 65536 patterns", () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x8000, -0],
    [0x3f80, 1],
    [0xc040, -3],
    [0x3eab, 0.333984375],
    [0x0080, 2 ** -126],
    [0x0001, 2 ** -133],
    [0x007f, 127 * 2 ** -133],
    [0x7f7f, (2 - 2 ** -7) * 2 ** 127],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
    [0x7fc0, NaN],
  ];
  for (const [h, v] of cases) {
    assert.ok(Object.is(bf16ToF32(h), v), `bf16ToF32(0x${h.toString(16)}) = ${bf16ToF32(h)}, expected ${v}`);
  }
  const converted = bf16ArrayToF32(new Uint16Array(65536).map((_, i) => i));
  for (let h = 0; h < 65536; h++) {
    assert.ok(
      Object.is(converted[h], bf16Reference(h)),
      `0x${h.toString(16)}: got ${converted[h]}, expected ${bf16Reference(h)}`,
    );
    assert.equal(new Uint32Array(converted.buffer)[h], h << 16 >>> 0, `bits of 0x${h.toString(16)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Writing and reading

Deno.test("write/read round trip: values bit-exact, metadata, sorted names, aligned, deterministic, atomic", async () => {
  await withTempDir(async (dir) => {
    const tensors = {
      "wte.weight": { shape: [5, 4], data: randomArray(20, 1) },
      "10": { shape: [2], data: new Float32Array([NaN, -0]) },
      "9": { shape: [1, 1], data: new Float32Array([Infinity]) },
      "scalar": { shape: [], data: new Float32Array([3.5]) },
      "empty": { shape: [0, 3], data: new Float32Array(0) },
      "ünï/cødé": { shape: [3], data: new Float32Array([1e-45, -3.4e38, 7]) },
    };
    const metadata = { format: "pt", note: "ünïcode" };
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, tensors, metadata);

    const bytes = await Deno.readFile(path);
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal((8 + headerLength) % 8, 0, "data section starts 8-byte aligned");
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    const sorted = Object.keys(tensors).sort();
    const positions = sorted.map((n) => headerText.indexOf(JSON.stringify(n) + ":"));
    assert.ok(
      positions.every((p, i) => p > 0 && (i === 0 || p > positions[i - 1])),
      `names in sorted order: ${headerText}`,
    );

    await writeSafetensors(`${dir}/again.safetensors`, tensors, metadata);
    assert.deepEqual(await Deno.readFile(`${dir}/again.safetensors`), bytes, "same input, same bytes");
    const leftovers = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(leftovers, ["again.safetensors", "model.safetensors"], "no temp files left");

    const file = await openSafetensors(path);
    try {
      assert.deepEqual(file.names().sort(), sorted);
      assert.deepEqual(file.metadata, metadata);
      for (const [name, t] of Object.entries(tensors)) {
        assert.deepEqual(file.info(name), { dtype: "F32", shape: t.shape });
        assertSameBits(await file.read(name, { allowNonFinite: true }), t.data, name);
      }
    } finally {
      file.close();
    }
  });
});

Deno.test("writer rejects bad input naming the tensor and leaves no file behind", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.safetensors`;
    const mismatch = await expectSafetensorsError(() =>
      writeSafetensors(path, { "h.0.w": { shape: [2, 3], data: new Float32Array(5) } })
    );
    assert.equal(mismatch.tensor, "h.0.w");
    assert.match(mismatch.message, /"h\.0\.w".*out\.safetensors/);
    assert.match(mismatch.message, /6 elements but data has 5/);
    const badShape = await expectSafetensorsError(() =>
      writeSafetensors(path, { w: { shape: [-1], data: new Float32Array(0) } })
    );
    assert.equal(badShape.tensor, "w");
    const reserved = await expectSafetensorsError(() =>
      writeSafetensors(path, { __metadata__: { shape: [0], data: new Float32Array(0) } })
    );
    assert.match(reserved.message, /reserved/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("F16 and BF16 files built by hand read back as f32", async () => {
  await withTempDir(async (dir) => {
    const f16Bits = [0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x8000];
    const bf16Bits = [0x3f80, 0xc040, 0x0080, 0xff80];
    const path = `${dir}/mixed.safetensors`;
    await Deno.writeFile(
      path,
      buildSafetensors([
        ["half", { dtype: "F16", shape: [2, 3], bytes: u16Bytes(f16Bits) }],
        ["brain", { dtype: "BF16", shape: [4], bytes: u16Bytes(bf16Bits) }],
        ["full", { dtype: "F32", shape: [1], bytes: f32Bytes([0.1]) }],
      ]),
    );
    const file = await openSafetensors(path);
    try {
      assert.deepEqual(file.info("half"), { dtype: "F16", shape: [2, 3] });
      assertValues(
        await file.read("half", { allowNonFinite: true }),
        [1, -2, 2 ** -24, 65504, Infinity, -0],
        "half",
      );
      assertValues(
        await file.read("brain", { allowNonFinite: true }),
        [1, -3, 2 ** -126, -Infinity],
        "brain",
      );
      assertValues(await file.read("full"), [Math.fround(0.1)], "full");
    } finally {
      file.close();
    }
  });
});

Deno.test("reader rejects NaN and +-Inf in F32, F16 and BF16 tensors, naming the tensor and the first index", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/nonfinite.safetensors`;
    await Deno.writeFile(
      path,
      buildSafetensors([
        ["ok", { dtype: "F32", shape: [2], bytes: f32Bytes([1, -2]) }],
        ["h.0.w", { dtype: "F32", shape: [2, 3], bytes: f32Bytes([0, 1, 2, 3, NaN, -Infinity]) }],
        ["half", { dtype: "F16", shape: [3], bytes: u16Bytes([0x3c00, 0x7c00, 0x7e00]) }],
        ["brain", { dtype: "BF16", shape: [1, 2], bytes: u16Bytes([0xff80, 0x3f80]) }],
      ]),
    );
    const file = await openSafetensors(path);
    try {
      assertValues(await file.read("ok"), [1, -2], "finite tensor");
      const expected: [string, RegExp][] = [
        [
          "h.0.w",
          /"h\.0\.w" in file .* holds 2 non-finite values; the first, NaN, at flat index 4 \(\[1,1\] of shape \[2,3\]\)/,
        ],
        [
          "half",
          /"half" .* holds 2 non-finite values; the first, Infinity, at flat index 1 \(\[1\] of shape \[3\]\)/,
        ],
        ["brain", /"brain" .* holds 1 non-finite value; the first, -Infinity, at flat index 0 \(\[0,0\]/],
      ];
      for (const [name, message] of expected) {
        const e = await expectSafetensorsError(() => file.read(name));
        assert.equal(e.tensor, name);
        assert.equal(e.file, path);
        assert.match(e.message, message);
        assert.ok(e.message.includes(path), e.message);
      }
      // The raw values stay readable on request (bit-exact round trips of anything stored).
      assertValues(await file.read("h.0.w", { allowNonFinite: true }), [0, 1, 2, 3, NaN, -Infinity], "raw");
    } finally {
      file.close();
    }
  });
});

Deno.test("reader: unknown tensor, read after close, concurrent reads, file shrunk after open", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/m.safetensors`;
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (let i = 0; i < 6; i++) tensors[`t${i}`] = { shape: [100 + i], data: randomArray(100 + i, i) };
    await writeSafetensors(path, tensors);

    const file = await openSafetensors(path);
    const unknown = await expectSafetensorsError(() => file.info("nope"));
    assert.equal(unknown.tensor, "nope");
    assert.match(unknown.message, new RegExp(`"nope".*${path}`));
    await expectSafetensorsError(() => file.read("nope"));

    // Reads share one handle: queued seeks must not interleave.
    const names = [...file.names(), ...file.names()];
    const results = await Promise.all(names.map((n) => file.read(n)));
    results.forEach((r, i) => assertSameBits(r, tensors[names[i]].data, names[i]));

    // The file shrinks under us: the read fails, it does not return a short or zero-filled tensor.
    await Deno.truncate(path, (await Deno.stat(path)).size - 1);
    const shrunk = await expectSafetensorsError(() => file.read("t5"));
    assert.equal(shrunk.tensor, "t5");
    assert.match(shrunk.message, /file ended after/);
    assertSameBits(await file.read("t0"), tensors.t0.data, "t0 still readable after the failed read");

    file.close();
    assert.equal(openFilesUnder(dir), 0);
    const closed = await expectSafetensorsError(() => file.read("t0"));
    assert.match(closed.message, /closed/);
  });
});

Deno.test("reader handles offsets past 4 GB without reading the file (sparse file)", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/huge.safetensors`;
    const bigBytes = 4 * 2 ** 30 + 8; // > 2^32, so 32-bit offset arithmetic would wrap
    const tail = new Float32Array([1.5, -2, 3.25, 4]);
    const { header } = layoutSafetensors([
      ["big", { dtype: "F32", shape: [bigBytes / 4], bytes: new Uint8Array(0) }],
      ["tail", { dtype: "F32", shape: [4], bytes: new Uint8Array(0) }],
    ]);
    (header.big as { data_offsets: number[] }).data_offsets = [0, bigBytes];
    (header.tail as { data_offsets: number[] }).data_offsets = [bigBytes, bigBytes + 16];
    const prefix = assembleSafetensors(JSON.stringify(header), new Uint8Array(0));
    const handle = await Deno.open(path, { write: true, create: true });
    await handle.write(prefix);
    await handle.seek(prefix.length + bigBytes, Deno.SeekMode.Start); // the hole stays unallocated
    await handle.write(new Uint8Array(tail.buffer));
    handle.close();

    const start = performance.now();
    const file = await openSafetensors(path);
    try {
      assert.deepEqual(file.info("big").shape, [2 ** 30 + 2]);
      assertSameBits(await file.read("tail"), tail, "tail");
    } finally {
      file.close();
    }
    assert.ok(performance.now() - start < 2000, "open + one small read must not scan the 4 GB file");
  });
});

// ---------------------------------------------------------------------------------------------
// One test per malformation: the error names the file and (where there is one) the tensor

const baseTensors: [string, RawTensor][] = [
  ["w", { dtype: "F32", shape: [2, 2], bytes: f32Bytes([1, 2, 3, 4]) }], // data bytes [0, 16)
  ["b", { dtype: "F32", shape: [2], bytes: f32Bytes([5, 6]) }], // data bytes [16, 24)
];

/** The base file with header[name] patched (field values replaced), or the whole entry replaced. */
function patched(name: string, patch: Record<string, unknown> | unknown, replaceEntry = false): Uint8Array {
  const { header, data } = layoutSafetensors(baseTensors);
  header[name] = replaceEntry ? patch : { ...(header[name] as object), ...(patch as object) };
  return assembleSafetensors(JSON.stringify(header), data);
}

const validBase = buildSafetensors(baseTensors);
const validHeaderText = JSON.stringify(layoutSafetensors(baseTensors).header);
const baseData = layoutSafetensors(baseTensors).data;

const malformations: { what: string; bytes: Uint8Array; tensor?: string; message: RegExp }[] = [
  { what: "file shorter than the length field", bytes: new Uint8Array(5), message: /5 bytes, too short/ },
  { what: "header length 0", bytes: assembleSafetensors("", baseData, 0n), message: /header length is 0/ },
  {
    what: "header length over 100 MB",
    bytes: assembleSafetensors(validHeaderText, baseData, 2n ** 40n),
    message: /exceeds the 100000000-byte limit/,
  },
  {
    what: "header length beyond the file",
    bytes: assembleSafetensors(validHeaderText, baseData, BigInt(validBase.length - 7)),
    message: /runs past the end/,
  },
  {
    what: "header length with high bits set",
    bytes: assembleSafetensors(validHeaderText, baseData, 2n ** 64n - 1n),
    message: /exceeds/,
  },
  {
    what: "invalid UTF-8",
    bytes: assembleSafetensors(new Uint8Array([0x7b, 0xff, 0x7d]), baseData),
    message: /not valid UTF-8/,
  },
  { what: "not JSON", bytes: assembleSafetensors('{"w": ', baseData), message: /not valid JSON/ },
  { what: "JSON array", bytes: assembleSafetensors("[1, 2]", baseData), message: /not a JSON object/ },
  { what: "JSON null", bytes: assembleSafetensors("null", baseData), message: /not a JSON object/ },
  {
    what: "entry not an object",
    bytes: patched("w", 5, true),
    tensor: "w",
    message: /header entry is not an object/,
  },
  {
    what: "dtype missing",
    bytes: patched("w", { dtype: undefined }),
    tensor: "w",
    message: /dtype is missing/,
  },
  {
    what: "unknown dtype",
    bytes: patched("w", { dtype: "F33" }),
    tensor: "w",
    message: /unknown dtype "F33"/,
  },
  {
    what: "dtype named like an Object property",
    bytes: patched("w", { dtype: "constructor" }),
    tensor: "w",
    message: /unknown dtype/,
  },
  {
    what: "shape not an array",
    bytes: patched("b", { shape: "2" }),
    tensor: "b",
    message: /shape is missing or not an array/,
  },
  {
    what: "negative dimension",
    bytes: patched("w", { shape: [-2, -2] }),
    tensor: "w",
    message: /not a non-negative integer/,
  },
  {
    what: "fractional dimension",
    bytes: patched("w", { shape: [2.5, 2] }),
    tensor: "w",
    message: /not a non-negative integer/,
  },
  {
    what: "shape too large",
    bytes: patched("w", { shape: [2 ** 40, 2 ** 40] }),
    tensor: "w",
    message: /too large/,
  },
  {
    what: "data_offsets missing",
    bytes: patched("b", { data_offsets: undefined }),
    tensor: "b",
    message: /not a pair/,
  },
  {
    what: "data_offsets of one number",
    bytes: patched("w", { data_offsets: [0] }),
    tensor: "w",
    message: /not a pair/,
  },
  {
    what: "data_offsets fractional",
    bytes: patched("w", { data_offsets: [0.5, 16.5] }),
    tensor: "w",
    message: /not a pair/,
  },
  {
    what: "data_offsets negative",
    bytes: patched("w", { data_offsets: [-16, 0] }),
    tensor: "w",
    message: /not a pair/,
  },
  {
    what: "data_offsets begin after end",
    bytes: patched("w", { data_offsets: [16, 0] }),
    tensor: "w",
    message: /begin after they end/,
  },
  {
    what: "data_offsets past the data section",
    bytes: patched("b", { data_offsets: [24, 32] }),
    tensor: "b",
    message: /run past the 24-byte data section/,
  },
  {
    what: "shape/length mismatch",
    bytes: patched("w", { shape: [3, 2] }),
    tensor: "w",
    message: /hold 16 bytes but F32 shape \[3,2\] needs 24/,
  },
  { what: "dtype/length mismatch", bytes: patched("w", { dtype: "F16" }), tensor: "w", message: /needs 8/ },
  {
    what: "overlapping tensors",
    bytes: patched("b", { data_offsets: [8, 16] }),
    tensor: "b",
    message: /overlap tensor "w" \[0, 16\]/,
  },
  {
    what: "data section truncated",
    bytes: validBase.slice(0, -1),
    tensor: "b",
    message: /run past the 23-byte data section/,
  },
  {
    what: "a tensor named twice (JSON.parse would keep the last)",
    bytes: assembleSafetensors(validHeaderText.replace('"b":', '"w":'), baseData),
    tensor: "w",
    message: /tensor "w" is named twice in the header/,
  },
  {
    what: "a field named twice in an entry",
    bytes: assembleSafetensors(
      validHeaderText.replace('{"dtype":"F32"', '{"dtype":"F16","dtype":"F32"'),
      baseData,
    ),
    tensor: "w",
    message: /field "dtype" appears twice in the header entry of tensor "w"/,
  },
  {
    what: "a metadata key named twice",
    bytes: assembleSafetensors(validHeaderText.replace("{", '{"__metadata__":{"a":"1","a":"2"},'), baseData),
    message: /key "a" appears twice in __metadata__/,
  },
  {
    what: "__metadata__ not an object",
    bytes: patched("__metadata__", "pt", true),
    message: /__metadata__ is not an object/,
  },
  {
    what: "__metadata__ value not a string",
    bytes: patched("__metadata__", { n: 1 }, true),
    message: /value of key "n" is not a string/,
  },
];

Deno.test("each malformation gives a SafetensorsError naming the file and the tensor", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    for (const m of malformations) {
      await Deno.writeFile(path, m.bytes);
      const e = await expectSafetensorsError(() => openSafetensors(path));
      assert.match(e.message, m.message, m.what);
      assert.equal(e.file, path, m.what);
      assert.ok(e.message.includes(path), `${m.what}: message names the file: ${e.message}`);
      assert.equal(e.tensor, m.tensor, `${m.what}: tensor field`);
      if (m.tensor) {
        assert.ok(
          e.message.includes(`tensor "${m.tensor}"`),
          `${m.what}: message names the tensor: ${e.message}`,
        );
      }
    }
    assert.equal(openFilesUnder(dir), 0, "a failed open closes its file");
    const folder = await expectSafetensorsError(() => openSafetensors(dir));
    assert.match(folder.message, /is not a regular file/);
  });
});

Deno.test("unsupported dtypes are recognised and rejected by name", async () => {
  for (const dtype of ["F64", "I64", "I32", "I16", "I8", "U8", "BOOL"]) {
    const bytes = patched("w", { dtype });
    const e = await expectSafetensorsError(() =>
      parseSafetensorsHeader(bytes, "x.safetensors", bytes.length)
    );
    assert.equal(
      e.message,
      `unsupported dtype ${dtype} (Locus loads F32, F16, BF16) for tensor "w" in file x.safetensors`,
    );
  }
});

Deno.test("parseSafetensorsHeader: too few header bytes given, empty header, missing file", async () => {
  const tooFew = await expectSafetensorsError(() =>
    parseSafetensorsHeader(validBase.subarray(0, 20), "m.safetensors", validBase.length)
  );
  assert.match(tooFew.message, /only 20 of the \d+ header bytes were given in file m\.safetensors/);
  const empty = parseSafetensorsHeader(assembleSafetensors("{}", new Uint8Array(0)), "e.safetensors", 10);
  assert.equal(empty.tensors.size, 0);
  const missing = await expectSafetensorsError(() => openSafetensors("/nonexistent/dir/m.safetensors"));
  assert.match(missing.message, /cannot open \/nonexistent\/dir\/m\.safetensors/);
});

// ---------------------------------------------------------------------------------------------
// Checkpoint folders

Deno.test("checkpoint: single file and sharded round trip", async () => {
  await withTempDir(async (dir) => {
    const a = { shape: [3, 2], data: randomArray(6, 11) }, b = { shape: [4], data: randomArray(4, 12) };
    const c = { shape: [2, 2, 2], data: randomArray(8, 13) };
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, { a, b });
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, { c });
    const weightMap = {
      c: "model-00002-of-00002.safetensors",
      a: "model-00001-of-00002.safetensors",
      b: "model-00001-of-00002.safetensors",
    };
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: 72 }, weight_map: weightMap }),
    );

    const sharded = await openCheckpoint(dir);
    try {
      assert.deepEqual(sharded.names(), ["c", "a", "b"]);
      assert.equal(sharded.files.length, 2);
      for (const [name, t] of Object.entries({ a, b, c })) {
        assert.deepEqual(sharded.info(name), { dtype: "F32", shape: t.shape });
        assertSameBits(await sharded.read(name), t.data, name);
      }
      const unknown = await expectSafetensorsError(() => sharded.read("d"));
      assert.equal(unknown.tensor, "d");
      assert.ok(unknown.message.includes(dir));
    } finally {
      sharded.close();
    }

    await writeSafetensors(`${dir}/model.safetensors`, { a, c }); // a single file takes precedence
    const single = await openCheckpoint(dir);
    try {
      assert.deepEqual(single.names().sort(), ["a", "c"]);
      assertSameBits(await single.read("c"), c.data, "c");
    } finally {
      single.close();
    }
  });
});

Deno.test("checkpoint: every problem is found at open, naming the folder, index or shard", async () => {
  await withTempDir(async (dir) => {
    const none = await expectSafetensorsError(() => openCheckpoint(dir));
    assert.equal(none.file, dir);
    assert.ok(none.message.includes(dir) && none.message.includes("model.safetensors.index.json"));

    const shard1 = "model-00001-of-00002.safetensors", shard2 = "model-00002-of-00002.safetensors";
    await writeSafetensors(`${dir}/${shard1}`, { a: { shape: [1], data: new Float32Array([1]) } });
    await Deno.writeFile(`${dir}/${shard2}`, validBase.slice(0, -1)); // header fine, data truncated
    const index = `${dir}/model.safetensors.index.json`;
    const writeIndex = (weightMap: Record<string, string>) =>
      Deno.writeTextFile(index, JSON.stringify({ weight_map: weightMap }));

    await writeIndex({ a: shard1, ghost: shard1 });
    const missing = await expectSafetensorsError(() => openCheckpoint(dir));
    assert.equal(missing.tensor, "ghost");
    assert.equal(missing.file, `${dir}/${shard1}`);
    assert.ok(
      missing.message.includes(index) && missing.message.includes(`${dir}/${shard1}`),
      missing.message,
    );

    await writeIndex({ a: shard1, b: shard2 });
    const badShard = await expectSafetensorsError(() => openCheckpoint(dir));
    assert.equal(badShard.file, `${dir}/${shard2}`);
    assert.equal(badShard.tensor, "b");

    await writeIndex({ a: "../elsewhere.safetensors" });
    const escape = await expectSafetensorsError(() => openCheckpoint(dir));
    assert.equal(escape.file, index);
    assert.equal(escape.tensor, "a");

    await writeIndex({ a: "model-00003-of-00002.safetensors" });
    const absent = await expectSafetensorsError(() => openCheckpoint(dir));
    assert.match(absent.message, /cannot open .*model-00003-of-00002\.safetensors/);

    for (const text of ["{", '{"metadata": {}}', '{"weight_map": {}}', '{"weight_map": {"a": 3}}']) {
      await Deno.writeTextFile(index, text);
      const e = await expectSafetensorsError(() => openCheckpoint(dir));
      assert.equal(e.file, index, text);
    }
    assert.equal(openFilesUnder(dir), 0, "shards opened before a failure are closed");
  });
});

// ---------------------------------------------------------------------------------------------
// Property-based tests

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

const nameArb = fc.fullUnicodeString({ maxLength: 6 }).filter((n) => n !== "__metadata__");
const shapeArb = fc.array(fc.nat(4), { maxLength: 3 });
const metadataArb = fc.option(
  fc.dictionary(fc.fullUnicodeString({ maxLength: 5 }), fc.fullUnicodeString({ maxLength: 8 }), {
    maxKeys: 3,
  }),
  {
    nil: undefined,
  },
);

const f32TensorArb = shapeArb.chain((shape) =>
  fc.float32Array({ minLength: numel(shape), maxLength: numel(shape) }).map((data) => ({ shape, data }))
);

const rawTensorArb: fc.Arbitrary<RawTensor> = fc.record({
  dtype: fc.constantFrom("F32", "F16", "BF16"),
  shape: shapeArb,
}).chain(
  ({ dtype, shape }) =>
    fc.uint8Array({ minLength: numel(shape) * BYTES[dtype], maxLength: numel(shape) * BYTES[dtype] }).map((
      bytes,
    ) => ({ dtype, shape, bytes })),
);
const rawFileArb = fc.uniqueArray(fc.tuple(nameArb, rawTensorArb), {
  selector: ([name]) => name,
  minLength: 1,
  maxLength: 4,
});

Deno.test("property: random F32 tensors and metadata written then read round-trip bit-exactly", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/p.safetensors`;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(nameArb, f32TensorArb), { selector: ([n]) => n, maxLength: 5 }),
        metadataArb,
        async (entries, metadata) => {
          const tensors = Object.fromEntries(entries);
          await writeSafetensors(path, tensors, metadata);
          const file = await openSafetensors(path);
          try {
            assert.deepEqual(file.names().sort(), Object.keys(tensors).sort());
            assert.deepEqual(file.metadata, metadata ?? {});
            for (const [name, t] of entries) {
              assert.deepEqual(file.info(name), { dtype: "F32", shape: t.shape });
              assertSameBits(await file.read(name, { allowNonFinite: true }), t.data, name);
            }
          } finally {
            file.close();
          }
        },
      ),
      { seed: SEED, numRuns: 40 },
    );
  });
});

Deno.test("property: random F32/F16/BF16 files read back as the float64 reference values", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/p.safetensors`;
    await fc.assert(
      fc.asyncProperty(rawFileArb, metadataArb, async (tensors, metadata) => {
        await Deno.writeFile(path, buildSafetensors(tensors, metadata));
        const file = await openSafetensors(path);
        try {
          for (const [name, t] of tensors) {
            assert.deepEqual(file.info(name), { dtype: t.dtype, shape: t.shape });
            assertValues(
              await file.read(name, { allowNonFinite: true }),
              expectedValues(t.bytes, t.dtype),
              name,
            );
          }
        } finally {
          file.close();
        }
      }),
      { seed: SEED, numRuns: 40 },
    );
  });
});

Deno.test("property: a read succeeds exactly when every stored value is finite, else names the first bad one", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/p.safetensors`;
    let rejected = 0, accepted = 0;
    await fc.assert(
      fc.asyncProperty(rawFileArb, async (tensors) => {
        await Deno.writeFile(path, buildSafetensors(tensors));
        const file = await openSafetensors(path);
        try {
          for (const [name, t] of tensors) {
            const expected = expectedValues(t.bytes, t.dtype);
            const firstBad = expected.findIndex((v) => !Number.isFinite(v));
            if (firstBad < 0) {
              assertValues(await file.read(name), expected, name);
              accepted++;
            } else {
              const e = await expectSafetensorsError(() => file.read(name));
              assert.equal(e.tensor, name);
              assert.match(e.message, new RegExp(`at flat index ${firstBad} `));
              rejected++;
            }
          }
        } finally {
          file.close();
        }
      }),
      { seed: SEED, numRuns: 60 },
    );
    assert.ok(rejected > 5 && accepted > 5, `${rejected} rejected, ${accepted} accepted`);
  });
});

/** What a successfully parsed header must satisfy, checked independently of the validator. */
function assertHeaderInvariants(h: SafetensorsHeader, fileSize: number): void {
  assert.equal(h.dataStart, 8 + h.headerLength);
  assert.equal(h.dataSize, fileSize - h.dataStart);
  assert.ok(h.headerLength > 0 && h.dataSize >= 0);
  const entries = [...h.tensors.values()];
  for (const t of entries) {
    assert.ok(t.dtype in BYTES, t.dtype);
    assert.ok(t.shape.every((d) => Number.isSafeInteger(d) && d >= 0));
    assert.ok(0 <= t.begin && t.begin <= t.end && t.end <= h.dataSize);
    assert.equal(t.end - t.begin, numel(t.shape) * BYTES[t.dtype]);
  }
  for (const s of entries) {
    for (const t of entries) {
      const empty = s.begin === s.end || t.begin === t.end;
      assert.ok(s === t || empty || s.end <= t.begin || t.end <= s.begin, `${s.name} overlaps ${t.name}`);
    }
  }
  assert.ok(Object.values(h.metadata).every((v) => typeof v === "string"));
}

/** A header as JSON text with one value replaced by raw JSON text (so it can hold 1e400 or 2^64). */
function headerWithRaw(
  header: Record<string, unknown>,
  name: string,
  field: string | null,
  raw: string,
): string {
  const fields = Object.entries(header).map(([key, value]) => {
    let text = JSON.stringify(value);
    if (key === name) {
      text = field === null
        ? raw
        : `{${
          Object.entries({ ...(value as object), [field]: 0 }).map(([f, v]) =>
            `${JSON.stringify(f)}:${f === field ? raw : JSON.stringify(v)}`
          ).join(",")
        }}`;
    }
    return `${JSON.stringify(key)}:${text}`;
  });
  return `{${fields.join(",")}}`;
}

// Numbers that are never a valid size or offset (-0 is a valid 0, so it only appears in weirdJsonArb).
const hugeNumberArb = fc.constantFrom(
  "1e400",
  "-1e400",
  "9007199254740993",
  "18446744073709551616",
  "1e21",
  "-1",
  "0.5",
);
const weirdJsonArb = fc.oneof(
  fc.json({ maxDepth: 2 }),
  hugeNumberArb,
  fc.constant("-0.0"),
  fc.tuple(hugeNumberArb, hugeNumberArb).map(([a, b]) => `[${a},${b}]`),
  fc.tuple(fc.nat(64), fc.nat(64)).map(([a, b]) => `[${a},${b}]`),
  fc.array(fc.oneof(fc.nat(5), hugeNumberArb), { maxLength: 3 }).map((xs) => `[${xs.join(",")}]`),
  fc.constantFrom('"F32"', '"F16"', '"BF16"', '"I64"', '"f32"', "null", "[]", "{}", '"__proto__"'),
);

/** Random damage of any kind to a valid file; the result may or may not still be valid. */
const chaosArb = fc.tuple(rawFileArb, metadataArb).chain(([tensors, metadata]) => {
  const { header, data } = layoutSafetensors(tensors, metadata);
  const valid = assembleSafetensors(JSON.stringify(header), data);
  const headerEnd = valid.length - data.length;
  const names = tensors.map(([n]) => n);
  return fc.oneof(
    fc.nat().map((at) => valid.slice(0, at % valid.length)),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }).map(
      (flips) => {
        const bytes = valid.slice();
        for (const [at, mask] of flips) bytes[8 + at % (headerEnd - 8)] ^= mask;
        return bytes;
      },
    ),
    fc.bigUintN(64).map((n) => {
      const bytes = valid.slice();
      new DataView(bytes.buffer).setBigUint64(0, n, true);
      return bytes;
    }),
    fc.oneof(fc.string(), fc.json(), fc.fullUnicodeString()).map((text) => assembleSafetensors(text, data)),
    fc.tuple(fc.constantFrom(...names), fc.constantFrom("dtype", "shape", "data_offsets", null), weirdJsonArb)
      .map(([name, field, raw]) => assembleSafetensors(headerWithRaw(header, name, field, raw), data)),
    weirdJsonArb.map((raw) =>
      assembleSafetensors(headerWithRaw({ ...header, __metadata__: {} }, "__metadata__", null, raw), data)
    ),
    // Harmless changes (bytes after the last tensor, other data values): the file must still load.
    fc.uint8Array({ minLength: 1, maxLength: 16 }).map((extra) => {
      const bytes = new Uint8Array(valid.length + extra.length);
      bytes.set(valid);
      bytes.set(extra, valid.length);
      return bytes;
    }),
    fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, mask]) => {
      const bytes = valid.slice();
      if (data.length > 0) bytes[headerEnd + at % data.length] ^= mask;
      return bytes;
    }),
  );
});

Deno.test("property: random corruptions either parse to a consistent header or raise SafetensorsError", () => {
  let rejected = 0, accepted = 0;
  fc.assert(
    fc.property(chaosArb, (bytes) => {
      try {
        assertHeaderInvariants(
          parseSafetensorsHeader(bytes, "chaos.safetensors", bytes.length),
          bytes.length,
        );
        accepted++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) throw e;
        assert.ok(e.message.includes("chaos.safetensors"), e.message);
        if (e.tensor !== undefined) assert.ok(e.message.includes(JSON.stringify(e.tensor)), e.message);
        rejected++;
      }
    }),
    { seed: SEED, numRuns: 400 },
  );
  // Both outcomes must be exercised, or the property would be vacuous on one side.
  assert.ok(rejected > 200 && accepted > 40, `${rejected} rejected, ${accepted} accepted of 400`);
});

Deno.test("property: corrupted files on disk never crash, hang or load partially", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/chaos.safetensors`;
    await fc.assert(
      fc.asyncProperty(chaosArb, async (bytes) => {
        await Deno.writeFile(path, bytes);
        let file;
        try {
          file = await openSafetensors(path);
        } catch (e) {
          if (!(e instanceof SafetensorsError)) throw e;
          return;
        }
        try {
          // Opened: every tensor must read in full and equal the bytes its header points at.
          for (const name of file.names()) {
            const { begin, end, dtype } = file.header.tensors.get(name)!;
            const stored = bytes.subarray(file.header.dataStart + begin, file.header.dataStart + end);
            assertValues(
              await file.read(name, { allowNonFinite: true }),
              expectedValues(stored, dtype),
              name,
            );
          }
        } finally {
          file.close();
        }
      }),
      { seed: SEED, numRuns: 80, timeout: 2000 },
    );
  });
});

/** Damage that must always be rejected, with the tensor it concerns (if any) that the error must name. */
const fatalArb = rawFileArb.chain((tensors) => {
  const { header, data } = layoutSafetensors(tensors);
  const valid = assembleSafetensors(JSON.stringify(header), data);
  const headerLength = valid.length - 8 - data.length;
  const entry = (name: string) =>
    header[name] as { shape: number[]; dtype: string; data_offsets: [number, number] };
  const withField = (name: string, field: string, raw: string) =>
    assembleSafetensors(headerWithRaw(header, name, field, raw), data);
  const nameArb = fc.constantFrom(...tensors.map(([n]) => n));
  const nonEmpty = tensors.filter(([, t]) => t.bytes.length > 0).map(([n]) => n);
  const cases: fc.Arbitrary<{ bytes: Uint8Array; tensors: string[] }>[] = [
    // Truncation anywhere: tensors are packed to the end, so some tensor (or the header) is cut.
    fc.nat().map((at) => ({ bytes: valid.slice(0, at % valid.length), tensors: [] })),
    // A wrong header length cuts the JSON or swallows data bytes, leaving the last tensor short.
    fc.oneof(fc.integer({ min: -headerLength, max: 64 }), fc.maxSafeInteger()).filter((d) => d !== 0).map(
      (delta) => {
        const bytes = valid.slice();
        new DataView(bytes.buffer).setBigUint64(0, BigInt(headerLength) + BigInt(delta), true);
        return { bytes, tensors: [] };
      },
    ),
    // Offsets that end past the data section.
    fc.tuple(nameArb, fc.nat(1000)).map(([name, extra]) => {
      const end = data.length + 1 + extra,
        begin = end - (entry(name).data_offsets[1] - entry(name).data_offsets[0]);
      return { bytes: withField(name, "data_offsets", `[${begin},${end}]`), tensors: [name] };
    }),
    // A shape whose size disagrees with the offsets.
    fc.tuple(nameArb, shapeArb).filter(([name, shape]) => numel(shape) !== numel(entry(name).shape)).map((
      [name, shape],
    ) => ({
      bytes: withField(name, "shape", JSON.stringify(shape)),
      tensors: [name],
    })),
    // Numbers no file can hold, in any numeric field.
    fc.tuple(nameArb, fc.constantFrom("shape", "data_offsets"), hugeNumberArb).map(([name, field, huge]) => ({
      bytes: withField(name, field, field === "shape" ? `[${huge}]` : `[0,${huge}]`),
      tensors: [name],
    })),
  ];
  if (nonEmpty.length >= 2) {
    // One tensor moved to start inside another (same length): the ranges overlap (or run past the end).
    cases.push(
      fc.tuple(fc.constantFrom(...nonEmpty), fc.constantFrom(...nonEmpty), fc.nat()).filter(([a, b]) =>
        a !== b
      ).map(([a, b, k]) => {
        const [aBegin, aEnd] = entry(a).data_offsets, [bBegin, bEnd] = entry(b).data_offsets;
        const begin = aBegin + k % (aEnd - aBegin);
        return {
          bytes: withField(b, "data_offsets", `[${begin},${begin + bEnd - bBegin}]`),
          tensors: [a, b],
        };
      }),
    );
  }
  return fc.oneof(...cases);
});

Deno.test("property: truncation, wrong lengths, bad offsets, shape mismatches and huge numbers are always rejected", () => {
  fc.assert(
    fc.property(fatalArb, ({ bytes, tensors }) => {
      let error: unknown;
      try {
        parseSafetensorsHeader(bytes, "fatal.safetensors", bytes.length);
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof SafetensorsError, `expected a SafetensorsError, got ${error}`);
      assert.ok(error.message.includes("fatal.safetensors"), error.message);
      if (tensors.length > 0) {
        assert.ok(
          tensors.includes(error.tensor!),
          `error names ${error.tensor}, expected one of ${tensors}: ${error.message}`,
        );
        assert.ok(error.message.includes(JSON.stringify(error.tensor)), error.message);
      }
    }),
    { seed: SEED, numRuns: 400 },
  );
});
