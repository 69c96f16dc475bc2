// Editing core: the rank-update kernel, key statistics, ROME's closed form, apply/undo/save/load.
// Tiny random models; every GPU result is checked against float64 references (tests/reference.ts,
// tests/reference_model.ts) or against an identity the method guarantees.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model, randomWeights } from "../engine/model.ts";
import type { Tokenizer } from "../engine/tokenizer.ts";
import {
  applyEdit,
  combineEdits,
  type Edit,
  type EditRequest,
  loadEdit,
  rankUpdate,
  saveEdit,
} from "../experiments/editing/edit.ts";
import { romeHparams } from "../experiments/editing/hparams.ts";
import { contextTemplates, factStates, instantiate, subjectNoise } from "../experiments/editing/keys.ts";
import {
  cholesky,
  choleskyInBackground,
  choleskySolve,
  NotPositiveDefiniteError,
  solveSpd,
} from "../experiments/editing/linalg.ts";
import { computeRome, computeRomeAt } from "../experiments/editing/rome.ts";
import { computeKeyStats, type KeyStats, keyStats, packCorpus } from "../experiments/editing/stats.ts";
import {
  fitsOneBatch,
  optimiseValues,
  planRequest,
  suffixParts,
  ValueObjective,
  valueOptions,
} from "../experiments/editing/values.ts";
import { greedyNextTokens } from "../experiments/evaluation/recall.ts";
import {
  EDITING_CONFIG as cfg,
  EDITING_START_WORDS as startWords,
  EDITING_TEMPLATES,
  EDITING_TOKENIZER as tok,
  EDITING_WORDS as WORDS,
} from "./fixtures_tiny_kb.ts";
import { matmulRef } from "./reference.ts";
import { referenceForward } from "./reference_model.ts";
import { assertClose, randomArray, rng } from "./util.ts";

const gpu = await getGpu();

const f = 4 * cfg.nEmbd;

/** Seeded corpus lines of random words (the key statistics only need varied keys). */
function corpusLines(count: number, seed: number): string[] {
  const r = rng(seed);
  return Array.from(
    { length: count },
    () =>
      Array.from({ length: 3 + Math.floor(r() * 6) }, () => WORDS[2 + Math.floor(r() * (WORDS.length - 2))])
        .join(" "),
  );
}

const request: EditRequest = { prompt: "{} lives in", subject: "Anna Berg", target: "Oslo" };
/** Small templates and few steps: the identities under test hold whatever v* the optimisation reaches. */
const hp = {
  ...romeHparams(cfg),
  layer: 1,
  vNumGradSteps: 4,
  templates: EDITING_TEMPLATES,
};

Deno.test("rank_update kernel: W += U V matches the float64 reference for ranks 1 and 3", async () => {
  for (const [M, N, rank] of [[13, 7, 1], [37, 70, 3]]) {
    const W = randomArray(M * N, 1), U = randomArray(M * rank, 2), V = randomArray(rank * N, 3);
    const w = gpu.tensor([M, N], W);
    rankUpdate(gpu, w, gpu.tensor([M, rank], U), gpu.tensor([rank, N], V), M, N, rank);
    const uv = matmulRef(U, V, M, N, rank);
    assertClose(await w.read(), W.map((x, i) => x + uv[i]), 1e-6, `rank ${rank}`);
  }
  assert.throws(
    () => rankUpdate(gpu, gpu.zeros([4, 4]), gpu.zeros([4]), gpu.zeros([4]), 4, 4, 2),
    /U .* must be f32 .*with >= 8/,
  );
});

Deno.test("rank_update on 16-bit weights: W += U V in the weight's own format, rounded per value; bytes restore it", async () => {
  const [M, N, rank] = [5, 7, 2]; // 35 values: the last word holds one value and padding
  const r = rng(9);
  const U = Array.from({ length: M * rank }, () => r() - 0.5),
    V = Array.from({ length: rank * N }, () => r() - 0.5);
  for (const dtype of ["f16", "bf16"] as const) {
    const bits = Uint16Array.from(
      { length: M * N },
      () => dtype === "f16" ? 0x3800 + Math.floor(r() * 0x400) : 0x3f00 + Math.floor(r() * 0x80),
    ); // values in [0.5, 1)
    const w = gpu.tensor([M, N], bits, dtype);
    const before = await w.read(), saved = (await gpu.readBytes([w]))[0];
    rankUpdate(gpu, w, gpu.tensor([M, rank], U), gpu.tensor([rank, N], V), M, N, rank);
    const uv = matmulRef(U, V, M, N, rank);
    // One rounding to the format: half an ulp of values below 2 (f16 2^-10, bf16 2^-7).
    assertClose(await w.read(), before.map((x, i) => x + uv[i]), dtype === "f16" ? 2 ** -10 : 2 ** -7, dtype);
    gpu.writeBytes(w, saved);
    assert.deepEqual(await w.read(), before, `${dtype}: the saved bytes restore it exactly`);
  }
});

Deno.test("float64 Cholesky solves agree with a direct check A x = b, and refuse an indefinite matrix", () => {
  const n = 6, r = rng(4);
  const B = Array.from({ length: n * n }, () => r() - 0.5);
  const A = matmulRef(B, B, n, n, n, { transB: true }).map((v, i) => v + (i % (n + 1) === 0 ? 0.1 : 0));
  const b = Array.from({ length: n }, () => r());
  const x = choleskySolve(cholesky(A, n), n, b);
  assertClose(matmulRef(A, x, n, 1, n), b, 1e-10, "A x");
  const B2 = b.flatMap((v) => [v, 2 * v]); // [n,2]: columns b and 2b
  assertClose(matmulRef(A, solveSpd(A, n, B2, 2), n, 2, n), B2, 1e-10, "A X");
  assert.throws(() => cholesky([1, 2, 2, 1], 2, "test matrix"), /test matrix is not positive definite/);
});

Deno.test("tiled Cholesky equals the row-by-row factorisation on random SPD matrices of every size modulo 4", () => {
  // The textbook Cholesky-Banachiewicz order, one element at a time: L[i][j] = (A[i][j] - sum_k<j
  // L[i][k] L[j][k]) / L[j][j].
  const reference = (A: ArrayLike<number>, n: number) => {
    const L = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        let s = A[i * n + j];
        for (let k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
        L[i * n + j] = i === j ? Math.sqrt(s) : s / L[j * n + j];
      }
    }
    return L;
  };
  const r = rng(11);
  for (const n of [1, 2, 3, 4, 5, 6, 7, 9, 13, 40, 67, 130]) {
    // G G^T + 1e-3 I with G [n, n/2 + 1]: badly conditioned, as key second moments are.
    const m = Math.floor(n / 2) + 1;
    const G = Array.from({ length: n * m }, () => r() - 0.5);
    const A = matmulRef(G, G, n, n, m, { transB: true }).map((v, i) => v + (i % (n + 1) === 0 ? 1e-3 : 0));
    const want = reference(A, n), got = cholesky(A, n);
    const scale = Math.max(...want.map(Math.abs));
    assertClose(got, want, 1e-9 * scale, `n = ${n}`);
    assert.ok(got.every((v, i) => v === 0 || i % n <= Math.floor(i / n)), `n = ${n}: upper triangle is zero`);
  }
});

Deno.test("choleskyInBackground: a wide matrix is factorised by 1 or 3 Workers to the same bits; failures come back as errors", async () => {
  const n = 1030, r = rng(12);
  const A = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    A[i * n + i] = 1 + r();
    for (let j = 0; j < i; j++) A[i * n + j] = A[j * n + i] = (r() - 0.5) / n;
  }
  const here = cholesky(A, n);
  // Both asked at once: queued, one factorisation at a time.
  const away = await Promise.all([1, 3].map((workers) => choleskyInBackground(A, n, "test matrix", workers)));
  away.forEach((L, i) =>
    assert.ok(here.every((v, j) => Object.is(v, L[j])), `${[1, 3][i]} workers: bit-identical to cholesky`)
  );
  A[5 * n + 5] = -1; // in tile row 1: worker 1 of 3 finds it, the others stop at the barrier
  await assert.rejects(
    () => choleskyInBackground(A, n, "test matrix", 3),
    (e: Error) =>
      e instanceof NotPositiveDefiniteError &&
      /test matrix is not positive definite \(pivot 5 of 1030/.test(e.message),
  );
});

Deno.test("key statistics: streamed K^T K / n equals the float64 reference keys' second moment, and caches", async () => {
  const weights = randomWeights(cfg, 5, true);
  const model = Model.fromArrays(gpu, cfg, weights);
  const sequences = packCorpus(tok, corpusLines(100, 6), cfg.nPositions);
  const samples = 333; // stops part way through a batch
  const { stats } = await computeKeyStats(model, sequences, { layers: [0, 2], samples });
  for (const layer of [0, 2]) {
    const keys: Float64Array[] = [];
    for (const s of sequences) {
      referenceForward(cfg, weights, s, [{
        layer,
        site: "key",
        capture: (rows) => keys.push(...rows.map((x) => x.slice())),
      }]);
    }
    const C = new Float64Array(f * f);
    for (const k of keys.slice(0, samples)) {
      for (let i = 0; i < f; i++) for (let j = 0; j < f; j++) C[i * f + j] += k[i] * k[j] / samples;
    }
    const s = stats.get(layer)!;
    assert.equal(s.count, samples);
    const scale = Math.max(...C.map(Math.abs));
    assertClose(s.moment, C, 1e-5 * scale, `layer ${layer} second moment`);
  }

  // Cached: the second call reads the file the first one wrote (bit-identical), keyed by sample count.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/corpus.txt`, corpusLines(40, 6).join("\n"));
    const lines: string[] = [];
    const opts = {
      corpus: `${dir}/corpus.txt`,
      layers: [1],
      samples: 200,
      cacheDir: `${dir}/cache`,
      log: (l: string) => lines.push(l),
    };
    const first = await keyStats(model, tok, opts);
    const second = await keyStats(model, tok, opts);
    assert.match(lines[0], /streaming up to 200 keys/);
    assert.match(lines.at(-1)!, /cached \(200 keys\)/);
    assert.deepEqual(second.get(1)!.moment, first.get(1)!.moment);
    await keyStats(model, tok, { ...opts, samples: 100 });
    assert.match(
      lines.at(-2)!,
      /streaming up to 100 keys/,
      "a different sample count is a different cache entry",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Model, stats of hp.layer and a ROME edit of `request`, shared by the next tests. */
async function romeSetup(variant: "rome" | "r-rome") {
  const model = Model.random(gpu, cfg, 7, true);
  const { stats } = await computeKeyStats(model, packCorpus(tok, corpusLines(150, 8), cfg.nPositions), {
    layers: [hp.layer],
    samples: 2000,
  });
  const s = stats.get(hp.layer)!;
  const [edit] = await computeRome(model, tok, [request], s, hp, { variant, startWords });
  return { model, stats: s, edit };
}

/** Keys and MLP outputs at the fact token of `request` in every context template. */
async function factKeysAndValues(model: Model) {
  const contexts = await contextTemplates(model, tok, { ...hp.templates, startWords });
  const instances = contexts.map((c) =>
    instantiate(tok, c, request.prompt, request.subject, undefined, hp.factToken)
  );
  return await factStates(model, instances, hp.layer, ["key", "mlp"]);
}

Deno.test("ROME: the update maps the bare prompt's key k0 to v*, and C^-1-orthogonal keys to what they were", async () => {
  const { model, stats, edit } = await romeSetup("rome");
  const name = `h.${hp.layer}.mlp.c_proj.weight`;
  const before = (await model.p(name).read()).slice();
  const applied = await applyEdit(model, edit);
  const after = (await model.p(name).read()).slice();
  const [keys, values] = await factKeysAndValues(model);
  const vStar = edit.info.vStar as number[];
  assertClose(
    values[0],
    vStar,
    1e-5 * Math.max(...vStar.map(Math.abs)),
    "MLP output at k0 after the edit = v*",
  );
  applied.undo();

  // Change of the map x -> W^T x, for a random key and for its part C^-1-orthogonal to k*.
  const change = (x: ArrayLike<number>) => {
    const out = new Float64Array(cfg.nEmbd);
    for (let i = 0; i < f; i++) {
      for (let j = 0; j < cfg.nEmbd; j++) {
        out[j] += (after[i * cfg.nEmbd + j] - before[i * cfg.nEmbd + j]) * x[i];
      }
    }
    return Math.hypot(...out);
  };
  const kStar = new Float64Array(f);
  for (const k of keys) for (let i = 0; i < f; i++) kStar[i] += k[i] / keys.length;
  const u = stats.solve(kStar); // the C^-1 k* direction
  const uu = u.reduce((s, v) => s + v * v, 0);
  for (const seed of [1, 2, 3]) {
    const x = randomArray(f, seed);
    const xu = x.reduce((s, v, i) => s + v * u[i], 0);
    const orthogonal = Float64Array.from(x, (v, i) => v - (xu / uu) * u[i]); // x^T C^-1 k* = 0 (u = C^-1 k*)
    assert.ok(change(x) > 1e-3, `a generic key moves (${change(x)})`);
    assert.ok(
      change(orthogonal) < 1e-5 * change(x),
      `orthogonal key moved by ${change(orthogonal)} vs ${change(x)}`,
    );
  }
});

Deno.test("R-ROME: the mean MLP output over the templates becomes v* (consistent keys k_bar, v_bar)", async () => {
  const { model, edit } = await romeSetup("r-rome");
  const applied = await applyEdit(model, edit);
  const [, values] = await factKeysAndValues(model);
  applied.undo();
  const mean = new Float64Array(cfg.nEmbd);
  for (const v of values) for (let j = 0; j < cfg.nEmbd; j++) mean[j] += v[j] / values.length;
  const vStar = edit.info.vStar as number[];
  assertClose(mean, vStar, 1e-5 * Math.max(...vStar.map(Math.abs)), "mean MLP output = v*");
});

Deno.test("apply/undo is exact, sequential edits undo in reverse order, save/load round-trips", async () => {
  const { model, edit } = await romeSetup("rome");
  const original = await model.toArrays();
  const other: Edit = {
    method: "dense-test",
    requests: [request],
    deltas: [{
      kind: "dense",
      param: "h.0.mlp.c_proj.bias",
      shape: [cfg.nEmbd],
      values: randomArray(cfg.nEmbd, 9, 0.1),
    }],
    info: {},
  };
  const a = await applyEdit(model, edit);
  const afterA = await model.toArrays();
  const b = await applyEdit(model, other);
  assert.throws(() => a.undo(), /a later edit is still applied/);
  b.undo();
  assert.deepEqual(await model.toArrays(), afterA, "undoing B restores the state after A exactly");
  a.undo();
  assert.deepEqual(await model.toArrays(), original, "undoing A restores the original weights exactly");
  assert.throws(() => a.undo(), /already undone/);

  // Combined = sequential (same deltas, same order, same kernels).
  const combined = await applyEdit(model, combineEdits([edit, other]));
  const afterCombined = await model.toArrays();
  combined.undo();
  const a2 = await applyEdit(model, edit), b2 = await applyEdit(model, other);
  assert.deepEqual(afterCombined, await model.toArrays());
  b2.undo();
  a2.undo();

  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/edit.safetensors`;
    await saveEdit(path, combineEdits([edit, other]));
    const loaded = await loadEdit(path);
    assert.deepEqual(loaded, combineEdits([edit, other]));
    const applied = await applyEdit(model, loaded);
    assert.deepEqual(await model.toArrays(), afterCombined, "a loaded edit applies identically");
    applied.undo();
    await Deno.writeTextFile(`${dir}/bad.safetensors`, "not a safetensors file");
    await assert.rejects(loadEdit(`${dir}/bad.safetensors`), /bad\.safetensors/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(
    applyEdit(model, { ...other, deltas: [{ ...other.deltas[0], param: "h.9.mlp.c_proj.bias" }] }),
    /no parameter h\.9/,
  );
});

Deno.test("ROME refuses key statistics of another layer", async () => {
  const model = Model.random(gpu, cfg, 7, true);
  const { stats } = await computeKeyStats(model, packCorpus(tok, corpusLines(150, 8), cfg.nPositions), {
    layers: [0],
    samples: 2000,
  });
  await assert.rejects(
    computeRome(model, tok, [request], stats.get(0) as KeyStats, hp),
    /statistics are of layer 0/,
  );
});

/** Central difference of f at x[i] in float64. */
function centralDifference(x: Float64Array, i: number, f: () => number, h = 1e-4): number {
  const orig = x[i];
  x[i] = orig + h;
  const up = f();
  x[i] = orig - h;
  const down = f();
  x[i] = orig;
  return (up - down) / (2 * h);
}

for (
  const variant of [
    { layer: 1, site: "mlp" as const, direction: "increase" as const, noise: undefined, weightDecay: 0 },
    {
      layer: 1,
      site: "resid" as const,
      direction: "decrease" as const,
      noise: { seed: 2, scale: 0.5 },
      weightDecay: 0.002,
    },
    {
      layer: 0,
      site: "mlp" as const,
      direction: "increase" as const,
      noise: { seed: 3, scale: 0.5 },
      weightDecay: 0.002,
    },
    // The last layer: the evaluations run no block at all, only the head on the delta-patched input.
    { layer: 2, site: "mlp" as const, direction: "increase" as const, noise: undefined, weightDecay: 0.002 },
    { layer: 2, site: "resid" as const, direction: "decrease" as const, noise: undefined, weightDecay: 0 },
  ]
) {
  const name = `layer ${variant.layer} ${variant.site}, ${variant.direction}${
    variant.noise ? ", noised subject" : ""
  }`;
  Deno.test(`v*/z objective (${name}): loss and d loss/d delta match the float64 reference`, async () => {
    // Larger embeddings than GPT-2's init give peaked next-token distributions, so that the NLL and
    // KL terms (not only the weight decay) shape the gradient.
    const weights = randomWeights(cfg, 11, true);
    weights.set("wte.weight", weights.get("wte.weight")!.map((v) => 30 * v));
    const model = Model.fromArrays(gpu, cfg, weights);
    const req: EditRequest = {
      prompt: "{} works at",
      subject: "Eva Falk",
      target: "Rome Lima",
      direction: variant.direction,
      noise: variant.noise,
    };
    const o = {
      layer: variant.layer,
      site: variant.site,
      contexts: ["{}", "Carl lives in Oslo . {}"],
      steps: 1,
      lr: 0,
      weightDecay: variant.weightDecay,
      klFactor: 0.7,
      clampNormFactor: 4,
    };
    const plan = planRequest(tok, req, o);
    const objective = new ValueObjective(model, [plan], o);
    const d = cfg.nEmbd;
    await objective.evaluate([new Float64Array(d)]);
    const delta = Float64Array.from(randomArray(d, 12, 1));
    const { losses, grads } = await objective.evaluate([delta], [true]);
    // Repeated evaluations reuse pooled buffers; they must not disturb the objective's own tensors.
    for (let i = 0; i < 3; i++) {
      const again = await objective.evaluate([delta], [true]);
      assert.deepEqual(again.grads[0], grads[0], `evaluation ${i + 2} gives the same gradient`);
    }
    objective.release();

    // The same loss in float64: rewrite prompts' target NLL, KL at the KL prompt's fact token, weight decay.
    const target = tok.encode(" " + req.target), m = target.length;
    const forward = (
      ids: number[],
      fact: number,
      subject: [number, number],
      add: Float64Array | null,
      capture?: (row: Float64Array) => void,
    ) => {
      const noise = req.noise ? subjectNoise(req.noise, subject[1] - subject[0], d) : null;
      return referenceForward(cfg, weights, ids, [
        ...(noise
          ? [{
            layer: 0,
            site: "embed" as const,
            patch: (rows: Float64Array[]) => {
              for (let t = subject[0]; t < subject[1]; t++) {
                for (let j = 0; j < d; j++) rows[t][j] += noise[(t - subject[0]) * d + j];
              }
            },
          }]
          : []),
        {
          layer: variant.layer,
          site: variant.site,
          capture: (rows) => capture?.(rows[fact].slice()),
          patch: (rows) => {
            if (add) { for (let j = 0; j < d; j++) rows[fact][j] += add[j]; }
          },
        },
      ]);
    };
    const logSoftmax = (z: Float64Array) => {
      const mx = Math.max(...z);
      const lse = mx + Math.log(z.reduce((s, v) => s + Math.exp(v - mx), 0));
      return z.map((v) => v - lse);
    };
    let h0: Float64Array = new Float64Array(d);
    // The whole KL prompt, as the reference code runs it (the plan ends it at the fact token).
    const kl = instantiate(tok, "{}", "{} is a", req.subject, req.noise);
    assert.ok(kl.ids.length > kl.fact + 1, "the KL prompt has tokens after its fact token");
    const klInit = logSoftmax(forward(kl.ids, kl.fact, kl.subject, null)[kl.fact]);
    forward(
      plan.instances[0].ids,
      plan.instances[0].fact,
      plan.instances[0].subject,
      null,
      (row) => h0 = row,
    );
    const referenceLoss = () => {
      let objectiveSum = 0;
      for (const inst of plan.instances.slice(0, -1)) {
        const logits = forward(inst.ids, inst.fact, inst.subject, delta);
        const promptLength = inst.ids.length - (m - 1);
        let nll = 0;
        target.forEach((t, j) => nll -= logSoftmax(logits[promptLength - 1 + j])[t] / m);
        objectiveSum += variant.direction === "increase" ? nll : -Math.log(1 - Math.exp(-nll));
      }
      const cur = logSoftmax(forward(kl.ids, kl.fact, kl.subject, delta)[kl.fact]);
      const klValue = cur.reduce((s, v, i) => s + Math.exp(v) * (v - klInit[i]), 0);
      const h0Norm = Math.hypot(...h0);
      return objectiveSum / (plan.instances.length - 1) + o.klFactor * klValue +
        o.weightDecay * Math.hypot(...delta) / h0Norm ** 2;
    };
    const ref = referenceLoss();
    assert.ok(Math.abs(losses[0] - ref) < 1e-4 * Math.abs(ref), `loss ${losses[0]} vs reference ${ref}`);
    const fd = [...delta.keys()].map((i) => centralDifference(delta, i, referenceLoss));
    const g = grads[0]!;
    const err = Math.sqrt(fd.reduce((s, v, i) => s + (g[i] - v) ** 2, 0) / fd.reduce((s, v) => s + v * v, 0));
    assert.ok(err < 2e-3, `relative gradient error ${err}`);
  });
}

/** v* settings of the batching tests: two contexts, a learning rate that moves in a few steps. */
const BATCH_VALUES = {
  site: "mlp" as const,
  contexts: ["{}", "Oslo is a city . {}"],
  lr: 0.05,
  weightDecay: 0.01,
  klFactor: 0.1,
  clampNormFactor: 50,
};

Deno.test("v* of several requests optimised in one batch (finished ones leaving it) equal each optimised alone", async () => {
  const model = Model.random(gpu, cfg, 13, true);
  const requests: EditRequest[] = [
    request,
    { prompt: "{} works at", subject: "Carl", target: "Rome Lima" },
    { prompt: "{} is a", subject: "Eva Falk", target: "city", direction: "decrease" },
  ];
  // The erasure request starts below the stopping loss (its target is already unlikely), so it leaves
  // the batch after the first evaluation and the batch is rebuilt for the other two.
  const o = { ...BATCH_VALUES, layer: 1, steps: 6 };
  const together = await optimiseValues(model, tok, requests, o);
  for (const [i, r] of requests.entries()) {
    const [alone] = await optimiseValues(model, tok, [r], o);
    assertClose(together[i].target, alone.target, 1e-6, `request ${i} v*`);
    assert.deepEqual(together[i].losses.length, alone.losses.length);
  }
});

Deno.test("v* of a request has the same bits in any batch, whichever forward parts its prompts run in", async () => {
  // A reused value (experiments/study/shared_values.ts) must be the one its request gets alone: in a
  // large batch the short KL prompts run in a part of their own, before the rewrite prompts, while alone
  // they share one part; the request's gradient still sums its prompts in one order.
  const model = Model.random(gpu, cfg, 23, true);
  const names = ["Anna", "Berg", "Carl", "Dorn", "Eva", "Falk"];
  const places = ["Paris", "Rome", "Oslo", "Lima"];
  const requests: EditRequest[] = Array.from({ length: 24 }, (_, i) => ({
    prompt: "{} lives in a city in",
    subject: `${names[i % 6]} ${names[(i + 1 + Math.floor(i / 6)) % 6]}`,
    target: Array.from({ length: 5 }, (_, t) => places[(i + t) % 4]).join(" "),
  }));
  const o = { ...BATCH_VALUES, layer: 1, steps: 4 };
  const suffixLengths = (rs: EditRequest[]) =>
    rs.flatMap((r) => planRequest(tok, r, o).instances.map((p) => p.ids.length - p.fact));
  assert.ok(suffixParts(suffixLengths(requests)).length > 1, "the batch runs in several parts");
  const together = await optimiseValues(model, tok, requests, o);
  for (const i of [0, 7, 23]) {
    assert.equal(suffixParts(suffixLengths([requests[i]])).length, 1, `request ${i} alone runs in one part`);
    const [alone] = await optimiseValues(model, tok, [requests[i]], o);
    assert.deepEqual(together[i].target, alone.target, `request ${i}: v* bits`);
    assert.deepEqual(together[i].losses, alone.losses, `request ${i}: losses`);
  }
});

Deno.test("v* at the last layer: a gradient of exactly 0 at delta = 0 stops the request at once with the losses of running on", async () => {
  const model = Model.random(gpu, cfg, 13, true);
  const last = cfg.nLayer - 1;
  const stuck = { prompt: "{} works at", subject: "Carl", target: "Rome" }; // the fact row is not scored
  const o = { ...BATCH_VALUES, layer: last, steps: 6 };
  // The premise: every evaluation at delta = 0 gives the same loss and a gradient of exactly 0 (the KL
  // row is the fact row itself, flat at delta = 0; the target rows come after it at the last layer).
  const objective = new ValueObjective(model, [planRequest(tok, stuck, o)], o);
  const zero = [new Float64Array(cfg.nEmbd)];
  const first = await objective.evaluate(zero, [true]);
  const again = await objective.evaluate(zero, [true]);
  objective.release();
  assert.ok(first.grads[0]!.every((g) => g === 0) && again.grads[0]!.every((g) => g === 0));
  assert.equal(again.losses[0], first.losses[0]);
  assert.ok(first.losses[0] > 5e-2, "not stopped by the loss");
  // Beside a request one layer lower (which moves), optimised in the same call.
  const [atLast, below] = await optimiseValues(model, tok, [stuck, stuck], {
    ...o,
    layers: [last, last - 1],
  });
  assert.deepEqual(atLast.losses, new Array(o.steps).fill(first.losses[0]));
  assert.equal(atLast.updates, o.steps - 1);
  assert.ok(atLast.delta.every((x) => x === 0));
  assert.deepEqual(atLast.target, atLast.targetInit);
  // Alone, it takes one evaluation instead of six.
  const evaluations: number[] = [];
  const [alone] = await optimiseValues(model, tok, [stuck], {
    ...o,
    onProgress: (done) => evaluations.push(done),
  });
  assert.deepEqual(evaluations, [1, 6], "one evaluation, then the rest of the bar at once");
  assert.deepEqual(alone.losses, atLast.losses);
  assert.ok(below.delta.some((x) => x !== 0) && new Set(below.losses).size > 1, "the lower layer's v* moves");
});

Deno.test("v* objective over requests at two layers equals each request's objective alone", async () => {
  const model = Model.random(gpu, cfg, 23, true);
  const o = { ...BATCH_VALUES, layer: 0, steps: 1 };
  const plans = [
    planRequest(tok, request, o, 2),
    planRequest(tok, { prompt: "{} works at", subject: "Carl", target: "Rome Lima" }, o, 0),
  ];
  const d = cfg.nEmbd, zero = () => new Float64Array(d);
  const deltas = [Float64Array.from(randomArray(d, 24, 0.5)), Float64Array.from(randomArray(d, 25, 0.5))];
  const both = new ValueObjective(model, plans, o);
  await both.evaluate([zero(), zero()]);
  const together = await both.evaluate(deltas, [true, true]);
  both.release();
  for (const r of [0, 1]) {
    const alone = new ValueObjective(model, [plans[r]], o);
    await alone.evaluate([zero()]);
    const got = await alone.evaluate([deltas[r]], [true]);
    alone.release();
    assert.ok(Math.abs(got.losses[0] - together.losses[r]) < 1e-5, `request ${r} loss`);
    assertClose(
      got.grads[0]!,
      together.grads[r]!,
      1e-5 * Math.max(...got.grads[0]!.map(Math.abs)),
      `request ${r} gradient`,
    );
  }
});

Deno.test("v* grouping: requests split over several batches (fitsOneBatch's row cap) give one batch's results, in request order", async () => {
  const model = Model.random(gpu, cfg, 19, true);
  const requests: EditRequest[] = [
    { prompt: "{} works at", subject: "Carl", target: "Rome Lima" },
    request,
    { prompt: "{} is a", subject: "Eva Falk", target: "city" },
  ];
  const o = { ...BATCH_VALUES, layer: 1, steps: 3 };
  const plans = requests.map((r) => planRequest(tok, r, o));
  assert.ok(fitsOneBatch(model, plans), "three small requests fit the adapter's limits");
  assert.ok(!fitsOneBatch(model, plans, 10), "but not a cap of 10 rows");
  const together = await optimiseValues(model, tok, requests, o);
  const progress: [number, number][] = [];
  const split = await optimiseValues(model, tok, requests, {
    ...o,
    maxRowsPerBatch: 1,
    onProgress: (done, total) => progress.push([done, total]),
  });
  for (const i of requests.keys()) assertClose(split[i].target, together[i].target, 1e-6, `request ${i}`);
  // Three batches of at most 3 steps each: progress rises step by step (a batch stopping early jumps to
  // its share's end) and ends at the total.
  assert.ok(progress.every(([, total]) => total === 9), JSON.stringify(progress));
  assert.ok(progress.every(([done], k) => k === 0 || done > progress[k - 1][0]), JSON.stringify(progress));
  assert.deepEqual(progress.at(-1), [9, 9]);
});

Deno.test("v* and ROME edits of requests at different layers in one call equal each computed at its layer alone", async () => {
  const model = Model.random(gpu, cfg, 17, true);
  const requests: EditRequest[] = [
    request,
    { prompt: "{} works at", subject: "Carl", target: "Rome Lima" },
    { prompt: "{} lives in", subject: "Eva Falk", target: "Lima" },
  ];
  const layers = [2, 0, 1];
  const o = { ...BATCH_VALUES, layer: 0, layers, steps: 5 };
  // The layers' batches run side by side on one delta-free pass; the same fact at two more layers shares
  // its prompts there. Progress only moves forward and ends at every batch's steps.
  const progress: number[] = [];
  const together = await optimiseValues(model, tok, [...requests, requests[0], requests[0]], {
    ...o,
    layers: [...layers, 0, 1],
    onProgress: (done, total) => progress.push(done / total),
  });
  assert.ok(progress.every((x, i) => i === 0 || x > progress[i - 1]), `progress ${progress}`);
  assert.equal(progress.at(-1), 1);
  for (const [i, r] of [...requests, requests[0], requests[0]].entries()) {
    const layer = [...layers, 0, 1][i];
    const [alone] = await optimiseValues(model, tok, [r], { ...o, layers: undefined, layer });
    assertClose(together[i].target, alone.target, 1e-5, `request ${i} at layer ${layer}: v*`);
    assert.equal(together[i].losses.length, alone.losses.length);
  }

  // ROME over layers: each edit is the one computeRome makes at its layer (statistics per layer).
  const { stats } = await computeKeyStats(model, packCorpus(tok, corpusLines(200, 5), 24), {
    layers: [0, 1, 2],
    samples: 400,
  });
  const hp4 = { ...hp, vNumGradSteps: 3 };
  const edits = await computeRomeAt(model, tok, requests, layers, stats, hp4, { startWords });
  for (const [i, r] of requests.entries()) {
    const [alone] = await computeRome(model, tok, [r], stats.get(layers[i])!, { ...hp4, layer: layers[i] }, {
      startWords,
    });
    const [a, b] = [edits[i].deltas[0], alone.deltas[0]];
    assert.equal(a.param, `h.${layers[i]}.mlp.c_proj.weight`);
    assert.equal(a.param, b.param);
    if (a.kind !== "low-rank" || b.kind !== "low-rank") throw new Error("ROME gives low-rank deltas");
    assertClose(a.left, b.left, 1e-5, `edit ${i}: u`);
    assertClose(a.right, b.right, 1e-4 * Math.max(...b.right.map(Math.abs)), `edit ${i}: r`);
  }
});

Deno.test("prompt instances: subject range after the context (also when the context names the subject), fact token strategies", () => {
  const ids = (text: string) => tok.encode(text);
  const p = instantiate(tok, "Anna Berg lives in Oslo . {}", "{} works at", "Anna Berg");
  assert.deepEqual(p.ids, ids("Anna Berg lives in Oslo . Anna Berg works at"));
  assert.deepEqual(p.subject, [6, 8], "the subject's occurrence in the prompt, not the one in the context");
  assert.equal(p.fact, 7);
  assert.equal(instantiate(tok, "{}", "{} works at", "Anna Berg", undefined, "subject_first").fact, 0);
  assert.equal(instantiate(tok, "{}", "{} works at", "Anna Berg", undefined, "last").fact, 3);
  assert.throws(() => instantiate(tok, "no slot", "{} works at", "Anna"), /has no "\{\}" for the prompt/);
  assert.throws(() => instantiate(tok, "{}", "Anna works at", "Anna"), /has no "\{\}" for the subject/);
});

Deno.test("request plans: the KL prompt ends at its fact token, or at the subject's end when that is later", () => {
  const o = valueOptions(hp, 0, "mlp", ["{}", "Carl lives in Oslo . {}"]);
  const request = { prompt: "{} works at", subject: "Anna Berg", target: "Rome" };
  const plan = planRequest(tok, request, o);
  assert.equal(plan.instances.length, 3);
  assert.deepEqual(plan.instances[0].ids, tok.encode("Anna Berg works at"), "rewrite prompts are whole");
  assert.deepEqual(plan.instances.at(-1), {
    ...instantiate(tok, "{}", "{} is a", "Anna Berg"),
    ids: tok.encode("Anna Berg"),
  });
  const first = planRequest(tok, request, { ...o, factToken: "subject_first" }).instances.at(-1)!;
  assert.deepEqual([first.ids, first.fact, first.subject], [tok.encode("Anna Berg"), 0, [0, 2]]);
  const last = planRequest(tok, request, { ...o, factToken: "last" }).instances.at(-1)!;
  assert.deepEqual([last.ids, last.fact], [tok.encode("Anna Berg is a"), 3]);
});

Deno.test("context templates are sampled after BOS where the tokenizer puts one, from EOS where not", async () => {
  const model = Model.random(gpu, cfg, 11, true);
  const bos = tok.eosId!;
  // The word-level tokenizer made Llama-like: encode puts a BOS first, decode leaves it out.
  const withBos: Tokenizer = {
    vocabSize: tok.vocabSize,
    eosId: null,
    bosId: bos,
    encode: (t) => [bos, ...tok.encode(t)],
    decode: (ids) => tok.decode(ids[0] === bos ? ids.slice(1) : ids),
    tokenString: (id) => tok.tokenString(id),
    isSpecial: (id) => id === bos,
    idOf: (t) => tok.idOf(t),
    encodeWithOffsets: (t) => {
      const e = tok.encodeWithOffsets(t);
      return { ids: [bos, ...e.ids], offsets: [[0, 0], ...e.offsets] };
    },
  };
  // Greedy (top 1) texts of two tokens, so each template is the start and the model's argmax after it.
  // Seeds differ as templates are cached per model and spec.
  const spec = (seed: number) => ({ lengths: [[2, 3]] as [number, number][], seed, topK: 1 });
  const templates = (text: string) => ["{}", ...Array(3).fill(text + ". {}")];
  const word = tok.encode(startWords[0]);
  assert.equal(word.length, 1);
  const [afterWord] = await greedyNextTokens(model, [[bos, ...word]]);
  assert.deepEqual(
    await contextTemplates(model, withBos, { ...spec(1), startWords: [startWords[0]] }),
    templates(tok.decode([...word, afterWord])),
    "BOS, the start word, then the sampled token",
  );
  const [afterBos] = await greedyNextTokens(model, [[bos]]);
  assert.deepEqual(await contextTemplates(model, withBos, spec(2)), templates(tok.decode([afterBos])));
  const [afterEos] = await greedyNextTokens(model, [[tok.eosId!]]);
  assert.deepEqual(
    await contextTemplates(model, tok, spec(3)),
    templates(tok.decode([afterEos].filter((id) => id !== tok.eosId))),
    "no BOS: from EOS, as ROME does for GPT-2",
  );
});

Deno.test("suffixParts: contiguous length ranges of least padded rows + overhead, every instance once", () => {
  const r = rng(41);
  const cost = (parts: number[][], lengths: number[], overhead: number) =>
    parts.reduce((s, p) => s + p.length * Math.max(...p.map((i) => lengths[i])) + overhead, 0);
  for (let trial = 0; trial < 40; trial++) {
    const lengths = Array.from({ length: 1 + Math.floor(r() * 30) }, () => 1 + Math.floor(r() * 7));
    const overhead = [0, 8, 64, 1000][trial % 4];
    const parts = suffixParts(lengths, overhead);
    assert.deepEqual(parts.flat().sort((a, b) => a - b), lengths.map((_, i) => i), "each instance once");
    // Brute force over every split of the sorted distinct lengths into contiguous ranges.
    const distinct = [...new Set(lengths)].sort((a, b) => a - b);
    let best = Infinity;
    for (let mask = 0; mask < 2 ** (distinct.length - 1); mask++) {
      const split: number[][] = [[]];
      distinct.forEach((l, i) => {
        if (i > 0 && (mask >> (i - 1)) & 1) split.push([]);
        split.at(-1)!.push(...lengths.flatMap((x, k) => (x === l ? [k] : [])));
      });
      best = Math.min(best, cost(split, lengths, overhead));
    }
    assert.equal(cost(parts, lengths, overhead), best, `trial ${trial}: optimal cost`);
  }
  assert.equal(suffixParts([3, 7, 7, 3], 0).length, 2, "no overhead: one part per length");
  assert.equal(suffixParts([3, 7, 7, 3], 1000).length, 1, "large overhead: one part");
});
