// Edit quality over many cases (./locus task quality): one editing method's Hase et al. ("Does
// Localization Inform Editing?", section 4) normalised rewrite / paraphrase / neighborhood scores and
// CounterFact's efficacy / paraphrase / neighborhood success (ES / PS / NS, Meng et al., "Locating and
// Editing Factual Associations in GPT", section 3.2) over fixed CounterFact cases, as means with standard
// errors, and the quality bar the embedded model is held to.
//
// Cases are the facts the model knows (greedy first token), one per subject, as Hase et al. keep facts the
// model knows: keyed at the subject's last token, two facts of one subject ("{} works as a" / "{} works
// for") share their key, so a batch edit (MEMIT, EMMET) holding both must map one key to two values and
// fails both. ROME, R-ROME and FT-L edit each fact alone on the unedited model; MEMIT and EMMET edit all
// cases as ONE batch.
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { loadDataset } from "../data/datasets.ts";
import { knowsAnswers } from "../evaluation/recall.ts";
import { sem } from "../study/stats.ts";
import { standardBaselines, type StandardScores } from "../evaluation/metrics.ts";
import { applyEdit, type Edit, type EditRequest } from "./edit.ts";
import { computeEdits, describeEdit, editedLayers, type MethodConfig, type MethodName } from "./methods.ts";
import {
  caseMeasurements,
  type CaseProbabilities,
  caseProbabilities,
  type CaseScores,
  caseScores,
  type EditingCase,
  editingCase,
} from "./problems.ts";
import type { KeyStats } from "./stats.ts";

/** A case with the request its editing problem makes of it. */
export interface QualityCase {
  c: EditingCase;
  request: EditRequest;
}

/** One measurement: a method at some layers over the first `cases` cases. */
export interface QualityRow {
  /** What was measured, then the method's describeEdit. */
  label: string;
  /** The layers the method edited. */
  layers: number[];
  /** How many cases were edited and scored. */
  cases: number;
  /** Wall time of computing, applying and scoring the edits. */
  seconds: number;
  /** meanScores(scores). */
  mean: CaseScores;
  /** Each case's scores, in case order. */
  scores: CaseScores[];
  /** Each case's CounterFact (ES/PS/NS, EM/PM/NM) and EasyEdit scores, in case order; null where they do
   *  not apply (problems without a new object: metrics.ts standardCaseOf). */
  standard: (StandardScores | null)[];
}

/** How a method's cases are edited: each fact alone, or all of them in one batch edit. */
export type EditMode = "each" | "batch";

/** MEMIT and EMMET edit many facts at once (one batch); the other methods one fact at a time. */
export function editMode(method: MethodName): EditMode {
  return method === "memit" || method === "emmet" ? "batch" : "each";
}

/** A CounterFact file's records as editing cases: all of them, those the model knows, and of those the
 *  first of each subject (file order). */
export async function knownCases(
  model: Model,
  tok: Tokenizer,
  counterfactPath: string,
): Promise<{ candidates: EditingCase[]; known: EditingCase[]; distinct: EditingCase[] }> {
  const { cases } = await loadDataset(counterfactPath);
  const candidates = cases.map(editingCase);
  const knows = await knowsAnswers(
    model,
    tok,
    candidates.map((c) => ({ prompt: c.prompt.replace("{}", c.subject), answer: c.targetTrue })),
  );
  const known = candidates.filter((_, i) => knows[i]);
  const subjects = new Set<string>();
  const distinct = known.filter((c) => !subjects.has(c.subject) && subjects.add(c.subject));
  return { candidates, known, distinct };
}

/** The unedited model's probability of each case's true object: after the prompt, and after each of
 *  its paraphrases (the ceiling that paraphrase scores of new objects are read against). */
export async function trueObjectProbabilities(
  model: Model,
  tok: Tokenizer,
  cases: EditingCase[],
): Promise<CaseProbabilities[]> {
  return await caseProbabilities(
    model,
    tok,
    cases.map((c) => ({ c, request: { prompt: c.prompt, subject: c.subject, target: c.targetTrue } })),
  );
}

/** Each score's mean over the cases that have it (caseScores gives NaN where a case has no prompts). */
export function meanScores(scores: CaseScores[]): CaseScores {
  const avg = (k: keyof CaseScores) => {
    const xs = present(scores, k);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
  };
  return {
    rewrite: avg("rewrite"),
    paraphrase: avg("paraphrase"),
    neighborhood: avg("neighborhood"),
    overall: avg("overall"),
  };
}

/** The standard error of score `k`'s mean over the cases that have it (NaN below two cases). */
export function scoreSem(scores: CaseScores[], k: keyof CaseScores): number {
  const xs = present(scores, k);
  return xs.length > 1 ? sem(xs) : NaN;
}

function present(scores: CaseScores[], k: keyof CaseScores): number[] {
  return scores.map((s) => s[k]).filter((x) => !Number.isNaN(x));
}

/** Hase et al.'s scores and the standard metrics of the cases, on the model as it is now (edited). */
interface Scored {
  scores: CaseScores[];
  standard: (StandardScores | null)[];
}

/** Each edit applied alone to the unedited model, its own case scored, then undone. */
async function scoreEach(
  model: Model,
  tok: Tokenizer,
  edits: Edit[],
  cases: QualityCase[],
  pre: CaseProbabilities[],
): Promise<Scored> {
  const baselines = await standardBaselines(model, tok, cases);
  const out: Scored = { scores: [], standard: [] };
  for (const [i, edit] of edits.entries()) {
    const applied = await applyEdit(model, edit);
    const measured = await caseMeasurements(model, tok, [cases[i]], [baselines[i]]);
    applied.undo();
    out.standard.push(measured.standard[0]);
    out.scores.push(caseScores(cases[i].request, pre[i], measured.probabilities[0]));
  }
  return out;
}

/** One edit of all cases at once, every case scored on the edited model, then undone. */
async function scoreBatch(
  model: Model,
  tok: Tokenizer,
  edit: Edit,
  cases: QualityCase[],
  pre: CaseProbabilities[],
): Promise<Scored> {
  const baselines = await standardBaselines(model, tok, cases);
  const applied = await applyEdit(model, edit);
  const { probabilities: post, standard } = await caseMeasurements(model, tok, cases, baselines);
  applied.undo();
  return { scores: cases.map((p, i) => caseScores(p.request, pre[i], post[i])), standard };
}

/** What measureMethod needs besides the model. */
export interface MeasureOptions {
  /** The row's label (describeEdit(config) is appended). */
  label: string;
  config: MethodConfig;
  cases: QualityCase[];
  /** The unedited model's caseProbabilities of `cases`. */
  pre: CaseProbabilities[];
  mode: EditMode;
  /** Key statistics of (at least) the layers the method reads. */
  stats: Map<number, KeyStats>;
  /** The words the key templates start with (methods.ts templateStartWords; word-level models). */
  startWords?: string[];
}

/** Edits `cases` with one method ("each": every fact alone on the unedited model; "batch": all in one
 *  edit) and scores every case; the model is left unedited. */
export async function measureMethod(model: Model, tok: Tokenizer, o: MeasureOptions): Promise<QualityRow> {
  const { config, cases, pre, stats, startWords } = o;
  const requests = cases.map((p) => p.request);
  const t0 = performance.now();
  let scored: Scored;
  if (o.mode === "batch") {
    const [edit] = await computeEdits(model, tok, config, requests, stats, { startWords });
    scored = await scoreBatch(model, tok, edit, cases, pre);
  } else if (config.method === "rome" || config.method === "r-rome") {
    // Independent per-fact edits, computed in one call.
    const edits = await computeEdits(model, tok, config, requests, stats, { startWords });
    scored = await scoreEach(model, tok, edits, cases, pre);
  } else {
    // One call per fact, in turn: FT-L trains the model's own weights while it runs.
    const edits: Edit[] = [];
    for (const r of requests) {
      edits.push(...await computeEdits(model, tok, config, [r], stats, { startWords }));
    }
    scored = await scoreEach(model, tok, edits, cases, pre);
  }
  return {
    label: `${o.label}, ${describeEdit(config)}`,
    layers: editedLayers(config),
    cases: cases.length,
    seconds: (performance.now() - t0) / 1000,
    mean: meanScores(scored.scores),
    scores: scored.scores,
    standard: scored.standard,
  };
}

/** A mean score for the terminal ("  -  " when no case has it). */
export function formatMean(x: number): string {
  return Number.isNaN(x) ? "  -  " : x.toFixed(3);
}

/** A standard metric's mean and standard error over the cases that have it (NaN where none / one has). */
export function standardMean(
  standard: readonly (StandardScores | null)[],
  key: keyof StandardScores,
): { mean: number; se: number; n: number } {
  const xs = standard.map((s) => s?.[key]).filter((x): x is number => typeof x === "number");
  return {
    mean: xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN,
    se: xs.length > 1 ? sem(xs) : NaN,
    n: xs.length,
  };
}

/** The quality bar, as [what was required and measured, whether it is met]. ROME at its default layer
 *  (`rome`, edited at `romeLayer`) over >= 100 edits: CounterFact's efficacy success >= 0.9, paraphrase
 *  success >= 0.8 and neighborhood success >= 0.95 (the embedded model's bar); a MEMIT batch of >= 100
 *  edits with Hase et al.'s mean rewrite score >= 0.8. A method that was not measured adds no line. */
export function qualityBar(
  rome: QualityRow | undefined,
  romeLayer: number,
  memit: QualityRow | undefined,
): [string, boolean][] {
  const checks: [string, boolean][] = [];
  if (rome) {
    const bars: [keyof StandardScores, string, number][] = [
      ["efficacySuccess", "efficacy success (ES)", 0.9],
      ["paraphraseSuccess", "paraphrase success (PS)", 0.8],
      ["neighborhoodSuccess", "neighborhood success (NS)", 0.95],
    ];
    for (const [key, name, bar] of bars) {
      const { mean, n } = standardMean(rome.standard, key);
      checks.push([
        `ROME layer ${romeLayer}: ${name} ${formatMean(mean)} >= ${bar} over ${n} edits (>= 100)`,
        n >= 100 && mean >= bar,
      ]);
    }
  }
  if (memit) {
    checks.push([
      `MEMIT: one batch of ${memit.cases} edits (>= 100), mean rewrite ${
        formatMean(memit.mean.rewrite)
      } >= 0.8`,
      memit.cases >= 100 && memit.mean.rewrite >= 0.8,
    ]);
  }
  return checks;
}
