// The quality measurement's arithmetic (experiments/editing/edit_quality.ts: means over the cases that have
// a score, standard errors against a float64 reference, the quality bar's thresholds, which methods edit in
// one batch) and ./locus task quality's usage text and option errors (experiments/commands/quality.ts).
import assert from "node:assert/strict";
import {
  editMode,
  formatMean,
  meanScores,
  qualityBar,
  type QualityRow,
  scoreSem,
  standardMean,
} from "../experiments/editing/edit_quality.ts";
import type { CaseScores } from "../experiments/editing/problems.ts";
import { runScript } from "./util.ts";

const s = (rewrite: number, paraphrase: number, neighborhood: number, overall: number): CaseScores => ({
  rewrite,
  paraphrase,
  neighborhood,
  overall,
});

Deno.test("meanScores averages each score over the cases that have it; scoreSem is std / sqrt(n)", () => {
  const scores = [s(1, NaN, 0.5, 0.6), s(0.5, 0.25, 1, 0.4), s(0, 0.75, NaN, 0.2)];
  const m = meanScores(scores);
  assert.equal(m.rewrite, 0.5);
  assert.equal(m.paraphrase, 0.5, "the NaN paraphrase is left out, not counted as 0");
  assert.equal(m.neighborhood, 0.75);
  assert.ok(Math.abs(m.overall - 0.4) < 1e-15);
  assert.ok(Number.isNaN(meanScores([s(1, NaN, 1, 1)]).paraphrase), "no case has it: NaN");
  // Float64 reference: the unbiased std of [1, 0.5, 0] is 0.5, over sqrt(3).
  assert.ok(Math.abs(scoreSem(scores, "rewrite") - 0.5 / Math.sqrt(3)) < 1e-15);
  // Two paraphrase scores, 0.25 and 0.75: std sqrt(0.125), over sqrt(2) = 0.25.
  assert.ok(Math.abs(scoreSem(scores, "paraphrase") - 0.25) < 1e-15);
  assert.ok(Number.isNaN(scoreSem([s(1, 1, 1, 1)], "rewrite")), "one case has no standard error");
  assert.equal(formatMean(NaN), "  -  ");
  assert.equal(formatMean(0.12345), "0.123");
});

Deno.test("qualityBar: ROME needs >= 100 edits at ES >= 0.9, PS >= 0.8, NS >= 0.95; MEMIT a batch of >= 100 at rewrite >= 0.8", () => {
  const standard = (es: number, ps: number, ns: number) => ({
    efficacySuccess: es,
    efficacyMagnitude: null,
    paraphraseSuccess: ps,
    paraphraseMagnitude: null,
    neighborhoodSuccess: ns,
    neighborhoodMagnitude: null,
    reliability: null,
    generalization: null,
    locality: null,
    portability: null,
    specificity: null,
  });
  const rome = (cases: number, es: number, ps: number, ns: number, spread = 0): QualityRow => ({
    label: "x",
    layers: [0],
    cases,
    seconds: 1,
    mean: s(NaN, NaN, NaN, NaN),
    scores: [],
    // Half the cases at the value + spread and half at - spread: the bar reads the mean over all of them.
    standard: Array.from({ length: cases }, (_, i) => {
      const d = i % 2 ? spread : -spread;
      return standard(es + d, ps + d, ns + d);
    }),
  });
  const memit = (cases: number, rewrite: number): QualityRow => ({
    ...rome(0, 0, 0, 0),
    cases,
    mean: s(rewrite, NaN, NaN, NaN),
  });
  const verdicts = (r?: QualityRow, m?: QualityRow) => qualityBar(r, 3, m).map(([, ok]) => ok);
  assert.deepEqual(verdicts(rome(100, 0.901, 0.801, 0.951), memit(100, 0.8)), [true, true, true, true]);
  assert.deepEqual(
    verdicts(rome(98, 1, 1, 1), memit(99, 0.95)),
    [false, false, false, false],
    "too few edits",
  );
  assert.deepEqual(
    verdicts(rome(100, 0.89, 0.79, 0.949), memit(100, 0.79)),
    [false, false, false, false],
  );
  assert.deepEqual(
    verdicts(rome(100, 0.95, 0.5, 0.99)),
    [true, false, true],
    "an unmeasured method adds no line",
  );
  // Cases without standard metrics (null) are not counted as edits.
  const partly = rome(102, 0.95, 0.9, 0.99, 0.02);
  partly.standard[0] = partly.standard[1] = partly.standard[2] = null;
  assert.deepEqual(verdicts(partly), [false, false, false]);
  const [[text]] = qualityBar(rome(120, 0.91234, 0.85, 1), 3, undefined);
  assert.equal(text, "ROME layer 3: efficacy success (ES) 0.912 >= 0.9 over 120 edits (>= 100)");
});

Deno.test("standardMean: mean and standard error over the cases that have the metric", () => {
  const row = [
    { efficacySuccess: 1 },
    null,
    { efficacySuccess: 0.5 },
    { efficacySuccess: null },
    { efficacySuccess: 0 },
  ] as unknown as Parameters<typeof standardMean>[0];
  const { mean, se, n } = standardMean(row, "efficacySuccess");
  assert.equal(n, 3);
  assert.equal(mean, 0.5);
  assert.ok(Math.abs(se - 0.5 / Math.sqrt(3)) < 1e-15);
  assert.ok(Number.isNaN(standardMean([null], "efficacySuccess").mean));
});

Deno.test("editMode: MEMIT and EMMET edit all cases in one batch, the others one fact at a time", () => {
  assert.deepEqual(
    (["rome", "r-rome", "memit", "emmet", "ft"] as const).map(editMode),
    ["each", "each", "batch", "batch", "each"],
  );
});

Deno.test("./locus task quality: --help lists every option; a bad value is named before anything loads", async () => {
  const help = await runScript("experiments/commands/quality.ts", "--help");
  assert.equal(help.code, 0, help.stderr);
  for (
    const option of [
      "--model",
      "--cases",
      "--sweep-cases",
      "--first",
      "--problem",
      "--methods",
      "--json",
      "--check",
    ]
      .concat(["--layers", "--fact-token", "--v-steps", "--v-wd", "--lambda", "--ft-lr", "--stats-dir"])
  ) {
    assert.match(help.stdout, new RegExp(`${option}\\b`), option);
  }
  const bad = await runScript("experiments/commands/quality.ts", "--v-lr", "fast");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^quality: --v-lr must be a number, got "fast"$/m);
  const layers = await runScript("experiments/commands/quality.ts", "--layers", "2-x");
  assert.match(layers.stderr, /--layers: expected "3", "2,3,4" or "2-4", got "2-x"/);
});
