// Seeded fuzzing of everything Locus reads from users, through the public loaders: the embedded
// model's real model.safetensors, its tokenizer.json, and every dataset schema's fixture file, each
// mutated hundreds of ways (bytes flipped, inserted, deleted, truncated; JSON fields deleted, retyped,
// emptied; records duplicated; invalid UTF-8). A mutation must either load into a consistent result
// or fail with the loader's own error naming the file (and the record, for datasets); a non-finite
// weight or invalid UTF-8 must never be accepted. Runs in seconds.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DatasetError, loadDataset } from "../experiments/data/datasets.ts";
import { openSafetensors, SafetensorsError } from "../engine/safetensors.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { rng } from "./util.ts";

const root = (path: string) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const dir = await Deno.makeTempDir({ prefix: "locus-fuzz-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** A seeded random integer in [0, n). */
const pick = (random: () => number, n: number) => Math.floor(random() * n);

/** Byte-level damage: one byte changed, deleted or inserted, or the file cut short. */
function damageBytes(bytes: Uint8Array, random: () => number, from = 0, to = bytes.length): Uint8Array {
  const at = from + pick(random, to - from);
  switch (pick(random, 4)) {
    case 0: {
      const out = bytes.slice();
      out[at] = pick(random, 256);
      return out;
    }
    case 1:
      return new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
    case 2:
      return new Uint8Array([...bytes.subarray(0, at), pick(random, 256), ...bytes.subarray(at)]);
    default:
      return bytes.slice(0, at);
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Every path (list of keys and indices) to a value inside `value`. */
function paths(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out = [prefix];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...prefix, i])));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...prefix, k]));
  }
  return out;
}

const REPLACEMENTS: Json[] = [null, 7, -1, 1.5, "", " ", "{}", true, [], {}, ["x"], { a: 1 }];

/** Structural damage at a random path below `base`: the value deleted or replaced by another type. */
function damageJson(root: Json, random: () => number, base: (string | number)[] = []): Json {
  const copy = structuredClone(root);
  let target: Json = copy;
  for (const k of base) target = (target as Record<string | number, Json>)[k];
  const all = paths(target, base).filter((p) => p.length > base.length);
  const path = all[pick(random, all.length)];
  let parent: Json = copy;
  for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, Json>)[k];
  const key = path.at(-1)!;
  if (random() < 0.3) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete (parent as Record<string, Json>)[key as string];
  } else (parent as Record<string | number, Json>)[key] = REPLACEMENTS[pick(random, REPLACEMENTS.length)];
  return copy;
}

// ------------------------------------------------------------------------------------------------
// Datasets

const DATASETS = ["counterfact", "easyedit_counterfact", "known_1000", "zsre", "knowedit"];

/** Loads `bytes` as a dataset file: its cases, or the DatasetError (anything else fails the test). */
async function tryLoad(path: string, bytes: Uint8Array): Promise<DatasetError | number> {
  await Deno.writeFile(path, bytes);
  try {
    const { cases } = await loadDataset(path);
    // A loaded dataset is consistent: unique ids, records in order, non-empty subjects and prompts.
    assert.equal(new Set(cases.map((c) => c.id)).size, cases.length, "duplicate ids accepted");
    cases.forEach((c, i) => {
      assert.equal(c.recordIndex, i);
      assert.ok(c.subject.trim() !== "" && c.prompt.trim() !== "", `record ${i}: empty subject or prompt`);
    });
    return cases.length;
  } catch (e) {
    if (!(e instanceof DatasetError)) throw e;
    assert.ok(e.message.startsWith(`${path}: `), `the error does not name the file: ${e.message}`);
    return e;
  }
}

for (const name of DATASETS) {
  Deno.test(`fuzz: ${name} records with damaged fields fail naming the file and the record, or load consistently`, async () => {
    const original = JSON.parse(await Deno.readTextFile(root(`tests/fixtures/${name}.json`))) as Json[];
    // Two more copies of the records (with fresh ids where the schema has them) so damage can land mid-file.
    const records = [0, 1, 2].flatMap((copy) =>
      original.map((r, i) => {
        const c = structuredClone(r) as Record<string, Json>;
        for (const id of ["case_id", "known_id"]) if (id in c) c[id] = copy * 100 + i;
        return c;
      })
    );
    const random = rng(DATASETS.indexOf(name) + 1);
    const path = `${dir}/${name}.json`;
    let loaded = 0, rejected = 0;
    for (let trial = 0; trial < 60; trial++) {
      const r = pick(random, records.length);
      const damaged = damageJson(records, random, [r]) as Json[];
      if (trial % 10 === 0) damaged.push(structuredClone(damaged[r])); // a record twice: same id
      const result = await tryLoad(path, new TextEncoder().encode(JSON.stringify(damaged)));
      if (typeof result === "number") {
        loaded++;
        continue;
      }
      rejected++;
      // Only record r changed (or was repeated at the end): the error is about it.
      const named = new RegExp(
        `records? (\\d+ and )?${r}\\b|record ${damaged.length - 1}\\b|records ${r} and`,
      );
      assert.match(result.message, named, `trial ${trial}: damage in record ${r}`);
    }
    assert.ok(rejected >= 15 && loaded >= 1, `${rejected} rejected, ${loaded} loaded`);
  });

  Deno.test(`fuzz: ${name} files with damaged bytes or invalid UTF-8 fail with a DatasetError or load consistently`, async () => {
    const bytes = await Deno.readFile(root(`tests/fixtures/${name}.json`));
    const random = rng(100 + DATASETS.indexOf(name));
    const path = `${dir}/${name}-bytes.json`;
    for (let trial = 0; trial < 80; trial++) await tryLoad(path, damageBytes(bytes, random));
    // Invalid UTF-8 inside a string (the first key) of the second record is always an error naming it.
    const records = JSON.parse(new TextDecoder().decode(bytes)) as Json[];
    const whole = new TextEncoder().encode(JSON.stringify(records));
    const at = new TextEncoder().encode(`[${JSON.stringify(records[0])},{"`).length;
    for (const bad of [[0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
      const damaged = new Uint8Array([...whole.subarray(0, at), ...bad, ...whole.subarray(at)]);
      const result = await tryLoad(path, damaged);
      assert.ok(result instanceof DatasetError, `invalid UTF-8 ${bad} was accepted`);
      assert.match(result.message, new RegExp(`: record 1: invalid UTF-8 at byte ${at} `));
    }
  });
}

// ------------------------------------------------------------------------------------------------
// The embedded model's weights and tokenizer

Deno.test("fuzz: the real model.safetensors, damaged: rejected naming the file, or every value read is finite", async () => {
  const bytes = await Deno.readFile(root("weights/locus-kb/model.safetensors"));
  const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const path = `${dir}/model.safetensors`;
  const random = rng(4242);
  let rejected = 0, accepted = 0, nonFinite = 0;
  for (let trial = 0; trial < 60; trial++) {
    let damaged: Uint8Array;
    if (trial % 3 === 0) damaged = damageBytes(bytes, random, 0, headerEnd); // the header
    else {
      // One f32 of the data section set to random bits, or to a NaN or an infinity.
      damaged = bytes.slice();
      const at = headerEnd + 4 * pick(random, (bytes.length - headerEnd) / 4);
      const bits = [pick(random, 2 ** 32), 0x7fc00000, 0x7f800000, 0xff800000][pick(random, 4)];
      new DataView(damaged.buffer).setUint32(at, bits, true);
    }
    await Deno.writeFile(path, damaged);
    try {
      const file = await openSafetensors(path);
      try {
        for (const name of file.names()) {
          const values = await file.read(name);
          let finite = true;
          for (let i = 0; i < values.length; i++) finite &&= Number.isFinite(values[i]);
          assert.ok(finite, `${name}: a non-finite value was read`);
        }
      } finally {
        file.close();
      }
      accepted++;
    } catch (e) {
      if (!(e instanceof SafetensorsError)) throw e;
      assert.ok(e.message.includes(path), e.message);
      if (/non-finite/.test(e.message)) nonFinite++;
      rejected++;
    }
  }
  assert.ok(
    rejected >= 20 && accepted >= 5 && nonFinite >= 15,
    `${rejected} rejected (${nonFinite} non-finite), ${accepted} accepted`,
  );
});

Deno.test("fuzz: the real tokenizer.json, damaged: loads and encodes, or fails with an error naming the file", async () => {
  const original = JSON.parse(await Deno.readTextFile(root("weights/locus-kb/tokenizer.json"))) as Json;
  const model = `${dir}/tokenizer`;
  await Deno.mkdir(model, { recursive: true });
  const path = `${model}/tokenizer.json`;
  const random = rng(77);
  let rejected = 0, loaded = 0, notUtf8 = 0;
  for (let trial = 0; trial < 120; trial++) {
    const text = JSON.stringify(trial % 2 ? damageJson(original, random) : original, null, 1);
    const bytes = trial % 2
      ? new TextEncoder().encode(text)
      : damageBytes(new TextEncoder().encode(text), random);
    await Deno.writeFile(path, bytes);
    const utf8 = validUtf8(bytes);
    try {
      const tok = await loadTokenizer(model);
      assert.ok(utf8, `trial ${trial}: invalid UTF-8 was accepted`);
      const ids = tok.encode("the capital of the country is");
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
      tok.decode(ids);
      loaded++;
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(
        !(e instanceof TypeError || e instanceof RangeError),
        `trial ${trial}: a crash, ${(e as Error).stack}`,
      );
      assert.ok(
        (e as Error).message.includes(path),
        `trial ${trial}: the error does not name the file: ${(e as Error).message}`,
      );
      if (!utf8) {
        assert.match((e as Error).message, /not valid UTF-8/, `trial ${trial}`);
        notUtf8++;
      }
      rejected++;
    }
  }
  assert.ok(
    rejected >= 20 && loaded >= 12 && notUtf8 >= 3,
    `${rejected} rejected (${notUtf8} not UTF-8), ${loaded} loaded`,
  );
});

/** Whether `bytes` decode as UTF-8 without replacement characters. */
function validUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

Deno.test("tokenizer.json, vocab.json and merges.txt with invalid UTF-8 are refused naming the file", async () => {
  const text = await Deno.readTextFile(root("weights/locus-kb/tokenizer.json"));
  const model = `${dir}/tokenizer-utf8`;
  await Deno.mkdir(model, { recursive: true });
  // A lone continuation byte inside the first token string: decoded leniently it would become U+FFFD.
  const at = text.indexOf('"', text.indexOf('"vocab"') + 8) + 1;
  const bytes = new TextEncoder().encode(text);
  const damaged = new Uint8Array([...bytes.subarray(0, at), 0x80, ...bytes.subarray(at)]);
  await Deno.writeFile(`${model}/tokenizer.json`, damaged);
  await assert.rejects(
    loadTokenizer(model),
    new RegExp(`${model}/tokenizer\\.json: not valid UTF-8`),
  );
  // GPT-2's two-file layout goes through the same reader.
  await Deno.remove(`${model}/tokenizer.json`);
  await Deno.writeFile(`${model}/vocab.json`, new Uint8Array([0x7b, 0x22, 0xc3, 0x22, 0x3a, 0x30, 0x7d]));
  await Deno.writeTextFile(`${model}/merges.txt`, "#version: 0.2\n");
  await assert.rejects(loadTokenizer(model), new RegExp(`${model}/vocab\\.json: not valid UTF-8`));
});
