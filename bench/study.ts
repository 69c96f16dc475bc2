// The study's wall time per process count (issue 20's targets: `./locus task study --quick` within a
// minute, the papers' scale within 30 minutes), on whatever adapter Locus finds. Each run is the study
// command itself, from a fresh output folder (nothing resumed) to its report.
//
//   ./locus run -A bench/study.ts [--scales quick,coverage] [--processes 1,2] [--minutes 15]
//
//   quick     `./locus task study --quick` (229 results on the embedded model)
//   coverage  every method x problem x layer on 4 test + 2 proxy facts, 6 facts traced, no mass edits and no
//             window study (1095 results): the papers' scale's cost per condition on 1/50th of its edits
//   papers    the default study, stopped by --minutes: how many of its results one budget computes
// --processes: the study's process counts to compare (default 1 and 2; 1, 2 and 4 on a GPU, where a second
// process fills the GPU while the first records or waits for a readback).
import { parseArgs } from "node:util";
import { getGpu } from "../engine/gpu.ts";

const SCALES: Record<string, string[]> = {
  quick: ["--quick"],
  coverage: ["--facts", "4", "--proxy", "2", "--trace-facts", "6", "--mass", "none", "--windows", "none"],
  papers: [],
};

const { values } = parseArgs({
  args: Deno.args,
  options: {
    scales: { type: "string", default: "quick,coverage" },
    processes: { type: "string" },
    minutes: { type: "string", default: "15" },
  },
});
const scales = values.scales!.split(",").filter(Boolean);
for (const s of scales) {
  if (!(s in SCALES)) throw new Error(`--scales: unknown scale "${s}" (${Object.keys(SCALES).join(", ")})`);
}
const gpu = await getGpu();
const adapter = gpu.describe();
const processes = (values.processes ?? (gpu.info.software ? "1,2" : "1,2,4")).split(",").map(Number);
if (processes.some((n) => !Number.isInteger(n) || n < 1)) {
  throw new Error(`--processes: expected counts >= 1, got "${values.processes}"`);
}
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes: expected a positive number, got "${values.minutes}"`);

console.log(`adapter: ${adapter}`);
console.log(
  `| scale | processes | results | wall s | results / s | against ${processes[0]} | study's clock |`,
);
console.log("| ----- | --------- | ------- | ------ | ----------- | ---------- | ------------- |");
const study = new URL("../experiments/commands/study.ts", import.meta.url).pathname;
for (const scale of scales) {
  let first = NaN; // results per second of the scale's first process count
  for (const n of processes) {
    const out = await Deno.makeTempDir({ prefix: `locus-bench-study-${scale}-${n}-` });
    try {
      const args = ["run", "-A", study, ...SCALES[scale], "--out", out, "--processes", String(n)];
      args.push("--minutes", scale === "papers" ? String(minutes) : "600");
      const started = performance.now();
      const run = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
        .output();
      const seconds = (performance.now() - started) / 1000;
      const stdout = new TextDecoder().decode(run.stdout);
      // The study's last line: "N results computed in 1m05s." (then "; the time budget ran out ..." when
      // --minutes stopped it).
      const done = /(\d+) results computed in (\w+)[.;]/.exec(stdout);
      if (!run.success || !done) {
        console.log(`| ${scale} | ${n} | failed (exit ${run.code}) | ${seconds.toFixed(1)} | | | |`);
        console.error(new TextDecoder().decode(run.stderr).slice(-2000));
        continue;
      }
      const results = Number(done[1]), rate = results / seconds;
      if (Number.isNaN(first)) first = rate;
      console.log(
        `| ${scale} | ${n} | ${results} | ${seconds.toFixed(1)} | ${rate.toFixed(2)} | ` +
          `${(rate / first).toFixed(2)}x | ${done[2]} |`,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  }
}
