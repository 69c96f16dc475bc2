// The sweep's mass-editing curve (experiments/study/sweep.ts runSweep, its "mass" items) on the embedded
// model (whose MEMIT / EMMET edits move its facts by tenths; the tiny random model's barely move them):
// MEMIT and EMMET editing the first 1 and 3 test facts at once, each fact's z optimised once for the whole
// curve and handed to every edit that needs it, store what the methods' own computeEdits (which optimise
// their z themselves) give, and charge each shared z's time once; a run stopped between mass items
// resumes with only the missing items, optimising only their facts' z.
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { applyEdit } from "../experiments/editing/edit.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import {
  computeEdits,
  methodConfig,
  statsLayers,
  templateStartWords,
} from "../experiments/editing/methods.ts";
import { caseProbabilities, caseScores, problemRequest } from "../experiments/editing/problems.ts";
import { keyStats } from "../experiments/editing/stats.ts";
import { ResultStore, type StoredResult } from "../experiments/study/store.ts";
import {
  defaultSettings,
  MASS_SET,
  massLocalization,
  runMeta,
  runSweep,
  sampleFacts,
  type SweepContext,
  type SweepPlan,
} from "../experiments/study/sweep.ts";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const gpu = await getGpu();
const model = await Model.load(gpu, DEFAULT_MODEL_DIR);
const tok = await loadTokenizer(DEFAULT_MODEL_DIR);
const datasetPath = `${DEFAULT_MODEL_DIR}/counterfact.json`, corpus = `${DEFAULT_MODEL_DIR}/corpus.txt`;
const sample = await sampleFacts(model, tok, datasetPath, { edit: 4, traceOnly: 0, proxy: 1, seed: 0 });
const test = sample.facts.filter((f) => f.split === "test");
const settings = defaultSettings(model.nLayer);
settings.overrides = { vNumGradSteps: 25 };
// Only the mass-editing curve: 3 test facts give the sizes 1 and 3.
const plan: SweepPlan = {
  name: "mass",
  facts: sample.facts,
  layers: [],
  methods: [],
  problems: [],
  localizations: [],
  selectors: [],
  settings,
  massMethods: ["memit", "emmet"],
};
const meta = await runMeta(model, DEFAULT_MODEL_DIR, datasetPath);

/** runSweep of the plan into the store at `path`; its summary and stored records. */
async function sweepInto(path: string, deadline?: number) {
  const store = ResultStore.open(path);
  try {
    const ctx: SweepContext = { model, tok, store, meta, corpus, statsDir: `${dir}/stats` };
    const summary = await runSweep(ctx, plan, { deadline });
    return { summary, rows: [...store.results({ sweep: plan.name })] };
  } finally {
    store.close();
  }
}

const rowOf = (rows: StoredResult[], method: string, n: number) =>
  rows.find((r) => r.fact === MASS_SET && r.method === method && r.localization === massLocalization(n))!;

const full = `${dir}/full.db`;
let fullRows: StoredResult[] = [];

Deno.test("mass editing: each fact's z optimised once for every size and method; records equal the methods' own edits", async () => {
  assert.equal(test.length, 3);
  const { summary, rows } = await sweepInto(full);
  fullRows = rows;
  assert.equal(rows.length, 4);
  // Facts 0-2 optimised once each; MEMIT x3 reuses fact 0, EMMET (the same z options at the defaults:
  // its layer is MEMIT's last) reuses all of its facts.
  assert.deepEqual(summary.values, { optimised: 3, reused: 5 });
  const reused: [string, number, number][] = [["memit", 1, 0], ["memit", 3, 1], ["emmet", 1, 1], [
    "emmet",
    3,
    3,
  ]];
  for (const [method, n, count] of reused) {
    const r = rowOf(rows, method, n);
    assert.equal(r.timings.valuesReused, count, r.key);
    assert.ok(Number(r.timings.edit) > 0, r.key);
  }
  // A z's time is charged to its first user only: EMMET x1 computed nothing but its solve, so it costs
  // less than MEMIT x1 (the same solve and fact 0's z).
  assert.ok(Number(rowOf(rows, "emmet", 1).timings.edit) < Number(rowOf(rows, "memit", 1).timings.edit));

  // The reference: each item through computeEdits alone (optimising its own z), applied and scored.
  const startWords = await templateStartWords(tok, corpus);
  for (const method of ["memit", "emmet"] as const) {
    const mc = methodConfig(model, method, settings.overrides);
    const stats = await keyStats(model, tok, {
      corpus,
      layers: statsLayers(mc),
      samples: statsHparams(model.config).samples,
      cacheDir: `${dir}/stats`,
    });
    for (const n of [1, 3]) {
      const facts = test.slice(0, n);
      const reqs = await Promise.all(
        facts.map((f) => problemRequest(model, tok, f.case, "error-injection", { seed: 1, scale: 0 })),
      );
      const pairs = facts.map((f, j) => ({ c: f.case, request: reqs[j] }));
      const pre = await caseProbabilities(model, tok, pairs);
      const [edit] = await computeEdits(model, tok, mc, reqs, stats, { startWords });
      const applied = await applyEdit(model, edit);
      const post = await caseProbabilities(model, tok, pairs).finally(() => applied.undo());
      const scores = reqs.map((r, j) => caseScores(r, pre[j], post[j]));
      const stored = rowOf(rows, method, n);
      assert.deepEqual(stored.metrics.facts, facts.map((f) => f.id));
      // The same z up to the float rounding of another batch (the sweep optimised every fact's z in one
      // batch of 3, computeEdits in one of n): the same scores to 1e-6 (a wrong fact's z moves them by
      // tenths).
      for (const part of ["rewrite", "paraphrase", "neighborhood", "overall"] as const) {
        const got = stored.metrics[part] as number[];
        scores.forEach((x, j) =>
          assert.ok(
            Math.abs(got[j] - x[part]) <= 1e-6,
            `${stored.key}: ${part}[${j}] ${got[j]} vs ${x[part]}`,
          )
        );
      }
    }
  }
});

Deno.test("mass editing: stopped between items, the next run computes only the missing items and their facts' z", async () => {
  // Out of time before the mass items: nothing runs, no z is optimised.
  const late = await sweepInto(`${dir}/late.db`, performance.now() - 1);
  assert.deepEqual([late.rows.length, late.summary.values], [0, { optimised: 0, reused: 0 }]);

  // A deadline cannot be timed to fall between two given items, so the stops are made by deleting the
  // records after them. Stopped after MEMIT's items: EMMET's need every fact's z again (fact 0's computed
  // for x1, reused by x3). With only the x1 items missing, facts 1 and 2 (only in stored items) are not
  // optimised.
  const cases = [
    {
      missing: "method = 'emmet'",
      values: { optimised: 3, reused: 1 },
      reused: [["emmet", 1, 0], ["emmet", 3, 1]],
    },
    {
      missing: `localization = '${massLocalization(1)}'`,
      values: { optimised: 1, reused: 1 },
      reused: [["memit", 1, 0], ["emmet", 1, 1]],
    },
  ] as const;
  // Each case twice: with the z the first run kept in the store (store.ts `kept`) forgotten, and with them
  // there, when every z the missing items need is taken from the store (reused, none optimised).
  for (const { missing, values, reused } of cases) {
    for (const forget of [true, false]) {
      const resumed = `${dir}/resumed.db`;
      await Deno.copyFile(full, resumed);
      const db = new DatabaseSync(resumed);
      db.prepare(`DELETE FROM results WHERE ${missing}`).run();
      if (forget) db.prepare("DELETE FROM kept").run();
      db.close();
      const { summary, rows } = await sweepInto(resumed);
      const what = `${missing}, kept z ${forget ? "forgotten" : "there"}`;
      assert.equal(summary.written, 2, what);
      const zs = values.optimised + values.reused;
      assert.deepEqual(summary.values, forget ? values : { optimised: 0, reused: zs }, what);
      for (const r of rows) {
        assert.deepEqual(
          r.metrics,
          fullRows.find((x) => x.key === r.key)!.metrics,
          r.key,
        );
      }
      for (const [method, n, count] of reused) {
        assert.equal(rowOf(rows, method, n).timings.valuesReused, forget ? count : n, what);
      }
    }
  }
});
