// deno task study end to end on a tiny model folder: the store, CSV and report are written and the
// findings printed; a run out of time stops early and the next run completes it without redoing work;
// the window-size study's traces; a zsRE file as the dataset gives the report's zsRE table.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { ResultStore } from "../experiments/study/store.ts";
import { makeTinyKb } from "./fixtures_tiny_kb.ts";
import { assertSameMetrics } from "./util.ts";

const dir = await Deno.makeTempDir();
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const kb = await makeTinyKb(await getGpu(), `${dir}/model`);

/** The study command on the tiny model with the test's settings and `args`; exit code and output. */
async function runStudy(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
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
      // 3 layers: Hase et al.'s window 1 is the main traces' (1 layer), 28 of GPT-J's 28 layers is all 3.
      "--windows",
      "1,28",
      "--drift-every",
      "2",
      "--processes",
      "1",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** runStudy that must succeed; its output. */
async function study(...args: string[]): Promise<string> {
  const out = await runStudy(...args);
  assert.equal(out.code, 0, out.stderr);
  return out.stdout;
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
// + 5 facts x 2 localizations + the 4 edited facts traced with window 3 + 3 layer selections + MEMIT
// editing 1 and all 3 test facts at once.
const TOTAL = 48 + 10 + 4 + 3 + 2;

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
  assert.match(out, /=== Findings \(48 edits, 14 localization records\) ===/);
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
  assert.match(
    out,
    /Window study \(rome error-injection, 4 facts traced with every window\): window 1: trace R² -?\d\.\d{3} \[.*\], Diff .*; window 3: trace R² /,
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
  // Essence and fluency per method, lowest and highest layer, as measured on the 2 facts.
  assert.match(
    out,
    /\n {2}\+ Fluency \(ROME's n-gram entropy .*\), error-injection, lowest to highest mean over layers: rome [\d.]+ \[.*\] at layer \d to [\d.]+ \[.*\] at layer \d; ft .*; the unedited model [\d.]+ \[[\d.]+, [\d.]+\] \(2 facts\)\./,
  );
  assert.match(
    out,
    /Caveats found in the data:\n {2}! .*Small sample: as few as 3 test facts per condition/s,
  );
  assert.match(out, /Verdict rule: An effect is reported only when .*Holm-corrected/);

  const html = await Deno.readTextFile(`${dir}/study/report.html`);
  assert.match(html, /<dt>run<\/dt><dd>complete: the plan&#39;s 4 edited facts \(1 proxy, 3 test\)<\/dd>/);
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
      "table-window",
    ]
  ) {
    assert.ok(html.includes(`id="${id}"`), `report has ${id}`);
  }
  assert.match(html, /<table id="table-window">/, "the window study has its windows 1 and 3");
  assert.match(html, /<figure id="fig-window-r2">/);
  assert.ok(!html.includes('id="table-mass-editing" class="missing"'), "the mass-editing table is there");
  assert.match(html, /<figure id="fig-essence">/, "Hase et al.'s essence figure is there");
  const csv = (await Deno.readTextFile(`${dir}/study/results.csv`)).trimEnd().split("\r\n");
  assert.equal(csv.length, TOTAL + 1);

  // A third run finds everything stored.
  assert.match(await study("--methods", "rome,ft"), /\n0 results computed in/);
  // Other settings on this store are refused, naming the difference and --force; with --force (and no
  // time to compute) the run goes on and says it mixes settings.
  const other = await runStudy("--methods", "rome,ft", "--v-steps", "4");
  assert.equal(other.code, 1);
  assert.match(other.stderr, /was run with other settings \(.*\).*--force/s);
  assert.equal(stored(), TOTAL, "the refused run wrote nothing");
  const forced = await study("--methods", "rome,ft", "--v-steps", "4", "--force", "--minutes", "0.0001");
  assert.match(forced, /--force: this store now holds results computed under other settings/);
});

Deno.test("study --processes 2 (auto on a software adapter): a worker runs shard 1/2 beside this process into one store, the edits' blocks claimed by whichever is free; the same records as one process editing all 4 facts in one block", async () => {
  const gpu = await getGpu();
  const auto = gpu.info.software !== null && navigator.hardwareConcurrency >= 2;
  const out = await study(
    "--methods",
    "rome,ft",
    "--out",
    `${dir}/study2`,
    "--processes",
    auto ? "auto" : "2",
    // Two blocks of 2 facts (the one-process run above: one block of all 4), so either process can claim one.
    "--block-facts",
    "2",
  );
  if (auto) {
    // Each process with its share of the cores' llvmpipe threads (the command ran again with it set), none
    // (each dispatch on the process's own thread) where the share is a single core.
    const share = Math.floor(navigator.hardwareConcurrency / 2);
    const threads = Deno.env.get("LP_NUM_THREADS") ?? String(share > 1 ? share : 0);
    assert.ok(
      out.includes(
        `\n2 processes (--processes auto: a software adapter on 2+ cores), LP_NUM_THREADS=${threads} each\n`,
      ),
      out,
    );
  }
  const log = await Deno.readTextFile(`${dir}/study2/worker-1.log`);
  // Each process ran its shard (a fact's traces and edits in one), then this one found nothing left.
  for (const [k, text] of [out, log].entries()) {
    const m = new RegExp(`sweep "study": (\\d+) results in shard ${k}/2, 0 already stored, (\\d+) to run`)
      .exec(text);
    assert.ok(m && Number(m[2]) > 0, `shard ${k}/2 ran work:\n${text}`);
  }
  assert.match(log, /\nShard 1\/2: \d+ results computed in .* Run without --shard for the report\./);
  assert.match(out, /worker 1\/2 finished \(.*worker-1\.log\)/);
  assert.match(out, /sweep "study": \d+ results, (\d+) already stored, 0 to run/);
  assert.match(out, new RegExp(`\\n${TOTAL} results computed in`));
  assert.match(out, /=== Findings \(48 edits, 14 localization records\) ===/);
  const rows = (path: string) => {
    const store = ResultStore.open(path);
    try {
      return new Map([...store.results({ sweep: "study" })].map((r) => [r.key, r]));
    } finally {
      store.close();
    }
  };
  const [one, two] = [rows(`${dir}/study/results.db`), rows(`${dir}/study2/results.db`)];
  assert.deepEqual([...two.keys()].sort(), [...one.keys()].sort());
  // Other blocks, claimed by either process (runSweep's claims), batch other edits together: the same bits.
  for (const [key, r] of two) assert.deepEqual(r.metrics, one.get(key)!.metrics, key);
});

Deno.test("study: the mass-editing curve takes its z from the store where the sweep's EMMET edits kept them; the same scores as optimising them", async () => {
  const common = ["--problems", "error-injection", "--localizations", "none", "--windows", "none"];
  // EMMET at the default layer optimises the z the curve's MEMIT edits need (equal request and options).
  await study(...common, "--methods", "emmet", "--drift-every", "0", "--out", `${dir}/mass-kept`);
  // ROME's v* are other values: the curve optimises its own z.
  await study(...common, "--methods", "rome", "--drift-every", "0", "--out", `${dir}/mass-own`);
  const massRows = (path: string) => {
    const store = ResultStore.open(path);
    try {
      return [...store.results({ sweep: "study" })].filter((r) => r.localization.startsWith("mass:"));
    } finally {
      store.close();
    }
  };
  const [kept, own] = [massRows(`${dir}/mass-kept/results.db`), massRows(`${dir}/mass-own/results.db`)];
  assert.deepEqual(kept.map((r) => r.localization), ["mass:1", "mass:3"]);
  for (const r of kept) {
    assert.equal(r.timings.valuesReused, r.metrics.n, `${r.localization}: every z taken from the store`);
  }
  assert.deepEqual(
    own.map((r) => r.timings.valuesReused),
    [0, 1],
    "optimised by the curve (mass:3 reuses mass:1's)",
  );
  own.forEach((r, i) => assertSameMetrics(kept[i], r));
});

Deno.test("study --dataset zsre.json: the zsRE facts are edited and the report gives MEMIT's zsRE metrics", async () => {
  // The tiny folder's facts in MEND's zsRE schema: src = the prompt, rephrase = the paraphrase, alt = the
  // new object, loc = the neighbour prompt (another subject) with that case's true object as loc_ans.
  const cases = JSON.parse(await Deno.readTextFile(`${kb.dir}/counterfact.json`));
  const byPrompt = new Map(
    cases.map((
      c: { requested_rewrite: { prompt: string; subject: string; target_true: { str: string } } },
    ) => [
      c.requested_rewrite.prompt.replace("{}", c.requested_rewrite.subject),
      c.requested_rewrite.target_true.str,
    ]),
  );
  const zsre = cases.map((c: {
    requested_rewrite: {
      prompt: string;
      subject: string;
      target_new: { str: string };
      target_true: { str: string };
    };
    paraphrase_prompts: string[];
    neighborhood_prompts: string[];
  }) => {
    const rw = c.requested_rewrite, src = rw.prompt.replace("{}", rw.subject);
    return {
      subject: rw.subject,
      src,
      pred: rw.target_true.str,
      rephrase: c.paraphrase_prompts[0],
      alt: rw.target_new.str,
      answers: [rw.target_true.str],
      loc: c.neighborhood_prompts[0],
      loc_ans: byPrompt.get(c.neighborhood_prompts[0]),
      cond: `${rw.target_true.str} >> ${rw.target_new.str} || ${src}`,
    };
  });
  const file = `${dir}/zsre.json`;
  await Deno.writeTextFile(file, JSON.stringify(zsre));
  const out = await study(
    "--dataset",
    file,
    "--out",
    `${dir}/zsre-study`,
    "--methods",
    "rome",
    "--problems",
    "error-injection",
    "--mass",
    "none",
    "--localizations",
    "none",
    "--windows",
    "none",
  );
  assert.match(out, /zsre\.json: the model knows \d+ of 24 facts; 4 edited \(1 proxy\)/);
  assert.match(
    out,
    /error-injection rome \(12 edits\): .* \| ES [\d.]+ .*Reliability [\d.]+ .*Specificity [\d.]+/,
  );
  const html = await Deno.readTextFile(`${dir}/zsre-study/report.html`);
  assert.match(html, /<table id="table-zsre">/);
  assert.match(html, /<th>Efficacy<\/th><th>Paraphrase<\/th><th>Specificity<\/th>/);
  const store = ResultStore.open(`${dir}/zsre-study/results.db`);
  try {
    const edits = [...store.results({ sweep: "study" })].filter((r) => r.localization === "layer-grid");
    assert.ok(edits.length === 12 && edits.every((r) => r.fact.startsWith("zsre:")), "zsRE facts edited");
    for (const r of edits) {
      const std = r.metrics.standard as Record<string, number>;
      assert.ok(std.specificity >= 0 && std.specificity <= 1, `${r.key}: specificity ${std.specificity}`);
    }
  } finally {
    store.close();
  }
});
