// The commands a researcher runs work unchanged on a non-GPT-2 model folder: a copy of the Llama
// fixture (grouped-query attention, rotary, SwiGLU, untied head) with a word-level tokenizer.json
// and a corpus beside it is predicted, traced, edited and attributed by the same commands as GPT-2.
import assert from "node:assert/strict";
import { cp } from "node:fs/promises";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { caseDir } from "./families_fixtures.ts";
import { EDITING_WORDS } from "./fixtures_tiny_kb.ts";
import { rng, runScript, type ScriptRun } from "./util.ts";

const dir = await Deno.makeTempDir();
await cp(caseDir("llama"), dir, { recursive: true });
const V = JSON.parse(await Deno.readTextFile(`${dir}/config.json`)).vocab_size;
const words = [...EDITING_WORDS, ...Array.from({ length: V - EDITING_WORDS.length }, (_, i) => `w${i}`)];
await Deno.writeTextFile(
  `${dir}/tokenizer.json`,
  new WordLevelTokenizer(words, { unk: "<unk>", eos: "<eos>" }).toTokenizerJson(),
);
const r = rng(5);
await Deno.writeTextFile(
  `${dir}/corpus.txt`,
  Array.from(
    { length: 400 },
    () => Array.from({ length: 6 }, () => words[2 + Math.floor(r() * (words.length - 2))]).join(" "),
  ).join("\n") + "\n",
);

/** Runs a command on the Llama folder with the prompt "Anna Berg lives in" (and `args`). */
function onPrompt(script: string, command: string[], ...args: string[]): Promise<ScriptRun> {
  return runScript(script, ...command, "--model", dir, "--prompt", "Anna Berg lives in", ...args);
}

/** The fact of the prompt for the commands that trace or attribute it: Anna Berg -> Paris. */
const FACT = ["--subject", "Anna Berg", "--target", "Paris"];

Deno.test("predict --json on a Llama folder: a distribution over the model's vocabulary", async () => {
  const run = await onPrompt("experiments/commands/predict.ts", ["predict"], "--top", "3", "--json");
  assert.equal(run.code, 0, run.stderr);
  const j = JSON.parse(run.stdout);
  assert.deepEqual(j.input_ids, [2, 3, 8, 10], "Anna Berg lives in");
  assert.equal(j.top.length, 3);
  const probs = j.top.map((t: { prob: number }) => t.prob);
  assert.ok(
    probs[0] >= probs[1] && probs[1] >= probs[2] && probs[0] + probs[1] + probs[2] <= 1 + 1e-6,
    run.stdout,
  );
  for (const t of j.top) assert.equal(t.token, words[t.id]);
});

Deno.test("edit --method rome --json on a Llama folder moves p(new) up at the edited layer", async () => {
  const run = await runScript(
    "experiments/commands/edit.ts",
    "--model",
    dir,
    "--method",
    "rome",
    "--layer",
    "0",
    "--prompt",
    "{} lives in",
    "--subject",
    "Anna Berg",
    "--target-new",
    "Oslo",
    "--target-true",
    "Paris",
    "--json",
  );
  assert.equal(run.code, 0, run.stderr);
  const j = JSON.parse(run.stdout);
  assert.equal(j.method, "rome");
  assert.ok(j.probabilities.post.rewrite > j.probabilities.pre.rewrite, JSON.stringify(j.probabilities));
});

Deno.test("trace and attribute (lga) on a Llama folder write their results", async () => {
  const out = `${dir}/trace-out`;
  const trace = await onPrompt("experiments/commands/trace.ts", [], ...FACT, "--samples", "2", "--out", out);
  assert.equal(trace.code, 0, trace.stderr);
  const traced = [...Deno.readDirSync(out)].map((e) => e.name);
  assert.ok(traced.some((n) => n.endsWith(".json")), `trace wrote ${traced}`);
  const lga = await onPrompt(
    "experiments/commands/attribute.ts",
    ["--method", "lga"],
    ...["--target", "Paris", "--target-new", "Oslo", "--out", `${dir}/lga-out`],
  );
  assert.equal(lga.code, 0, lga.stderr);
});

Deno.test("generate, representation zeroing and integrated gradients on a Llama folder", async () => {
  const gen = await onPrompt("experiments/commands/predict.ts", ["generate"], "--max-new", "3", "--json");
  assert.equal(gen.code, 0, gen.stderr);
  const g = JSON.parse(gen.stdout);
  assert.deepEqual(g.input_ids, [2, 3, 8, 10]);
  assert.equal(g.output_ids.length, 3);
  assert.equal(
    g.text,
    g.output_ids.map((id: number) => words[id]).join(" "),
    "the text is the generated ids' words",
  );
  const zero = await onPrompt(
    "experiments/commands/trace.ts",
    [],
    ...FACT,
    "--zero",
    "--out",
    `${dir}/zero-out`,
  );
  assert.equal(zero.code, 0, zero.stderr);
  const ig = await onPrompt(
    "experiments/commands/attribute.ts",
    ["--method", "ig"],
    ...["--target", "Paris", "--steps", "4", "--out", `${dir}/ig-out`],
  );
  assert.equal(ig.code, 0, ig.stderr);
});

/** Writes counterfact.json: CounterFact-style records whose true objects are what this random model
 *  predicts (so it "knows" them). */
async function writeKnownFacts(): Promise<void> {
  const { getGpu } = await import("../engine/gpu.ts");
  const { Model } = await import("../engine/model.ts");
  const { greedyNextTokens } = await import("../experiments/evaluation/recall.ts");
  const model = await Model.load(await getGpu(), dir);
  const tok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<eos>" });
  const subjects = ["Anna Berg", "Carl Dorn", "Eva Falk"];
  const predicted = await greedyNextTokens(model, subjects.map((s) => tok.encode(`${s} lives in`)));
  const cases = subjects.map((s, i) => ({
    case_id: i,
    requested_rewrite: {
      prompt: "{} lives in",
      relation_id: "R0",
      subject: s,
      target_true: { str: words[predicted[i]], id: words[predicted[i]] },
      target_new: { str: words[predicted[i]] === "Oslo" ? "Lima" : "Oslo", id: "new" },
    },
    paraphrase_prompts: [`${s} works in`],
    neighborhood_prompts: [`${subjects[(i + 1) % 3]} lives in`],
    attribute_prompts: [],
    generation_prompts: [`${s} is`],
  }));
  await Deno.writeTextFile(`${dir}/counterfact.json`, JSON.stringify(cases));
}

Deno.test("sweep on a Llama folder: ROME edits and causal tracing of the facts it knows are stored", async () => {
  await writeKnownFacts();
  const db = `${dir}/sweep.db`;
  const run = await runScript(
    "experiments/commands/sweep.ts",
    ...["--model", dir, "--facts", "2", "--proxy-fraction", "0.5", "--layers", "0,1", "--methods", "rome"],
    ...["--problems", "error-injection", "--localizations", "causal-tracing", "--selectors", "none"],
    ...["--trace-samples", "2", "--v-steps", "2", "--batch", "2", "--stats-dir", `${dir}/stats`, "--out", db],
  );
  assert.equal(run.code, 0, run.stderr);
  const csv = await runScript("experiments/commands/sweep.ts", "csv", db, `${dir}/sweep.csv`);
  assert.equal(csv.code, 0, csv.stderr);
  const rows = (await Deno.readTextFile(`${dir}/sweep.csv`)).trim().split("\n");
  const header = rows[0].split(",");
  const method = header.indexOf("method"), localization = header.indexOf("localization");
  const records = rows.slice(1).map((r) =>
    r.match(/("(?:[^"]|"")*"|[^,]*)(,|$)/g)!.map((c) => c.replace(/,$/, ""))
  );
  assert.ok(records.some((r) => r[method] === "rome"), "ROME edits are stored");
  assert.ok(
    records.some((r) => r[localization] === "causal-tracing" && r[method] === "none"),
    "traces are stored",
  );
});

Deno.test("study --quick on a Llama folder: the report and the summary run unchanged", async () => {
  await writeKnownFacts();
  const run = await runScript(
    "experiments/commands/study.ts",
    ...[
      "--quick",
      "--model",
      dir,
      "--out",
      `${dir}/study`,
      "--facts",
      "1",
      "--proxy",
      "1",
      "--trace-facts",
      "3",
    ],
    ...["--methods", "rome", "--problems", "error-injection", "--mass", "memit", "--v-steps", "2"],
    ...["--stats-dir", `${dir}/stats`],
  );
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /=== Summary \([^,]+, llama; /);
  assert.match(run.stdout, /Caveats found in the data:/);
  const html = await Deno.readTextFile(`${dir}/study/report.html`);
  for (const id of ["caveats", "findings", "table-hase-3", "table-mass-editing", "fig-heatmaps"]) {
    assert.ok(html.includes(`id="${id}"`), `the report has ${id}`);
  }
  assert.match(html, /<dt>model<\/dt><dd>[^<]* \(llama, 2 layers/);
});
