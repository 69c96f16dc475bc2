// Seeded fuzzing of config.json through the public loaders: the embedded model's config and every
// family fixture's (tests/fixtures/families/*/config.json), each mutated hundreds of ways (fields
// deleted, retyped, made negative, zero, fractional, huge, strings for numbers, NaN/Infinity literals;
// unknown model_types and rope types, n_layer 1e9, head counts that do not divide). Every mutation must
// either parse into a consistent configuration or be refused with a ConfigError naming the file and
// the mutated field: never a TypeError, a RangeError, a hang or a silently wrong model. A sample of
// them is also loaded with the fixture's weights through Model.load, which must load or refuse with a
// ConfigError / ModelLoadError naming the folder.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ConfigError, type ModelConfig, parseConfig } from "../engine/config.ts";
import { parameterShapes } from "../engine/families.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, ModelLoadError } from "../engine/model.ts";
import { caseDir, CASES } from "./families_fixtures.ts";
import { rng } from "./util.ts";

const root = (path: string) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const dir = await Deno.makeTempDir({ prefix: "locus-config-fuzz-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** Every model folder whose config.json is fuzzed: the embedded model and each family fixture. */
const FOLDERS: [string, string][] = [
  ["locus-kb", root("weights/locus-kb")],
  ...CASES.map((c): [string, string] => [c, caseDir(c)]),
];

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

/** Stands for a value JSON cannot hold; written as the bare literal (Python's json writes these). */
const LITERALS = ["NaN", "Infinity", "-Infinity"];
const DELETE = Symbol("delete");

/** Replacement values: every type, signs, zero, fractions, the int32 and float64 edges, strings. */
const VALUES: (Json | typeof DELETE)[] = [
  DELETE,
  null,
  "32",
  "abc",
  "",
  -1,
  0,
  0.5,
  1.5,
  3,
  7,
  1e9,
  2 ** 31,
  2 ** 53,
  1e308,
  true,
  false,
  [],
  [1, 2],
  {},
  { rope_type: "yarn" },
  ...LITERALS.map((l) => `@@${l}@@`),
];

/** The text of `value` as config.json, with the NaN/Infinity stand-ins written as bare literals. */
function configText(value: Json): string {
  return JSON.stringify(value, null, 2).replace(/"@@(NaN|Infinity|-Infinity)@@"/g, "$1");
}

/** Every field path a config holds: top-level keys, and the keys of its nested objects (rope settings). */
function fieldPaths(config: Obj): string[][] {
  const out: string[][] = [];
  const walk = (o: Obj, prefix: string[]) => {
    for (const [k, v] of Object.entries(o)) {
      out.push([...prefix, k]);
      if (v !== null && typeof v === "object" && !Array.isArray(v)) walk(v, [...prefix, k]);
    }
  };
  walk(config, []);
  return out;
}

/** A copy of `config` with the field at `path` set to `value` (or deleted); missing parents are made. */
function mutate(config: Obj, path: string[], value: Json | typeof DELETE): Obj {
  const copy = structuredClone(config);
  let o = copy;
  for (const k of path.slice(0, -1)) {
    if (o[k] === null || typeof o[k] !== "object" || Array.isArray(o[k])) o[k] = {};
    o = o[k] as Obj;
  }
  if (value === DELETE) delete o[path.at(-1)!];
  else o[path.at(-1)!] = value;
  return copy;
}

/** Mutations aimed at the checks a random one rarely reaches, for a config of this family. */
function targeted(config: Obj): [string[], Json | typeof DELETE][] {
  const has = (k: string) => k in config;
  const layers = has("n_layer") ? "n_layer" : "num_hidden_layers";
  const heads = has("n_head") ? "n_head" : "num_attention_heads";
  const width = has("n_embd") ? "n_embd" : "hidden_size";
  const rope = has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  return [
    [["model_type"], "bert"],
    [["model_type"], "GPT2"],
    [["model_type"], 5],
    [["model_type"], DELETE],
    [[layers], 1e9],
    [[layers], 4097],
    [[heads], 3],
    [[heads], 5],
    [[heads], 2 ** 31 - 1],
    [[width], 2 ** 31 - 1],
    [["num_key_value_heads"], 3],
    [["num_key_value_heads"], 64],
    [["head_dim"], 7],
    [["head_dim"], 2 ** 31 - 1],
    [["rotary_dim"], 7],
    [["rotary_dim"], 2 ** 31 - 1],
    [["rotary_pct"], 1e300],
    [["partial_rotary_factor"], 3],
    [["sliding_window"], 1.5],
    [["layer_types"], ["full_attention"]],
    [["layer_types"], ["sideways_attention", "full_attention"]],
    [[rope, "rope_type"], "yarn"],
    [[rope, "rope_type"], "dynamic"],
    [[rope, "rope_type"], 7],
    [[rope, "factor"], -2],
    [[rope], "linear"],
    [["rope_parameters", "full_attention"], 7],
    [["scale_attn_by_inverse_layer_idx"], true],
    [["scale_attn_weights"], false],
  ];
}

/** The invariants every accepted configuration keeps (what the kernels and weight shapes rely on). */
function checkConsistent(c: ModelConfig, what: string): void {
  const ints = [c.vocabSize, c.nPositions, c.nEmbd, c.nLayer, c.nHead, c.nKvHead, c.headDim, c.nInner];
  assert.ok(ints.every((n) => Number.isSafeInteger(n) && n >= 1), `${what}: sizes ${ints}`);
  assert.ok(c.nLayer <= 4096 && c.headDim <= 512, `${what}: nLayer ${c.nLayer}, headDim ${c.headDim}`);
  assert.equal(c.nHead % c.nKvHead, 0, `${what}: ${c.nHead} heads, ${c.nKvHead} kv heads`);
  if (c.family === "gpt2") assert.equal(c.headDim * c.nHead, c.nEmbd, `${what}: GPT-2 head split`);
  for (const x of [c.layerNormEpsilon, c.attnScale, c.embedScale, c.attnSoftcap ?? 1, c.finalSoftcap ?? 1]) {
    assert.ok(Number.isFinite(x) && x > 0, `${what}: a scale or epsilon ${x}`);
  }
  assert.equal(c.windows.length, c.nLayer, `${what}: windows`);
  for (const w of c.windows) {
    assert.ok(w === null || (Number.isSafeInteger(w) && w >= 1), `${what}: window ${w}`);
  }
  if (c.rotary) {
    const { dims, invFreq } = c.rotary;
    assert.ok(Number.isInteger(dims) && dims % 2 === 0 && dims <= c.headDim, `${what}: rotary dims ${dims}`);
    assert.equal(invFreq.length, c.nLayer, `${what}: rotary tables`);
    for (const inv of invFreq) {
      assert.equal(inv.length, dims / 2);
      assert.ok(inv.every((x) => Number.isFinite(x) && x > 0), `${what}: inverse frequencies`);
    }
  }
  for (const [name, shape] of parameterShapes(c)) {
    assert.ok(shape.every((n) => Number.isSafeInteger(n) && n >= 1), `${what}: ${name} [${shape}]`);
  }
}

/** Parses `text`: the config, or the ConfigError (any other error fails the test). */
function tryParse(text: string, file: string, what: string): ModelConfig | ConfigError {
  const started = performance.now();
  try {
    return parseConfig(text, file);
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      throw new Error(`${what}: a crash, not a ConfigError: ${(e as Error).stack}`);
    }
    return e;
  } finally {
    // 4096 layers of 256-entry rotary tables take milliseconds; anything slower is a runaway loop.
    assert.ok(performance.now() - started < 2000, `${what}: parsing took ${performance.now() - started} ms`);
  }
}

/** The mutations of one config: every targeted one, then `count` random (field, value) pairs. */
function mutations(original: Obj, seed: number, count: number): [string, Obj | string][] {
  const random = rng(seed);
  const fields = fieldPaths(original);
  const out: [string, Obj | string][] = targeted(original).map(([path, value]) => [
    path.join("."),
    mutate(original, path, value),
  ]);
  for (let i = 0; i < count; i++) {
    const path = fields[Math.floor(random() * fields.length)];
    out.push([path.join("."), mutate(original, path, VALUES[Math.floor(random() * VALUES.length)])]);
  }
  // Whole-file damage: not an object, or not JSON.
  out.push(["", "[]"], ["", "null"], ["", '"config"'], ["", "{"], ["", ""]);
  return out;
}

for (const [name, folder] of FOLDERS) {
  Deno.test(`config fuzz: ${name}'s config.json, mutated: a consistent config or a ConfigError naming the field`, async () => {
    const original = JSON.parse(await Deno.readTextFile(`${folder}/config.json`)) as Obj;
    const file = `${name}/config.json`;
    const parsed = tryParse(JSON.stringify(original), file, "the original");
    assert.ok(!(parsed instanceof ConfigError), `the original is refused: ${(parsed as Error).message}`);
    checkConsistent(parsed, "the original");
    let accepted = 0, refused = 0;
    for (const [field, config] of mutations(original, 1 + FOLDERS.findIndex(([n]) => n === name), 150)) {
      const text = typeof config === "string" ? config : configText(config);
      const what = `${file} with ${field || "the whole file"} = ${text.length < 80 ? text : "..."}`;
      const result = tryParse(text, file, what);
      if (result instanceof ConfigError) {
        refused++;
        assert.ok(
          result.message.startsWith(`${file}: `),
          `${what}: the error does not name the file: ${result.message}`,
        );
        // The mutated field, or (nested) the object holding it, is named.
        const named = field === "" || field.split(".").some((k) => result.message.includes(k));
        assert.ok(named, `${what}: the error does not name the field: ${result.message}`);
      } else {
        accepted++;
        checkConsistent(result, what);
      }
    }
    assert.ok(refused >= 40 && accepted >= 20, `${refused} refused, ${accepted} accepted`);
  });
}

Deno.test("config fuzz: the known traps are refused naming the field", () => {
  const llama = JSON.parse(Deno.readTextFileSync(`${caseDir("llama")}/config.json`)) as Obj;
  const gemma = JSON.parse(Deno.readTextFileSync(`${caseDir("gemma3_text")}/config.json`)) as Obj;
  const gpt2 = JSON.parse(Deno.readTextFileSync(root("weights/locus-kb/config.json"))) as Obj;
  const refuse = (config: Obj, pattern: RegExp) => {
    const r = tryParse(configText(config), "x/config.json", JSON.stringify(config));
    assert.ok(r instanceof ConfigError, `accepted: ${pattern}`);
    assert.match(r.message, pattern);
  };
  // Odd or huge head / rotary sizes: refused before any frequency table is built (these were a
  // RangeError and a multi-gigabyte allocation).
  refuse({ ...llama, head_dim: 7 }, /x\/config\.json: the rotary dimensions \(7, from head_dim/);
  refuse({ ...llama, head_dim: 2 ** 31 - 1 }, /head dimension 2147483647 \(head_dim/);
  refuse({ ...gemma, head_dim: 2 ** 30 }, /head dimension 1073741824 \(head_dim\)/);
  refuse({ ...llama, partial_rotary_factor: 1e300 }, /partial_rotary_factor/);
  // A window is a count of keys.
  refuse(
    { ...llama, model_type: "mistral", sliding_window: 1.5 },
    /field "sliding_window" must be an integer/,
  );
  // Rope fields are named by the object that holds them.
  const { rope_parameters: _, ...hubLlama } = llama; // the Hub's layout: rope_scaling + rope_theta
  refuse({ ...hubLlama, rope_scaling: { rope_type: "linear", factor: "2" } }, /rope_scaling\.factor/);
  refuse({ ...hubLlama, rope_scaling: { rope_theta: -1 } }, /rope_scaling\.rope_theta must be/);
  refuse(
    { ...llama, rope_parameters: { rope_type: "yarn", factor: 4 } },
    /rope_parameters has rope type "yarn"/,
  );
  refuse(
    { ...gpt2, n_embd: 2 ** 30, n_head: 2 ** 22 },
    /"n_inner" is absent and its default 4 x n_embd = 4294967296/,
  );
  refuse(
    { ...gemma, rope_parameters: { full_attention: 7 } },
    /rope_parameters\.full_attention must be an object/,
  );
  refuse(
    { ...llama, num_key_value_heads: 3 },
    /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/,
  );
  // Another family's config without model_type says why GPT-2's fields were asked for.
  const { model_type: __, ...untyped } = llama;
  refuse(untyped, /there is no "model_type", so it was read as "gpt2"/);
  // GPT-2 attention variants Locus does not compute.
  refuse(
    { ...gpt2, scale_attn_by_inverse_layer_idx: true },
    /field "scale_attn_by_inverse_layer_idx" must be false/,
  );
  refuse({ ...gpt2, scale_attn_weights: false }, /field "scale_attn_weights" must be true/);
  refuse({ ...gpt2, n_layer: 1e9 }, /field "n_layer" must be an integer in \[1, 4096\], got 1000000000/);
});

Deno.test("config fuzz: mutated configs with the real weights through Model.load: load, or refuse naming the folder", async () => {
  const gpu = await getGpu();
  let loaded = 0, refused = 0;
  for (const [index, [name, folder]] of FOLDERS.entries()) {
    const model = `${dir}/${name}`;
    await Deno.mkdir(model);
    for await (const e of Deno.readDir(folder)) {
      if (/\.safetensors(\.index\.json)?$/.test(e.name)) {
        await Deno.symlink(`${folder}/${e.name}`, `${model}/${e.name}`);
      }
    }
    const original = JSON.parse(await Deno.readTextFile(`${folder}/config.json`)) as Obj;
    // The original, then a few mutations that parse (those reach the checkpoint checks) and one that does not.
    const candidates = mutations(original, 100 + index, 60);
    const parses = candidates.filter(([, c]) =>
      typeof c !== "string" && !(tryParse(configText(c), "config.json", "") instanceof ConfigError)
    );
    const fails = candidates.find(([, c]) =>
      tryParse(typeof c === "string" ? c : configText(c), "config.json", "") instanceof ConfigError
    )!;
    for (const [field, config] of [["", original] as [string, Obj | string], ...parses.slice(0, 5), fails]) {
      await Deno.writeTextFile(
        `${model}/config.json`,
        typeof config === "string" ? config : configText(config),
      );
      const what = `${name} with ${field || "its own config"}`;
      try {
        const m = await Model.load(gpu, model);
        assert.deepEqual(m.config, parseConfig(await Deno.readTextFile(`${model}/config.json`)), what);
        loaded++;
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        assert.ok(
          e instanceof ConfigError || e instanceof ModelLoadError,
          `${what}: a crash: ${(e as Error).stack}`,
        );
        assert.ok(e.message.includes(model), `${what}: the error does not name the folder: ${e.message}`);
        assert.ok(field !== "", `${what}: the original is refused: ${e.message}`);
        refused++;
      }
    }
  }
  assert.ok(loaded >= FOLDERS.length && refused >= FOLDERS.length, `${loaded} loaded, ${refused} refused`);
});
