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
//   windowStudy             the same regressions with the tracing effect of each tracing window size
//                           (appendix: window sizes 1, 3, 5, 10 scaled to the model's depth, figures
//                           10-12), one family of tests over every window.
// Chun & Hur, "Integrated Gradients vs. Causal Tracing" and "Golden Layers and Where to Find Them" (section 4):
//   goldenVsSampleWise      the golden layer (best mean score) vs each fact's own best layer, with a
//                           paired t-test over facts (Golden Layers table 1).
//   proxyVsTest             golden layers found on the proxy facts vs on the test facts, both scored
//                           on the test facts (Golden Layers tables 3-8).
//   selectionScores         the layer each strategy chose (causal tracing, integrated gradients, LGA,
//                           brute force on the proxy set, each fact's own tracing peak) and the mean
//                           test-fact scores of editing there (Chun & Hur table 1, Golden Layers table 2);
//                           a choice made on a tie or a structural zero is "no choice" (layerChoice).
// Statistics: every mean and R^2 carries a seeded 95% bootstrap interval over facts; every family of
// tests (one table) is Holm-corrected; verdicts follow stats.ts verdict (corrected test and minimum
// effect size agree). caveats() lists what the data cannot support (degenerate regressor, ties, ceiling
// and floor effects, no-op edits, outliers, small samples); findings() what it does (with essence and
// fluency per method over layers), both as sentences for the report and the terminal.
//
// The tracing effect of an edit is the fact's localization record at the edited layer: Hase et al.'s
// fractional causal-tracing effect (max over tokens) by default, or at the last subject token, or
// the zeroing effect. Rows lacking a score or an effect are left out, and every count says so.
import {
  bootstrapCI,
  bootstrapUnits,
  cohensF2,
  type ConfidenceInterval,
  fitOls,
  GroupedLines,
  holm,
  median,
  MIN_EFFECT,
  nestedFTest,
  type OlsFit,
  pairedTTest,
  pearson,
  tukeyFences,
  type Verdict,
  verdict,
  weightedMean,
} from "./stats.ts";
import { createHash } from "node:crypto";
import { canonicalJson, type Json, type StoredResult } from "./store.ts";
import { LAYER_GRID, MASS_SET, NONE, PROXY_SET, SKIPPED } from "./sweep.ts";
import type { FactTrace } from "../localization/tracing.ts";
import { STANDARD_METRICS } from "../evaluation/metrics.ts";

/** Edit scores: Hase et al.'s three, their harmonic mean ("overall") and their raw mean ("average",
 *  the overall score of Hase et al.'s table 6), the essence score and the harmonic mean of all four
 *  ("overallEssence", their target_score_v2; both NaN where essence was not measured). */
export const METRICS = [
  "rewrite",
  "paraphrase",
  "neighborhood",
  "overall",
  "average",
  "essence",
  "overallEssence",
] as const;
/** One of the edit scores in METRICS. */
export type Metric = typeof METRICS[number];

/** One edit of one fact at one layer, as read from a sweep's layer-grid records. */
export interface EditRow {
  /** The fact's id, e.g. "counterfact:17". */
  fact: string;
  /** "proxy" (used to choose layers) or "test" (scored); "test" where the record names none. */
  split: string;
  /** Editing method: "ROME", "MEMIT", "FT-L", ... */
  method: string;
  /** Editing problem: "error_injection", "fact_erasure", ... */
  problem: string;
  /** The (central) edit layer. */
  layer: number;
  /** The layers the edit changed (MEMIT and FT-L may span a window around `layer`). */
  editedLayers: number[];
  /** NaN where the record has no value (e.g. a case without paraphrases). */
  scores: Record<Metric, number>;
  /** The edit left the target's probability exactly where it was (e.g. ROME stops before its first
   *  step when the loss is already below its threshold): counted and flagged by the report. */
  noop: boolean;
  /** Seconds the edit and its scoring took (the sweep's per-edit share of a batch; NaN if not stored). */
  seconds: number;
  /** The field's standard metrics (evaluation/metrics.ts STANDARD_METRICS: CounterFact ES/PS/NS/EM/PM/NM,
   *  EasyEdit's reliability ...; NaN where a case has no such prompts), or null where they do not apply. */
  standard: Record<string, number> | null;
  /** ROME's fluency (n-gram entropy) of generations after the edit, and of the unedited model with the
   *  same draws; NaN where not measured (evaluation/drift.ts). */
  fluency: { post: number; pre: number };
  /** How essence and fluency were measured (the sweep's DriftSettings with the fact's seed and whether
   *  it was measured), or null in a store from before they were recorded. */
  drift: { [key: string]: Json } | null;
}

/** One fact's localization result (causal tracing or zeroing), as read from a sweep's trace records. */
export interface TraceRow {
  /** The fact's id. */
  fact: string;
  /** "causal-tracing", "zeroing" or the window study's "tracing-window:W". */
  localization: string;
  /** Layers restored (or zeroed) around each layer in the MLP grid the effects come from, as the sweep
   *  recorded it (hparams.window); NaN where the record does not say. */
  window: number;
  /** The regressor per layer: the effect maximised over tokens (NaN where undefined); [layers]. */
  effect: number[];
  /** The effect at the last subject token per layer (Hase et al.'s figure 16); [layers]. */
  lastSubjectEffect: number[];
  /** The full trace (effects per token and layer) the per-layer effects were taken from. */
  trace: FactTrace;
}

/** One layer-selection strategy's choice on the proxy facts, as read from a sweep's selection record. */
export interface SelectionRow {
  /** "causal-tracing", "integrated-gradients", "lga". */
  selector: string;
  /** The chosen layers, ascending. */
  layers: number[];
  /** Per-layer score the choice was made from (indexed by layer); may be empty. */
  scores: number[];
  /** Ids of the proxy facts the selection ran on. */
  proxy: string[];
  /** Wall-clock seconds the selection took (NaN if not stored). */
  seconds: number;
}

/** One mass edit (MEMIT-style batch of `n` facts at once), as read from a sweep's mass record. */
export interface MassRow {
  /** Editing method. */
  method: string;
  /** Facts edited at once. */
  n: number;
  /** The layers the batch edit changed. */
  editedLayers: number[];
  /** Per fact (NaN where undefined). */
  scores: Record<"rewrite" | "paraphrase" | "neighborhood", number[]>;
  /** Wall-clock seconds of the batch edit (NaN if not stored). */
  seconds: number;
}

/** A sweep's results store, read into per-kind rows for the analyses (readSweep). */
export interface SweepData {
  /** Name of the sweep. */
  sweep: string;
  /** sha256 of the sweep's results (keys and metrics in key order): names exactly the data a report
   *  or an analysis was computed from. */
  fingerprint: string;
  /** The model record shared by every result. */
  model: { [key: string]: Json };
  /** The dataset record (name, path, checksum) of the sweep's results. */
  dataset: { [key: string]: Json };
  /** The GPU adapter the results were computed on. */
  adapter: { [key: string]: Json };
  /** Every single-fact edit at every grid layer. */
  edits: EditRow[];
  /** Every fact's localization results. */
  traces: TraceRow[];
  /** Every layer-selection strategy's choice. */
  selections: SelectionRow[];
  /** Dataset records the sweep left out (their prompts do not fit the model), with the reason. */
  skipped: { fact: string; record: string; reason: string }[];
  /** Mass edits: one batch edit of `n` facts at once, each fact's scores. */
  mass: MassRow[];
  /** Distinct edit layers of `edits`, ascending. */
  layers: number[];
  /** Distinct methods of `edits`, in first-seen order. */
  methods: string[];
  /** Distinct editing problems of `edits`, in first-seen order. */
  problems: string[];
}

// ------------------------------------------------------------------------------------------------
// Reading records

const num = (v: Json | undefined): number => (typeof v === "number" ? v : NaN);
const isObject = (v: Json | undefined): v is { [key: string]: Json } =>
  v !== null && typeof v === "object" && !Array.isArray(v);
/** `v[key]` of a stored object, undefined where `v` is not one (null: not measured; absent: an old store). */
const field = (v: Json | undefined, key: string): Json | undefined => (isObject(v) ? v[key] : undefined);

function numbers(v: Json | undefined, where: string): number[] {
  if (!Array.isArray(v)) throw new Error(`${where}: expected an array of numbers`);
  return v.map((x, i) => {
    if (x !== null && typeof x !== "number") throw new Error(`${where}[${i}]: expected a number or null`);
    return x === null ? NaN : x;
  });
}

/** An edit is a no-op when its target's post-edit probability equals the pre-edit one to within
 *  float32 rounding of the scoring pass (the virtual and applied paths agree to 1e-5 on changes). */
export const NOOP_TOLERANCE = 1e-7;

function isNoop(pre: Json | undefined, post: Json | undefined): boolean {
  const p = (v: Json | undefined) =>
    v !== null && typeof v === "object" && !Array.isArray(v) ? num(v.rewrite) : NaN;
  return Math.abs(p(pre) - p(post)) <= NOOP_TOLERANCE;
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
  const hash = createHash("sha256");
  for (const r of [...mine].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    hash.update(`${r.key}\n${canonicalJson(r.metrics)}\n`);
  }
  const data: SweepData = {
    sweep,
    fingerprint: hash.digest("hex"),
    model: first.model,
    dataset: first.dataset,
    adapter: first.adapter,
    edits: [],
    traces: [],
    selections: [],
    skipped: [],
    mass: [],
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
        scores: {
          ...s,
          overall: num(m.overall),
          average: (s.rewrite + s.paraphrase + s.neighborhood) / 3,
          essence: num(field(m.essence, "score")),
          overallEssence: num(m.overallEssence),
        },
        noop: isNoop(m.pre, m.post),
        seconds: num(r.timings.edit) + num(r.timings.score),
        standard: isObject(m.standard)
          ? Object.fromEntries(STANDARD_METRICS.map((k) => [k.key, num(field(m.standard, k.key))]))
          : null,
        fluency: { post: num(field(m.fluency, "post")), pre: num(field(m.fluency, "pre")) },
        drift: isObject(r.hparams.drift) ? r.hparams.drift : null,
      });
    } else if (r.localization.startsWith("select:")) {
      data.selections.push({
        selector: r.localization.slice("select:".length),
        layers: numbers(m.layers, `${r.key}: metrics.layers`),
        scores: numbers(m.scores, `${r.key}: metrics.scores`),
        proxy: Array.isArray(m.proxy) ? m.proxy.map(String) : [],
        seconds: num(r.timings.select),
      });
    } else if (r.fact === MASS_SET && r.localization.startsWith("mass:")) {
      data.mass.push({
        method: r.method,
        n: num(m.n),
        editedLayers: numbers(r.hparams.editedLayers, `${r.key}: hparams.editedLayers`),
        scores: {
          rewrite: numbers(m.rewrite, `${r.key}: metrics.rewrite`),
          paraphrase: numbers(m.paraphrase, `${r.key}: metrics.paraphrase`),
          neighborhood: numbers(m.neighborhood, `${r.key}: metrics.neighborhood`),
        },
        seconds: num(r.timings.edit),
      });
    } else if (r.localization === SKIPPED) {
      data.skipped.push({ fact: r.fact, record: String(m.record ?? r.fact), reason: String(m.reason ?? "") });
    } else if (r.method === NONE && r.fact !== PROXY_SET) {
      data.traces.push({
        fact: r.fact,
        localization: r.localization,
        window: num(r.hparams.window),
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

/** Which tracing effect is the regressor: the max over tokens or the one at the last subject token. */
export type EffectSite = "max" | "last-subject";

/** Which localization result, and which of its effects, the analyses regress on. */
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

/** One row of Hase et al.'s R^2 tables (1, 3-6): the three regressions of one score for one condition. */
export interface R2Row {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The edit score regressed. */
  metric: Metric;
  /** Edit results in the regressions. */
  n: number;
  /** Distinct facts among them. */
  facts: number;
  /** Rows left out for a missing score or effect. */
  dropped: number;
  /** R^2 of the score on the edit layer (categorical) alone. */
  layer: number;
  /** R^2 of the score on the tracing effect alone. */
  trace: number;
  /** R^2 of the score on layer and effect, interacted (a level and a slope per layer). */
  both: number;
  /** both - layer. */
  diff: number;
  /** Adjusted R^2 of the three models, 1 - (1 - R^2)(n - 1)/(n - p). */
  adjusted: { layer: number; trace: number; both: number };
  /** 95% bootstrap intervals over facts (a fact's edits at every layer resampled together). */
  ci: {
    layer: ConfidenceInterval;
    trace: ConfidenceInterval;
    both: ConfidenceInterval;
    diff: ConfidenceInterval;
    f2: ConfidenceInterval;
  };
  /** Cohen's f^2 of the tracing terms added to the layer: diff / (1 - both). */
  f2: number;
  /** F statistic of the nested F-test of both against layer-only. */
  F: number;
  /** p-value of that F-test. */
  p: number;
  /** p Holm-corrected over the table's rows. */
  pAdjusted: number;
  /** The study's verdict rule (stats.ts verdict) on pAdjusted and f2. */
  verdict: Verdict;
  /** No-op edits among the rows (stats still include them). */
  noops: number;
  /** Why a number is NaN, if one is. */
  note: string;
}

/** How the analyses bootstrap (seeded: the same data give the same intervals). */
export interface IntervalOptions {
  /** Number of bootstrap resamples (default 1000). */
  resamples?: number;
  /** PRNG seed of the resampling. */
  seed?: number;
}

const DEFAULT_RESAMPLES = 1000;

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
  o: EffectOptions & IntervalOptions & { metric?: Metric; facts?: ReadonlySet<string> } = {},
): R2Row[] {
  const key = [o.metric, o.localization, o.site, o.resamples, o.seed, o.facts && [...o.facts]];
  return oncePerSweep(r2Cache, data, key, () => r2Rows(data, o));
}
const r2Cache = new WeakMap<SweepData, Map<string, R2Row[]>>();

/**
 * compute() once per sweep and key (the options it depends on): the findings, the caveats and the report
 * ask for the same tables, and their bootstrap intervals are most of an analysis's time.
 */
function oncePerSweep<T>(
  cache: WeakMap<SweepData, Map<string, T>>,
  data: SweepData,
  key: unknown[],
  compute: () => T,
): T {
  const text = JSON.stringify(key);
  let byKey = cache.get(data);
  if (!byKey) cache.set(data, byKey = new Map());
  if (!byKey.has(text)) byKey.set(text, compute());
  return byKey.get(text)!;
}

function r2Rows(
  data: SweepData,
  o: EffectOptions & IntervalOptions & { metric?: Metric; facts?: ReadonlySet<string> },
): R2Row[] {
  const metric = o.metric ?? "rewrite";
  const effects = effectIndex(data, o);
  const rows = o.facts ? data.edits.filter((e) => o.facts!.has(e.fact)) : data.edits;
  const out = byProblemMethod(data, rows).map(({ problem, method, rows }) => {
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
    const adj = (f: OlsFit | string) => (typeof f === "string" ? NaN : f.adjR2);
    // Each row's fact as a unit 0.. in order of first appearance (a map: thousands of rows and facts).
    const units = new Map<string, number>();
    const unitOf = usable.map((e) => {
      let u = units.get(e.fact);
      if (u === undefined) units.set(e.fact, u = units.size);
      return u;
    });
    const w = new Float64Array(usable.length);
    const lines = new GroupedLines(table.layer, effect, table.y, CONSTANT_EFFECT_RANGE);
    const [ciLayer, ciTrace, ciBoth, ciDiff, ciF2] = units.size < 2
      ? [nanCI(), nanCI(), nanCI(), nanCI(), nanCI()]
      : bootstrapUnits(
        units.size,
        (counts) => {
          for (let i = 0; i < w.length; i++) w[i] = counts[unitOf[i]];
          const g = lines.r2(w);
          return [g.group, g.line, g.both, g.both - g.group, cohensF2(g.group, g.both)];
        },
        { resamples: o.resamples ?? DEFAULT_RESAMPLES, seed: o.seed ?? 0 },
      );
    return {
      problem,
      method,
      metric,
      n: usable.length,
      facts: units.size,
      dropped: rows.length - usable.length,
      layer: r2(layerFit),
      trace: r2(traceFit),
      both: r2(bothFit),
      diff: r2(bothFit) - r2(layerFit),
      adjusted: { layer: adj(layerFit), trace: adj(traceFit), both: adj(bothFit) },
      ci: { layer: ciLayer, trace: ciTrace, both: ciBoth, diff: ciDiff, f2: ciF2 },
      f2: cohensF2(r2(layerFit), r2(bothFit)),
      F,
      p,
      pAdjusted: NaN,
      verdict: "n/a" as Verdict,
      noops: usable.filter((e) => e.noop).length,
      note: [...new Set(notes)].join("; "),
    };
  });
  return correctFamily(out, (r) => r.f2, MIN_EFFECT.f2);
}

/** Holm's correction over `rows` as one family of tests, and the verdict rule on each with its effect
 *  size `effect(row)` against `minimum` (in place). */
function correctFamily<T extends { p: number; pAdjusted: number; verdict: Verdict }>(
  rows: T[],
  effect: (row: T) => number,
  minimum: number,
): T[] {
  const adjusted = holm(rows.map((r) => r.p));
  rows.forEach((r, i) => {
    r.pAdjusted = adjusted[i];
    r.verdict = verdict(r.pAdjusted, effect(r), minimum);
  });
  return rows;
}

/** One tracing window of the window-size study: its traces and how large their effects are. */
export interface StudyWindowTraces {
  /** Layers restored around each layer. */
  window: number;
  /** The localization whose records hold these traces ("causal-tracing" or "tracing-window:W"). */
  localization: string;
  /** Facts traced with this window. */
  facts: number;
  /** Mean of the peak (max over layers) tracing effect over the facts traced with every window, with
   *  its 95% bootstrap interval: Hase et al.'s figure 10 (effects grow as the window widens). */
  peak: ConfidenceInterval;
  /** Over the same facts, how many peak at each layer (layerChoice; indexed by layer): Hase et al.'s
   *  figure 11 (peaks move towards the first and last layers as the window narrows). */
  peakLayers: number[];
  /** Facts among them without a peak (a tie, or no effect above 0). */
  noPeak: number;
}

/** The window-size study: per window its traces, and per (window, problem, method) the R² rows. */
export interface WindowStudy {
  /** Every window traced, ascending. */
  windows: StudyWindowTraces[];
  /** The facts whose edits the regressions use: those traced with every window, so that the windows
   *  are compared on the same edits. */
  facts: number;
  /** r2Table's rows per window, in window order; p Holm-corrected over all of them (one family). */
  rows: (R2Row & { window: number })[];
}

/**
 * Hase et al.'s regressions (r2Table: layer, tracing effect, both; bootstrap intervals over facts) with
 * the tracing effect of each tracing window size (the appendix's window-size analysis). The windows come
 * from the sweep's causal-tracing records (their own window) and its window-study records; the
 * regressions use only facts traced with every window, and the whole table is one family for Holm's
 * correction.
 */
export function windowStudy(
  data: SweepData,
  o: IntervalOptions & { metric?: Metric } = {},
): WindowStudy {
  const byWindow = new Map<number, Map<string, TraceRow[]>>();
  for (const t of data.traces) {
    if (t.localization !== "causal-tracing" && !t.localization.startsWith("tracing-window:")) continue;
    if (!Number.isInteger(t.window)) continue; // a record that does not say its window
    if (!byWindow.has(t.window)) byWindow.set(t.window, new Map());
    const sources = byWindow.get(t.window)!;
    sources.set(t.localization, [...(sources.get(t.localization) ?? []), t]);
  }
  // A window with both kinds of records (stores merged from runs with other main windows): the main
  // traces win, as planItems would have reused them.
  const windows = [...byWindow.keys()].sort((a, b) => a - b).map((window) => {
    const sources = byWindow.get(window)!;
    const localization = sources.has("causal-tracing") ? "causal-tracing" : [...sources.keys()][0];
    return { window, localization, traces: sources.get(localization)! };
  });
  const tracedByAll = new Set(
    (windows[0]?.traces ?? []).map((t) => t.fact).filter((f) =>
      windows.every((w) => w.traces.some((t) => t.fact === f))
    ),
  );
  const common = new Set(data.edits.map((e) => e.fact).filter((f) => tracedByAll.has(f)));
  const rows = windows.flatMap((w) =>
    r2Table(data, { ...o, localization: w.localization, facts: common }).map((r) => ({
      ...r,
      window: w.window,
    }))
  );
  return {
    windows: windows.map((w) => {
      const traces = w.traces.filter((t) => tracedByAll.has(t.fact));
      const peakLayers = new Array(Math.max(0, ...traces.map((t) => t.effect.length))).fill(0);
      let noPeak = 0;
      for (const t of traces) {
        const { layer } = layerChoice(t.effect);
        if (layer === null) noPeak++;
        else peakLayers[layer]++;
      }
      return {
        window: w.window,
        localization: w.localization,
        facts: w.traces.length,
        peak: meanCI(
          traces.map((t) => Math.max(...t.effect.filter(Number.isFinite))).filter(Number.isFinite),
          o,
        ),
        peakLayers,
        noPeak,
      };
    }),
    facts: common.size,
    rows: correctFamily(rows, (r) => r.f2, MIN_EFFECT.f2),
  };
}

/** An interval that cannot be computed (fewer than two facts). */
const nanCI = (): ConfidenceInterval => ({ estimate: NaN, lower: NaN, upper: NaN, level: 0.95 });

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

/** Pearson's r of edit score vs tracing effect at one edit layer (Hase et al. figures 4, 15). */
export interface CorrelationRow {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The edit layer. */
  layer: number;
  /** Facts with both a score and an effect at this layer. */
  n: number;
  /** Pearson's correlation of score and effect. */
  r: number;
  /** 95% bootstrap interval of r over facts (one edit per fact at a layer). */
  ci: ConfidenceInterval;
  /** Two-sided p-value of the t-test of r = 0. */
  p: number;
  /** Holm-corrected over every (problem, method, layer) of the call: one family. */
  pAdjusted: number;
  /** The study's verdict rule on pAdjusted and r. */
  verdict: Verdict;
  /** Why r is NaN (e.g. a constant side), or "". */
  note: string;
}

/** Pearson's r of paired values with weights (bootstrap counts); NaN when either side is constant. */
function weightedR(x: readonly number[], y: readonly number[], w: ArrayLike<number>): number {
  const mx = weightedMean(x, w), my = weightedMean(y, w);
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += w[i] * (x[i] - mx) * (y[i] - my);
    sxx += w[i] * (x[i] - mx) ** 2;
    syy += w[i] * (y[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** Pearson's r between the score and the tracing effect, per edit layer. */
export function perLayerCorrelations(
  data: SweepData,
  o: EffectOptions & IntervalOptions & { metric?: Metric } = {},
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
      const row: CorrelationRow = {
        problem,
        method,
        layer,
        n: usable.length,
        r: NaN,
        ci: nanCI(),
        p: NaN,
        pAdjusted: NaN,
        verdict: "n/a",
        note: "",
      };
      const x = usable.map((e) => effects.get(e.fact)![layer]), y = usable.map((e) => e.scores[metric]);
      try {
        const c = pearson(x, y);
        [row.r, row.p] = [c.r, c.p];
        row.ci = bootstrapUnits(x.length, (w) => [weightedR(x, y, w)], {
          resamples: o.resamples ?? DEFAULT_RESAMPLES,
          seed: o.seed ?? 0,
        })[0];
      } catch (e) {
        row.note = (e as Error).message;
      }
      out.push(row);
    }
  }
  return correctFamily(out, (r) => r.r, MIN_EFFECT.r);
}

/** Mean score per edit layer for one (problem, method) (Hase et al. figure 7); arrays are [layers]. */
export interface LayerCurve {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The score averaged. */
  metric: CurveValue;
  /** The sweep's edit layers, ascending. */
  layers: number[];
  /** Mean score over the facts at each layer (NaN where none has a score). */
  mean: number[];
  /** Standard error of the mean (NaN with one value). */
  sem: number[];
  /** 95% bootstrap interval of the mean over facts (NaN where no fact has a score). */
  lower: number[];
  /** Upper ends of those intervals. */
  upper: number[];
  /** Facts with a score at each layer. */
  n: number[];
}

/** What a layer curve averages per edit: one of the edit scores, or ROME's fluency after the edit. */
export type CurveValue = Metric | "fluency";

/** Mean score per edit layer, per (problem, method), over the edits that have one. */
export function layerCurves(data: SweepData, metric: CurveValue, o: IntervalOptions = {}): LayerCurve[] {
  return oncePerSweep(curveCache, data, [metric, o.resamples, o.seed], () => layerCurveRows(data, metric, o));
}

const curveCache = new WeakMap<SweepData, Map<string, LayerCurve[]>>();

function layerCurveRows(data: SweepData, metric: CurveValue, o: IntervalOptions): LayerCurve[] {
  const value = (e: EditRow) => (metric === "fluency" ? e.fluency.post : e.scores[metric]);
  return byProblemMethod(data).map(({ problem, method, rows }) => {
    const per = data.layers.map((l) => rows.filter((e) => e.layer === l).map(value).filter(Number.isFinite));
    return {
      problem,
      method,
      metric,
      layers: data.layers,
      mean: per.map((xs) => (xs.length ? meanOf(xs) : NaN)),
      sem: per.map((xs) => stdOf(xs) / Math.sqrt(xs.length)),
      ...intervals(per, o),
      n: per.map((xs) => xs.length),
    };
  });
}

/** Bootstrap intervals of the means of several samples (lower[i], upper[i]; NaN for an empty sample). */
function intervals(samples: number[][], o: IntervalOptions): { lower: number[]; upper: number[] } {
  const cis = samples.map((xs) => meanCI(xs, o));
  return { lower: cis.map((c) => c.lower), upper: cis.map((c) => c.upper) };
}

/** The mean of a sample of per-fact values with its 95% bootstrap interval (NaN when empty). */
export function meanCI(xs: number[], o: IntervalOptions = {}): ConfidenceInterval {
  return xs.length === 0
    ? nanCI()
    : bootstrapCI(xs, { resamples: o.resamples ?? DEFAULT_RESAMPLES, seed: o.seed ?? 0 });
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

/** The golden layer vs each fact's own best layer for one condition (Golden Layers table 1). */
export interface GoldenRow {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The score compared. */
  metric: Metric;
  /** Facts with a score at every layer of the grid. */
  n: number;
  /** The layer with the best mean score over the facts. */
  goldenLayer: number;
  /** Mean and standard deviation over facts of the score at the golden layer. */
  golden: { mean: number; std: number };
  /** Each fact at its own best layer. */
  optimal: { mean: number; std: number };
  /** mean(optimal - golden), its 95% t interval, Cohen's d_z and the paired t-test of it. */
  meanDifference: number;
  /** Lower end of the 95% t interval of the mean difference. */
  lower: number;
  /** Upper end of that interval. */
  upper: number;
  /** Cohen's d_z of the paired differences. */
  dz: number;
  /** t statistic of the paired t-test. */
  t: number;
  /** Two-sided p-value of the paired t-test. */
  p: number;
  /** Holm-corrected over the call's (problem, method) rows, and the verdict rule on it and d_z. Each
   *  fact's best layer is a maximum over layers, so optimal >= golden by construction: the test asks
   *  whether the gap is large, not whether it exists. */
  pAdjusted: number;
  /** The study's verdict rule on pAdjusted and d_z. */
  verdict: Verdict;
}

/** Paired t-test that also covers identical or constant differences (no variance to test). */
function pairedTest(
  a: number[],
  b: number[],
): { t: number; p: number; lower: number; upper: number; dz: number } {
  const diffs = a.map((x, i) => x - b[i]);
  if (diffs.every((d) => d === diffs[0])) {
    const d = diffs[0];
    return d === 0
      ? { t: 0, p: 1, lower: 0, upper: 0, dz: 0 }
      : { t: Math.sign(d) * Infinity, p: 0, lower: d, upper: d, dz: Math.sign(d) * Infinity };
  }
  return pairedTTest(a, b);
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
    const { t, p, lower, upper, dz } = pairedTest(optimal, golden);
    out.push({
      problem,
      method,
      metric,
      n: facts.length,
      goldenLayer: data.layers[g],
      golden: { mean: meanOf(golden), std: stdOf(golden) },
      optimal: { mean: meanOf(optimal), std: stdOf(optimal) },
      meanDifference: meanOf(optimal) - meanOf(golden),
      lower,
      upper,
      dz,
      t,
      p,
      pAdjusted: NaN,
      verdict: "n/a",
    });
  }
  return correctFamily(out, (r) => r.dz, MIN_EFFECT.dz);
}

/** Golden layer found on the proxy facts vs on the test facts for one condition (Golden Layers tables 3-8). */
export interface ProxyTestRow {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The score compared. */
  metric: Metric;
  /** Proxy facts with a score at every grid layer. */
  proxyFacts: number;
  /** Test facts with a score at every grid layer. */
  testFacts: number;
  /** The golden layer of the proxy facts. */
  proxyLayer: number;
  /** The test facts' mean score at the proxy golden layer. */
  proxyLayerTestScore: number;
  /** The golden layer of the test facts. */
  testLayer: number;
  /** The test facts' mean score at their own golden layer. */
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

/** The field's standard metrics (CounterFact ES/PS/NS/..., EasyEdit's) of one condition at one layer. */
export interface StandardRow {
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The layer scored: the golden layer of the proxy facts (by rewrite score), else of the test facts. */
  layer: number;
  /** Which facts' golden layer `layer` is. */
  layerFrom: "proxy" | "test";
  /** Test facts scored. */
  n: number;
  /** Per STANDARD_METRICS key: the mean over test facts with its 95% bootstrap interval (NaN: no prompts). */
  metrics: Record<string, ConfidenceInterval>;
  /** ROME's fluency after the edit and of the unedited model, over the test facts it was measured on
   *  (NaN: not measured), and on how many. */
  fluency: { post: ConfidenceInterval; pre: ConfidenceInterval; n: number };
}

/**
 * The field's standard metrics (CounterFact ES/PS/NS and magnitudes, EasyEdit's reliability,
 * generalisation, locality, portability) of the test facts edited at the golden layer chosen on the
 * proxy facts, per (problem, method) where they apply: one layer per condition, as a user would edit.
 */
export function standardTable(data: SweepData, o: IntervalOptions = {}): StandardRow[] {
  const out: StandardRow[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    if (!rows.some((e) => e.standard)) continue;
    const proxy = scoreMatrix(rows.filter((e) => e.split === "proxy"), data.layers, "rewrite");
    const test = scoreMatrix(rows.filter((e) => e.split === "test"), data.layers, "rewrite");
    const from = proxy.size ? "proxy" : "test";
    const matrix = from === "proxy" ? proxy : test;
    if (matrix.size === 0) continue;
    const layer = data.layers[goldenIndex(matrix, [...matrix.keys()], data.layers.length)];
    const chosen = rows.filter((e) => e.split === "test" && e.layer === layer && e.standard);
    const fluent = chosen.filter((e) => Number.isFinite(e.fluency.post) && Number.isFinite(e.fluency.pre));
    out.push({
      problem,
      method,
      layer,
      layerFrom: from,
      n: chosen.length,
      metrics: Object.fromEntries(
        STANDARD_METRICS.map((
          k,
        ) => [k.key, meanCI(chosen.map((e) => e.standard![k.key]).filter(Number.isFinite), o)]),
      ),
      fluency: {
        post: meanCI(fluent.map((e) => e.fluency.post), o),
        pre: meanCI(fluent.map((e) => e.fluency.pre), o),
        n: fluent.length,
      },
    });
  }
  return out;
}

/** Scores of one method as more facts are edited at once; arrays are [sizes]. */
export interface MassCurve {
  /** Editing method. */
  method: string;
  /** Facts edited at once, ascending. */
  sizes: number[];
  /** Per metric and size: the mean over the edited facts with its 95% bootstrap interval. */
  metrics: Record<"rewrite" | "paraphrase" | "neighborhood", ConfidenceInterval[]>;
  /** Wall-clock seconds of the batch edit per size. */
  seconds: number[];
}

/** The mass-editing curve per method (the MEMIT paper's figure: scores as more facts are edited at once). */
export function massCurves(data: SweepData, o: IntervalOptions = {}): MassCurve[] {
  return [...new Set(data.mass.map((m) => m.method))].map((method) => {
    const rows = data.mass.filter((m) => m.method === method).sort((a, b) => a.n - b.n);
    const metric = (k: "rewrite" | "paraphrase" | "neighborhood") =>
      rows.map((r) => meanCI(r.scores[k].filter(Number.isFinite), o));
    return {
      method,
      sizes: rows.map((r) => r.n),
      metrics: {
        rewrite: metric("rewrite"),
        paraphrase: metric("paraphrase"),
        neighborhood: metric("neighborhood"),
      },
      seconds: rows.map((r) => r.seconds),
    };
  });
}

// ------------------------------------------------------------------------------------------------
// Essence and fluency: what was measured

/** How many edits have essence and fluency, and the settings they were measured with. */
export interface DriftSummary {
  /** Edit records in the sweep. */
  edits: number;
  /** Edits with an essence score. */
  essence: number;
  /** Edits with a fluency measurement. */
  fluency: number;
  /** Distinct facts with either. */
  facts: number;
  /** The settings stored with the first measured edit (sweep.ts DriftSettings), or null when no edit
   *  records any (a store from before essence and fluency were recorded). */
  settings: { [key: string]: Json } | null;
}

/** What the sweep measured of essence and fluency. */
export function driftSummary(data: SweepData): DriftSummary {
  const essence = data.edits.filter((e) => Number.isFinite(e.scores.essence));
  const fluency = data.edits.filter((e) => Number.isFinite(e.fluency.post));
  return {
    edits: data.edits.length,
    essence: essence.length,
    fluency: fluency.length,
    facts: new Set([...essence, ...fluency].map((e) => e.fact)).size,
    settings: data.edits.find((e) => e.drift?.measured === true)?.drift ??
      data.edits.find((e) => e.drift)?.drift ?? null,
  };
}

/** One sentence for captions and the summary: what was measured, on how much, and how. */
export function driftDescription(d: DriftSummary): string {
  if (d.essence === 0 && d.fluency === 0) {
    const off = d.settings !== null &&
      (d.settings.every === 0 || (d.settings.essenceSamples === 0 && d.settings.fluencyPrompts === 0));
    return d.settings === null
      ? "Essence and fluency: not measured (the store's edit records predate them)."
      : off
      ? "Essence and fluency: not measured (switched off in this sweep's settings)."
      : "Essence and fluency: not measured (no edit of a measured fact is stored yet).";
  }
  const s = d.settings ?? {};
  const every = Number(s.every);
  return `Essence measured on ${d.essence} and fluency on ${d.fluency} of ${d.edits} edits (${d.facts} fact${
    d.facts === 1 ? "" : "s"
  }` +
    (every > 1 ? `: 1 in ${every} of the seeded sample` : "") + `, at every layer, method and problem); ` +
    `essence: ${s.essenceSamples} samples of ${s.essenceTokens} new tokens after "{subject} is a", ` +
    `fluency: ${s.fluencyTokens} new tokens after each of up to ${s.fluencyPrompts} generation prompts; ` +
    `top-${s.topK} sampling seeded per fact.`;
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

/** How well one layer-selection strategy's layer scores on the test facts (Chun & Hur table 1, Golden
 *  Layers table 2). */
export interface SelectionScore {
  /** Strategy key of STRATEGY_NAMES. */
  strategy: string;
  /** Editing problem. */
  problem: string;
  /** Editing method. */
  method: string;
  /** The chosen layer; null for the per-fact strategy (each fact has its own) and for no choice. */
  layer: number | null;
  /** Why the strategy made no choice (a tie, a structural zero), or "". */
  noChoice: string;
  /** Test facts scored. */
  n: number;
  /** Mean score per metric over the test facts at the chosen layer(s). */
  means: Record<Metric, number>;
  /** 95% bootstrap intervals of the means over the test facts. */
  ci: Record<Metric, ConfidenceInterval>;
  /** A caveat (a layer outside the grid, facts left out), or "". */
  note: string;
}

/** Per-layer scores within this share of the largest |score| of each other count as tied; a best score
 *  within it of 0 (or below) is a structural zero, e.g. a tracing effect of -6.9e-18 at every layer. */
export const TIE_TOLERANCE = 1e-6;

/**
 * The layer a per-layer score picks (its argmax), or why it picks none: no finite score, a best score
 * that is not above 0 (nothing was found: an argmax over float noise or over negative effects; not for
 * `signed` scores, whose 0 means nothing, e.g. LGA's), or several layers tied at the top (`layers` names
 * them; default 0..n-1).
 */
export function layerChoice(
  scores: readonly number[],
  layers: readonly number[] = scores.map((_, i) => i),
  o: { signed?: boolean } = {},
): { layer: number | null; reason: string } {
  const finite = scores.map((v, i) => [v, layers[i]] as const).filter(([v]) => Number.isFinite(v));
  if (finite.length === 0) return { layer: null, reason: "no finite score" };
  const scale = Math.max(...finite.map(([v]) => Math.abs(v)));
  const best = Math.max(...finite.map(([v]) => v));
  const tol = TIE_TOLERANCE * scale;
  if (!o.signed && best <= tol) {
    return {
      layer: null,
      reason: `the best score is ${Number(best.toPrecision(2))}, not above 0 (a structural zero)`,
    };
  }
  const top = finite.filter(([v]) => v >= best - tol).map(([, l]) => l);
  if (top.length > 1) return { layer: null, reason: `tie between layers ${top.join(", ")}` };
  return { layer: top[0], reason: "" };
}

/** Whether a stored selection chose on a tie or a structural zero: causal-tracing effects and
 *  attributions are >= 0 when they find something; LGA's scores are signed (only ties count). */
export function selectionCheck(s: SelectionRow): { layer: number | null; reason: string } {
  return layerChoice(s.scores, undefined, { signed: s.selector === "lga" });
}

/**
 * Mean test-fact scores when editing at the layer each strategy chose: the stored selections
 * (chosen on the proxy facts), brute force on the proxy facts (golden layer by rewrite score) and
 * each fact's own causal-tracing peak. Scores are read from the layer grid, so a layer outside the
 * grid has no scores (noted). A choice made on a tie or a structural zero (layerChoice) is "no
 * choice": no layer and no scores; a fact without a tracing peak is left out of "tracing-peak" and
 * counted in its note.
 */
export function selectionScores(data: SweepData, o: EffectOptions & IntervalOptions = {}): SelectionScore[] {
  return oncePerSweep(
    selectionCache,
    data,
    [o.localization, o.site, o.resamples, o.seed],
    () => selectionRows(data, o),
  );
}
const selectionCache = new WeakMap<SweepData, Map<string, SelectionScore[]>>();

function selectionRows(data: SweepData, o: EffectOptions & IntervalOptions): SelectionScore[] {
  const effects = effectIndex(data, o);
  const out: SelectionScore[] = [];
  for (const { problem, method, rows } of byProblemMethod(data)) {
    const test = rows.filter((e) => e.split === "test");
    const atLayer = new Map<number | null, ReturnType<typeof at>>(); // strategies often agree on a layer
    const at = (layerOf: (fact: string) => number | null | undefined) => {
      const chosen = test.filter((e) => e.layer === layerOf(e.fact));
      const ci = Object.fromEntries(
        METRICS.map((m) => [m, meanCI(chosen.map((e) => e.scores[m]).filter(Number.isFinite), o)]),
      ) as Record<Metric, ConfidenceInterval>;
      const means = Object.fromEntries(METRICS.map((m) => [m, ci[m].estimate])) as Record<Metric, number>;
      return { n: new Set(chosen.map((e) => e.fact)).size, means, ci };
    };
    const fixed = (strategy: string, choice: { layer: number | null; reason: string }) => {
      const layer = choice.layer;
      const note = layer === null || data.layers.includes(layer)
        ? ""
        : `layer ${layer} is not in the sweep's layer grid`;
      if (!atLayer.has(layer)) atLayer.set(layer, at(() => layer));
      out.push({ strategy, problem, method, layer, noChoice: choice.reason, ...atLayer.get(layer)!, note });
    };
    for (const s of data.selections) {
      // The selector's own choice, unless its scores tie at the top or are a structural zero.
      const check = s.scores.length ? selectionCheck(s) : { layer: null, reason: "" };
      fixed(s.selector, check.reason ? check : { layer: s.layers[0], reason: "" });
    }
    const proxyMatrix = scoreMatrix(rows.filter((e) => e.split === "proxy"), data.layers, "rewrite");
    if (proxyMatrix.size > 0) {
      const facts = [...proxyMatrix.keys()];
      const means = data.layers.map((_, i) => meanOf(facts.map((f) => proxyMatrix.get(f)![i])));
      fixed("brute-force", layerChoice(means, data.layers));
    }
    if (effects.size > 0) {
      let without = 0;
      const peaks = new Map<string, number | null>();
      for (const fact of new Set(test.map((e) => e.fact))) {
        const e = effects.get(fact);
        // The fact's strongest layer among the grid's layers.
        const c = e ? layerChoice(data.layers.map((l) => e[l]), data.layers) : { layer: null };
        if (c.layer === null) without++;
        peaks.set(fact, c.layer);
      }
      out.push({
        strategy: "tracing-peak",
        problem,
        method,
        layer: null,
        noChoice: without === peaks.size ? "no fact has a tracing peak above 0" : "",
        ...at((f) => peaks.get(f)),
        note: without
          ? `${without} of ${peaks.size} facts have no peak (a tie or no effect above 0): left out`
          : "",
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Verdicts, and what the data cannot support

const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");
const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "n/a");
/** "12.3% [8.1, 15.0]": a share with its 95% interval, in percent. */
export const pctCI = (x: number, ci: ConfidenceInterval): string =>
  `${pct(x)} [${
    Number.isFinite(ci.lower) ? `${(100 * ci.lower).toFixed(1)}, ${(100 * ci.upper).toFixed(1)}` : "n/a"
  }]`;

/** The headline of Hase et al. for one condition: the three R^2 with their intervals and the verdict
 *  rule on what the tracing effect adds to the layer; with the sweep `data`, also the layer's and the
 *  tracing effect's R^2 without the method's layers where every edit was a no-op (noopCells). */
export function headline(row: R2Row, data?: SweepData): string {
  if (!Number.isFinite(row.layer) || !Number.isFinite(row.trace)) {
    return `${row.method} ${row.problem}: not enough data for the regressions (${row.note || "n/a"})`;
  }
  // With the sweep: the same regressions without the method's layers where every edit was a no-op.
  const dead = data ? noopCells(data).filter((c) => c.method === row.method).map((c) => c.layer) : [];
  const live = dead.length
    ? r2Table(withoutNoopCells(data!), { metric: row.metric }).find((r) =>
      r.problem === row.problem && r.method === row.method
    )
    : undefined;
  const without = live && Number.isFinite(live.layer) && Number.isFinite(live.trace)
    ? ` Without its layer${dead.length > 1 ? "s" : ""} ${
      dead.join(", ")
    }, where every edit was a no-op: the ` +
      `layer ${pctCI(live.layer, live.ci.layer)}, the tracing effect ${pctCI(live.trace, live.ci.trace)}.`
    : "";
  return `${row.method} ${row.problem} (${row.n} edits of ${row.facts} facts): the edit layer explains ` +
    `${pctCI(row.layer, row.ci.layer)} of the variance in ${row.metric} score, the tracing effect ` +
    `${pctCI(row.trace, row.ci.trace)}; adding the tracing effect to the layer adds ${
      pctCI(row.diff, row.ci.diff)
    } (f² = ${f3(row.f2)} [${f3(row.ci.f2.lower)}, ${f3(row.ci.f2.upper)}], Holm-corrected F-test p = ${
      formatP(row.pAdjusted)
    }): ${
      row.verdict === "effect" ? "an effect" : row.verdict === "no effect" ? "no effect" : "n/a"
    } by the study's rule.${without}`;
}

/** Thresholds of the caveats (all computed from the data; none is a conclusion in itself). */
export const CAVEAT_THRESHOLDS = {
  /** A tracing effect whose largest value over facts and layers stays below this restores almost
   *  nothing: the regressor cannot separate facts (Hase et al.'s GPT-J effects reach 0.2-0.6). */
  minEffect: 0.05,
  /** One layer holding at least this share of the facts' peaks dominates the regressor. */
  dominantShare: 0.8,
  /** Scores within this of 1 (or 0) are at the ceiling (floor) ... */
  bound: 0.01,
  /** ... and a condition with at least this share of them has a ceiling (floor) effect. */
  boundShare: 0.8,
  /** Far outliers: beyond 3 IQR from the quartiles (Tukey's "far out"). */
  outlierK: 3,
  /** The facts per condition below which the study calls itself a small sample. */
  smallSample: 250,
};

/** What a run set out to edit, when its caller knows (the study command): the facts its plan edits, the
 *  proxy facts among them, and whether the run got through its plan (false: its time budget ran out). */
export interface RunPlan {
  /** Facts the plan edits (proxy and test). */
  facts: number;
  /** Proxy facts among them. */
  proxyFacts: number;
  /** Whether the run got through the plan. */
  complete: boolean;
}

/** How far the data got through `plan`: a line for the report's summary ("complete: ..." or "incomplete:
 *  ..."), and for an incomplete run the caveat that every figure is of the facts done so far. */
export function runProgress(data: SweepData, plan: RunPlan): { line: string; caveat?: string } {
  const facts = new Set(data.edits.map((e) => e.fact));
  const proxy = new Set(data.edits.filter((e) => e.split === "proxy").map((e) => e.fact));
  const test = plan.facts - plan.proxyFacts;
  if (plan.complete) {
    return {
      line: `complete: the plan's ${plan.facts} edited facts (${plan.proxyFacts} proxy, ${test} test)`,
    };
  }
  const done =
    `${facts.size} of the ${plan.facts} facts the plan edits (${proxy.size} of ${plan.proxyFacts} ` +
    `proxy, ${facts.size - proxy.size} of ${test} test facts)`;
  return {
    line: `incomplete: results for ${done}; the time budget ran out`,
    caveat:
      `Incomplete run: results for ${done}, as the time budget ran out. Every figure and test here is ` +
      `of the facts done so far; run the same command again to continue.`,
  };
}

/**
 * Everything in the data that limits what the run can support, as sentences: a degenerate regressor
 * (near-zero tracing effects, one layer dominating the peaks), selections made on ties or structural
 * zeros, ceiling and floor effects, no-op edits, far outliers and small samples. Each names its
 * condition and numbers, so the caveats of a run are its own, never fixed text. With `o.plan`, a run
 * that did not get through it says so first (runProgress).
 */
export function caveats(
  data: SweepData,
  o: EffectOptions & IntervalOptions & { plan?: RunPlan } = {},
): string[] {
  const incomplete = o.plan && runProgress(data, o.plan).caveat;
  const out: string[] = incomplete ? [incomplete] : [];
  const T = CAVEAT_THRESHOLDS;
  const localization = o.localization ?? "causal-tracing";
  const traces = data.traces.filter((t) => t.localization === localization);
  const effects = traces.map((t) => (o.site === "last-subject" ? t.lastSubjectEffect : t.effect));
  // Every regressor the report uses: the effect (max over tokens, or at the last subject token) of
  // causal tracing, and of representation zeroing.
  const regressors: [string, number[][]][] = [
    [`${localization} effect${o.site === "last-subject" ? " at the last subject token" : ""}`, effects],
    ...(o.site === undefined && localization === "causal-tracing"
      ? [
        ["causal-tracing effect at the last subject token", traces.map((t) => t.lastSubjectEffect)],
        ["zeroing effect", data.traces.filter((t) => t.localization === "zeroing").map((t) => t.effect)],
      ] as [string, number[][]][]
      : []),
  ];
  for (const [name, values] of regressors) {
    const all = values.flat().filter(Number.isFinite);
    if (values.length === 0) continue;
    const top = all.length ? Math.max(...all.map(Math.abs)) : NaN;
    if (!(top >= T.minEffect)) {
      out.push(
        `Degenerate regressor: the ${name} is at most ${
          Number.isFinite(top) ? top.toPrecision(2) : "n/a"
        } (in absolute value) at every layer of all ${values.length} facts, below ${T.minEffect}: the facts ` +
          `barely differ in it, so the regressions on it cannot test whether it informs editing.`,
      );
    }
  }
  if (traces.length > 0) {
    const peaks = effects.map((e) => layerChoice(e).layer);
    const none = peaks.filter((p) => p === null).length;
    const counts = new Map<number, number>();
    for (const p of peaks) if (p !== null) counts.set(p, (counts.get(p) ?? 0) + 1);
    const [modeLayer, modeCount] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? [NaN, 0];
    if (modeCount >= T.dominantShare * traces.length) {
      out.push(
        `One layer dominates: ${modeCount} of ${traces.length} facts peak at layer ${modeLayer}, so the peak ` +
          `layer carries almost no information about the fact.`,
      );
    }
    if (none > 0) {
      out.push(`${none} of ${traces.length} facts have no tracing peak (a tie, or no effect above 0).`);
    }
  }
  for (const s of selectionScores(data, o)) {
    if (s.noChoice && s.problem === data.problems[0] && s.method === data.methods[0]) {
      out.push(
        `No choice: ${STRATEGY_NAMES[s.strategy] ?? s.strategy}: ${s.noChoice}; shown as "no choice".`,
      );
    }
  }
  out.push(...boundCaveats(data), ...outlierCaveats(data), ...noopCaveats(data));
  const perCondition = byProblemMethod(data).map((g) =>
    new Set(g.rows.filter((e) => e.split === "test").map((e) => e.fact)).size
  );
  const fewest = perCondition.length ? Math.min(...perCondition) : 0;
  if (data.edits.length > 0 && fewest < T.smallSample) {
    const proxy = new Set(data.edits.filter((e) => e.split === "proxy").map((e) => e.fact)).size;
    out.push(
      `Small sample: as few as ${fewest} test facts per condition (proxy set: ${proxy} facts); intervals are wide ` +
        `and a missing effect may be a missing test power (the default study edits ${T.smallSample}).`,
    );
  }
  return out;
}

/** "error-injection rome (309 of 360), ..." for the first `shown` of `items`, then "and N more". */
function conditionList(items: { problem: string; method: string; detail: string }[], shown = 4): string {
  const listed = items.slice(0, shown).map((x) => `${x.problem} ${x.method} (${x.detail})`);
  return listed.join(", ") + (items.length > shown ? `, and ${items.length - shown} more` : "");
}

const percent = (x: number) => `${Math.round(100 * x)}%`;

/**
 * Ceiling and floor effects, one caveat per score and bound over every (problem, method) condition:
 * a condition has one when at least CAVEAT_THRESHOLDS.boundShare of its scores lie within `bound` of 1
 * (or 0). All conditions at once are stated with the range of their shares, fewer are named.
 */
function boundCaveats(data: SweepData): string[] {
  const T = CAVEAT_THRESHOLDS, out: string[] = [];
  const conditions = byProblemMethod(data);
  for (const metric of ["rewrite", "paraphrase", "neighborhood"] as const) {
    for (const [name, bound] of [["Ceiling", 1], ["Floor", 0]] as const) {
      const hits: { problem: string; method: string; detail: string; share: number }[] = [];
      let measured = 0;
      for (const { problem, method, rows } of conditions) {
        const xs = rows.map((e) => e.scores[metric]).filter(Number.isFinite);
        if (xs.length < 2) continue;
        measured++;
        const k = xs.filter((x) => Math.abs(x - bound) <= T.bound).length;
        if (k >= T.boundShare * xs.length) {
          hits.push({ problem, method, detail: `${k} of ${xs.length}`, share: k / xs.length });
        }
      }
      if (hits.length === 0) continue;
      const shares = hits.map((h) => h.share);
      const where = hits.length === measured && measured > 1
        ? `all ${measured} conditions (problem × method; ${
          [...new Set([Math.min(...shares), Math.max(...shares)].map(percent))].join("-")
        } of each condition's scores)`
        : `${hits.length} of ${measured} condition${measured === 1 ? "" : "s"}: ${conditionList(hits)}`;
      out.push(
        `${name} effect: ${metric} scores within ${T.bound} of ${bound} in ${where}; they cannot separate ` +
          `layers or facts.`,
      );
    }
  }
  return out;
}

/** Far outliers of the rewrite score (Tukey's fences at CAVEAT_THRESHOLDS.outlierK IQR within each
 *  condition), in one caveat: how many, in which conditions (most first), and the values. */
function outlierCaveats(data: SweepData): string[] {
  const T = CAVEAT_THRESHOLDS;
  const hits: { problem: string; method: string; detail: string; count: number }[] = [];
  let measured = 0;
  for (const { problem, method, rows } of byProblemMethod(data)) {
    const xs = rows.map((e) => e.scores.rewrite).filter(Number.isFinite);
    if (xs.length < 4) continue;
    measured++;
    const { outliers } = tukeyFences(xs, T.outlierK);
    if (outliers.length === 0) continue;
    const shown = outliers.map((i) => xs[i]).sort((a, b) => a - b);
    const values = shown.slice(0, 3).map((x) => x.toFixed(2)).join(", ") + (shown.length > 3 ? ", ..." : "");
    hits.push({ problem, method, detail: `${outliers.length}: ${values}`, count: outliers.length });
  }
  if (hits.length === 0) return [];
  const total = hits.reduce((s, h) => s + h.count, 0);
  hits.sort((a, b) => b.count - a.count);
  return [
    `Outliers: ${total} rewrite score${total === 1 ? " lies" : "s lie"} beyond ${T.outlierK} IQR of ` +
    `their condition's quartiles, in ${hits.length} of ${measured} condition${measured === 1 ? "" : "s"}: ` +
    `${conditionList(hits, 3)}; they are kept in every statistic and drawn in the scatter plots.`,
  ];
}

/** A (method, layer) cell of the layer grid where every edit (at least two) left p(target) unchanged. */
export interface NoopCell {
  /** The editing method. */
  method: string;
  /** The grid layer. */
  layer: number;
  /** Its edits, every problem's. */
  edits: EditRow[];
}

/** The cells of the layer grid where every edit was a no-op (e.g. ROME at a model's last layer, where
 *  what it writes at the subject token reaches no later position), in method then layer order. */
export function noopCells(data: SweepData): NoopCell[] {
  const cells = new Map<string, NoopCell>();
  for (const e of data.edits) {
    const key = `${e.method}|${e.layer}`;
    if (!cells.has(key)) cells.set(key, { method: e.method, layer: e.layer, edits: [] });
    cells.get(key)!.edits.push(e);
  }
  return [...cells.values()]
    .filter((c) => c.edits.length > 1 && c.edits.every((e) => e.noop))
    .sort((a, b) => data.methods.indexOf(a.method) - data.methods.indexOf(b.method) || a.layer - b.layer);
}

/**
 * `data` without the edits of its noopCells (the same object when there are none), once per sweep: the
 * robustness check of the layer regressions on the layers where an edit can change something (a layer
 * where nothing moves is a layer effect of its own).
 */
export function withoutNoopCells(data: SweepData): SweepData {
  return oncePerSweep(withoutNoopCache, data, [], () => {
    const dead = new Set(noopCells(data).flatMap((c) => c.edits));
    return dead.size ? { ...data, edits: data.edits.filter((e) => !dead.has(e)) } : data;
  });
}
const withoutNoopCache = new WeakMap<SweepData, Map<string, SweepData>>();

/** "rome at layer 5, memit at layers 4, 5 and emmet at layer 5". */
export function describeNoopCells(data: SweepData, cells: NoopCell[]): string {
  const byMethod = data.methods.flatMap((m) => {
    const layers = cells.filter((c) => c.method === m).map((c) => c.layer);
    return layers.length ? [`${m} at layer${layers.length > 1 ? "s" : ""} ${layers.join(", ")}`] : [];
  });
  return byMethod.length > 1
    ? `${byMethod.slice(0, -1).join(", ")} and ${byMethod.at(-1)}`
    : byMethod[0] ?? "";
}

/**
 * No-op edits in one caveat: how many, the (method, layer) cells where every edit was one, and why when
 * the data shows it (each such edit's highest edited layer is the model's last: what it writes at the
 * subject token reaches no later position, so its value optimisation has no gradient), then the rest
 * by condition.
 */
function noopCaveats(data: SweepData): string[] {
  const noops = data.edits.filter((e) => e.noop);
  if (noops.length === 0) return [];
  const dead = noopCells(data);
  const deadEdits = new Set(dead.flatMap((c) => c.edits));
  const lastLayer = Number(data.model.nLayer) - 1;
  const atLast = dead.length > 0 &&
    dead.every((c) => c.edits.every((e) => Math.max(e.layer, ...e.editedLayers) === lastLayer));
  const rest = byProblemMethod(data, noops.filter((e) => !deadEdits.has(e)))
    .map(({ problem, method, rows }) => ({ problem, method, detail: `${rows.length}`, count: rows.length }))
    .sort((a, b) => b.count - a.count);
  const restCount = noops.length - deadEdits.size;
  return [
    `No-op edits: ${noops.length} of ${data.edits.length} edits left p(target) unchanged (|Δp| ≤ ` +
    `${NOOP_TOLERANCE})` +
    (dead.length
      ? `; every edit of ${describeNoopCells(data, dead)} was one` +
        (atLast
          ? ` (each of these edits reaches the model's last layer, ${lastLayer}, where what it writes at the ` +
            `subject token reaches no later position: its value optimisation gets no gradient; the ` +
            `summary and the report repeat the regressions without these cells)`
          : "")
      : "") +
    (restCount > 0 ? `; ${dead.length ? `${restCount} more: ` : ""}${conditionList(rest, 4)}` : "") +
    `. They stay in the statistics (a method that need not change anything succeeded or failed as it is) ` +
    `and are counted per table row.`,
  ];
}

/** Below this R² a predictor "explains little" (findings says so rather than ranking the two). */
export const WEAK_R2 = 0.2;

/**
 * What the run supports, computed with the verdict rule: Hase et al.'s two claims (the layer predicts
 * edit success better than the tracing effect; the tracing effect adds little once the layer is
 * known), the per-layer correlations, golden vs per-fact layers and the layer-selection strategies.
 */
export function findings(data: SweepData, o: EffectOptions & IntervalOptions = {}): string[] {
  const out: string[] = [];
  const rows = r2Table(data, { ...o, metric: "rewrite" }).filter((r) =>
    Number.isFinite(r.layer) && Number.isFinite(r.trace)
  );
  if (rows.length === 0) {
    return ["No condition has enough data for Hase et al.'s regressions.", ...driftFindings(data, o)];
  }
  const layerAbove = rows.filter((r) => r.ci.layer.lower > r.ci.trace.upper);
  const traceAbove = rows.filter((r) => r.ci.trace.lower > r.ci.layer.upper);
  const names = (rs: R2Row[]) => rs.map((r) => `${r.method} ${r.problem}`).join(", ");
  out.push(
    `The edit layer explains more of the rewrite score's variance than the tracing effect (95% intervals ` +
      `apart) in ${layerAbove.length} of ${rows.length} conditions${
        traceAbove.length
          ? `; the tracing effect more than the layer in ${traceAbove.length} (${names(traceAbove)})`
          : ""
      }${
        rows.length > layerAbove.length + traceAbove.length
          ? `; in the other ${rows.length - layerAbove.length - traceAbove.length} the intervals overlap`
          : ""
      }.`,
  );
  const medianOf = (xs: number[]) => (xs.length ? median(xs) : NaN);
  const [layerR2, traceR2] = [medianOf(rows.map((r) => r.layer)), medianOf(rows.map((r) => r.trace))];
  if (Math.max(layerR2, traceR2) < WEAK_R2) {
    out.push(
      `Neither predictor explains much: median R² of the layer ${pct(layerR2)}, of the tracing effect ` +
        `${pct(traceR2)} (both below ${pct(WEAK_R2)}); comparing them says little about either.`,
    );
  }
  const effects = rows.filter((r) => r.verdict === "effect");
  const diffs = rows.map((r) => r.diff).filter(Number.isFinite);
  out.push(
    `Adding the tracing effect to the layer: an effect in ${effects.length} of ${rows.length} conditions` +
      (effects.length ? ` (${names(effects)})` : "") +
      (diffs.length ? `; median gain in R² ${pct(medianOf(diffs))}` : "") + ".",
  );
  const dead = noopCells(data);
  const live = dead.length
    ? r2Table(withoutNoopCells(data), { ...o, metric: "rewrite" }).filter((r) =>
      Number.isFinite(r.layer) && Number.isFinite(r.trace)
    )
    : [];
  if (live.length) {
    // A layer where no edit can change anything is a layer effect of its own: the same two claims
    // without those cells.
    out.push(
      `Without the cells where every edit was a no-op (${describeNoopCells(data, dead)}): the edit layer ` +
        `explains more than the tracing effect (intervals apart) in ${
          live.filter((r) => r.ci.layer.lower > r.ci.trace.upper).length
        } of ${live.length} conditions, the tracing effect more in ${
          live.filter((r) => r.ci.trace.lower > r.ci.layer.upper).length
        }; median R² of the layer ${pct(median(live.map((r) => r.layer)))} (${pct(layerR2)} with them); ` +
        `adding the tracing effect: an effect in ${live.filter((r) => r.verdict === "effect").length} of ` +
        `${live.length}.`,
    );
  }
  const corr = perLayerCorrelations(data, o).filter((c) => c.verdict !== "n/a");
  if (corr.length) {
    out.push(
      `Per-layer correlations of rewrite score and tracing effect: ${
        corr.filter((c) => c.verdict === "effect").length
      } of ${corr.length} (problem × method × layer) are effects.`,
    );
  }
  const golden = goldenVsSampleWise(data).filter((g) => g.verdict !== "n/a");
  if (golden.length) {
    out.push(
      `Each fact's best layer beats the golden layer (one layer for all) by an effect in ${
        golden.filter((g) => g.verdict === "effect").length
      } of ${golden.length} conditions.`,
    );
  }
  out.push(...driftFindings(data, o));
  const picks = selectionScores(data, o).filter((s) =>
    s.problem === rows[0].problem && s.method === rows[0].method
  );
  if (picks.length) {
    out.push(
      `Layer selection (${rows[0].method}, ${rows[0].problem}): ` +
        picks.map((s) =>
          `${STRATEGY_NAMES[s.strategy] ?? s.strategy} ${
            s.noChoice ? "no choice" : s.layer === null ? "per fact" : `layer ${s.layer}`
          }`
        ).join("; ") + ".",
    );
  }
  return out;
}

/** Hase et al.'s essence and ROME's fluency after the edits, per method, or "not measured". */
function driftFindings(data: SweepData, o: IntervalOptions): string[] {
  const essence = layerRange(data, "essence", o);
  const fluency = layerRange(data, "fluency", o);
  const ranges = (r: { problem: string; text: string }) =>
    `, ${r.problem}, lowest to highest mean over layers: ${r.text}`;
  // The unedited model's fluency, once per fact (the same draws before every edit of the fact).
  const unedited = (problem: string) => {
    const pre = new Map(
      data.edits.filter((e) => e.problem === problem && Number.isFinite(e.fluency.pre)).map((
        e,
      ) => [e.fact, e.fluency.pre]),
    );
    const ci = meanCI([...pre.values()], o);
    return `; the unedited model ${interval(ci.estimate, ci.lower, ci.upper)} (${pre.size} facts)`;
  };
  return [
    `Essence (Hase et al.: 1 = the subject's "{subject} is a" texts as likely after the edit as before)` +
    (essence ? `${ranges(essence)}.` : ": not measured."),
    `Fluency (ROME's n-gram entropy of generations after the edit; lower = more repetitive)` +
    (fluency ? `${ranges(fluency)}${unedited(fluency.problem)}.` : ": not measured."),
  ];
}

/** "0.42 [0.31, 0.55]": a mean and its interval. */
const interval = (mean: number, lower: number, upper: number) =>
  `${mean.toFixed(2)} [${lower.toFixed(2)}, ${upper.toFixed(2)}]`;

/** Per method, on the first problem where `metric` was measured: the layers where its mean is lowest and
 *  highest, with 95% bootstrap intervals over facts; null where no edit has it. */
function layerRange(
  data: SweepData,
  metric: "essence" | "fluency",
  o: IntervalOptions,
): { problem: string; text: string } | null {
  const curves = layerCurves(data, metric, o).filter((c) => c.n.some((n) => n > 0));
  if (curves.length === 0) return null;
  const problem = curves[0].problem;
  const parts = curves.filter((c) => c.problem === problem).map((c) => {
    const measured = c.layers.map((l, i) => ({ l, i })).filter(({ i }) => c.n[i] > 0);
    const byMean = [...measured].sort((a, b) => c.mean[a.i] - c.mean[b.i]);
    const at = ({ l, i }: { l: number; i: number }) =>
      `${interval(c.mean[i], c.lower[i], c.upper[i])} at layer ${l}`;
    return measured.length === 1
      ? `${c.method} ${at(byMean[0])}`
      : `${c.method} ${at(byMean[0])} to ${at(byMean.at(-1)!)}`;
  });
  return { problem, text: parts.join("; ") };
}

/** p-values as the papers print them: "<1e-4" below 1e-4, else 3 significant digits. */
export function formatP(p: number): string {
  if (!Number.isFinite(p)) return "n/a";
  return p < 1e-4 ? "<1e-4" : String(Number(p.toPrecision(3)));
}
