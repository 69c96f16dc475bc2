// experiments/pictures/charts.ts and the heatmaps' colour scale: tick choice and labels, axis origins, bars.
import assert from "node:assert/strict";
import { barChartSvg, formatTick, lineChart, terminalBar, ticks } from "../experiments/pictures/charts.ts";
import { heatmapSvg, terminalHeatmap } from "../experiments/pictures/heatmap.ts";
import type { FactTrace } from "../experiments/localization/tracing.ts";

Deno.test("ticks are 1-2-5 multiples covering the range", () => {
  assert.deepEqual(ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(ticks(3, 47), [10, 20, 30, 40]);
  assert.deepEqual(ticks(5, 5), [5]);
});

Deno.test("line chart: one path per series, log axis on 1-2-5 ticks, legend wide enough", () => {
  const pts: [number, number][] = [[0, 6], [1, 3], [2, 1.1]];
  const svg = lineChart([{ name: "a rather long series name", points: pts }, {
    name: "b",
    points: [[0, 2], [2, 2]],
  }], {
    title: "T <1>",
    xLabel: "x",
    yLabel: "y",
    logY: true,
  });
  assert.equal(svg.match(/<path /g)?.length, 2);
  for (const label of [">1<", ">2<", ">5<", ">10<"]) assert.ok(svg.includes(label), `tick ${label}`);
  assert.ok(svg.includes("T &lt;1&gt;"), "title is escaped");
  const width = Number(/width="(\d+)"/.exec(svg)![1]);
  assert.ok(width > 640, "the canvas grows for the long legend entry");
});

Deno.test("ticks: integer steps on layer axes, exact zeros, labels with the step's decimals", () => {
  assert.deepEqual(ticks(0, 5, 5, true), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(ticks(0, 3, 5, true), [0, 1, 2, 3], "no 0.5 steps on a 4-layer axis");
  // 0.1 + 0.2 - 0.3 style residues: a tick at 0 is exactly 0.
  const t = ticks(-0.3, 0.3);
  assert.ok(t.includes(0) && !t.some((v) => v !== 0 && Math.abs(v) < 1e-9), t.join(" "));
  assert.equal(formatTick(0, 0.1), "0");
  assert.equal(formatTick(3e-18, 0.1), "0.0");
  assert.equal(formatTick(0.25, 0.05), "0.25");
  assert.equal(formatTick(1200, 200), "1200");
  assert.equal(formatTick(0.0015, 0.0005), "1.5e-3");
});

/** The text of every element of class `cls` in an SVG. */
function labels(svg: string, cls: string): string[] {
  return [...svg.matchAll(new RegExp(`class="${cls}"[^>]*>([^<]*)<`, "g"))].map((m) => m[1]);
}

Deno.test("line chart: the value axis starts at 0 (or says it does not), layer axes have integer ticks", () => {
  // Effects between 0.90 and 0.901: a zoomed axis would make 0.001 look large.
  const flat = lineChart([{ name: "effect", points: [[0, 0.9], [1, 0.9005], [2, 0.901], [3, 0.9]] }], {
    title: "t",
    xLabel: "layer",
    yLabel: "effect",
  });
  assert.deepEqual(labels(flat, "xtick"), ["0", "1", "2", "3"]);
  assert.equal(labels(flat, "ytick")[0], "0");
  assert.ok(labels(flat, "ytick").every((t) => /^\d(\.\d)?$/.test(t)), labels(flat, "ytick").join(" "));
  // Signed values: 0 is inside the axis and drawn darker.
  const signed = lineChart([{ name: "s", points: [[0, -0.2], [1, 0.6]] }], {
    title: "t",
    xLabel: "l",
    yLabel: "y",
  });
  assert.ok(labels(signed, "ytick").includes("0") && labels(signed, "ytick")[0].startsWith("-"));
  assert.ok(signed.includes('stroke="#999"/>'), "the zero line");
  // Opting out is stated on the axis.
  const zoomed = lineChart([{ name: "p", points: [[0, 12], [1, 14]] }], {
    title: "t",
    xLabel: "step",
    yLabel: "perplexity",
    yZero: false,
  });
  assert.ok(zoomed.includes("perplexity (axis does not start at 0)"));
  assert.notEqual(labels(zoomed, "ytick")[0], "0");
});

Deno.test("bar chart: negative values below a zero line, nice ticks; terminal bars", () => {
  const svg = barChartSvg([{ label: "g", bars: [{ name: "a", value: 0.8 }, { name: "b", value: -0.3 }] }], {
    title: "t",
    yLabel: "score",
  });
  const ys = labels(svg, "ytick");
  assert.ok(ys.includes("0") && ys.some((t) => t.startsWith("-")), ys.join(" "));
  const heights = [...svg.matchAll(/class="bar"[^>]* y="([\d.]+)"[^>]* height="([\d.]+)"/g)].map((m) => [
    Number(m[1]),
    Number(m[2]),
  ]);
  assert.equal(heights.length, 2);
  assert.ok(heights[0][1] > 0 && heights[1][1] > 0, "the negative bar has a height");
  assert.ok(Math.abs(heights[0][0] + heights[0][1] - heights[1][0]) < 1e-9, "both start at the zero line");
  assert.equal(terminalBar(0.5, 10, false), "#####     ");
  assert.equal(terminalBar(1, 4, true), "████");
  assert.equal(terminalBar(0.0625, 4, true), "▎   ");
});

Deno.test("heatmap: a diverging scale, negative effects in orange and named in the caption", () => {
  const grid = (effect: number[][]) => ({
    kind: "mlp" as const,
    window: 1,
    prob: effect,
    effect,
    fraction: effect,
    layers: { maxEffect: [], maxFraction: [], lastSubjectEffect: [], lastSubjectFraction: [] },
  });
  const trace = {
    prompt: "a b is",
    subject: "a b",
    target: "c",
    tokens: ["a", " b", " is"],
    targetToken: " c",
    method: "noise",
    ids: [0, 1, 2],
    subjectRange: [0, 2],
    targetId: 3,
    clean: 0.9,
    corrupted: 0.1,
    noise: 1,
    samples: 2,
    seed: 1,
    grids: [grid([[0.4, 0], [-0.4, 0.2], [0, 0]])],
  } as unknown as FactTrace;
  const svg = heatmapSvg(trace);
  assert.ok(svg.includes('fill="rgb(0,109,44)"'), "+max: the kind's full colour");
  assert.ok(svg.includes('fill="rgb(230,97,1)"'), "-max: full orange");
  assert.ok(svg.includes('fill="rgb(255,255,255)"'), "0: white");
  assert.ok(svg.includes("orange = -0.400"));
  assert.match(terminalHeatmap(trace, "mlp", { color: false }), /negative effects blank/);
});

Deno.test("line chart bands and bar error bars: drawn, inside the axis, gaps where undefined", () => {
  const svg = lineChart([{
    name: "rome",
    points: [[0, 0.5], [1, 0.6], [2, 0.7], [3, 0.4]],
    band: [[0.4, 0.6], [0.5, 1.3], [NaN, NaN], [0.3, 0.5]],
  }], { title: "t", xLabel: "layer", yLabel: "score" });
  // Two runs of defined intervals: layers 0-1 (a polygon) and layer 3 alone (an error bar).
  assert.equal(svg.split('<polygon class="band"').length - 1, 1);
  assert.equal(svg.split('<line class="band"').length - 1, 1);
  // The band's upper end (1.3) is inside the value axis, which still starts at 0.
  const yTicks = [...svg.matchAll(/class="ytick"[^>]*>([^<]*)</g)].map((m) => Number(m[1]));
  assert.equal(yTicks[0], 0);
  assert.ok(yTicks.at(-1)! >= 1.3, `axis top ${yTicks.at(-1)}`);

  const bars = barChartSvg([
    { label: "rome", bars: [{ name: "Layer", value: 0.2, lower: 0.1, upper: 0.45 }] },
    { label: "memit", bars: [{ name: "Layer", value: 0.3 }] },
  ], { title: "R²", yLabel: "R²", xLabel: "method" });
  assert.equal(bars.split('class="errorbar"').length - 1, 1);
  assert.match(bars, /rome, Layer: 0.200 \[0.100, 0.450\]/);
  assert.match(bars, />method</);
  // Counts are labelled as integers on integer ticks: no "40.00", no "0.5 facts".
  const counts = barChartSvg(
    [0, 40, 3].map((c, l) => ({ label: String(l), bars: [{ name: "facts", value: c }] })),
    {
      title: "peaks",
      yLabel: "facts",
    },
  );
  assert.match(counts, />40</);
  assert.doesNotMatch(counts, /40\.00|0\.00/);
  for (const m of counts.matchAll(/class="ytick"[^>]*>([^<]*)</g)) assert.match(m[1], /^\d+$/);
});
