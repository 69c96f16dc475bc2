// experiments/study/report.ts on a synthetic sweep store: every table and figure of the seeds is on the
// page, table cells agree with experiments/study/analysis.ts, text is escaped, nothing is fetched from the
// network, a sweep without traces still names every table and figure; and the page opens in headless
// Chromium (DOM dumped, screenshot written) with the network blocked.
import assert from "node:assert/strict";
import {
  formatP,
  layerCurves,
  loadSweep,
  r2Table,
  standardTable,
  windowStudy,
  withoutNoopCells,
} from "../experiments/study/analysis.ts";
import { type ResultRecord, ResultStore } from "../experiments/study/store.ts";
import { renderReport } from "../experiments/study/report.ts";
import type { FactTrace, KindGrid, StateKind } from "../experiments/localization/tracing.ts";
import { rng, runScript, type ScriptRun } from "./util.ts";

const L = 4, PROBLEMS = ["error-injection", "fact-forcing"], METHODS = ["rome", "memit"];
const MODEL = { name: "synthetic-kb", weightsSha256: "f".repeat(64), nLayer: L, nEmbd: 16, vocabSize: 40 };
const DATASET = { name: "counterfact.json", sha256: "e".repeat(64) };
const ADAPTER = { description: "test adapter", isFallback: true };

/** A causal trace of a 4-token prompt whose subject is tokens 0-1; the MLP effect peaks at `peak`. */
function syntheticTrace(subject: string, effect: number[]): FactTrace {
  const tokens = [...subject.split(" "), " lives", " in"];
  const T = tokens.length;
  const grid = (kind: StateKind, scale: number): KindGrid => {
    const prob = tokens.map((_, t) =>
      effect.map((e) => 0.01 + scale * e * (t === 1 || t === T - 1 ? 0.5 : 0.1))
    );
    const eff = prob.map((row) => row.map((p) => p - 0.01));
    const fraction = eff.map((row) => row.map((e) => e / 0.49));
    const maxOver = (g: number[][], l: number) => Math.max(...g.map((r) => r[l]));
    return {
      kind,
      window: 1,
      prob,
      effect: eff,
      fraction,
      layers: {
        maxEffect: effect.map((_, l) => maxOver(eff, l)),
        maxFraction: effect.map((_, l) => maxOver(fraction, l)),
        lastSubjectEffect: eff[1],
        lastSubjectFraction: fraction[1],
      },
    };
  };
  return {
    prompt: `${subject} lives in`,
    subject,
    target: "Oslo",
    tokens,
    targetToken: " Oslo",
    method: "noise",
    ids: tokens.map((_, i) => i + 2),
    subjectRange: [0, 2],
    targetId: 9,
    clean: 0.5,
    corrupted: 0.01,
    noise: 0.3,
    samples: 10,
    seed: 1,
    grids: [grid("resid", 1), grid("mlp", 0.8), grid("attn", 0.6)],
  };
}

/** Hase et al.'s essence of the even facts' edits (worse at early layers, as in their figure 8) and
 *  ROME's fluency after the edit and before; the odd facts are not measured (sweep.ts DriftSettings). */
const syntheticEssence = (f: number, l: number) => 0.6 + 0.1 * l + 0.01 * f;
const syntheticFluency = (f: number, l: number) => 4.4 + 0.05 * l + 0.01 * f;
const DRIFT = {
  essenceSamples: 5,
  essenceTokens: 20,
  fluencyPrompts: 5,
  fluencyTokens: 20,
  topK: 5,
  every: 2,
};

/** 10 facts (2 proxy) x 4 layers x 2 methods x 2 problems; the rewrite score depends mostly on the layer.
 *  With `drift`, the even facts' edits carry essence and fluency as the sweep stores them. */
function syntheticRecords(
  o: { traces: boolean; drift?: boolean; methods?: string[]; zsre?: boolean },
): ResultRecord[] {
  const methods = o.methods ?? METHODS;
  const random = rng(11);
  const records: ResultRecord[] = [];
  const base = { sweep: "study", model: MODEL, adapter: ADAPTER };
  for (let f = 0; f < 10; f++) {
    // The subject of fact 0 needs escaping in HTML.
    const subject = f === 0 ? `<b>Ann & "Bo"</b> Berg` : `Person${f} Surname${f}`;
    const fact = `${o.zsre ? "zsre" : "counterfact"}:${f}`, split = f < 2 ? "proxy" : "test";
    const peak = f % L;
    const effect = Array.from(
      { length: L },
      (_, l) => (l === peak ? 0.9 : f % 3 === 0 ? 0.1 : 0.55 * random()),
    );
    if (o.traces) {
      // The main traces (window 1) and the window study's (window 2: each layer gains from its next one).
      const wide = effect.map((e, l) => e + 0.5 * (effect[l + 1] ?? 0));
      for (
        const [localization, window, e] of [
          ["causal-tracing", 1, effect],
          ["zeroing", 1, effect],
          ["tracing-window:2", 2, wide],
        ] as const
      ) {
        const trace = syntheticTrace(subject, e);
        records.push({
          ...base,
          fact,
          method: "none",
          layer: null,
          problem: "none",
          localization,
          metrics: JSON.parse(JSON.stringify({ effect: e, lastSubjectEffect: e.map((x) => x / 2), trace })),
          hparams: { window },
          dataset: { ...DATASET, caseId: fact, split },
        });
      }
    }
    for (const problem of PROBLEMS) {
      for (const method of methods) {
        for (let l = 0; l < L; l++) {
          const rewrite = [0.6, 0.95, 0.8, 0.3][l] + 0.05 * (random() - 0.5) + 0.02 * effect[l];
          const paraphrase = rewrite * 0.6, neighborhood = 0.9 - 0.1 * l / L + 0.02 * random();
          records.push({
            ...base,
            fact,
            method,
            layer: l,
            problem,
            localization: "layer-grid",
            metrics: {
              rewrite,
              paraphrase,
              neighborhood,
              overall: 3 / (1 / rewrite + 1 / paraphrase + 1 / neighborhood),
            },
            hparams: {
              editedLayers: editedLayers(method, l),
              ...(o.drift ? { drift: { ...DRIFT, measured: f % 2 === 0, seed: f, prompts: 5 } } : {}),
            },
            dataset: { ...DATASET, caseId: fact, split },
          });
          // Fact 1's edits leave p(target) where it was: no-op edits the report counts.
          records.at(-1)!.metrics = {
            ...records.at(-1)!.metrics,
            pre: { rewrite: 0.5 },
            post: { rewrite: f === 1 ? 0.5 : 0.9 },
            ...(o.drift
              ? f % 2 === 0
                ? {
                  essence: {
                    score: syntheticEssence(f, l),
                    pre: 3,
                    post: 3 + 5 * (1 - syntheticEssence(f, l)),
                  },
                  overallEssence: 4 /
                    (1 / rewrite + 1 / paraphrase + 1 / neighborhood + 1 / syntheticEssence(f, l)),
                  fluency: { post: syntheticFluency(f, l), pre: 4.6 },
                }
                : { essence: null, overallEssence: null, fluency: null }
              : {}),
            // The standard metrics apply to error injection (a new object against the true one).
            standard: problem === "error-injection"
              ? {
                efficacySuccess: rewrite > 0.5 ? 1 : 0,
                efficacyMagnitude: rewrite - 0.5,
                paraphraseSuccess: 1,
                paraphraseMagnitude: 0.2,
                neighborhoodSuccess: 0.9,
                neighborhoodMagnitude: 0.3,
                reliability: 0.5,
                generalization: 0.4,
                locality: 1,
                portability: null,
                ...(o.zsre ? { specificity: 0.25 + 0.01 * f } : {}),
              }
              : null,
          };
        }
      }
    }
  }
  // The mass-editing curve: MEMIT editing 1 and 8 test facts at once, worse with more.
  for (const n of [1, 8]) {
    records.push({
      ...base,
      fact: "mass-set",
      method: "memit",
      layer: null,
      problem: "error-injection",
      localization: `mass:${n}`,
      metrics: {
        n,
        rewrite: Array.from({ length: n }, (_, i) => 0.9 - 0.02 * n + 0.01 * i),
        paraphrase: Array.from({ length: n }, () => 0.5),
        neighborhood: Array.from({ length: n }, () => 0.95),
      },
      hparams: { editedLayers: [1, 2] },
      timings: { edit: 2 * n },
    });
  }
  for (const [selector, layer] of [["causal-tracing", 0], ["integrated-gradients", 3], ["lga", 1]] as const) {
    records.push({
      ...base,
      fact: "proxy-set",
      method: "none",
      layer: null,
      problem: "none",
      localization: `select:${selector}`,
      metrics: { layers: [layer], scores: [0.1, 0.4, 0.2, 0.3], proxy: ["counterfact:0", "counterfact:1"] },
      timings: { select: 1.5 },
    });
  }
  return records;
}

/** The layers a synthetic edit at layer `l` changed: MEMIT's window of 3 and FT-5's of 5 (clipped). */
function editedLayers(method: string, l: number): number[] {
  const half = method === "memit" ? 1 : method === "ft-5" ? 2 : 0;
  const from = Math.max(0, l - half), to = Math.min(L - 1, l + half);
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

function writeStore(path: string, records: ResultRecord[]): void {
  const store = ResultStore.open(path);
  for (const r of records) store.put(r);
  store.close();
}

const fullDb = `${dir}/study.db`;
writeStore(fullDb, syntheticRecords({ traces: true, drift: true }));

const TABLES = [
  "table-hase-1",
  "table-hase-2",
  "table-hase-3",
  "table-hase-4",
  "table-hase-5",
  "table-hase-6",
  "table-zeroing",
  "table-last-subject",
  "table-correlations",
  "table-golden",
  "table-proxy-test",
  "table-selection-004",
  "table-selection-000",
  "table-counterfact",
  "table-mass-editing",
  "table-window-effects",
  "table-window",
];
const FIGURES = [
  "fig-heatmaps",
  "fig-tracing-curves",
  "fig-peak-layers",
  "fig-r2-bars",
  "fig-layer-curves",
  "fig-scatter-0",
  "fig-scatter-3",
  "fig-selection",
  "fig-selection-runtime",
  "fig-mass-editing",
  "fig-window-r2",
  "fig-essence",
];

function report(...args: string[]): Promise<ScriptRun> {
  return runScript("experiments/commands/report.ts", ...args);
}

/** The HTML of the element with this id, from its opening tag to the matching closing tag. */
function element(html: string, id: string): string {
  const start = html.search(new RegExp(`<(table|figure|p) id="${id}"`));
  assert.ok(start >= 0, `no element with id ${id}`);
  const tag = /^<(\w+)/.exec(html.slice(start))![1];
  return html.slice(start, html.indexOf(`</${tag}>`, start) + tag.length + 3);
}

/** The text of each cell of a table's body rows. */
function bodyRows(tableHtml: string): string[][] {
  const body = tableHtml.slice(tableHtml.indexOf("<tbody>"), tableHtml.indexOf("</tbody>"));
  return body.split("<tr>").slice(1).map((row) =>
    [...row.matchAll(/<td[^>]*>(.*?)<\/td>/g)].map((m) => m[1])
  );
}

Deno.test("deno task report: every table and figure, cells that match the analysis, no network, escaped text", async () => {
  const r = await report(fullDb);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /study\.html: report of sweep "study" \(160 edits, 30 traces\)/);
  const html = await Deno.readTextFile(`${dir}/study.html`);
  for (const id of TABLES) {
    assert.equal(html.split(`id="${id}"`).length, 2, `${id} appears once`);
    assert.match(element(html, id), new RegExp(`^<table id="${id}">`), `${id} is a table`);
  }
  for (const id of FIGURES) {
    assert.match(element(html, id), /^<figure id=.*<svg /s, `${id} is a figure with SVG`);
  }
  // Nothing is missing but the robustness table without no-op cells (no method and layer of these edits
  // has only no-ops: tested with some below) and the zsRE table (these facts are CounterFact records),
  // each saying why.
  assert.deepEqual(
    [...html.matchAll(/<p id="([^"]*)" class="missing">/g)].map((m) => m[1]),
    ["table-without-noop-cells", "table-zsre"],
  );
  assert.match(
    element(html, "table-zsre"),
    /the sweep&#39;s facts are not zsRE records \(run it with --dataset/,
  );
  assert.equal(element(html, "fig-heatmaps").split("<svg ").length - 1, 3, "3 heatmaps");
  assert.equal(element(html, "fig-tracing-curves").split("<svg ").length - 1, 3, "a curve chart per kind");
  assert.equal(html.split("<svg ").length, html.split("</svg>").length, "every SVG is closed");

  // Self-contained: no scripts, links, external images or fonts; the only URL is the SVG namespace.
  assert.ok(!/<script|<link|<img|<iframe|@import|url\(|src=|href=/i.test(html));
  assert.deepEqual([...new Set(html.match(/https?:\/\/[^"' )]+/g))], ["http://www.w3.org/2000/svg"]);
  assert.ok(!html.includes("<b>Ann"), "the subject is escaped");
  assert.ok(html.includes("&lt;b&gt;Ann &amp; &quot;Bo&quot;&lt;/b&gt;"));

  // Table 3 holds r2Table's numbers, in Hase et al.'s layout (problem, method, Layer, Trace, Both, Diff, p).
  const store = ResultStore.open(fullDb);
  const data = loadSweep(store.results());
  store.close();
  const expected = r2Table(data, { metric: "rewrite" });
  const rows = bodyRows(element(html, "table-hase-3"));
  assert.equal(rows.length, PROBLEMS.length * METHODS.length);
  // Each R² cell: the value over its 95% interval.
  const withCI = (x: number, ci: { lower: number; upper: number }) =>
    `${x.toFixed(3)}<br><span class="ci">[${ci.lower.toFixed(3)}, ${ci.upper.toFixed(3)}]</span>`;
  const e = expected[0];
  assert.deepEqual(rows[0].slice(0, 6), [
    "error-injection",
    "ROME (1 layer)",
    withCI(e.layer, e.ci.layer),
    withCI(e.trace, e.ci.trace),
    withCI(e.both, e.ci.both),
    withCI(e.diff, e.ci.diff),
  ]);
  assert.deepEqual(rows[0].slice(6, 10), [
    `${e.adjusted.layer.toFixed(3)} / ${e.adjusted.both.toFixed(3)}`,
    withCI(e.f2, e.ci.f2),
    formatP(e.pAdjusted),
    e.verdict,
  ]);
  assert.match(rows[0][10], /^40 \(10 facts\), 4 no-op/);
  assert.equal(rows[1][0], "MEMIT (3 layers)", "the problem cell spans its methods");
  assert.ok(expected[0].layer > 0.9 && expected[0].trace < 0.2, "the synthetic layer effect dominates");
  assert.match(
    element(html, "headline"),
    /rome error-injection \(40 edits of 10 facts\): the edit layer explains 9\d\.\d% \[9\d\.\d, (9\d\.\d|100\.0)\]/,
  );
  // The summary: findings and caveats computed from this sweep, the verdict rule stated once.
  const summary = html.slice(html.indexOf('<section id="summary">'), html.indexOf("</section>"));
  assert.match(summary, /<h2>Summary and caveats<\/h2>/);
  assert.match(summary, /results fingerprint<\/dt><dd>sha256 [0-9a-f]{64}/);
  assert.match(summary, /<ul id="findings"><li>The edit layer explains more .* in \d of 4 conditions/);
  // Essence and fluency per method over layers, from the 5 measured facts (syntheticEssence and
  // syntheticFluency rise with the layer), with the unedited model's fluency.
  assert.match(
    summary,
    /<li>Essence \(Hase et al\.: [^<]*\), error-injection, lowest to highest mean over layers: rome 0\.64 \[[\d.]+, [\d.]+\] at layer 0 to 0\.94 \[[\d.]+, [\d.]+\] at layer 3; memit 0\.64 /,
  );
  assert.match(
    summary,
    /<li>Fluency \(ROME&#39;s n-gram entropy [^<]*\), error-injection, lowest to highest mean over layers: rome 4\.44 \[4\.4\d, 4\.4\d\] at layer 0 to 4\.59 \[[\d.]+, [\d.]+\] at layer 3; memit 4\.44 \[[^<]*; the unedited model 4\.60 \[4\.60, 4\.60\] \(5 facts\)\.<\/li>/,
  );
  // One no-op caveat over every condition, with each condition's count.
  assert.match(
    summary,
    /<ul id="caveats"><li>No-op edits: 16 of 160 edits left p\(target\) unchanged \(\|Δp\| ≤ 1e-7\); error-injection rome \(4\), error-injection memit \(4\), fact-forcing rome \(4\), fact-forcing memit \(4\)\. /,
  );
  assert.equal(summary.split("No-op edits").length, 2, "one no-op caveat");
  assert.match(summary, /Small sample: as few as 8 test facts per condition \(proxy set: 2 facts\)/);
  assert.equal(html.split("Holm-corrected within its family").length, 2, "the rule is stated once");

  // The Golden Layers paper's table 1: sample-wise optimal, golden layer (layer 1 is best on average), significance.
  const golden = bodyRows(element(html, "table-golden"));
  assert.equal(golden.length, METHODS.length * 3);
  assert.match(golden[1][1], /^\d\.\d{3}±\d\.\d{3} \(layer 1\)$/);
  assert.match(
    golden[2][1],
    /^\d\.\d{3} \[-?\d\.\d{3}, \d\.\d{3}\], d_z \S+, Holm p \S+: (effect|no effect)$/,
  );
  // The Golden Layers paper's table 2 and Chun & Hur's table 1 name the strategies and their layers.
  const selection = element(html, "table-selection-004");
  for (
    const name of [
      "causal tracing (CMA)",
      "integrated gradients",
      "LGA",
      "brute force on the proxy set",
      "each fact&#39;s tracing peak",
    ]
  ) {
    assert.ok(selection.includes(name), `table-selection-004 lists ${name}`);
  }
  // The standard metrics at the proxy facts' golden layer (layer 1: the synthetic scores peak there),
  // over the 8 test facts; portability has no prompts.
  const counterfact = bodyRows(element(html, "table-counterfact"));
  assert.equal(counterfact.length, METHODS.length, "error injection only");
  assert.deepEqual(counterfact[0].slice(0, 3), ["error-injection", "ROME (1 layer)", "1"]);
  assert.match(counterfact[0][3], /^1\.000<br>/, "ES: every rewrite at layer 1 is above 0.5");
  assert.match(counterfact[0][12], /^n\/a<br>/, "no portability prompts");
  assert.match(counterfact[0][13], /^n\/a<br>/, "no specificity stored in these records");
  // ROME's fluency at that layer over the 4 measured test facts (the even ones: 2, 4, 6, 8), and the
  // unedited model's.
  const fluency = [2, 4, 6, 8].reduce((sum, f) => sum + syntheticFluency(f, 1), 0) / 4;
  assert.match(counterfact[0][14], new RegExp(`^${fluency.toFixed(3)}<br>`));
  assert.match(counterfact[0][15], /^4\.600<br>/);
  assert.equal(counterfact[0][16], "8 (fluency: 4)");
  // Hase et al.'s essence figure: essence, overall and overall with essence by layer, per problem, from the
  // 5 measured facts (the analysis' curves are the stored values' means).
  const essence = element(html, "fig-essence");
  assert.equal(essence.split("<svg ").length - 1, 3 * PROBLEMS.length);
  for (const title of ["Essence score", "Overall score", "Overall + essence score"]) {
    assert.ok(essence.includes(`error-injection: ${title}`), title);
  }
  assert.match(
    essence,
    /Essence measured on 80 and fluency on 80 of 160 edits \(5 facts: 1 in 2 of the seeded sample, .*5 samples of 20 new tokens/,
  );
  const curves = layerCurves(data, "essence").filter((c) => c.problem === "error-injection");
  for (const c of curves) {
    c.layers.forEach((l, i) => {
      const expected = [0, 2, 4, 6, 8].reduce((sum, f) => sum + syntheticEssence(f, l), 0) / 5;
      assert.ok(
        Math.abs(c.mean[i] - expected) < 1e-12,
        `${c.method} layer ${l}: ${c.mean[i]} vs ${expected}`,
      );
      assert.equal(c.n[i], 5);
    });
  }
  assert.match(summary, /essence and fluency<\/dt><dd>Essence measured on 80 and fluency on 80 of 160 edits/);
  // The mass-editing table: one row per batch size, means over the facts edited at once.
  const mass = bodyRows(element(html, "table-mass-editing"));
  assert.deepEqual(mass.map((r) => [r[0], r[1], r[2].split("<br>")[0], r[5]]), [
    ["memit", "1", "0.880", "2.00"],
    ["memit", "8", (0.74 + 0.035).toFixed(3), "16.00"],
  ]);
  // The window study: per window its mean peak effect, and r2Table's numbers with that window's effects
  // (on the 4-layer model, the paper's windows 1, 3, 5 are 1 layer and 10 is 1 too; the synthetic window 2
  // is none of them), Holm-corrected over the whole table.
  const study = windowStudy(data, { metric: "rewrite" });
  const effects = bodyRows(element(html, "table-window-effects"));
  assert.deepEqual(effects.map((r) => r.slice(0, 3)), [
    ["1 layer (paper 1, 3, 5, 10)", "causal-tracing", "10"],
    ["2 layers", "tracing-window:2", "10"],
  ]);
  assert.equal(effects[1][3], withCI(study.windows[1].peak.estimate, study.windows[1].peak));
  // Where the facts peak (fact f peaks at layer f mod 4 with window 1).
  assert.equal(effects[0][4], "3 · 3 · 2 · 2");
  assert.equal(effects[1][4], study.windows[1].peakLayers.join(" · "));
  assert.ok(study.windows[1].peak.estimate > study.windows[0].peak.estimate, "wider windows, larger peaks");
  const windowRows = bodyRows(element(html, "table-window"));
  assert.equal(windowRows.length, PROBLEMS.length * METHODS.length * 2);
  const w2 = study.rows.find((r) =>
    r.window === 2 && r.problem === "error-injection" && r.method === "rome"
  )!;
  assert.deepEqual(windowRows[1].slice(0, 5), [
    "2 layers",
    withCI(w2.layer, w2.ci.layer),
    withCI(w2.trace, w2.ci.trace),
    withCI(w2.both, w2.ci.both),
    withCI(w2.diff, w2.ci.diff),
  ]);
  assert.equal(windowRows[1][7], formatP(w2.pAdjusted));
  assert.deepEqual(windowRows[0].slice(0, 3), [
    "error-injection",
    "ROME (1 layer)",
    "1 layer (paper 1, 3, 5, 10)",
  ]);
  assert.match(element(html, "table-window"), /round\(w × 4 \/ 28\)\) .*layers: 1, 3, 5, 10 → 1\./);
  // Its chart: two bar charts (trace R², Both − Layer), a bar per window in each (problem, method) group.
  assert.equal(element(html, "fig-window-r2").split("<svg ").length - 1, 2);
  const seed000 = bodyRows(element(html, "table-selection-000"));
  assert.deepEqual(seed000.map((r) => [r[0], r[1]]), [["Attribution score (IG)", "3"], [
    "Causal tracing",
    "0",
  ]]);
});

Deno.test("report: on zsRE facts, the zsRE table names MEMIT's metrics, with the standard metrics' numbers", async () => {
  const db = `${dir}/zsre.db`;
  writeStore(
    db,
    syntheticRecords({ traces: false, zsre: true }).filter((r) => r.localization === "layer-grid"),
  );
  const r = await report(db, "--out", `${dir}/zsre.html`);
  assert.equal(r.code, 0, r.stderr);
  const html = await Deno.readTextFile(`${dir}/zsre.html`);
  const zsre = element(html, "table-zsre");
  assert.match(zsre, /^<table id="table-zsre">/);
  assert.match(
    zsre,
    /<th>Efficacy<\/th><th>Paraphrase<\/th><th>Specificity<\/th><th>Locality \(EasyEdit\)<\/th><th>n facts<\/th>/,
  );
  const store = ResultStore.open(db);
  const data = loadSweep(store.results());
  store.close();
  const expected = standardTable(data);
  const rows = bodyRows(zsre);
  assert.equal(rows.length, METHODS.length, "error injection only");
  const cell = (ci: { estimate: number; lower: number; upper: number }) =>
    `${ci.estimate.toFixed(3)}<br><span class="ci">[${ci.lower.toFixed(3)}, ${ci.upper.toFixed(3)}]</span>`;
  for (const [i, e] of expected.entries()) {
    assert.deepEqual(rows[i], [
      "error-injection",
      e.method === "memit" ? "MEMIT (3 layers)" : "ROME (1 layer)",
      "1",
      cell(e.metrics.reliability),
      cell(e.metrics.generalization),
      cell(e.metrics.specificity),
      cell(e.metrics.locality),
      "8",
    ]);
  }
  // Specificity: the mean of the 8 test facts' (2..9) stored values.
  assert.equal(expected[0].metrics.specificity.estimate.toFixed(4), (0.25 + 0.01 * 5.5).toFixed(4));
});

Deno.test("report: a sweep without traces or selections still names every table and figure", async () => {
  const db = `${dir}/edits-only.db`;
  writeStore(db, syntheticRecords({ traces: false }).filter((r) => r.localization === "layer-grid"));
  const r = await report(db, "--out", `${dir}/edits-only.html`);
  assert.equal(r.code, 0, r.stderr);
  const html = await Deno.readTextFile(`${dir}/edits-only.html`);
  for (const id of [...TABLES, ...FIGURES.filter((f) => !f.startsWith("fig-scatter"))]) {
    assert.ok(html.includes(`id="${id}"`), `${id} is named`);
  }
  assert.match(element(html, "table-hase-1"), /Table not available: the sweep has no causal-tracing records/);
  assert.match(element(html, "fig-layer-curves"), /^<figure/, "edits alone still give the layer curves");
  // A store from before essence and fluency were recorded still reports, saying they were not measured.
  assert.match(
    element(html, "fig-essence"),
    /Figure not available: Essence and fluency: not measured \(the store&#39;s edit records predate them\)/,
  );
  const counterfact = bodyRows(element(html, "table-counterfact"));
  assert.deepEqual(
    counterfact.map((r) => r.slice(14)),
    METHODS.map(() => ["not measured", "not measured", "8"]),
  );
  // Without traces there are no regressions to report, but essence and fluency still say where they stand.
  assert.match(
    html,
    /<ul id="findings"><li>No condition has enough data[^]*<li>Fluency \(ROME&#39;s n-gram entropy [^<]*\): not measured\.<\/li>/,
  );
  // The edit tables hold the edits' numbers, not only a table: the same golden-layer table as the full
  // sweep (its edit records are the same), with layer 1 (best on average by construction) as golden layer.
  const golden = bodyRows(element(html, "table-golden"));
  assert.equal(golden.length, METHODS.length * 3);
  for (let m = 0; m < METHODS.length; m++) {
    assert.match(golden[3 * m + 1][1], /^\d\.\d{3}±\d\.\d{3} \(layer 1\)$/);
  }
  assert.equal((await report(fullDb, "--out", `${dir}/full-for-edits.html`)).code, 0);
  const full = await Deno.readTextFile(`${dir}/full-for-edits.html`);
  assert.deepEqual(golden, bodyRows(element(full, "table-golden")));
});

Deno.test("report: the regressions again without the method-layer cells where every edit was a no-op", () => {
  // ROME's edits at the last layer (3) leave p(target) where it was, as on a real model.
  const records = syntheticRecords({ traces: true }).map((r) =>
    r.method === "rome" && r.layer === L - 1 && r.localization === "layer-grid"
      ? { ...r, metrics: { ...r.metrics, post: r.metrics.pre } }
      : r
  );
  const sweepOf = (name: string, records: ResultRecord[]) => {
    writeStore(`${dir}/${name}.db`, records);
    const store = ResultStore.open(`${dir}/${name}.db`);
    try {
      return loadSweep(store.results());
    } finally {
      store.close();
    }
  };
  const data = sweepOf("dead-cells", records);
  const html = renderReport(data);
  const robustness = element(html, "table-without-noop-cells");
  assert.match(robustness, /without the cells where every edit was a no-op \(rome at layer 3; intervals/);
  const rows = bodyRows(robustness);
  const expected = r2Table(withoutNoopCells(data), { metric: "rewrite" });
  assert.equal(rows.length, expected.length);
  // ROME's rows hold 3 layers of the 10 facts' edits, MEMIT's all 4; the numbers are the analysis's.
  assert.deepEqual(rows.map((r) => r.at(-1)!.split(" ")[0]), ["30", "40", "30", "40"]);
  // (Layer R² is the ninth cell from the end: the problem cell spans its rows.)
  assert.deepEqual(rows.map((r) => r.at(-9)!.split("<br>")[0]), expected.map((e) => e.layer.toFixed(3)));
  assert.match(html, /<li>Without the cells where every edit was a no-op \(rome at layer 3\)/);
  assert.match(
    html,
    /every edit of rome at layer 3 was one \(each of these edits reaches the model&#39;s last/,
  );
  // Without such cells the table says why it is not there.
  assert.match(
    element(
      renderReport(sweepOf("live-cells", syntheticRecords({ traces: true }))),
      "table-without-noop-cells",
    ),
    /^<p id="table-without-noop-cells" class="missing">Table not available: no method and layer has only no-op edits/,
  );
});

Deno.test("report: how far the run got through its plan, an incomplete run's caveat first", () => {
  const store = ResultStore.open(fullDb);
  const data = loadSweep(store.results());
  store.close();
  const facts = new Set(data.edits.map((e) => e.fact)).size;
  const proxy = new Set(data.edits.filter((e) => e.split === "proxy").map((e) => e.fact)).size;
  assert.ok(proxy > 0 && proxy < facts, "the synthetic sweep has proxy and test facts");
  const meta = (html: string) => /<dt>run<\/dt><dd>([^<]*)<\/dd>/.exec(html)?.[1]?.replaceAll("&#39;", "'");
  const caveatItems = (html: string) => {
    const list = html.slice(
      html.indexOf('<ul id="caveats">'),
      html.indexOf("</ul>", html.indexOf('<ul id="caveats">')),
    );
    return [...list.matchAll(/<li>([^<]*)<\/li>/g)].map((m) => m[1]);
  };

  // The budget ran out with 6 more test facts and 1 more proxy fact planned.
  const partial = renderReport(data, { plan: { facts: facts + 7, proxyFacts: proxy + 1, complete: false } });
  const done = `${facts} of the ${facts + 7} facts the plan edits (${proxy} of ${proxy + 1} proxy, ` +
    `${facts - proxy} of ${facts + 6 - proxy} test facts)`;
  assert.equal(meta(partial), `incomplete: results for ${done}; the time budget ran out`);
  assert.equal(
    caveatItems(partial)[0],
    `Incomplete run: results for ${done}, as the time budget ran out. Every figure and test here is of the ` +
      `facts done so far; run the same command again to continue.`,
  );
  // Complete: said in the summary, no such caveat; without a plan (deno task report) neither.
  const complete = renderReport(data, { plan: { facts, proxyFacts: proxy, complete: true } });
  assert.equal(
    meta(complete),
    `complete: the plan's ${facts} edited facts (${proxy} proxy, ${facts - proxy} test)`,
  );
  assert.deepEqual(caveatItems(complete), caveatItems(renderReport(data)));
  assert.ok(!caveatItems(complete).some((c) => c.startsWith("Incomplete run")));
  assert.equal(meta(renderReport(data)), undefined);
});

Deno.test("report: FT-L on 1 and on 5 layers are two methods, named as Hase et al. name them", async () => {
  const db = `${dir}/ft.db`;
  writeStore(db, syntheticRecords({ traces: false, methods: ["ft", "ft-5"] }));
  const r = await report(db, "--out", `${dir}/ft.html`);
  assert.equal(r.code, 0, r.stderr);
  const html = await Deno.readTextFile(`${dir}/ft.html`);
  // This 4-layer model clips FT-5's window to at most 4 layers; the label says what was edited.
  const labels = ["FT-L (1 layer)", "FT-L (4 layers)"];
  assert.deepEqual(
    bodyRows(element(html, "table-golden")).filter((row) => row.length === 4).map((r) => r[0]),
    labels,
  );
  assert.deepEqual(bodyRows(element(html, "table-counterfact")).map((row) => row[1]), labels);
  for (const label of labels) {
    assert.equal(
      element(html, "fig-layer-curves").split(`>${label}<`).length - 1,
      2 * 3,
      `${label} in each chart`,
    );
  }
});

Deno.test("report: clear errors for a missing store or an ambiguous sweep", async () => {
  const r = await report(`${dir}/nope.db`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /report: .*nope\.db: no results store there/);
  await assert.rejects(Deno.stat(`${dir}/nope.db`), Deno.errors.NotFound, "no empty store is created");
  const db = `${dir}/two.db`;
  const records = syntheticRecords({ traces: false }).slice(0, 4);
  writeStore(db, [...records, ...records.map((x) => ({ ...x, sweep: "other" }))]);
  const two = await report(db);
  assert.match(two.stderr, /several sweeps \(study, other\); name one/);
  assert.equal((await report(db, "--sweep", "other")).code, 0);
});

const CHROMIUM = "/usr/bin/chromium";

Deno.test("report opens in headless Chromium with the network blocked: DOM and screenshot", async () => {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    assert.fail(
      `${CHROMIUM} is missing; install it with: apt-get install -y --no-install-recommends chromium`,
    );
  }
  const html = `${dir}/study.html`;
  await Deno.stat(html); // written by the first test
  const shot = `${dir}/study.png`;
  const profile = await Deno.makeTempDir();
  const out = await new Deno.Command(CHROMIUM, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      "--host-resolver-rules=MAP * ~NOTFOUND",
      "--window-size=1280,2400",
      `--screenshot=${shot}`,
      "--dump-dom",
      `file://${html}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(profile, { recursive: true });
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const dom = new TextDecoder().decode(out.stdout);
  for (const id of [...TABLES, ...FIGURES]) {
    assert.ok(dom.includes(`id="${id}"`), `the browser's DOM has ${id}`);
  }
  assert.ok((dom.match(/<svg /g) ?? []).length >= 20, "the SVG figures are parsed into the DOM");
  // Readable, honest axes in what the browser parsed: the line charts' x axes are layers, so integer
  // ticks only; value axes start at 0 (every chart here shows scores, effects or counts); no tick label
  // is a floating-point residue such as 3e-18.
  const tickTexts = (svg: string, cls: string) =>
    [...svg.matchAll(new RegExp(`class="${cls}"[^>]*>([^<]*)<`, "g"))].map((m) => m[1]);
  const svgs = dom.match(/<svg [\s\S]*?<\/svg>/g)!;
  let charts = 0;
  for (const svg of svgs) {
    const xs = tickTexts(svg, "xtick"), ys = tickTexts(svg, "ytick");
    for (const t of xs) assert.match(t, /^\d+$/, `integer layer tick, got ${t}`);
    for (const t of ys) assert.match(t, /^-?\d+(\.\d{1,3})?$/, `readable value tick, got ${t}`);
    if (ys.length > 0) {
      charts++;
      assert.ok(ys.includes("0"), `a value axis from 0: ${ys.join(" ")}`);
    }
  }
  assert.ok(charts >= 10, `${charts} charts with value axes`);
  const png = await Deno.readFile(shot);
  assert.deepEqual([...png.slice(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], "a PNG screenshot");
  assert.ok(png.length > 50_000, `the screenshot has content (${png.length} bytes)`);
});
