import assert from "node:assert/strict";
import { lineChart, ticks } from "../experiments/charts.ts";

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
