// FT-L of many edits in one batch (experiments/editing/ft.ts computeFtBatch) against computeFt, one edit
// at a time, on the embedded model and its CounterFact facts: every editing problem's request (fact
// erasure's "decrease", fact forcing's noised subject), one layer and five, and an edit of two requests
// (the batch pads it); the same deltas, losses and stopping steps, and the model is never written.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import type { Edit } from "../experiments/editing/edit.ts";
import { computeFt, computeFtBatch, type FtJob } from "../experiments/editing/ft.ts";
import { type FtHparams, ftHparams } from "../experiments/editing/hparams.ts";
import { editingCase, problemRequest, PROBLEMS } from "../experiments/editing/problems.ts";
import { embeddingStd } from "../experiments/localization/tracing.ts";
import { maxAbsDiff } from "./util.ts";

const DIR = new URL("../weights/locus-kb", import.meta.url).pathname;
const gpu = await getGpu();

/** Asserts that `got` (from computeFtBatch) is the edit computeFt made alone (`alone`). */
function assertSameFt(got: Edit, alone: Edit, hp: FtHparams, what: string): void {
  assert.deepEqual(got.deltas.map((d) => d.param), alone.deltas.map((d) => d.param), what);
  assert.deepEqual(got.info.epochs, alone.info.epochs, `${what}: stopping step`);
  const [a, b] = [got, alone].map((e) => e.info.losses as number[]);
  assert.equal(a.length, b.length, `${what}: losses`);
  a.forEach((x, s) =>
    assert.ok(Math.abs(x - b[s]) <= 1e-4 * Math.max(1, b[s]), `${what} step ${s}: ${x} vs ${b[s]}`)
  );
  got.deltas.forEach((d, i) => {
    const want = alone.deltas[i];
    assert.ok(d.kind === "dense" && want.kind === "dense");
    // Trained weights stay in an L-infinity ball of radius eps; a few entries whose gradient is at float
    // noise may take another sign on the first Adam steps, so compare by the fraction of the radius.
    const eps = hp.normConstraint;
    const far = d.values.filter((v, k) => Math.abs(v - want.values[k]) > 0.05 * eps).length;
    assert.ok(
      far <= 1e-3 * d.values.length,
      `${what} ${d.param}: ${far} of ${d.values.length} values differ`,
    );
    assert.ok(maxAbsDiff(d.values, want.values) <= 2 * eps + 1e-7, `${what} ${d.param}: outside the ball`);
  });
}

Deno.test("computeFtBatch trains each edit as computeFt does alone: deltas, losses, stopping steps", async () => {
  const model = await Model.load(gpu, DIR);
  const tok = await loadTokenizer(DIR);
  const { cases } = await loadDataset(`${DIR}/counterfact.json`);
  const noise = { seed: 1, scale: 3 * await embeddingStd(model) };
  const before = await model.toArrays();
  const one = ftHparams(model.config, [2]), five = ftHparams(model.config, [0, 1, 2, 3, 4]);
  const jobs: FtJob[] = [];
  for (const [i, problem] of PROBLEMS.entries()) {
    const request = await problemRequest(model, tok, editingCase(cases[i]), problem, noise);
    jobs.push({ requests: [request], hp: one });
    if (i < 2) jobs.push({ requests: [request], hp: five });
  }
  const extra = await problemRequest(model, tok, editingCase(cases[7]), "error-injection", noise);
  jobs.push({ requests: [jobs[0].requests[0], extra], hp: one });
  let progress = 0;
  const batched = await computeFtBatch(model, tok, jobs, { onProgress: (step) => progress = step });
  assert.equal(progress, one.numSteps + five.numSteps, "progress counts both batches' steps");
  assert.deepEqual(await model.toArrays(), before, "the model was never written");

  const epochs: number[] = [];
  for (const [j, job] of jobs.entries()) {
    const alone = await computeFt(model, tok, job.requests, job.hp);
    assertSameFt(batched[j], alone, job.hp, `job ${j}`);
    epochs.push(alone.info.epochs as number);
  }
  assert.ok(epochs.some((e) => e < one.numSteps), `some edit stopped early (steps ${epochs})`);
});

Deno.test("computeFtBatch: once jobs stop, the rest train on in a batch of their own (rows of the resume point copied), as alone", async () => {
  const model = await Model.load(gpu, DIR);
  const tok = await loadTokenizer(DIR);
  const { cases } = await loadDataset(`${DIR}/counterfact.json`);
  // FT-L on five layers with one layer's L-infinity radius (five times FT-5's): these facts' error
  // injections then stop at different steps (3 of 8 at the third, more later, some never).
  const five = {
    ...ftHparams(model.config, [0, 1, 2, 3, 4]),
    normConstraint: ftHparams(model.config, [2]).normConstraint,
  };
  const jobs: FtJob[] = cases.slice(0, 8).map(editingCase).map((c) => ({
    requests: [{ prompt: c.prompt, subject: c.subject, target: c.targetNew }],
    hp: five,
  }));
  const batched = await computeFtBatch(model, tok, jobs);
  const epochs = batched.map((e) => e.info.epochs as number);
  assert.ok(
    epochs.filter((e) => e <= 3).length >= 2 && epochs.some((e) => e > 3),
    `stopping steps ${epochs}`,
  );
  for (const [j, job] of jobs.entries()) {
    assertSameFt(batched[j], await computeFt(model, tok, job.requests, job.hp), job.hp, `job ${j}`);
  }
});

Deno.test("computeFtBatch with weights of columns not whole vec4s (each copy its own center, written-out gradients), as alone", async () => {
  // The embedded model's tokenizer and shapes with d = 18: c_proj [72, 18] has 18 columns, so Adam writes
  // its gradient out and the copies keep a repeated center each (ft.ts sharesCenter) instead of sharing
  // the model's weight.
  const tok = await loadTokenizer(DIR);
  const trained = await Model.load(gpu, DIR);
  const cfg = { ...trained.config, nEmbd: 18, nHead: 3, nKvHead: 3, nLayer: 2 };
  const model = Model.random(gpu, cfg, 5, true);
  const { cases } = await loadDataset(`${DIR}/counterfact.json`);
  const hp = { ...ftHparams(model.config, [1]), normConstraint: 0.05, lr: 0.01 };
  const jobs: FtJob[] = cases.slice(0, 3).map(editingCase).map((c) => ({
    requests: [{ prompt: c.prompt, subject: c.subject, target: c.targetNew }],
    hp,
  }));
  const batched = await computeFtBatch(model, tok, jobs);
  for (const [j, job] of jobs.entries()) {
    assertSameFt(batched[j], await computeFt(model, tok, job.requests, job.hp), job.hp, `job ${j}`);
  }
});
