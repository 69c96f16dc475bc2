// SVG pictures of neuron attribution and Layer Gradient Analysis (./locus task attribute, the study's
// report): per-layer curves, LGA's S_l with Tukey's fences (Chun & Hur, layer choice by gradient
// analysis), and signed heatmaps of layers x neurons or prompts x layers (integrated gradients against
// causal tracing, Dai et al. "Knowledge Neurons in Pretrained Transformers", section 3).
import { escapeXml, lineChart } from "./charts.ts";
import type { LgaResult } from "../localization/attribution.ts";

const fmt = (v: number) => (Number.isFinite(v) ? v.toPrecision(3) : "n/a");

/** White at 0, red for positive, blue for negative values, full colour at |v| = max. */
function diverging(v: number, max: number): string {
  const a = max > 0 && Number.isFinite(v) ? Math.min(1, Math.abs(v) / max) : 0;
  const [r, g, b] = v >= 0 ? [214, 39, 40] : [31, 119, 180];
  const mix = (c: number) => Math.round(255 + a * (c - 255));
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

/** Per-layer curves (x = layer), one series per entry. */
export function layerCurvesSvg(
  series: { name: string; values: readonly number[] }[],
  title: string,
  yLabel: string,
): string {
  return lineChart(
    series.map((s) => ({ name: s.name, points: s.values.map((v, l) => [l, v] as [number, number]) })),
    {
      title,
      xLabel: "layer",
      yLabel,
      width: 760,
    },
  );
}

/** LGA's S_l per layer with Tukey's fences drawn as flat lines and the golden layer named in the title. */
export function lgaChartSvg(result: Pick<LgaResult, "scores" | "selection" | "params">): string {
  const { fences, golden, excluded } = result.selection;
  const flat = (v: number) => result.scores.map(() => v);
  return layerCurvesSvg(
    [
      { name: "S_l", values: result.scores },
      { name: "upper fence", values: flat(fences.upper) },
      { name: "lower fence", values: flat(fences.lower) },
    ],
    `Layer Gradient Analysis (${result.params.join(" + ")}): golden layer ${golden}` +
      (excluded.length ? `, excluded ${excluded.join(", ")}` : ""),
    "sum over requests of <grad old, grad new>",
  );
}

/** Columns a heatmap draws at most; wider rows are binned (each bin shows its largest-magnitude value). */
const MAX_COLUMNS = 512;

/**
 * Heatmaps stacked vertically, each rows x columns coloured by signed value (red +, blue -, white 0,
 * scaled per panel). Used for layers x neurons (one panel) and prompts x layers (attribution over
 * causal tracing, Chun & Hur's figure 1).
 */
export function heatmapPanelsSvg(
  panels: { title: string; rowLabels: string[]; values: ArrayLike<number>[]; xLabel: string }[],
  title: string,
): string {
  const binned = panels.map((p) => {
    const columns = p.values[0]?.length ?? 0;
    const bin = Math.max(1, Math.ceil(columns / MAX_COLUMNS));
    const values = p.values.map((row) =>
      Array.from({ length: Math.ceil(row.length / bin) }, (_, c) => {
        let best = 0;
        for (
          let i = c * bin;
          i < Math.min(row.length, (c + 1) * bin);
          i++
        ) if (Math.abs(row[i]) > Math.abs(best)) best = row[i];
        return best;
      })
    );
    return { ...p, bin, columns, values };
  });
  const widest = Math.max(...binned.map((p) => p.values[0]?.length ?? 0));
  const cellW = Math.max(1, Math.min(28, Math.floor(640 / Math.max(1, widest))));
  const labelW = 10 +
    7 * Math.max(4, ...binned.flatMap((p) => p.rowLabels.map((s) => Math.min(40, s.length))));
  const cellH = 16;
  // Wide enough for the cells and for each panel's title and caption (~7 px per character).
  const textW = 7 * Math.max(...binned.map((p) => Math.max(p.title.length, p.xLabel.length + 60)));
  const width = labelW + Math.max(widest * cellW, textW) + 20;
  const parts: string[] = [];
  let y = 44;
  for (const p of binned) {
    const max = Math.max(0, ...p.values.flat().map(Math.abs).filter(Number.isFinite));
    parts.push(`<text x="${labelW}" y="${y}" font-size="13">${escapeXml(p.title)}</text>`);
    y += 8;
    p.values.forEach((row, r) => {
      // Long labels keep their end ("... Brandt is → Danish"): the answer is what tells rows apart.
      const label = p.rowLabels[r].length > 40 ? "..." + p.rowLabels[r].slice(-37) : p.rowLabels[r];
      parts.push(
        `<text x="${labelW - 4}" y="${y + r * cellH + 12}" text-anchor="end">${escapeXml(label)}</text>`,
      );
      row.forEach((v, c) => {
        const what = p.bin > 1
          ? `columns ${c * p.bin}-${Math.min(p.columns, (c + 1) * p.bin) - 1}`
          : `column ${c}`;
        parts.push(
          `<rect x="${labelW + c * cellW}" y="${y + r * cellH}" width="${cellW}" height="${cellH}" fill="${
            diverging(v, max)
          }">` +
            `<title>${escapeXml(`${p.rowLabels[r]}, ${what}: ${fmt(v)}`)}</title></rect>`,
        );
      });
    });
    const h = p.values.length * cellH, columns = p.values[0]?.length ?? 0, w = columns * cellW;
    parts.push(`<rect x="${labelW}" y="${y}" width="${w}" height="${h}" fill="none" stroke="#999"/>`);
    // Column numbers (the first column of each bin), about a dozen along the axis.
    const every = Math.max(1, Math.ceil(columns / 12));
    for (let c = 0; c < columns; c += every) {
      parts.push(
        `<text x="${labelW + (c + 0.5) * cellW}" y="${y + h + 12}" text-anchor="middle" font-size="10">${
          c * p.bin
        }</text>`,
      );
    }
    y += 12;
    const caption = `${p.xLabel}${
      p.bin > 1 ? ` (bins of ${p.bin}, largest magnitude shown)` : ""
    }; red +, blue -, full colour = ${fmt(max)}`;
    parts.push(`<text x="${labelW}" y="${y + h + 14}" font-size="11">${escapeXml(caption)}</text>`);
    y += h + 44;
  }
  const height = y;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    ...parts,
    "</svg>",
  ].join("\n");
}

/** Layers x neurons attribution heatmap of one fact or an average. */
export function neuronHeatmapSvg(neurons: ArrayLike<number>[], title: string): string {
  return heatmapPanelsSvg(
    [{
      title: "neuron attribution (integrated gradients, pre-GELU at the last token)",
      rowLabels: neurons.map((_, l) => `layer ${l}`),
      values: neurons,
      xLabel: "neuron",
    }],
    title,
  );
}
