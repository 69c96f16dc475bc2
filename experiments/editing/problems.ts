// The five editing problems of Hase et al. (2023), section 5.1, and their scores (section 3.4).
// Each turns a CounterFact case (subject s, relation prompt r, true object o_true, new object o_false)
// into an EditRequest:
//
//   error-injection     maximise p(o_false | s, r)          the standard ROME problem
//   tracing-reversal    maximise p(o_noise | s, r)          o_noise: the model's output when the subject
//                                                           is noised as in causal tracing (its argmax
//                                                           first token, o_true's first token excluded
//                                                           so that the edit has something to do)
//   fact-erasure        minimise p(o_true | s, r)
//   fact-amplification  maximise p(o_true | s, r)
//   fact-forcing        maximise p(o_true | s_noise, r)     the subject's embeddings are noised in every
//                                                           prompt of the edit and of its evaluation
//
// Scores (experiments/evaluation/metrics.ts): rewrite = 1 - (1 - p_post)/(1 - p_pre) of the problem's target
// after the prompt (fact erasure: max(0, (p_pre - p_post)/p_pre)); paraphrase = the same averaged
// over the paraphrases; neighborhood = 1 - |p_post - p_pre| / (|p_pre - 0.5| + 0.5) of o_false after
// the neighborhood prompts, identical for every problem as in the paper. p = exp(-mean NLL) of the
// target's tokens, teacher forced.
import type { Model } from "../../engine/model.ts";
import type { Tensor } from "../../engine/gpu.ts";
import { topK } from "../../engine/ops.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import type { EditCase } from "../data/datasets.ts";
import {
  erasureScore,
  harmonicMean,
  neighborhoodScore,
  rewriteScore,
  scorePlans,
  type ScoringItem,
  type ScoringPlan,
  type StandardBaseline,
  type StandardScores,
  standardScoresPlan,
  type TokenScores,
} from "../evaluation/metrics.ts";
import type { EditRequest, SubjectNoise, VirtualEditSet } from "./edit.ts";
import { batchWithNoise, instantiate, type PromptInstance } from "./keys.ts";

/** Hase et al.'s editing problems ("Does Localization Inform Editing?", section 4). */
export const PROBLEMS = [
  "error-injection",
  "tracing-reversal",
  "fact-erasure",
  "fact-amplification",
  "fact-forcing",
] as const;
/** One of PROBLEMS. */
export type EditingProblem = typeof PROBLEMS[number];

/** A problem name from the command line, or an error listing the problems. */
export function parseProblem(name: string): EditingProblem {
  if (!(PROBLEMS as readonly string[]).includes(name)) {
    throw new Error(`unknown editing problem "${name}"; known: ${PROBLEMS.join(", ")}`);
  }
  return name as EditingProblem;
}

/** The parts of a case an edit and its evaluation need; the prompt has "{}" for the subject. */
export interface EditingCase {
  /** The prompt with "{}" for the subject. */
  prompt: string;
  /** The subject. */
  subject: string;
  /** The true object. */
  targetTrue: string;
  /** The new object (error injection). */
  targetNew: string;
  /** Full prompts (subject filled in) that should follow the edit. */
  paraphrases: string[];
  /** Full prompts about other subjects that should not change. */
  neighbors: string[];
  /** The answer each neighbour expects (zsRE's loc_ans); absent: the true object, as in CounterFact, whose
   *  neighbours share it. */
  neighborAnswers?: string[];
  /** Free-generation starts about the subject (CounterFact's generation_prompts: ROME's fluency). */
  generationPrompts?: string[];
}

/** An EditingCase from a dataset case, or an error naming the case and the missing field. */
export function editingCase(c: EditCase): EditingCase {
  const missing = (field: string): never => {
    throw new Error(`case ${c.id}: ${field} is missing; editing needs a subject template and both objects`);
  };
  return {
    prompt: c.template ?? missing("a prompt that contains the subject"),
    subject: c.subject,
    targetTrue: c.targetTrue ?? missing("target_true"),
    targetNew: c.targetNew ?? missing("target_new"),
    paraphrases: c.paraphrases,
    neighbors: c.neighborhood.map((p) => p.prompt),
    neighborAnswers: c.neighborhood.map((p) => p.answer),
    generationPrompts: c.generationPrompts,
  };
}

/** The subject's instance in a prompt that already contains it (first occurrence). */
export function filledInstance(
  tok: Tokenizer,
  text: string,
  subject: string,
  noise?: SubjectNoise,
): PromptInstance {
  const at = text.indexOf(subject);
  if (at < 0) throw new Error(`subject ${JSON.stringify(subject)} does not occur in ${JSON.stringify(text)}`);
  return instantiate(tok, "{}", text.slice(0, at) + "{}" + text.slice(at + subject.length), subject, noise);
}

/** The request that poses `problem` for case `c`. `noise` is tracing's corruption (reversal, forcing). */
export async function problemRequest(
  model: Model,
  tok: Tokenizer,
  c: EditingCase,
  problem: EditingProblem,
  noise: SubjectNoise,
): Promise<EditRequest> {
  return (await problemRequests(model, tok, [{ c, problem }], noise))[0];
}

/** problemRequest of many (case, problem) pairs: the tracing reversals' noised predictions in one forward
 *  (a sweep block poses every problem of its facts). */
export async function problemRequests(
  model: Model,
  tok: Tokenizer,
  posed: readonly { c: EditingCase; problem: EditingProblem }[],
  noise: SubjectNoise,
): Promise<EditRequest[]> {
  const reversals = posed.flatMap(({ c, problem }) => problem === "tracing-reversal" ? [c] : []);
  const predicted = await noisedPredictions(model, tok, reversals, noise);
  let reversal = 0;
  return posed.map(({ c, problem }) => {
    const base = { prompt: c.prompt, subject: c.subject };
    switch (problem) {
      case "error-injection":
        return { ...base, target: c.targetNew };
      case "fact-erasure":
        return { ...base, target: c.targetTrue, direction: "decrease" };
      case "fact-amplification":
        return { ...base, target: c.targetTrue };
      case "fact-forcing":
        return { ...base, target: c.targetTrue, noise };
      case "tracing-reversal":
        return { ...base, target: predicted[reversal++] };
    }
  });
}

/** Per case, the most likely next token (as text) after its noised prompt, other than o_true's first token:
 *  forwards of CASE_BATCH prompts (each row the one it gets alone) and one readback. */
async function noisedPredictions(
  model: Model,
  tok: Tokenizer,
  cases: readonly EditingCase[],
  noise: SubjectNoise,
): Promise<string[]> {
  const gpu = model.gpu, V = model.config.vocabSize;
  const tops: { indices: Tensor; values: Tensor }[] = [];
  for (let at = 0; at < cases.length; at += CASE_BATCH) {
    const part = cases.slice(at, at + CASE_BATCH);
    const { batch, hooks, release } = batchWithNoise(
      gpu,
      model.config.nEmbd,
      part.map((c) => instantiate(tok, "{}", c.prompt, c.subject, noise)),
    );
    const res = model.forward(batch, { hooks });
    release();
    tops.push(topK(gpu, res.logits, part.length, V, 2));
    model.releaseForward(res);
  }
  const read = await gpu.readMany(tops.map((t) => t.indices));
  for (const t of tops) gpu.release(t.indices, t.values);
  const ids = read.flatMap((r) => Array.from(new Uint32Array(r.buffer, r.byteOffset, r.length)));
  return cases.map((c, i) => {
    const trueFirst =
      targetIds(tok, c.prompt.replace("{}", c.subject), c.targetTrue, { refuseUnknown: true })[0];
    return tok.decode([ids[2 * i] === trueFirst ? ids[2 * i + 1] : ids[2 * i]]).trim();
  });
}

// ---------------------------------------------------------------------------------------------
// Probabilities and scores

/** A prompt with the target tokens whose probability it scores. */
export interface ScoredPrompt {
  /** The prompt, tokenised, with its subject span and noise. */
  instance: PromptInstance;
  /** The target's token ids. */
  target: number[];
}

/** Sequences per batch of caseProbabilities' forwards (and of the sweep's, which score the standard metrics
 *  with them). */
export const CASE_BATCH = 128;

/** A scored prompt as scoreTokens' item: its noise, if any, on its subject's tokens. */
function scoringItem({ instance, target }: ScoredPrompt): ScoringItem {
  return {
    context: instance.ids,
    continuation: target,
    noise: instance.noise && { subject: instance.subject, noise: instance.noise },
  };
}

/** Each item's exp(mean log-probability) over its target tokens (summed in order). */
function meanProbabilities(s: TokenScores): number[] {
  return s.logProbs.map((lp) => Math.exp(lp.reduce((a, b) => a + b, 0) / lp.length));
}

/** Probabilities an edit is judged by: the request's target after the prompt and the paraphrases, o_false after the neighbors. */
export interface CaseProbabilities {
  /** p(target) after the prompt. */
  rewrite: number;
  /** p(target) after each paraphrase. */
  paraphrase: number[];
  /** p(o_false) after each neighbor prompt. */
  neighborhood: number[];
}

/** The scored prompts of many (case, request) pairs, flattened, with a function to regroup the results. */
export function caseItems(tok: Tokenizer, cases: { c: EditingCase; request: EditRequest }[]): {
  items: ScoredPrompt[];
  regroup: (p: number[]) => CaseProbabilities[];
  /** The case of each item. */
  caseOf: number[];
} {
  const items: ScoredPrompt[] = [];
  const caseOf: number[] = [];
  const counts = cases.map(({ c, request }, i) => {
    // Scored after every prompt below: those end in a word, so the target reads the same after each.
    const prompt = c.prompt.replace("{}", c.subject);
    const target = targetIds(tok, prompt, request.target, { refuseUnknown: true });
    items.push({ instance: instantiate(tok, "{}", c.prompt, c.subject, request.noise), target });
    for (const p of c.paraphrases) {
      items.push({ instance: filledInstance(tok, p, c.subject, request.noise), target });
    }
    const falseTarget = targetIds(tok, prompt, c.targetNew, { refuseUnknown: true });
    for (const p of c.neighbors) {
      items.push({ instance: { ids: tok.encode(p), subject: [0, 0], fact: 0 }, target: falseTarget });
    }
    while (caseOf.length < items.length) caseOf.push(i);
    return [c.paraphrases.length, c.neighbors.length];
  });
  const regroup = (p: number[]) => {
    let at = 0;
    return counts.map(([np, nn]) => {
      const rewrite = p[at++];
      const paraphrase = p.slice(at, at + np);
      at += np;
      const neighborhood = p.slice(at, at + nn);
      at += nn;
      return { rewrite, paraphrase, neighborhood };
    });
  };
  return { items, regroup, caseOf };
}

/**
 * The probabilities of each (case, request). With `edits`, case i is scored under edit i of the set,
 * virtually (one batched forward for all of them instead of apply / score / undo per edit).
 */
export async function caseProbabilities(
  model: Model,
  tok: Tokenizer,
  cases: { c: EditingCase; request: EditRequest }[],
  edits?: VirtualEditSet,
): Promise<CaseProbabilities[]> {
  const [probabilities] = await scorePlans(model, [caseProbabilitiesPlan(tok, cases, edits)], CASE_BATCH);
  return probabilities;
}

/** caseProbabilities as a ScoringPlan, to be scored with other measurements of the same edits
 *  (metrics.ts scorePlans: with the standard metrics, the prompts both score run once). */
export function caseProbabilitiesPlan(
  tok: Tokenizer,
  cases: { c: EditingCase; request: EditRequest }[],
  edits?: VirtualEditSet,
): ScoringPlan<CaseProbabilities[]> {
  const { items, regroup, caseOf } = caseItems(tok, cases);
  if (edits && edits.edits.length !== cases.length) {
    throw new Error(`caseProbabilities: ${edits.edits.length} virtual edits for ${cases.length} cases`);
  }
  return {
    items: items.map(scoringItem),
    under: edits && { edits, itemEdit: caseOf },
    read: (s) => regroup(meanProbabilities(s)),
  };
}

/**
 * caseProbabilities of every (case, request) and standardScores of each case with a baseline (null
 * where the standard metrics do not apply), in one scoring call (metrics.ts scorePlans: error injection's
 * and tracing reversal's standard metrics score the same prompts and objects, which then run once). With
 * `edits`, case i is scored under edit i of the set.
 */
export async function caseMeasurements(
  model: Model,
  tok: Tokenizer,
  cases: { c: EditingCase; request: EditRequest }[],
  baselines: readonly (StandardBaseline | null)[],
  edits?: VirtualEditSet,
): Promise<{ probabilities: CaseProbabilities[]; standard: (StandardScores | null)[] }> {
  if (baselines.length !== cases.length) {
    throw new Error(`caseMeasurements: ${baselines.length} baselines for ${cases.length} cases`);
  }
  const applicable = baselines.flatMap((b, i) => (b ? [i] : []));
  const [probabilities, scored] = await scorePlans(model, [
    caseProbabilitiesPlan(tok, cases, edits),
    standardScoresPlan(tok, applicable.map((i) => baselines[i]!), edits && { edits, itemEdit: applicable }),
  ], CASE_BATCH);
  const standard = baselines.map(() => null as StandardScores | null);
  applicable.forEach((i, k) => standard[i] = scored[k]);
  return { probabilities, standard };
}

/** Hase et al.'s scores of one edited case (NaN where the case has no prompts of a kind). */
export interface CaseScores {
  /** Rewrite score (erasure score for fact erasure). */
  rewrite: number;
  /** Paraphrase score, over the case's paraphrases. */
  paraphrase: number;
  /** Neighborhood score, over the case's neighbor prompts. */
  neighborhood: number;
  /** Harmonic mean of the three. */
  overall: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Hase et al.'s normalised scores of one edit from its pre- and post-edit probabilities. */
export function caseScores(
  request: EditRequest,
  pre: CaseProbabilities,
  post: CaseProbabilities,
): CaseScores {
  const gain = request.direction === "decrease" ? erasureScore : rewriteScore;
  const rewrite = gain(pre.rewrite, post.rewrite);
  const paraphrase = pre.paraphrase.length
    ? mean(pre.paraphrase.map((p, i) => gain(p, post.paraphrase[i])))
    : NaN;
  const neighborhood = pre.neighborhood.length
    ? mean(pre.neighborhood.map((p, i) => neighborhoodScore(p, post.neighborhood[i])))
    : NaN;
  const parts = [rewrite, paraphrase, neighborhood].filter((x) => !Number.isNaN(x));
  return { rewrite, paraphrase, neighborhood, overall: harmonicMean(parts) };
}
