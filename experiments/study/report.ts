// ./locus task report RESULTS: one self-contained HTML page (inline SVG and CSS, nothing fetched) with
// the seeds' tables and figures computed from a sweep's results store (experiments/study/sweep.ts).
//
//   ./locus task report runs/sweep.db [--out runs/sweep.html] [--sweep NAME] [--heatmaps 3]
//
// Sections, each table and figure with a stable id (tests/report_test.ts checks them all):
//   summary       what was run, on what, and the headline (layer vs tracing effect)
//   tracing       fig-heatmaps (per-fact causal traces), fig-tracing-curves (ROME's average curves
//                 by token group), fig-peak-layers (where facts peak: Hase et al. figure 1)
//   localization  table-hase-1 (R^2 of ROME's rewrite score, Hase et al. table 1), table-hase-2 (the
//                 concentrated-effects subset), table-hase-3..6 (rewrite, paraphrase, neighborhood,
//                 average score by problem and method, with Diff and F-test p), fig-r2-bars (figure 6),
//                 table-zeroing and table-last-subject (robustness: other localizations)
//   layers        fig-layer-curves (scores by edit layer, figure 7), table-correlations and
//                 fig-scatter-* (score vs tracing effect at each layer, figures 4 and 15)
//   golden        table-golden (Golden Layers table 1), table-proxy-test (Golden Layers tables 3-8),
//                 table-selection-004 (Golden Layers table 2), table-selection-000 (Chun & Hur table 1),
//                 fig-selection (the strategies' per-layer scores, LGA with its fences)
import { parseArgs } from "node:util";
import {
  concentratedFacts,
  type CorrelationRow,
  type EffectOptions,
  formatP,
  goldenVsSampleWise,
  headline,
  layerCurves,
  loadSweep,
  type Metric,
  perLayerCorrelations,
  proxyVsTest,
  type R2Row,
  r2Table,
  selectionScores,
  STRATEGY_NAMES,
  type SweepData,
} from "./analysis.ts";
import { goldenLayers } from "../localization/attribution.ts";
import { layerCurvesSvg, lgaChartSvg } from "../pictures/attribution.ts";
import { barChartSvg, lineChart } from "../pictures/charts.ts";
import { averageCurvesSvg, heatmapSvg } from "../pictures/heatmap.ts";
import { writeAtomic } from "../../engine/files.ts";
import { ResultStore } from "./store.ts";
import { averageTraces } from "../localization/tracing.ts";
import { runMain } from "../../engine/main.ts";

// ------------------------------------------------------------------------------------------------
// HTML and SVG helpers

export function escapeHtml(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

/** A table cell: text (escaped), or { html } for trusted markup; span and class optional. */
type Cell = string | number | {
  text?: string;
  html?: string;
  colspan?: number;
  rowspan?: number;
  cls?: string;
};

/** Text cells that are not numbers ("0.947", "<1e-4", "n/a") are left-aligned labels. */
const isNumeric = (s: string) => /^[-+<]?\d|^n\/a$/.test(s);

function cellHtml(tag: "td" | "th", c: Cell): string {
  const o = typeof c === "object" ? c : { text: String(c) };
  const cls = o.cls ??
    (tag === "td" && o.html === undefined && !isNumeric(o.text ?? "") ? "label" : undefined);
  const attrs = [
    o.colspan ? ` colspan="${o.colspan}"` : "",
    o.rowspan ? ` rowspan="${o.rowspan}"` : "",
    cls ? ` class="${cls}"` : "",
  ].join("");
  return `<${tag}${attrs}>${o.html ?? escapeHtml(o.text ?? "")}</${tag}>`;
}

function table(id: string, caption: string, head: Cell[][], body: Cell[][]): string {
  // Wide tables scroll sideways inside the page instead of widening it.
  return [
    `<div class="wide">`,
    `<table id="${id}">`,
    `<caption>${escapeHtml(caption)}</caption>`,
    `<thead>${head.map((r) => `<tr>${r.map((c) => cellHtml("th", c)).join("")}</tr>`).join("")}</thead>`,
    `<tbody>${body.map((r) => `<tr>${r.map((c) => cellHtml("td", c)).join("")}</tr>`).join("\n")}</tbody>`,
    `</table>`,
    `</div>`,
  ].join("\n");
}

function figure(id: string, caption: string, svgs: string[]): string {
  return `<figure id="${id}">\n${svgs.join("\n")}\n<figcaption>${
    escapeHtml(caption)
  }</figcaption>\n</figure>`;
}

/** A paragraph saying why a table or figure is missing (so every id is always on the page). */
function missing(id: string, kind: "table" | "figure", why: string): string {
  return `<p id="${id}" class="missing">${kind === "table" ? "Table" : "Figure"} not available: ${
    escapeHtml(why)
  }</p>`;
}

const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");
const meanStd = (m: number, s: number) => `${f3(m)}±${Number.isFinite(s) ? s.toFixed(3) : "n/a"}`;

/**
 * Small scatter panels side by side, x and y in [0, 1] (values outside are clipped to the frame),
 * with the dashed red line y = x: where points would lie if the tracing effect were the score.
 */
export function scatterPanelsSvg(
  panels: { title: string; points: [number, number][] }[],
  o: { title: string; xLabel: string; yLabel: string },
): string {
  const size = 150, pad = 34, top = 44;
  const width = pad + panels.length * (size + pad), height = top + size + 46;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="10">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${escapeHtml(o.title)}</text>`,
  ];
  panels.forEach((p, k) => {
    const x0 = pad + k * (size + pad), y0 = top;
    const sx = (v: number) => x0 + Math.max(0, Math.min(1, v)) * size;
    const sy = (v: number) => y0 + size - Math.max(0, Math.min(1, v)) * size;
    parts.push(`<g class="panel">`);
    parts.push(`<text x="${x0 + size / 2}" y="${y0 - 6}" text-anchor="middle">${escapeHtml(p.title)}</text>`);
    parts.push(`<rect x="${x0}" y="${y0}" width="${size}" height="${size}" fill="none" stroke="#999"/>`);
    parts.push(
      `<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(1)}" y2="${
        sy(1)
      }" stroke="#d62728" stroke-dasharray="4 3"/>`,
    );
    for (const [x, y] of p.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      parts.push(
        `<circle class="point" cx="${sx(x).toFixed(1)}" cy="${
          sy(y).toFixed(1)
        }" r="2.2" fill="#1f77b4" fill-opacity="0.6"/>`,
      );
    }
    for (const v of [0, 0.5, 1]) {
      parts.push(`<text x="${sx(v)}" y="${y0 + size + 12}" text-anchor="middle">${v}</text>`);
      parts.push(`<text x="${x0 - 3}" y="${sy(v) + 3}" text-anchor="end">${v}</text>`);
    }
    parts.push(`</g>`);
  });
  parts.push(`<text x="${width / 2}" y="${height - 8}" text-anchor="middle">${escapeHtml(o.xLabel)}</text>`);
  parts.push(
    `<text transform="translate(10 ${top + size / 2}) rotate(-90)" text-anchor="middle">${
      escapeHtml(o.yLabel)
    }</text>`,
  );
  parts.push("</svg>");
  return parts.join("\n");
}

// ------------------------------------------------------------------------------------------------
// Sections

const METRIC_NAMES: Record<Metric, string> = {
  rewrite: "Rewrite",
  paraphrase: "Paraphrase",
  neighborhood: "Neighborhood",
  overall: "Overall",
  average: "Average",
};

const withLayer = (method: string, nLayers: number) =>
  `${method} (${nLayers} layer${nLayers === 1 ? "" : "s"})`;

/** Rows of Hase et al.'s tables 3-6: the problem cell spans its methods. */
function r2Body(rows: R2Row[], methodLabel: (m: string) => string): Cell[][] {
  const body: Cell[][] = [];
  for (const problem of [...new Set(rows.map((r) => r.problem))]) {
    const mine = rows.filter((r) => r.problem === problem);
    mine.forEach((r, i) => {
      const cells: Cell[] = [
        methodLabel(r.method),
        f3(r.layer),
        f3(r.trace),
        f3(r.both),
        f3(r.diff),
        formatP(r.p),
        {
          text: `${r.n}${r.dropped ? ` (${r.dropped} left out)` : ""}${r.note ? `; ${r.note}` : ""}`,
          cls: "note",
        },
      ];
      body.push(i === 0 ? [{ text: problem, rowspan: mine.length }, ...cells] : cells);
    });
  }
  return body;
}

const R2_HEAD: Cell[][] = [[
  "Editing Problem",
  "Method",
  "Layer",
  "Trace",
  "Both",
  "Diff",
  "p-value",
  "n (edits)",
]];

function localizationSection(data: SweepData, methodLabel: (m: string) => string): string {
  const parts: string[] = [
    `<section id="localization"><h2>Does localization inform editing? (Hase et al.)</h2>`,
  ];
  const rewrite = r2Table(data, { metric: "rewrite" });
  const hasTraces = data.traces.some((t) => t.localization === "causal-tracing");
  if (!hasTraces || rewrite.length === 0) {
    const why = hasTraces ? "no edit results" : "the sweep has no causal-tracing records";
    for (
      const id of [
        "table-hase-1",
        "table-hase-2",
        "table-hase-3",
        "table-hase-4",
        "table-hase-5",
        "table-hase-6",
      ]
    ) {
      parts.push(missing(id, "table", why));
    }
    parts.push(missing("fig-r2-bars", "figure", why));
  } else {
    const ei = rewrite.filter((r) => r.problem === "error-injection");
    const t1 = ei.length ? ei : rewrite.filter((r) => r.problem === rewrite[0].problem);
    parts.push(table(
      "table-hase-1",
      `Table 1: R² of regressions predicting the rewrite score (${t1[0].problem}) from the edit layer ` +
        `(categorical), the tracing effect at that layer, or both interacted.`,
      [["Method", "Layer", "Tracing Effect", "Both", "n (edits)"]],
      t1.map((r) => [methodLabel(r.method), f3(r.layer), f3(r.trace), f3(r.both), r.n]),
    ));
    const concentrated = concentratedFacts(data, { nLayer: Number(data.model.nLayer) || undefined });
    const t2 = r2Table(data, { metric: "rewrite", facts: concentrated }).filter((r) =>
      r.problem === t1[0].problem
    );
    parts.push(
      concentrated.size === 0
        ? missing("table-hase-2", "table", "no fact has concentrated tracing effects")
        : table(
          "table-hase-2",
          `Table 2: the same regressions on the ${concentrated.size} facts whose tracing effects are concentrated ` +
            `(few layers reach half of the peak effect).`,
          [["Method", "Layer", "Tracing Effect", "Both", "n (edits)"]],
          t2.map((r) => [methodLabel(r.method), f3(r.layer), f3(r.trace), f3(r.both), r.n]),
        ),
    );
    const captions: [string, Metric, string][] = [
      ["table-hase-3", "rewrite", "Table 3: rewrite score"],
      ["table-hase-4", "paraphrase", "Table 4: paraphrase score"],
      ["table-hase-5", "neighborhood", "Table 5: neighborhood score"],
      [
        "table-hase-6",
        "average",
        "Table 6: overall score (raw average of rewrite, paraphrase and neighborhood)",
      ],
    ];
    for (const [id, metric, title] of captions) {
      const rows = metric === "rewrite" ? rewrite : r2Table(data, { metric });
      parts.push(table(
        id,
        `${title}: R² from the edit layer, the tracing effect, and both; Diff = Both − Layer; p-value of the ` +
          `F-test of Both against Layer.`,
        R2_HEAD,
        r2Body(rows, methodLabel),
      ));
    }
    parts.push(figure(
      "fig-r2-bars",
      "R² of the layer-only regression and of the layer + tracing regression, per editing problem and method " +
        "(Hase et al. figure 6). The gap between the bars is what the tracing effect adds.",
      [barChartSvg(
        rewrite.map((r) => ({
          label: methodLabel(r.method),
          section: r.problem,
          bars: [{ name: "Layer", value: r.layer }, { name: "Layer + tracing effect", value: r.both }],
        })),
        { title: "Rewrite score: R² by predictor", yLabel: "R²", max: 1 },
      )],
    ));
  }
  const robustness: [string, EffectOptions, string][] = [
    ["table-zeroing", { localization: "zeroing" }, "representation zeroing (the fraction of p removed)"],
    ["table-last-subject", { site: "last-subject" }, "the causal-tracing effect at the last subject token"],
  ];
  for (const [id, effect, name] of robustness) {
    const present = data.traces.some((t) => t.localization === (effect.localization ?? "causal-tracing"));
    parts.push(
      present && data.edits.length
        ? table(
          id,
          `Robustness: rewrite-score R² with ${name} as the localization effect.`,
          R2_HEAD,
          r2Body(r2Table(data, { metric: "rewrite", ...effect }), methodLabel),
        )
        : missing(id, "table", `the sweep has no ${effect.localization ?? "causal-tracing"} records`),
    );
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

function tracingSection(data: SweepData, heatmaps: number): string {
  const parts = [`<section id="tracing"><h2>Where the facts are: causal tracing</h2>`];
  const traces = data.traces.filter((t) => t.localization === "causal-tracing");
  if (traces.length === 0) {
    parts.push(missing("fig-heatmaps", "figure", "the sweep has no causal-tracing records"));
    parts.push(missing("fig-tracing-curves", "figure", "the sweep has no causal-tracing records"));
    parts.push(missing("fig-peak-layers", "figure", "the sweep has no causal-tracing records"));
    return parts.join("\n") + "\n</section>";
  }
  parts.push(figure(
    "fig-heatmaps",
    `Causal traces of ${
      Math.min(heatmaps, traces.length)
    } facts: each cell restores one state (token × layer) ` +
      `of the clean run into the run with the subject (*) noised; colour = indirect effect on p(true object).`,
    traces.slice(0, heatmaps).map((t) => heatmapSvg(t.trace)),
  ));
  let curves: string;
  try {
    curves = figure(
      "fig-tracing-curves",
      `Average indirect effect per layer by token group over ${traces.length} facts (ROME's figure).`,
      averageTraces(traces.map((t) => t.trace)).map(averageCurvesSvg),
    );
  } catch (e) {
    curves = missing("fig-tracing-curves", "figure", (e as Error).message);
  }
  parts.push(curves);
  const L = traces[0].effect.length;
  const counts = new Array(L).fill(0);
  for (const t of traces) {
    const finite = t.effect.map((e) => (Number.isFinite(e) ? e : -Infinity));
    counts[finite.indexOf(Math.max(...finite))]++;
  }
  parts.push(figure(
    "fig-peak-layers",
    "Where each fact's MLP tracing effect peaks (Hase et al. figure 1): many facts peak outside the layers " +
      "ROME edits.",
    [barChartSvg(counts.map((c, l) => ({ label: `layer ${l}`, bars: [{ name: "facts", value: c }] })), {
      title: `Layer of the peak tracing effect (${traces.length} facts)`,
      yLabel: "facts",
    })],
  ));
  parts.push(`</section>`);
  return parts.join("\n");
}

function layersSection(data: SweepData): string {
  const parts = [`<section id="layers"><h2>Edit success by layer</h2>`];
  if (data.edits.length === 0) {
    parts.push(missing("fig-layer-curves", "figure", "no edit results"));
    parts.push(missing("table-correlations", "table", "no edit results"));
    return parts.join("\n") + "\n</section>";
  }
  const svgs: string[] = [];
  for (const problem of data.problems) {
    for (const metric of ["rewrite", "paraphrase", "neighborhood"] as Metric[]) {
      const curves = layerCurves(data, metric).filter((c) => c.problem === problem);
      svgs.push(lineChart(
        curves.map((c) => ({
          name: c.method,
          points: c.layers.map((l, i) => [l, c.mean[i]] as [number, number]),
        })),
        {
          title: `${problem}: ${METRIC_NAMES[metric]} score`,
          xLabel: "edit layer",
          yLabel: "mean score",
          width: 420,
          height: 280,
        },
      ));
    }
  }
  parts.push(figure(
    "fig-layer-curves",
    "Mean rewrite, paraphrase and neighborhood scores by edit layer (Hase et al. figure 7), per editing problem.",
    svgs,
  ));
  const correlations = perLayerCorrelations(data);
  if (correlations.length === 0 || !data.traces.some((t) => t.localization === "causal-tracing")) {
    parts.push(missing("table-correlations", "table", "the sweep has no causal-tracing records"));
  } else {
    parts.push(correlationTable(data, correlations));
    for (const [k, { problem, method }] of pairs(data).entries()) {
      const effects = new Map(
        data.traces.filter((t) => t.localization === "causal-tracing").map((t) => [t.fact, t.effect]),
      );
      const panels = data.layers.map((layer) => {
        const rows = data.edits.filter((e) =>
          e.problem === problem && e.method === method && e.layer === layer
        );
        const r = correlations.find((c) => c.problem === problem && c.method === method && c.layer === layer);
        return {
          title: `layer ${layer}: r = ${r && Number.isFinite(r.r) ? r.r.toFixed(2) : "n/a"}`,
          points: rows.map((e) =>
            [effects.get(e.fact)?.[layer] ?? NaN, e.scores.rewrite] as [number, number]
          ),
        };
      });
      parts.push(figure(
        `fig-scatter-${k}`,
        `${method}, ${problem}: rewrite score vs tracing effect at the edited layer (Hase et al. figures 4 and 15). ` +
          `The dashed red line is a perfect relationship.`,
        [scatterPanelsSvg(panels, {
          title: `${method} · ${problem}: rewrite score by tracing effect`,
          xLabel: "tracing effect (fraction of p restored, max over tokens)",
          yLabel: "rewrite score",
        })],
      ));
    }
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

function pairs(data: SweepData): { problem: string; method: string }[] {
  return data.problems.flatMap((problem) =>
    data.methods.filter((method) => data.edits.some((e) => e.problem === problem && e.method === method))
      .map((method) => ({ problem, method }))
  );
}

function correlationTable(data: SweepData, rows: CorrelationRow[]): string {
  const body: Cell[][] = pairs(data).map(({ problem, method }) => [
    problem,
    method,
    ...data.layers.map((l) => {
      const r = rows.find((c) => c.problem === problem && c.method === method && c.layer === l)!;
      return Number.isFinite(r.r) ? `${r.r.toFixed(2)} (p ${formatP(r.p)})` : "n/a";
    }),
  ]);
  return table(
    "table-correlations",
    "Pearson correlation between the rewrite score and the tracing effect, at each edit layer.",
    [["Editing Problem", "Method", ...data.layers.map((l) => `layer ${l}`)]],
    body,
  );
}

function goldenSection(data: SweepData, methodLabel: (m: string) => string): string {
  const parts = [`<section id="golden"><h2>Golden layers and layer selection (seeds 000 and 004)</h2>`];
  const golden = goldenVsSampleWise(data, "rewrite");
  if (golden.length === 0) {
    parts.push(missing("table-golden", "table", "no fact has scores at every layer of the grid"));
  } else {
    const body: Cell[][] = [];
    for (const method of data.methods) {
      const mine = data.problems.map((p) => golden.find((g) => g.method === method && g.problem === p));
      if (!mine.some(Boolean)) continue;
      const row = (label: string, value: (g: typeof golden[number]) => string): Cell[] => [
        label,
        ...mine.map((g) => (g ? value(g) : "n/a")),
      ];
      body.push([
        { text: methodLabel(method), rowspan: 3 },
        ...row("Sample-Wise Optimal Layer", (g) => meanStd(g.optimal.mean, g.optimal.std)),
      ]);
      body.push(
        row("Golden Layer", (g) => `${meanStd(g.golden.mean, g.golden.std)} (layer ${g.goldenLayer})`),
      );
      body.push(row("Statistical Difference", (g) => `${g.different ? "Yes" : "No"} (p ${formatP(g.p)})`));
    }
    parts.push(table(
      "table-golden",
      "Rewrite score of each fact edited at its own best layer vs all facts at the golden layer (best on average); " +
        "paired t-test over facts, difference if p < 0.05 (Golden Layers table 1).",
      [["Method", "", ...data.problems]],
      body,
    ));
  }
  const metrics: Metric[] = ["rewrite", "paraphrase", "neighborhood", "overall"];
  const proxy = metrics.map((m) => proxyVsTest(data, m));
  if (proxy[0].length === 0) {
    parts.push(missing("table-proxy-test", "table", "the sweep needs edited proxy and test facts"));
  } else {
    const body: Cell[][] = [];
    for (const base of proxy[0]) {
      const find = (i: number) =>
        proxy[i].find((r) => r.problem === base.problem && r.method === base.method);
      const set = (label: string, pick: (r: typeof base) => [number, number]): Cell[] => [
        label,
        ...metrics.flatMap((_, i) => {
          const r = find(i);
          return r ? [String(pick(r)[0]), f3(pick(r)[1])] : ["n/a", "n/a"];
        }),
      ];
      body.push([
        { text: base.problem, rowspan: 2 },
        { text: methodLabel(base.method), rowspan: 2 },
        ...set(`Proxy (${base.proxyFacts})`, (r) => [r.proxyLayer, r.proxyLayerTestScore]),
      ]);
      body.push(set(`Test (${base.testFacts})`, (r) => [r.testLayer, r.testLayerTestScore]));
    }
    parts.push(table(
      "table-proxy-test",
      "Golden layers found on the proxy facts vs on the test facts; both layers are scored on the test facts " +
        "(Golden Layers tables 3-8).",
      [
        [
          { text: "Editing Problem", rowspan: 2 },
          { text: "Method", rowspan: 2 },
          { text: "Set", rowspan: 2 },
          ...metrics.map((m) => ({ text: METRIC_NAMES[m], colspan: 2 })),
        ],
        metrics.flatMap(() => ["Layer", "Score"]),
      ],
      body,
    ));
  }
  const selections = selectionScores(data);
  const strategies = [...new Set(selections.map((s) => s.strategy))];
  const label = (s: string) => STRATEGY_NAMES[s] ?? s;
  const layerText = (s: typeof selections[number]) => (s.layer === null ? "per fact" : String(s.layer));
  if (selections.length === 0 || data.selections.length === 0) {
    parts.push(missing("table-selection-004", "table", "the sweep has no layer-selection records"));
    parts.push(missing("table-selection-000", "table", "the sweep has no layer-selection records"));
    parts.push(missing("fig-selection", "figure", "the sweep has no layer-selection records"));
  } else {
    const body: Cell[][] = [];
    for (const { problem, method } of pairs(data)) {
      const mine = strategies.map((st) =>
        selections.find((s) => s.strategy === st && s.problem === problem && s.method === method)!
      )
        .filter(Boolean);
      mine.forEach((s, i) => {
        const cells: Cell[] = [
          label(s.strategy),
          layerText(s),
          ...metrics.map((m) => f3(s.means[m])),
          { text: `${s.n}${s.note ? `; ${s.note}` : ""}`, cls: "note" },
        ];
        body.push(
          i === 0
            ? [
              { text: problem, rowspan: mine.length },
              { text: methodLabel(method), rowspan: mine.length },
              ...cells,
            ]
            : cells,
        );
      });
    }
    parts.push(table(
      "table-selection-004",
      "Mean test-fact scores when editing at the layer each strategy chose on the proxy facts (Golden Layers table 2; " +
        "CMA = causal tracing).",
      [[
        "Editing Problem",
        "Edit",
        "Selection",
        "Layer",
        "Rewrite (↑)",
        "Paraphrase (↑)",
        "Neighborhood (↑)",
        "Overall (↑)",
        "n (facts)",
      ]],
      body,
    ));
    const ei = data.problems.includes("error-injection") ? "error-injection" : data.problems[0];
    const shown = ["integrated-gradients", "causal-tracing"].filter((s) => strategies.includes(s));
    const methods = data.methods.filter((m) => selections.some((s) => s.method === m && s.problem === ei));
    parts.push(table(
      "table-selection-000",
      `${ei}: editing at the layer chosen by integrated gradients ("attribution score") vs causal tracing ` +
        `(Chun & Hur table 1; rewrite ≈ reliability, paraphrase ≈ generalization, neighborhood ≈ locality).`,
      [
        [{ text: "Selection", rowspan: 2 }, ...methods.map((m) => ({ text: methodLabel(m), colspan: 5 }))],
        methods.flatMap(() => ["Layer", "Rewrite", "Paraphrase", "Neighborhood", "Overall"]),
      ],
      shown.map((st) => [
        st === "integrated-gradients" ? "Attribution score (IG)" : "Causal tracing",
        ...methods.flatMap((m) => {
          const s = selections.find((x) => x.strategy === st && x.method === m && x.problem === ei)!;
          return [layerText(s), ...metrics.map((k) => f3(s.means[k]))];
        }),
      ]),
    ));
    const svgs = data.selections.map((s) =>
      s.selector === "lga" && s.scores.every(Number.isFinite)
        ? lgaChartSvg({ scores: s.scores, selection: goldenLayers(s.scores), params: ["c_proj"] })
        : layerCurvesSvg(
          [{ name: label(s.selector), values: s.scores }],
          `${label(s.selector)} on ${s.proxy.length} proxy facts: chose layer ${s.layers.join(", ")} (${
            s.seconds.toFixed(1)
          } s)`,
          "score",
        )
    );
    parts.push(figure("fig-selection", "Per-layer scores each layer-selection strategy chose from.", svgs));
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

const STYLE = `
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1.2em 0; font-size: 13px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4em; max-width: 1000px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; text-align: center; } td.label { text-align: left; }
td.note { color: #777; font-size: 11px; text-align: left; }
figure { margin: 1.5em 0; overflow-x: auto; } figure svg { margin: 4px; vertical-align: top; }
figcaption { font-size: 13px; color: #444; max-width: 1000px; }
.missing { color: #a00; font-style: italic; }
div.wide { overflow-x: auto; }
.headline { background: #f6f8ff; border-left: 4px solid #36c; padding: .6em 1em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; font-size: 14px; }
dl.meta dt { font-weight: 600; }`;

export interface ReportOptions {
  title?: string;
  /** Per-fact heatmaps shown (default 3). */
  heatmaps?: number;
}

/** The whole page. */
export function renderReport(data: SweepData, o: ReportOptions = {}): string {
  const nLayer = Number(data.model.nLayer);
  // "memit (3 layers)": the widest edit of the method (windows are clipped at the first and last layers).
  const methodLabel = (m: string) =>
    withLayer(m, Math.max(1, ...data.edits.filter((e) => e.method === m).map((e) => e.editedLayers.length)));
  const rewrite = r2Table(data, { metric: "rewrite" });
  const main = rewrite.find((r) => r.problem === "error-injection" && r.method === "rome") ?? rewrite[0];
  const facts = new Set(data.edits.map((e) => e.fact));
  const proxyFacts = new Set(data.edits.filter((e) => e.split === "proxy").map((e) => e.fact));
  const title = o.title ?? `Locus sweep "${data.sweep}": does localization inform editing?`;
  const meta: [string, string][] = [
    [
      "model",
      `${
        data.model.name ?? "?"
      } (${nLayer} layers, d=${data.model.nEmbd}, vocabulary ${data.model.vocabSize})`,
    ],
    ["weights sha256", String(data.model.weightsSha256 ?? "?")],
    [
      "dataset",
      `${data.dataset.name ?? data.dataset.path ?? "?"} (sha256 ${
        String(data.dataset.sha256 ?? "?").slice(0, 12)
      }…)`,
    ],
    ["adapter", `${data.adapter.description ?? "?"}${data.adapter.isFallback ? " (software)" : ""}`],
    [
      "edits",
      `${data.edits.length} = ${facts.size} facts (${proxyFacts.size} proxy) × layers ${
        data.layers.join(", ")
      } × ${data.methods.join(", ")} × ${data.problems.length} problems`,
    ],
    [
      "localization records",
      `${data.traces.length} (${[...new Set(data.traces.map((t) => t.localization))].join(", ") || "none"})`,
    ],
    [
      "layer selections",
      data.selections.map((s) => `${STRATEGY_NAMES[s.selector] ?? s.selector} → layer ${s.layers.join(",")}`)
        .join("; ") || "none",
    ],
    [
      "skipped records",
      data.skipped.length
        ? `${data.skipped.length}: ${data.skipped.map((r) => `${r.record}: ${r.reason}`).join("; ")}`
        : "none",
    ],
  ];
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<section id="summary">
<dl class="meta">${meta.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("")}</dl>
<p id="headline" class="headline">${escapeHtml(main ? headline(main) : "No edit results yet.")}</p>
<p>Scores follow Hase et al.: rewrite = 1 − (1 − p<sub>post</sub>)/(1 − p<sub>pre</sub>) of the problem's target
(fact erasure: the share of p(true object) removed), paraphrase the same on paraphrases, neighborhood =
1 − |Δp| / (|p<sub>pre</sub> − ½| + ½) on other subjects; overall = their harmonic mean, average = their mean.
The tracing effect of an edit is the fact's fractional causal-tracing effect at the edited layer (MLP
outputs restored over a window, max over tokens).</p>
</section>
${tracingSection(data, o.heatmaps ?? 3)}
${localizationSection(data, methodLabel)}
${layersSection(data)}
${goldenSection(data, methodLabel)}
</body>
</html>
`;
}

// ------------------------------------------------------------------------------------------------
// Command line

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      sweep: { type: "string" },
      heatmaps: { type: "string", default: "3" },
      title: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help || positionals.length !== 1) {
    console.log(
      "usage: ./locus task report RESULTS.db [--out FILE.html] [--sweep NAME] [--heatmaps N] [--title TEXT]",
    );
    return values.help ? 0 : 2;
  }
  const path = positionals[0];
  // A report only reads: a mistyped path is an error, never a new empty store.
  const store = ResultStore.open(path, { create: false });
  let data: SweepData;
  try {
    data = loadSweep(store.results(), values.sweep);
  } finally {
    store.close();
  }
  const heatmaps = Number(values.heatmaps);
  if (!Number.isInteger(heatmaps) || heatmaps < 0) {
    throw new Error(`--heatmaps: expected an integer >= 0, got "${values.heatmaps}"`);
  }
  const out = values.out ?? path.replace(/\.(db|sqlite)$/, "") + ".html";
  await writeAtomic(out, renderReport(data, { heatmaps, title: values.title }));
  console.log(
    `${out}: report of sweep "${data.sweep}" (${data.edits.length} edits, ${data.traces.length} traces)`,
  );
  return 0;
}

if (import.meta.main) await runMain("report", main);
