// ./locus task demo end to end on a tiny model folder made here: the five steps are shown with the
// reasons for the layer and key token, the trace's SVG and the HTML page are written, the edit is undone
// bit for bit, an unknown fact is flagged, and bad input gets a clear error.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import {
  EVIDENCE_MIN,
  EVIDENCE_SHARE,
  tracingEvidence,
} from "../experiments/localization/layer_selection.ts";
import type { FactTrace } from "../experiments/localization/tracing.ts";
import { makeTinyKb } from "./fixtures_tiny_kb.ts";
import { runScript, type ScriptRun } from "./util.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const kb = await makeTinyKb(await getGpu(), `${dir}/model`);

/** 3 x the unbiased std over every entry of the wte rows of the subjects of these cases, in float64. */
async function referenceNoise(ids: number[]): Promise<number> {
  const tok = await loadTokenizer(kb.dir);
  const wte = (await (await Model.load(await getGpu(), kb.dir)).toArrays()).get("wte.weight")!;
  const cases = JSON.parse(await Deno.readTextFile(`${kb.dir}/counterfact.json`)) as {
    case_id: number;
    requested_rewrite: { subject: string };
  }[];
  const d = wte.length / tok.vocabSize;
  const values = ids.flatMap((id) =>
    tok.encode(cases.find((c) => c.case_id === id)!.requested_rewrite.subject)
  )
    .flatMap((t) => [...wte.subarray(t * d, (t + 1) * d)]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return 3 * Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
}

function demo(...args: string[]): Promise<ScriptRun> {
  return runScript(
    "experiments/commands/demo.ts",
    "--model",
    kb.dir,
    "--stats-dir",
    `${dir}/stats`,
    "--out",
    `${dir}/demo`,
    "--v-steps",
    "4",
    ...args,
  );
}

Deno.test("demo: fact, trace, layer choice with its reason, key token, bars, labelled averages, page, undo", async () => {
  const r = await demo("--no-color");
  assert.equal(r.code, 0, r.stderr);
  const first = kb.known[0];
  assert.match(r.stdout, /\nAdapter: .+\n/);
  assert.match(r.stdout, new RegExp(`1\\. The fact \\(counterfact:${first}\\): ".*" -> \\w+`));
  assert.match(r.stdout, /After ".*" the model answers: \w+ [\d.]+%, \w+ [\d.]+%, \w+ [\d.]+%/);
  assert.doesNotMatch(r.stdout, /WARNING/, "the first known fact is known");
  assert.match(
    r.stdout,
    /2\. Causal tracing: .*\n.*windows: resid 1, MLP and attention 1 of 3 layers.*\n {3}Noise: .*\n {3}residual stream \(window 1\)/,
  );
  // The noise: ROME's rule, 3 x the float64 std of the wte rows of the known facts' subjects.
  const noise = /Noise: 3 x std of the subject tokens' embeddings \(ROME\) over (\d+) subjects = ([\d.]+)\./
    .exec(r.stdout);
  assert.ok(noise, r.stdout);
  assert.equal(Number(noise[1]), kb.known.length);
  const level = Number(noise[2]), expected = await referenceNoise(kb.known);
  assert.ok(Math.abs(level - expected) <= 5e-5, `noise ${level}, expected ${expected}`);
  // The tiny model is of the "small" family: its documented fact token is the subject's last token.
  assert.match(
    r.stdout,
    /3\. Where to edit\? The edit keys on "\w+", the subject's last token \(this model's default/,
  );
  // The reason matches the numbers: the trace's layer when its peak clears the threshold, the default
  // layer (editing/hparams.ts: layer 0 for small models) otherwise.
  const m =
    /helps most at layer (\d) \(effect (-?[\d.]+); noise threshold ([\d.]+) = .*\)\)\. (?:We edit MLP layer (\d)|It cannot tell the layers apart, so we edit this model's documented default layer (\d))/
      .exec(r.stdout);
  assert.ok(m, r.stdout);
  const [peak, effect, threshold] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (m[4] !== undefined) {
    assert.ok(effect >= threshold, `${effect} clears ${threshold}`);
    assert.equal(Number(m[4]), peak);
  } else {
    assert.ok(effect < threshold, `${effect} is under ${threshold}`);
    assert.equal(Number(m[5]), 0);
  }
  const layer = m[4] ?? m[5];
  assert.match(
    r.stdout,
    new RegExp(
      `4\\. ROME rewrites ".*" to answer \\w+: one rank-one change of layer ${layer}'s MLP, keyed on "\\w+"`,
    ),
  );
  for (const label of ["the fact", "a paraphrase", "a neighbour"]) {
    assert.match(
      r.stdout,
      new RegExp(
        ` {3}${label} +".*"\\n +top answers before: .*\\n +top answers after: {2}.*\\n +p\\(\\w+\\) +before \\|[# ]{25}\\| [\\d.]+%\\n +after  \\|[# ]{25}\\| [\\d.]+%`,
      ),
    );
  }
  // The numbers, not only their format. Before the edit the model answers the fact's true object (the
  // case is one it knows), and that answer's probability is the bar's p(true) before: one next-token
  // probability computed two ways (the top-k distribution and the object's teacher-forced score). The edit
  // changes the answers; the undo brings back exactly the first ones.
  const [, trueObject] = /1\. The fact \(counterfact:\d+\): ".*" -> (\w+)/.exec(r.stdout)!;
  const fact = new RegExp(
    ` {3}the fact +".*"\\n +top answers before: (\\w+) ([\\d.]+)%(.*)\\n +top answers after: {2}(.*)\\n` +
      ` +p\\(${trueObject}\\) +before \\|[# ]{25}\\| ([\\d.]+)%`,
  ).exec(r.stdout);
  assert.ok(fact, r.stdout);
  const [, answer, answerPercent, others, after, trueBefore] = fact;
  assert.equal(answer, trueObject);
  assert.equal(trueBefore, answerPercent, "p(true object) before = its next-token probability");
  assert.notEqual(after, `${answer} ${answerPercent}%${others}`, "the edit changes the answers");
  const firstAnswers = /After ".*" the model answers: (.*) \(/.exec(r.stdout)![1];
  assert.equal(/5\. Undo: .* The model answers: (.*) \(/.exec(r.stdout)![1], firstAnswers);
  assert.match(
    r.stdout,
    /rewrite -?\d\.\d\d \(the fact's prompt\); paraphrase -?\d\.\d\d for the one shown, -?\d\.\d\d average over 1; neighbour unchanged .* \d\.\d\d for the one shown, \d\.\d\d average over \d+\./,
  );
  assert.match(r.stdout, /Standard metrics .*: ES [\d.]+ {2}PS [\d.]+ {2}NS [\d.]+ {2}EM -?[\d.]+/);
  assert.match(r.stdout, /5\. Undo: .*\n {3}Identical to before the edit, to the last bit\./);
  assert.match(r.stdout, /Done in \d+\.\d s\. The page: .*index\.html/);
  const svg = await Deno.readTextFile(`${dir}/demo/trace-counterfact-${first}.svg`);
  assert.match(svg, /^<svg /);
  assert.equal(svg.split('class="panel"').length - 1, 3, "residual, MLP and attention panels");
  const page = await Deno.readTextFile(`${dir}/demo/index.html`);
  assert.match(page, /^<!DOCTYPE html>/);
  assert.equal(page.split("<svg ").length - 1, 3, "heatmaps, effect curve, before/after bars");
  assert.doesNotMatch(page, /<script|https?:\/\/(?!www\.w3\.org)/, "self-contained");
  assert.ok(page.includes(`noise threshold ${m[3]}`) && page.includes("<h2>5. Undo</h2>"));
});

Deno.test("demo: a fact the model does not predict gets a warning", async () => {
  const r = await demo("--no-color", "--case", String(kb.unknown[0]));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /WARNING: the model does not predict \w+ here \(its answer is \w+\)/);
});

Deno.test("tracingEvidence: the peak counts only above max(0.05, 0.1 x (clean - corrupted))", () => {
  const trace = (clean: number, corrupted: number, row: number[]) =>
    ({
      clean,
      corrupted,
      grids: [{ kind: "mlp", effect: [[0, 0, 0], row] }],
    }) as unknown as FactTrace;
  const strong = tracingEvidence(trace(0.9, 0.1, [0.01, 0.3, 0.02]), 1);
  assert.deepEqual([strong.peak, strong.clears], [1, true]);
  assert.ok(Math.abs(strong.threshold - 0.08) < 1e-12);
  const weak = tracingEvidence(trace(0.99, 0.05, [0.024, 0.01, 0.0]), 1);
  assert.deepEqual([weak.peak, weak.clears], [0, false]);
  // A small drop: the absolute floor of 0.05 applies.
  const floor = tracingEvidence(trace(0.3, 0.2, [0.04, 0.0, 0.0]), 1);
  assert.deepEqual([floor.threshold, floor.clears], [EVIDENCE_MIN, false]);
  assert.equal(EVIDENCE_SHARE, 0.1);
});

Deno.test("demo: --case and --strategy lga", async () => {
  const id = kb.known[2];
  const r = await demo("--case", String(id), "--strategy", "lga");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`1\\. The fact \\(counterfact:${id}\\)`));
  const m = /Layer Gradient Analysis on \d+ other facts picks layer (\d); we edit it\./.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.match(
    r.stdout,
    new RegExp(`one rank-one change of layer ${m[1]}'s MLP`),
    "the edit is at LGA's layer",
  );
});

Deno.test("demo: clear errors for an unknown case, strategy or model folder", async () => {
  const bad = await demo("--case", "999");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /demo: --case 999: .*counterfact\.json has no case_id 999/);
  assert.match(
    (await demo("--strategy", "random")).stderr,
    /--strategy must be "lga" or "tracing", got "random"/,
  );
  const none = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../experiments/commands/demo.ts", import.meta.url).pathname,
      "--model",
      `${dir}/nothing`,
    ],
    stderr: "piped",
  }).output();
  assert.match(new TextDecoder().decode(none.stderr), /demo: .*nothing\/model\.safetensors is missing/);
});
