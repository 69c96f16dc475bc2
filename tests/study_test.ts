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
      "--quick",
      "--facts",
      "3",
      "--proxy",
      "1",
      "--trace-facts",
      "5",
      "--problems",
      "error-injection,fact-amplification",
      "--mass",
      "memit",
      "--v-steps",
      "3",
      "--drift-every",
      "2",
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

// 3-layer model: 4 facts x 3 layers x (ROME + FT-L) x 2 problems = 48 edits,
// + 5 facts x 2 localizations + 3 layer selections + MEMIT editing 1 and all 3 test facts at once.
const TOTAL = 48 + 10 + 3 + 2;

Deno.test("study: out of time it stops; run again it resumes; the findings, CSV and report", async () => {
  const none = await study("--minutes", "0.0001");
  assert.match(
    none,
    /No results yet, so no report\. 0 results computed in .*the time budget ran out: run the same command again/,
  );

  // ROME alone first, then with FT-L: the second run adds only FT-L's edits.
  await study("--methods", "rome");
  const partial = stored();
  assert.equal(partial, TOTAL - 24);
  const out = await study("--methods", "rome,ft");
  assert.equal(stored(), TOTAL);
  assert.match(out, /\n24 results computed in [^;]*\.\n/);
  assert.match(out, /the model knows \d+ of 24 facts; 4 edited \(1 proxy\), 5 traced/);
  assert.match(
    out,
    /\[1\/1 localization \+ editing\] rome, ft x 2 problems x 3 layers \+ causal-tracing and zeroing/,
  );
  assert.match(out, /=== Findings \(48 edits, 10 localization records\) ===/);
  // Hase et al.'s means beside the standard metrics, per problem x method (n/a where they do not apply).
  assert.match(
    out,
    /error-injection rome \(12 edits\): rewrite -?[\d.]+ .* \| ES [\d.]+ {2}PS [\d.]+ {2}NS /,
  );
  assert.match(out, /error-injection ft \(12 edits\): .* \| ES [\d.]+ /);
  assert.match(out, /fact-amplification ft \(12 edits\): /);
  assert.match(
    out,
    /fact-amplification rome \(12 edits\): .* \| standard metrics n\/a .* \| essence [\d.]+ \(6 edits\)/,
  );
  // Essence and fluency on every 2nd edited fact (2 of 4) at every layer, method and problem.
  assert.match(
    out,
    /\nEssence measured on 24 and fluency on 24 of 48 edits \(2 facts: 1 in 2 of the seeded sample, .*\)/,
  );
  // The R² table with intervals and the verdict rule; the summary and caveats as in the report.
  assert.match(
    out,
    /error-injection rome +-?\d\.\d{3} \| -?\d\.\d{3} \| -?\d\.\d{3} +Diff -?\d\.\d{3} \[.*\], f² .*, Holm p \S+: (effect|no effect|n\/a)/,
  );
  assert.match(out, /=== Summary \(.*; results sha256 [0-9a-f]{16}…\) ===/);
  assert.match(
    out,
    /\n {2}\+ The edit layer explains more of the rewrite score's variance .* in \d of 4 conditions/,
  );
  assert.match(
    out,
    /\n {2}\+ Layer selection \(rome, error-injection\): causal tracing \(CMA\) (layer \d|no choice)/,
  );
  assert.match(
    out,
    /Caveats found in the data:\n {2}! .*Small sample: as few as 3 test facts per condition/s,
  );
  assert.match(out, /Verdict rule: An effect is reported only when .*Holm-corrected/);

  const html = await Deno.readTextFile(`${dir}/study/report.html`);
  for (
    const id of [
      "caveats",
      "findings",
      "table-hase-1",
      "table-hase-3",
      "fig-heatmaps",
      "table-golden",
      "table-selection-004",
      "table-counterfact",
      "table-mass-editing",
    ]
  ) {
    assert.ok(html.includes(`id="${id}"`), `report has ${id}`);
  }
  assert.ok(!html.includes('id="table-mass-editing" class="missing"'), "the mass-editing table is there");
  assert.match(html, /<figure id="fig-essence">/, "Hase et al.'s essence figure is there");
  const csv = (await Deno.readTextFile(`${dir}/study/results.csv`)).trimEnd().split("\r\n");
  assert.equal(csv.length, TOTAL + 1);

  // A third run finds everything stored.
  assert.match(await study("--methods", "rome,ft"), /\n0 results computed in/);
});
