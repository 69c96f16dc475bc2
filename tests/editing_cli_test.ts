// deno task edit end to end on a tiny model in a temp folder (config, weights, tokenizer, corpus,
// counterfact.json): JSON output, --save then --load reproduces the edit, --case reads a record,
// scores without prompts read "n/a" (null in JSON), bad input gives a clear error.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { loadEdit } from "../experiments/editing/edit.ts";
import { runScript, type ScriptRun } from "./util.ts";

const gpu = await getGpu();
const WORDS = [
  "<unk>",
  "<|endoftext|>",
  "Anna",
  "Berg",
  "Carl",
  "Dorn",
  "lives",
  "works",
  "in",
  "Paris",
  "Oslo",
  "is",
  "a",
  "city",
  ".",
];
const tok = new WordLevelTokenizer(WORDS, { unk: "<unk>", eos: "<|endoftext|>" });
const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
await Model.random(
  gpu,
  { vocabSize: WORDS.length, nPositions: 16, nEmbd: 16, nLayer: 2, nHead: 2, layerNormEpsilon: 1e-5 },
  5,
  true,
).save(dir);
await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());
await Deno.writeTextFile(
  `${dir}/corpus.txt`,
  Array.from({ length: 80 }, (_, i) => WORDS.slice(2).filter((_, j) => (i * 5 + j * 3) % 4 < 3).join(" "))
    .join("\n"),
);
await Deno.writeTextFile(
  `${dir}/counterfact.json`,
  JSON.stringify([{
    case_id: 7,
    pararel_idx: 7,
    requested_rewrite: {
      prompt: "{} lives in",
      relation_id: "P551",
      target_new: { str: "Oslo", id: "o" },
      target_true: { str: "Paris", id: "p" },
      subject: "Anna Berg",
    },
    paraphrase_prompts: ["Anna Berg works in"],
    neighborhood_prompts: ["Carl Dorn lives in"],
    attribute_prompts: [],
    generation_prompts: [],
  }]),
);

function edit(...args: string[]): Promise<ScriptRun> {
  return runScript(
    "experiments/commands/edit.ts",
    "--model",
    dir,
    "--stats-dir",
    `${dir}/stats`,
    "--v-steps",
    "3",
    ...args,
  );
}

Deno.test("edit --case --json, then --load of the saved edit gives the same post-edit probabilities", async () => {
  const r = await edit("--case", "7", "--layer", "0", "--json", "--save", `${dir}/e.safetensors`);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.method, "rome");
  assert.deepEqual(j.request, { prompt: "{} lives in", subject: "Anna Berg", target: "Oslo" });
  assert.deepEqual(j.completions.map((c: { kind: string; text: string }) => [c.kind, c.text]), [
    ["prompt", "Anna Berg lives in"],
    ["paraphrase", "Anna Berg works in"],
    ["neighbor", "Carl Dorn lives in"],
  ]);
  assert.ok(j.probabilities.post.rewrite !== j.probabilities.pre.rewrite, "the edit changed something");
  // The standard metrics agree with the probabilities beside them: ES is whether p(new) > p(true) after
  // the prompt, and the neighbour keeps its true object ahead (NS) exactly when its locality holds.
  const m = j.standardMetrics;
  for (
    const key of ["efficacySuccess", "paraphraseSuccess", "neighborhoodSuccess", "reliability", "locality"]
  ) {
    assert.ok(m[key] === 0 || m[key] === 1 || (m[key] > 0 && m[key] < 1), `${key} ${m[key]}`);
  }
  assert.equal(m.efficacySuccess, m.efficacyMagnitude > 0 ? 1 : 0);
  assert.equal(m.portability, null, "a CounterFact record has no portability prompts");
  const saved = await loadEdit(`${dir}/e.safetensors`);
  assert.deepEqual(saved.deltas.map((d) => d.param), ["h.0.mlp.c_proj.weight"]);

  const again = await edit("--case", "7", "--json", "--load", `${dir}/e.safetensors`);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(JSON.parse(again.stdout).probabilities, j.probabilities);
});

Deno.test("edit --problem fact-forcing: the subject is noised at ROME's level, 3 x the std of its embeddings", async () => {
  const r = await edit("--case", "7", "--layer", "0", "--problem", "fact-forcing", "--json");
  assert.equal(r.code, 0, r.stderr);
  const { noise, request } = JSON.parse(r.stdout);
  // Float64 reference: the unbiased std over the entries of the subject's wte rows (not all of wte).
  const wte = (await Model.load(gpu, dir).then((m) => m.toArrays())).get("wte.weight")!;
  const values = tok.encode("Anna Berg").flatMap((id) => [...wte.subarray(id * 16, (id + 1) * 16)]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
  assert.ok(Math.abs(noise.std - std) < 1e-6 * std, `${noise.std} vs ${std}`);
  assert.equal(noise.level, 3 * noise.std);
  assert.equal(noise.subjects, 1);
  assert.match(noise.rule, /subject tokens' embeddings \(ROME\)/);
  assert.deepEqual(request.noise, { seed: 1, scale: noise.level }, "the request noises at that level");
  // Problems that do not noise the subject record no noise.
  const plain = await edit("--case", "7", "--layer", "0", "--json");
  assert.equal(JSON.parse(plain.stdout).noise, null);
});

Deno.test("edit --json without paraphrases: the paraphrase score is null, the neighborhood score a number", async () => {
  const r = await edit(
    "--layer",
    "0",
    "--prompt",
    "Carl Dorn works in",
    "--subject",
    "Carl Dorn",
    "--target-new",
    "Oslo",
    "--neighbor",
    "Anna Berg lives in",
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /NaN/);
  const { scores } = JSON.parse(r.stdout);
  assert.equal(scores.paraphrase, null);
  assert.equal(typeof scores.neighborhood, "number");
  assert.equal(typeof scores.overall, "number");
});

Deno.test("edit: text output for MEMIT with options instead of a record; clear errors", async () => {
  const r = await edit(
    "--method",
    "memit",
    "--layers",
    "0-1",
    "--prompt",
    "Carl Dorn works in",
    "--subject",
    "Carl Dorn",
    "--target-new",
    "Oslo",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /memit error-injection: "Carl Dorn works in" -> "Oslo"/);
  assert.match(r.stdout, /prompt: Carl Dorn works in\n {2}before: \.\.\..*\n {2}after: {2}\.\.\./);
  // Neither --paraphrase nor --neighbor: those two scores have no prompts and read "n/a".
  assert.match(
    r.stdout,
    /scores: rewrite -?\d\.\d{3} {2}paraphrase n\/a {2}neighborhood n\/a {2}overall -?\d\.\d{3}/,
  );
  assert.match(
    r.stdout,
    /standard metrics: ES [01]\.00 {2}PS n\/a {2}NS n\/a {2}EM -?\d\.\d\d {2}PM n\/a {2}NM n\/a {2}Reliability \d\.\d\d {2}Generalization n\/a {2}Locality n\/a {2}Portability n\/a/,
  );
  assert.doesNotMatch(r.stdout, /NaN/);

  const missing = await edit("--prompt", "Anna lives in", "--subject", "Carl", "--target-new", "Oslo");
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /contains neither the subject "Carl" nor "\{\}"/);
  const badMethod = await edit("--method", "kn", "--case", "7");
  assert.match(badMethod.stderr, /unknown editing method "kn"/);
  const noCase = await edit("--case", "99");
  assert.match(noCase.stderr, /counterfact\.json: no record with case id 99/);
});
