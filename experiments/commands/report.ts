// ./locus task report RESULTS.db: the HTML report (experiments/study/report.ts) of a sweep's results store.
//
//   ./locus task report runs/sweep.db [--out runs/sweep.html] [--sweep NAME] [--heatmaps 3] [--title TEXT]
import { parseArgs } from "node:util";
import { writeAtomic } from "../../engine/files.ts";
import { runMain } from "../../engine/main.ts";
import { loadSweep, type SweepData } from "../study/analysis.ts";
import { renderReport } from "../study/report.ts";
import { ResultStore } from "../study/store.ts";

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
