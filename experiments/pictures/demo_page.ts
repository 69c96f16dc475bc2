// What `./locus task demo` shows: percentages, top answers, the terminal's probability bars, and the
// whole run as one self-contained HTML page (inline SVG and CSS, nothing fetched): the fact, its causal
// trace, where to edit and why, the ROME edit's probabilities before and after, and the undo.
import type { Prediction } from "../../engine/predict.ts";
import type { EditingCase } from "../editing/problems.ts";
import type { ProbeResult } from "../evaluation/metrics.ts";
import type { TracingEvidence } from "../localization/layer_selection.ts";
import type { FactTrace, NoiseLevel } from "../localization/tracing.ts";
import { barChartSvg, escapeXml, lineChart, terminalBar } from "./charts.ts";
import { heatmapSvg } from "./heatmap.ts";

/** A probability as a percentage with as many decimals as small values need ("62%", "0.4%", "0.07%"). */
export function percent(p: number): string {
  return `${(100 * p).toFixed(p >= 0.1 ? 0 : p >= 0.001 ? 1 : 2)}%`;
}

/** "Oslo 62%, Paris 20%, Rome 4%" */
export function top3(predictions: Prediction[]): string {
  return predictions.map((p) => `${p.token.trim()} ${percent(p.prob)}`).join(", ");
}

/** Two bar rows per object: "   Munich   before |██████████    | 99%". */
export function terminalBars(r: ProbeResult, c: EditingCase, unicode: boolean): string[] {
  const w = Math.max(c.targetTrue.length, c.targetNew.length);
  const rows: string[] = [];
  for (const [object, p] of [[c.targetTrue, r.pTrue], [c.targetNew, r.pNew]] as const) {
    rows.push(
      `     p(${object})${" ".repeat(w - object.length)} before |${terminalBar(p[0], 25, unicode)}| ${
        percent(p[0])
      }`,
    );
    rows.push(`     ${" ".repeat(w + 3)} after  |${terminalBar(p[1], 25, unicode)}| ${percent(p[1])}`);
  }
  return rows;
}

/** "3 x std of ... (ROME) over 12 known facts' subjects = 0.3207". */
export function noiseText(n: NoiseLevel): string {
  return `${n.rule} over ${n.subjects} subject${n.subjects === 1 ? "" : "s"} = ${n.level.toFixed(4)}`;
}

/** Everything the demo showed, for its page. */
export interface DemoPage {
  model: string;
  adapter: string;
  id: string;
  c: EditingCase;
  prompt: string;
  knownWarning: string | null;
  noise: NoiseLevel;
  trace: FactTrace;
  evidence: TracingEvidence;
  keyToken: string;
  layerText: string[];
  layer: number;
  probes: ProbeResult[];
  scoreLines: string[];
  undoText: string;
  seconds: number;
}

/** The demo as one self-contained HTML page (inline SVG and CSS, nothing fetched). */
export function demoHtml(d: DemoPage): string {
  const e = escapeXml;
  const curve = lineChart([
    { name: `MLP effect at "${d.keyToken}"`, points: d.evidence.effects.map((v, l) => [l, v]) },
    { name: "noise threshold", points: d.evidence.effects.map((_, l) => [l, d.evidence.threshold]) },
  ], {
    title: `Restoring layer l's MLP output at the key token "${d.keyToken}"`,
    xLabel: "layer",
    yLabel: "indirect effect on p(" + d.c.targetTrue + ")",
    width: 560,
    height: 300,
  });
  const bars = barChartSvg(
    d.probes.flatMap((p) => [
      {
        label: `p(${d.c.targetTrue})`,
        section: p.label,
        bars: [{ name: "before", value: p.pTrue[0] }, { name: "after", value: p.pTrue[1] }],
      },
      {
        label: `p(${d.c.targetNew})`,
        section: p.label,
        bars: [{ name: "before", value: p.pNew[0] }, { name: "after", value: p.pNew[1] }],
      },
    ]),
    { title: "Probabilities before and after the edit", yLabel: "probability", max: 1 },
  );
  const rows = d.probes.map((p) =>
    `<tr><td>${e(p.label)}</td><td>${e(p.text)}</td><td>${percent(p.pTrue[0])} → ${
      percent(p.pTrue[1])
    }</td>` +
    `<td>${percent(p.pNew[0])} → ${percent(p.pNew[1])}</td><td>${e(top3(p.before))}</td><td>${
      e(top3(p.after))
    }</td></tr>`
  ).join("\n");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Locus demo: ${e(d.prompt)}</title>
<style>body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; line-height: 1.4; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.warning { color: #a00; font-weight: bold; } figure { margin: 1em 0; overflow-x: auto; }</style></head>
<body>
<h1>Where does the model keep a fact, and can we rewrite it?</h1>
<p>Model <code>${e(d.model)}</code> on ${e(d.adapter)}; ${d.seconds.toFixed(1)} s.</p>
<h2>1. The fact (${e(d.id)})</h2>
<p>"${e(d.prompt)} …" → <b>${e(d.c.targetTrue)}</b>. The model answers: ${e(top3(d.probes[0].before))}.</p>
${d.knownWarning ? `<p class="warning">${e(d.knownWarning)}</p>` : ""}
<h2>2. Causal tracing</h2>
<p>The subject's tokens (*) are noised (${e(noiseText(d.noise))}); one hidden state at a time is restored
from the clean run. Colour = how much of p(${e(d.c.targetTrue)}) that brings back.</p>
<figure>${heatmapSvg(d.trace)}</figure>
<h2>3. Where to edit</h2>
${d.layerText.map((t) => `<p>${e(t)}</p>`).join("\n")}
<figure>${curve}</figure>
<h2>4. ROME edit: ${e(d.c.targetTrue)} → ${e(d.c.targetNew)} at layer ${d.layer}</h2>
<table><tr><th></th><th>prompt</th><th>p(${e(d.c.targetTrue)})</th><th>p(${e(d.c.targetNew)})</th>
<th>top answers before</th><th>top answers after</th></tr>
${rows}</table>
<figure>${bars}</figure>
${d.scoreLines.map((t) => `<p>${e(t)}</p>`).join("\n")}
<p>Metric definitions: docs/metrics.md in the repository.</p>
<h2>5. Undo</h2>
<p>${e(d.undoText)}</p>
</body></html>
`;
}
