// Tiny knowledge-base fixtures.
// - makeTinyKb: a model folder for end-to-end tests of the sweep, study and demo: a random 2-layer
//   GPT-2 with a word-level tokenizer, a corpus (key statistics, context templates) and a CounterFact
//   file whose true objects are the model's own greedy answers, so that the known-facts filter keeps
//   them. Two extra cases name another object and must be filtered out as unknown.
// - EDITING_*: the in-memory vocabulary, tokenizer and model shape of the editing tests
//   (tests/editing_test.ts, tests/editing_methods_test.ts), which build their own random models on it.
import type { GPT2Config } from "../engine/config.ts";
import { type Gpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { greedyNextTokens } from "../experiments/evaluation/recall.ts";

const SUBJECTS = [
  "Anna Berg",
  "Carl Dorn",
  "Eva Lind",
  "Olaf Moe",
  "Ida Sten",
  "Per Holm",
  "Mia Falk",
  "Jon Rask",
];
const OBJECTS = ["Paris", "Oslo", "Rome", "Lima", "Kiev", "Bonn", "Riga", "Baku"];
const RELATIONS = [
  { prompt: "{} lives in", paraphrase: "The home of {} is" },
  { prompt: "{} works in", paraphrase: "The office of {} is in" },
  { prompt: "{} was born in", paraphrase: "The city of birth of {} is" },
];
export const TINY_WORDS = [
  "<unk>",
  "<|endoftext|>",
  ...new Set([...SUBJECTS.flatMap((s) => s.split(" ")), ...OBJECTS]),
  "lives",
  "works",
  "was",
  "born",
  "in",
  "The",
  "home",
  "office",
  "city",
  "of",
  "birth",
  "is",
  ".",
  "a",
];

export interface TinyKb {
  dir: string;
  /** Case ids (CounterFact case_id) the model knows, and the ones it does not. */
  known: number[];
  unknown: number[];
}

/** Writes the tiny model folder into `dir` (config, weights, tokenizer, corpus, counterfact.json). */
export async function makeTinyKb(gpu: Gpu, dir: string, seed = 5): Promise<TinyKb> {
  const tok = new WordLevelTokenizer(TINY_WORDS, { unk: "<unk>", eos: "<|endoftext|>" });
  const cfg = {
    vocabSize: TINY_WORDS.length,
    nPositions: 40,
    nEmbd: 16,
    nLayer: 3,
    nHead: 2,
    layerNormEpsilon: 1e-5,
  };
  const model = Model.random(gpu, cfg, seed, true);
  await model.save(dir);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());
  // Sentences of the knowledge base's shape with varied objects: enough distinct keys for a
  // well-conditioned key second moment (width 4 x 16 = 64).
  const corpus: string[] = [];
  for (let i = 0; i < 120; i++) {
    const s = SUBJECTS[i % SUBJECTS.length], r = RELATIONS[(i * 5) % RELATIONS.length];
    corpus.push(`${r.prompt.replace("{}", s)} ${OBJECTS[(i * 3 + (i >> 3)) % OBJECTS.length]} .`);
  }
  await Deno.writeTextFile(`${dir}/corpus.txt`, corpus.join("\n") + "\n");

  const prompts = SUBJECTS.flatMap((s, i) => RELATIONS.map((r, j) => ({ s, r, i, j })));
  const predicted = await greedyNextTokens(
    model,
    prompts.map((p) => tok.encode(p.r.prompt.replace("{}", p.s))),
  );
  const cases = [];
  const known: number[] = [], unknown: number[] = [];
  for (const [k, p] of prompts.entries()) {
    const answer = tok.tokenString(predicted[k]).trim();
    const usable = /^[A-Za-z]+$/.test(answer) && answer !== "The";
    // Two cases keep a wrong true object on purpose (the known-facts filter must drop them).
    const wrong = k === 1 || k === 4;
    const targetTrue = usable && !wrong ? answer : OBJECTS.find((o) => o !== answer)!;
    const targetNew = OBJECTS.find((o) => o !== targetTrue && o !== answer)!;
    (usable && !wrong ? known : unknown).push(k);
    const neighbor = SUBJECTS[(p.i + 1) % SUBJECTS.length];
    cases.push({
      case_id: k,
      pararel_idx: k,
      requested_rewrite: {
        prompt: p.r.prompt,
        relation_id: `R${p.j}`,
        target_new: { str: targetNew, id: targetNew },
        target_true: { str: targetTrue, id: targetTrue },
        subject: p.s,
      },
      paraphrase_prompts: [p.r.paraphrase.replace("{}", p.s)],
      neighborhood_prompts: [p.r.prompt.replace("{}", neighbor)],
      attribute_prompts: [],
      generation_prompts: [`${p.s} is`],
    });
  }
  await Deno.writeTextFile(`${dir}/counterfact.json`, JSON.stringify(cases, null, 1));
  return { dir, known, unknown };
}

export const EDITING_WORDS = [
  "<unk>",
  "<eos>",
  "Anna",
  "Berg",
  "Carl",
  "Dorn",
  "Eva",
  "Falk",
  "lives",
  "works",
  "in",
  "at",
  "Paris",
  "Rome",
  "Oslo",
  "Lima",
  "is",
  "a",
  "city",
  "person",
  ".",
];
export const EDITING_TOKENIZER = new WordLevelTokenizer(EDITING_WORDS, { unk: "<unk>", eos: "<eos>" });
export const EDITING_CONFIG: GPT2Config = {
  vocabSize: EDITING_WORDS.length,
  nPositions: 24,
  nEmbd: 16,
  nLayer: 3,
  nHead: 2,
  layerNormEpsilon: 1e-5,
};
// Context templates for the editing tests: few start words and one short length keep them cheap.
export const EDITING_START_WORDS = ["Anna", "Carl", "Paris"];
export const EDITING_TEMPLATES = { lengths: [[4, 3]] as [number, number][], seed: 3, topK: 5 };
