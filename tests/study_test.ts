// deno task study end to end on a tiny model folder: the store, CSV and report are written and the
// findings printed; a run out of time stops early and the next run completes it without redoing work.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { ResultStore } from "../experiments/study/store.ts";
import { makeTinyKb } from "./fixtures_tiny_kb.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const kb = await makeTinyKb(await getGpu(), `${dir}/model`);

async function study(...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../experiments/commands/study.ts", import.meta.url).pathname,
      "--model",
      kb.dir,
      "--out",
      `${dir}/study`,
      "--stats-dir",
      `${dir}/stats`,
      "--facts",
      "4",
      "--trace-facts",
      "5",
      "--problems",
      "error-injection,fact-amplification",
      "--extra-methods",
      "ft",
      "--extra-problems",
      "error-injection",
      "--v-steps",
      "3",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  return dec.decode(out.stdout);
}

function stored(): number {
  const store = ResultStore.open(`${dir}/study/results.db`);
  try {
    return store.count({ sweep: "study" });
  } finally {
    store.close();
  }
}

// 3-layer model: 4 facts x 3 layers x (ROME x 2 problems + FT-L x 1 problem) = 36 edits,
// + 5 facts x 2 localizations + 3 layer selections.
const TOTAL = 36 + 10 + 3;

Deno.test("study: out of time it stops; run again it resumes; the findings, CSV and report", async () => {
  const none = await study("--minutes", "0.0001");
  assert.match(
    none,
    /No results yet, so no report\. 0 results computed in .*the time budget ran out: run the same command again/,
  );

  // Only the first phase (no extra methods), then the whole study: the second run adds only FT-L.
  await study("--extra-methods", "none");
  const partial = stored();
  assert.equal(partial, TOTAL - 12);
  const out = await study();
  assert.equal(stored(), TOTAL);
  assert.match(out, /\n12 results computed in [^;]*\.\n/);
  assert.match(out, /the model knows \d+ of 24 facts; 4 edited \(1 proxy\), 5 traced/);
  assert.match(
    out,
    /\[1\/2 localization \+ editing\] rome x 2 problems x 3 layers \+ causal-tracing and zeroing/,
  );
  assert.match(out, /\[2\/2 more editing methods\] ft x 1 problems x 3 layers/);
  assert.match(out, /=== Findings \(36 edits, 10 localization records\) ===/);
  // Hase et al.'s means beside the standard metrics, per problem x method (n/a where they do not apply).
  assert.match(
    out,
    /error-injection rome \(12 edits\): rewrite -?[\d.]+ .* \| ES [\d.]+ {2}PS [\d.]+ {2}NS /,
  );
  assert.match(out, /error-injection ft \(12 edits\): .* \| ES [\d.]+ /);
  assert.match(out, /fact-amplification rome \(12 edits\): .* \| standard metrics n\/a/);
  assert.match(
    out,
    /error-injection rome +-?\d\.\d{3} \| -?\d\.\d{3} \| -?\d\.\d{3} +Diff -?\d\.\d{3}, F-test p /,
  );
  assert.match(out, /Hase et al\.'s finding .*: holds in \d of 3 problem x method conditions\./);
  assert.match(out, /Golden layer \(error-injection\): \d, rewrite/);
  assert.match(
    out,
    /Layer selection \(rome, error-injection; mean rewrite on the test facts\):\n {2}causal tracing \(CMA\) +layer \d/,
  );

  const html = await Deno.readTextFile(`${dir}/study/report.html`);
  for (const id of ["table-hase-1", "table-hase-3", "fig-heatmaps", "table-golden", "table-selection-004"]) {
    assert.ok(html.includes(`id="${id}"`), `report has ${id}`);
  }
  const csv = (await Deno.readTextFile(`${dir}/study/results.csv`)).trimEnd().split("\r\n");
  assert.equal(csv.length, TOTAL + 1);

  // A third run finds everything stored.
  assert.match(await study(), /\n0 results computed in/);
});
