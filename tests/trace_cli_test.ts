// ./locus task trace (experiments/commands/trace.ts) beyond known_1000 files (tests/tracing_test.ts): a CounterFact
// file is traced with its true objects as targets, and the default windows scale with the model's depth
// (ROME's 10 of 48 layers), are printed and recorded with their rule.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { main } from "../experiments/commands/trace.ts";
import { makeTinyKb, TINY_WORDS } from "./fixtures_tiny_kb.ts";

const gpu = await getGpu();
const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** Runs the CLI with console output captured. */
async function trace(args: string[]): Promise<{ code: number; err: string }> {
  const log = console.log, error = console.error;
  const lines: string[] = [];
  console.log = () => {};
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await main(args), err: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("trace --dataset counterfact.json: true objects are the targets, unknown facts are filtered", async () => {
  const kb = await makeTinyKb(gpu, `${dir}/kb`);
  const out = `${dir}/cf`;
  const r = await trace([
    "--model",
    kb.dir,
    "--dataset",
    `${kb.dir}/counterfact.json`,
    "--kind",
    "mlp",
    "--samples",
    "2",
    "--out",
    out,
  ]);
  assert.equal(r.code, 0);
  const records = kb.known.length + kb.unknown.length;
  assert.match(r.err, new RegExp(`the model completes ${kb.known.length} of ${records} facts correctly`));
  const { meta, facts } = JSON.parse(await Deno.readTextFile(`${out}/trace.json`));
  assert.deepEqual(meta.facts, { records, known: kb.known.length, traced: kb.known.length });
  assert.deepEqual(facts.map((f: { known_id: number }) => f.known_id), kb.known, "case_ids as ids");
  const cases = JSON.parse(await Deno.readTextFile(`${kb.dir}/counterfact.json`));
  for (const f of facts) {
    const rewrite = cases[f.known_id].requested_rewrite;
    assert.equal(f.target, rewrite.target_true.str);
    assert.equal(f.prompt, rewrite.prompt.replace("{}", rewrite.subject));
  }
});

Deno.test("trace: default windows scale with depth (12 layers: mlp and attn 3), printed and recorded", async () => {
  const tok = new WordLevelTokenizer(TINY_WORDS, { unk: "<unk>", eos: "<|endoftext|>" });
  const cfg = {
    vocabSize: TINY_WORDS.length,
    nPositions: 16,
    nEmbd: 16,
    nLayer: 12,
    nHead: 2,
    layerNormEpsilon: 1e-5,
  };
  const modelDir = `${dir}/deep`;
  await Model.random(gpu, cfg, 3, true).save(modelDir);
  await Deno.writeTextFile(`${modelDir}/tokenizer.json`, tok.toTokenizerJson());
  const fact = [
    "--prompt",
    "Anna Berg lives in",
    "--subject",
    "Anna Berg",
    "--target",
    "Oslo",
    "--samples",
    "2",
  ];
  const r = await trace(["--model", modelDir, ...fact, "--out", `${dir}/deep-out`]);
  assert.equal(r.code, 0);
  assert.match(
    r.err,
    /windows: resid 1, mlp 3, attn 3 of 12 layers \(default: resid 1, otherwise max\(1, round\(10 x 12 \/ 48\)\)\)/,
  );
  const { meta, facts } = JSON.parse(await Deno.readTextFile(`${dir}/deep-out/trace.json`));
  assert.deepEqual(meta.hyperparameters.windows, { resid: 1, mlp: 3, attn: 3 });
  assert.match(meta.hyperparameters.windowRule, /max\(1, round\(10 L \/ 48\)\)/);
  assert.deepEqual(facts[0].grids.map((g: { window: number }) => g.window), [1, 3, 3]);
  // --window overrides every kind and is recorded as fixed.
  const fixed = await trace([
    "--model",
    modelDir,
    ...fact,
    "--window",
    "5",
    "--kind",
    "mlp",
    "--out",
    `${dir}/w5`,
  ]);
  assert.equal(fixed.code, 0);
  const w5 = JSON.parse(await Deno.readTextFile(`${dir}/w5/trace.json`));
  assert.deepEqual(w5.meta.hyperparameters.windows, { mlp: 5 });
  assert.equal(w5.meta.hyperparameters.windowRule, "fixed (--window)");
});

Deno.test("trace --dataset: a file without usable records names the file and what is missing", async () => {
  const file = `${dir}/no-subject.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify([{
      case_id: 0,
      prompt: "Somebody lives in",
      subject: "Anna Berg",
      target_new: "Oslo",
      ground_truth: "Rome",
      rephrase_prompt: "x",
      locality_prompt: "y",
      locality_ground_truth: "z",
    }]),
  );
  await assert.rejects(
    () => trace(["--model", `${dir}/kb`, "--dataset", file, "--out", `${dir}/none`]),
    /no-subject\.json: no easyedit_counterfact record has a true answer and a prompt that contains its subject/,
  );
});
