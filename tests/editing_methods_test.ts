// MEMIT and EMMET closed forms against their textbook formulas (float64, small f), their batched path
// against the papers' one-edit-at-a-time order, and every method on the five editing problems of Hase et al.: the problem's target probability must move the right
// way on a tiny random model (directions only; the embedded model's quality is ./locus task quality).
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model, randomWeights } from "../engine/model.ts";
import { applyEdit, type Edit, type EditRequest, keyValueDelta } from "../experiments/editing/edit.ts";
import { computeFt } from "../experiments/editing/ft.ts";
import {
  type EmmetHparams,
  emmetHparams,
  ftHparams,
  type MemitHparams,
  memitHparams,
  romeHparams,
} from "../experiments/editing/hparams.ts";
import { factStates, groupMean, instantiate } from "../experiments/editing/keys.ts";
import { solveSpd } from "../experiments/editing/linalg.ts";
import {
  batchValueOptions,
  computeBatchEdits,
  computeEmmet,
  computeMemit,
  solveUpdate,
} from "../experiments/editing/memit.ts";
import {
  caseProbabilities,
  type EditingCase,
  problemRequest,
  PROBLEMS,
} from "../experiments/editing/problems.ts";
import { computeRome } from "../experiments/editing/rome.ts";
import { optimiseValues, type ValueResult } from "../experiments/editing/values.ts";
import { computeKeyStats, KeyStats, packCorpus } from "../experiments/editing/stats.ts";
import { greedyNextTokens } from "../experiments/evaluation/recall.ts";
import { embeddingStd } from "../experiments/localization/tracing.ts";
import {
  EDITING_CONFIG as cfg,
  EDITING_START_WORDS as startWords,
  EDITING_TEMPLATES as templates,
  EDITING_TOKENIZER as tok,
  EDITING_WORDS as WORDS,
} from "./fixtures_tiny_kb.ts";
import { matmulRef } from "./reference.ts";
import { assertClose, rng } from "./util.ts";

const gpu = await getGpu();

/** A random SPD matrix [f,f] (B B^T / f + I/10). */
function spd(f: number, seed: number): Float64Array {
  const r = rng(seed);
  const B = Array.from({ length: f * f }, () => r() - 0.5);
  return matmulRef(B, B, f, f, f, { transB: true }).map((v, i) => v / f + (i % (f + 1) === 0 ? 0.1 : 0));
}

/** X^T for X [rows, cols]. */
function transpose(X: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = X[i * cols + j];
  return out;
}

/** A^-1 for SPD A [n,n]. */
function inverse(A: ArrayLike<number>, n: number): Float64Array {
  const I = new Float64Array(n * n).map((_, i) => (i % (n + 1) === 0 ? 1 : 0));
  return solveSpd(A, n, I, n);
}

Deno.test("MEMIT and EMMET updates equal their textbook formulas; EMMET with tiny eps meets the constraints exactly", () => {
  const [f, d, n] = [12, 5, 3];
  const C = spd(f, 1);
  const stats = new KeyStats(0, f, 1000, Float32Array.from(C));
  const C32 = Float64Array.from(stats.moment); // the float32-rounded C the solver uses
  const r = rng(2);
  const K = Float64Array.from({ length: f * n }, () => r()); // [f,n]
  const Rt = Float64Array.from({ length: n * d }, () => r() - 0.5); // [n,d]
  const R = transpose(Rt, n, d); // [d,n]
  const stored = (factors: { keys: Float32Array; values: Float32Array }) =>
    matmulRef(factors.keys, factors.values, f, d, n); // Delta^T [f,d]

  // MEMIT: Delta = R K^T (lambda C + K K^T)^-1.
  const lambda = 2.5;
  const KKt = matmulRef(K, K, f, f, n, { transB: true });
  const A = C32.map((v, i) => lambda * v + KKt[i]);
  const memitDirect = matmulRef(matmulRef(R, transpose(K, f, n), d, f, n), inverse(A, f), d, f, f); // [d,f]
  const memit = solveUpdate(stats, K, Rt, n, d, lambda, 1, "test");
  assertClose(stored(memit), transpose(memitDirect, d, f), 1e-5, "MEMIT Delta^T");

  // EMMET: Delta = R (K^T C'^-1 K + eps I)^-1 K^T C'^-1 with C' = lambda_m C.
  const [lambdaM, eps] = [7, 0.3];
  const CpInv = inverse(C32.map((v) => lambdaM * v), f);
  const KtCpInv = matmulRef(K, CpInv, n, f, f, { transA: true }); // [n,f]
  const D = matmulRef(KtCpInv, K, n, n, f).map((v, i) => v + (i % (n + 1) === 0 ? eps : 0));
  const emmetDirect = matmulRef(matmulRef(R, inverse(D, n), d, n, n), KtCpInv, d, f, n);
  const emmet = solveUpdate(stats, K, Rt, n, d, eps, 1 / lambdaM, "test");
  assertClose(stored(emmet), transpose(emmetDirect, d, f), 1e-5, "EMMET Delta^T");

  // eps -> 0: Delta k_i = r_i for every edited key (equality constraints).
  const exact = solveUpdate(stats, K, Rt, n, d, 1e-9, 1 / lambdaM, "test");
  assertClose(matmulRef(K, stored(exact), n, d, f, { transA: true }), Rt, 1e-6, "K^T Delta^T = R^T");
});

// ---- the five problems, every method, on a tiny random model

// The random model's MLP outputs are tiny next to its residual stream, so ROME's norm clamp and weight
// decay (both relative to the MLP output's norm) are loosened for the value to matter, and Adam's
// steps shortened (0.5 overshoots at this scale).
const value = { vNumGradSteps: 8, vLr: 0.1, vWeightDecay: 0.001, klFactor: 0.0625, clampNormFactor: 100 };

/** Peaked distributions (larger embeddings than GPT-2's init) so that probabilities have room to move both ways. */
function tinyModel(): Model {
  const w = randomWeights(cfg, 21, true);
  w.set("wte.weight", w.get("wte.weight")!.map((v) => 10 * v));
  return Model.fromArrays(gpu, cfg, w);
}

const model = tinyModel();
const corpus = packCorpus(
  tok,
  Array.from({ length: 120 }, (_, i) => WORDS.slice(2).filter((_, j) => (i * 7 + j * 3) % 5 < 3).join(" ")),
  cfg.nPositions,
);
const { stats } = await computeKeyStats(model, corpus, { layers: [0, 1], samples: 5000 });
const noise = { seed: 1, scale: 3 * await embeddingStd(model) };
// The "true" object is what the random model already predicts, so that erasure and amplification have mass to move.
// The subject ends the prompt: in a random model little information moves between positions, so an
// edit at the subject's last token must be at the predicting position to show.
const [predicted] = await greedyNextTokens(model, [tok.encode("Eva lives in Anna Berg")]);
const testCase: EditingCase = {
  prompt: "Eva lives in {}",
  subject: "Anna Berg",
  targetTrue: tok.decode([predicted]),
  targetNew: predicted === tok.encode("Oslo")[0] ? "Lima" : "Oslo",
  paraphrases: ["Eva works at Anna Berg"],
  neighbors: ["Eva lives in Carl Dorn"],
};

type Method = (requests: EditRequest[]) => Promise<Edit>;
const methods: Record<string, Method> = {
  rome: async (rs) =>
    (await computeRome(
      model,
      tok,
      rs,
      stats.get(1)!,
      { ...romeHparams(cfg), ...value, layer: 1, templates },
      { startWords },
    ))[0],
  "r-rome": async (rs) =>
    (await computeRome(
      model,
      tok,
      rs,
      stats.get(1)!,
      { ...romeHparams(cfg), ...value, layer: 1, templates },
      { variant: "r-rome", startWords },
    ))[0],
  memit: (rs) =>
    computeMemit(model, tok, rs, stats, {
      ...memitHparams(cfg),
      ...value,
      layers: [0, 1],
      mom2UpdateWeight: 10,
      templates,
    }, { startWords }),
  emmet: (rs) =>
    computeEmmet(model, tok, rs, stats, { ...emmetHparams(cfg), ...value, layers: [1], templates }, {
      startWords,
    }),
  ft: (rs) =>
    computeFt(model, tok, rs, { ...ftHparams(cfg, [1]), lr: 5e-3, normConstraint: 0.05, numSteps: 10 }),
};

for (const problem of PROBLEMS) {
  Deno.test(`${problem}: every method moves the target probability the right way`, async () => {
    const request = await problemRequest(model, tok, testCase, problem, noise);
    const before = await model.toArrays();
    const [pre] = await caseProbabilities(model, tok, [{ c: testCase, request }]);
    for (const [name, compute] of Object.entries(methods)) {
      const applied = await applyEdit(model, await compute([request]));
      const [post] = await caseProbabilities(model, tok, [{ c: testCase, request }]);
      applied.undo();
      const moved = post.rewrite - pre.rewrite;
      const ok = request.direction === "decrease" ? moved < 0 : moved > 0;
      assert.ok(
        ok,
        `${name}: p(${request.target}) went from ${pre.rewrite} to ${post.rewrite} (${
          request.direction ?? "increase"
        })`,
      );
    }
    assert.deepEqual(await model.toArrays(), before, "every edit was undone exactly");
  });
}

Deno.test("problem requests: targets, direction and noise follow the problem", async () => {
  const requests = Object.fromEntries(
    await Promise.all(PROBLEMS.map(async (p) => [p, await problemRequest(model, tok, testCase, p, noise)])),
  );
  const { targetTrue, targetNew } = testCase;
  assert.equal(requests["error-injection"].target, targetNew);
  assert.equal(requests["fact-amplification"].target, targetTrue);
  assert.deepEqual([requests["fact-erasure"].target, requests["fact-erasure"].direction], [
    targetTrue,
    "decrease",
  ]);
  assert.deepEqual([requests["fact-forcing"].target, requests["fact-forcing"].noise], [targetTrue, noise]);
  assert.ok(
    WORDS.includes(requests["tracing-reversal"].target) && requests["tracing-reversal"].target !== targetTrue,
  );
  assert.equal(requests["tracing-reversal"].noise, undefined, "tracing reversal edits the clean prompt");
});

/** MEMIT / EMMET as the papers' code runs it, one edit at a time: each layer's keys and residuals read
 *  with the edit's lower layers' updates applied to the weights (then undone). The reference for the
 *  batched path, which reads every edit's states in one pass with those updates as virtual edits. */
async function sequentialDeltas(
  method: "memit" | "emmet",
  requests: EditRequest[],
  hp: MemitHparams | EmmetHparams,
  values: ValueResult[],
): Promise<Float32Array[]> {
  const contexts = (await batchValueOptions(model, tok, hp, startWords)).contexts;
  const n = requests.length, f = cfg.nEmbd * 4, d = cfg.nEmbd, zLayer = hp.layers.at(-1)!;
  const [ridge, scale] = method === "memit"
    ? [hp.mom2UpdateWeight, 1]
    : [(hp as EmmetHparams).emmetLambda, 1 / hp.mom2UpdateWeight];
  const applied = [], out: Float32Array[] = [];
  for (const [i, layer] of hp.layers.entries()) {
    const keyInstances = requests.flatMap((r) =>
      contexts.map((c) => instantiate(tok, c, r.prompt, r.subject, r.noise, hp.factToken))
    );
    const [keys] = await factStates(model, keyInstances, layer, ["key"]);
    const bare = requests.map((r) => instantiate(tok, "{}", r.prompt, r.subject, r.noise, hp.factToken));
    const [current] = await factStates(model, bare, zLayer, ["resid"]);
    const K = new Float64Array(f * n), Rt = new Float64Array(n * d);
    requests.forEach((_, j) => {
      const mine = keys.slice(j * contexts.length, (j + 1) * contexts.length);
      const k = groupMean([mine.slice(0, 1), mine.slice(1)]);
      for (let a = 0; a < f; a++) K[a * n + j] = k[a];
      for (let c = 0; c < d; c++) {
        Rt[j * d + c] = (values[j].target[c] - current[j][c]) / (hp.layers.length - i);
      }
    });
    const factors = solveUpdate(stats.get(layer)!, K, Rt, n, d, ridge, scale, "reference");
    const delta = keyValueDelta(model, layer, factors.keys, factors.values, n);
    out.push(Float32Array.from(matmulRef(delta.left, delta.right, delta.rows, delta.cols, n)));
    applied.push(await applyEdit(model, { method, requests, deltas: [delta], info: {} }));
  }
  for (const a of applied.reverse()) a.undo();
  return out;
}

Deno.test("MEMIT and EMMET: independent edits computed together equal each edit with its lower layers' updates applied", async () => {
  const request = (subject: string, target: string, noise?: EditRequest["noise"]): EditRequest => ({
    prompt: "Eva lives in {}",
    subject,
    target,
    noise,
  });
  const base = { ...value, mom2UpdateWeight: 10, templates };
  const jobs = [
    { requests: [request("Anna Berg", "Oslo"), request("Carl Dorn", "Lima")], layers: [0, 1] },
    { requests: [request("Carl Dorn", "Oslo")], layers: [1] },
    { requests: [request("Anna Berg", "Lima", noise)], layers: [0, 1] }, // fact forcing's noised subject
  ];
  for (const method of ["memit", "emmet"] as const) {
    const hps = jobs.map((j) =>
      method === "memit"
        ? { ...memitHparams(cfg), ...base, layers: j.layers }
        : { ...emmetHparams(cfg), ...base, layers: j.layers }
    );
    const values = await Promise.all(
      jobs.map(async (j, e) =>
        await optimiseValues(model, tok, j.requests, await batchValueOptions(model, tok, hps[e], startWords))
      ),
    );
    const batched = await computeBatchEdits(
      model,
      tok,
      method,
      jobs.map((j, e) => ({ requests: j.requests, hp: hps[e], values: values[e] })),
      stats,
      { startWords },
    );
    for (const [e, job] of jobs.entries()) {
      const expected = await sequentialDeltas(method, job.requests, hps[e], values[e]);
      assert.equal(batched[e].deltas.length, job.layers.length);
      batched[e].deltas.forEach((delta, i) => {
        assert.ok(delta.kind === "low-rank");
        const got = matmulRef(delta.left, delta.right, delta.rows, delta.cols, delta.rank);
        const scale = Math.max(...expected[i].map(Math.abs));
        assert.ok(scale > 1e-4, `${method} edit ${e} layer ${job.layers[i]}: a real update`);
        assertClose(
          got.map((v) => v / scale),
          expected[i].map((v) => v / scale),
          1e-4,
          `${method} edit ${e} layer ${job.layers[i]}`,
        );
      });
    }
  }
});
