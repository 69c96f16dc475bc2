// Causal tracing and representation zeroing (experiments/localization/tracing.ts) on tiny random models, checked
// against a direct float64 computation with the reference forward's hooks (tests/reference_model.ts).
import assert from "node:assert/strict";
import type { GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, randomWeights } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import {
  averageCurvesSvg,
  averageHeatmapSvg,
  heatmapSvg,
  terminalHeatmap,
  topCells,
} from "../experiments/pictures/heatmap.ts";
import { greedyNextTokens } from "../experiments/evaluation/recall.ts";
import { main } from "../experiments/commands/trace.ts";
import {
  averageTraces,
  type Cell,
  embeddingStd,
  gaussianNoise,
  type GridTrace,
  type KindGrid,
  knownFacts,
  parseKnownFacts,
  type StateKind,
  subjectNoiseLevel,
  tokenGroups,
  traceFact,
  TraceRun,
  traceTokens,
  windowLayers,
} from "../experiments/localization/tracing.ts";
import { referenceForward, type RefHook } from "./reference_model.ts";

const gpu = await getGpu();
const cfg: GPT2Config = {
  vocabSize: 23,
  nPositions: 8,
  nEmbd: 16,
  nLayer: 3,
  nHead: 2,
  layerNormEpsilon: 1e-5,
};
const ids = [3, 7, 11, 2, 9, 14];
const subject: [number, number] = [1, 3];
const target = 5;

/** Random GPT-2 weights with the matrices scaled up 10x, so that noise and restoring move p(target) by ~1e-3..1e-2. */
function sharpWeights(seed: number): Map<string, Float32Array> {
  const w = randomWeights(cfg, seed, true);
  for (const [name, a] of w) if (!/ln_|bias/.test(name)) a.forEach((v, i) => a[i] = 10 * v);
  return w;
}
const weights = sharpWeights(5);
const model = Model.fromArrays(gpu, cfg, weights);

// ---------------------------------------------------------------- float64 reference

function targetProb(logits: Float64Array[]): number {
  const last = logits[logits.length - 1];
  const mx = Math.max(...last);
  const z = last.reduce((s, v) => s + Math.exp(v - mx), 0);
  return Math.exp(last[target] - mx) / z;
}

/** Clean states of `kind` at every layer, [L][T][d], from the reference forward. */
function referenceStates(kind: StateKind): Float64Array[][] {
  const states: Float64Array[][] = [];
  const hooks: RefHook[] = Array.from({ length: cfg.nLayer }, (_, l) => ({
    layer: l,
    site: kind,
    capture: (rows) => states[l] = rows.map((r) => r.slice()),
  }));
  referenceForward(cfg, weights, ids, hooks);
  return states;
}

/** Noise draw of sample n for subject token i: what tracing adds, rebuilt from gaussianNoise. */
function referenceNoise(
  samples: number,
  level: number,
  seed: number,
): (n: number, i: number) => Float64Array {
  const d = cfg.nEmbd, len = subject[1] - subject[0];
  const z = gaussianNoise(samples * len * d, seed);
  return (n, i) => Float64Array.from({ length: d }, (_, k) => Math.fround(level * z[(n * len + i) * d + k]));
}

/**
 * p(target) of each grid cell computed directly: for every cell and sample a full float64 forward with
 * the noise added to the subject embeddings and the clean states restored (or, with no noise, zeroed).
 */
function referenceGrid(
  kind: StateKind,
  window: number,
  method: "noise" | "zero",
  samples: number,
  level: number,
  seed: number,
): number[][] {
  const clean = referenceStates(kind);
  const noise = referenceNoise(samples, level, seed);
  const L = cfg.nLayer, T = ids.length, w2 = Math.floor(window / 2);
  return ids.map((_, t) =>
    Array.from({ length: L }, (_, l) => {
      const lo = Math.max(0, l - w2), hi = Math.min(L, l - w2 + window);
      let p = 0;
      const runs = method === "noise" ? samples : 1;
      for (let n = 0; n < runs; n++) {
        const hooks: RefHook[] = [];
        if (method === "noise") {
          hooks.push({
            layer: -1,
            site: "embed",
            patch: (rows) => {
              for (let i = 0; i < subject[1] - subject[0]; i++) {
                const z = noise(n, i);
                rows[subject[0] + i] = rows[subject[0] + i].map((v, k) => v + z[k]);
              }
            },
          });
        }
        for (let layer = lo; layer < hi; layer++) {
          hooks.push({
            layer,
            site: kind,
            patch: (rows) =>
              rows[t] = method === "noise" ? clean[layer][t].slice() : new Float64Array(cfg.nEmbd),
          });
        }
        p += targetProb(referenceForward(cfg, weights, ids, hooks));
      }
      assert.equal(T, ids.length);
      return p / runs;
    })
  );
}

function maxAbs(a: number[][], b: number[][]): number {
  return Math.max(...a.flatMap((row, t) => row.map((v, l) => Math.abs(v - b[t][l]))));
}

function gridOf(trace: GridTrace, kind: StateKind): KindGrid {
  return trace.grids.find((g) => g.kind === kind)!;
}

// ---------------------------------------------------------------- windows and noise

Deno.test("windows are clipped at the first and last layer, not shifted (as ROME's reference code does)", () => {
  const L = 12;
  const cases: [number, number, [number, number]][] = [
    [0, 10, [0, 5]],
    [5, 10, [0, 10]],
    [6, 10, [1, 11]],
    [9, 10, [4, 12]],
    [11, 10, [6, 12]],
    [3, 5, [1, 6]],
    [0, 5, [0, 3]],
    [11, 5, [9, 12]],
    [0, 3, [0, 2]],
    [7, 3, [6, 9]],
    [11, 3, [10, 12]],
    [4, 1, [4, 5]],
    [4, 4, [2, 6]],
    [1, 30, [0, 12]],
  ];
  for (const [layer, w, want] of cases) {
    assert.deepEqual(windowLayers(layer, w, L), want, `layer ${layer} window ${w}`);
  }
  assert.throws(() => windowLayers(0, 0, L), /window must be an integer >= 1/);
  assert.throws(() => windowLayers(12, 1, L), /layer 12 outside \[0, 12\)/);
});

Deno.test("gaussian noise is a fixed function of the seed with mean 0 and std 1", () => {
  const a = gaussianNoise(20001, 1), b = gaussianNoise(20001, 1), c = gaussianNoise(20001, 2);
  assert.deepEqual(a, b);
  assert.ok(a.some((v, i) => v !== c[i]), "another seed gives other noise");
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const std = Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / (a.length - 1));
  assert.ok(Math.abs(mean) < 0.03 && Math.abs(std - 1) < 0.03, `mean ${mean} std ${std}`);
  // A prefix of a longer draw is the shorter draw: every subject length sees the same first numbers.
  assert.deepEqual(gaussianNoise(7, 1), a.subarray(0, 7));
});

// ---------------------------------------------------------------- invariants

Deno.test("restoring the residual at every token of one layer gives back the clean probability", async () => {
  const run = TraceRun.prepare(model, [{ ids, subject, target }], { samples: 4, noise: 1, seed: 1 });
  const all = ids.map((_, t) => t);
  const cells: Cell[] = Array.from(
    { length: cfg.nLayer },
    (_, l) => ({ kind: "resid", tokens: all, from: l, to: l + 1 }),
  );
  // Restoring both module outputs at every token and layer is not enough: the noised embedding stays.
  cells.push({ kind: "mlp", tokens: all, from: 0, to: cfg.nLayer });
  const probs = await run.score(cells, "restore");
  const [clean] = run.clean, [corrupted] = run.corrupted;
  assert.ok(Math.abs(clean - corrupted) > 1e-3, `noise must matter: clean ${clean} corrupted ${corrupted}`);
  for (let l = 0; l < cfg.nLayer; l++) {
    assert.ok(Math.abs(probs[l] - clean) < 1e-6, `layer ${l}: ${probs[l]} vs clean ${clean}`);
  }
  assert.ok(
    Math.abs(probs[cfg.nLayer] - clean) > 1e-4,
    "restoring the MLP outputs alone is not the clean run",
  );
  run.release();
});

Deno.test("zero noise gives zero effect everywhere; tokens before the subject never matter", async () => {
  const still = await traceTokens(model, ids, subject, target, { samples: 3, noise: 0, window: 1 });
  assert.ok(Math.abs(still.corrupted! - still.clean) < 1e-7);
  for (const g of still.grids) {
    for (const row of g.effect) {
      for (const v of row) assert.ok(Math.abs(v) < 1e-7, `${g.kind}: effect ${v}`);
    }
  }
  // Computed (the naive path runs every cell; the batched one knows the answer without a forward).
  const noisy = await traceTokens(model, ids, subject, target, {
    samples: 3,
    noise: 1,
    window: 1,
    reuse: false,
  });
  for (const g of noisy.grids) {
    for (const v of g.effect[0]) assert.ok(Math.abs(v) < 1e-7, `${g.kind}: token 0 precedes the subject`);
  }
  assert.ok(
    noisy.grids.some((g) => g.effect.some((row) => row.some((v) => Math.abs(v) > 1e-3))),
    "some cell has an effect",
  );
});

Deno.test("the same seed gives identical grids, another seed other ones", async () => {
  const o = { samples: 3, noise: 1, window: 1 };
  const a = await traceTokens(model, ids, subject, target, { ...o, seed: 7 });
  const b = await traceTokens(model, ids, subject, target, { ...o, seed: 7 });
  const c = await traceTokens(model, ids, subject, target, { ...o, seed: 8 });
  assert.deepEqual(a.grids, b.grids);
  assert.equal(a.corrupted, b.corrupted);
  assert.ok(maxAbs(gridOf(a, "resid").prob, gridOf(c, "resid").prob) > 1e-5, "seed 8 differs from seed 7");
});

// ---------------------------------------------------------------- against the float64 reference

for (const window of [1, 2, 3]) {
  Deno.test(`noise grid (window ${window}, every kind) matches the float64 reference; reuse = naive`, async () => {
    const o = { samples: 3, noise: 1.5, seed: 3, window };
    const reused = await traceTokens(model, ids, subject, target, o);
    const naive = await traceTokens(model, ids, subject, target, { ...o, reuse: false });
    for (const kind of ["resid", "mlp", "attn"] as const) {
      const got = gridOf(reused, kind), want = referenceGrid(kind, window, "noise", 3, 1.5, 3);
      assert.ok(maxAbs(got.prob, want) < 2e-6, `${kind}: GPU vs reference ${maxAbs(got.prob, want)}`);
      assert.ok(maxAbs(got.prob, gridOf(naive, kind).prob) < 1e-7, `${kind}: reuse vs naive`);
      const effectRange = Math.max(...got.effect.flat()) - Math.min(...got.effect.flat());
      assert.ok(effectRange > 1e-3, `${kind}: the grid is not flat (${effectRange})`);
    }
    // Summaries: fraction = effect / (clean - corrupted); max over tokens; the last subject token.
    const g = gridOf(reused, "mlp"), span = reused.clean - reused.corrupted!;
    assert.ok(Math.abs(g.fraction[2][1] - g.effect[2][1] / span) < 1e-12);
    assert.deepEqual(g.layers.maxEffect, [0, 1, 2].map((l) => Math.max(...g.effect.map((r) => r[l]))));
    assert.deepEqual(g.layers.lastSubjectFraction, g.fraction[subject[1] - 1]);
  });
}

Deno.test("zeroing grid matches the float64 reference; all subject tokens zeroed per layer; reuse = naive", async () => {
  const o = { method: "zero" as const, window: 2 };
  const reused = await traceTokens(model, ids, subject, target, o);
  const naive = await traceTokens(model, ids, subject, target, { ...o, reuse: false });
  assert.equal(reused.corrupted, null);
  assert.ok(Math.abs(reused.clean - targetProb(referenceForward(cfg, weights, ids))) < 2e-6);
  for (const kind of ["resid", "mlp", "attn"] as const) {
    const got = gridOf(reused, kind), want = referenceGrid(kind, 2, "zero", 1, 0, 0);
    assert.ok(maxAbs(got.prob, want) < 2e-6, `${kind}: GPU vs reference ${maxAbs(got.prob, want)}`);
    assert.ok(maxAbs(got.prob, gridOf(naive, kind).prob) < 1e-7, `${kind}: reuse vs naive`);
    const removed = got.effect.flat();
    assert.ok(Math.max(...removed.map(Math.abs)) > 1e-3, `${kind}: zeroing changes something`);
    assert.ok(Math.abs(got.fraction[4][1] - (reused.clean - got.prob[4][1]) / reused.clean) < 1e-12);
    // Zeroing every subject token at once, layers [0, 2) for centre layer 1 (window 2 -> [0, 2)).
    const wantSubject = targetProb(referenceForward(
      cfg,
      weights,
      ids,
      [0, 1].map((layer) => ({
        layer,
        site: kind,
        patch: (rows: Float64Array[]) => {
          for (let t = subject[0]; t < subject[1]; t++) rows[t].fill(0);
        },
      })),
    ));
    assert.ok(Math.abs(got.subjectZeroed!.prob[1] - wantSubject) < 2e-6, `${kind}: subject zeroed`);
  }
  // Averages of zeroing traces carry the all-subject-tokens curve: the mean over facts.
  const averages = averageTraces([reused, naive]);
  averages.forEach((avg) => {
    const [a, b] = [gridOf(reused, avg.kind), gridOf(naive, avg.kind)];
    assert.deepEqual(
      avg.subjectZeroed!.prob,
      a.subjectZeroed!.prob.map((p, l) => (p + b.subjectZeroed!.prob[l]) / 2),
    );
  });
});

Deno.test("batches split by maxRows give the same grid as one batch per start layer", async () => {
  const o = { samples: 2, noise: 1, seed: 4, window: 3 };
  const whole = await traceTokens(model, ids, subject, target, o);
  const split = await traceTokens(model, ids, subject, target, { ...o, maxRows: 2 * ids.length * 2 }); // 2 cells per batch
  for (const kind of ["resid", "mlp", "attn"] as const) {
    assert.ok(maxAbs(gridOf(whole, kind).prob, gridOf(split, kind).prob) < 1e-7);
  }
});

Deno.test("bad cells and ranges give clear errors", async () => {
  const o = { samples: 1, noise: 1, seed: 1 };
  assert.throws(
    () => TraceRun.prepare(model, [{ ids, subject: [4, 9], target }], o),
    /subject token range \[4, 9\)/,
  );
  assert.throws(() => TraceRun.prepare(model, [{ ids, subject, target: 99 }], o), /target token 99/);
  assert.throws(
    () => TraceRun.prepare(model, [{ ids, subject, target }, { ids: [1, 2], subject: [1, 3], target }], o),
    /prompt 1: subject token range \[1, 3\) is not inside the prompt's 2 tokens/,
  );
  assert.throws(
    () => TraceRun.prepare(model, [{ ids, subject, target }], { ...o, noise: [1, 2] }),
    /2 noise levels for 1 prompts/,
  );
  const run = TraceRun.prepare(
    model,
    [{ ids, subject, target }, { ids: [1, 2], subject: [0, 1], target }],
    o,
  );
  await assert.rejects(
    run.score([{ kind: "mlp", tokens: [0], from: 2, to: 2 }], "restore"),
    /cell 0 .*non-empty range/,
  );
  await assert.rejects(
    run.score([{ kind: "mlp", tokens: [6], from: 0, to: 1 }], "restore"),
    /token outside \[0, 6\)/,
  );
  await assert.rejects(
    run.score([{ kind: "mlp", tokens: [2], from: 0, to: 1, prompt: 1 }], "restore"),
    /token outside \[0, 2\)/,
  );
  await assert.rejects(
    run.score([{ kind: "mlp", tokens: [0], from: 0, to: 1, prompt: 2 }], "restore"),
    /prompt must be an index into the run's 2 prompts/,
  );
  run.release();
});

// ---------------------------------------------------------------- text facts, datasets, averages, pictures

const words = [
  "<unk>",
  "<eos>",
  "the",
  "capital",
  "of",
  "Zorvia",
  "Prime",
  "is",
  "Lumen",
  "City",
  "a",
  "city",
  ".",
  "Ostra",
  "river",
];
const tok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<eos>" });
const wordCfg: GPT2Config = { ...cfg, vocabSize: words.length, nPositions: 12 };
const wordModel = Model.random(gpu, wordCfg, 9, true);

Deno.test("traceFact finds the subject tokens and scores the first token of ' ' + target", async () => {
  const fact = { prompt: "the capital of Zorvia Prime is", subject: "Zorvia Prime", target: "Lumen City" };
  const trace = await traceFact(wordModel, tok, fact, { samples: 2, kinds: ["mlp"], window: 1 });
  assert.deepEqual(trace.subjectRange, [3, 5]);
  assert.equal(trace.targetId, words.indexOf("Lumen"));
  assert.deepEqual(trace.tokens, ["the", "capital", "of", "Zorvia", "Prime", "is"]);
  assert.equal(trace.grids.length, 1);
  assert.equal(trace.grids[0].prob.length, 6);
  await assert.rejects(
    traceFact(wordModel, tok, { ...fact, subject: "Ostra" }),
    /subject "Ostra" does not occur/,
  );
});

Deno.test("known-facts files: records are checked field by field", () => {
  const good = JSON.stringify([{
    known_id: 4,
    subject: "Zorvia",
    attribute: "Lumen",
    template: "{} is",
    prompt: "Zorvia is",
    relation_id: "P1",
  }]);
  assert.deepEqual(parseKnownFacts(good, "k.json"), [{
    known_id: 4,
    subject: "Zorvia",
    attribute: "Lumen",
    prompt: "Zorvia is",
  }]);
  assert.throws(() => parseKnownFacts("{", "k.json"), /k\.json: not valid JSON/);
  assert.throws(() => parseKnownFacts("{}", "k.json"), /k\.json: expected a JSON array/);
  assert.throws(
    () => parseKnownFacts('[{"subject": "a", "prompt": "a b"}]', "k.json"),
    /k\.json: record 0: field "attribute"/,
  );
  assert.throws(
    () => parseKnownFacts('[{"subject": "x", "attribute": "y", "prompt": "a b"}]', "k.json"),
    /record 0: field "subject" \("x"\) does not occur/,
  );
  assert.throws(
    () => parseKnownFacts('[{"known_id": "1", "subject": "a", "attribute": "y", "prompt": "a b"}]', "k.json"),
    /field "known_id"/,
  );
});

Deno.test("token groups follow ROME's averages", () => {
  // T = 8, subject [2, 5): first 2, middle 3, last 4, first subsequent 5, further 6, last token 7.
  assert.deepEqual(tokenGroups(8, [2, 5]), {
    "first subject token": [2],
    "middle subject tokens": [3],
    "last subject token": [4],
    "first subsequent token": [5],
    "further tokens": [6],
    "last token": [7],
  });
  // A one-token subject at the end: it is first, last and last token; nothing follows it.
  assert.deepEqual(tokenGroups(3, [2, 3]), {
    "first subject token": [2],
    "middle subject tokens": [],
    "last subject token": [2],
    "first subsequent token": [],
    "further tokens": [],
    "last token": [2],
  });
});

Deno.test("averages pool token rows per group across facts", () => {
  /** A noise trace with one kind whose prob[t][l] = value(t, l), over L = 2 layers. */
  const fake = (
    T: number,
    range: [number, number],
    low: number,
    value: (t: number, l: number) => number,
  ): GridTrace => {
    const prob = Array.from({ length: T }, (_, t) => [0, 1].map((l) => value(t, l)));
    const effect = prob.map((r) => r.map((p) => p - low));
    const fraction = effect.map((r) => r.map((e) => e / (1 - low)));
    const layers = { maxEffect: [], maxFraction: [], lastSubjectEffect: [], lastSubjectFraction: [] };
    return {
      method: "noise",
      ids: new Array(T).fill(0),
      subjectRange: range,
      targetId: 0,
      clean: 1,
      corrupted: low,
      noise: 1,
      samples: 1,
      seed: 1,
      grids: [{ kind: "mlp", window: 1, prob, effect, fraction, layers }],
    };
  };
  const a = fake(8, [1, 5], 0.2, (t, l) => 0.1 * t + l); // middle subject tokens 2 and 3
  const b = fake(3, [0, 1], 0.4, (t, l) => 0.5 + 0.1 * t + l); // one-token subject, no middle, no further
  const [avg] = averageTraces([a, b]);
  assert.equal(avg.facts, 2);
  assert.ok(Math.abs(avg.clean - 1) < 1e-12 && Math.abs(avg.corrupted! - 0.3) < 1e-12);
  const group = (name: string) => avg.groups.find((g) => g.group === name)!;
  const close = (x: number, y: number) => assert.ok(Math.abs(x - y) < 1e-12, `${x} vs ${y}`);
  assert.equal(group("middle subject tokens").count, 2);
  close(group("middle subject tokens").prob[0], (0.2 + 0.3) / 2);
  // last subject token: a's token 4, b's token 0; effects pool each fact's own corrupted probability.
  close(group("last subject token").prob[1], (1.4 + 1.5) / 2);
  close(group("last subject token").effect[0], ((0.4 - 0.2) + (0.5 - 0.4)) / 2);
  // Effects 0.2 and 0.1: standard deviation 0.1 / sqrt(2), standard error 0.05; one row has none.
  close(group("last subject token").effectSe[0], 0.05);
  assert.ok(Number.isNaN(group("further tokens").effectSe[0]));
  close(group("first subsequent token").prob[0], (0.5 + 0.6) / 2);
  assert.equal(group("further tokens").count, 1);
  close(group("further tokens").prob[0], 0.6);
  close(group("last token").fraction[0], ((0.7 - 0.2) / 0.8 + (0.7 - 0.4) / 0.6) / 2);
});

Deno.test("heatmaps: one SVG panel per kind with subject tokens marked; terminal grid and top cells", async () => {
  const fact = { prompt: "the capital of Zorvia Prime is", subject: "Zorvia Prime", target: "Lumen" };
  const trace = await traceFact(wordModel, tok, fact, { samples: 2, noise: 1, window: 1 });
  const svg = heatmapSvg(trace);
  assert.equal((svg.match(/class="panel"/g) ?? []).length, 3);
  assert.equal((svg.match(/<rect class="cell"/g) ?? []).length, 3 * 6 * cfg.nLayer);
  assert.ok(svg.includes("Zorvia*") && svg.includes("Prime*") && !svg.includes("capital*"));
  const text = terminalHeatmap(trace, "resid", { color: false });
  const lines = text.split("\n");
  assert.ok(lines.some((line) => line.startsWith("Zorvia*")));
  assert.equal(lines.filter((line) => line.endsWith("|")).length, 6, "one row per token");
  const top = topCells(trace, 4);
  assert.equal(top.length, 4);
  for (let i = 1; i < top.length; i++) assert.ok(top[i - 1].effect >= top[i].effect);
  const curves = averageCurvesSvg(averageTraces([trace])[0]);
  assert.ok(curves.startsWith("<svg") && curves.includes("last subject token"));
  // The averaged picture: a panel per kind, a row per token group, subject groups in bold.
  const averaged = averageHeatmapSvg(averageTraces([trace, trace]));
  assert.equal((averaged.match(/class="panel"/g) ?? []).length, 3);
  assert.equal((averaged.match(/<rect class="cell"/g) ?? []).length, 3 * 6 * cfg.nLayer);
  assert.ok(averaged.includes("average over 2 facts"));
  assert.match(averaged, /font-weight="bold">last subject token \(n=2\)</);
  assert.match(averaged, /text-anchor="end">last token \(n=2\)</);
});

Deno.test("deno task trace on a dataset: known filter, JSON with run metadata, CSV rows, pictures", async () => {
  const dir = await Deno.makeTempDir();
  await wordModel.save(dir);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());
  // Two facts whose attribute is the model's own greedy completion (a word, not <unk> or <eos>, which
  // no target may be), one it gets wrong.
  const candidates = [
    ["the capital of Zorvia Prime is", "Zorvia Prime"],
    ["Ostra is a", "Ostra"],
    ["the river Ostra is", "Ostra"],
    ["Ostra is the", "Ostra"],
    ["the city of Ostra is", "Ostra"],
    ["Zorvia is a", "Zorvia"],
  ];
  const candidateGreedy = await greedyNextTokens(wordModel, candidates.map(([p]) => tok.encode(p)));
  const usable = candidates.filter((_, i) => candidateGreedy[i] > 1).slice(0, 2);
  assert.equal(usable.length, 2, "fewer than two prompts complete with a word");
  const prompts = [...usable.map(([p]) => p), "Lumen City is a"];
  const subjects = [...usable.map(([, s]) => s), "Lumen City"];
  const greedy = await greedyNextTokens(wordModel, prompts.map((p) => tok.encode(p)));
  const attributes = [
    tok.tokenString(greedy[0]),
    tok.tokenString(greedy[1]),
    words[greedy[2] === 2 ? 3 : 2], // any ordinary word other than its prediction
  ];
  const records = prompts.map((prompt, i) => ({
    known_id: 10 + i,
    subject: subjects[i],
    attribute: attributes[i],
    template: "",
    prediction: "",
    prompt,
    relation_id: "P",
  }));
  await Deno.writeTextFile(`${dir}/known_facts.json`, JSON.stringify(records));
  const out = `${dir}/out`;
  const log = console.log, error = console.error;
  console.log = console.error = () => {};
  try {
    assert.equal(
      await main([
        "--model",
        dir,
        "--out",
        out,
        "--kind",
        "mlp",
        "--window",
        "1",
        "--samples",
        "2",
        "--seed",
        "3",
      ]),
      0,
    );
  } finally {
    console.log = log;
    console.error = error;
  }
  const { meta, facts, averages } = JSON.parse(await Deno.readTextFile(`${out}/trace.json`));
  assert.equal(meta.model, dir);
  assert.equal(meta.dataset, `${dir}/known_facts.json`);
  assert.deepEqual(meta.facts, { records: 3, known: 2, traced: 2 });
  assert.equal(meta.seed, 3);
  assert.equal(meta.adapter, gpu.describe());
  assert.deepEqual(meta.hyperparameters.windows, { mlp: 1 });
  // ROME's rule over the two traced (known) facts' subjects.
  const expected = 3 * await referenceSubjectStd(subjects.slice(0, 2));
  assert.ok(
    Math.abs(meta.hyperparameters.noise - expected) < 1e-6 * expected,
    `${meta.hyperparameters.noise}`,
  );
  assert.match(
    meta.hyperparameters.noiseRule,
    /3 x std of the subject tokens' embeddings \(ROME\) over 2 subjects/,
  );
  assert.deepEqual(facts.map((f: { known_id: number }) => f.known_id), [10, 11]);
  assert.equal(averages.length, 1);
  const csvLines = (await Deno.readTextFile(`${out}/trace.csv`)).trim().split("\n");
  assert.ok(csvLines[0].startsWith("model,dataset,method,seed,samples,noise,adapter,known_id"));
  const tokens = prompts.slice(0, 2).reduce((n, p) => n + tok.encode(p).length, 0);
  assert.equal(csvLines.length - 1, tokens * wordCfg.nLayer, "one row per fact x token x layer");
  assert.ok(csvLines[1].startsWith(`${dir},${dir}/known_facts.json,noise,3,2,`));
  for (
    const file of [
      "averages.csv",
      "average-mlp.svg",
      "average-heatmap.svg",
      "heatmaps/fact-10.svg",
      "heatmaps/fact-11.svg",
    ]
  ) {
    await Deno.stat(`${out}/${file}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a grid of more dispatches than one submit holds (one forward per cell) gives the same numbers", async () => {
  const deep: GPT2Config = { ...cfg, nLayer: 6 };
  const deepModel = Model.random(gpu, deep, 2, true);
  const o = { samples: 2, noise: 1, seed: 1, window: 1 };
  const before = gpu.dispatchCount;
  const perCell = await traceTokens(deepModel, ids, subject, target, {
    ...o,
    reuse: false,
    maxRows: 2 * ids.length,
  });
  assert.ok(gpu.dispatchCount - before > 4096, `only ${gpu.dispatchCount - before} dispatches`);
  const reused = await traceTokens(deepModel, ids, subject, target, o);
  for (const kind of ["resid", "mlp", "attn"] as const) {
    assert.ok(maxAbs(gridOf(perCell, kind).prob, gridOf(reused, kind).prob) < 1e-7, kind);
  }
});

/** Float64 reference of ROME's sigma: two-pass unbiased std of the subjects' wte rows (repeats counted). */
async function referenceSubjectStd(subjects: string[]): Promise<number> {
  const wte = (await wordModel.toArrays()).get("wte.weight")!;
  const d = wordCfg.nEmbd;
  const values = subjects.flatMap((s) => tok.encode(s)).flatMap((
    id,
  ) => [...wte.subarray(id * d, (id + 1) * d)]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
}

Deno.test("noise level: ROME's rule is 3 x the std of the subjects' token embeddings, not of all of wte", async () => {
  const subjects = ["Zorvia Prime", "Ostra", "Zorvia Prime"]; // repeats count, as in ROME
  const level = await subjectNoiseLevel(wordModel, tok, subjects);
  const std = await referenceSubjectStd(subjects);
  assert.ok(Math.abs(level.std - std) < 1e-6 * std, `${level.std} vs ${std}`);
  assert.equal(level.level, 3 * level.std);
  assert.equal(level.subjects, 3);
  assert.notEqual(level.std, await embeddingStd(wordModel));
  // One subject token gives d values: enough for sigma (trace --prompt and edit with a one-word subject).
  const one = await subjectNoiseLevel(wordModel, tok, ["Ostra"]);
  assert.ok(Math.abs(one.std - await referenceSubjectStd(["Ostra"])) < 1e-6 * one.std);
  await assert.rejects(() => subjectNoiseLevel(wordModel, tok, []), /sigma needs 2 values/);
});

Deno.test("known facts: an unknown target word or a prompt longer than the model fails naming the file and record", async () => {
  const record = (id: number, prompt: string, attribute: string) => ({
    known_id: id,
    subject: "Ostra",
    attribute,
    prompt,
  });
  await assert.rejects(
    () =>
      knownFacts(
        wordModel,
        tok,
        [record(4, "Ostra is a", "is"), record(5, "Ostra is a", "Qwertyuiop")],
        "k.json",
      ),
    /k\.json: record 1 \(known_id 5\): target "Qwertyuiop" has the word "Qwertyuiop" outside the tokenizer's vocabulary/,
  );
  const long = Array(wordCfg.nPositions + 1).fill("Ostra").join(" ");
  await assert.rejects(
    () => knownFacts(wordModel, tok, [record(7, long, "is")], "k.json"),
    /k\.json: record 0 \(known_id 7\): the prompt has 13 tokens, the model reads at most 12/,
  );
});
