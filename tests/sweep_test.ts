// experiments/study/sweep.ts and its command experiments/commands/sweep.ts: the plan, progress lines,
// and `deno task sweep` end to end on a tiny model folder: killed with SIGKILL mid-sweep and resumed
// (nothing lost, nothing duplicated, stored rows untouched), killed again and again at random moments
// (it still completes), two shards that partition the results and merge into the unsharded sweep, CSV
// export; --max-minutes, a missing or damaged store, resuming under other settings, records too long
// for the model, unknown targets.
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { existsSync } from "../engine/files.ts";
import { getGpu } from "../engine/gpu.ts";
import { loadSweep, windowStudy } from "../experiments/study/analysis.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { traceFact } from "../experiments/localization/tracing.ts";
import { renderReport } from "../experiments/study/report.ts";
import { resultKey, ResultStore, type StoredResult } from "../experiments/study/store.ts";
import {
  blockSizes,
  dealFacts,
  defaultSettings,
  driftMeasured,
  jsonSafe,
  methodLayers,
  parseLayerList,
  parseNames,
  parseWindowSizes,
  planItems,
  SELECTORS,
  SWEEP_METHODS,
  type SweepFact,
  type SweepPlan,
} from "../experiments/study/sweep.ts";
import { studyWindows } from "../experiments/localization/layer_selection.ts";
import { ftHparams } from "../experiments/editing/hparams.ts";
import { essenceScore, harmonicMean, STANDARD_METRICS } from "../experiments/evaluation/metrics.ts";
import { EDITING_CONFIG, makeTinyKb } from "./fixtures_tiny_kb.ts";
import { assertSameMetrics, rng } from "./util.ts";

const delay = (ms: number) => new Promise<false>((r) => setTimeout(() => r(false), ms));

// ------------------------------------------------------------------------------------------------
// Pure parts

function fact(i: number, split: SweepFact["split"]): SweepFact {
  return {
    id: `counterfact:${i}`,
    recordIndex: i,
    split,
    case: {
      prompt: "{} lives in",
      subject: `S${i}`,
      targetTrue: "Oslo",
      targetNew: "Rome",
      paraphrases: [],
      neighbors: [],
    },
  };
}

Deno.test("planItems: traces, selections, then every fact x layer x method x problem edit; trace-only facts are not edited", () => {
  const plan: SweepPlan = {
    name: "p",
    facts: [fact(0, "proxy"), fact(1, "test"), fact(2, "trace-only")],
    layers: [0, 2],
    methods: ["rome", "ft"],
    problems: ["error-injection", "fact-forcing"],
    localizations: ["causal-tracing", "zeroing"],
    selectors: [...SELECTORS],
    settings: {
      seed: 0,
      traceWindow: 1,
      traceSamples: 2,
      traceKinds: ["mlp"],
      memitWindow: 3,
      ftWindow: 1,
      batchSize: 2,
      igSteps: 2,
      overrides: {},
      drift: { essenceSamples: 0, essenceTokens: 1, fluencyPrompts: 0, fluencyTokens: 1, topK: 1, every: 1 },
    },
  };
  const items = planItems(plan);
  const kinds = items.map((it) => it.kind);
  assert.equal(kinds.filter((k) => k === "trace").length, 3 * 2);
  assert.equal(kinds.filter((k) => k === "select").length, 3);
  assert.equal(kinds.filter((k) => k === "edit").length, 2 * 2 * 2 * 2);
  assert.deepEqual(kinds.slice(0, 10), [...Array(6).fill("trace"), ...Array(3).fill("select"), "edit"]);
  assert.equal(new Set(items.map((it) => resultKey(it.key))).size, items.length, "keys are unique");
  assert.ok(!items.some((it) => it.kind === "edit" && it.fact.id === "counterfact:2"));
  // FT-5: FT-L on the 5 layers around the sweep layer, clipped (not shifted) at the ends as MEMIT's
  // window is; "ft" trains ftWindow layers. "all" methods include it.
  assert.deepEqual([0, 1, 3, 5].map((l) => methodLayers(plan, "ft-5", l, 6)), [
    [0, 1, 2],
    [0, 1, 2, 3],
    [1, 2, 3, 4, 5],
    [3, 4, 5],
  ]);
  assert.deepEqual(methodLayers(plan, "ft", 3, 6), [3]);
  assert.deepEqual(methodLayers(plan, "memit", 0, 6), [0, 1]);
  assert.deepEqual(parseNames("methods", "all", SWEEP_METHODS), [
    "rome",
    "r-rome",
    "memit",
    "emmet",
    "ft",
    "ft-5",
  ]);
  // Essence and fluency on every `every`-th edited fact; 0 switches them off.
  const drift = { ...plan.settings.drift, essenceSamples: 5, every: 3 };
  assert.deepEqual([0, 1, 2, 3, 6].map((i) => driftMeasured(drift, i)), [true, false, false, true, true]);
  assert.ok(![0, 1].some((i) => driftMeasured({ ...drift, every: 0 }, i)));
  assert.ok(!driftMeasured({ ...drift, essenceSamples: 0, fluencyPrompts: 0 }, 0), "nothing to measure");
  // The deal of facts to shards gives each shard its share of the measured facts (the costlier ones), of
  // the other edited facts and of the facts only traced: with every 4th fact measured and 2 shards, a deal
  // of the edited facts in one turn would give shard 0 every measured fact.
  const many = [
    ...Array.from({ length: 4 }, (_, i) => fact(i, "proxy")),
    ...Array.from({ length: 12 }, (_, i) => fact(4 + i, "test")),
    ...Array.from({ length: 3 }, (_, i) => fact(16 + i, "trace-only")),
  ];
  const deal = dealFacts({ facts: many, settings: { ...plan.settings, drift: { ...drift, every: 4 } } });
  assert.deepEqual([...deal.values()].sort((a, b) => a - b), many.map((_, i) => i), "one place per fact");
  const perShard = (ids: string[]) => [0, 1].map((k) => ids.filter((id) => deal.get(id)! % 2 === k).length);
  const measuredIds = [0, 4, 8, 12].map((i) => `counterfact:${i}`);
  assert.deepEqual(perShard(measuredIds), [2, 2], "measured facts");
  assert.deepEqual(perShard(many.map((f) => f.id)), [10, 9], "all facts");
  assert.deepEqual(perShard(many.filter((f) => f.split === "trace-only").map((f) => f.id)), [2, 1]);
  assert.deepEqual(items.find((it) => it.kind === "select")!.key, {
    sweep: "p",
    fact: "proxy-set",
    method: "none",
    layer: null,
    problem: "none",
    localization: "select:causal-tracing",
  });
});

Deno.test("window study: Hase et al.'s windows scaled to depth; planItems traces only the edited facts, only missing windows", () => {
  // 1, 3, 5, 10 of GPT-J's 28 layers: one layer stays one; the others keep their share of the depth.
  assert.deepEqual(studyWindows(28), [[1], [3], [5], [10]].map(([w]) => ({ layers: w, paper: [w] })));
  assert.deepEqual(studyWindows(48).map((w) => w.layers), [1, 5, 9, 17]);
  assert.deepEqual(studyWindows(12).map((w) => w.layers), [1, 2, 4]);
  assert.deepEqual(studyWindows(6), [{ layers: 1, paper: [1, 3, 5] }, { layers: 2, paper: [10] }]);
  assert.deepEqual(parseWindowSizes("windows", "10,1", 28), [1, 10]);
  assert.deepEqual(parseWindowSizes("windows", "none", 28), []);
  assert.throws(() => parseWindowSizes("windows", "1,0", 28), /--windows: expected "none" or window sizes/);
  const settings = { ...defaultSettings(6), traceWindow: 1 };
  const base: SweepPlan = {
    name: "w",
    facts: [fact(0, "proxy"), fact(1, "test"), fact(2, "trace-only")],
    layers: [0],
    methods: ["rome"],
    problems: ["error-injection"],
    localizations: ["causal-tracing"],
    selectors: [],
    settings,
    windows: [1, 2, 3],
  };
  const traces = (plan: SweepPlan) =>
    planItems(plan).flatMap((it) =>
      it.kind === "trace" ? [[it.key.localization, it.fact.id, it.window]] : []
    );
  // Window 1 is the main traces' window: reused, not traced again; windows 2 and 3 for the 2 edited facts.
  assert.deepEqual(traces(base), [
    ["causal-tracing", "counterfact:0", undefined],
    ["causal-tracing", "counterfact:1", undefined],
    ["causal-tracing", "counterfact:2", undefined],
    ["tracing-window:2", "counterfact:0", 2],
    ["tracing-window:2", "counterfact:1", 2],
    ["tracing-window:3", "counterfact:0", 3],
    ["tracing-window:3", "counterfact:1", 3],
  ]);
  // Without the main causal traces, window 1 is traced by the study itself.
  assert.deepEqual(
    traces({ ...base, localizations: ["zeroing"], windows: [1] }).filter(([l]) => l !== "zeroing"),
    [["tracing-window:1", "counterfact:0", 1], ["tracing-window:1", "counterfact:1", 1]],
  );
});

Deno.test("blockSizes: one process runs blocks of the largest size; several, sharing blocks, take 1 / (2 x processes) of what is left once it is small, never below the smallest", () => {
  assert.deepEqual(blockSizes(50, 24), [24, 24, 2]);
  const sizes = blockSizes(300, 24, 2);
  assert.deepEqual(sizes, [24, 24, 24, 24, 24, 24, 24, 24, 24, 21, 16, 12, 9, 7, 5, 4, 4, 4, 2]);
  assert.equal(sizes.reduce((a, b) => a + b, 0), 300);
  assert.deepEqual(blockSizes(300, 24, 3).slice(-13), [16, 13, 11, 9, 7, 6, 5, 4, 4, 4, 4, 4, 4]);
  assert.deepEqual(blockSizes(4, 24, 2), [4]);
  assert.deepEqual(blockSizes(4, 2, 2), [2, 2]);
  assert.deepEqual(blockSizes(9, 8, 2), [4, 4, 1]);
  assert.deepEqual(blockSizes(5, 1, 2), [1, 1, 1, 1, 1]);
  assert.deepEqual(blockSizes(0, 24, 2), []);
});

Deno.test("option parsing and helpers: layer lists, names, the trace window, JSON-safe values", () => {
  assert.deepEqual(parseLayerList("all", 3), [0, 1, 2]);
  assert.deepEqual(parseLayerList("1-3", 6), [1, 2, 3]);
  assert.deepEqual(parseLayerList("0,4", 6), [0, 4]);
  assert.throws(() => parseLayerList("7", 6), /--layers: .* within 0\.\.5, got "7"/);
  assert.deepEqual(parseNames("selectors", "lga", SELECTORS), ["lga"]);
  assert.deepEqual(parseNames("selectors", "none", SELECTORS), []);
  assert.throws(
    () => parseNames("selectors", "lga,cma", SELECTORS),
    /--selectors: unknown "cma"; known: causal-tracing/,
  );
  // The trace window is layer_selection.ts's scaledMlpWindow, as in trace, demo and the CMA selector:
  // ROME's 10 of GPT-2 XL's 48 layers, scaled.
  assert.deepEqual([48, 28, 12, 6].map((L) => defaultSettings(L).traceWindow), [10, 6, 3, 1]);
  assert.deepEqual(
    jsonSafe({ a: [1, NaN, Infinity], b: new Float32Array([0.5]), c: undefined, d: { e: null } }),
    {
      a: [1, null, null],
      b: [0.5],
      d: { e: null },
    },
  );
});

// ------------------------------------------------------------------------------------------------
// deno task sweep end to end

const gpu = await getGpu();
const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const kb = await makeTinyKb(gpu, `${dir}/model`);

// 3 facts (1 proxy) x 2 layers x 2 methods x 2 problems = 24 edits, + 3 x 2 traces + 3 selections.
const TOTAL = 24 + 6 + 3;
const SWEEP_ARGS = [
  "--model",
  kb.dir,
  "--facts",
  "3",
  "--proxy-fraction",
  "0.3",
  "--layers",
  "0,2",
  "--methods",
  "rome,ft",
  "--problems",
  "error-injection,fact-erasure",
  "--localizations",
  "causal-tracing,zeroing",
  "--selectors",
  "all",
  "--trace-samples",
  "3",
  "--ig-steps",
  "4",
  "--v-steps",
  "3",
  "--ft-steps",
  "2",
  "--batch",
  "2",
  "--drift-every",
  "2",
  "--essence-tokens",
  "4",
  "--fluency-tokens",
  "4",
  "--stats-dir",
  `${dir}/stats`,
];

/** The job-array variables a sweep reads its shard from: not inherited, only set by the tests that test them. */
const ARRAY_VARIABLES = [
  "SLURM_ARRAY_TASK_ID",
  "SLURM_ARRAY_TASK_COUNT",
  "SLURM_ARRAY_TASK_MIN",
  "JOB_COMPLETION_INDEX",
  "LOCUS_SHARD_COUNT",
];

function sweepCommand(...args: string[]): Deno.Command {
  return sweepCommandIn({}, ...args);
}

/** The sweep command with these environment variables (job-array tasks). */
function sweepCommandIn(env: Record<string, string>, ...args: string[]): Deno.Command {
  const inherited = Deno.env.toObject();
  for (const name of ARRAY_VARIABLES) delete inherited[name];
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../experiments/commands/sweep.ts", import.meta.url).pathname, ...args],
    env: { ...inherited, ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs the sweep command, which must succeed: its stdout and stderr. */
async function sweepOutput(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return await sweepOutputIn({}, ...args);
}

async function sweepOutputIn(
  env: Record<string, string>,
  ...args: string[]
): Promise<{ stdout: string; stderr: string }> {
  const out = await sweepCommandIn(env, ...args).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `sweep ${args.join(" ")} failed:\n${dec.decode(out.stderr)}`);
  return { stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function sweep(...args: string[]): Promise<string> {
  return (await sweepOutput(...args)).stdout;
}

async function sweepIn(env: Record<string, string>, ...args: string[]): Promise<string> {
  return (await sweepOutputIn(env, ...args)).stdout;
}

function readAll(path: string): StoredResult[] {
  const store = ResultStore.open(path);
  try {
    return [...store.results()];
  } finally {
    store.close();
  }
}

/** Rows in the store now, or 0 while it does not exist or is being written. */
function countRows(path: string): number {
  try {
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      return (db.prepare("SELECT count(*) AS n FROM results").get() as { n: number }).n;
    } finally {
      db.close();
    }
  } catch {
    return 0;
  }
}

const byKey = (rows: StoredResult[]) => new Map(rows.map((r) => [r.key, r]));

const full = `${dir}/full.db`;
let fullRows: StoredResult[] = [];

Deno.test("sweep: a full run stores every result once, with run metadata", async () => {
  const { stdout: out, stderr } = await sweepOutput(...SWEEP_ARGS, "--out", full, "--csv", `${dir}/full.csv`);
  // Progress: output.ts's bar (plain lines in a pipe) over the sweep's results, ending at 100%.
  const bars = stderr.trimEnd().split("\n").filter((l) => l.startsWith('sweep "'));
  assert.ok(bars.length >= 3, stderr);
  assert.match(bars.at(-1)!, new RegExp(`^sweep "sweep" \\[#{20}\\] ${TOTAL}/${TOTAL} 100%  \\S+ elapsed  `));
  assert.ok(bars.slice(1, -1).every((l) => /\d+\/\d+ \d+% {2}\S+ elapsed, ETA \S+ {2}/.test(l)), stderr);
  // It moves while an edit block's v* / z and FT-L steps run, before the block stores a result
  // (experiments/study/block_progress.ts), and never goes back.
  const counts = bars.map((l) => Number(/\] (\d+)\//.exec(l)![1]));
  assert.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), stderr);
  assert.ok(bars.some((l) => /the block's (v\*\/z|FT-L): step \d+\/\d+$/.test(l)), stderr);
  // Run again: everything is stored, so there is nothing to show progress of.
  const again = await sweepOutput(...SWEEP_ARGS, "--out", full);
  assert.doesNotMatch(again.stderr, /sweep "sweep" \[/);
  assert.match(again.stdout, new RegExp(`0 results written .* \\(${TOTAL} were already there`));
  assert.match(
    out,
    new RegExp(`${TOTAL} results written .* \\(0 were already there; ${TOTAL} in this sweep\\)`),
  );
  fullRows = readAll(full);
  assert.equal(fullRows.length, TOTAL);
  const edit = fullRows.find((r) => r.method === "rome" && r.layer === 0)!;
  assert.equal(edit.model.nLayer, 3);
  assert.match(String(edit.model.weightsSha256), /^[0-9a-f]{64}$/);
  assert.equal(edit.hparams.seed, 0);
  assert.equal(edit.hparams.vNumGradSteps, 3);
  assert.deepEqual(edit.hparams.editedLayers, [0]);
  assert.ok(Number(edit.timings.edit) > 0 && Number(edit.timings.score) > 0);
  assert.ok(String(edit.adapter.description).length > 0);
  assert.match(String(edit.dataset.caseId), /^counterfact:\d+$/);
  assert.ok(["proxy", "test"].includes(String(edit.dataset.split)));
  // Only facts the model knows were sampled.
  const facts = new Set(fullRows.map((r) => r.fact).filter((f) => f !== "proxy-set"));
  for (const f of facts) assert.ok(kb.known.includes(Number(f.split(":")[1])), `${f} is not a known fact`);
  const erasure = fullRows.find((r) => r.problem === "fact-erasure")!;
  assert.equal(erasure.metrics.direction, "decrease");
  // The field's standard metrics beside Hase et al.'s scores: every key of STANDARD_METRICS on an
  // error-injection edit (ES a 0/1 win, EM its margin), none for erasure (no new object to compare).
  const injected = fullRows.filter((r) => r.problem === "error-injection" && r.localization === "layer-grid");
  for (const r of injected) {
    const std = r.metrics.standard as Record<string, number | null>;
    assert.deepEqual(Object.keys(std).sort(), STANDARD_METRICS.map((m) => m.key).sort(), r.key);
    assert.equal(std.efficacySuccess, std.efficacyMagnitude! > 0 ? 1 : 0, r.key);
    assert.equal(std.portability, null);
  }
  assert.equal(erasure.metrics.standard, null);
  // ... and the summary prints both, per problem x method, with the means of the stored values.
  const esMean = (method: string) => {
    const xs = injected.filter((r) => r.method === method).map((r) =>
      (r.metrics.standard as Record<string, number>).efficacySuccess
    );
    return (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2);
  };
  assert.match(
    out,
    new RegExp(`error-injection rome \\(6 edits\\): rewrite -?[\\d.]+ .* \\| ES ${esMean("rome")} {2}PS`),
  );
  assert.match(out, new RegExp(`error-injection ft \\(6 edits\\): .* \\| ES ${esMean("ft")} `));
  assert.match(out, /fact-erasure rome \(6 edits\): .*overall [\d.]+ \| standard metrics n\/a/);
  // Essence and fluency on every 2nd edited fact (2 of 3), at every layer, method and problem, with the
  // settings and seed stored; Hase et al.'s score and four-way overall recomputed from the stored parts.
  const edits = fullRows.filter((r) => r.localization === "layer-grid");
  const measured = edits.filter((r) => (r.hparams.drift as Record<string, unknown>).measured);
  assert.equal(new Set(measured.map((r) => r.fact)).size, 2);
  assert.equal(measured.length, 2 * 2 * 2 * 2);
  for (const r of edits) {
    const d = r.hparams.drift as Record<string, number | boolean>;
    assert.deepEqual(
      [d.essenceSamples, d.essenceTokens, d.fluencyPrompts, d.fluencyTokens, d.topK, d.every],
      [5, 4, 5, 4, 5, 2],
    );
    assert.equal(d.seed, Number(r.dataset.recordIndex), "seed 0: the record index");
    const essence = r.metrics.essence as Record<string, number> | null;
    const fluent = r.metrics.fluency as Record<string, number> | null;
    if (!d.measured) {
      assert.deepEqual([essence, fluent, r.metrics.overallEssence], [null, null, null], r.key);
      continue;
    }
    assert.equal(essence!.score, essenceScore(essence!.pre, essence!.post), r.key);
    const parts = ["rewrite", "paraphrase", "neighborhood"].map((k) => r.metrics[k] as number);
    assert.equal(r.metrics.overallEssence, harmonicMean([...parts, essence!.score]), r.key);
    assert.equal(d.prompts, 1, "the tiny knowledge base's one generation prompt");
    assert.ok(fluent!.post >= 0 && fluent!.pre >= 0, r.key);
    // Measured, unless the edit changes no weight: then the unedited model's measurements are its own.
    const unchanged = essence!.post === essence!.pre && fluent!.post === fluent!.pre;
    assert.ok(Number(r.timings.drift) > 0 || unchanged, r.key);
    // The unedited model's measurements are the fact's, whatever the edit.
    const first = measured.find((x) => x.fact === r.fact)!;
    assert.equal(essence!.pre, (first.metrics.essence as Record<string, number>).pre);
    assert.equal(fluent!.pre, (first.metrics.fluency as Record<string, number>).pre);
  }
  assert.ok(
    measured.some((r) => (r.metrics.essence as Record<string, number>).score < 1),
    "some edit raises the essence texts' perplexity",
  );
  assert.match(
    out,
    /error-injection rome \(6 edits\): .* \| essence [\d.]+ \(4 edits\) {2}fluency [\d.]+ \(unedited [\d.]+; 4 edits\)/,
  );
  const trace = fullRows.find((r) => r.localization === "causal-tracing")!;
  assert.equal((trace.metrics.effect as number[]).length, 3);
  assert.ok(Array.isArray((trace.metrics.trace as { grids: unknown[] }).grids));

  const csv = (await Deno.readTextFile(`${dir}/full.csv`)).trimEnd().split("\r\n");
  assert.equal(csv.length, TOTAL + 1);
  for (
    const column of [
      "metrics.rewrite",
      "metrics.standard.efficacySuccess",
      "metrics.standard.locality",
      "hparams.seed",
      "model.weightsSha256",
      "adapter.description",
      "timings.edit",
    ]
  ) {
    assert.ok(csv[0].split(",").includes(column), `CSV column ${column}`);
  }
});

Deno.test("sweep: --windows adds the window study's traces to a finished sweep, only those missing, each with its window", async () => {
  const db = `${dir}/windows.db`;
  await Deno.copyFile(full, db);
  // 3 layers: window sizes 1, 20 and 28 of GPT-J's 28 layers are 1, 2 and 3 layers here. Window 1 is the
  // main traces' (causal-tracing), so only the 3 edited facts' window-2 traces are new; then window 3.
  const first = await sweep(...SWEEP_ARGS, "--out", db, "--windows", "1,20");
  assert.match(first, new RegExp(`${TOTAL} already stored, 3 to run`));
  const second = await sweep(...SWEEP_ARGS, "--out", db, "--windows", "1,20,28");
  assert.match(second, new RegExp(`${TOTAL + 3} already stored, 3 to run`));
  const rows = readAll(db);
  const study = rows.filter((r) => r.localization.startsWith("tracing-window:"));
  assert.deepEqual(
    study.map((r) => [r.localization, r.hparams.window]).sort(),
    [...Array(3).fill(["tracing-window:2", 2]), ...Array(3).fill(["tracing-window:3", 3])],
  );
  const edited = new Set(
    fullRows.filter((r) => r.localization === "layer-grid").map((r) => r.fact),
  );
  assert.deepEqual(new Set(study.map((r) => r.fact)), edited);
  // Each stored trace is the MLP trace with its window: recomputed here, it gives the stored effects (and
  // they differ from the main window-1 trace's, so a wrong window could not pass).
  const model = await Model.load(gpu, kb.dir);
  const tok = await loadTokenizer(kb.dir);
  const { cases } = await loadDataset(`${kb.dir}/counterfact.json`);
  const r = study.find((x) => x.hparams.window === 2)!;
  const c = cases.find((x) => x.id === r.fact)!;
  const grids = (r.metrics.trace as { grids: { kind: string; window: number }[] }).grids;
  assert.deepEqual(grids.map((g) => [g.kind, g.window]), [["mlp", 2]]);
  const trace = await traceFact(model, tok, { prompt: c.prompt, subject: c.subject, target: c.targetTrue! }, {
    kinds: ["mlp"],
    window: 2,
    samples: 3,
    seed: 1,
    noise: (r.hparams.noise as { level: number }).level,
  });
  const stored = r.metrics.effect as number[];
  trace.grids[0].layers.maxFraction.forEach((e, l) =>
    assert.ok(Math.abs(e - stored[l]) <= 1e-5, `layer ${l}: ${e} vs stored ${stored[l]}`)
  );
  const main = rows.find((x) => x.localization === "causal-tracing" && x.fact === r.fact)!;
  assert.ok(
    (main.metrics.effect as number[]).some((e, l) => Math.abs(e - stored[l]) > 1e-3),
    "the window-2 effects equal the window-1 ones",
  );
  // The analysis and the report read the three windows.
  const data = loadSweep(rows, "sweep");
  const windows = windowStudy(data, { resamples: 50 });
  assert.deepEqual(windows.windows.map((w) => [w.window, w.localization]), [
    [1, "causal-tracing"],
    [2, "tracing-window:2"],
    [3, "tracing-window:3"],
  ]);
  assert.equal(windows.rows.length, 3 * 2 * 2);
  const html = renderReport(data);
  assert.match(html, /<table id="table-window">/);
  assert.match(html, /<figure id="fig-window-r2">/);
});

Deno.test("sweep: batched virtual scoring (ROME's low-rank and FT-L's dense edits) stores what applying, scoring and undoing each edit stores", async () => {
  const db = `${dir}/applied.db`;
  await sweep(
    ...SWEEP_ARGS,
    "--out",
    db,
    "--localizations",
    "none",
    "--selectors",
    "none",
    "--apply-to-score",
  );
  const applied = readAll(db).filter((r) => r.method === "rome" || r.method === "ft");
  const reference = byKey(fullRows);
  assert.equal(applied.length, 3 * 2 * 2 * 2);
  let measured = 0;
  for (const r of applied) {
    const batched = reference.get(r.key)!;
    assert.equal(batched.timings.virtual, 1, `${r.key} was scored virtually in the full run`);
    assert.equal(r.timings.virtual, 0);
    const [a, b] = [r, batched].map((x) => x.metrics.post as { [k: string]: number | number[] });
    for (const part of ["rewrite", "paraphrase", "neighborhood"]) {
      const x = [a[part]].flat(), y = [b[part]].flat();
      assert.equal(x.length, y.length);
      x.forEach((v, i) =>
        assert.ok(Math.abs(v - y[i]) <= 1e-5, `${r.key}: post ${part}[${i}] ${v} vs ${y[i]}`)
      );
    }
    assertSameMetrics(r, batched);
    // The standard metrics, essence and fluency were batched too (every prompt under its edit, each
    // fact's generations with their own draws): the values of the edit applied, the same samples.
    const [sa, sb] = [r, batched].map((x) => x.metrics.standard as Record<string, number | null> | null);
    assert.equal(sa === null, sb === null, r.key);
    for (const m of sa ? STANDARD_METRICS : []) {
      const [x, y] = [sa![m.key], sb![m.key]];
      assert.ok(x === y || Math.abs(x! - y!) <= 1e-5, `${r.key}: ${m.key} ${x} vs ${y}`);
    }
    const [ea, eb] = [r, batched].map((x) => x.metrics.essence as Record<string, number> | null);
    assert.equal(ea === null, eb === null, r.key);
    if (ea) {
      assert.ok(
        Math.abs(ea.post - eb!.post) <= 1e-5 * ea.post,
        `${r.key}: essence ${ea.post} vs ${eb!.post}`,
      );
    }
    assert.deepEqual(r.metrics.fluency, batched.metrics.fluency, `${r.key}: fluency`);
    measured += ea ? 1 : 0;
  }
  assert.ok(measured > 0, "essence and fluency were measured on some edits");
  assert.ok(
    applied.some((r) => r.method === "ft" && r.timings.batch === 4),
    "FT-L edits were trained together",
  );
});

Deno.test("sweep: ft-5 trains the 5 layers around the edit layer (clipped), each within FT-L's radius over their number", async () => {
  const only = ["--methods", "ft-5", "--layers", "all", "--problems", "error-injection"];
  const args = [...SWEEP_ARGS, ...only, "--localizations", "none", "--selectors", "none", "--name", "ft5"];
  const out = await sweep(...args, "--out", `${dir}/ft5.db`);
  const rows = readAll(`${dir}/ft5.db`);
  assert.equal(rows.length, 3 * 3);
  // FT-L on one layer (the full sweep's "ft") has the model's radius; this 3-layer model clips FT-5's
  // window to all 3 layers, which share it.
  const eps = fullRows.find((r) => r.method === "ft")!.hparams.normConstraint as number;
  assert.equal(eps, ftHparams({ ...EDITING_CONFIG, nLayer: 3 }).normConstraint);
  for (const r of rows) {
    assert.equal(r.method, "ft-5");
    assert.equal(r.hparams.method, "ft-5");
    assert.deepEqual(r.hparams.editedLayers, [0, 1, 2], r.key);
    assert.equal(r.hparams.normConstraint, eps / 3, r.key);
    assert.equal(r.timings.virtual, 1, "a dense edit is scored virtually too");
  }
  assert.match(out, /error-injection ft-5 \(9 edits\): rewrite /);
});

Deno.test("sweep: MEMIT and EMMET with a block's z batched and scored virtually store what one fact at a time stores", async () => {
  const only = ["--methods", "memit,emmet", "--problems", "error-injection", "--localizations", "none"];
  const args = [...SWEEP_ARGS, ...only, "--selectors", "none", "--name", "memit"];
  await sweep(...args, "--out", `${dir}/memit-batched.db`);
  // The reference: one fact at one layer per block (a sweep per layer), each edit applied to score it.
  const alone = new Map<string, StoredResult>();
  for (const layer of ["0", "2"]) {
    const out = `${dir}/memit-alone-${layer}.db`;
    await sweep(...args, "--out", out, "--batch", "1", "--apply-to-score", "--layers", layer);
    for (const [key, r] of byKey(readAll(out))) alone.set(key, r);
  }
  const batched = readAll(`${dir}/memit-batched.db`);
  assert.equal(batched.length, 3 * 2 * 2);
  assert.ok(batched.some((r) => r.timings.batch === 4), "a block's facts x layers were computed together");
  for (const r of batched) {
    const other = alone.get(r.key)!;
    assert.equal(r.timings.virtual, 1);
    assert.equal(other.timings.batch, 1);
    const [a, b] = [r, other].map((x) => x.metrics.post as { [k: string]: number | number[] });
    for (const part of ["rewrite", "paraphrase", "neighborhood"]) {
      const x = [a[part]].flat(), y = [b[part]].flat();
      x.forEach((v, i) =>
        assert.ok(Math.abs(v - y[i]) <= 1e-4, `${r.key}: post ${part}[${i}] ${v} vs ${y[i]}`)
      );
    }
  }
});

Deno.test("sweep: ROME and R-ROME share v*, MEMIT and EMMET share z, and store what each method's own sweep stores", async () => {
  const only = ["--problems", "error-injection", "--localizations", "none", "--selectors", "none"];
  const args = [...SWEEP_ARGS, ...only, "--name", "share"];
  const out = await sweep(...args, "--methods", "rome,r-rome,memit,emmet", "--out", `${dir}/shared.db`);
  // The references: no two methods of a run optimise the same values (v* at the MLP output, z at the
  // block output), so each method computes its own.
  const alone = new Map<string, StoredResult>();
  for (const methods of ["rome,memit", "r-rome,emmet"]) {
    const db = `${dir}/share-${methods}.db`;
    assert.match(await sweep(...args, "--methods", methods, "--out", db), /v\* \/ z: 12 optimised, 0 reused/);
    for (const [key, r] of byKey(readAll(db))) alone.set(key, r);
  }
  const shared = readAll(`${dir}/shared.db`);
  assert.equal(shared.length, 3 * 2 * 4);
  for (const r of shared) {
    const other = alone.get(r.key)!;
    // The same v* / z floats, so the same edits and every score the same, bit for bit.
    assert.deepEqual(r.metrics, other.metrics, r.key);
    assert.deepEqual(r.hparams, other.hparams, r.key);
    assert.equal(other.timings.valuesReused, 0);
    // On this 3-layer model MEMIT's window around layer 2 is layers 1-2, so its z at layer 2 is EMMET's
    // at layer 2; its window around layer 0 ends at layer 1, where EMMET never optimises.
    const reused = r.method === "r-rome" || (r.method === "emmet" && r.layer === 2);
    assert.equal(r.timings.valuesReused, reused ? 1 : 0, r.key);
  }
  // ROME 6 v* and MEMIT 6 z optimised; R-ROME's 6 reused, EMMET's 3 at layer 0 optimised, 3 reused.
  assert.match(out, /v\* \/ z: 15 optimised, 9 reused from another method/);
});

Deno.test("sweep: killed with SIGKILL at random moments and resumed, nothing is lost or duplicated", async () => {
  const db = `${dir}/killed.db`;
  const random = rng(31);
  let before: StoredResult[] = [];
  // Twice: run until a random number of results exist, wait a random moment more (the kill lands
  // inside an item or between items), kill; the second run resumes the first.
  for (const upTo of [TOTAL / 3, (2 * TOTAL) / 3]) {
    const target = before.length + 1 + Math.floor(random() * (upTo - before.length));
    const child = sweepCommand(...SWEEP_ARGS, "--out", db).spawn();
    const drain = Promise.all([
      child.stdout.pipeTo(new WritableStream()),
      child.stderr.pipeTo(new WritableStream()),
    ]);
    while (countRows(db) < target) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, random() * 100));
    child.kill("SIGKILL");
    const status = await child.status;
    await drain;
    assert.equal(status.signal, "SIGKILL", "the sweep finished before it was killed");
    const rows = readAll(db);
    assert.ok(rows.length >= target && rows.length < TOTAL, `${rows.length} results at the kill`);
    // Rows stored before an earlier kill are untouched (same write time and content).
    const now = byKey(rows);
    for (const r of before) assert.deepEqual(now.get(r.key), r);
    before = rows;
  }

  const out = await sweep(...SWEEP_ARGS, "--out", db);
  assert.match(out, new RegExp(`${before.length} already stored, ${TOTAL - before.length} to run`));
  assert.match(out, new RegExp(`${TOTAL - before.length} results written`));
  const after = readAll(db);
  assert.equal(after.length, TOTAL);
  assert.deepEqual([...byKey(after).keys()].sort(), fullRows.map((r) => r.key).sort());
  const now = byKey(after);
  for (const r of before) assert.deepEqual(now.get(r.key), r);
  const reference = byKey(fullRows);
  for (const r of after) assertSameMetrics(r, reference.get(r.key)!);
});

Deno.test("sweep: two shards partition the results and merge into the unsharded sweep", async () => {
  // Shard 0 as task 1 of a SLURM array --array=1-2, shard 1 as a Kubernetes Indexed Job's pod 1.
  const shards = [`${dir}/s0.db`, `${dir}/s1.db`];
  const arrays: Record<string, string>[] = [
    { SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "2", SLURM_ARRAY_TASK_MIN: "1" },
    { JOB_COMPLETION_INDEX: "1", LOCUS_SHARD_COUNT: "2" },
  ];
  for (const [k, path] of shards.entries()) {
    const out = await sweepIn(arrays[k], ...SWEEP_ARGS, "--out", path);
    assert.match(out, new RegExp(`shard ${k}/2 from ${k ? "Kubernetes" : "SLURM"}`));
  }
  const [a, b] = shards.map(readAll);
  assert.ok(a.length > 0 && b.length > 0, `shard sizes ${a.length} and ${b.length}`);
  const keysA = new Set(a.map((r) => r.key));
  assert.ok(!b.some((r) => keysA.has(r.key)), "the shards overlap");
  assert.equal(a.length + b.length, TOTAL);

  const merged = `${dir}/merged.db`;
  const out = await sweep("merge", merged, ...shards);
  assert.match(out, new RegExp(`${TOTAL} results added, 0 already there, 0 conflicts`));
  const rows = readAll(merged);
  assert.deepEqual(rows.map((r) => r.key).sort(), fullRows.map((r) => r.key).sort());
  const reference = byKey(fullRows);
  for (const r of rows) assertSameMetrics(r, reference.get(r.key)!);
  // The CSV export of the merged store has a line per result.
  await sweep("csv", merged, `${dir}/merged.csv`);
  assert.equal((await Deno.readTextFile(`${dir}/merged.csv`)).trimEnd().split("\r\n").length, TOTAL + 1);
});

Deno.test("sweep: bad options are clear errors", async () => {
  const out = await sweepCommand("--model", kb.dir, "--out", `${dir}/bad.db`, "--methods", "rome,romeo")
    .output();
  assert.equal(out.code, 1);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /sweep: --methods: unknown "romeo"; known: rome, r-rome, memit/,
  );
  const shard = await sweepCommand("--model", kb.dir, "--out", `${dir}/bad.db`, "--shard", "2/2").output();
  assert.match(new TextDecoder().decode(shard.stderr), /--shard "2\/2": k must be in 0\.\.1/);
});

// ------------------------------------------------------------------------------------------------
// Faults and bad input

Deno.test("sweep: a ROME block killed before it was stored is retried in halves, so frequent kills still progress", async () => {
  // The full store without its ROME edits: the next run starts with a ROME block of 2 facts.
  const db = `${dir}/halves.db`;
  await Deno.copyFile(full, db);
  const edit = new DatabaseSync(db);
  edit.exec("DELETE FROM results WHERE method = 'rome'");
  edit.close();
  const pending = TOTAL - countRows(db);
  assert.ok(pending >= 4, `${pending} ROME results`);

  // Kill the moment the block is started (its attempt is counted), long before its edits are stored.
  const child = sweepCommand(...SWEEP_ARGS, "--out", db).spawn();
  const drain = Promise.all([
    child.stdout.pipeTo(new WritableStream()),
    child.stderr.pipeTo(new WritableStream()),
  ]);
  let block: string | undefined;
  while (block === undefined) {
    block = attemptedBlock(db);
    if (block === undefined) await delay(2);
  }
  child.kill("SIGKILL");
  await child.status;
  await drain;
  assert.equal(TOTAL - countRows(db), pending, "the kill came after the block stored results");

  // Resumed, the block runs as two halves; nothing is lost or duplicated.
  await sweep(...SWEEP_ARGS, "--out", db);
  const rows = byKey(readAll(db));
  assert.deepEqual([...rows.keys()].sort(), fullRows.map((r) => r.key).sort());
  // The killed block: the edits computed together with its first one in the uninterrupted run (a block's
  // facts at every layer: 2 facts x 2 layers).
  const [, key, size] = /^edit block (.*) x(\d+)$/.exec(block)!;
  const first = JSON.parse(key);
  assert.equal(Number(size), 4);
  const killed = fullRows.filter((r) =>
    r.method === first[2] && r.problem === first[4] && r.timings.batch === 4 &&
    rows.get(r.key)!.timings.batch !== 4
  );
  assert.equal(killed.length, 4);
  assert.ok(killed.some((r) => r.key === JSON.stringify(first)));
  for (const r of killed) {
    assert.equal(rows.get(r.key)!.timings.batch, 2, `${r.key} was not computed in a half`);
  }
  // Blocks that were never killed still run whole.
  assert.ok([...rows.values()].some((r) => r.method === "rome" && r.timings.batch === 4));
  const reference = byKey(fullRows);
  for (const r of rows.values()) assertSameMetrics(r, reference.get(r.key)!);
});

/** The key of an edit block whose start the store has counted, if any yet. */
function attemptedBlock(path: string): string | undefined {
  try {
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      return (db.prepare("SELECT key FROM attempts LIMIT 1").get() as { key: string } | undefined)?.key;
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  }
}

Deno.test("sweep: --max-minutes stops before new work; csv of a missing store and a damaged store are errors", async () => {
  const timed = `${dir}/timed.db`;
  const out = await sweep(...SWEEP_ARGS, "--out", timed, "--max-minutes", "0.0001");
  assert.match(out, /0 results written/);
  assert.match(out, /--max-minutes 0\.0001 ran out: run the same command again to continue/);
  assert.equal(countRows(timed), 0);

  const missing = await sweepCommand("csv", `${dir}/nowhere.db`, `${dir}/nowhere.csv`).output();
  assert.equal(missing.code, 1);
  assert.match(new TextDecoder().decode(missing.stderr), /^sweep: .*nowhere\.db: no results store there\n$/);
  assert.ok(!existsSync(`${dir}/nowhere.db`) && !existsSync(`${dir}/nowhere.csv`), "files were created");

  // A damaged page (b-tree page header overwritten) and a damaged file header.
  const bytes = await Deno.readFile(full);
  const pageSize = new DataView(bytes.buffer).getUint16(16);
  for (const [name, at] of [["page", pageSize], ["header", 0]] as const) {
    const damaged = bytes.slice();
    damaged.fill(0xa5, at, at + 16);
    const path = `${dir}/damaged-${name}.db`;
    await Deno.writeFile(path, damaged);
    const run = await sweepCommand("csv", path, `${dir}/damaged.csv`).output();
    assert.equal(run.code, 1, name);
    assert.match(
      new TextDecoder().decode(run.stderr),
      new RegExp(`damaged-${name}\\.db: (the results database is damaged|not a readable results database)`),
    );
  }
});

Deno.test("sweep: resuming under other settings is refused with the differences, unless --force", async () => {
  const db = `${dir}/settings.db`;
  await Deno.copyFile(full, db);
  const args = SWEEP_ARGS.map((a, i) => (SWEEP_ARGS[i - 1] === "--trace-samples" ? "4" : a));
  const refused = await sweepCommand(...args, "--out", db).output();
  assert.equal(refused.code, 1);
  assert.match(
    new TextDecoder().decode(refused.stderr),
    /settings\.db: sweep "sweep" was run with other settings \(settings\.traceSamples: stored 3, now 4\); .*--force/,
  );
  assert.equal(countRows(db), TOTAL, "the refused run changed the store");
  const forced = await sweep(...args, "--out", db, "--force");
  assert.match(forced, /--force: this store now holds results computed under other settings/);
  // Both settings are now on record: either resumes without --force.
  await sweep(...SWEEP_ARGS, "--out", db);
  await sweep(...args, "--out", db);
});

Deno.test("sweep: records too long for the model are skipped and reported; an unknown target names its record", async () => {
  const cases = JSON.parse(await Deno.readTextFile(`${kb.dir}/counterfact.json`));
  const long = structuredClone(cases[kb.known[0]]);
  long.case_id = 9000;
  long.paraphrase_prompts = [Array(50).fill(long.requested_rewrite.subject).join(" ")];
  await Deno.writeTextFile(`${dir}/long.json`, JSON.stringify([...cases, long]));
  const quick = ["--facts", "1", "--layers", "0", "--problems", "error-injection", "--localizations", "none"];
  const args = [...SWEEP_ARGS, ...quick, "--selectors", "none", "--name", "long"];
  const out = await sweep(...args, "--dataset", `${dir}/long.json`, "--out", `${dir}/long.db`);
  assert.match(
    out,
    new RegExp(
      `skipped 1 records whose prompts do not fit the model:\\n  .*long\\.json: record ${cases.length} \\(counterfact:9000\\): needs \\d+ positions, the model has 40`,
    ),
  );
  assert.ok(countRows(`${dir}/long.db`) > 0);
  // The skipped record is stored, so the CSV and the report list it (and a resumed run keeps one).
  await sweep(...args, "--dataset", `${dir}/long.json`, "--out", `${dir}/long.db`);
  const rows = readAll(`${dir}/long.db`).filter((r) => r.localization === "skipped");
  assert.equal(rows.length, 1);
  assert.equal(rows[0].fact, "counterfact:9000");
  assert.match(String(rows[0].metrics.reason), /^needs \d+ positions, the model has 40$/);
  assert.match(
    String(rows[0].metrics.record),
    new RegExp(`long\\.json: record ${cases.length} \\(counterfact:9000\\)`),
  );
  await sweep("csv", `${dir}/long.db`, `${dir}/long.csv`);
  const csv = await Deno.readTextFile(`${dir}/long.csv`);
  assert.match(csv, /counterfact:9000,none,,none,skipped,/);
  const data = loadSweep(readAll(`${dir}/long.db`), "long");
  assert.deepEqual(data.skipped.map((r) => r.fact), ["counterfact:9000"]);
  assert.ok(data.edits.length > 0, "the other records were edited");
  assert.match(renderReport(data), /skipped records<\/dt><dd>1: .*counterfact:9000\): needs \d+ positions/);

  const unknown = structuredClone(cases[0]);
  unknown.requested_rewrite.target_new.str = "Zanzibar";
  await Deno.writeTextFile(`${dir}/unknown.json`, JSON.stringify([unknown, ...cases.slice(1)]));
  const run = await sweepCommand(...args, "--dataset", `${dir}/unknown.json`, "--out", `${dir}/unknown.db`)
    .output();
  assert.equal(run.code, 1);
  assert.match(
    new TextDecoder().decode(run.stderr),
    /unknown\.json: record 0 \(counterfact:\d+\): target "Zanzibar" has the word "Zanzibar" outside the tokenizer's vocabulary/,
  );
});
