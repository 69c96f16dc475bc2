// experiments/evaluation/metrics.ts: the pure metrics against hand-computed values, and the GPU scorers on a
// tiny random GPT-2 against the float64 reference forward in tests/reference_model.ts; the same for
// experiments/evaluation/drift.ts (essence and fluency of an edited model); the scorers under virtual edits against
// applying each edit.
import assert from "node:assert/strict";
import type { GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, randomWeights } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import {
  erasureScore,
  essenceScore,
  fluency,
  generate,
  greedyGenerate,
  harmonicMean,
  localityReference,
  neighborhoodScore,
  ngramEntropy,
  overallScore,
  perplexity,
  probabilityOfContinuation,
  rewriteScore,
  romeCaseMetrics,
  romeSummary,
  scoreContinuations,
  scorePlans,
  scoreTokens,
  type ScoringItem,
  STANDARD_METRICS,
  type StandardBaseline,
  type StandardScores,
  standardScores,
  standardScoresPlan,
  teacherForcedAccuracy,
  tokenAgreement,
  wordTokens,
} from "../experiments/evaluation/metrics.ts";
import {
  type Essence,
  essenceOf,
  essenceTexts,
  generationFluency,
  unchangedEssence,
} from "../experiments/evaluation/drift.ts";
import {
  applyEdit,
  changesNothing,
  type Edit,
  keyValueDelta,
  VirtualEditSet,
} from "../experiments/editing/edit.ts";
import { caseProbabilities, caseProbabilitiesPlan } from "../experiments/editing/problems.ts";
import { referenceForward } from "./reference_model.ts";
import { randomArray } from "./util.ts";

function near(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tol,
    `${what}: got ${actual}, expected ${expected} (tolerance ${tol})`,
  );
}

// ------------------------------------------------------------------------------------------------
// Pure metrics

Deno.test("Hase et al. scores: rewrite, erasure, neighborhood, essence, overall", () => {
  near(rewriteScore(0.2, 0.6), 0.5, 1e-15, "gained half of the possible 0.8"); // 1 - 0.4/0.8
  near(rewriteScore(0.2, 0.1), -0.125, 1e-15, "lost probability"); // 1 - 0.9/0.8
  near(rewriteScore(0.3, 1), 1, 0, "reached 1");
  // p_pre = 1: the denominator is floored at 2e-8
  near(rewriteScore(1, 1), 1, 0, "nothing to gain, nothing lost");
  near(rewriteScore(1, 0.5), 1 - 0.5 / 2e-8, 1e-6, "floored denominator");
  near(erasureScore(0.8, 0.2), 0.75, 1e-15, "removed 3/4"); // (0.8 - 0.2)/0.8
  near(erasureScore(0.2, 0.5), 0, 0, "amplified, clipped at 0");
  near(erasureScore(0, 0), 0, 0, "p_pre = 0");
  near(neighborhoodScore(0.3, 0.3), 1, 0, "unchanged");
  near(neighborhoodScore(0.3, 0.5), 1 - 0.2 / 0.7, 1e-15, "moved 0.2 of at most 0.7");
  near(neighborhoodScore(0.9, 0.0), 0, 1e-15, "moved as far as possible");
  near(neighborhoodScore(0.5, 1), 0, 0, "from 0.5 the largest change is 0.5");
  near(essenceScore(10, 12), 0.6, 1e-15, "perplexity rose by 2"); // 1 - 2/5
  near(essenceScore(10, 9), 1, 0, "a fall counts as no rise");
  near(essenceScore(10, 40), 0, 0, "rise beyond 5 is clipped");
  assert.throws(() => rewriteScore(1.5, 0.2), /1.5 is not a probability/);
  assert.throws(() => neighborhoodScore(0.2, NaN), /NaN is not a probability/);
  assert.throws(() => essenceScore(0.5, 3), /perplexities must be >= 1/);

  near(harmonicMean([1, 0.5, 0.25]), 3 / 7, 1e-15, "3 / (1 + 2 + 4)");
  assert.equal(harmonicMean([0.9, 0, 0.8]), 0);
  assert.equal(harmonicMean([0.9, -0.3, 0.8]), 0);
  near(overallScore({ rewrite: 1, paraphrase: 0.5, neighborhood: 0.25 }), 3 / 7, 1e-15, "overall");
  near(
    overallScore({ rewrite: 1, paraphrase: 0.5, neighborhood: 0.25, essence: 0.5 }),
    4 / 9,
    1e-15,
    "with essence",
  );
});

Deno.test("ROME CounterFact metrics per case and the ROME score", () => {
  const a = romeCaseMetrics({
    rewrite: [{ nllNew: 0.5, nllTrue: 1.2 }],
    paraphrase: [{ nllNew: 0.4, nllTrue: 2 }, { nllNew: 3, nllTrue: 1 }],
    neighborhood: [{ nllNew: 2, nllTrue: 0.1 }, { nllNew: 1, nllTrue: 1.5 }, { nllNew: 4, nllTrue: 3 }, {
      nllNew: 0.2,
      nllTrue: 0.3,
    }],
  });
  assert.equal(a.efficacySuccess, 1);
  near(a.efficacyMagnitude!, Math.exp(-0.5) - Math.exp(-1.2), 1e-15, "EM");
  assert.equal(a.paraphraseSuccess, 0.5);
  near(
    a.paraphraseMagnitude!,
    (Math.exp(-0.4) - Math.exp(-2) + Math.exp(-3) - Math.exp(-1)) / 2,
    1e-15,
    "PM",
  );
  assert.equal(a.neighborhoodSuccess, 0.5); // the truth stays ahead on prompts 0 and 2
  near(
    a.neighborhoodMagnitude!,
    (Math.exp(-0.1) - Math.exp(-2) + Math.exp(-1.5) - Math.exp(-1) + Math.exp(-3) - Math.exp(-4) +
      Math.exp(-0.3) - Math.exp(-0.2)) / 4,
    1e-15,
    "NM",
  );
  // A tie is not a success either way.
  const tie = romeCaseMetrics({
    rewrite: [{ nllNew: 1, nllTrue: 1 }],
    paraphrase: [],
    neighborhood: [{ nllNew: 1, nllTrue: 1 }],
  });
  assert.equal(tie.efficacySuccess, 0);
  assert.equal(tie.neighborhoodSuccess, 0);
  assert.equal(tie.paraphraseSuccess, null);

  const b = romeCaseMetrics({
    rewrite: [{ nllNew: 2, nllTrue: 1 }],
    paraphrase: [{ nllNew: 0.1, nllTrue: 2 }],
    neighborhood: [{ nllNew: 3, nllTrue: 1 }],
  });
  const s = romeSummary([a, b]);
  assert.equal(s.cases, 2);
  assert.equal(s.efficacySuccess, 0.5); // (1 + 0)/2
  assert.equal(s.paraphraseSuccess, 0.75); // (0.5 + 1)/2
  assert.equal(s.neighborhoodSuccess, 0.75); // (0.5 + 1)/2
  near(s.score!, 100 * 3 / (1 / 0.5 + 1 / 0.75 + 1 / 0.75), 1e-12, "ROME score");
  // Cases without paraphrases are left out of PS, not counted as 0; with no PS at all there is no score.
  assert.equal(romeSummary([b, tie]).paraphraseSuccess, 1);
  assert.equal(romeSummary([tie]).score, null);
});

Deno.test("token agreement (EasyEdit accuracy and locality)", () => {
  near(tokenAgreement([1, 2, 3], [1, 5, 3]), 2 / 3, 1e-15, "2 of 3");
  assert.equal(tokenAgreement([7], [7]), 1);
  assert.throws(() => tokenAgreement([1, 2], [1]), /lists of 2 and 1 tokens/);
  assert.throws(() => tokenAgreement([], []), /empty/);
});

Deno.test("word tokens and n-gram entropy fluency", () => {
  assert.deepEqual(wordTokens("Don't stop, John's car can't!"), [
    "Do",
    "n't",
    "stop",
    ",",
    "John",
    "'s",
    "car",
    "ca",
    "n't",
    "!",
  ]);
  assert.deepEqual(wordTokens("  Paris (France) is 2 km."), [
    "Paris",
    "(",
    "France",
    ")",
    "is",
    "2",
    "km",
    ".",
  ]);
  // "a b a b": bigrams ab, ba, ab -> H2 = -(2/3 log2 2/3 + 1/3 log2 1/3); trigrams aba, bab -> H3 = 1
  const h2 = -((2 / 3) * Math.log2(2 / 3) + (1 / 3) * Math.log2(1 / 3));
  near(ngramEntropy(["a", "b", "a", "b"], 2), h2, 1e-15, "H2");
  near(ngramEntropy(["a", "b", "a", "b"], 3), 1, 1e-15, "H3");
  near(fluency("a b a b"), ((2 / 3) * h2 + (4 / 3) * 1) / 2, 1e-15, "fluency");
  assert.equal(ngramEntropy(["a", "b"], 3), 0); // no trigram
  assert.equal(fluency(""), 0);
  // 8 distinct words: 7 distinct bigrams, 6 trigrams, all once -> mean(2/3 log2 7, 4/3 log2 6)
  near(
    fluency("one two three four five six seven eight"),
    ((2 / 3) * Math.log2(7) + (4 / 3) * Math.log2(6)) / 2,
    1e-14,
    "distinct",
  );
  assert.ok(fluency("the the the the the the the the") < 1e-12, "a repeated word has zero entropy");
});

// ------------------------------------------------------------------------------------------------
// GPU scorers on a tiny random model

const gpu = await getGpu();
const WORDS = [
  "<unk>",
  "<eos>",
  "the",
  "capital",
  "of",
  "France",
  "is",
  "Paris",
  "Rome",
  "city",
  "a",
  "in",
  "Italy",
  "located",
  "Eiffel",
  "Tower",
  "river",
  "Seine",
  ".",
  "famous",
  "old",
  "new",
  "Lyon",
];
const tok = new WordLevelTokenizer(WORDS, { unk: "<unk>", eos: "<eos>" });
const cfg: GPT2Config = {
  vocabSize: WORDS.length,
  nPositions: 16,
  nEmbd: 24,
  nLayer: 2,
  nHead: 3,
  layerNormEpsilon: 1e-5,
};
// GPT-2's initialisation makes a tiny random model repeat one token forever; weights 10x larger give
// varied greedy text, so generation and accuracy are tested on sequences that change.
const weights = randomWeights(cfg, 8, true);
for (const [name, w] of weights) {
  if (name.endsWith(".weight") && !/ln_/.test(name)) w.forEach((v, i) => w[i] = 10 * v);
}
const model = Model.fromArrays(gpu, cfg, weights);

/** Reference log-softmax rows of a token sequence. */
function referenceLogProbs(ids: number[]): number[][] {
  return referenceForward(cfg, weights, ids).map((row) => {
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    return Array.from(row, (v) => v - lse);
  });
}

/** The reference argmax of a row, failing if the runner-up is within `margin` (a float32 run could pick either). */
function clearArgmax(row: number[], margin = 1e-4): number {
  const order = row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]);
  assert.ok(
    order[0][0] - order[1][0] > margin,
    `near tie between tokens ${order[0][1]} and ${order[1][1]}: pick another seed`,
  );
  return order[0][1];
}

/** Reference greedy continuation of `ids` by `n` tokens. */
function referenceGreedy(ids: number[], n: number): number[] {
  const seq = [...ids];
  for (let i = 0; i < n; i++) seq.push(clearArgmax(referenceLogProbs(seq).at(-1)!));
  return seq.slice(ids.length);
}

const PROMPTS = [
  "the capital of France is",
  "Paris is",
  "the Eiffel Tower is located in the city of",
  "Rome",
  "a famous old river",
];

Deno.test("scoreContinuations: NLL, token log-probs and argmaxes match the float64 reference", async () => {
  const targets = ["Paris", "a city in France", "Paris .", "is the capital of Italy", "Seine"];
  const s = await scoreContinuations(model, tok, PROMPTS, targets, 2); // 3 batches
  PROMPTS.forEach((prompt, i) => {
    const context = tok.encode(prompt), y = tok.encode(" " + targets[i]);
    assert.deepEqual(s.targets[i], y);
    const ref = referenceLogProbs([...context, ...y.slice(0, -1)]);
    const refLp = y.map((id, j) => ref[context.length - 1 + j][id]);
    refLp.forEach((v, j) => near(s.logProbs[i][j], v, 1e-4, `item ${i} token ${j} log p`));
    near(s.nll[i], -refLp.reduce((a, b) => a + b, 0) / y.length, 1e-4, `item ${i} mean NLL`);
    y.forEach((_, j) =>
      assert.equal(s.predicted[i][j], clearArgmax(ref[context.length - 1 + j]), `item ${i} argmax ${j}`)
    );
  });
  assert.deepEqual(await probabilityOfContinuation(model, tok, PROMPTS, targets), s.nll);
  await assert.rejects(
    () => scoreContinuations(model, tok, ["the"], ["Paris", "Rome"]),
    /1 prompts but 2 targets/,
  );
  await assert.rejects(
    () => scoreContinuations(model, tok, ["the"], [""]),
    /item 0: target "" has no tokens/,
  );
  await assert.rejects(
    () => scoreContinuations(model, tok, [Array(17).fill("the").join(" ")], ["Paris"]),
    /needs 17 positions, the model has 16/,
  );
});

Deno.test("scoreTokens: items of one sequence share it in the batch, each with the scores it gets alone", async () => {
  const a = tok.encode(PROMPTS[0]), b = tok.encode(PROMPTS[1]);
  const [x, y] = [tok.encode(" Paris")[0], tok.encode(" Rome")[0]];
  const items: ScoringItem[] = [
    { context: a, continuation: [x] },
    { context: b, continuation: [y] },
    { context: a, continuation: [y] }, // the sequence of item 0, another target
    { context: a, continuation: [x] }, // item 0 again
    { context: a.slice(0, -1), continuation: [a.at(-1)!, y] }, // the sequence of item 0, split earlier
    { context: b, continuation: [x, y] },
  ];
  const together = await scoreTokens(model, items, 2);
  for (const [i, it] of items.entries()) {
    const alone = await scoreTokens(model, [it]);
    assert.deepEqual(together.logProbs[i], alone.logProbs[0], `item ${i} log p`);
    assert.deepEqual(together.predicted[i], alone.predicted[0], `item ${i} argmax`);
  }
  assert.notDeepEqual(together.logProbs[0], together.logProbs[2]);
});

Deno.test("teacherForcedAccuracy: 1 for the model's own greedy text, fractions otherwise", async () => {
  const greedy = PROMPTS.map((p) => referenceGreedy(tok.encode(p), 3));
  const ownTargets = greedy.map((ids) => tok.decode(ids));
  assert.deepEqual(await teacherForcedAccuracy(model, tok, PROMPTS, ownTargets), PROMPTS.map(() => 1));
  // Replace the middle token by one the model does not predict there: 2 of 3 tokens remain right.
  const altered = greedy.map((ids) => [ids[0], ids[1] === 7 ? 8 : 7, ids[2]]);
  const expected = altered.map((ids, i) => {
    const context = tok.encode(PROMPTS[i]);
    const ref = referenceLogProbs([...context, ...ids.slice(0, -1)]);
    return ids.filter((id, j) => clearArgmax(ref[context.length - 1 + j]) === id).length / 3;
  });
  assert.ok(expected.some((e) => e < 1), "some altered target must lose accuracy");
  assert.deepEqual(
    await teacherForcedAccuracy(model, tok, PROMPTS, altered.map((ids) => tok.decode(ids))),
    expected,
  );
});

Deno.test("perplexity: exp of the summed NLL of tokens 2..N divided by N", async () => {
  const texts = ["the capital of France is Paris .", "Rome is a city in Italy", "old new"];
  const got = await perplexity(model, tok, texts);
  texts.forEach((text, i) => {
    const ids = tok.encode(text);
    const ref = referenceLogProbs(ids);
    const sum = ids.slice(1).reduce((s, id, t) => s + ref[t][id], 0);
    near(got[i], Math.exp(-sum / ids.length), 1e-3 * got[i], `text ${i}`);
  });
  await assert.rejects(() => perplexity(model, tok, ["Paris"]), /fewer than 2 tokens/);
});

Deno.test("greedyGenerate matches the reference greedy loop, batched over prompts of different lengths", async () => {
  const g = await greedyGenerate(model, tok, PROMPTS, 4);
  PROMPTS.forEach((p, i) => {
    const ids = tok.encode(p);
    const expected = referenceGreedy(ids, Math.min(4, cfg.nPositions - ids.length));
    assert.deepEqual(g.tokens[i], expected, `prompt ${i}`);
    assert.equal(g.continuations[i], tok.decode(expected));
    assert.equal(g.texts[i], tok.decode([...ids, ...expected]));
  });
  // The 10-token prompt only has room for 6 more positions.
  const long = await greedyGenerate(model, tok, [PROMPTS[2]], 12);
  assert.equal(long.tokens[0].length, cfg.nPositions - tok.encode(PROMPTS[2]).length);
});

Deno.test("generation stops each prompt of a batch at its eos token", async () => {
  // Name the first greedy token of prompt 0 as eos: prompt 0 ends at once, the others run until
  // they would produce that token (or for all 4 steps).
  const greedy = PROMPTS.map((p) => referenceGreedy(tok.encode(p), 4));
  const eos = greedy[0][0];
  const stopTok = new WordLevelTokenizer(WORDS, { unk: "<unk>", eos: WORDS[eos] });
  const expected = greedy.map((g) => (g.includes(eos) ? g.slice(0, g.indexOf(eos)) : g));
  assert.ok(
    expected.some((e) => e.length > 0),
    `greedy ${JSON.stringify(greedy)}: every prompt stops at once, pick another seed`,
  );
  const g = await greedyGenerate(model, stopTok, PROMPTS, 4);
  assert.deepEqual(g.tokens, expected);
});

Deno.test("top-k sampling: seeded, inside the reference top k, k = 1 is greedy", async () => {
  const a = await generate(model, tok, PROMPTS.slice(0, 3), { maxNewTokens: 5, topK: 3, seed: 9 });
  const b = await generate(model, tok, PROMPTS.slice(0, 3), { maxNewTokens: 5, topK: 3, seed: 9 });
  assert.deepEqual(a.tokens, b.tokens);
  const differentSeeds = await Promise.all(
    [1, 2, 3].map((seed) => generate(model, tok, PROMPTS.slice(0, 3), { maxNewTokens: 5, topK: 3, seed })),
  );
  assert.ok(
    differentSeeds.some((g) => JSON.stringify(g.tokens) !== JSON.stringify(a.tokens)),
    "other seeds give other samples",
  );
  a.tokens.forEach((newIds, i) => {
    const seq = tok.encode(PROMPTS[i]);
    for (const id of newIds) {
      const row = referenceLogProbs(seq).at(-1)!;
      const third = [...row].sort((x, y) => y - x)[2];
      assert.ok(row[id] >= third - 1e-4, `prompt ${i}: sampled token ${id} is outside the top 3`);
      seq.push(id);
    }
  });
  const k1 = await generate(model, tok, PROMPTS, { maxNewTokens: 3, topK: 1, seed: 5 });
  assert.deepEqual(k1.tokens, (await greedyGenerate(model, tok, PROMPTS, 3)).tokens);
  await assert.rejects(
    () => generate(model, tok, ["the"], { maxNewTokens: 2, topK: 0 }),
    /topK must be in \[1, 23\]/,
  );
});

Deno.test("generation streams: runs batched together (in batches of any size) sample what each samples alone", async () => {
  const o = { maxNewTokens: 5, topK: 3 };
  const first = await generate(model, tok, PROMPTS.slice(0, 2), { ...o, seed: 3 });
  const second = await generate(model, tok, PROMPTS.slice(2), { ...o, seed: 4 });
  const streams = [{ seed: 3, prompts: 2 }, { seed: 4, prompts: 3 }];
  for (const batchSize of [64, 2]) {
    const both = await generate(model, tok, PROMPTS, { ...o, streams }, undefined, batchSize);
    assert.deepEqual(both.tokens, [...first.tokens, ...second.tokens], `batches of ${batchSize}`);
  }
  // One stream over all the prompts draws them in turn: not what each run draws alone.
  const one = await generate(model, tok, PROMPTS, { ...o, seed: 3 });
  assert.notDeepEqual(one.tokens.slice(2), second.tokens, "a shared stream interleaves the draws");
  await assert.rejects(
    () => generate(model, tok, PROMPTS, { ...o, seed: 3, streams }),
    /give a seed or streams, not both/,
  );
  await assert.rejects(
    () => generate(model, tok, PROMPTS, { ...o, streams: streams.slice(1) }),
    /the streams hold 3 prompts, there are 5/,
  );
});

Deno.test("standard metrics (ES/PS/NS, EM/PM/NM, EasyEdit's four) of one case match the float64 reference", async () => {
  const c = {
    prompt: "the capital of France is",
    paraphrases: ["the Eiffel Tower is located in the city of", "Paris is"],
    neighbors: ["Rome", "a famous old river"],
    portability: [{ prompt: "the capital of France is", answer: "a city in France" }],
    targetTrue: "Paris",
    targetNew: "Rome",
  };
  /** Reference mean NLL and teacher-forced argmax tokens of `target` after `prompt`. */
  const ref = (prompt: string, target: string) => {
    const context = tok.encode(prompt), y = tok.encode(" " + target);
    const lp = referenceLogProbs([...context, ...y.slice(0, -1)]);
    return {
      nll: -y.reduce((a, id, j) => a + lp[context.length - 1 + j][id], 0) / y.length,
      argmax: y.map((_, j) => clearArgmax(lp[context.length - 1 + j])),
      y,
    };
  };
  const wins = (prompts: string[], newAhead: boolean) =>
    prompts.map((p) => (ref(p, c.targetTrue).nll > ref(p, c.targetNew).nll) === newAhead ? 1 : 0);
  const gap = (p: string) => Math.exp(-ref(p, c.targetNew).nll) - Math.exp(-ref(p, c.targetTrue).nll);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const acc = (p: string, t: string) => {
    const r = ref(p, t);
    return r.y.filter((id, j) => r.argmax[j] === id).length / r.y.length;
  };
  // The same model before and after: locality is 1 by construction; the rest come from the reference.
  const reference = await localityReference(model, tok, c);
  const [s] = await standardScores(model, tok, [{ c, reference }]);
  assert.equal(s.efficacySuccess, wins([c.prompt], true)[0]);
  assert.equal(s.paraphraseSuccess, mean(wins(c.paraphrases, true)));
  assert.equal(s.neighborhoodSuccess, mean(wins(c.neighbors, false)));
  near(s.efficacyMagnitude!, gap(c.prompt), 1e-4, "EM");
  near(s.paraphraseMagnitude!, mean(c.paraphrases.map(gap)), 1e-4, "PM");
  near(s.neighborhoodMagnitude!, -mean(c.neighbors.map(gap)), 1e-4, "NM");
  assert.equal(s.reliability, acc(c.prompt, c.targetNew));
  assert.equal(s.generalization, mean(c.paraphrases.map((p) => acc(p, c.targetNew))));
  assert.equal(s.portability, acc(c.portability[0].prompt, c.portability[0].answer));
  assert.equal(s.locality, 1);
  assert.equal(s.specificity, mean(c.neighbors.map((p) => acc(p, c.targetTrue))));
  // zsRE: each neighbour has its own answer (loc_ans); NS, NM, specificity and locality's reference use it.
  const z = { ...c, neighborAnswers: ["a famous old river", "Paris"] };
  const [zs] = await standardScores(model, tok, [{
    c: z,
    reference: await localityReference(model, tok, z),
  }]);
  const answer = (i: number) => z.neighborAnswers[i];
  assert.equal(zs.specificity, mean(z.neighbors.map((p, i) => acc(p, answer(i)))));
  assert.equal(
    zs.neighborhoodSuccess,
    mean(z.neighbors.map((p, i) => (ref(p, answer(i)).nll < ref(p, c.targetNew).nll ? 1 : 0))),
  );
  near(
    zs.neighborhoodMagnitude!,
    mean(z.neighbors.map((p, i) => Math.exp(-ref(p, answer(i)).nll) - Math.exp(-ref(p, c.targetNew).nll))),
    1e-4,
    "zsRE NM",
  );
  assert.equal(zs.locality, 1);
  assert.deepEqual(
    (await localityReference(model, tok, z)).map((r) => r.length),
    z.neighborAnswers.map((a) => tok.encode(" " + a).length),
    "the locality reference scores each neighbour's own answer",
  );
  await assert.rejects(
    () => localityReference(model, tok, { ...c, neighborAnswers: ["Paris"] }),
    /1 neighbour answers for 2 neighbours/,
  );
  // Against a reference that differs in one of a neighbour's tokens, locality drops to 1/2 for it.
  const changed = reference.map((r, i) => (i === 0 ? r.map((id) => (id + 1) % WORDS.length) : r));
  assert.equal((await standardScores(model, tok, [{ c, reference: changed }]))[0].locality, 0.5);
  // Without paraphrases, neighbours or portability prompts those metrics are null, not 0.
  const [bare] = await standardScores(model, tok, [{
    c: { ...c, paraphrases: [], neighbors: [], portability: [] },
    reference: [],
  }]);
  for (
    const key of [
      "paraphraseSuccess",
      "neighborhoodSuccess",
      "generalization",
      "locality",
      "portability",
      "specificity",
    ]
  ) {
    assert.equal(bare[key as keyof typeof bare], null, key);
  }
  assert.deepEqual(STANDARD_METRICS.map((m) => m.short).slice(0, 6), ["ES", "PS", "NS", "EM", "PM", "NM"]);
  await assert.rejects(
    () => standardScores(model, tok, [{ c, reference }, { c, reference: [] }]),
    /case 1 has 0 locality references for 2 neighbours/,
  );
});

/** The reference perplexity of a token sequence under `w`: exp(-(1/N) sum_{t>=1} log p(x_t | x_<t)). */
function referencePerplexity(w: Map<string, Float32Array>, ids: number[]): number {
  const rows = referenceForward(cfg, w, ids).map((row) => {
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((sum, v) => sum + Math.exp(v - max), 0));
    return Array.from(row, (v) => v - lse);
  });
  return Math.exp(-ids.slice(1).reduce((sum, id, t) => sum + rows[t][id], 0) / ids.length);
}

Deno.test('essence (drift.ts): seeded samples of "{subject} is a", perplexities before and after a change against float64', async () => {
  const o = { samples: 3, tokens: 4, topK: 3, seed: 4 };
  const texts = await essenceTexts(model, tok, "Paris", o);
  const prompt = tok.encode("Paris is a");
  assert.equal(texts.prompt, "Paris is a");
  assert.equal(texts.sequences.length, 3);
  for (const [i, seq] of texts.sequences.entries()) {
    assert.deepEqual(seq.slice(0, prompt.length), prompt);
    assert.equal(seq.length, prompt.length + 4);
    assert.equal(texts.texts[i], tok.decode(seq));
  }
  assert.ok(new Set(texts.texts).size > 1, "the samples differ");
  assert.deepEqual(await essenceTexts(model, tok, "Paris", o), texts, "the same seed, the same samples");
  assert.notDeepEqual(
    (await essenceTexts(model, tok, "Paris", { ...o, seed: 5 })).sequences,
    texts.sequences,
  );
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  near(texts.perplexity, mean(texts.sequences.map((ids) => referencePerplexity(weights, ids))), 1e-3, "pre");
  // Unchanged, the score is 1; under other weights (an "edit") the texts' perplexity is theirs, and the
  // score is Hase et al.'s 1 - clip(post - pre, 0, 5) / 5.
  const [same] = await essenceOf(model, [texts]);
  assert.deepEqual(same, { score: 1, pre: texts.perplexity, post: texts.perplexity });
  const otherWeights = new Map(
    [...weights].map(([name, w]) => [name, w.map((v) => (name.includes("mlp") ? 1.3 * v : v))]),
  );
  const edited = Model.fromArrays(gpu, cfg, otherWeights);
  const [after] = await essenceOf(edited, [texts]);
  near(
    after.post,
    mean(texts.sequences.map((ids) => referencePerplexity(otherWeights, ids))),
    1e-3 * after.post,
    "post",
  );
  assert.ok(
    Math.abs(after.post - after.pre) > 0.01,
    `the change moves the perplexity (${after.pre} -> ${after.post})`,
  );
  assert.equal(after.score, essenceScore(after.pre, after.post));
  // A word of the prompt outside a word-level vocabulary is named, not replaced by the unknown token.
  const noA = new WordLevelTokenizer(WORDS.filter((w) => w !== "a"), { unk: "<unk>", eos: "<eos>" });
  await assert.rejects(
    () => essenceTexts(model, noA, "Paris", o),
    /essence prompt "Paris is a": target "is a" has the word "a" outside the tokenizer's vocabulary/,
  );
  await assert.rejects(
    () => essenceTexts(model, tok, "Paris", { ...o, samples: 0 }),
    /samples must be a positive/,
  );
});

Deno.test("generate: streams in groups that fit a small cache budget get the tokens they get all at once and alone", async () => {
  const streams = [3, 1, 4, 2].map((n, j) => ({ seed: 10 + j, prompts: n }));
  const prompts = streams.flatMap((st, j) => PROMPTS.slice(j % 2, j % 2 + st.prompts));
  const o = { maxNewTokens: 6, topK: 3, streams };
  const together = await generate(model, tok, prompts, o, undefined, 2);
  // A budget below one batch's cache: each group holds one batch (2 prompts) or one longer stream.
  const grouped = await generate(model, tok, prompts, { ...o, cacheBytes: 1 }, undefined, 2);
  assert.deepEqual(grouped, together);
  let at = 0;
  for (const st of streams) {
    const alone = await generate(model, tok, prompts.slice(at, at + st.prompts), {
      maxNewTokens: 6,
      topK: 3,
      seed: st.seed,
    });
    assert.deepEqual(alone.tokens, together.tokens.slice(at, at += st.prompts), `stream seeded ${st.seed}`);
  }
  assert.ok(new Set(together.texts).size > 2, "the streams' draws differ");
});

Deno.test("fluency (drift.ts): the mean n-gram entropy of seeded generations from the prompts", async () => {
  const o = { tokens: 6, topK: 3 };
  const prompts = PROMPTS.slice(0, 2);
  const g = await generate(model, tok, prompts, { maxNewTokens: 6, topK: 3, seed: 2 });
  const expected = g.texts.map(fluency).reduce((a, b) => a + b, 0) / prompts.length;
  assert.ok(expected > 0, "the generations have several distinct n-grams");
  assert.deepEqual(await generationFluency(model, tok, [{ prompts, seed: 2 }], o), [expected]);
  assert.deepEqual(await generationFluency(model, tok, [{ prompts, seed: 2 }], o), [expected], "seeded");
  // Runs generated together: each its own draws, the fluency it has generated alone.
  const other = { prompts: PROMPTS.slice(1), seed: 7 };
  const [alone] = await generationFluency(model, tok, [other], o);
  assert.deepEqual(await generationFluency(model, tok, [other, { prompts, seed: 2 }], o), [alone, expected]);
  await assert.rejects(
    () => generationFluency(model, tok, [{ prompts, seed: 2 }, { prompts: [], seed: 2 }], o),
    /fluency: run 1 has no generation prompts/,
  );
});

/** Random low-rank edits of c_proj at the given (layer, rank), large enough to change the generations. */
function randomEdits(parts: [number, number][]): Edit[] {
  const f = model.config.nInner, d = model.config.nEmbd;
  return parts.map(([layer, rank], i) => ({
    method: "random",
    requests: [],
    deltas: [
      keyValueDelta(model, layer, randomArray(f * rank, 40 + i, 2), randomArray(rank * d, 50 + i, 2), rank),
    ],
    info: {},
  }));
}

Deno.test("under virtual edits, one batched pass gives each edit's standard metrics, essence, fluency and samples as applying it", async () => {
  const edits = randomEdits([[0, 1], [1, 1], [1, 2]]);
  const base = {
    prompt: "the capital of France is",
    paraphrases: ["the Eiffel Tower is located in the city of", "Paris is"],
    neighbors: ["Rome", "a famous old river"],
    targetTrue: "Paris",
    targetNew: "Rome",
  };
  const cases = [base, { ...base, targetNew: "Lyon" }, { ...base, prompt: "Paris is", targetNew: "Italy" }];
  const baselines: StandardBaseline[] = [];
  for (const c of cases) baselines.push({ c, reference: await localityReference(model, tok, c) });
  const sampling = { topK: 3, tokens: 5 };
  const texts = [];
  for (const [i, subject] of ["Paris", "Rome", "Paris"].entries()) {
    texts.push(await essenceTexts(model, tok, subject, { ...sampling, seed: i, samples: 3 }));
  }
  const runs = [
    { prompts: PROMPTS.slice(0, 2), seed: 3 },
    { prompts: PROMPTS.slice(2), seed: 4 },
    { prompts: PROMPTS.slice(0, 2), seed: 3 },
  ];
  const unedited = await generationFluency(model, tok, runs, sampling);
  const uneditedTokens: number[][][] = [];
  for (const r of runs) {
    uneditedTokens.push(
      (await generate(model, tok, r.prompts, { maxNewTokens: 5, topK: 3, seed: r.seed })).tokens,
    );
  }
  // Each edit applied alone, its own case, texts and run scored, then undone.
  const expected: { standard: StandardScores; essence: Essence; fluency: number; tokens: number[][] }[] = [];
  for (const [e, edit] of edits.entries()) {
    const applied = await applyEdit(model, edit);
    const g = await generate(model, tok, runs[e].prompts, { maxNewTokens: 5, topK: 3, seed: runs[e].seed });
    expected.push({
      standard: (await standardScores(model, tok, [baselines[e]]))[0],
      essence: (await essenceOf(model, [texts[e]]))[0],
      fluency: (await generationFluency(model, tok, [runs[e]], sampling))[0],
      tokens: g.tokens,
    });
    applied.undo();
  }
  assert.ok(
    expected.some((x, e) => JSON.stringify(x.tokens) !== JSON.stringify(uneditedTokens[e])),
    "the edits change what is generated",
  );
  // All at once under virtual edits, with an unedited item (-1) among them.
  const set = new VirtualEditSet(model, edits);
  const itemEdit = [2, 0, -1, 1];
  const under = { edits: set, itemEdit };
  const pick = <T>(xs: T[], unedited: T) => itemEdit.map((e) => (e === -1 ? unedited : xs[e]));
  const standard = await standardScores(model, tok, pick(baselines, baselines[0]), under);
  const essence = await essenceOf(model, pick(texts, texts[0]), under);
  const fluent = await generationFluency(model, tok, pick(runs, runs[0]), sampling, under);
  const prompts = pick(runs, runs[0]).flatMap((r) => r.prompts);
  const g = await generate(
    model,
    tok,
    prompts,
    {
      maxNewTokens: 5,
      topK: 3,
      streams: pick(runs, runs[0]).map((r) => ({ seed: r.seed, prompts: r.prompts.length })),
    },
    { edits: set, itemEdit: pick(runs, runs[0]).flatMap((r, i) => r.prompts.map(() => itemEdit[i])) },
  );
  set.release();
  const [uneditedStandard] = await standardScores(model, tok, [baselines[0]]);
  const [uneditedEssence] = await essenceOf(model, [texts[0]]);
  let at = 0;
  for (const [i, e] of itemEdit.entries()) {
    const want: (typeof expected)[number] = e === -1
      ? {
        standard: uneditedStandard,
        essence: uneditedEssence,
        fluency: unedited[0],
        tokens: uneditedTokens[0],
      }
      : expected[e];
    const what = `item ${i} (edit ${e})`;
    for (const m of STANDARD_METRICS) {
      const [x, y] = [standard[i][m.key], want.standard[m.key]];
      assert.ok(
        x === y || (x !== null && y !== null && Math.abs(x - y) <= 1e-5),
        `${what}: ${m.key} ${x} vs ${y}`,
      );
    }
    assert.equal(essence[i].pre, want.essence.pre);
    near(essence[i].post, want.essence.post, 1e-5 * want.essence.post, `${what}: essence after`);
    assert.deepEqual(g.tokens.slice(at, at += want.tokens.length), want.tokens, `${what}: the same samples`);
    assert.equal(fluent[i], want.fluency, `${what}: fluency`);
  }
  await assert.rejects(
    () => standardScores(model, tok, baselines, { edits: set, itemEdit: [0] }),
    /1 item edits for 3 items/,
  );
});

Deno.test("an edit that changes no weight is scored as the unedited model: its scores, essence and fluency are those measured before it", async () => {
  const f = model.config.nInner, d = model.config.nEmbd;
  const zeros = (n: number) => new Float32Array(n);
  const lowRank = (keys: Float32Array, values: Float32Array, rank: number): Edit => ({
    method: "rome",
    requests: [],
    deltas: [keyValueDelta(model, 1, keys, values, rank)],
    info: {},
  });
  // keys [f, rank] (component i in column i), values [rank, d].
  const columnZero = (rank: number, zeroColumn: number) => {
    const k = randomArray(f * rank, 61, 2);
    for (let a = 0; a < f; a++) k[a * rank + zeroColumn] = 0;
    return k;
  };
  const values2 = randomArray(2 * d, 62, 2);
  const noValueOf1 = values2.slice();
  noValueOf1.fill(0, d, 2 * d);
  const denseZero: Edit = {
    method: "ft",
    requests: [],
    deltas: ["weight", "bias"].filter((part) => model.params.has(`h.0.mlp.c_proj.${part}`)).map((part) => {
      const t = model.p(`h.0.mlp.c_proj.${part}`);
      return {
        kind: "dense" as const,
        param: `h.0.mlp.c_proj.${part}`,
        shape: [...t.shape],
        values: zeros(t.size),
      };
    }),
    info: {},
  };
  const edits = [
    lowRank(zeros(f), randomArray(d, 63, 2), 1), // MEMIT's z equal to the current state: no key direction
    lowRank(randomArray(f, 64, 2), zeros(d), 1), // no value change
    lowRank(columnZero(2, 0), noValueOf1, 2), // each component zero on one side
    denseZero,
    lowRank(columnZero(2, 0), values2, 2), // component 1 changes the weights
  ];
  assert.deepEqual(edits.map(changesNothing), [true, true, true, true, false]);
  const set = new VirtualEditSet(model, edits);
  try {
    assert.deepEqual([-1, 0, 1, 2, 3, 4].map((e) => set.acting(e)), [-1, -1, -1, -1, -1, 4]);
    assert.equal(set.firstLayer(0), model.nLayer, "an edit of nothing acts at no block");
    assert.equal(set.firstLayer(4), 1);
    // Scores, essence and fluency under each edit that changes nothing: the unedited model's, bit for bit
    // (in a batch with the edit that acts, which changes them).
    const sampling = { topK: 3, tokens: 5 };
    const texts = await essenceTexts(model, tok, "Paris", { ...sampling, seed: 8, samples: 3 });
    const run = { prompts: PROMPTS.slice(0, 2), seed: 5 };
    const [before] = await generationFluency(model, tok, [run], sampling);
    const itemEdit = [0, 1, 2, 3, 4];
    const under = { edits: set, itemEdit };
    const essence = await essenceOf(model, itemEdit.map(() => texts), under);
    const fluent = await generationFluency(model, tok, itemEdit.map(() => run), sampling, under);
    for (const e of [0, 1, 2, 3]) {
      assert.deepEqual(essence[e], unchangedEssence(texts), `edit ${e}: essence`);
      assert.equal(fluent[e], before, `edit ${e}: fluency`);
    }
    assert.notEqual(essence[4].post, texts.perplexity, "the edit that acts moves the perplexity");
    const items = [{ context: tok.encode("the capital of France is"), continuation: tok.encode(" Paris") }];
    const alone = await scoreTokens(model, items);
    const scored = await scoreTokens(model, itemEdit.map(() => items[0]), 2, under);
    for (const e of [0, 1, 2, 3]) {
      assert.deepEqual(scored.logProbs[e], alone.logProbs[0], `edit ${e}: scores`);
    }
    assert.notDeepEqual(scored.logProbs[4], alone.logProbs[0]);
  } finally {
    set.release();
  }
});

Deno.test("scorePlans: Hase et al.'s probabilities and the standard metrics of the same edits in one call, each as scored alone", async () => {
  const edits = randomEdits([[0, 1], [1, 2]]);
  const c = {
    prompt: "the capital of {} is",
    subject: "France",
    paraphrases: ["the capital city of France is"],
    neighbors: ["Rome", "a famous old river"],
    targetTrue: "Paris",
    targetNew: "Rome",
  };
  const cases = [c, { ...c, targetNew: "Lyon" }, {
    ...c,
    paraphrases: ["the capital city of Italy is"],
    subject: "Italy",
    targetNew: "Paris",
    targetTrue: "Rome",
  }];
  const pairs = cases.map((x) => ({
    c: x,
    request: { prompt: x.prompt, subject: x.subject, target: x.targetNew },
  }));
  const baselines: StandardBaseline[] = [];
  for (const x of cases) {
    const sc = { ...x, prompt: x.prompt.replace("{}", x.subject) };
    baselines.push({ c: sc, reference: await localityReference(model, tok, sc) });
  }
  const set = new VirtualEditSet(model, [edits[0], edits[1], edits[0]]);
  try {
    // Case 1 has no standard metrics here; case 2's are scored on the unedited model (edit -1).
    const standardUnder = { edits: set, itemEdit: [0, -1] };
    const alone = {
      probabilities: await caseProbabilities(model, tok, pairs, set),
      standard: await standardScores(model, tok, [baselines[0], baselines[2]], standardUnder),
    };
    const [probabilities, standard] = await scorePlans(model, [
      caseProbabilitiesPlan(tok, pairs, set),
      standardScoresPlan(tok, [baselines[0], baselines[2]], standardUnder),
    ]);
    assert.equal(probabilities.length, 3);
    assert.ok(
      probabilities[0].rewrite !== probabilities[1].rewrite,
      "the cases' objects differ, so do their probabilities",
    );
    probabilities.forEach((p, i) => {
      const want = alone.probabilities[i];
      near(p.rewrite, want.rewrite, 1e-6, `case ${i} rewrite`);
      p.paraphrase.forEach((x, j) => near(x, want.paraphrase[j], 1e-6, `case ${i} paraphrase ${j}`));
      p.neighborhood.forEach((x, j) => near(x, want.neighborhood[j], 1e-6, `case ${i} neighbour ${j}`));
    });
    standard.forEach((s, i) => {
      for (const m of STANDARD_METRICS) {
        const [x, y] = [s[m.key], alone.standard[i][m.key]];
        assert.ok(
          x === y || (x !== null && y !== null && Math.abs(x - y) <= 1e-6),
          `case ${i}: ${m.key} ${x} vs ${y}`,
        );
      }
    });
    // A plan without virtual edits is scored on the model as it is, beside one under them.
    const [[plain], [editedCase]] = await scorePlans(model, [
      caseProbabilitiesPlan(tok, [pairs[1]]),
      caseProbabilitiesPlan(tok, pairs, set),
    ]);
    const [uneditedAlone] = await caseProbabilities(model, tok, [pairs[1]]);
    near(plain.rewrite, uneditedAlone.rewrite, 1e-6, "unedited rewrite");
    assert.ok(Math.abs(plain.rewrite - alone.probabilities[1].rewrite) > 1e-4, "edit 1 changes case 1");
    near(editedCase.rewrite, alone.probabilities[0].rewrite, 1e-6, "edited rewrite beside an unedited plan");
    const other = new VirtualEditSet(model, [edits[0]]);
    try {
      await assert.rejects(
        () =>
          scorePlans(model, [
            caseProbabilitiesPlan(tok, [pairs[0]], other),
            caseProbabilitiesPlan(tok, pairs, set),
          ]),
        /different virtual-edit sets/,
      );
    } finally {
      other.release();
    }
  } finally {
    set.release();
  }
});
