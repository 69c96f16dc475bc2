// experiments/study/analysis.ts on synthetic sweeps with known answers: R^2 values recomputed by hand
// (group means for the layer model, per-layer simple regressions for the interacted model, the
// squared correlation for the trace model), the F statistic from those sums of squares, the
// concentrated-effects filter, golden vs sample-wise layers with a hand-computed paired t,
// proxy vs test golden layers, and the layer each selection strategy chose.
import assert from "node:assert/strict";
import {
  caveats,
  concentratedFacts,
  driftDescription,
  findings,
  formatP,
  goldenVsSampleWise,
  headline,
  layerChoice,
  layerCurves,
  loadSweep,
  noopCells,
  pctCI,
  perLayerCorrelations,
  proxyVsTest,
  r2Table,
  selectionScores,
  type SweepData,
  windowStudy,
  withoutNoopCells,
} from "../experiments/study/analysis.ts";
import { fSurvival, holm } from "../experiments/study/stats.ts";
import type { Json, StoredResult } from "../experiments/study/store.ts";
import { rng } from "./util.ts";

const MODEL = { name: "synthetic", weightsSha256: "abc" };

function record(
  key: Pick<StoredResult, "fact" | "method" | "layer" | "problem" | "localization">,
  metrics: { [k: string]: Json },
  extra: Partial<StoredResult> = {},
): StoredResult {
  const full = { sweep: "s", ...key };
  return {
    key: JSON.stringify(full),
    ...full,
    metrics,
    hparams: {},
    model: MODEL,
    dataset: { split: "test" },
    adapter: {},
    timings: {},
    createdAt: "2026-01-01T00:00:00Z",
    ...extra,
  };
}

function edit(
  fact: string,
  layer: number,
  rewrite: number,
  o: { problem?: string; method?: string; split?: string; paraphrase?: number; neighborhood?: number } = {},
): StoredResult {
  const paraphrase = o.paraphrase ?? rewrite / 2, neighborhood = o.neighborhood ?? 1 - rewrite / 4;
  return record(
    {
      fact,
      method: o.method ?? "rome",
      layer,
      problem: o.problem ?? "error-injection",
      localization: "layer-grid",
    },
    { rewrite, paraphrase, neighborhood, overall: 3 / (1 / rewrite + 1 / paraphrase + 1 / neighborhood) },
    { dataset: { split: o.split ?? "test" } },
  );
}

function trace(
  fact: string,
  effect: (number | null)[],
  localization = "causal-tracing",
  window?: number,
): StoredResult {
  return record(
    { fact, method: "none", layer: null, problem: "none", localization },
    { effect, lastSubjectEffect: effect.map((e) => (e === null ? null : e / 2)), trace: { grids: [] } },
    window === undefined ? {} : { hparams: { window } },
  );
}

function selection(selector: string, layer: number, scores: number[]): StoredResult {
  return record(
    { fact: "proxy-set", method: "none", layer: null, problem: "none", localization: `select:${selector}` },
    { layers: [layer], scores, proxy: ["f0"] },
    { timings: { select: 0.5 } },
  );
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const avg = (xs: number[]) => sum(xs) / xs.length;
const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tolerance ${tol})`);

/** Sums of squares by hand: total, within layers (layer-only model), and of per-layer lines (interacted model). */
function handSums(rows: { layer: number; effect: number; y: number }[]) {
  const tss = sum(rows.map((r) => (r.y - avg(rows.map((q) => q.y))) ** 2));
  let within = 0, lines = 0;
  for (const l of new Set(rows.map((r) => r.layer))) {
    const g = rows.filter((r) => r.layer === l);
    const my = avg(g.map((r) => r.y)), mx = avg(g.map((r) => r.effect));
    within += sum(g.map((r) => (r.y - my) ** 2));
    const sxy = sum(g.map((r) => (r.effect - mx) * (r.y - my))),
      sxx = sum(g.map((r) => (r.effect - mx) ** 2));
    lines += sum(g.map((r) => (r.y - my - (sxy / sxx) * (r.effect - mx)) ** 2));
  }
  const all = rows.map((r) => r.effect), ys = rows.map((r) => r.y);
  const mx = avg(all), my = avg(ys);
  const r = sum(all.map((x, i) => (x - mx) * (ys[i] - my))) /
    Math.sqrt(sum(all.map((x) => (x - mx) ** 2)) * sum(ys.map((y) => (y - my) ** 2)));
  return { tss, within, lines, r2Trace: r * r };
}

/** 40 facts x 4 layers; y = layer mean + small noise (the layer explains almost everything). */
function layerDrivenSweep(): {
  results: StoredResult[];
  rows: { layer: number; effect: number; y: number }[];
} {
  const random = rng(7);
  const layerMeans = [0.2, 0.9, 0.6, 0.1];
  const results: StoredResult[] = [], rows: { layer: number; effect: number; y: number }[] = [];
  for (let f = 0; f < 40; f++) {
    const effect = layerMeans.map(() => random());
    results.push(trace(`f${f}`, effect));
    for (let l = 0; l < 4; l++) {
      const y = layerMeans[l] + 0.02 * (random() - 0.5);
      rows.push({ layer: l, effect: effect[l], y });
      results.push(edit(`f${f}`, l, y, { split: f < 4 ? "proxy" : "test" }));
    }
  }
  return { results, rows };
}

Deno.test("r2Table: the layer explains all the variance; R^2, Diff and F match hand-computed sums of squares", () => {
  const { results, rows } = layerDrivenSweep();
  const data = loadSweep(results);
  const [row] = r2Table(data);
  const h = handSums(rows);
  assert.equal(row.n, 160);
  assert.equal(row.facts, 40);
  close(row.layer, 1 - h.within / h.tss, 1e-9, "layer R^2");
  close(row.both, 1 - h.lines / h.tss, 1e-9, "both R^2");
  close(row.trace, h.r2Trace, 1e-9, "trace R^2");
  assert.ok(row.layer > 0.99, `layer R^2 ${row.layer}`);
  assert.ok(row.trace < 0.05, `trace R^2 ${row.trace}`);
  close(row.diff, row.both - row.layer, 1e-12, "diff");
  // Layer model: 4 coefficients; interacted model: 8. F = ((RSS_l - RSS_b) / 4) / (RSS_b / (160 - 8)).
  const F = ((h.within - h.lines) / 4) / (h.lines / 152);
  close(row.F, F, 1e-6 * F, "F");
  close(row.p, fSurvival(F, 4, 152), 1e-9, "p");
  // Adjusted R^2 = 1 - (1 - R^2)(n - 1)/(n - p) with p = 4 and 8 coefficients.
  close(row.adjusted.layer, 1 - (1 - row.layer) * 159 / 156, 1e-12, "adjusted layer R^2");
  close(row.adjusted.both, 1 - (1 - row.both) * 159 / 152, 1e-12, "adjusted both R^2");
  // The bootstrap's closed-form R^2 (stats.ts groupedLineR2) reproduces the OLS fits at full weight,
  // and each interval holds its estimate.
  for (const k of ["layer", "trace", "both", "diff", "f2"] as const) {
    close(row.ci[k].estimate, row[k], 1e-9, `bootstrap estimate of ${k}`);
    assert.ok(row.ci[k].lower <= row[k] + 1e-12 && row[k] - 1e-12 <= row.ci[k].upper, `${k} interval`);
  }
  close(row.f2, row.diff / (1 - row.both), 1e-12, "f^2");
  assert.equal(row.verdict, "no effect");
  assert.match(
    headline(row),
    /the edit layer explains (99\.\d|100\.0)% \[.*\] of the variance in rewrite score/,
  );
  assert.match(headline(row), /no effect by the study's rule/);
});

Deno.test("r2Table: a score that follows the tracing effect; the F-test finds the added tracing term", () => {
  const random = rng(3);
  const results: StoredResult[] = [], rows: { layer: number; effect: number; y: number }[] = [];
  for (let f = 0; f < 30; f++) {
    const effect = [random(), random(), random()];
    results.push(trace(`f${f}`, effect));
    effect.forEach((e, l) => {
      const y = 0.1 + 0.8 * e + 0.01 * (random() - 0.5);
      rows.push({ layer: l, effect: e, y });
      results.push(edit(`f${f}`, l, y));
    });
  }
  const [row] = r2Table(loadSweep(results));
  const h = handSums(rows);
  close(row.trace, h.r2Trace, 1e-9, "trace R^2");
  assert.ok(row.trace > 0.99 && row.layer < 0.1, `trace ${row.trace}, layer ${row.layer}`);
  assert.ok(row.diff > 0.9, `diff ${row.diff}`);
  assert.ok(row.p < 1e-10, `p ${row.p}`);
  assert.equal(formatP(row.p), "<1e-4");
  assert.equal(row.verdict, "effect");
  assert.ok(row.ci.diff.lower > 0.8, `diff interval ${row.ci.diff.lower}`);
  assert.match(headline(row), /the tracing effect (99\.\d|100\.0)% .*: an effect by the study's rule/);
});

Deno.test("r2Table: a layer whose effect never varies gets no slope (the last layer's tracing effect is 0)", () => {
  const random = rng(5);
  const results: StoredResult[] = [], rows: { layer: number; effect: number; y: number }[] = [];
  for (let f = 0; f < 20; f++) {
    const effect = [random(), random(), 1e-13 * random()];
    results.push(trace(`f${f}`, effect));
    effect.forEach((e, l) => {
      const y = [0.3, 0.6, 0.1][l] + 0.2 * e + 0.05 * random();
      rows.push({ layer: l, effect: e, y });
      results.push(edit(`f${f}`, l, y));
    });
  }
  const [row] = r2Table(loadSweep(results));
  // By hand: lines within layers 0 and 1, only a mean within layer 2.
  const h = handSums(rows.filter((r) => r.layer < 2));
  const last = rows.filter((r) => r.layer === 2), lastMean = avg(last.map((r) => r.y));
  const tss = handSums(rows).tss;
  close(row.both, 1 - (h.lines + sum(last.map((r) => (r.y - lastMean) ** 2))) / tss, 1e-9, "both R^2");
  assert.match(row.note, /constant effect at layer 2: no slope there/);
  assert.ok(Number.isFinite(row.p) && row.p < 0.05, `the slopes at layers 0 and 1 are real (p ${row.p})`);
});

Deno.test("r2Table: missing effects are dropped and counted; one layer only leaves the layer model undefined", () => {
  const results = [
    trace("a", [0.1, null]),
    trace("b", [0.5, 0.2]),
    trace("c", [0.9, 0.4]),
    trace("d", [0.3, 0.8]),
    ...["a", "b", "c", "d"].map((f, i) => edit(f, 0, 0.1 * (i + 1) + 0.05 * (i % 2))),
    edit("a", 1, 0.5, { method: "memit" }),
  ];
  const [rome, memit] = r2Table(loadSweep(results));
  assert.equal(rome.n, 4);
  assert.ok(Number.isNaN(rome.layer), "one layer: no layer model");
  assert.match(rome.note, /single level/);
  assert.ok(Number.isFinite(rome.trace));
  assert.equal(memit.n, 0);
  assert.equal(memit.dropped, 1);
});

Deno.test("concentratedFacts: at most maxOthers layers besides the peak reach half of it", () => {
  const data = loadSweep([
    trace("peaked", [0.05, 0.1, 1.0, 0.3, 0.49, 0.0]),
    trace("two-strong", [0.6, 0.1, 1.0, 0.3, 0.2, 0.0]), // one other layer >= 0.5 of the peak
    trace("diffuse", [0.6, 0.7, 1.0, 0.8, 0.2, 0.0]),
    trace("no-effect", [0, -0.1, 0, 0, 0, 0]),
    trace("zeroed", [1, 1, 1, 1, 1, 1], "zeroing"),
    edit("peaked", 0, 0.5),
  ]);
  assert.deepEqual([...concentratedFacts(data, { maxOthers: 0 })], ["peaked"]);
  assert.deepEqual([...concentratedFacts(data, { maxOthers: 1 })].sort(), ["peaked", "two-strong"]);
  // The default scales Hase et al.'s 3 of 28 layers to the depth: 1 for 6 layers.
  assert.deepEqual([...concentratedFacts(data)].sort(), ["peaked", "two-strong"]);
  assert.deepEqual([...concentratedFacts(data, { localization: "zeroing", maxOthers: 5 })], ["zeroed"]);
  // r2Table restricted to a subset uses only those facts' edits.
  const [row] = r2Table(data, { facts: new Set(["peaked"]) });
  assert.equal(row.n, 1);
});

Deno.test("perLayerCorrelations: r = +1, -1 and undefined (constant score) at three layers", () => {
  const results: StoredResult[] = [];
  for (let f = 0; f < 6; f++) {
    const e = [0.1 * f, 0.2 * f, 0.05 * f];
    results.push(
      trace(`f${f}`, e),
      edit(`f${f}`, 0, 0.2 + e[0]),
      edit(`f${f}`, 1, 1 - e[1]),
      edit(`f${f}`, 2, 0.5),
    );
  }
  const rows = perLayerCorrelations(loadSweep(results));
  assert.deepEqual(rows.map((r) => r.layer), [0, 1, 2]);
  close(rows[0].r, 1, 1e-12, "layer 0");
  close(rows[1].r, -1, 1e-12, "layer 1");
  assert.ok(Number.isNaN(rows[2].r));
  assert.match(rows[2].note, /constant/);
  // The last-subject-token effect is half the max effect here: the same correlations.
  close(perLayerCorrelations(loadSweep(results), { site: "last-subject" })[0].r, 1, 1e-12, "last subject");
});

/** Scores [fact][layer] with a golden layer 1 (best on average) that is not best for every fact. */
const GRID = [
  [0.1, 0.8, 0.7],
  [0.2, 0.9, 0.95],
  [0.0, 0.7, 0.6],
  [0.3, 0.6, 0.9],
  [0.1, 0.9, 0.5],
];

function gridSweep(splits: string[] = GRID.map(() => "test")): StoredResult[] {
  return GRID.flatMap((row, f) => row.map((y, l) => edit(`f${f}`, l, y, { split: splits[f] })));
}

Deno.test("goldenVsSampleWise: golden layer, means and the paired t-test, recomputed by hand", () => {
  const [row] = goldenVsSampleWise(loadSweep(gridSweep()));
  assert.equal(row.goldenLayer, 1);
  const golden = GRID.map((r) => r[1]), optimal = GRID.map((r) => Math.max(...r));
  close(row.golden.mean, avg(golden), 1e-12, "golden mean");
  close(row.optimal.mean, avg(optimal), 1e-12, "optimal mean");
  const d = optimal.map((x, i) => x - golden[i]);
  const sd = Math.sqrt(sum(d.map((x) => (x - avg(d)) ** 2)) / (d.length - 1));
  close(row.t, avg(d) / (sd / Math.sqrt(d.length)), 1e-9, "t");
  assert.equal(row.n, 5);
  // One condition is its own family; d_z and the t interval from the same differences.
  assert.equal(row.pAdjusted, row.p);
  close(row.dz, avg(d) / sd, 1e-12, "d_z");
  assert.ok(row.lower < row.meanDifference && row.meanDifference < row.upper);
  assert.equal(row.verdict, row.p < 0.05 && Math.abs(row.dz) >= 0.2 ? "effect" : "no effect");

  // When the golden layer is every fact's best, there is no difference at all.
  const same = GRID.map((r) => [r[0], 1, r[2] - 0.05]);
  const [equal] = goldenVsSampleWise(loadSweep(same.flatMap((r, f) => r.map((y, l) => edit(`f${f}`, l, y)))));
  assert.equal(equal.p, 1);
  assert.equal(equal.verdict, "no effect");
});

Deno.test("proxyVsTest: golden layers of the proxy and test facts, both scored on the test facts", () => {
  // Facts 0 and 4 (the proxy) prefer layer 1 on average; the test facts 1-3 prefer layer 2.
  const [row] = proxyVsTest(loadSweep(gridSweep(["proxy", "test", "test", "test", "proxy"])));
  assert.equal(row.proxyFacts, 2);
  assert.equal(row.testFacts, 3);
  assert.equal(row.proxyLayer, 1);
  assert.equal(row.testLayer, 2);
  close(row.proxyLayerTestScore, avg([0.9, 0.7, 0.6]), 1e-12, "proxy layer on test");
  close(row.testLayerTestScore, avg([0.95, 0.6, 0.9]), 1e-12, "test layer on test");
});

Deno.test("selectionScores: chosen layers read from the grid; a layer outside it is noted", () => {
  const splits = ["proxy", "test", "test", "test", "test"];
  const results = [
    ...gridSweep(splits),
    selection("causal-tracing", 0, [0.5, 0.1, 0.2]),
    selection("lga", 2, [0.1, 0.2, 0.9]),
    selection("integrated-gradients", 7, []),
    // Tracing peaks: fact 1 at layer 2, facts 2-4 at layer 0.
    ...GRID.map((_, f) => trace(`f${f}`, f === 1 ? [0.1, 0.2, 0.9] : [0.9, 0.1, 0.2])),
  ];
  const rows = selectionScores(loadSweep(results));
  const get = (s: string) => rows.find((r) => r.strategy === s)!;
  const test = GRID.slice(1);
  close(get("causal-tracing").means.rewrite, avg(test.map((r) => r[0])), 1e-12, "CT");
  close(get("lga").means.rewrite, avg(test.map((r) => r[2])), 1e-12, "LGA");
  assert.equal(get("lga").n, 4);
  assert.ok(Number.isNaN(get("integrated-gradients").means.rewrite));
  assert.match(get("integrated-gradients").note, /layer 7 is not in the sweep's layer grid/);
  assert.equal(get("brute-force").layer, 1); // the proxy fact's best layer
  close(get("tracing-peak").means.rewrite, avg([0.95, 0.0, 0.3, 0.1]), 1e-12, "per-fact peaks");
  close(
    get("lga").means.average,
    avg(test.map((r) => (r[2] + r[2] / 2 + 1 - r[2] / 4) / 3)),
    1e-12,
    "average",
  );
});

Deno.test("layerCurves: mean and standard error per layer", () => {
  const [curve] = layerCurves(loadSweep(gridSweep()), "rewrite");
  assert.deepEqual(curve.layers, [0, 1, 2]);
  close(curve.mean[1], avg(GRID.map((r) => r[1])), 1e-12, "mean");
  const col = GRID.map((r) => r[0]);
  const sd = Math.sqrt(sum(col.map((x) => (x - avg(col)) ** 2)) / 4);
  close(curve.sem[0], sd / Math.sqrt(5), 1e-12, "sem");
});

Deno.test("loadSweep: several sweeps need a name; mixed models and foreign records are errors", () => {
  const a = edit("f0", 0, 0.5);
  const b = { ...edit("f1", 0, 0.5), sweep: "other" };
  assert.throws(() => loadSweep([a, b]), /several sweeps \(s, other\); name one/);
  assert.equal(loadSweep([a, b], "other").edits.length, 1);
  assert.throws(() => loadSweep([a], "missing"), /no results of sweep "missing"/);
  const retrained = { ...edit("f2", 1, 0.5), model: { weightsSha256: "def" } };
  assert.throws(() => loadSweep([a, retrained]), /mixes models: .*f2.* has weights def/);
  const odd = record({ fact: "x", method: "rome", layer: null, problem: "p", localization: "fixed" }, {});
  assert.throws(() => loadSweep([odd]), /not an edit, trace or layer-selection record/);
  const badTrace = trace("f0", [0.1]);
  badTrace.metrics.effect = "high";
  assert.throws(() => loadSweep([badTrace]), /metrics\.effect: expected an array of numbers/);
  const data: SweepData = loadSweep([a, trace("f0", [0.3])]);
  assert.equal(data.traces[0].lastSubjectEffect[0], 0.15);
});

Deno.test("layerChoice: an argmax, or no choice on a tie or a structural zero", () => {
  assert.deepEqual(layerChoice([0.1, 0.5, 0.2]), { layer: 1, reason: "" });
  assert.deepEqual(layerChoice([0.1, 0.5, 0.2], [4, 8, 12]), { layer: 8, reason: "" });
  // The causal-tracing choice of an untrained-looking model: every effect is negative or float noise.
  assert.equal(layerChoice([-0.019, -0.004, -6.9e-18]).layer, null);
  assert.match(layerChoice([-0.019, -0.004, -6.9e-18]).reason, /structural zero/);
  assert.match(layerChoice([0.3, 0.3, 0.1]).reason, /tie between layers 0, 1/);
  assert.match(layerChoice([NaN, NaN]).reason, /no finite score/);
});

Deno.test("selectionScores: a selection made on zeros is no choice, with no scores", () => {
  const results = [
    ...gridSweep(["proxy", "test", "test", "test", "test"]),
    selection("causal-tracing", 2, [-0.019, -0.003, -6.9e-18]),
    // LGA's scores are signed: a negative best is still a choice (only ties are not).
    selection("lga", 1, [-0.3, -0.1, -0.2]),
    ...GRID.map((_, f) => trace(`f${f}`, f === 1 ? [0, 0, 0] : [0.9, 0.1, 0.2])),
  ];
  const rows = selectionScores(loadSweep(results));
  const ct = rows.find((r) => r.strategy === "causal-tracing")!;
  assert.equal(ct.layer, null);
  assert.match(ct.noChoice, /structural zero/);
  assert.equal(ct.n, 0);
  const lga = rows.find((r) => r.strategy === "lga")!;
  assert.deepEqual([lga.layer, lga.noChoice, lga.n], [1, "", 4]);
  const peak = rows.find((r) => r.strategy === "tracing-peak")!;
  assert.match(peak.note, /1 of 4 facts have no peak/);
  assert.equal(peak.n, 3);
  close(peak.means.rewrite, avg(GRID.slice(2).map((r) => r[0])), 1e-12, "peaks of the other facts");
  const ci = peak.ci.rewrite;
  assert.ok(ci.lower <= peak.means.rewrite && peak.means.rewrite <= ci.upper);
});

Deno.test("r2Table and perLayerCorrelations: Holm's correction over each table's family", () => {
  const random = rng(11);
  const results: StoredResult[] = [];
  for (let f = 0; f < 12; f++) {
    const effect = [random(), random()];
    results.push(trace(`f${f}`, effect));
    for (const [method, slope] of [["rome", 0.8], ["memit", 0.05]] as const) {
      effect.forEach((e, l) =>
        results.push(edit(`f${f}`, l, 0.3 * l + slope * e + 0.1 * random(), { method }))
      );
    }
  }
  const data = loadSweep(results);
  const rows = r2Table(data);
  assert.deepEqual(rows.map((r) => r.pAdjusted), holm(rows.map((r) => r.p)));
  const corr = perLayerCorrelations(data);
  assert.equal(corr.length, 4);
  assert.deepEqual(corr.map((r) => r.pAdjusted), holm(corr.map((r) => r.p)));
  for (const c of corr) {
    assert.ok(c.ci.lower <= c.r && c.r <= c.ci.upper, `r interval ${c.ci.lower}..${c.ci.upper}`);
  }
  assert.equal(corr.find((c) => c.method === "rome" && c.layer === 0)!.verdict, "effect");
  // The same seed gives the same intervals.
  assert.deepEqual(r2Table(data).map((r) => r.ci), rows.map((r) => r.ci));
});

Deno.test("caveats: one per kind over every condition; no-op layers at the model's last layer explained", () => {
  // 6 facts x 2 problems x 2 methods x layers 0-2 of a 3-layer model; neighborhood at the ceiling
  // everywhere; every edit at layer 2 leaves p(target) where it was (MEMIT's window there is [1, 2]),
  // and one more no-op elsewhere.
  const records = (nLayer: number) => {
    const results: StoredResult[] = [];
    for (let f = 0; f < 6; f++) {
      results.push(trace(`f${f}`, [0.3, 0.1 * f, 0.2]));
      for (const problem of ["error-injection", "fact-forcing"]) {
        for (const method of ["rome", "memit"]) {
          for (let l = 0; l < 3; l++) {
            const noop = l === 2 || (f === 0 && l === 0 && method === "memit" && problem === "fact-forcing");
            const r = edit(`f${f}`, l, noop ? 0 : 0.3 + 0.1 * f + 0.05 * l, {
              problem,
              method,
              neighborhood: 1,
            });
            r.metrics.pre = { rewrite: 0.1 };
            r.metrics.post = { rewrite: noop ? 0.1 : 0.6 };
            r.hparams = { editedLayers: method === "memit" ? [Math.max(0, l - 1), l] : [l] };
            results.push(r);
          }
        }
      }
    }
    return loadSweep(results.map((r) => ({ ...r, model: { ...MODEL, nLayer } })));
  };
  const sweep = (nLayer: number) => caveats(records(nLayer));
  const lines = sweep(3);
  assert.equal(lines.filter((c) => c.startsWith("Ceiling effect")).length, 1, lines.join("\n"));
  assert.ok(
    lines.includes(
      "Ceiling effect: neighborhood scores within 0.01 of 1 in all 4 conditions (problem × method; 100% of " +
        "each condition's scores); they cannot separate layers or facts.",
    ),
    lines.join("\n"),
  );
  const noops = lines.filter((c) => c.startsWith("No-op edits"));
  assert.equal(noops.length, 1);
  assert.match(
    noops[0],
    /^No-op edits: 25 of 72 edits left p\(target\) unchanged \(\|Δp\| ≤ 1e-7\); every edit of rome at layer 2 and memit at layer 2 was one \(each of these edits reaches the model's last layer, 2, .*\); 1 more: fact-forcing memit \(1\)\. They stay in the statistics/,
  );
  // In a deeper model those layers are not the last: the dead cells are named, no reason is given.
  const deeper = sweep(4).find((c) => c.startsWith("No-op edits"))!;
  assert.match(deeper, /every edit of rome at layer 2 and memit at layer 2 was one; 1 more/);
  assert.doesNotMatch(deeper, /last layer/);
  // The dead cells, and the regressions without them: the same rows less those cells' edits.
  const data = records(3);
  assert.deepEqual(noopCells(data).map((c) => [c.method, c.layer, c.edits.length]), [["rome", 2, 12], [
    "memit",
    2,
    12,
  ]]);
  const live = withoutNoopCells(data);
  assert.equal(live.edits.length, 48);
  assert.ok(live.edits.every((e) => e.layer !== 2));
  assert.equal(withoutNoopCells(data), live, "once per sweep");
  assert.deepEqual(r2Table(live).map((r) => r.n), [12, 12, 12, 12]);
  assert.match(
    findings(data).join("\n"),
    /Without the cells where every edit was a no-op \(rome at layer 2 and memit at layer 2\): the edit layer explains more than the tracing effect \(intervals apart\) in \d of 4 conditions, the tracing effect more in \d; median R² of the layer [\d.]+% \([\d.]+% with them\)/,
  );
  // Without dead cells the sweep is its own robustness check: no such finding.
  const healthy = loadSweep(layerDrivenSweep().results);
  assert.equal(withoutNoopCells(healthy), healthy);
  assert.doesNotMatch(findings(healthy).join("\n"), /Without the cells/);
  // The headline says it for its own condition, with the sweep; a healthy sweep's headline is unchanged.
  const main = r2Table(data)[0], alive = r2Table(live)[0];
  assert.equal(
    headline(main, data),
    `${headline(main)} Without its layer 2, where every edit was a no-op: the layer ${
      pctCI(alive.layer, alive.ci.layer)
    }, the tracing effect ${pctCI(alive.trace, alive.ci.trace)}.`,
  );
  assert.equal(headline(r2Table(healthy)[0], healthy), headline(r2Table(healthy)[0]));
});

Deno.test("caveats: degenerate regressor, one layer dominating, ceiling, no-op edits, outliers, small sample", () => {
  const results: StoredResult[] = [];
  for (let f = 0; f < 10; f++) {
    results.push(trace(`f${f}`, [0.004, -0.001, 0.001 * (f % 3)]));
    for (let l = 0; l < 3; l++) {
      const r = edit(`f${f}`, l, f === 0 && l === 0 ? -3.37 : 0.999 + 0.0001 * l);
      // Fact 1 is a no-op edit at every layer: p(target) did not move.
      r.metrics.pre = { rewrite: 0.96 };
      r.metrics.post = { rewrite: f === 1 ? 0.96 : 0.999 };
      results.push(r);
    }
  }
  const data = loadSweep(results);
  assert.equal(data.edits.filter((e) => e.noop).length, 3);
  const text = caveats(data).join("\n");
  assert.match(text, /Degenerate regressor: the causal-tracing effect is at most 0.004/);
  assert.match(
    text,
    /Degenerate regressor: the causal-tracing effect at the last subject token is at most 0.002/,
  );
  assert.match(text, /One layer dominates: \d+ of 10 facts peak at layer 0/);
  assert.match(
    text,
    /Ceiling effect: rewrite scores within 0.01 of 1 in 1 of 1 condition: error-injection rome \(29 of 30\)/,
  );
  assert.match(
    text,
    /No-op edits: 3 of 30 edits left p\(target\) unchanged \(\|Δp\| ≤ 1e-7\); error-injection rome \(3\)\./,
  );
  assert.match(
    text,
    /Outliers: 1 rewrite score lies beyond 3 IQR of their condition's quartiles, in 1 of 1 condition: error-injection rome \(1: -3.37\)/,
  );
  assert.match(text, /Small sample: as few as 10 test facts per condition/);
  assert.equal(r2Table(data)[0].noops, 3);
  // A healthy sweep has none of these.
  const healthy = caveats(loadSweep(layerDrivenSweep().results)).join("\n");
  assert.doesNotMatch(healthy, /Degenerate|dominates|Ceiling|Floor|No-op|Outliers/);
  assert.match(findings(loadSweep(layerDrivenSweep().results)).join("\n"), /in 1 of 1 conditions/);
  // Edits at one layer: the layer and interacted models cannot be fitted, and findings says so plainly.
  const oneLayer = loadSweep(layerDrivenSweep().results.filter((r) => r.layer === null || r.layer === 0));
  const text1 = findings(oneLayer).join("\n");
  assert.match(text1, /No condition has enough data|in 0 of \d+ conditions/);
  assert.doesNotMatch(text1, /median gain/);
  // A score that neither the layer nor the effect predicts: findings says neither explains much.
  const noise = rng(13);
  const weak = loadSweep(
    layerDrivenSweep().results.map((r) =>
      r.localization === "layer-grid" ? { ...r, metrics: { ...r.metrics, rewrite: noise() } } : r
    ),
  );
  assert.match(findings(weak).join("\n"), /Neither predictor explains much: median R² of the layer \d/);
  assert.doesNotMatch(findings(loadSweep(layerDrivenSweep().results)).join("\n"), /Neither predictor/);
});

Deno.test("findings: essence and fluency per method, their lowest and highest layer with intervals; not measured without them", () => {
  const { results } = layerDrivenSweep();
  const none = findings(loadSweep(results)).join("\n");
  assert.match(none, /\nEssence \(Hase et al\.: [^)]*\): not measured\.\n/);
  assert.match(none, /\nFluency \(ROME's n-gram entropy [^)]*\): not measured\.\n/);
  // Essence and fluency on the test facts of layers 0 and 2 only: essence 0.3 at layer 0 and 0.9 at layer 2
  // for every fact; fluency 4.1 and 3.2 after the edit, and per fact 4.5 or 4.7 (half the facts each) before.
  const withDrift = results.map((r) => {
    if (r.localization !== "layer-grid" || r.layer === 1 || r.layer === 3) return r;
    const pre = Number(r.fact.slice(1)) % 2 === 0 ? 4.5 : 4.7;
    return {
      ...r,
      metrics: {
        ...r.metrics,
        essence: { score: r.layer === 0 ? 0.3 : 0.9 },
        fluency: { post: r.layer === 0 ? 4.1 : 3.2, pre },
      },
    };
  });
  const text = findings(loadSweep(withDrift), { resamples: 200 }).join("\n");
  assert.match(
    text,
    /Essence \(Hase et al\.: .*\), error-injection, lowest to highest mean over layers: rome 0\.30 \[0\.30, 0\.30\] at layer 0 to 0\.90 \[0\.90, 0\.90\] at layer 2\./,
  );
  // The unedited model's mean over the 40 facts (4.6), each counted once although edited at two layers,
  // with an interval around it that the two values bound.
  const fluency =
    /Fluency \(ROME's n-gram entropy of generations after the edit; lower = more repetitive\), error-injection, lowest to highest mean over layers: rome 3\.20 \[3\.20, 3\.20\] at layer 2 to 4\.10 \[4\.10, 4\.10\] at layer 0; the unedited model 4\.60 \[(4\.\d\d), (4\.\d\d)\] \(40 facts\)\./
      .exec(text);
  assert.ok(fluency, text);
  const [lower, upper] = [Number(fluency[1]), Number(fluency[2])];
  assert.ok(4.5 <= lower && lower < 4.6 && 4.6 < upper && upper <= 4.7, `interval [${lower}, ${upper}]`);
});

Deno.test("driftDescription: what was measured, or why essence and fluency were not", () => {
  const none = { edits: 12, essence: 0, fluency: 0, facts: 0 };
  const settings = {
    essenceSamples: 5,
    essenceTokens: 20,
    fluencyPrompts: 5,
    fluencyTokens: 20,
    topK: 5,
    every: 4,
  };
  assert.match(
    driftDescription({ ...none, settings: null }),
    /not measured \(the store's edit records predate them\)/,
  );
  assert.match(
    driftDescription({ ...none, settings: { ...settings, every: 0 } }),
    /not measured \(switched off/,
  );
  assert.match(
    driftDescription({ ...none, settings: { ...settings, essenceSamples: 0, fluencyPrompts: 0 } }),
    /switched off/,
  );
  assert.match(
    driftDescription({ ...none, settings }),
    /not measured \(no edit of a measured fact is stored yet\)/,
  );
  assert.equal(
    driftDescription({ edits: 12, essence: 6, fluency: 3, facts: 1, settings }),
    "Essence measured on 6 and fluency on 3 of 12 edits (1 fact: 1 in 4 of the seeded sample, at every layer, " +
      'method and problem); essence: 5 samples of 20 new tokens after "{subject} is a", fluency: 20 new tokens ' +
      "after each of up to 5 generation prompts; top-5 sampling seeded per fact.",
  );
});

Deno.test("windowStudy: the regressions per tracing window on the facts traced with every window, one Holm family", () => {
  // 30 facts x 3 layers, two methods. Windows: 1 (the main causal-tracing records), 2 and 3 (window-study
  // records). The rewrite score follows the window-3 effect; the window-1 and window-2 effects are noise.
  // Fact f29 lacks its window-2 trace: left out of every window's regressions, kept in no mean.
  const random = rng(5);
  const results: StoredResult[] = [];
  const effects = new Map<number, number[][]>([[1, []], [2, []], [3, []]]);
  for (let f = 0; f < 30; f++) {
    for (const w of [1, 2, 3]) {
      const effect = [0, 1, 2].map(() => random() * w / 3);
      effects.get(w)!.push(effect);
      if (w === 2 && f === 29) continue;
      results.push(trace(`f${f}`, effect, w === 1 ? "causal-tracing" : `tracing-window:${w}`, w));
    }
    for (const method of ["rome", "memit"]) {
      for (let l = 0; l < 3; l++) {
        const y = 0.3 * l + 2 * effects.get(3)![f][l] + 0.05 * random();
        results.push(edit(`f${f}`, l, y, { method }));
      }
    }
  }
  // A zeroing record and one without a window are not windows of the study.
  results.push(trace("f0", [0.1, 0.2, 0.3], "zeroing", 1), trace("f1", [0.1, 0.2, 0.3], "tracing-window:9"));
  const data = loadSweep(results);
  const study = windowStudy(data, { resamples: 200 });
  assert.deepEqual(study.windows.map((w) => [w.window, w.localization, w.facts]), [
    [1, "causal-tracing", 30],
    [2, "tracing-window:2", 29],
    [3, "tracing-window:3", 30],
  ]);
  assert.equal(study.facts, 29);
  // Figure 10's mean peak: by hand, over the 29 facts traced with every window.
  for (const w of study.windows) {
    const peaks = effects.get(w.window)!.slice(0, 29).map((e) => Math.max(...e));
    close(w.peak.estimate, avg(peaks), 1e-12, `window ${w.window} mean peak`);
    assert.ok(w.peak.lower <= w.peak.estimate && w.peak.estimate <= w.peak.upper);
    // Figure 11: where each of those facts peaks.
    const counts = [0, 0, 0];
    for (const e of effects.get(w.window)!.slice(0, 29)) counts[e.indexOf(Math.max(...e))]++;
    assert.deepEqual([w.peakLayers, w.noPeak], [counts, 0], `window ${w.window} peak layers`);
  }
  // Each window's rows are r2Table's with that window's records on the same 29 facts ...
  assert.deepEqual(study.rows.map((r) => [r.window, r.method]), [
    [1, "rome"],
    [1, "memit"],
    [2, "rome"],
    [2, "memit"],
    [3, "rome"],
    [3, "memit"],
  ]);
  const facts = new Set(Array.from({ length: 29 }, (_, f) => `f${f}`));
  for (const w of study.windows) {
    const own = r2Table(data, { localization: w.localization, facts, resamples: 200 });
    const mine = study.rows.filter((r) => r.window === w.window);
    for (const [i, r] of mine.entries()) {
      assert.equal(r.n, 29 * 3);
      for (const k of ["layer", "trace", "both", "diff", "f2", "p"] as const) {
        assert.equal(r[k], own[i][k], `window ${w.window} ${r.method} ${k}`);
      }
      assert.deepEqual(r.ci, own[i].ci);
    }
  }
  // ... Holm-corrected over all six rows (one family, not per window).
  assert.deepEqual(study.rows.map((r) => r.pAdjusted), holm(study.rows.map((r) => r.p)));
  assert.notDeepEqual(
    study.rows.filter((r) => r.window === 3).map((r) => r.pAdjusted),
    holm(study.rows.filter((r) => r.window === 3).map((r) => r.p)),
  );
  // The informative window explains the score; the noise windows do not.
  for (const r of study.rows) {
    if (r.window === 3) {
      assert.ok(r.trace > 0.5 && r.verdict === "effect", `window 3 ${r.method}: ${r.trace} ${r.verdict}`);
    } else assert.ok(r.trace < 0.2, `window ${r.window} ${r.method}: trace R² ${r.trace}`);
  }
});
