// Pictures of tracing results: a tokens x layers heatmap per prompt (one panel per state kind, the
// subject's tokens marked with "*"), averaged per-layer curves, and the same grids shaded in a
// terminal. Cells are coloured by the effect (indirect effect for noise, probability removed for
// zeroing) on a diverging scale: white at 0, the kind's colour (ROME's) for positive effects, orange for
// negative ones (which ROME's pictures clip away); hovering a cell in a browser shows its numbers.
import { escapeXml, lineChart } from "./charts.ts";
import type { AverageTrace, FactTrace, KindGrid, StateKind } from "../localization/tracing.ts";

/** ROME's colours: purple for the residual stream, green for MLP outputs, red for attention outputs. */
export const KIND_COLORS: Readonly<Record<StateKind, [number, number, number]>> = {
  resid: [84, 39, 143],
  mlp: [0, 109, 44],
  attn: [165, 15, 21],
};

const KIND_NAMES: Readonly<Record<StateKind, string>> = {
  resid: "residual stream",
  mlp: "MLP output",
  attn: "attention output",
};

/** Negative effects (restoring a state lowered the answer's probability) in every kind's panel. */
const NEGATIVE_RGB = [230, 97, 1];

/** A diverging scale: white at 0, `rgb` at v >= max, NEGATIVE_RGB at v <= -max (linear in |v|). */
function shade(v: number, max: number, rgb: readonly number[]): [number, number, number] {
  const a = max > 0 && Number.isFinite(v) ? Math.min(1, Math.abs(v) / max) : 0;
  return (v < 0 ? NEGATIVE_RGB : rgb).map((c) => Math.round(255 + a * (c - 255))) as [number, number, number];
}

/** The largest |value|: the colour scale is symmetric around 0. */
function gridMax(values: number[][]): number {
  return Math.max(0, ...values.flat().filter(Number.isFinite).map(Math.abs));
}

function hasNegative(values: number[][]): boolean {
  return values.some((row) => row.some((v) => v < 0));
}

/** Token labels with the subject's tokens marked by a trailing "*". */
function tokenLabels(trace: FactTrace): string[] {
  const [b, e] = trace.subjectRange;
  return trace.tokens.map((s, t) => `${s.trim() || JSON.stringify(s)}${t >= b && t < e ? "*" : ""}`);
}

function effectName(trace: { method: string }): string {
  return trace.method === "noise"
    ? "indirect effect p(restored) - p(corrupted)"
    : "probability removed p(clean) - p(zeroed)";
}

const fmt = (v: number | null) => (v === null || !Number.isFinite(v) ? "n/a" : v.toPrecision(3));

/** One SVG with a panel per kind: rows are tokens, columns layers, colour the effect. */
export function heatmapSvg(trace: FactTrace): string {
  const [b, e] = trace.subjectRange;
  const subtitle =
    `${trace.method === "noise" ? "causal tracing" : "representation zeroing"}: p(clean) ${
      fmt(trace.clean)
    }` +
    (trace.method === "noise"
      ? `, p(corrupted) ${fmt(trace.corrupted)}, noise ${fmt(trace.noise)}, ${trace.samples} samples`
      : "");
  return panelsSvg({
    title: `${trace.prompt} → ${trace.targetToken.trim()}`,
    subtitle,
    labels: tokenLabels(trace),
    isSubject: (t) => t >= b && t < e,
    grids: trace.grids,
    caption: `colour: ${effectName(trace)}; * = subject token`,
  });
}

/** ROME's averaged picture: one panel per kind, rows are the token groups (first subject token ... last
 *  token), columns layers, colour the effect averaged over the facts. */
export function averageHeatmapSvg(averages: AverageTrace[]): string {
  if (averages.length === 0) throw new Error("averageHeatmapSvg: no averages");
  const first = averages[0];
  const rows = first.groups.map((g) => g.group);
  const subtitle = first.method === "noise"
    ? `causal tracing, average over ${first.facts} facts: p(clean) ${fmt(first.clean)}, p(corrupted) ${
      fmt(first.corrupted)
    }`
    : `representation zeroing, average over ${first.facts} facts: p(clean) ${fmt(first.clean)}`;
  return panelsSvg({
    title: `Average ${first.method === "noise" ? "indirect effect" : "probability removed"} by token group`,
    subtitle,
    labels: rows.map((group, i) => `${group} (n=${first.groups[i].count})`),
    isSubject: (t) => rows[t].endsWith("subject token") || rows[t].endsWith("subject tokens"),
    grids: averages.map((a) => ({ kind: a.kind, window: a.window, ...groupRows(a) })),
    caption: `colour: ${effectName(first)}; bold = subject tokens`,
  });
}

/** The [group][layer] arrays of an average, in the shape of a grid's rows. */
function groupRows(a: AverageTrace): Pick<KindGrid, "prob" | "effect" | "fraction"> {
  return {
    prob: a.groups.map((g) => g.prob),
    effect: a.groups.map((g) => g.effect),
    fraction: a.groups.map((g) => g.fraction),
  };
}

interface PanelGrid {
  kind: StateKind;
  window: number;
  /** [row][layer] */
  prob: number[][];
  effect: number[][];
  fraction: number[][];
}

/** Panels of shaded rows x layers, one per grid, under a title; rows for which `isSubject` holds are bold. */
function panelsSvg(o: {
  title: string;
  subtitle: string;
  labels: string[];
  isSubject: (row: number) => boolean;
  grids: PanelGrid[];
  caption: string;
}): string {
  const labels = o.labels;
  const T = labels.length, L = o.grids[0].prob[0].length;
  const cellW = Math.max(8, Math.min(24, Math.floor(360 / L))), cellH = 18;
  const labelW = 8 + 7 * Math.max(...labels.map((s) => s.length));
  const plotW = Math.max(L * cellW, 180); // room for the panel's title and colour-scale caption
  const panelW = labelW + plotW + 24, panelH = 60 + T * cellH + 40;
  const width = panelW * o.grids.length, height = 50 + panelH;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="14">${escapeXml(o.title)}</text>`,
    `<text x="${width / 2}" y="36" text-anchor="middle">${escapeXml(o.subtitle)}</text>`,
  ];
  o.grids.forEach((grid, k) => {
    const x0 = k * panelW + labelW, y0 = 50 + 40;
    const max = gridMax(grid.effect), rgb = KIND_COLORS[grid.kind];
    parts.push(`<g class="panel">`);
    parts.push(
      `<text x="${x0 + plotW / 2}" y="${y0 - 22}" text-anchor="middle" font-size="13">${
        KIND_NAMES[grid.kind]
      } (window ${grid.window})</text>`,
    );
    labels.forEach((label, t) => {
      const weight = o.isSubject(t) ? ` font-weight="bold"` : "";
      parts.push(
        `<text x="${x0 - 4}" y="${y0 + t * cellH + 13}" text-anchor="end"${weight}>${
          escapeXml(label)
        }</text>`,
      );
      for (let l = 0; l < L; l++) {
        const [r, g, bl] = shade(grid.effect[t][l], max, rgb);
        const tip = `${label} layer ${l}: p ${fmt(grid.prob[t][l])}, effect ${
          fmt(grid.effect[t][l])
        }, fraction ${fmt(grid.fraction[t][l])}`;
        parts.push(
          `<rect class="cell" x="${x0 + l * cellW}" y="${
            y0 + t * cellH
          }" width="${cellW}" height="${cellH}" fill="rgb(${r},${g},${bl})"><title>${
            escapeXml(tip)
          }</title></rect>`,
        );
      }
    });
    parts.push(
      `<rect x="${x0}" y="${y0}" width="${L * cellW}" height="${T * cellH}" fill="none" stroke="#999"/>`,
    );
    for (let l = 0; l < L; l += Math.max(1, Math.ceil(L / 12))) {
      parts.push(
        `<text x="${x0 + l * cellW + cellW / 2}" y="${
          y0 + T * cellH + 14
        }" text-anchor="middle" font-size="10">${l}</text>`,
      );
    }
    parts.push(
      `<text x="${x0 + plotW / 2}" y="${
        y0 + T * cellH + 30
      }" text-anchor="middle" font-size="10">layer; colour ${fmt(max)}${
        hasNegative(grid.effect) ? `, orange = -${fmt(max)}` : ""
      }</text>`,
    );
    parts.push(`</g>`);
  });
  parts.push(
    `<text x="8" y="${height - 6}" font-size="10" fill="#666">${escapeXml(o.caption)}</text>`,
  );
  parts.push("</svg>");
  return parts.join("\n");
}

/** Per-layer curves of the average effect, one line per token group (groups with rows only). */
export function averageCurvesSvg(avg: AverageTrace): string {
  // Bands: +-1.96 standard errors of the mean over the pooled rows (a normal 95% interval).
  const series = avg.groups.filter((g) => g.count > 0).map((g) => ({
    name: g.group,
    points: g.effect.map((v, l) => [l, v] as [number, number]),
    band: g.effect.map((v, l) => [v - 1.96 * g.effectSe[l], v + 1.96 * g.effectSe[l]] as [number, number]),
  }));
  return lineChart(series, {
    title: `${KIND_NAMES[avg.kind]}, window ${avg.window}: average over ${avg.facts} facts`,
    xLabel: "layer (centre of window)",
    yLabel: avg.method === "noise" ? "average indirect effect" : "average probability removed",
    width: 760,
  });
}

// ---------------------------------------------------------------- terminal

/** Characters from light to dark, for terminals without colour. */
const RAMP = " .:-=+*#%@";

/**
 * Rows of shaded cells, one per label: 24-bit background colours, or the ASCII ramp. Every row ends
 * with "|". `values[row][layer]`; the scale runs from 0 to the largest value.
 */
export function shadedRows(
  labels: string[],
  values: number[][],
  o: { color: boolean; rgb: readonly number[] },
): string[] {
  const L = values[0]?.length ?? 0, max = gridMax(values);
  const labelW = Math.max(5, ...labels.map((s) => s.length));
  const header = " ".repeat(labelW) + " " +
    Array.from({ length: L }, (_, l) => (l % 5 === 0 ? String(l).padEnd(5).slice(0, 2) : "  ")).join("");
  const rows = labels.map((label, r) => {
    const cells = values[r].map((v) => {
      if (o.color) {
        const [red, green, blue] = shade(v, max, o.rgb);
        return `\x1b[48;2;${red};${green};${blue}m  \x1b[0m`;
      }
      // Characters carry no sign: negative cells stay blank (the caption says when there are any).
      const a = max > 0 && Number.isFinite(v) ? Math.min(1, Math.max(0, v / max)) : 0;
      return RAMP[Math.round(a * (RAMP.length - 1))].repeat(2);
    });
    return `${label.padEnd(labelW)}|${cells.join("")}|`;
  });
  return [header, ...rows];
}

/** One kind's grid of a trace as shaded terminal rows (tokens down, layers across), with a caption. */
export function terminalHeatmap(trace: FactTrace, kind: StateKind, o: { color: boolean }): string {
  const grid = trace.grids.find((g) => g.kind === kind);
  if (!grid) throw new Error(`terminalHeatmap: the trace has no ${kind} grid`);
  const caption = `${KIND_NAMES[kind]} (window ${grid.window}): ${effectName(trace)}, darkest = ${
    fmt(gridMax(grid.effect))
  }${hasNegative(grid.effect) ? `; negative effects ${o.color ? "orange" : "blank"}` : ""}`;
  return [caption, ...shadedRows(tokenLabels(trace), grid.effect, { color: o.color, rgb: KIND_COLORS[kind] })]
    .join("\n");
}

/** The averaged curves of one kind as shaded terminal rows (token groups down, layers across). Zeroing
 *  adds a row for all subject tokens zeroed together (mean probability removed = clean - prob). */
export function terminalAverage(avg: AverageTrace, o: { color: boolean }): string {
  const rows: { label: string; values: number[] }[] = avg.groups.filter((g) => g.count > 0)
    .map((g) => ({ label: g.group, values: g.effect }));
  if (avg.subjectZeroed) {
    rows.push({ label: "all subject tokens", values: avg.subjectZeroed.prob.map((p) => avg.clean - p) });
  }
  const values = rows.map((r) => r.values);
  const caption = `${KIND_NAMES[avg.kind]} (window ${avg.window}), ${avg.facts} facts: average effect, ` +
    `darkest = ${fmt(gridMax(values))}`;
  const shaded = shadedRows(rows.map((r) => r.label), values, { color: o.color, rgb: KIND_COLORS[avg.kind] });
  return [caption, ...shaded].join("\n");
}

export interface TopCell {
  kind: StateKind;
  token: number;
  tokenString: string;
  layer: number;
  prob: number;
  effect: number;
  fraction: number;
}

/** The k cells with the largest effect over every kind of a trace. */
export function topCells(trace: FactTrace, k: number): TopCell[] {
  const labels = tokenLabels(trace);
  const cells = trace.grids.flatMap((g: KindGrid) =>
    g.effect.flatMap((row, t) =>
      row.map((effect, layer) => ({
        kind: g.kind,
        token: t,
        tokenString: labels[t],
        layer,
        prob: g.prob[t][layer],
        effect,
        fraction: g.fraction[t][layer],
      }))
    )
  );
  return cells.sort((a, b) => b.effect - a.effect).slice(0, k);
}
