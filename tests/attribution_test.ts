// Integrated gradients, Layer Gradient Analysis and layer selection (experiments/localization/attribution.ts,
// experiments/localization/layer_selection.ts) on tiny random models, against float64 computations with the
// reference forward (tests/reference_model.ts) and central finite differences.
import assert from "node:assert/strict";
import { configSummary, type GPT2Config, gpt2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, randomWeights } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import {
  attributeFacts,
  averageAttributions,
  bestWindow,
  goldenLayers,
  integratedGradients,
  knowledgeNeurons,
  layerGradientAnalysis,
  lgaInnerProducts,
} from "../experiments/localization/attribution.ts";
import { heatmapPanelsSvg, lgaChartSvg, neuronHeatmapSvg } from "../experiments/pictures/attribution.ts";
import {
  bruteForceSelector,
  causalTracingSelector,
  fixedSelector,
  integratedGradientsSelector,
  lgaSelector,
  scaledMlpWindow,
  type SelectionRequest,
} from "../experiments/localization/layer_selection.ts";
import { traceFact } from "../experiments/localization/tracing.ts";
import { referenceForward, type RefHook } from "./reference_model.ts";

const gpu = await getGpu();
const words = [
  "<unk>",
  "the",
  "river",
  "Vela",
  "Dornik",
  "was",
  "born",
  "in",
  "Lisbon",
  "Oslo",
  "Rome",
  "lives",
  "city",
  "of",
];
const tok = new WordLevelTokenizer(words, { unk: "<unk>" });
const cfg: GPT2Config = {
  vocabSize: words.length,
  nPositions: 10,
  nEmbd: 8,
  nLayer: 3,
  nHead: 2,
  layerNormEpsilon: 1e-5,
};
const f = 4 * cfg.nEmbd;

/** Random GPT-2 weights with the matrices scaled up 8x, so that answers have uneven probabilities and
 *  every layer's MLP moves them noticeably. */
function sharpWeights(seed: number): Map<string, Float32Array> {
  const w = randomWeights(cfg, seed, true);
  for (const [name, a] of w) if (!/ln_|bias/.test(name)) a.forEach((v, i) => (a[i] = 8 * v));
  return w;
}
const weights = sharpWeights(11);
const model = Model.fromArrays(gpu, cfg, weights);

function softmaxAt(row: Float64Array, id: number): number {
  const mx = Math.max(...row);
  const z = row.reduce((s, v) => s + Math.exp(v - mx), 0);
  return Math.exp(row[id] - mx) / z;
}

function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

// ---------------------------------------------------------------- integrated gradients

/** p(target) at the last position with the last row of layer `layer`'s pre-GELU activation set to `row`. */
function referenceProbWith(ids: number[], target: number, layer: number, row: Float64Array | null): number {
  const hooks: RefHook[] = row
    ? [{ layer, site: "mlp_pre", patch: (rows) => rows[ids.length - 1].set(row) }]
    : [];
  const logits = referenceForward(cfg, weights, ids, hooks);
  return softmaxAt(logits[ids.length - 1], target);
}

/** Float64 integrated gradients with central finite differences for dp/d(alpha a)_i (ROME's KN convention). */
function referenceIg(
  ids: number[],
  target: number,
  steps: number,
): { neurons: number[][]; prob: number; baseline: number[] } {
  const neurons: number[][] = [], baseline: number[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    let a = new Float64Array(f);
    referenceForward(cfg, weights, ids, [{
      layer: l,
      site: "mlp_pre",
      capture: (rows) => (a = rows[ids.length - 1].slice()),
    }]);
    const scores = new Array(f).fill(0);
    const h = 1e-5;
    for (let k = 0; k < steps; k++) {
      const scaled = a.map((v) => (v * k) / (steps - 1));
      for (let i = 0; i < f; i++) {
        const up = scaled.slice(), down = scaled.slice();
        up[i] += h;
        down[i] -= h;
        const g = (referenceProbWith(ids, target, l, up) - referenceProbWith(ids, target, l, down)) / (2 * h);
        scores[i] += (a[i] / steps) * g;
      }
    }
    neurons.push(scores);
    baseline.push(referenceProbWith(ids, target, l, new Float64Array(f)));
  }
  return { neurons, prob: referenceProbWith(ids, target, 0, null), baseline };
}

Deno.test("integrated gradients of every neuron match a float64 finite-difference computation", async () => {
  const items = [{ ids: tok.encode("Vela Dornik was born in"), target: tok.encode("Lisbon")[0] }, {
    ids: tok.encode("the river lives in the city of"),
    target: tok.encode("Oslo")[0],
  }];
  const steps = 4;
  const results = await integratedGradients(model, items, { steps });
  items.forEach((it, i) => {
    const want = referenceIg(it.ids, it.target, steps);
    const got = results[i];
    assert.ok(Math.abs(got.prob - want.prob) < 1e-5, `item ${i} p: ${got.prob} vs ${want.prob}`);
    for (let l = 0; l < cfg.nLayer; l++) {
      const err = relativeError(got.neurons[l], want.neurons[l]);
      assert.ok(err < 1e-3, `item ${i} layer ${l}: relative error ${err}`);
      assert.ok(Math.abs(got.baselineProb[l] - want.baseline[l]) < 1e-5, `item ${i} layer ${l} baseline`);
      const sum = want.neurons[l].reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(got.layerSum[l] - sum) < 1e-3 * Math.abs(sum) + 1e-7, `item ${i} layer ${l} sum`);
      assert.equal(got.layerMax[l], Math.max(...got.neurons[l]));
    }
  });
});

Deno.test("integrated gradients: completeness holds up to the Riemann error, which shrinks as steps grow", async () => {
  const item = { ids: tok.encode("Vela Dornik was born in"), target: tok.encode("Lisbon")[0] };
  const errors: number[][] = []; // [steps][layer]
  for (const steps of [4, 16, 64]) {
    const [r] = await integratedGradients(model, [item], { steps });
    errors.push(r.layerSum.map((s, l) => Math.abs(s - (r.prob - r.baselineProb[l]))));
    if (steps === 64) {
      r.layerSum.forEach((s, l) => {
        const change = Math.abs(r.prob - r.baselineProb[l]);
        assert.ok(
          change > 1e-3,
          `layer ${l}: zeroing it changes p by ${change}, too little to test completeness`,
        );
        assert.ok(
          errors.at(-1)![l] < 0.01 * change,
          `layer ${l}: sum ${s} vs p - p(baseline) ${r.prob - r.baselineProb[l]}`,
        );
      });
    }
  }
  // The KN rule's error is ~ c/m: quadrupling the steps must cut it clearly.
  for (let l = 0; l < cfg.nLayer; l++) {
    assert.ok(
      errors[1][l] < 0.5 * errors[0][l],
      `layer ${l}: error ${errors[1][l]} at 16 steps vs ${errors[0][l]} at 4`,
    );
    assert.ok(
      errors[2][l] < 0.5 * errors[1][l],
      `layer ${l}: error ${errors[2][l]} at 64 steps vs ${errors[1][l]} at 16`,
    );
  }
});

Deno.test("integrated gradients do not depend on how (prompt, layer) pairs are batched", async () => {
  const facts = [{ prompt: "Vela Dornik was born in", target: "Lisbon" }, {
    prompt: "the city of",
    target: "Oslo",
  }];
  const together = await attributeFacts(model, tok, facts, { steps: 5 });
  const progress: number[] = [];
  const apart = await attributeFacts(model, tok, facts, {
    steps: 5,
    maxRows: 1,
    onProgress: (done, total) => progress.push(done / total),
  });
  assert.deepEqual(progress, [1, 2, 3, 4, 5, 6].map((k) => k / 6), "one pair per batch, progress after each");
  together.forEach((t, i) => {
    assert.equal(t.targetToken, facts[i].target);
    assert.deepEqual(t.tokens, facts[i].prompt.split(" "));
    for (let l = 0; l < cfg.nLayer; l++) {
      assert.ok(relativeError(apart[i].neurons[l], t.neurons[l]) < 1e-5, `fact ${i} layer ${l}`);
    }
  });
  const avg = averageAttributions(together);
  assert.equal(avg.facts, 2);
  for (let l = 0; l < cfg.nLayer; l++) {
    assert.ok(Math.abs(avg.layerSum[l] - (together[0].layerSum[l] + together[1].layerSum[l]) / 2) < 1e-9);
    assert.ok(
      Math.abs(avg.neurons[l][7] - (together[0].neurons[l][7] + together[1].neurons[l][7]) / 2) < 1e-9,
    );
  }
  await assert.rejects(
    attributeFacts(model, tok, [{ prompt: "the city of", target: "Paris" }]),
    /outside the tokenizer's vocabulary/,
  );
  await assert.rejects(
    integratedGradients(model, [{ ids: [1, 2], target: 3 }], { steps: 1 }),
    /steps must be an integer >= 2/,
  );
});

Deno.test("bestWindow, knowledgeNeurons and goldenLayers (Tukey's fences) on known inputs", () => {
  const scores = [0, 1, 5, 1, 0, 3, 3, 3];
  assert.deepEqual(bestWindow(scores, 1), [2]);
  assert.deepEqual(bestWindow(scores, 3), [5, 6, 7]); // 9 beats 1+5+1 = 7
  assert.deepEqual(bestWindow([2, 2, 1], 1), [0], "first of equal windows");
  assert.throws(() => bestWindow(scores, 9), /span must be/);
  assert.throws(() => bestWindow([1, NaN], 1), /layer 1 is NaN/);

  const kn = knowledgeNeurons({ neurons: [Float32Array.of(1, -2, 0.1), Float32Array.of(0.3, 0.19, 0.5)] });
  assert.deepEqual(
    kn.map((n) => [n.layer, n.neuron]),
    [[0, 0], [1, 2], [1, 0]],
    "above 0.2 x max = 0.2, strongest first",
  );

  // Quartiles of [1, 2, 3, 4, 100] (linear interpolation): q1 = 2, q3 = 4, IQR 2, fences [-1, 7].
  const high = goldenLayers([3, 1, 100, 2, 4]);
  assert.deepEqual([high.fences.q1, high.fences.q3, high.fences.lower, high.fences.upper], [2, 4, -1, 7]);
  assert.deepEqual(high.excluded, [2]);
  assert.deepEqual(high.ranking, [4, 0, 3, 1]);
  assert.equal(high.golden, 4, "the outlying layer 2 is excluded, the best of the rest wins");
  const low = goldenLayers([-50, 5, 6, 7, 8]); // q1 5, q3 7, fences [2, 10]
  assert.deepEqual(low.excluded, [0]);
  assert.equal(low.golden, 4);
  assert.equal(goldenLayers([1, 2, 3, 4]).golden, 3, "no outliers: the argmax");
  // [1, 2, 3, 20]: q1 1.75, q3 7.25, IQR 5.5; k = 1.5 puts the upper fence at 15.5, k = 3 at 23.75.
  assert.deepEqual([goldenLayers([1, 2, 3, 20]).excluded, goldenLayers([1, 2, 3, 20]).golden], [[3], 2]);
  assert.deepEqual([goldenLayers([1, 2, 3, 20], 3).excluded, goldenLayers([1, 2, 3, 20], 3).golden], [[], 3]);
});

// ---------------------------------------------------------------- Layer Gradient Analysis

/** Teacher-forced mean cross-entropy of `answer` after `prompt` in the float64 reference. */
function referenceLoss(prompt: number[], answer: number[]): number {
  const logits = referenceForward(cfg, weights, [...prompt, ...answer.slice(0, -1)]);
  let loss = 0;
  answer.forEach((id, j) => (loss -= Math.log(softmaxAt(logits[prompt.length - 1 + j], id))));
  return loss / answer.length;
}

/** Central difference gradient of `loss` w.r.t. every entry of `name`, dividing by the float32 step taken. */
function finiteDifferenceGradient(name: string, loss: () => number, h = 1e-3): Float64Array {
  const w = weights.get(name)!;
  const g = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const orig = w[i];
    w[i] = orig + h;
    const up = w[i], lossUp = loss();
    w[i] = orig - h;
    const down = w[i], lossDown = loss();
    w[i] = orig;
    g[i] = (lossUp - lossDown) / (up - down);
  }
  return g;
}

const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);

const lgaRequests = [
  { prompt: "Vela Dornik was born in", targetTrue: "Lisbon", targetNew: "Oslo" },
  { prompt: "the river lives in the city of", targetTrue: "Rome", targetNew: "Vela Dornik" }, // a two-token target
];

Deno.test("LGA inner products of c_proj and c_fc gradients equal float64 finite differences, per request", async () => {
  const items = lgaRequests.map((r) => ({
    prompt: tok.encode(r.prompt),
    old: tok.encode(" " + r.targetTrue),
    new: tok.encode(" " + r.targetNew),
  }));
  const projOnly = await lgaInnerProducts(model, items);
  const both = await lgaInnerProducts(model, items, { params: ["c_proj", "c_fc"] });
  items.forEach((it, q) => {
    assert.ok(
      Math.abs(projOnly.lossOld[q] - referenceLoss(it.prompt, it.old)) < 1e-4,
      `request ${q} old loss`,
    );
    assert.ok(
      Math.abs(projOnly.lossNew[q] - referenceLoss(it.prompt, it.new)) < 1e-4,
      `request ${q} new loss`,
    );
    const proj: number[] = [], projAndFc: number[] = [];
    for (let l = 0; l < cfg.nLayer; l++) {
      const inner = (name: string) =>
        dot(
          finiteDifferenceGradient(name, () => referenceLoss(it.prompt, it.old)),
          finiteDifferenceGradient(name, () => referenceLoss(it.prompt, it.new)),
        );
      const p = inner(`h.${l}.mlp.c_proj.weight`);
      proj.push(p);
      projAndFc.push(p + inner(`h.${l}.mlp.c_fc.weight`));
    }
    assert.ok(
      relativeError(projOnly.perRequest[q], proj) < 1e-3,
      `request ${q} c_proj: ${projOnly.perRequest[q]} vs ${proj}`,
    );
    assert.ok(
      relativeError(both.perRequest[q], projAndFc) < 1e-3,
      `request ${q} c_proj + c_fc: ${both.perRequest[q]} vs ${projAndFc}`,
    );
    assert.ok(
      Math.max(...proj.map(Math.abs)) > 1e-4,
      `request ${q}: inner products ${proj} too small to test`,
    );
  });
});

Deno.test("LGA: per-layer sums over requests, golden layer, batching invariance and errors", async () => {
  const result = await layerGradientAnalysis(model, tok, lgaRequests);
  const perRequest = await lgaInnerProducts(
    model,
    lgaRequests.map((r) => ({
      prompt: tok.encode(r.prompt),
      old: tok.encode(" " + r.targetTrue),
      new: tok.encode(" " + r.targetNew),
    })),
    { maxRows: 1 }, // one request per batch
  );
  for (let l = 0; l < cfg.nLayer; l++) {
    const sum = perRequest.perRequest[0][l] + perRequest.perRequest[1][l];
    assert.ok(
      Math.abs(result.scores[l] - sum) < 1e-5 * Math.abs(sum) + 1e-9,
      `layer ${l}: ${result.scores[l]} vs ${sum}`,
    );
  }
  assert.deepEqual(result.selection, goldenLayers(result.scores));
  assert.deepEqual(result.params, ["c_proj"]);
  assert.ok(lgaChartSvg(result).includes(`golden layer ${result.selection.golden}`));
  await assert.rejects(layerGradientAnalysis(model, tok, []), /no requests/);
  await assert.rejects(
    layerGradientAnalysis(model, tok, [{ ...lgaRequests[0], targetNew: "Paris" }]),
    /outside the tokenizer's vocabulary/,
  );
  await assert.rejects(
    lgaInnerProducts(model, [{ prompt: [1], old: [], new: [2] }]),
    /request 0 has an empty old answer/,
  );
});

// ---------------------------------------------------------------- layer selection strategies

const requests: SelectionRequest[] = [
  { prompt: "Vela Dornik was born in", subject: "Vela Dornik", targetTrue: "Lisbon", targetNew: "Oslo" },
  { prompt: "the river lives in the city of", subject: "the river", targetTrue: "Rome", targetNew: "Lisbon" },
];

Deno.test("layer selectors choose what their underlying computation says, and time themselves", async () => {
  const wallStart = performance.now();
  const ig = await integratedGradientsSelector({ steps: 4 }).select(model, tok, requests);
  const igWall = (performance.now() - wallStart) / 1000;
  // The choice is the argmax of the scores it reports, and the scores tell the layers apart (a selector
  // that returned constant scores, or a fixed layer, would fail here whatever bestWindow does).
  assert.equal(new Set(ig.scores).size, ig.scores.length, `distinct layer scores ${ig.scores}`);
  assert.equal(ig.scores[ig.layers[0]], Math.max(...ig.scores));
  // Its time is this call's, in seconds (not milliseconds, not a total over calls).
  assert.ok(ig.seconds > 0 && ig.seconds <= igWall, `seconds ${ig.seconds}, wall ${igWall}`);
  const avg = averageAttributions(
    await attributeFacts(model, tok, requests.map((r) => ({ prompt: r.prompt, target: r.targetTrue })), {
      steps: 4,
    }),
  );
  assert.deepEqual(ig.scores, avg.layerSum);
  assert.deepEqual(ig.layers, bestWindow(avg.layerSum, 1));
  const igMax = await integratedGradientsSelector({ steps: 4, aggregate: "max", span: 2 }).select(
    model,
    tok,
    requests,
  );
  assert.deepEqual(igMax.layers, bestWindow(avg.layerMax, 2));

  const lga = await lgaSelector().select(model, tok, requests);
  const direct = await layerGradientAnalysis(model, tok, requests);
  assert.deepEqual(lga.layers, [direct.selection.golden]);
  assert.deepEqual(lga.scores, direct.scores);
  const kept = lga.scores.filter((_, l) => !direct.selection.excluded.includes(l));
  assert.equal(
    lga.scores[lga.layers[0]],
    Math.max(...kept),
    "the golden layer is the best layer inside the fences",
  );

  const cma = await causalTracingSelector({ trace: { samples: 3 } }).select(model, tok, requests);
  const effects = await Promise.all(requests.map(async (r) => {
    const t = await traceFact(model, tok, { prompt: r.prompt, subject: r.subject, target: r.targetTrue }, {
      kinds: ["mlp"],
      samples: 3,
      window: 1, // scaledMlpWindow(3), the selector's default
    });
    return t.grids[0].layers.lastSubjectEffect;
  }));
  const mean = effects[0].map((e, l) => (e + effects[1][l]) / 2);
  assert.ok(relativeError(cma.scores, mean) < 1e-9, `CMA scores ${cma.scores} vs ${mean}`);
  assert.deepEqual(cma.layers, bestWindow(mean, 1));
  assert.equal(cma.scores[cma.layers[0]], Math.max(...cma.scores));
  assert.deepEqual(
    [48, 36, 24, 12, 6, 3].map(scaledMlpWindow),
    [10, 8, 5, 3, 1, 1],
    "ROME's 10 of 48 layers, scaled",
  );

  const calls: number[] = [];
  const brute = await bruteForceSelector((layer, rs) => {
    calls.push(layer);
    assert.equal(rs, requests);
    return Promise.resolve([0.2, 0.9, 0.4][layer]);
  }).select(model, tok, requests);
  assert.deepEqual(calls, [0, 1, 2]);
  assert.deepEqual([brute.layers, brute.scores], [[1], [0.2, 0.9, 0.4]]);
  await assert.rejects(
    bruteForceSelector(() => Promise.resolve(NaN)).select(model, tok, requests),
    /layer 0 scored NaN/,
  );

  assert.deepEqual((await fixedSelector([2, 1]).select(model, tok, requests)).layers, [1, 2]);
  await assert.rejects(fixedSelector([3]).select(model, tok, requests), /layer 3 outside \[0, 3\)/);
  for (const s of [ig, lga, cma, brute]) assert.ok(s.seconds > 0 && s.seconds < 60, `seconds ${s.seconds}`);
});

// ---------------------------------------------------------------- pictures

Deno.test("heatmaps draw one cell per value, binning rows wider than 512 columns", () => {
  const svg = neuronHeatmapSvg([Float32Array.of(1, -1, 0), Float32Array.of(0.5, 0, -0.25)], "two layers");
  assert.equal(svg.match(/<rect x="[^"]*" y="[^"]*" width="[^"]*" height="[^"]*" fill="rgb/g)?.length, 6);
  assert.ok(
    svg.includes('fill="rgb(214,39,40)"') && svg.includes('fill="rgb(31,119,180)"'),
    "full red at +max, full blue at -max",
  );
  const wide = heatmapPanelsSvg([{
    title: "wide",
    rowLabels: ["r"],
    values: [Float32Array.from({ length: 1030 }, (_, i) => (i === 1029 ? -9 : 1))],
    xLabel: "neuron",
  }], "t");
  assert.equal(wide.match(/fill="rgb/g)?.length, 344, "1030 columns in bins of 3");
  assert.ok(wide.includes("columns 1029-1029: -9.00"), "the last bin shows its largest magnitude");
});

// ---------------------------------------------------------------- CLI

const dir = await Deno.makeTempDir();
await model.save(dir);
await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());
const rewrite = (id: number, prompt: string, subject: string, targetTrue: string, targetNew: string) => ({
  case_id: id,
  requested_rewrite: {
    prompt,
    subject,
    relation_id: "P0",
    target_true: { str: targetTrue, id: "Q1" },
    target_new: { str: targetNew, id: "Q2" },
  },
  paraphrase_prompts: [],
  neighborhood_prompts: [],
  attribute_prompts: [],
  generation_prompts: [],
});
await Deno.writeTextFile(
  `${dir}/counterfact.json`,
  JSON.stringify([
    rewrite(0, "{} was born in", "Vela Dornik", "Lisbon", "Oslo"),
    rewrite(1, "{} lives in the city of", "the river", "Rome", "Lisbon"),
  ]),
);

/** The fields of attribution.json these tests read (ig and lga records share the file). */
interface AttributionJson {
  meta: {
    dataset: string;
    config: GPT2Config;
    cases: { records: number; known: number | null; used: number } | null;
    hyperparameters: { steps?: number; tracing?: { window: number; samples: number } };
  };
  records: {
    target: string;
    prob: number;
    layerSum: number[];
    tracingLastSubjectMlpEffect: number[];
    innerProducts: number[];
  }[];
  average: { neurons: number[][] };
  selection: { rome: number[]; memit: number[]; golden: number };
  pictures: string[];
}

async function attribute(
  ...args: string[]
): Promise<{ code: number; stderr: string; json: () => Promise<AttributionJson> }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../experiments/commands/attribute.ts", import.meta.url).pathname,
      "--model",
      dir,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const outDir = args[args.indexOf("--out") + 1];
  return {
    code: out.code,
    stderr: new TextDecoder().decode(out.stderr),
    json: async () => JSON.parse(await Deno.readTextFile(`${outDir}/attribution.json`)),
  };
}

Deno.test("deno task attribute: ig on the model's counterfact.json with tracing, lga on one prompt, errors", async () => {
  const igOut = `${dir}/ig`;
  const ig = await attribute("--method", "ig", "--steps", "3", "--trace", "--out", igOut);
  assert.equal(ig.code, 0, ig.stderr);
  const j = await ig.json();
  assert.equal(j.meta.dataset, `${dir}/counterfact.json`);
  assert.equal(j.meta.hyperparameters.steps, 3);
  assert.deepEqual([j.meta.hyperparameters.tracing?.window, j.meta.hyperparameters.tracing?.samples], [
    1,
    10,
  ]);
  assert.deepEqual(j.meta.config, { ...configSummary(gpt2Config(cfg)) });
  assert.equal(j.meta.config.family, "gpt2");
  const direct = await attributeFacts(model, tok, [{ prompt: "Vela Dornik was born in", target: "Lisbon" }, {
    prompt: "the river lives in the city of",
    target: "Rome",
  }], { steps: 3 });
  j.records.forEach((r, i) => {
    assert.ok(
      relativeError(r.layerSum, direct[i].layerSum) < 1e-4,
      `record ${i}: ${r.layerSum} vs ${direct[i].layerSum}`,
    );
    assert.ok(Math.abs(r.prob - direct[i].prob) < 1e-5);
  });
  assert.equal(j.records[1].tracingLastSubjectMlpEffect.length, cfg.nLayer);
  assert.deepEqual([j.average.neurons.length, j.average.neurons[0].length], [cfg.nLayer, f]);
  assert.deepEqual(j.selection.rome, bestWindow(averageAttributions(direct).layerSum, 1));
  assert.equal(j.selection.memit.length, cfg.nLayer, "a window of min(5, L) layers");
  for (const svg of j.pictures) {
    assert.ok((await Deno.readTextFile(`${igOut}/${svg}`)).startsWith("<svg"), svg);
  }

  const lgaOut = `${dir}/lga`;
  const lga = await attribute(
    "--method",
    "lga",
    "--prompt",
    "Vela Dornik was born in",
    "--target",
    "Lisbon",
    "--target-new",
    "Oslo",
    "--out",
    lgaOut,
  );
  assert.equal(lga.code, 0, lga.stderr);
  const k = await lga.json();
  const want = await layerGradientAnalysis(model, tok, [lgaRequests[0]]);
  assert.ok(relativeError(k.records[0].innerProducts, want.perRequest[0]) < 1e-4);
  assert.equal(k.selection.golden, want.selection.golden);

  const missing = await attribute(
    "--method",
    "lga",
    "--prompt",
    "Vela Dornik was born in",
    "--target",
    "Lisbon",
    "--out",
    lgaOut,
  );
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /needs --target-new/);
  await Deno.writeTextFile(
    `${dir}/unknown.json`,
    JSON.stringify([rewrite(4, "{} was born in", "Vela Dornik", "Paris", "Oslo")]),
  );
  const unknown = await attribute("--method", "ig", "--dataset", `${dir}/unknown.json`, "--out", lgaOut);
  assert.match(
    unknown.stderr,
    /unknown\.json: record 0 \(counterfact:4\): target "Paris" has the word "Paris" outside the tokenizer's vocabulary/,
  );
  const longPrompt = `{} ${Array(cfg.nPositions).fill("lives in").join(" ")}`;
  await Deno.writeTextFile(
    `${dir}/long.json`,
    JSON.stringify([
      rewrite(0, "{} was born in", "Vela Dornik", "Lisbon", "Oslo"),
      rewrite(7, longPrompt, "Vela Dornik", "Lisbon", "Oslo"),
    ]),
  );
  const long = await attribute("--method", "ig", "--dataset", `${dir}/long.json`, "--out", lgaOut);
  assert.equal(long.code, 1);
  assert.match(
    long.stderr,
    new RegExp(
      `long\\.json: record 1 \\(counterfact:7\\): needs \\d+ positions, the model has ${cfg.nPositions}`,
    ),
  );
  // This model's greedy completion of both prompts is "in": only the record claiming "in" is known.
  await Deno.writeTextFile(
    `${dir}/known.json`,
    JSON.stringify([
      rewrite(5, "{} was born in", "Vela Dornik", "Lisbon", "Oslo"),
      rewrite(6, "{} lives in the city of", "the river", "in", "Oslo"),
    ]),
  );
  const known = await attribute(
    "--method",
    "ig",
    "--steps",
    "2",
    "--known",
    "--dataset",
    `${dir}/known.json`,
    "--out",
    `${dir}/known`,
  );
  assert.equal(known.code, 0, known.stderr);
  const kj = await known.json();
  assert.deepEqual(kj.meta.cases, { records: 2, known: 1, used: 1 });
  assert.equal(kj.records[0].target, "in");
  const badMethod = await attribute("--method", "saliency", "--out", lgaOut);
  assert.match(badMethod.stderr, /--method must be ig or lga/);
});
