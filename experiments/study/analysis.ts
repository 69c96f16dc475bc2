// The papers' analyses of a stored sweep (experiments/study/sweep.ts). Plain float64 TypeScript on the
// result records; the statistics come from experiments/study/stats.ts.
//
// Hase et al. 2023, "Does Localization Inform Editing?" (sections 4-5 and appendix):
//   r2Table                 per (editing problem, method): R^2 of three OLS regressions of an edit
//                           score on (1) the edit layer as a categorical variable, (2) the tracing
//                           effect at the edited layer, (3) both, interacted (a level and a slope of
//                           the effect per layer); Diff = R^2(both) - R^2(layer) and the nested F-test of
//                           both against layer-only (tables 1, 3-6).
//   concentratedFacts       facts whose tracing effects sit in few layers (appendix B): at most
//                           `maxOthers` layers besides the peak reach `share` of the peak (table 2
//                           is r2Table on these facts).
//   perLayerCorrelations    Pearson's r of score vs tracing effect at each edit layer (figures 4, 15).
//   layerCurves             mean score per layer (figure 7).
// Chun & Hur, "Integrated Gradients vs. Causal Tracing" and "Golden Layers and Where to Find Them" (section 4):
//   goldenVsSampleWise      the golden layer (best mean score) vs each fact's own best layer, with a
//                           paired t-test over facts (Golden Layers table 1).
//   proxyVsTest             golden layers found on the proxy facts vs on the test facts, both scored
//                           on the test facts (Golden Layers tables 3-8).
//   selectionScores         the layer each strategy chose (causal tracing, integrated gradients, LGA,
//                           brute force on the proxy set, each fact's own tracing peak) and the mean
//                           test-fact scores of editing there (Chun & Hur table 1, Golden Layers table 2).
//
// The tracing effect of an edit is the fact's localization record at the edited layer: Hase et al.'s
// fractional causal-tracing effect (max over tokens) by default, or at the last subject token, or
// the zeroing effect. Rows lacking a score or an effect are left out, and every count says so.
import { fitOls, nestedFTest, type OlsFit, pairedTTest, pearson } from "./stats.ts";
import type { Json, StoredResult } from "./store.ts";
import { LAYER_GRID, NONE, PROXY_SET, SKIPPED } from "./sweep.ts";
import type { FactTrace } from "../localization/tracing.ts";

/** Edit scores: Hase et al.'s three, their harmonic mean ("overall") and their raw mean ("average",
 *  the overall score of Hase et al.'s table 6). */
export const METRICS = ["rewrite", "paraphrase", "neighborhood", "overall", "average"] as const;
export type Metric = typeof METRICS[number];

export interface EditRow {
  fact: string;
  split: string;
  method: string;
  problem: string;
  layer: number;
  /** The layers the edit changed (MEMIT and FT-L may span a window around `layer`). */
  editedLayers: number[];
  /** NaN where the record has no value (e.g. a case without paraphrases). */
  scores: Record<Metric, number>;
}

export interface TraceRow {
  fact: string;
  /** "causal-tracing" or "zeroing". */
  localization: string;
  /** The regressor per layer (NaN where undefined). */
  effect: number[];
  lastSubjectEffect: number[];
  trace: FactTrace;
}

export interface SelectionRow {
  /** "causal-tracing", "integrated-gradients", "lga". */
  selector: string;
  layers: number[];
  scores: number[];
  proxy: string[];
  seconds: number;
}

export interface SweepData {
  sweep: string;
  /** The model record shared by every result. */
  model: { [key: string]: Json };
  dataset: { [key: string]: Json };
  adapter: { [key: string]: Json };
  edits: EditRow[];
  traces: TraceRow[];
  selections: SelectionRow[];
  /** Dataset records the sweep left out (their prompts do not fit the model), with the reason. */
  skipped: { fact: string; record: string; reason: string }[];
  /** Distinct values, sorted (problems and methods in first-seen order). */
  layers: number[];
  methods: string[];
  problems: string[];
}

// ------------------------------------------------------------------------------------------------
// Reading records

const num = (v: Json | undefined): number => (typeof v === "number" ? v : NaN);

function numbers(v: Json | undefined, where: string): number[] {
  if (!Array.isArray(v)) throw new Error(`${where}: expected an array of numbers`);
  return v.map((x, i) => {
    if (x !== null && typeof x !== "number") throw new Error(`${where}[${i}]: expected a number or null`);
    return x === null ? NaN : x;
  });
}

/** Nulls (non-finite numbers when stored) back to NaN, in nested arrays of numbers. */
function nullToNaN(v: Json): Json | number {
  if (v === null) return NaN;
  if (Array.isArray(v)) return v.map(nullToNaN) as Json;
  return v;
}

/** A stored trace (sweep.ts traceMetrics) as a FactTrace, undefined fractions as NaN again. */
function restoreTrace(raw: Json | undefined, where: string): FactTrace {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !Array.isArray(raw.grids)) {
    throw new Error(`${where}: metrics.trace is not a stored trace`);
  }
  const grids = raw.grids.map((g) => {
    const grid = g as { [k: string]: Json };
    const layers = grid.layers as { [k: string]: Json };
    const summary = Object.fromEntries(Object.entries(layers).map(([k, v]) => [k, nullToNaN(v)]));
    const out: { [k: string]: unknown } = {
      ...grid,
      prob: nullToNaN(grid.prob),
      effect: nullToNaN(grid.effect),
      fraction: nullToNaN(grid.fraction),
      layers: summary,
    };
    if (grid.subjectZeroed) {
      const z = grid.subjectZeroed as { [k: string]: Json };
      out.subjectZeroed = { prob: nullToNaN(z.prob), fraction: nullToNaN(z.fraction) };
    }
    return out;
  });
  return { ...raw, grids } as unknown as FactTrace;
}

/** The sweep names in a set of results. */
export function sweepNames(results: Iterable<StoredResult>): string[] {
  return [...new Set([...results].map((r) => r.sweep))];
}

/**
 * The records of one sweep (the only one present when `sweep` is not given), checked to come from
 * one model: mixing models (a resumed sweep on retrained weights) is an error naming both records.
 */
export function loadSweep(results: Iterable<StoredResult>, sweep?: string): SweepData {
  const all = [...results];
  const names = sweepNames(all);
  if (sweep === undefined) {
    if (names.length !== 1) {
      throw new Error(
        names.length === 0 ? "no results" : `the results hold several sweeps (${names.join(", ")}); name one`,
      );
    }
    sweep = names[0];
  }
  const mine = all.filter((r) => r.sweep === sweep);
  if (mine.length === 0) throw new Error(`no results of sweep "${sweep}" (present: ${names.join(", ")})`);
  const first = mine[0];
  for (const r of mine) {
    if (r.model.weightsSha256 !== first.model.weightsSha256) {
      throw new Error(
        `sweep "${sweep}" mixes models: ${r.key} has weights ${r.model.weightsSha256}, ${first.key} has ${first.model.weightsSha256}`,
      );
    }
  }
  const data: SweepData = {
    sweep,
    model: first.model,
    dataset: first.dataset,
    adapter: first.adapter,
    edits: [],
    traces: [],
    selections: [],
    skipped: [],
    layers: [],
    methods: [],
    problems: [],
  };
  for (const r of mine) {
    const m = r.metrics;
    if (r.localization === LAYER_GRID) {
      if (r.layer === null) throw new Error(`${r.key}: an edit record without a layer`);
      const s = { rewrite: num(m.rewrite), paraphrase: num(m.paraphrase), neighborhood: num(m.neighborhood) };
      data.edits.push({
        fact: r.fact,
        split: String(r.dataset.split ?? "test"),
        method: r.method,
        problem: r.problem,
        layer: r.layer,
        editedLayers: r.hparams.editedLayers === undefined
          ? [r.layer]
          : numbers(r.hparams.editedLayers, `${r.key}: hparams.editedLayers`),
        scores: { ...s, overall: num(m.overall), average: (s.rewrite + s.paraphrase + s.neighborhood) / 3 },
      });
    } else if (r.localization.startsWith("select:")) {
      data.selections.push({
        selector: r.localization.slice("select:".length),
        layers: numbers(m.layers, `${r.key}: metrics.layers`),
        scores: numbers(m.scores, `${r.key}: metrics.scores`),
        proxy: Array.isArray(m.proxy) ? m.proxy.map(String) : [],
        seconds: num(r.timings.select),
      });
    } else if (r.localization === SKIPPED) {
      data.skipped.push({ fact: r.fact, record: String(m.record ?? r.fact), reason: String(m.reason ?? "") });
    } else if (r.method === NONE && r.fact !== PROXY_SET) {
      data.traces.push({
        fact: r.fact,
        localization: r.localization,
        effect: numbers(m.effect, `${r.key}: metrics.effect`),
        lastSubjectEffect: numbers(m.lastSubjectEffect, `${r.key}: metrics.lastSubjectEffect`),
        trace: restoreTrace(m.trace, r.key),
      });
    } else {
      throw new Error(`${r.key}: not an edit, trace or layer-selection record of a sweep`);
    }
  }
  data.layers = [...new Set(data.edits.map((e) => e.layer))].sort((a, b) => a - b);
  data.methods = [...new Set(data.edits.map((e) => e.method))];
  data.problems = [...new Set(data.edits.map((e) => e.problem))];
  return data;
}

// ------------------------------------------------------------------------------------------------
// Helpers

export type EffectSite = "max" | "last-subject";

export interface EffectOptions {
  /** "causal-tracing" (default) or "zeroing". */
  localization?: string;
  /** Max over tokens (Hase et al.'s default) or the last subject token (their figure 16). */
  site?: EffectSite;
}

/** fact -> per-layer effect, for one localization method. */
function effectIndex(data: SweepData, o: EffectOptions): Map<string, number[]> {
  const localization = o.localization ?? "causal-tracing";
  const index = new Map<string, number[]>();
  for (const t of data.traces) {
    if (t.localization === localization) {
      index.set(t.fact, o.site === "last-subject" ? t.lastSubjectEffect : t.effect);
    }
  }
  return index;
}

const meanOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function stdOf(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = meanOf(xs);
  return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1));
}

/** Edit rows grouped by (problem, method), in the data's order. */
function byProblemMethod(
  data: SweepData,
  rows = data.edits,
): { problem: string; method: string; rows: EditRow[] }[] {
  const out: { problem: string; method: string; rows: EditRow[] }[] = [];
  for (const problem of data.problems) {
    for (const method of data.methods) {
      const mine = rows.filter((e) => e.problem === problem && e.method === method);
      if (mine.length) out.push({ problem, method, rows: mine });
    }
  }
  return out;
}

/** The fit, or the reason it cannot be made (a single layer, a constant effect, too few rows). */
function tryFit(fit: () => OlsFit): OlsFit | string {
  try {
    return fit();
  } catch (e) {
    return (e as Error).message;
  }
}

// ------------------------------------------------------------------------------------------------
// R^2 of layer vs tracing effect (Hase et al. tables 1-6)

export interface R2Row {
  problem: string;
  method: string;
  metric: Metric;
  /** Edit results in the regressions, and the distinct facts among them. */
  n: number;
  facts: number;
  /** Rows left out for a missing score or effect. */
  dropped: number;
  layer: number;
  trace: number;
  both: number;
  /** both - layer. */
  diff: number;
  F: number;
  /** F-test of both against layer-only. */
  p: number;
  /** Why a number is NaN, if one is. */
  note: string;
}

/** Below this range, the effects within a layer count as constant (float noise, e.g. at the last layer). */
export const CONSTANT_EFFECT_RANGE = 1e-6;

/**
 * The three regressions of `metric` per (problem, method); `facts` restricts the facts used.
 *
 * The interacted model is written as one slope per layer, y = a_layer + b_layer * effect (the same fit
 * as layer + effect + layer:effect). A layer whose effects do not vary (e.g. the last layer, where
 * restoring an MLP output cannot reach the prediction) has no identifiable slope; it is left out and
 * named in the note, and the F-test has one degree of freedom less.
 */
export function r2Table(
  data: SweepData,
  o: EffectOptions & { metric?: Metric; facts?: ReadonlySet<string> } = {},
): R2Row[] {
  const metric = o.metric ?? "rewrite";
  const effects = effectIndex(data, o);
  const rows = o.facts ? data.edits.filter((e) => o.facts!.has(e.fact)) : data.edits;
  return byProblemMethod(data, rows).map(({ problem, method, rows }) => {
    const usable = rows.filter((e) =>
      Number.isFinite(e.scores[metric]) && Number.isFinite(effects.get(e.fact)?.[e.layer])
    );
    const effect = usable.map((e) => effects.get(e.fact)![e.layer]);
    const table: Record<string, number[]> = {
      y: usable.map((e) => e.scores[metric]),
      layer: usable.map((e) => e.layer),
      effect,
    };
    const slopes: string[] = [], flat: number[] = [];
    for (const l of [...new Set(table.layer)].sort((a, b) => a - b)) {
      const mine = effect.filter((_, i) => usable[i].layer === l);
      if (Math.max(...mine) - Math.min(...mine) <= CONSTANT_EFFECT_RANGE) {
        flat.push(l);
        continue;
      }
      table[`effect@layer=${l}`] = effect.map((x, i) => (usable[i].layer === l ? x : 0));
      slopes.push(`effect@layer=${l}`);
    }
    const layerFit = tryFit(() => fitOls(table, "y", { categorical: ["layer"] }));
    const traceFit = tryFit(() => fitOls(table, "y", { continuous: ["effect"] }));
    const bothFit = slopes.length === 0
      ? "the effect does not vary within any layer"
      : tryFit(() => fitOls(table, "y", { categorical: ["layer"], continuous: slopes }));
    const r2 = (f: OlsFit | string) => (typeof f === "string" ? NaN : f.r2);
    const notes = [layerFit, traceFit, bothFit].filter((f): f is string => typeof f === "string");
    if (flat.length && slopes.length) {
      notes.push(`constant effect at layer ${flat.join(", ")}: no slope there`);
    }
    if (table.y.length > 0 && table.y.every((y) => y === table.y[0])) {
      notes.push(`every ${metric} score is ${table.y[0]}: no variance to explain`);
    }
    let F = NaN, p = NaN;
    if (typeof layerFit !== "string" && typeof bothFit !== "string") {
      const test = nestedFTest(layerFit, bothFit);
      [F, p] = [test.F, test.p];
    }
    return {
      problem,
      method,
      metric,
      n: usable.length,
      facts: new Set(usable.map((e) => e.fact)).size,
      dropped: rows.length - usable.length,
      layer: r2(layerFit),
      trace: r2(traceFit),
      both: r2(bothFit),
      diff: r2(bothFit) - r2(layerFit),
      F,
      p,
      note: [...new Set(notes)].join("; "),
    };
  });
}

/**
 * Facts whose effect is concentrated: the peak is positive and at most `maxOthers` other layers reach
 * `share` of it (Hase et al.: at most 3 of GPT-J's 28 layers at >= 50%; default scaled to the depth).
 */
export function concentratedFacts(
  data: SweepData,
  o: EffectOptions & { share?: number; maxOthers?: number; nLayer?: number } = {},
): Set<string> {
  const share = o.share ?? 0.5;
  const out = new Set<string>();
  for (const [fact, effect] of effectIndex(data, o)) {
    const L = o.nLayer ?? effect.length;
    const maxOthers = o.maxOthers ?? Math.max(1, Math.round((3 * L) / 28));
    const finite = effect.filter(Number.isFinite);
    if (finite.length === 0) continue;
    const peak = Math.max(...finite);
    if (!(peak > 0)) continue;
    const strong = finite.filter((e) => e >= share * peak).length - 1; // the peak itself is not counted
    if (strong <= maxOthers) out.add(fact);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Per-layer views

export interface CorrelationRow {
  problem: string;
  method: string;
  layer: number;
  n: number;
  r: number;
  p: number;
  note: string;
}

/** Pearson's r between the score and the tracing effect, per edit layer. */
export function perLayerCorrelations(
  data: SweepData,
  o: EffectOptions & { metric?: Metric } = {},
): CorrelationRow[] {
  const metric = o.metric ?? "rewrite";
  const effects = effectIndex(data, o);
  const out: CorrelationRow[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    for (const layer of data.layers) {
      const usable = rows.filter((e) =>
        e.layer === layer && Number.isFinite(e.scores[metric]) &&
        Number.isFinite(effects.get(e.fact)?.[layer])
      );
      const row = { problem, method, layer, n: usable.length, r: NaN, p: NaN, note: "" };
      try {
        const c = pearson(
          usable.map((e) => effects.get(e.fact)![layer]),
          usable.map((e) => e.scores[metric]),
        );
        [row.r, row.p] = [c.r, c.p];
      } catch (e) {
        row.note = (e as Error).message;
      }
      out.push(row);
    }
  }
  return out;
}

export interface LayerCurve {
  problem: string;
  method: string;
  metric: Metric;
  layers: number[];
  mean: number[];
  /** Standard error of the mean (NaN with one value). */
  sem: number[];
  n: number[];
}

/** Mean score per edit layer, per (problem, method). */
export function layerCurves(data: SweepData, metric: Metric): LayerCurve[] {
  return byProblemMethod(data).map(({ problem, method, rows }) => {
    const per = data.layers.map((l) =>
      rows.filter((e) => e.layer === l && Number.isFinite(e.scores[metric]))
    );
    return {
      problem,
      method,
      metric,
      layers: data.layers,
      mean: per.map((rs) => (rs.length ? meanOf(rs.map((e) => e.scores[metric])) : NaN)),
      sem: per.map((rs) => stdOf(rs.map((e) => e.scores[metric])) / Math.sqrt(rs.length)),
      n: per.map((rs) => rs.length),
    };
  });
}

/** Per fact, its score at each grid layer (facts lacking a layer are left out). */
function scoreMatrix(rows: EditRow[], layers: number[], metric: Metric): Map<string, number[]> {
  const byFact = new Map<string, Map<number, number>>();
  for (const e of rows) {
    if (!byFact.has(e.fact)) byFact.set(e.fact, new Map());
    byFact.get(e.fact)!.set(e.layer, e.scores[metric]);
  }
  const out = new Map<string, number[]>();
  for (const [fact, m] of byFact) {
    const scores = layers.map((l) => m.get(l) ?? NaN);
    if (scores.every(Number.isFinite)) out.set(fact, scores);
  }
  return out;
}

/** Index (into `layers`) of the best mean score over the given facts; the first of ties (Golden Layers paper). */
function goldenIndex(matrix: Map<string, number[]>, facts: string[], nLayers: number): number {
  const means = Array.from({ length: nLayers }, (_, i) => meanOf(facts.map((f) => matrix.get(f)![i])));
  return means.indexOf(Math.max(...means));
}

// ------------------------------------------------------------------------------------------------
// Golden layers (Golden Layers paper)

export interface GoldenRow {
  problem: string;
  method: string;
  metric: Metric;
  /** Facts with a score at every layer of the grid. */
  n: number;
  goldenLayer: number;
  golden: { mean: number; std: number };
  /** Each fact at its own best layer. */
  optimal: { mean: number; std: number };
  /** mean(optimal - golden) and the paired t-test of it. */
  meanDifference: number;
  t: number;
  p: number;
  /** p < 0.05. */
  different: boolean;
}

/** Paired t-test that also covers identical or constant differences (no variance to test). */
function pairedTest(a: number[], b: number[]): { t: number; p: number } {
  const diffs = a.map((x, i) => x - b[i]);
  if (diffs.every((d) => d === diffs[0])) {
    return diffs[0] === 0 ? { t: 0, p: 1 } : { t: Math.sign(diffs[0]) * Infinity, p: 0 };
  }
  const r = pairedTTest(a, b);
  return { t: r.t, p: r.p };
}

/** The golden layer against the sample-wise optimal layer (Golden Layers table 1), over all edited facts. */
export function goldenVsSampleWise(data: SweepData, metric: Metric = "rewrite"): GoldenRow[] {
  const out: GoldenRow[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    const matrix = scoreMatrix(rows, data.layers, metric);
    const facts = [...matrix.keys()];
    if (facts.length < 2) continue;
    const g = goldenIndex(matrix, facts, data.layers.length);
    const golden = facts.map((f) => matrix.get(f)![g]);
    const optimal = facts.map((f) => Math.max(...matrix.get(f)!));
    const { t, p } = pairedTest(optimal, golden);
    out.push({
      problem,
      method,
      metric,
      n: facts.length,
      goldenLayer: data.layers[g],
      golden: { mean: meanOf(golden), std: stdOf(golden) },
      optimal: { mean: meanOf(optimal), std: stdOf(optimal) },
      meanDifference: meanOf(optimal) - meanOf(golden),
      t,
      p,
      different: p < 0.05,
    });
  }
  return out;
}

export interface ProxyTestRow {
  problem: string;
  method: string;
  metric: Metric;
  proxyFacts: number;
  testFacts: number;
  /** The golden layer of the proxy facts, and the test facts' mean score there. */
  proxyLayer: number;
  proxyLayerTestScore: number;
  /** The golden layer of the test facts, and their mean score there. */
  testLayer: number;
  testLayerTestScore: number;
}

/** Golden layers found on the proxy facts vs on the test facts, both scored on the test facts. */
export function proxyVsTest(data: SweepData, metric: Metric = "rewrite"): ProxyTestRow[] {
  const out: ProxyTestRow[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    const matrix = scoreMatrix(rows, data.layers, metric);
    const split = new Map(rows.map((e) => [e.fact, e.split]));
    const proxy = [...matrix.keys()].filter((f) => split.get(f) === "proxy");
    const test = [...matrix.keys()].filter((f) => split.get(f) === "test");
    if (proxy.length === 0 || test.length === 0) continue;
    const p = goldenIndex(matrix, proxy, data.layers.length),
      t = goldenIndex(matrix, test, data.layers.length);
    const testMean = (i: number) => meanOf(test.map((f) => matrix.get(f)![i]));
    out.push({
      problem,
      method,
      metric,
      proxyFacts: proxy.length,
      testFacts: test.length,
      proxyLayer: data.layers[p],
      proxyLayerTestScore: testMean(p),
      testLayer: data.layers[t],
      testLayerTestScore: testMean(t),
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Layer-selection strategies (Chun & Hur table 1, Golden Layers table 2)

/** Strategy names used in selectionScores, with the stored selectors' own names. */
export const STRATEGY_NAMES: Readonly<Record<string, string>> = {
  "causal-tracing": "causal tracing (CMA)",
  "integrated-gradients": "integrated gradients",
  "lga": "LGA",
  "brute-force": "brute force on the proxy set",
  "tracing-peak": "each fact's tracing peak",
};

export interface SelectionScore {
  strategy: string;
  problem: string;
  method: string;
  /** The chosen layer; null for the per-fact strategy (each fact has its own). */
  layer: number | null;
  /** Test facts scored. */
  n: number;
  means: Record<Metric, number>;
  note: string;
}

/**
 * Mean test-fact scores when editing at the layer each strategy chose: the stored selections
 * (chosen on the proxy facts), brute force on the proxy facts (golden layer by rewrite score) and
 * each fact's own causal-tracing peak. Scores are read from the layer grid, so a layer outside the
 * grid has no scores (noted).
 */
export function selectionScores(data: SweepData, o: EffectOptions = {}): SelectionScore[] {
  const effects = effectIndex(data, o);
  const out: SelectionScore[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    const test = rows.filter((e) => e.split === "test");
    const at = (
      layerOf: (fact: string) => number | undefined,
    ): { n: number; means: Record<Metric, number> } => {
      const chosen = test.filter((e) => e.layer === layerOf(e.fact));
      const means = Object.fromEntries(METRICS.map((m) => {
        const xs = chosen.map((e) => e.scores[m]).filter(Number.isFinite);
        return [m, xs.length ? meanOf(xs) : NaN];
      })) as Record<Metric, number>;
      return { n: new Set(chosen.map((e) => e.fact)).size, means };
    };
    const fixed = (strategy: string, layer: number) => {
      const note = data.layers.includes(layer) ? "" : `layer ${layer} is not in the sweep's layer grid`;
      out.push({ strategy, problem, method, layer, ...at(() => layer), note });
    };
    for (const s of data.selections) fixed(s.selector, s.layers[0]);
    const proxyMatrix = scoreMatrix(rows.filter((e) => e.split === "proxy"), data.layers, "rewrite");
    if (proxyMatrix.size > 0) {
      fixed(
        "brute-force",
        data.layers[goldenIndex(proxyMatrix, [...proxyMatrix.keys()], data.layers.length)],
      );
    }
    if (effects.size > 0) {
      const peak = (fact: string) => {
        const e = effects.get(fact);
        if (!e) return undefined;
        // The fact's strongest layer among the grid's layers.
        let best: number | undefined;
        for (const l of data.layers) {
          if (Number.isFinite(e[l]) && (best === undefined || e[l] > e[best])) best = l;
        }
        return best;
      };
      out.push({ strategy: "tracing-peak", problem, method, layer: null, ...at(peak), note: "" });
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// One-line verdict

/** The headline of Hase et al.: does the layer explain far more variance than the tracing effect? */
export function headline(row: R2Row): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  if (!Number.isFinite(row.layer) || !Number.isFinite(row.trace)) {
    return `${row.method} ${row.problem}: not enough data for the regressions (${row.note || "n/a"})`;
  }
  const verdict = row.layer > row.trace
    ? `the edit layer explains ${pct(row.layer)} of the variance in ${row.metric} score, the tracing effect ${
      pct(row.trace)
    }; adding tracing to the layer adds ${pct(row.diff)}`
    : `the tracing effect explains ${
      pct(row.trace)
    } of the variance in ${row.metric} score, more than the layer (${pct(row.layer)})`;
  return `${row.method} ${row.problem} (${row.n} edits of ${row.facts} facts): ${verdict} (F-test p = ${
    formatP(row.p)
  }).`;
}

/** p-values as the papers print them: "<1e-4" below 1e-4, else 3 significant digits. */
export function formatP(p: number): string {
  if (!Number.isFinite(p)) return "n/a";
  return p < 1e-4 ? "<1e-4" : String(Number(p.toPrecision(3)));
}
