// Fixed expectations on the shipped embedded model (weights/locus-kb), so that a regression in the engine,
// the knowledge base or training shows: its recall, the causal-tracing signature its editing defaults rest
// on (experiments/editing/hparams.ts), and a ROME edit with those defaults. The bounds sit below the
// model card's measurements (MODEL_CARD.md) by a margin for the smaller samples read here.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { applyEdit } from "../experiments/editing/edit.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import { computeEdits, methodConfig, templateStartWords } from "../experiments/editing/methods.ts";
import { caseProbabilities, caseScores, editingCase } from "../experiments/editing/problems.ts";
import { keyStats } from "../experiments/editing/stats.ts";
import { localityReference, standardCaseOf, standardScores } from "../experiments/evaluation/metrics.ts";
import { factRecall } from "../experiments/evaluation/recall.ts";
import { datasetFiles, generateKnowledgeBase } from "../experiments/knowledge/knowledge_base.ts";
import { DEFAULT_TRAIN, recallSets } from "../experiments/knowledge/train.ts";
import {
  averageTraces,
  parseKnownFacts,
  subjectNoiseLevel,
  traceFact,
} from "../experiments/localization/tracing.ts";

const DIR = new URL("../weights/locus-kb", import.meta.url).pathname;
const gpu = await getGpu();
const model = await Model.load(gpu, DIR);
const tok = await loadTokenizer(DIR);
const kb = generateKnowledgeBase({ seed: DEFAULT_TRAIN.seed, subjectsPerType: DEFAULT_TRAIN.subjects });

Deno.test("embedded model: its corpus and datasets (zsre.json too) are the generator's files for the training defaults, byte for byte", async () => {
  const files = datasetFiles(kb);
  assert.deepEqual(Object.keys(files).sort(), [
    "corpus.txt",
    "counterfact.json",
    "known_facts.json",
    "zsre.json",
  ]);
  for (const [name, text] of Object.entries(files)) {
    // A strict decode keeps every byte (a BOM or an invalid byte would differ), so equal text = equal bytes.
    const shipped = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
      .decode(await Deno.readFile(`${DIR}/${name}`));
    assert.ok(
      shipped === text,
      `${DIR}/${name} differs from datasetFiles(kb); the knowledge base or a record builder changed`,
    );
  }
});

Deno.test("embedded model: recall >= 99% on training templates and >= 60% on held-out paraphrases", async () => {
  // Model card: 100.0% (4667/4668) and 70.6% (1347/1908).
  const { train, heldOut } = recallSets(kb);
  const onTrain = await factRecall(model, tok, train);
  const onHeldOut = await factRecall(model, tok, heldOut);
  assert.ok(onTrain.accuracy >= 0.99, `training templates: ${onTrain.correct}/${onTrain.total}`);
  assert.ok(onHeldOut.accuracy >= 0.6, `held-out paraphrases: ${onHeldOut.correct}/${onHeldOut.total}`);
});

Deno.test("embedded model: tracing signature, MLP effect at the subject's last token at layer 0, attention at the last token later", async () => {
  // The first 12 known facts of distinct subjects, noised as `./locus task trace --dataset` does (ROME's
  // 3 sigma over every known subject), window 1. Model card, 200 facts: MLP at the subject's last token
  // 0.228 at layer 0 and <= 0.009 at layers 1-5; attention at the last token peaks at layer 5 (0.281).
  const file = `${DIR}/known_facts.json`;
  const facts = parseKnownFacts(await Deno.readTextFile(file), file);
  const noise = (await subjectNoiseLevel(model, tok, facts.map((f) => f.subject))).level;
  const seen = new Set<string>();
  const chosen = facts.filter((f) => !seen.has(f.subject) && seen.add(f.subject)).slice(0, 12);
  const traces = [];
  for (const f of chosen) {
    traces.push(
      await traceFact(model, tok, { prompt: f.prompt, subject: f.subject, target: f.attribute }, {
        kinds: ["mlp", "attn"],
        window: 1,
        noise,
      }),
    );
  }
  const [mlp, attn] = averageTraces(traces);
  const curve = (a: typeof mlp, group: string) => a.groups.find((g) => g.group === group)!.effect;
  const mlpLast = curve(mlp, "last subject token"), attnLast = curve(attn, "last token");
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(" ");
  assert.ok(mlpLast[0] >= 0.1, `MLP effect at the subject's last token, layer 0: ${fmt(mlpLast)}`);
  assert.ok(
    mlpLast.slice(1).every((x) => x < mlpLast[0] / 4),
    `the MLP effect at the subject's last token peaks at layer 0: ${fmt(mlpLast)}`,
  );
  const attnPeak = attnLast.indexOf(Math.max(...attnLast));
  assert.ok(attnPeak >= 3, `attention effect at the last token peaks in a later layer: ${fmt(attnLast)}`);
});

Deno.test("embedded model: ROME with the small-model defaults rewrites a fact, keeps its neighbours", async () => {
  // Case 3 (Shus Za Zuk La works as a sculptor -> diplomat), at the defaults: key at the subject's last
  // token, layer 0, ROME's 20 v* steps at lr 0.5 (hparams.ts).
  const { cases } = await loadDataset(`${DIR}/counterfact.json`);
  const c = editingCase(cases.find((x) => x.id === "counterfact:3")!);
  const mc = methodConfig(model, "rome");
  assert.equal(mc.hparams.factToken, "subject_last");
  const request = { prompt: c.prompt, subject: c.subject, target: c.targetNew };
  const stats = await keyStats(model, tok, {
    corpus: `${DIR}/corpus.txt`,
    layers: [mc.hparams.layer],
    samples: statsHparams(model.config).samples,
    cacheDir: null,
    log: () => {},
  });
  const startWords = await templateStartWords(tok, `${DIR}/corpus.txt`);
  const [edit] = await computeEdits(model, tok, mc, [request], stats, { startWords });
  const [pre] = await caseProbabilities(model, tok, [{ c, request }]);
  const standardCase = standardCaseOf(c, request)!;
  const reference = await localityReference(model, tok, standardCase);
  const applied = await applyEdit(model, edit);
  const [post] = await caseProbabilities(model, tok, [{ c, request }]);
  const [standard] = await standardScores(model, tok, [{ c: standardCase, reference }]);
  applied.undo();
  const s = caseScores(request, pre, post);
  const text = JSON.stringify({ ...s, ...standard });
  // CounterFact's success scores (the quality bar's): the new object wins after the prompt and after
  // every paraphrase, and every neighbour keeps its true object ahead.
  assert.equal(standard.efficacySuccess, 1, text);
  assert.equal(standard.paraphraseSuccess, 1, text);
  assert.equal(standard.neighborhoodSuccess, 1, text);
  // Hase et al.'s normalised scores (measured 0.66 / 0.18 / 1.000): well on the way to certainty, the
  // neighbours' probabilities unmoved.
  assert.ok(s.rewrite >= 0.5, text);
  assert.ok(s.paraphrase >= 0.1, text);
  assert.ok(s.neighborhood >= 0.95, text);
});
