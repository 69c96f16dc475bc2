// Edit-evaluation metrics, in two layers:
//
//  1. Pure functions of probabilities, NLLs and token lists (exact definitions: Hase et al.'s appendix and the ROME/EasyEdit evaluation code):
//     - Hase et al. (2023): normalised rewrite / paraphrase score, erasure score, neighborhood score,
//       essence score, and their harmonic mean;
//     - ROME's CounterFact metrics: efficacy / paraphrase / neighborhood success and magnitude from
//       mean-NLL comparisons of target_new against target_true, and the ROME score;
//     - EasyEdit's token-level metrics: the fraction of teacher-forced argmax tokens that are right
//       (reliability, generalisation, portability) or unchanged by the edit (locality);
//     - fluency: ROME's weighted bi/tri-gram entropy of generated text;
//     - STANDARD_METRICS: the names the field compares editors by (CounterFact's ES/PS/NS and EM/PM/NM,
//       MEMIT's efficacy/generalization/specificity, EasyEdit's reliability/generalization/locality/
//       portability, MEMIT's zsRE specificity), each with its definition and source, printed next to the
//       papers' own scores. MEMIT's zsRE efficacy and paraphrase are EasyEdit's reliability and
//       generalization (token-level top-1 accuracy of the new answer, teacher forced).
//  2. GPU scorers that compute the probabilities those need with batched forward passes of a Model:
//     scoreContinuations (mean NLL, per-token log-probabilities and argmaxes of a target after a
//     prompt, teacher-forced), probabilityOfContinuation, teacherForcedAccuracy, perplexity, and
//     greedy / top-k sampled generation. Each batch is one submit and one readback.
//
// Conventions shared with ROME and EasyEdit: a target is tokenized as it follows the prompt after a
// space, targetIds(tok, prompt, target) (GPT-2: tok.encode(" " + target)), and scored after the
// prompt's own tokens; p = exp(-mean NLL) is the geometric-mean token probability of a multi-token target.
import { qkvWidth } from "../../engine/config.ts";
import type { Tensor } from "../../engine/gpu.ts";
import type { ForwardResult, Model } from "../../engine/model.ts";
import { makeBatch } from "../../engine/model.ts";
import { logProbOf, type RowEntry, rowOps, topK, TOPK_MAX } from "../../engine/ops.ts";
import { type Prediction, predictNext } from "../../engine/predict.ts";
import { mulberry32 } from "../../engine/random.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { repeatUnder, type ScoredUnder, type SubjectNoise } from "../editing/edit.ts";
import { batchWithNoise } from "../editing/keys.ts";
import { sharedPasses, startGroups } from "./residuals.ts";

// ------------------------------------------------------------------------------------------------
// Hase et al. (2023), "Does Localization Inform Editing?": scores normalised to [0, 1]

/** Denominators are floored here so that p_pre = 1 (or 0) does not divide by zero. */
export const PROBABILITY_FLOOR = 2e-8;

function probability(what: string, p: number): void {
  if (!(p >= 0 && p <= 1)) throw new Error(`${what}: ${p} is not a probability in [0, 1]`);
}

/** Rewrite (and paraphrase) score: the fraction of the possible gain in p(target_new) that the edit
 *  achieved, 1 - (1 - p_post) / (1 - p_pre). Negative when the edit lowered the probability. */
export function rewriteScore(pPre: number, pPost: number): number {
  probability("rewriteScore p_pre", pPre);
  probability("rewriteScore p_post", pPost);
  return 1 - (1 - pPost) / Math.max(1 - pPre, PROBABILITY_FLOOR);
}

/** Erasure score: the fraction of p(target_true) the edit removed, max(0, (p_pre - p_post) / p_pre). */
export function erasureScore(pPre: number, pPost: number): number {
  probability("erasureScore p_pre", pPre);
  probability("erasureScore p_post", pPost);
  return Math.max(0, (pPre - pPost) / Math.max(pPre, PROBABILITY_FLOOR));
}

/** Neighborhood score: 1 - |p_post - p_pre| / (|p_pre - 0.5| + 0.5), where the denominator is the
 *  largest change possible from p_pre; 1 = unchanged (good), 0 = moved as far as it could. */
export function neighborhoodScore(pPre: number, pPost: number): number {
  probability("neighborhoodScore p_pre", pPre);
  probability("neighborhoodScore p_post", pPost);
  return 1 - Math.abs(pPost - pPre) / (Math.abs(pPre - 0.5) + 0.5);
}

/** Essence score: the rise in perplexity of pre-edit "{subject} is a" samples, clipped to
 *  [0, maxDiff] and mapped to 1 (no rise) .. 0 (rise >= maxDiff): 1 - clip(post - pre, 0, 5) / 5. */
export function essenceScore(perplexityPre: number, perplexityPost: number, maxDiff = 5): number {
  if (!(perplexityPre >= 1 && perplexityPost >= 1)) {
    throw new Error(`essenceScore: perplexities must be >= 1, got ${perplexityPre} and ${perplexityPost}`);
  }
  const diff = Math.min(Math.max(perplexityPost - perplexityPre, 0), maxDiff);
  return 1 - diff / maxDiff;
}

/** Harmonic mean n / sum(1/x). A component <= 0 (a failed desideratum; rewrite scores can be
 *  negative) makes it 0, as scipy.stats.hmean does for a zero. */
export function harmonicMean(values: readonly number[]): number {
  if (values.length === 0) throw new Error("harmonicMean: no values");
  let inverse = 0;
  for (const [i, v] of values.entries()) {
    if (Number.isNaN(v)) throw new Error(`harmonicMean: value ${i} is NaN`);
    if (v <= 0) return 0;
    inverse += 1 / v;
  }
  return values.length / inverse;
}

/** Hase et al.'s normalised scores of one edit. */
export interface HaseScores {
  /** Rewrite score (rewriteScore) of the edit prompt. */
  rewrite: number;
  /** Rewrite score over the paraphrases. */
  paraphrase: number;
  /** Neighborhood score (neighborhoodScore) over the neighbor prompts. */
  neighborhood: number;
  /** Optional: with it, the overall score is the notebook's four-way "target_score_v2". */
  essence?: number;
}

/** Hase et al.'s overall score: the harmonic mean of rewrite, paraphrase, neighborhood (and essence) scores. */
export function overallScore(s: HaseScores): number {
  const parts = [s.rewrite, s.paraphrase, s.neighborhood];
  if (s.essence !== undefined) parts.push(s.essence);
  return harmonicMean(parts);
}

// ------------------------------------------------------------------------------------------------
// ROME's CounterFact metrics (experiments/py/eval_utils_counterfact.py, summarize.py)

/** Mean NLLs of target_new and target_true after one prompt. */
export interface NllPair {
  /** Mean NLL of target_new's tokens. */
  nllNew: number;
  /** Mean NLL of target_true's tokens. */
  nllTrue: number;
}

/** CounterFact's success and magnitude metrics of one case (Meng et al. 2022, section 3.2). */
export interface RomeCaseMetrics {
  /** ES: mean[nll_true > nll_new] over the rewrite prompts; EM: mean[e^-nll_new - e^-nll_true]. */
  efficacySuccess: number | null;
  /** EM: mean[e^-nll_new - e^-nll_true] over the rewrite prompts. */
  efficacyMagnitude: number | null;
  /** PS / PM: the same over the paraphrase prompts. */
  paraphraseSuccess: number | null;
  /** PM: the same over the paraphrase prompts. */
  paraphraseMagnitude: number | null;
  /** NS: mean[nll_true < nll_new] over the neighborhood prompts (the truth must stay ahead);
   *  NM: mean[e^-nll_true - e^-nll_new]. */
  neighborhoodSuccess: number | null;
  /** NM: mean[e^-nll_true - e^-nll_new] over the neighborhood prompts. */
  neighborhoodMagnitude: number | null;
}

function meanOf(xs: number[]): number | null {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

/** One case's six numbers; null where the case has no prompts of that kind. */
export function romeCaseMetrics(
  c: { rewrite: NllPair[]; paraphrase: NllPair[]; neighborhood: NllPair[] },
): RomeCaseMetrics {
  const newWins = (ps: NllPair[]) => meanOf(ps.map((p) => (p.nllTrue > p.nllNew ? 1 : 0)));
  const newGap = (ps: NllPair[]) => meanOf(ps.map((p) => Math.exp(-p.nllNew) - Math.exp(-p.nllTrue)));
  return {
    efficacySuccess: newWins(c.rewrite),
    efficacyMagnitude: newGap(c.rewrite),
    paraphraseSuccess: newWins(c.paraphrase),
    paraphraseMagnitude: newGap(c.paraphrase),
    neighborhoodSuccess: meanOf(c.neighborhood.map((p) => (p.nllTrue < p.nllNew ? 1 : 0))),
    neighborhoodMagnitude: meanOf(c.neighborhood.map((p) => Math.exp(-p.nllTrue) - Math.exp(-p.nllNew))),
  };
}

/** CounterFact's metrics averaged over cases, with the ROME score. */
export interface RomeSummary extends RomeCaseMetrics {
  /** 100 x harmonic mean of the averaged ES, PS and NS (null if one of them is missing). */
  score: number | null;
  /** Cases averaged. */
  cases: number;
}

/** Averages each metric over the cases that have it, then the ROME score. */
export function romeSummary(cases: readonly RomeCaseMetrics[]): RomeSummary {
  const avg = (key: keyof RomeCaseMetrics) =>
    meanOf(cases.map((c) => c[key]).filter((v): v is number => v !== null));
  const s = {
    efficacySuccess: avg("efficacySuccess"),
    efficacyMagnitude: avg("efficacyMagnitude"),
    paraphraseSuccess: avg("paraphraseSuccess"),
    paraphraseMagnitude: avg("paraphraseMagnitude"),
    neighborhoodSuccess: avg("neighborhoodSuccess"),
    neighborhoodMagnitude: avg("neighborhoodMagnitude"),
  };
  const parts = [s.efficacySuccess, s.paraphraseSuccess, s.neighborhoodSuccess];
  const score = parts.every((v) => v !== null) ? 100 * harmonicMean(parts as number[]) : null;
  return { ...s, score, cases: cases.length };
}

// ------------------------------------------------------------------------------------------------
// EasyEdit's token-level metrics (evaluate_utils.py test_prediction_acc)

/** The fraction of positions where two token lists agree: predicted vs target tokens gives
 *  reliability / generalisation / portability; post-edit vs pre-edit predictions gives locality. */
export function tokenAgreement(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`tokenAgreement: lists of ${a.length} and ${b.length} tokens`);
  if (a.length === 0) throw new Error("tokenAgreement: empty token lists");
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

// ------------------------------------------------------------------------------------------------
// The field's standard metric names

/** One of the field's standard metrics: its name, definition and source. */
export interface StandardMetric {
  /** The key in StandardScores. */
  key: keyof StandardScores;
  /** The short name tables use ("ES"), or the full name where the field has none. */
  short: string;
  /** The full name ("efficacy success"). */
  name: string;
  /** Other names for the same number in the literature. */
  aliases: string[];
  /** How it is computed, in one sentence. */
  definition: string;
  /** The paper or code that defines it. */
  source: string;
}

const ROME_PAPER =
  "Meng et al. (2022), Locating and Editing Factual Associations in GPT, section 4 (CounterFact)";
const MEMIT_PAPER =
  "Meng et al. (2023), Mass-Editing Memory in a Transformer, section 5.2 (zsRE: efficacy, " +
  "paraphrase, specificity)";
const EASYEDIT_PAPER =
  "Wang et al. (2024), EasyEdit: An Easy-to-use Knowledge Editing Framework for Large Language Models; " +
  "Yao et al. (2023), Editing Large Language Models: Problems, Methods, and Opportunities";

/** The field's metrics, in the order tables print them. Probabilities are p = exp(-mean NLL) of the
 *  target's tokens after the prompt (teacher forced, target with a leading space). */
export const STANDARD_METRICS: readonly StandardMetric[] = [
  {
    key: "efficacySuccess",
    short: "ES",
    name: "Efficacy Success",
    aliases: ["efficacy", "edit success"],
    definition: "fraction of rewrite prompts where p(new object) > p(true object) after the edit",
    source: ROME_PAPER,
  },
  {
    key: "paraphraseSuccess",
    short: "PS",
    name: "Paraphrase Success",
    aliases: ["generalization (MEMIT)"],
    definition: "the same over the paraphrase prompts",
    source: ROME_PAPER,
  },
  {
    key: "neighborhoodSuccess",
    short: "NS",
    name: "Neighborhood Success",
    aliases: ["specificity (MEMIT)"],
    definition: "fraction of neighbourhood prompts (other subjects, same relation and true object) where " +
      "p(true object) > p(new object) still holds after the edit",
    source: ROME_PAPER,
  },
  {
    key: "efficacyMagnitude",
    short: "EM",
    name: "Efficacy Magnitude",
    aliases: [],
    definition: "mean of p(new object) - p(true object) over the rewrite prompts after the edit",
    source: ROME_PAPER,
  },
  {
    key: "paraphraseMagnitude",
    short: "PM",
    name: "Paraphrase Magnitude",
    aliases: [],
    definition: "the same over the paraphrase prompts",
    source: ROME_PAPER,
  },
  {
    key: "neighborhoodMagnitude",
    short: "NM",
    name: "Neighborhood Magnitude",
    aliases: [],
    definition: "mean of p(true object) - p(new object) over the neighbourhood prompts after the edit",
    source: ROME_PAPER,
  },
  {
    key: "reliability",
    short: "Reliability",
    name: "Reliability",
    aliases: ["edit accuracy"],
    definition: "fraction of the new object's tokens that are the model's argmax after the prompt " +
      "(teacher forced) after the edit",
    source: EASYEDIT_PAPER,
  },
  {
    key: "generalization",
    short: "Generalization",
    name: "Generalization",
    aliases: ["rephrase accuracy"],
    definition: "the same on the paraphrase (rephrase) prompts",
    source: EASYEDIT_PAPER,
  },
  {
    key: "locality",
    short: "Locality",
    name: "Locality",
    aliases: [],
    definition: "fraction of argmax tokens on the neighbourhood (locality) prompt + its answer that the " +
      "edit left unchanged",
    source: EASYEDIT_PAPER,
  },
  {
    key: "portability",
    short: "Portability",
    name: "Portability",
    aliases: [],
    definition: "Reliability on prompts whose answer should follow from the edit (reasoning, aliases); " +
      "n/a without such prompts",
    source: EASYEDIT_PAPER,
  },
  {
    key: "specificity",
    short: "Specificity",
    name: "Specificity (neighbourhood accuracy)",
    aliases: ["specificity (MEMIT, zsRE)", "neighborhood accuracy"],
    definition:
      "fraction of the neighbour (locality) prompts' own answer tokens that are the model's argmax " +
      "after the edit (teacher forced); unlike locality it compares with the answer, not with the unedited " +
      "model's predictions",
    source: MEMIT_PAPER,
  },
];

/** ROME's six CounterFact numbers and EasyEdit's four of one edit; null where the case has no prompts
 *  of that kind. */
export interface StandardScores extends RomeCaseMetrics {
  /** EasyEdit's reliability: token agreement with target_new after the prompt. */
  reliability: number | null;
  /** EasyEdit's generalization: the same after the paraphrases. */
  generalization: number | null;
  /** EasyEdit's locality: the share of the neighbors' argmax tokens the edit leaves unchanged. */
  locality: number | null;
  /** EasyEdit's portability: token agreement with the answers the edit should imply. */
  portability: number | null;
  /** MEMIT's zsRE specificity: token agreement of the neighbours' own answers after the edit. */
  specificity: number | null;
}

/** The prompts an edit is judged by (prompts with the subject filled in). */
export interface StandardCase {
  /** The edit prompt. */
  prompt: string;
  /** Rephrasings of the prompt about the same subject. */
  paraphrases: readonly string[];
  /** Prompts about other subjects. */
  neighbors: readonly string[];
  /** Each neighbour's answer (zsRE's loc_ans); absent: the true object (CounterFact's neighbours share it). */
  neighborAnswers?: readonly string[];
  /** Prompts with the answer the edit should imply. */
  portability?: readonly { prompt: string; answer: string }[];
  /** The true object. */
  targetTrue: string;
  /** The new object. */
  targetNew: string;
}

/**
 * The case the standard metrics judge an edit by, or null where they do not apply: they compare a new
 * object against the true one, so fact erasure (direction "decrease"), amplification (the target is the
 * true object) and a noised subject (fact forcing) have none. `c.prompt` has "{}" for the subject.
 */
export function standardCaseOf(
  c: {
    prompt: string;
    subject: string;
    paraphrases: readonly string[];
    neighbors: readonly string[];
    neighborAnswers?: readonly string[];
    targetTrue: string;
  },
  request: { target: string; direction?: string; noise?: unknown },
): StandardCase | null {
  if (request.direction === "decrease" || request.noise || request.target === c.targetTrue) return null;
  return {
    prompt: c.prompt.replace("{}", c.subject),
    paraphrases: c.paraphrases,
    neighbors: c.neighbors,
    neighborAnswers: c.neighborAnswers,
    targetTrue: c.targetTrue,
    targetNew: request.target,
  };
}

/** The mean of each standard metric over edits (null where no edit has a value), for summaries. */
export function meanStandardScores(all: readonly StandardScores[]): StandardScores {
  const values = (key: keyof StandardScores) =>
    all.map((s) => s[key]).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
  return Object.fromEntries(
    STANDARD_METRICS.map((m) => [m.key, meanOf(values(m.key))]),
  ) as unknown as StandardScores;
}

/** EasyEdit's locality reference: the unedited model's argmax tokens on each neighbour + answer. */
export type LocalityReference = number[][];

/** Run before the edit: the argmax tokens locality compares against. */
export async function localityReference(
  model: Model,
  tok: Tokenizer,
  c: StandardCase,
): Promise<LocalityReference> {
  return (await localityReferences(model, tok, [c]))[0];
}

/** localityReference of many cases: every neighbour of every case in one scoring call. */
async function localityReferences(
  model: Model,
  tok: Tokenizer,
  cases: readonly StandardCase[],
): Promise<LocalityReference[]> {
  const neighbors = cases.flatMap((c) => c.neighbors);
  const answers = cases.flatMap(neighborAnswers);
  const predicted = neighbors.length
    ? (await scoreContinuations(model, tok, neighbors, answers)).predicted
    : [];
  let at = 0;
  return cases.map((c) => predicted.slice(at, at += c.neighbors.length));
}

/** What each neighbour of `c` should still answer after the edit. */
function neighborAnswers(c: StandardCase): string[] {
  const answers = c.neighborAnswers ?? c.neighbors.map(() => c.targetTrue);
  if (answers.length !== c.neighbors.length) {
    throw new Error(`${answers.length} neighbour answers for ${c.neighbors.length} neighbours`);
  }
  return [...answers];
}

/** What the standard metrics of one edit need from the unedited model: its case and locality reference. */
export interface StandardBaseline {
  /** standardCaseOf's case. */
  c: StandardCase;
  /** localityReference of `c` on the unedited model. */
  reference: LocalityReference;
}

/** standardCaseOf(c, request) with the unedited model's locality reference, or null where the standard
 *  metrics do not apply. Run before the edit; standardScores(model, tok, [b]) after it. */
export async function standardBaseline(
  model: Model,
  tok: Tokenizer,
  c: Parameters<typeof standardCaseOf>[0],
  request: Parameters<typeof standardCaseOf>[1],
): Promise<StandardBaseline | null> {
  return (await standardBaselines(model, tok, [{ c, request }]))[0];
}

/** standardBaseline of many (case, request) pairs: every locality reference in one scoring call. */
export async function standardBaselines(
  model: Model,
  tok: Tokenizer,
  pairs: readonly {
    c: Parameters<typeof standardCaseOf>[0];
    request: Parameters<typeof standardCaseOf>[1];
  }[],
): Promise<(StandardBaseline | null)[]> {
  const cases = pairs.map(({ c, request }) => standardCaseOf(c, request));
  const applicable = cases.filter((sc) => sc !== null);
  const references = await localityReferences(model, tok, applicable);
  let next = 0;
  return cases.map((sc) => sc && { c: sc, reference: references[next++] });
}

/**
 * Every standard metric of each case on the model as it is now (after the edit); each case's
 * `reference` is localityReference() of the unedited model. With `under`, case i is scored under virtual
 * edit under.itemEdit[i] (every edit's cases in the same batches, instead of apply / score / undo per
 * edit). One batch of forwards for all cases.
 */
export async function standardScores(
  model: Model,
  tok: Tokenizer,
  cases: readonly StandardBaseline[],
  under?: ScoredUnder,
): Promise<StandardScores[]> {
  const [scores] = await scorePlans(model, [standardScoresPlan(tok, cases, under)]);
  return scores;
}

/** standardScores as a ScoringPlan, to be scored with other measurements of the same edits (scorePlans). */
export function standardScoresPlan(
  tok: Tokenizer,
  cases: readonly StandardBaseline[],
  under?: ScoredUnder,
): ScoringPlan<StandardScores[]> {
  const prompts: string[] = [], targets: string[] = [], counts: number[] = [];
  const layouts = cases.map(({ c, reference }, i) => {
    if (reference.length !== c.neighbors.length) {
      throw new Error(
        `standardScores: case ${i} has ${reference.length} locality references for ${c.neighbors.length} ` +
          "neighbours",
      );
    }
    const rewrite = [c.prompt, ...c.paraphrases], neighbors = [...c.neighbors];
    const portability = c.portability ?? [];
    // The first block scores the new object everywhere; the second the truth: the true object after the
    // rewrite prompts, each neighbour's own answer after it (the true object in CounterFact).
    const own = [...rewrite, ...neighbors, ...rewrite, ...neighbors, ...portability.map((p) => p.prompt)];
    const at = prompts.length;
    prompts.push(...own);
    targets.push(
      ...[...rewrite, ...neighbors].map(() => c.targetNew),
      ...rewrite.map(() => c.targetTrue),
      ...neighborAnswers(c),
      ...portability.map((p) => p.answer),
    );
    counts.push(own.length);
    return { at, rewrite, neighbors, portability };
  });
  const items = encodeItems(tok, prompts, targets);
  const read = (t: TokenScores): StandardScores[] => {
    const s = continuationScores(items, t);
    const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
    return cases.map(({ c, reference }, k) => {
      // Index i of this case's prompts is row at + i of the scores.
      const { at, rewrite, neighbors, portability } = layouts[k];
      const n = rewrite.length + neighbors.length;
      const pair = (i: number): NllPair => ({ nllNew: s.nll[at + i], nllTrue: s.nll[at + n + i] });
      const counterfact = romeCaseMetrics({
        rewrite: [pair(0)],
        paraphrase: c.paraphrases.map((_, i) => pair(1 + i)),
        neighborhood: neighbors.map((_, i) => pair(rewrite.length + i)),
      });
      const accuracy = (i: number) => tokenAgreement(s.predicted[at + i], s.targets[at + i]);
      return {
        ...counterfact,
        reliability: accuracy(0),
        generalization: mean(c.paraphrases.map((_, i) => accuracy(1 + i))),
        // The post-edit argmax tokens on neighbour + true object (the second block) against the reference.
        locality: mean(
          neighbors.map((_, i) => tokenAgreement(s.predicted[at + n + rewrite.length + i], reference[i])),
        ),
        portability: mean(portability.map((_, i) => accuracy(2 * n + i))),
        specificity: mean(neighbors.map((_, i) => accuracy(n + rewrite.length + i))),
      };
    });
  };
  return { items, under: under && repeatUnder(under, counts), read };
}

/** "ES 1.00  PS 0.50  NS 0.80  EM 0.97 ..." (n/a for a metric without prompts). */
export function formatStandardScores(s: StandardScores, digits = 2): string {
  return STANDARD_METRICS.map((m) => `${m.short} ${s[m.key] === null ? "n/a" : s[m.key]!.toFixed(digits)}`)
    .join("  ");
}

// ------------------------------------------------------------------------------------------------
// Fluency: ROME's n-gram entropy of generated text

/** Word tokens in the manner of NLTK's word_tokenize (Treebank): words, and every punctuation mark
 *  on its own; "n't" and clitics like "'s" split off ("don't" -> "do", "n't"). An approximation:
 *  NLTK's abbreviation and quote rules are not reproduced. */
export function wordTokens(text: string): string[] {
  return text.match(/[\p{L}\p{N}_]+(?=n't\b)|n't\b|'[\p{L}]+|[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]/gu) ?? [];
}

/** Shannon entropy in bits of the n-gram frequency distribution, -sum f log2 f (0 with no n-grams). */
export function ngramEntropy(tokens: readonly string[], n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`ngramEntropy: n must be a positive integer, got ${n}`);
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const gram = tokens.slice(i, i + n).join("\u0000");
    counts.set(gram, (counts.get(gram) ?? 0) + 1);
  }
  const total = Math.max(0, tokens.length - n + 1);
  let h = 0;
  for (const c of counts.values()) h -= (c / total) * Math.log2(c / total);
  return h;
}

/** ROME's fluency of one text: mean(2/3 H_2, 4/3 H_3) over its word bigrams and trigrams.
 *  Repetitive generations (a common failure after bad edits) score low. */
export function fluency(text: string): number {
  const tokens = wordTokens(text);
  return ((2 / 3) * ngramEntropy(tokens, 2) + (4 / 3) * ngramEntropy(tokens, 3)) / 2;
}

// ------------------------------------------------------------------------------------------------
// GPU scorers

/** A token sequence split into the context and the continuation scored after it. */
export interface ScoringItem {
  /** Token ids before the scored part. */
  context: number[];
  /** Token ids scored, each given the context and the earlier ones. */
  continuation: number[];
  /** Fact forcing's and tracing's noise on the subject's embeddings, at its token range in the context
   *  (such an item's rows are never the unedited model's: it runs every block). */
  noise?: { subject: [number, number]; noise: SubjectNoise };
}

/** Teacher-forced log-probabilities and argmaxes of continuations, per item and token. */
export interface TokenScores {
  /** log p(continuation[j] | context, continuation[..j]) per item and token. */
  logProbs: number[][];
  /** The model's argmax token at each of those positions (teacher-forced greedy prediction). */
  predicted: number[][];
}

const DEFAULT_BATCH = 64;

/** The most bytes generate's key/value cache of one batch may take (all layers). */
const GENERATION_CACHE_BYTES = 1 << 30;

/** The most bytes of key/value cache a generate call keeps at once, beyond one batch's. */
const GENERATION_GROUP_BYTES = 256 * 2 ** 20;

/** generate's cache rows per prompt are a multiple of this (up to the model's positions). */
const CACHE_ROW_STEP = 64;

/**
 * Teacher-forced scores of every item's continuation: one forward over context ++ continuation[..m-1)
 * per distinct sequence (items of the same tokens, edit and noise share one; right-padded batches of
 * `batchSize` sequences), logits only at the m predicting positions of each item, log-probabilities and
 * argmaxes computed on the GPU, one readback per call. With `under`, item i is scored under virtual edit
 * under.itemEdit[i] (the model as it is for -1), in the same batches.
 */
export async function scoreTokens(
  model: Model,
  items: readonly ScoringItem[],
  batchSize = DEFAULT_BATCH,
  under?: ScoredUnder,
): Promise<TokenScores> {
  const gpu = model.gpu, V = model.config.vocabSize;
  if (under && under.itemEdit.length !== items.length) {
    throw new Error(`scoreTokens: ${under.itemEdit.length} item edits for ${items.length} items`);
  }
  items.forEach((it, i) => {
    if (it.context.length === 0) throw new Error(`scoreTokens: item ${i} has an empty context`);
    if (it.continuation.length === 0) throw new Error(`scoreTokens: item ${i} has an empty continuation`);
    const length = it.context.length + it.continuation.length - 1;
    if (length > model.config.nPositions) {
      throw new Error(
        `scoreTokens: item ${i} needs ${length} positions, the model has ${model.config.nPositions}`,
      );
    }
  });
  const logProbs: number[][] = new Array(items.length), predicted: number[][] = new Array(items.length);
  const sequences = items.map((it) => [...it.context, ...it.continuation.slice(0, -1)]);
  // Items of the same tokens, edit and noise are one sequence of a batch, read at each item's rows
  // (CounterFact's standard metrics score every prompt's new and true object: one-token objects make the
  // same sequence twice; the edits that change nothing are all the unedited model, VirtualEditSet.acting).
  const editOf = (i: number) => under ? under.edits.acting(under.itemEdit[i]) : -1;
  const passes = sharedPasses(items.length, (i) => [editOf(i), sequences[i], items[i].noise ?? null]);
  // Under a set that keeps the unedited residuals, each sequence starts at its edit's lowest edited block
  // (an unedited one at the last block): groups of sequences by that block, in order within each.
  // (A sequence the cache has no room for starts at block 0.)
  const residuals = under?.edits.residuals;
  const groups = startGroups(
    residuals,
    passes.map((p) => sequences[p[0]]),
    (k) =>
      items[passes[k][0]].noise
        ? 0
        : Math.min(under!.edits.firstLayer(editOf(passes[k][0])), residuals!.deepest),
  );
  // Every batch is recorded before one readback of all their (small) results: a readback waits for all
  // the work before it (and 10 ms more where Deno's mapAsync serves it), so one per call, however many
  // groups and batches.
  const recorded: { chunk: number[]; lp: Tensor; top: { indices: Tensor; values: Tensor } }[] = [];
  for (const [first, members] of groups) {
    for (let start = 0; start < members.length; start += batchSize) {
      const batchPasses = members.slice(start, start + batchSize);
      const heads = batchPasses.map((k) => passes[k][0]);
      const { batch, hooks, release } = batchWithNoise(
        gpu,
        model.config.nEmbd,
        heads.map((i) => ({
          ids: sequences[i],
          subject: items[i].noise?.subject ?? [0, 0],
          fact: 0,
          noise: items[i].noise?.noise,
        })),
      );
      // The batch's items, sequence by sequence; row b*T + |context| - 1 + j predicts continuation[j].
      const chunk = batchPasses.flatMap((k) => passes[k]);
      const outputRows = batchPasses.flatMap((k, b) =>
        passes[k].flatMap((i) =>
          items[i].continuation.map((_, j) => b * batch.T + items[i].context.length - 1 + j)
        )
      );
      const R = outputRows.length;
      const virtualEdits = under?.edits.forBatch(heads.map(editOf), batch.T);
      const input = first > 0 ? residuals!.input(first, heads.map((i) => sequences[i]), batch.T) : undefined;
      const res = model.forward(batch, { hooks, outputRows, virtualEdits, startLayer: first, input });
      release();
      const targets = gpu.upload([R], chunk.flatMap((i) => items[i].continuation), "u32");
      const lp = logProbOf(gpu, res.logits, targets, R, V);
      const top = topK(gpu, res.logits, R, V, 1);
      gpu.release(input);
      model.releaseForward(res);
      recorded.push({ chunk, lp, top });
    }
  }
  const read = await gpu.readMany(recorded.flatMap((r) => [r.lp, r.top.indices]));
  recorded.forEach(({ chunk, lp, top }, k) => {
    const [lpValues, topValues] = [read[2 * k], read[2 * k + 1]];
    const argmax = new Uint32Array(topValues.buffer, topValues.byteOffset, topValues.length);
    let row = 0;
    for (const i of chunk) {
      const m = items[i].continuation.length;
      logProbs[i] = Array.from(lpValues.subarray(row, row + m));
      predicted[i] = Array.from(argmax.subarray(row, row + m));
      row += m;
    }
    gpu.release(lp, top.indices, top.values);
  });
  return { logProbs, predicted };
}

/** TokenScores with each item's mean NLL and target tokens. */
export interface ContinuationScores extends TokenScores {
  /** Mean NLL per item over the target tokens: -(1/m) sum_j log p(y_j); exp(-nll) is the
   *  geometric-mean token probability. */
  nll: number[];
  /** The target tokens after the prompt, targetIds(tok, prompt, target). */
  targets: number[][];
}

function encodeItems(tok: Tokenizer, prompts: readonly string[], targets: readonly string[]): ScoringItem[] {
  if (prompts.length !== targets.length) {
    throw new Error(`${prompts.length} prompts but ${targets.length} targets`);
  }
  return prompts.map((prompt, i) => {
    const context = tok.encode(prompt);
    if (context.length === 0) throw new Error(`prompt ${i} ${JSON.stringify(prompt)} has no tokens`);
    try {
      return { context, continuation: targetIds(tok, prompt, targets[i]) };
    } catch (e) {
      throw new Error(`item ${i}: ${(e as Error).message}`);
    }
  });
}

/** Teacher-forced scores of `targets[i]` after `prompts[i]` (under virtual edits: scoreTokens). */
export async function scoreContinuations(
  model: Model,
  tok: Tokenizer,
  prompts: readonly string[],
  targets: readonly string[],
  batchSize = DEFAULT_BATCH,
  under?: ScoredUnder,
): Promise<ContinuationScores> {
  const items = encodeItems(tok, prompts, targets);
  return continuationScores(items, await scoreTokens(model, items, batchSize, under));
}

/** The ContinuationScores of `items` from their token scores. */
function continuationScores(items: readonly ScoringItem[], s: TokenScores): ContinuationScores {
  const nll = s.logProbs.map((lp) => -lp.reduce((a, b) => a + b, 0) / lp.length);
  return { ...s, nll, targets: items.map((it) => it.continuation) };
}

/**
 * A measurement made of teacher-forced scores: the items it scores (item i under virtual edit
 * under.itemEdit[i] when `under` is given, else on the model as it is) and how it reads their scores.
 * Measurements of the same edits run as one scoreTokens call through scorePlans.
 */
export interface ScoringPlan<R> {
  /** What is scored. */
  items: readonly ScoringItem[];
  /** Per item, the virtual edit it is scored under (absent: the model as it is). */
  under?: ScoredUnder;
  /** The measurement from the items' scores (in the items' order). */
  read(scores: TokenScores): R;
}

/**
 * Every plan's measurement from one scoreTokens call over all their items, so that a sequence several
 * plans score runs once: Hase et al.'s probabilities and CounterFact's standard metrics of an edit score
 * the same prompts and new object (problems.ts caseProbabilitiesPlan, standardScoresPlan). Plans under
 * virtual edits must share one VirtualEditSet; a plan without `under` is scored on the model as it is.
 */
export async function scorePlans<R extends readonly unknown[]>(
  model: Model,
  plans: { readonly [K in keyof R]: ScoringPlan<R[K]> },
  batchSize = DEFAULT_BATCH,
): Promise<R> {
  const all: readonly ScoringPlan<unknown>[] = plans;
  const edits = all.find((p) => p.under)?.under?.edits;
  if (all.some((p) => p.under && p.under.edits !== edits)) {
    throw new Error("scorePlans: plans under different virtual-edit sets cannot share a call");
  }
  const under = edits &&
    { edits, itemEdit: all.flatMap((p) => p.under?.itemEdit ?? p.items.map(() => -1)) };
  const s = await scoreTokens(model, all.flatMap((p) => p.items), batchSize, under);
  let at = 0;
  return all.map((p) => {
    const n = p.items.length;
    const own = { logProbs: s.logProbs.slice(at, at + n), predicted: s.predicted.slice(at, at + n) };
    at += n;
    return p.read(own);
  }) as unknown as R;
}

/** p(targetTrue) and p(targetNew), each as a whole continuation, after each prompt: [pTrue, pNew] per
 *  prompt (one batch of teacher-forced scores). What the demo and the web page show before and after an edit. */
export async function objectProbabilities(
  model: Model,
  tok: Tokenizer,
  prompts: string[],
  targetTrue: string,
  targetNew: string,
): Promise<[number, number][]> {
  const s = await scoreContinuations(model, tok, [...prompts, ...prompts], [
    ...prompts.map(() => targetTrue),
    ...prompts.map(() => targetNew),
  ]);
  return prompts.map((_, i) => [Math.exp(-s.nll[i]), Math.exp(-s.nll[prompts.length + i])]);
}

/** A prompt shown before and after an edit: the fact, a paraphrase or a neighbour. */
export interface Probe {
  /** What the probe is ("the fact", "a paraphrase", "a neighbour"). */
  label: string;
  /** The prompt. */
  text: string;
}

/** The model's answers to probes: top-3 next tokens and [p(true object), p(new object)] per probe. */
export interface ProbeAnswers {
  /** Per probe, the top-3 next tokens. */
  top: Prediction[][];
  /** Per probe, [p(true object), p(new object)]. */
  p: [number, number][];
}

/** What the demo and the web page show of one probe: its answers before and after the edit. */
export interface ProbeResult extends Probe {
  /** Top-3 next tokens before the edit. */
  before: Prediction[];
  /** Top-3 next tokens after the edit. */
  after: Prediction[];
  /** p(true object) and p(new object) before and after (p = exp(-mean NLL) of the object's tokens). */
  pTrue: [number, number];
  /** p(new object) before and after. */
  pNew: [number, number];
}

/** The model's answers to `probes` now (call once before and once after an edit). */
export async function probeAnswers(
  model: Model,
  tok: Tokenizer,
  probes: readonly Probe[],
  targetTrue: string,
  targetNew: string,
): Promise<ProbeAnswers> {
  const top: Prediction[][] = [];
  for (const p of probes) top.push(await predictNext(model, tok.encode(p.text), 3, tok));
  const p = await objectProbabilities(model, tok, probes.map((x) => x.text), targetTrue, targetNew);
  return { top, p };
}

/** Each probe with its answers before and after the edit. */
export function probeResults(
  probes: readonly Probe[],
  before: ProbeAnswers,
  after: ProbeAnswers,
): ProbeResult[] {
  return probes.map((probe, i) => ({
    ...probe,
    before: before.top[i],
    after: after.top[i],
    pTrue: [before.p[i][0], after.p[i][0]],
    pNew: [before.p[i][1], after.p[i][1]],
  }));
}

/** Mean NLL per item of `targets[i]` after `prompts[i]` (teacher forcing); p = exp(-nll). */
export async function probabilityOfContinuation(
  model: Model,
  tok: Tokenizer,
  prompts: readonly string[],
  targets: readonly string[],
  batchSize = DEFAULT_BATCH,
): Promise<number[]> {
  return (await scoreContinuations(model, tok, prompts, targets, batchSize)).nll;
}

/** EasyEdit's accuracy per item: the fraction of target tokens that are the argmax given the prompt
 *  and the target's earlier tokens. */
export async function teacherForcedAccuracy(
  model: Model,
  tok: Tokenizer,
  prompts: readonly string[],
  targets: readonly string[],
  batchSize = DEFAULT_BATCH,
): Promise<number[]> {
  const s = await scoreContinuations(model, tok, prompts, targets, batchSize);
  return s.predicted.map((p, i) => tokenAgreement(p, s.targets[i]));
}

/** ROME's perplexity of each text: exp(-(1/N) sum_{t=2..N} log p(x_t | x_<t)) over its N tokens
 *  (util/perplexity.py divides by N although only N - 1 tokens are predicted). */
export async function perplexity(
  model: Model,
  tok: Tokenizer,
  texts: readonly string[],
  batchSize = DEFAULT_BATCH,
): Promise<number[]> {
  const sequences = texts.map((text, i) => {
    const ids = tok.encode(text);
    if (ids.length < 2) {
      throw new Error(`perplexity: text ${i} ${JSON.stringify(text)} has fewer than 2 tokens`);
    }
    return ids;
  });
  return await tokenPerplexity(model, sequences, batchSize);
}

/** perplexity() of token sequences (each of >= 2 tokens), e.g. generated ones, without re-encoding
 *  (under virtual edits: scoreTokens). */
export async function tokenPerplexity(
  model: Model,
  sequences: readonly number[][],
  batchSize = DEFAULT_BATCH,
  under?: ScoredUnder,
): Promise<number[]> {
  const items = sequences.map((ids) => ({ context: ids.slice(0, 1), continuation: ids.slice(1) }));
  const s = await scoreTokens(model, items, batchSize, under);
  return s.logProbs.map((lp) => Math.exp(-lp.reduce((a, b) => a + b, 0) / (lp.length + 1)));
}

/** Length and sampling (greedy or top-k) of generation. */
export interface GenerateOptions {
  /** Tokens to add per prompt (fewer if the eos token comes or the model's positions run out). */
  maxNewTokens: number;
  /** Sample among the k most likely tokens (softmax restricted to them); 1 = greedy (default). */
  topK?: number;
  /** PRNG seed for sampling (default 0): one stream of draws, taken prompt by prompt at each step. */
  seed?: number;
  /**
   * Instead of `seed`, one stream of draws per run of consecutive prompts: the first streams[0].prompts
   * prompts draw from a PRNG seeded streams[0].seed, the next streams[1].prompts from their own, and so
   * on, so that batching runs together (e.g. every edit's prompts, each under its own virtual edit)
   * samples each run's tokens exactly as generating it alone with its seed would.
   */
  streams?: readonly { seed: number; prompts: number }[];
  /** The most bytes of key/value cache kept at once, beyond one batch's (default GENERATION_GROUP_BYTES,
   *  256 MB): streams are generated in groups that fit it, the same tokens either way. */
  cacheBytes?: number;
}

/** Generated tokens and text per prompt. */
export interface Generation {
  /** The new tokens of each prompt (the eos token, if generated, is not included). */
  tokens: number[][];
  /** Their decoded text. */
  continuations: string[];
  /** decode(prompt tokens ++ new tokens): what ROME's fluency is measured on. */
  texts: string[];
  /** prompt tokens ++ new tokens, per prompt. */
  sequences: number[][];
}

/**
 * Batched autoregressive generation with a key/value cache: the prompts run once, as right-padded
 * batches of up to `batchSize` (their attention inputs q|k|v kept per layer, [prompts * Tmax, width]); each
 * later step runs only every unfinished sequence's newest token, its earlier positions read from the
 * cache (Model.forward's suffix), and appends that token's q|k|v. One readback per step for every batch
 * of a group (streams' prompts whose caches fit GENERATION_GROUP_BYTES; the groups run one after another).
 * With `under`, prompt i is generated under virtual edit under.itemEdit[i] (-1: the model as it is).
 */
export async function generate(
  model: Model,
  tok: Tokenizer,
  prompts: readonly string[],
  o: GenerateOptions,
  under?: ScoredUnder,
  batchSize = DEFAULT_BATCH,
): Promise<Generation> {
  const gpu = model.gpu, cfg = model.config, V = cfg.vocabSize;
  const k = o.topK ?? 1;
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) {
    throw new Error(`generate: maxNewTokens must be >= 0, got ${o.maxNewTokens}`);
  }
  if (!Number.isInteger(k) || k < 1 || k > Math.min(TOPK_MAX, V)) {
    throw new Error(`generate: topK must be in [1, ${Math.min(TOPK_MAX, V)}], got ${k}`);
  }
  if (under && under.itemEdit.length !== prompts.length) {
    throw new Error(`generate: ${under.itemEdit.length} prompt edits for ${prompts.length} prompts`);
  }
  if (o.streams && o.seed !== undefined) throw new Error("generate: give a seed or streams, not both");
  const streams = o.streams ?? [{ seed: o.seed ?? 0, prompts: prompts.length }];
  const streamOf = streams.flatMap((st, j) => {
    if (!Number.isInteger(st.prompts) || st.prompts < 0) {
      throw new Error(`generate: stream ${j} has ${st.prompts} prompts`);
    }
    return new Array<number>(st.prompts).fill(j);
  });
  if (streamOf.length !== prompts.length) {
    throw new Error(`generate: the streams hold ${streamOf.length} prompts, there are ${prompts.length}`);
  }
  const randoms = streams.map((st) => mulberry32(st.seed));
  const sequences = prompts.map((p, i) => {
    const ids = tok.encode(p);
    if (ids.length === 0) throw new Error(`generate: prompt ${i} ${JSON.stringify(p)} has no tokens`);
    return ids;
  });
  const promptLengths = sequences.map((s) => s.length);
  const finished = sequences.map((s) => s.length >= cfg.nPositions);
  // Batches of prompts, fixed for every step; prompt i's cache rows start at row (i - first) * Tmax of its
  // batch's cache, `first` the batch's first prompt. A prompt's cache takes L x Tmax rows of q|k|v: a
  // batch holds at most `batchSize` prompts, one storage binding per layer and GENERATION_CACHE_BYTES in
  // all (GPT-2 XL's 100-token texts: 10 prompts). Tmax is rounded up to CACHE_ROW_STEP and every batch's
  // cache has room for as many prompts as the first (`room`): the same buffer sizes call after call,
  // which the buffer pool serves (fresh buffers of hundreds of MB cost seconds of page faults each time).
  const L = cfg.nLayer, width = qkvWidth(cfg);
  const needed = Math.max(0, ...promptLengths) + o.maxNewTokens;
  const Tmax = Math.min(cfg.nPositions, Math.ceil(needed / CACHE_ROW_STEP) * CACHE_ROW_STEP);
  const layerBytes = Tmax * width * 4;
  const per = Math.max(
    1,
    Math.min(
      batchSize,
      Math.floor(gpu.limits.maxStorageBufferBindingSize / layerBytes),
      Math.floor(GENERATION_CACHE_BYTES / (L * layerBytes)),
    ),
  );
  const room = Math.min(per, prompts.length);
  // Groups of whole streams, generated one group after another, each to the end: a group's batches step
  // together (one readback per step) and the next group reuses their caches, so a call keeps at most
  // o.cacheBytes of cache (or one batch's, or one stream's) however many prompts it has (a
  // sweep block's 5000 fluency prompts took 2.6 GB at once). A stream's draws come in the same order
  // either way (step by step, its prompts in order), so every prompt gets the same tokens.
  const cacheBytes = o.cacheBytes ?? GENERATION_GROUP_BYTES;
  const groupPrompts = per * Math.max(1, Math.floor(cacheBytes / (L * layerBytes * room)));
  const groups: [number, number][] = [];
  let groupStart = 0, at = 0;
  for (const st of streams) {
    if (at > groupStart && at + st.prompts - groupStart > groupPrompts) {
      groups.push([groupStart, at]);
      groupStart = at;
    }
    at += st.prompts;
  }
  if (at > groupStart) groups.push([groupStart, at]);
  const caches: Tensor[][] = []; // per batch of a group, its layers' caches
  try {
    for (const [groupStart, groupEnd] of o.maxNewTokens > 0 ? groups : []) {
      const batches: { first: number; prompts: number[]; cache: Tensor[] }[] = [];
      for (let start = groupStart; start < groupEnd; start += per) {
        const n = Math.min(per, groupEnd - start);
        caches[batches.length] ??= Array.from({ length: L }, () => gpu.empty([room * Tmax, width]));
        batches.push({
          first: start,
          prompts: Array.from({ length: n }, (_, i) => start + i),
          cache: caches[batches.length],
        });
      }
      await generateGroup(batches);
    }
  } finally {
    for (const c of caches) gpu.release(...c);
  }

  /** Every step of one group's batches. */
  async function generateGroup(batches: { first: number; prompts: number[]; cache: Tensor[] }[]) {
    for (let step = 0; step < o.maxNewTokens; step++) {
      // Every batch of the step is recorded before the one readback: per batch [indices, values] of
      // its active prompts' top k, and per active prompt (in prompt order) its batch and row there.
      const tops: Tensor[] = [], drawn: { prompt: number; batch: number; row: number }[] = [];
      for (const b of batches) {
        const active = b.prompts.filter((i) => !finished[i]);
        if (active.length === 0) continue;
        const base = (i: number) => (i - b.first) * Tmax;
        const edits = (T: number) => under?.edits.forBatch(active.map((i) => under.itemEdit[i]), T);
        // Each forward row's q|k|v goes to the cache row of its sequence and position.
        const entries: RowEntry[] = [];
        let captured: Tensor[], res: ForwardResult;
        if (step === 0) {
          const batch = makeBatch(active.map((i) => sequences[i]));
          captured = Array.from({ length: L }, () => gpu.empty([batch.B * batch.T, width]));
          const captureQkv = new Map(captured.map((t, l) => [l, t]));
          res = model.forward(batch, { captureQkv, virtualEdits: edits(batch.T) });
          active.forEach((i, a) =>
            sequences[i].forEach((_, t) =>
              entries.push({ dst: base(i) + t, src: a * batch.T + t, keep: 0, take: 1 })
            )
          );
        } else {
          // The newest token of each sequence, embedded at its position, then every block on that row
          // alone, the earlier positions' q|k|v read from the cache.
          const last = active.map((i) => sequences[i].length - 1);
          captured = Array.from({ length: L }, () => gpu.empty([active.length, width]));
          res = model.forward(makeBatch(active.map((i) => [sequences[i].at(-1)!])), {
            suffix: { starts: last, qkv: b.cache, bases: active.map(base), T: Math.max(...last) + 1 },
            captureQkv: new Map(captured.map((t, l) => [l, t])),
            virtualEdits: edits(1),
          });
          active.forEach((i, a) => entries.push({ dst: base(i) + last[a], src: a, keep: 0, take: 1 }));
        }
        captured.forEach((t, l) => rowOps(gpu, b.cache[l], t, width, entries));
        gpu.release(...captured);
        const top = topK(gpu, res.logits, active.length, V, k);
        model.releaseForward(res);
        active.forEach((prompt, row) => drawn.push({ prompt, batch: tops.length / 2, row }));
        tops.push(top.indices, top.values);
      }
      if (drawn.length === 0) break;
      const read = await gpu.readMany(tops);
      gpu.release(...tops);
      // Draws in prompt order (the batches hold consecutive prompts), so a stream's prompts draw in the
      // order they take generated alone.
      for (const { prompt: i, batch, row } of drawn) {
        const indexValues = read[2 * batch], logits = read[2 * batch + 1].subarray(row * k, (row + 1) * k);
        const indices = new Uint32Array(indexValues.buffer, indexValues.byteOffset, indexValues.length);
        const next = indices[row * k + pickFromTop(logits, randoms[streamOf[i]])];
        if (next === tok.eosId) {
          finished[i] = true;
          continue;
        }
        sequences[i].push(next);
        if (sequences[i].length >= cfg.nPositions) finished[i] = true;
      }
    }
  }
  const tokens = sequences.map((s, i) => s.slice(promptLengths[i]));
  return {
    tokens,
    continuations: tokens.map((t) => tok.decode(t)),
    texts: sequences.map((s) => tok.decode(s)),
    sequences,
  };
}

/** Index into descending top-k logits: 0 for k = 1, else a draw from their softmax. */
function pickFromTop(logits: Float32Array, random: () => number): number {
  if (logits.length === 1) return 0;
  const weights = Array.from(logits, (l) => Math.exp(l - logits[0]));
  let u = random() * weights.reduce((a, b) => a + b, 0);
  for (let j = 0; j < weights.length; j++) {
    u -= weights[j];
    if (u < 0) return j;
  }
  return weights.length - 1;
}

/** Greedy decoding: the argmax token at every step. */
export function greedyGenerate(
  model: Model,
  tok: Tokenizer,
  prompts: readonly string[],
  maxNewTokens: number,
): Promise<Generation> {
  return generate(model, tok, prompts, { maxNewTokens, topK: 1 });
}
