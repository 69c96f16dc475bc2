// One self-contained HTML page (inline SVG and CSS, nothing fetched) with the papers' tables and figures
// (Hase et al., Chun & Hur, the Golden Layers paper) computed from a sweep's results
// (experiments/study/sweep.ts); `./locus task report RESULTS.db` is experiments/commands/report.ts.
//
// Sections, each table and figure with a stable id (tests/report_test.ts checks them all):
//   summary       what was run, on what (model, adapter, results fingerprint), the headline (layer vs
//                 tracing effect), findings, caveats, the verdict rule
//   tracing       fig-heatmaps (per-fact causal traces), fig-tracing-curves (ROME's average curves
//                 by token group), fig-peak-layers (where facts peak: Hase et al. figure 1)
//   localization  table-hase-1 (R^2 of ROME's rewrite score, Hase et al. table 1), table-hase-2 (the
//                 concentrated-effects subset), table-hase-3..6 (rewrite, paraphrase, neighborhood,
//                 average score by problem and method, with Diff and F-test p), fig-r2-bars (figure 6),
//                 table-zeroing and table-last-subject (robustness: other localizations),
//                 table-without-noop-cells (robustness: without the method-layer cells of no-op edits)
//   window        table-window-effects, fig-window-r2, table-window (the window-size study: tracing effects
//                 and the R² regressions with restoration windows of 1, 3, 5, 10 layers scaled to depth)
//   layers        fig-layer-curves (scores by edit layer, figure 7), table-correlations and
//                 fig-scatter-* (score vs tracing effect at each layer, figures 4 and 15)
//   golden        table-golden (Golden Layers table 1), table-proxy-test (Golden Layers tables 3-8),
//                 table-selection-004 (Golden Layers table 2), table-selection-000 (Chun & Hur table 1),
//                 fig-selection (the strategies' per-layer scores, LGA with its fences),
//                 fig-selection-runtime (the strategies' times)
//   standard      table-counterfact (CounterFact ES/PS/NS and magnitudes, EasyEdit's four metrics),
//                 table-zsre (MEMIT's zsRE efficacy, paraphrase and specificity, on a zsRE dataset)
//   mass          fig-mass-editing, table-mass-editing (MEMIT and EMMET editing 1, 10, 100, 1000 facts at once)
// The summary opens with what the run supports and the caveats found in its data (analysis.ts findings
// and caveats), and states the verdict rule once; every R², mean and r carries its 95% bootstrap
// interval over facts, every table's tests are Holm-corrected, and nothing in a caption is fixed text
// about the results.
import {
  caveats,
  concentratedFacts,
  type CorrelationRow,
  describeNoopCells,
  driftDescription,
  driftSummary,
  type EffectOptions,
  findings,
  formatP,
  goldenVsSampleWise,
  headline,
  layerChoice,
  layerCurves,
  massCurves,
  type Metric,
  noopCells,
  perLayerCorrelations,
  proxyVsTest,
  type R2Row,
  r2Table,
  type RunPlan,
  runProgress,
  selectionCheck,
  selectionScores,
  standardTable,
  STRATEGY_NAMES,
  type SweepData,
  windowStudy,
  withoutNoopCells,
} from "./analysis.ts";
import { studyWindows, WINDOW_STUDY, WINDOW_STUDY_DEPTH } from "../localization/layer_selection.ts";
import type { ConfidenceInterval, Verdict } from "./stats.ts";
import { VERDICT_RULE } from "./stats.ts";
import { STANDARD_METRICS } from "../evaluation/metrics.ts";
import { goldenLayers } from "../localization/attribution.ts";
import { layerCurvesSvg, lgaChartSvg } from "../pictures/attribution.ts";
import { barChartSvg, formatTick, lineChart, ticks } from "../pictures/charts.ts";
import { averageCurvesSvg, heatmapSvg } from "../pictures/heatmap.ts";
import { averageTraces } from "../localization/tracing.ts";
import { METHOD_TITLES, type SweepMethod } from "./sweep.ts";

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
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");

/** A value over its 95% interval, in one cell: "0.103" then "[0.081, 0.125]" in small print. */
function withCI(x: number, ci: ConfidenceInterval): Cell {
  const interval = Number.isFinite(ci.lower) ? `[${f3(ci.lower)}, ${f3(ci.upper)}]` : "[n/a]";
  return { html: `${f3(x)}<br><span class="ci">${interval}</span>`, cls: "num" };
}

/** The verdict rule's outcome as a cell (stats.ts verdict). */
const verdictCell = (v: Verdict): Cell => ({ text: v, cls: v === "effect" ? "effect" : "label" });

/**
 * Small scatter panels side by side with the dashed red line y = x (where points would lie if the
 * tracing effect were the score). The axes span [0, 1] extended to every point, shared by the panels:
 * an outlier (a rewrite score of -3.4) widens the axis rather than being clipped to the frame, and the
 * [0, 1] square stays marked.
 */
export function scatterPanelsSvg(
  panels: { title: string; points: [number, number][] }[],
  o: {
    title: string;
    xLabel: string;
    yLabel: string; /** The axes cover these points too (other rows of panels). */
    also?: [number, number][];
  },
): string {
  const size = 150, pad = 40, top = 44;
  const width = pad + panels.length * (size + pad), height = top + size + 46;
  const finite = [...panels.flatMap((p) => p.points), ...(o.also ?? [])].filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y)
  );
  const range = (vs: number[]) => {
    const [lo, hi] = [Math.min(0, ...vs), Math.max(1, ...vs)];
    const t = ticks(lo, hi, 3);
    return {
      lo: Math.min(lo, t[0]),
      hi: Math.max(hi, t.at(-1)!),
      ticks: t,
      step: t.length > 1 ? t[1] - t[0] : 1,
    };
  };
  const X = range(finite.map(([x]) => x)), Y = range(finite.map(([, y]) => y));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="10">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${escapeHtml(o.title)}</text>`,
  ];
  panels.forEach((p, k) => {
    const x0 = pad + k * (size + pad), y0 = top;
    const sx = (v: number) => x0 + ((v - X.lo) / (X.hi - X.lo)) * size;
    const sy = (v: number) => y0 + size - ((v - Y.lo) / (Y.hi - Y.lo)) * size;
    parts.push(`<g class="panel">`);
    parts.push(`<text x="${x0 + size / 2}" y="${y0 - 6}" text-anchor="middle">${escapeHtml(p.title)}</text>`);
    parts.push(`<rect x="${x0}" y="${y0}" width="${size}" height="${size}" fill="none" stroke="#999"/>`);
    if (X.lo < 0 || X.hi > 1 || Y.lo < 0 || Y.hi > 1) {
      parts.push(
        `<rect x="${sx(0)}" y="${sy(1)}" width="${sx(1) - sx(0)}" height="${sy(0) - sy(1)}" fill="#f4f4f4"/>`,
      );
    }
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
    for (const v of X.ticks) {
      parts.push(
        `<text x="${sx(v)}" y="${y0 + size + 12}" text-anchor="middle">${formatTick(v, X.step)}</text>`,
      );
    }
    for (const v of Y.ticks) {
      parts.push(`<text x="${x0 - 3}" y="${sy(v) + 3}" text-anchor="end">${formatTick(v, Y.step)}</text>`);
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
  essence: "Essence",
  overallEssence: "Overall + essence",
};

/** "FT-L (5 layers)": the method as the papers name it, with the layers its widest edit changed. */
const withLayer = (method: string, nLayers: number) =>
  `${METHOD_TITLES[method as SweepMethod] ?? method} (${nLayers} layer${nLayers === 1 ? "" : "s"})`;

/** One R² row's cells, from "Layer R²" to "n edits"; the adjusted R² of `adjusted` and of both. */
function r2Cells(r: R2Row, adjusted: "layer" | "trace"): Cell[] {
  return [
    withCI(r.layer, r.ci.layer),
    withCI(r.trace, r.ci.trace),
    withCI(r.both, r.ci.both),
    withCI(r.diff, r.ci.diff),
    `${f3(r.adjusted[adjusted])} / ${f3(r.adjusted.both)}`,
    withCI(r.f2, r.ci.f2),
    formatP(r.pAdjusted),
    verdictCell(r.verdict),
    {
      text: `${r.n} (${r.facts} facts)${r.dropped ? `, ${r.dropped} left out` : ""}${
        r.noops ? `, ${r.noops} no-op` : ""
      }${r.note ? `; ${r.note}` : ""}`,
      cls: "note",
    },
  ];
}

/** Rows of Hase et al.'s tables 3-6: the problem cell spans its methods. */
function r2Body(rows: R2Row[], methodLabel: (m: string) => string): Cell[][] {
  const body: Cell[][] = [];
  for (const problem of [...new Set(rows.map((r) => r.problem))]) {
    const mine = rows.filter((r) => r.problem === problem);
    mine.forEach((r, i) => {
      const cells: Cell[] = [methodLabel(r.method), ...r2Cells(r, "layer")];
      body.push(i === 0 ? [{ text: problem, rowspan: mine.length }, ...cells] : cells);
    });
  }
  return body;
}

const R2_HEAD: Cell[][] = [[
  "Editing Problem",
  "Method",
  "Layer R²",
  "Trace R²",
  "Both R²",
  "Diff",
  "adj. R² layer / both",
  "f²",
  "p (Holm)",
  "Verdict",
  "n edits",
]];

/** Hase et al.'s table 1 and 2 layout: the three R^2 with intervals and their adjusted values. */
function r2Summary(rows: R2Row[], methodLabel: (m: string) => string): Cell[][] {
  return rows.map((r) => [
    methodLabel(r.method),
    withCI(r.layer, r.ci.layer),
    withCI(r.trace, r.ci.trace),
    withCI(r.both, r.ci.both),
    `${f3(r.adjusted.layer)} / ${f3(r.adjusted.trace)} / ${f3(r.adjusted.both)}`,
    { text: `${r.n} (${r.facts} facts)${r.noops ? `, ${r.noops} no-op` : ""}`, cls: "note" },
  ]);
}
const R2_SUMMARY_HEAD: Cell[][] = [[
  "Method",
  "Layer",
  "Tracing Effect",
  "Both",
  "adj. R² layer / trace / both",
  "n edits",
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
        `(categorical), the tracing effect at that layer, or both interacted; 95% bootstrap intervals over ` +
        `facts below each value.`,
      R2_SUMMARY_HEAD,
      r2Summary(t1, methodLabel),
    ));
    const concentrated = concentratedFacts(data, { nLayer: Number(data.model.nLayer) || undefined });
    const edited = new Set(data.edits.filter((e) => e.problem === t1[0].problem).map((e) => e.fact));
    const subset = new Set([...concentrated].filter((f) => edited.has(f)));
    const t2 = r2Table(data, { metric: "rewrite", facts: subset }).filter((r) => r.problem === t1[0].problem);
    parts.push(
      subset.size === 0
        ? missing(
          "table-hase-2",
          "table",
          `none of the ${edited.size} edited facts has concentrated tracing effects (${concentrated.size} of ` +
            `all traced facts do)`,
        )
        : table(
          "table-hase-2",
          `Table 2: the same regressions on the edits of the ${subset.size} of ${edited.size} edited facts whose ` +
            `tracing effects are concentrated (few layers reach half of the peak effect)` +
            (subset.size === edited.size ? `: every edited fact is, so this table repeats Table 1.` : "."),
          R2_SUMMARY_HEAD,
          r2Summary(t2, methodLabel),
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
        `${title}: R² from the edit layer, the tracing effect, and both; Diff = Both − Layer (95% bootstrap ` +
          `intervals over facts below); f² = Diff / (1 − Both); p of the F-test of Both against Layer, ` +
          `Holm-corrected over this table's rows; verdict by the rule in the summary.`,
        R2_HEAD,
        r2Body(rows, methodLabel),
      ));
    }
    parts.push(figure(
      "fig-r2-bars",
      "R² of the layer-only regression and of the layer + tracing regression, per editing problem and method " +
        "(Hase et al. figure 6), with 95% bootstrap intervals over facts. The gap between the bars is what the " +
        "tracing effect adds.",
      [barChartSvg(
        rewrite.map((r) => ({
          label: methodLabel(r.method),
          section: r.problem,
          bars: [
            { name: "Layer", value: r.layer, lower: r.ci.layer.lower, upper: r.ci.layer.upper },
            { name: "Layer + tracing effect", value: r.both, lower: r.ci.both.lower, upper: r.ci.both.upper },
          ],
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
          `Robustness: rewrite-score R² with ${name} as the localization effect (intervals, Holm and ` +
            `verdicts as in Table 3).`,
          R2_HEAD,
          r2Body(r2Table(data, { metric: "rewrite", ...effect }), methodLabel),
        )
        : missing(id, "table", `the sweep has no ${effect.localization ?? "causal-tracing"} records`),
    );
  }
  // A layer where no edit can change anything (the caveats name them) is a layer effect of its own.
  const dead = noopCells(data);
  parts.push(
    dead.length
      ? table(
        "table-without-noop-cells",
        `Robustness: rewrite-score R² without the cells where every edit was a no-op (${
          describeNoopCells(data, dead)
        }; intervals, Holm and verdicts as in Table 3).`,
        R2_HEAD,
        r2Body(r2Table(withoutNoopCells(data), { metric: "rewrite" }), methodLabel),
      )
      : missing("table-without-noop-cells", "table", "no method and layer has only no-op edits"),
  );
  parts.push(`</section>`);
  return parts.join("\n");
}

/** The window-size study (Hase et al.'s appendix, figures 10-12): how large the tracing effects are and how
 *  well they predict the rewrite score, per restoration window. */
function windowSection(data: SweepData, methodLabel: (m: string) => string): string {
  const parts = [`<section id="window"><h2>Does the tracing window matter? (Hase et al., appendix)</h2>`];
  const study = windowStudy(data, { metric: "rewrite" });
  const nLayer = Number(data.model.nLayer);
  const paper = Number.isInteger(nLayer) && nLayer > 0 ? studyWindows(nLayer) : [];
  const scaling =
    `Hase et al. trace GPT-J's ${WINDOW_STUDY_DEPTH} layers with windows of ${
      WINDOW_STUDY.join(", ")
    } layers; here each keeps its share of this model's ${nLayer} layers, max(1, round(w × ${nLayer} / ` +
    `${WINDOW_STUDY_DEPTH})) (a window of 1 stays 1), clipped at the first and last layers: ${
      paper.map((w) => `${w.paper.join(", ")} → ${w.layers}`).join("; ") || "n/a"
    }.`;
  const windowLabel = (w: number) => {
    const from = paper.find((p) => p.layers === w);
    return `${w} layer${w === 1 ? "" : "s"}${from ? ` (paper ${from.paper.join(", ")})` : ""}`;
  };
  const ids: [string, "table" | "figure"][] = [
    ["table-window-effects", "table"],
    ["fig-window-r2", "figure"],
    ["table-window", "table"],
  ];
  if (study.windows.length < 2 || study.rows.length === 0) {
    const why = study.windows.length < 2
      ? `the sweep traced ${study.windows.length} window${
        study.windows.length === 1 ? "" : "s"
      }; the study ` +
        `needs two or more (sweep plan.windows, study --windows). ${scaling}`
      : "no edit results";
    for (const [id, kind] of ids) parts.push(missing(id, kind, why));
    return parts.join("\n") + "\n</section>";
  }
  parts.push(table(
    "table-window-effects",
    `Tracing effects by restoration window, over the facts traced with every window: the mean of each ` +
      `fact's peak MLP tracing effect (max over tokens and layers; Hase et al. figure 10), 95% bootstrap ` +
      `interval below, and how many facts peak at each layer (figure 11). ${scaling}`,
    [["Window", "Records", "Facts traced", "Mean peak effect", "Facts peaking at layer 0, 1, ..."]],
    study.windows.map((w) => [
      windowLabel(w.window),
      w.localization,
      w.facts,
      withCI(w.peak.estimate, w.peak),
      {
        text: w.peakLayers.join(" · ") + (w.noPeak ? ` (${w.noPeak} without a peak)` : ""),
        cls: "label",
      },
    ]),
  ));
  const groups = [...new Set(study.rows.map((r) => `${r.problem}\u0000${r.method}`))].map((g) => {
    const [problem, method] = g.split("\u0000");
    return { problem, method, rows: study.rows.filter((r) => r.problem === problem && r.method === method) };
  });
  const chart = (
    title: string,
    yLabel: string,
    pick: (r: (typeof study.rows)[number]) => ConfidenceInterval,
  ) =>
    barChartSvg(
      groups.map((g) => ({
        label: methodLabel(g.method),
        section: g.problem,
        bars: g.rows.map((r) => {
          const ci = pick(r);
          return { name: windowLabel(r.window), value: ci.estimate, lower: ci.lower, upper: ci.upper };
        }),
      })),
      { title, yLabel },
    );
  parts.push(figure(
    "fig-window-r2",
    `Rewrite score: R² of the tracing effect alone, and what it adds to the edit layer (Both − Layer), with ` +
      `each restoration window (Hase et al. figure 12 for windows 5 and 10), on the edits of the ${study.facts} ` +
      `facts traced with every window; error bars are 95% bootstrap intervals over facts.`,
    [
      chart("Tracing effect alone: R² by window", "R²", (r) => ({ ...r.ci.trace, estimate: r.trace })),
      chart("Added to the layer: Both − Layer by window", "ΔR²", (r) => ({ ...r.ci.diff, estimate: r.diff })),
    ],
  ));
  const body: Cell[][] = [];
  for (const g of groups) {
    g.rows.forEach((r, i) => {
      const cells: Cell[] = [windowLabel(r.window), ...r2Cells(r, "trace")];
      body.push(
        i === 0
          ? [
            { text: g.problem, rowspan: g.rows.length },
            { text: methodLabel(g.method), rowspan: g.rows.length },
            ...cells,
          ]
          : cells,
      );
    });
  }
  parts.push(table(
    "table-window",
    `Rewrite-score R² from the edit layer, the tracing effect with each window, and both (Hase et al.'s ` +
      `regressions; 95% bootstrap intervals over facts below); Diff = Both − Layer; p of the F-test of Both ` +
      `against Layer, Holm-corrected over every row of this table (all windows: one family); verdict by the ` +
      `rule in the summary. ${scaling}`,
    [[
      "Editing Problem",
      "Method",
      "Window",
      "Layer R²",
      "Trace R²",
      "Both R²",
      "Diff",
      "adj. R² trace / both",
      "f²",
      "p (Holm)",
      "Verdict",
      "n edits",
    ]],
    body,
  ));
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
      `Average indirect effect per layer by token group over ${traces.length} facts (ROME's figure); bands are ` +
        `±1.96 standard errors over the pooled token rows.`,
      averageTraces(traces.map((t) => t.trace)).map(averageCurvesSvg),
    );
  } catch (e) {
    curves = missing("fig-tracing-curves", "figure", (e as Error).message);
  }
  parts.push(curves);
  const L = traces[0].effect.length;
  const counts = new Array(L).fill(0);
  let noPeak = 0;
  for (const t of traces) {
    const { layer } = layerChoice(t.effect);
    if (layer === null) noPeak++;
    else counts[layer]++;
  }
  const top = Math.max(...counts), mode = counts.indexOf(top);
  const editLayers = [...new Set(data.edits.filter((e) => e.method === "rome").map((e) => e.layer))];
  const atRome = editLayers.length === 1 ? counts[editLayers[0]] : NaN;
  parts.push(figure(
    "fig-peak-layers",
    `Where each fact's MLP tracing effect peaks (Hase et al. figure 1): ${top} of ${traces.length} facts peak ` +
      `at layer ${mode}` +
      (noPeak ? `; ${noPeak} have no peak (a tie or no effect above 0) and are not counted` : "") +
      (Number.isFinite(atRome) ? `; ${atRome} peak at ROME's layer ${editLayers[0]}` : "") + ".",
    [barChartSvg(counts.map((c, l) => ({ label: String(l), bars: [{ name: "facts", value: c }] })), {
      title: `Layer of the peak tracing effect (${traces.length - noPeak} of ${traces.length} facts)`,
      yLabel: "facts",
      xLabel: "layer",
    })],
  ));
  parts.push(`</section>`);
  return parts.join("\n");
}

function layersSection(data: SweepData, methodLabel: (m: string) => string): string {
  const parts = [`<section id="layers"><h2>Edit success by layer</h2>`];
  if (data.edits.length === 0) {
    parts.push(missing("fig-layer-curves", "figure", "no edit results"));
    parts.push(missing("table-correlations", "table", "no edit results"));
    return parts.join("\n") + "\n</section>";
  }
  const svgs = problemMajorCharts(
    data,
    ["rewrite", "paraphrase", "neighborhood"],
    data.problems,
    methodLabel,
  );
  parts.push(figure(
    "fig-layer-curves",
    "Mean rewrite, paraphrase and neighborhood scores by edit layer (Hase et al. figure 7), per editing problem; " +
      "bands are 95% bootstrap intervals over facts.",
    svgs,
  ));
  parts.push(essenceFigure(data, methodLabel));
  const correlations = perLayerCorrelations(data);
  if (correlations.length === 0 || !data.traces.some((t) => t.localization === "causal-tracing")) {
    parts.push(missing("table-correlations", "table", "the sweep has no causal-tracing records"));
  } else {
    parts.push(correlationTable(data, correlations, methodLabel));
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
          title: `layer ${layer}: r = ${r ? f2(r.r) : "n/a"}`,
          points: rows.map((e) =>
            [effects.get(e.fact)?.[layer] ?? NaN, e.scores.rewrite] as [number, number]
          ),
        };
      });
      parts.push(figure(
        `fig-scatter-${k}`,
        `${
          methodLabel(method)
        }, ${problem}: rewrite score vs tracing effect at the edited layer (Hase et al. figures 4 and 15). ` +
          `The dashed red line is a perfect relationship; every point is drawn (axes widen for values outside ` +
          `[0, 1], whose square is shaded).`,
        chunks(panels, LAYERS_PER_ROW).map((row) =>
          scatterPanelsSvg(row, {
            title: `${methodLabel(method)} · ${problem}: rewrite score by tracing effect`,
            xLabel: "tracing effect (fraction of p restored, max over tokens)",
            yLabel: "rewrite score",
            also: panels.flatMap((p) => p.points),
          })
        ),
      ));
    }
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

/** Per-layer curves of each score per (problem, method) with 95% bootstrap bands: a chart per problem and
 *  score, problem by problem. */
function problemMajorCharts(
  data: SweepData,
  metrics: Metric[],
  problems: string[],
  methodLabel: (m: string) => string,
): string[] {
  const curves = new Map(metrics.map((m) => [m, layerCurves(data, m)]));
  return problems.flatMap((problem) =>
    metrics.map((metric) =>
      lineChart(
        curves.get(metric)!.filter((c) => c.problem === problem && c.n.some((n) => n > 0)).map((c) => ({
          name: methodLabel(c.method),
          points: c.layers.map((l, i) => [l, c.mean[i]] as [number, number]),
          band: c.layers.map((_, i) => [c.lower[i], c.upper[i]] as [number, number]),
        })),
        {
          title: `${problem}: ${METRIC_NAMES[metric]} score`,
          xLabel: "edit layer",
          yLabel: "mean score",
          width: 420,
          height: 280,
        },
      )
    )
  );
}

/** Hase et al.'s essence figure (their figure 8) and overall scores without and with essence (figure 9),
 *  per editing problem where essence was measured. */
function essenceFigure(data: SweepData, methodLabel: (m: string) => string): string {
  const drift = driftSummary(data);
  const problems = data.problems.filter((p) =>
    data.edits.some((e) => e.problem === p && Number.isFinite(e.scores.essence))
  );
  if (problems.length === 0) return missing("fig-essence", "figure", driftDescription(drift));
  return figure(
    "fig-essence",
    "Essence score by edit layer (Hase et al. figure 8: 1 − clip(Δ perplexity of the unedited model's " +
      `"{subject} is a" samples, 0, 5)/5), and the overall score without and with essence (figure 9: the ` +
      "harmonic mean of rewrite, paraphrase and neighborhood, and of those and essence), per editing problem; " +
      `bands are 95% bootstrap intervals over facts. ${driftDescription(drift)}`,
    problemMajorCharts(data, ["essence", "overall", "overallEssence"], problems, methodLabel),
  );
}

function pairs(data: SweepData): { problem: string; method: string }[] {
  return data.problems.flatMap((problem) =>
    data.methods.filter((method) => data.edits.some((e) => e.problem === problem && e.method === method))
      .map((method) => ({ problem, method }))
  );
}

/** Per-layer columns (and scatter panels) come in groups of this many, so a deep model's table and
 *  figures wrap onto more rows instead of running off the page. */
const LAYERS_PER_ROW = 8;

function chunks<T>(xs: readonly T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(xs.length / size) }, (_, i) => xs.slice(i * size, (i + 1) * size));
}

function correlationTable(
  data: SweepData,
  rows: CorrelationRow[],
  methodLabel: (m: string) => string,
): string {
  const groups = chunks(data.layers, LAYERS_PER_ROW);
  const layerHeads = (layers: number[]) => layers.map((l) => `layer ${l}`);
  const body: Cell[][] = groups.flatMap((layers, k) => [
    // Each further group of layers repeats the header row inside the body.
    ...(k === 0 ? [] : [["", "", ...layerHeads(layers)].map((text) => ({ text, cls: "subhead" }))]),
    ...pairs(data).map(({ problem, method }) => [
      problem,
      methodLabel(method),
      ...layers.map((l) => {
        const r = rows.find((c) => c.problem === problem && c.method === method && c.layer === l)!;
        return Number.isFinite(r.r)
          ? {
            html: `${f2(r.r)} <span class="ci">[${f2(r.ci.lower)}, ${f2(r.ci.upper)}]</span><br>` +
              `<span class="ci">p ${escapeHtml(formatP(r.pAdjusted))}</span>${
                r.verdict === "effect" ? " ✱" : ""
              }`,
            cls: r.verdict === "effect" ? "effect" : "num",
          }
          : "n/a";
      }),
    ]),
  ]);
  return table(
    "table-correlations",
    "Pearson correlation between the rewrite score and the tracing effect, at each edit layer, with its 95% " +
      "bootstrap interval over facts and its p-value Holm-corrected over the whole table; ✱ marks an effect by " +
      "the verdict rule (|r| ≥ 0.1).",
    [["Editing Problem", "Method", ...layerHeads(groups[0] ?? [])]],
    body,
  );
}

function goldenSection(data: SweepData, methodLabel: (m: string) => string): string {
  const parts = [
    `<section id="golden"><h2>Golden layers and layer selection (Chun &amp; Hur; the Golden Layers paper)</h2>`,
  ];
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
      body.push(
        row(
          "Difference (optimal − golden)",
          (g) =>
            `${f3(g.meanDifference)} [${f3(g.lower)}, ${f3(g.upper)}], d_z ${f2(g.dz)}, Holm p ${
              formatP(g.pAdjusted)
            }: ${g.verdict}`,
        ),
      );
    }
    parts.push(table(
      "table-golden",
      "Rewrite score (mean±std) of each fact edited at its own best layer vs all facts at the golden layer (best on " +
        "average) (Golden Layers table 1); the difference with its 95% t interval and the verdict rule (paired " +
        "t-test Holm-corrected over this table, Cohen's d_z ≥ 0.2). Each fact's best layer is a maximum, so the " +
        "difference is ≥ 0 by construction: the question is its size.",
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
  const layerText = (s: typeof selections[number]) =>
    s.noChoice ? "no choice" : s.layer === null ? "per fact" : String(s.layer);
  if (selections.length === 0 || data.selections.length === 0) {
    parts.push(missing("table-selection-004", "table", "the sweep has no layer-selection records"));
    parts.push(missing("table-selection-000", "table", "the sweep has no layer-selection records"));
    parts.push(missing("fig-selection", "figure", "the sweep has no layer-selection records"));
    parts.push(missing("fig-selection-runtime", "figure", "the sweep has no layer-selection records"));
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
          ...metrics.map((m) => withCI(s.means[m], s.ci[m])),
          { text: [String(s.n), s.noChoice, s.note].filter(Boolean).join("; "), cls: "note" },
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
        "CMA = causal tracing), with 95% bootstrap intervals over the test facts. A strategy whose per-layer scores " +
        "tie at the top or are a structural zero made no choice and has no scores.",
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
    const svgs = data.selections.map((s) => {
      const choice = s.scores.length ? selectionCheck(s) : { layer: s.layers[0], reason: "" };
      return s.selector === "lga" && s.scores.every(Number.isFinite)
        ? lgaChartSvg({ scores: s.scores, selection: goldenLayers(s.scores), params: ["c_proj"] })
        : layerCurvesSvg(
          [{ name: label(s.selector), values: s.scores }],
          `${label(s.selector)} on ${s.proxy.length} proxy facts: ${
            choice.reason ? `no choice (${choice.reason})` : `chose layer ${s.layers.join(", ")}`
          }`,
          "score",
        );
    });
    parts.push(figure("fig-selection", "Per-layer scores each layer-selection strategy chose from.", svgs));
    parts.push(figure(
      "fig-selection-runtime",
      "Time each layer-selection strategy took on the proxy facts (Golden Layers paper, runtime figure), on this " +
        "run's adapter; brute force is the sum of its edits' times over the layer grid.",
      [barChartSvg(
        [
          ...data.selections.map((s) => ({
            label: label(s.selector),
            bars: [{ name: "seconds", value: s.seconds }],
          })),
          ...(Number.isFinite(bruteForceSeconds(data))
            ? [{ label: label("brute-force"), bars: [{ name: "seconds", value: bruteForceSeconds(data) }] }]
            : []),
        ],
        { title: "Layer-selection runtime", yLabel: "seconds" },
      )],
    ));
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

function standardSection(data: SweepData, methodLabel: (m: string) => string): string {
  const rows = standardTable(data);
  const parts = [`<section id="standard"><h2>The field's standard metrics</h2>`];
  if (rows.length === 0) {
    parts.push(missing(
      "table-counterfact",
      "table",
      "no edit of a problem the standard metrics judge (they compare a new object against the true one)",
    ));
  } else {
    parts.push(table(
      "table-counterfact",
      "CounterFact's ES/PS/NS with magnitudes (ROME, MEMIT), EasyEdit's reliability, generalization, " +
        "locality and portability (the integrated-gradients paper's table 1) and ROME's fluency (the weighted " +
        "bi- and trigram entropy of sampled generations from the generation prompts, after the edit and of the " +
        "unedited model with the same draws) of the test facts edited at the golden layer found on the proxy " +
        "facts; means over test facts with 95% bootstrap intervals (n/a: no such prompts in the dataset). " +
        driftDescription(driftSummary(data)),
      [[
        "Editing Problem",
        "Method",
        "Layer",
        ...STANDARD_METRICS.map((m) => m.short),
        "Fluency",
        "Fluency (unedited)",
        "n facts",
      ]],
      rows.map((r) => [
        r.problem,
        methodLabel(r.method),
        `${r.layer}${r.layerFrom === "test" ? " (test)" : ""}`,
        ...STANDARD_METRICS.map((m) => withCI(r.metrics[m.key].estimate, r.metrics[m.key])),
        ...[r.fluency.post, r.fluency.pre].map((f) =>
          r.fluency.n ? withCI(f.estimate, f) : { text: "not measured", cls: "note" }
        ),
        r.fluency.n && r.fluency.n !== r.n ? `${r.n} (fluency: ${r.fluency.n})` : r.n,
      ]),
    ));
  }
  // zsRE's metrics as the MEMIT paper names them, where the sweep's facts are zsRE records.
  const zsre = data.edits.some((e) => e.fact.startsWith("zsre:"));
  if (!zsre || rows.length === 0) {
    parts.push(missing(
      "table-zsre",
      "table",
      zsre
        ? "no edit of a problem the standard metrics judge"
        : "the sweep's facts are not zsRE records (run it with --dataset on a file in MEND's zsRE schema, " +
          "e.g. weights/locus-kb/zsre.json)",
    ));
  } else {
    const columns: [string, string][] = [
      ["reliability", "Efficacy"],
      ["generalization", "Paraphrase"],
      ["specificity", "Specificity"],
      ["locality", "Locality (EasyEdit)"],
    ];
    parts.push(table(
      "table-zsre",
      "zsRE (the MEMIT paper's table): token-level top-1 accuracy, teacher forced, after the edit, of the " +
        "test facts edited at the golden layer found on the proxy facts; means over facts with 95% bootstrap " +
        "intervals. Efficacy = of the new answer after the edit prompt (EasyEdit's reliability), Paraphrase = " +
        "after the rephrased prompt (EasyEdit's generalization), Specificity = of the locality prompt's own " +
        "answer (loc_ans); EasyEdit's locality (the locality prompt's argmax tokens left unchanged by the " +
        "edit) beside it.",
      [["Editing Problem", "Method", "Layer", ...columns.map(([, name]) => name), "n facts"]],
      rows.map((r) => [
        r.problem,
        methodLabel(r.method),
        `${r.layer}${r.layerFrom === "test" ? " (test)" : ""}`,
        ...columns.map(([key]) => withCI(r.metrics[key].estimate, r.metrics[key])),
        r.n,
      ]),
    ));
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

function massSection(data: SweepData): string {
  const curves = massCurves(data);
  const parts = [`<section id="mass"><h2>Mass editing (MEMIT, EMMET)</h2>`];
  if (curves.length === 0) {
    parts.push(missing("fig-mass-editing", "figure", "the sweep has no mass-editing records"));
    parts.push(missing("table-mass-editing", "table", "the sweep has no mass-editing records"));
  } else {
    const metrics = ["rewrite", "paraphrase", "neighborhood"] as const;
    // The batch sizes span decades (1 ... 1000): a logarithmic x axis, ticked at the sizes run.
    const sizes = [...new Set(curves.flatMap((c) => c.sizes))].sort((a, b) => a - b);
    parts.push(figure(
      "fig-mass-editing",
      "Error-injection scores of the test facts when n of them are edited at once by one batch edit (the " +
        "MEMIT paper's scaling curve), with 95% bootstrap intervals over the edited facts.",
      metrics.map((k) =>
        lineChart(
          curves.map((c) => ({
            name: c.method,
            points: c.sizes.map((n, i) => [Math.log10(n), c.metrics[k][i].estimate] as [number, number]),
            band: c.metrics[k].map((ci) => [ci.lower, ci.upper] as [number, number]),
          })),
          {
            title: `${METRIC_NAMES[k]} score by facts edited at once`,
            xLabel: "facts edited at once (log scale)",
            xTicks: sizes.map((n) => ({ value: Math.log10(n), label: String(n) })),
            yLabel: "mean score",
            width: 420,
            height: 280,
          },
        )
      ),
    ));
    parts.push(table(
      "table-mass-editing",
      "The mass-editing curve in numbers: mean scores over the n facts edited at once [95% bootstrap interval], " +
        "and the time of the batch edit.",
      [["Method", "n", ...metrics.map((k) => METRIC_NAMES[k]), "edit (s)"]],
      curves.flatMap((c) =>
        c.sizes.map((n, i) => [
          c.method,
          n,
          ...metrics.map((k) => withCI(c.metrics[k][i].estimate, c.metrics[k][i])),
          f2(c.seconds[i]),
        ])
      ),
    ));
  }
  parts.push(`</section>`);
  return parts.join("\n");
}

/** The time brute force takes on the proxy facts: every proxy edit of the first (problem, method) at
 *  every grid layer (edit and scoring times as stored), NaN when the sweep has no proxy edits. */
function bruteForceSeconds(data: SweepData): number {
  const rows = data.edits.filter((e) =>
    e.split === "proxy" && e.problem === data.problems[0] && e.method === data.methods[0]
  );
  return rows.length ? rows.reduce((s, e) => s + e.seconds, 0) : NaN;
}

const STYLE = `
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1.2em 0; font-size: 13px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4em; max-width: 1000px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; text-align: center; } td.label { text-align: left; }
td.note { color: #777; font-size: 11px; text-align: left; max-width: 22em; }
td.effect { background: #eaf6ea; font-weight: 600; } td.subhead { background: #f3f3f3; font-weight: 600; text-align: center; } .ci { color: #666; font-size: 11px; white-space: nowrap; }
#caveats li { color: #8a4b00; } #findings li, #caveats li { margin: .2em 0; }
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
  /** What the run set out to edit (the study command knows): the summary then says how far it got, and an
   *  incomplete run says so first among its caveats. */
  plan?: RunPlan;
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
  const warnings = caveats(data, { plan: o.plan });
  const title = o.title ?? `Locus sweep "${data.sweep}": does localization inform editing?`;
  const meta: [string, string][] = [
    ...(o.plan ? [["run", runProgress(data, o.plan).line] as [string, string]] : []),
    [
      "model",
      `${data.model.name ?? "?"} (${data.model.family ?? "gpt2"}, ${nLayer} layers, d=${data.model.nEmbd}, ` +
      `vocabulary ${data.model.vocabSize})`,
    ],
    ["weights sha256", String(data.model.weightsSha256 ?? "?")],
    [
      "dataset",
      `${data.dataset.name ?? data.dataset.path ?? "?"} (sha256 ${
        String(data.dataset.sha256 ?? "?").slice(0, 12)
      }…)`,
    ],
    ["adapter", `${data.adapter.description ?? "?"}${data.adapter.isFallback ? " (software)" : ""}`],
    ["results fingerprint", `sha256 ${data.fingerprint} (sweep "${data.sweep}")`],
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
    ["essence and fluency", driftDescription(driftSummary(data))],
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
<h2>Summary and caveats</h2>
<dl class="meta">${meta.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("")}</dl>
<p id="headline" class="headline">${escapeHtml(main ? headline(main, data) : "No edit results yet.")}</p>
<h3>What this run supports (on ${escapeHtml(String(data.model.name ?? "this model"))})</h3>
<ul id="findings">${findings(data).map((f) => `<li>${escapeHtml(f)}</li>`).join("\n")}</ul>
<h3>What it does not support: caveats found in the data</h3>
<ul id="caveats">${
    (warnings.length ? warnings : ["None detected."]).map((c) => `<li>${escapeHtml(c)}</li>`).join("\n")
  }</ul>
<p id="verdict-rule"><b>Statistics.</b> ${
    escapeHtml(VERDICT_RULE)
  } Every table's tests form one family for Holm's
correction.</p>
<p>Scores follow Hase et al.: rewrite = 1 − (1 − p<sub>post</sub>)/(1 − p<sub>pre</sub>) of the problem's target
(fact erasure: the share of p(true object) removed), paraphrase the same on paraphrases, neighborhood =
1 − |Δp| / (|p<sub>pre</sub> − ½| + ½) on other subjects; overall = their harmonic mean, average = their mean.
The tracing effect of an edit is the fact's fractional causal-tracing effect at the edited layer (MLP
outputs restored over a window, max over tokens).</p>
</section>
${tracingSection(data, o.heatmaps ?? 3)}
${localizationSection(data, methodLabel)}
${windowSection(data, methodLabel)}
${layersSection(data, methodLabel)}
${standardSection(data, methodLabel)}
${massSection(data)}
${goldenSection(data, methodLabel)}
</body>
</html>
`;
}
