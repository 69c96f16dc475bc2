// One edit of one fact, as `./locus task edit` runs it: the case (a dataset record with the caller's
// fields over it), the key statistics the method needs (imported from ROME/MEMIT's released files or
// computed from a corpus), and what the edit changes: greedy completions of the prompt, a paraphrase and
// a neighbour, Hase et al.'s rewrite / paraphrase / neighborhood scores ("Does Localization Inform
// Editing?", section 4) and the field's standard metrics (evaluation/metrics.ts), the edit undone after.
import { joinPath as join } from "../../engine/io.ts";
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { loadDataset } from "../data/datasets.ts";
import { greedyGenerate, standardBaseline, type StandardScores } from "../evaluation/metrics.ts";
import { applyEdit, type Edit, type EditRequest } from "./edit.ts";
import { statsHparams } from "./hparams.ts";
import { type MethodConfig, statsLayers } from "./methods.ts";
import {
  caseMeasurements,
  type CaseProbabilities,
  caseProbabilities,
  type CaseScores,
  caseScores,
  type EditingCase,
} from "./problems.ts";
import { DEFAULT_STATS_DIR, importStatsFiles, type KeyStats, keyStats } from "./stats.ts";

/** The fields of a case a caller may give; each one given takes precedence over the dataset record's. */
export interface CaseFields {
  /** A record's case id in `dataset` (CounterFact's case_id). */
  caseId?: string;
  /** The dataset file `caseId` is read from. */
  dataset?: string;
  /** The prompt with the subject in it, or "{}" in its place. */
  prompt?: string;
  /** The subject, as it appears in the prompt. */
  subject?: string;
  /** Default: the model's greedy next word. */
  targetTrue?: string;
  /** The new object the edit writes. */
  targetNew?: string;
  /** Rephrasings of the prompt (the new object should follow them too). */
  paraphrases?: string[];
  /** Prompts about other subjects (their answers should not change). */
  neighbors?: string[];
}

/** The case to edit: the record `caseId` of `dataset` with the given fields taking precedence. */
export async function resolveCase(model: Model, tok: Tokenizer, f: CaseFields): Promise<EditingCase> {
  let base: Partial<EditingCase> = {};
  if (f.caseId !== undefined) {
    const path = f.dataset;
    if (path === undefined) throw new Error(`case ${f.caseId}: no dataset to take it from`);
    const { cases } = await loadDataset(path);
    const c = cases.find((x) => x.id.endsWith(`:${f.caseId}`));
    if (!c) throw new Error(`${path}: no record with case id ${f.caseId}`);
    if (c.template === null) {
      throw new Error(`${path}: case ${f.caseId}: the prompt does not contain the subject`);
    }
    base = {
      prompt: c.template,
      subject: c.subject,
      targetTrue: c.targetTrue ?? undefined,
      targetNew: c.targetNew ?? undefined,
      paraphrases: c.paraphrases,
      neighbors: c.neighborhood.map((p) => p.prompt),
      neighborAnswers: c.neighborhood.map((p) => p.answer),
    };
  }
  const subject = f.subject ?? base.subject;
  let prompt = f.prompt ?? base.prompt;
  if (!subject || !prompt) throw new Error("give --prompt and --subject, or --case N");
  if (!prompt.includes("{}")) {
    const at = prompt.indexOf(subject);
    if (at < 0) {
      throw new Error(
        `--prompt ${JSON.stringify(prompt)} contains neither the subject ${JSON.stringify(subject)} nor "{}"`,
      );
    }
    prompt = prompt.slice(0, at) + "{}" + prompt.slice(at + subject.length);
  }
  let targetTrue = f.targetTrue ?? base.targetTrue;
  if (!targetTrue) {
    const { continuations } = await greedyGenerate(model, tok, [prompt.replace("{}", subject)], 1);
    targetTrue = continuations[0].trim();
  }
  const targetNew = f.targetNew ?? base.targetNew;
  if (!targetNew) throw new Error("give --target-new (or --case N)");
  const paraphrases = f.paraphrases ?? base.paraphrases ?? [];
  const neighbors = f.neighbors ?? base.neighbors ?? [];
  // Neighbours given by the caller expect the true object (CounterFact's); the record's their own answers.
  const neighborAnswers = f.neighbors ? undefined : base.neighborAnswers;
  return { prompt, subject, targetTrue, targetNew, paraphrases, neighbors, neighborAnswers };
}

/** Where a method's key statistics come from. */
export interface MethodStatsOptions {
  /** ROME/MEMIT's released .npz files, one per layer (importStatsFiles); they win over a corpus. */
  files?: string[];
  /** The text the statistics are computed from (null: none; an error when the method needs them). */
  corpus: string | null;
  /** Keys to sample (default the model family's, statsHparams). */
  samples?: number;
  /** Where computed statistics are cached (null: nowhere; default runs/editing-stats). */
  cacheDir?: string | null;
  /** Lines saying where the statistics came from. */
  log?: (line: string) => void;
  /** Tokens done of the total while computing. */
  onProgress?: (done: number, total: number) => void;
}

/** The key statistics of every layer the method needs (none for FT-L): imported, cached or computed. */
export async function methodKeyStats(
  model: Model,
  tok: Tokenizer,
  mc: MethodConfig,
  o: MethodStatsOptions,
): Promise<Map<number, KeyStats>> {
  const layers = statsLayers(mc);
  if (layers.length === 0) return new Map();
  if (o.files?.length) {
    // Their Cholesky factors are kept by the moment's hash under the statistics cache.
    const factorDir = o.cacheDir === null ? null : join(o.cacheDir ?? DEFAULT_STATS_DIR, "imported-factors");
    const stats = await importStatsFiles(o.files, model.config.nInner, layers, factorDir);
    o.log?.(
      `key statistics of layers ${layers.join(",")}: imported (${
        [...stats.values()].map((s) => s.count).join(", ")
      } keys)`,
    );
    return stats;
  }
  if (!o.corpus) throw new Error(`${mc.method} needs key statistics: give a corpus (--corpus FILE)`);
  return await keyStats(model, tok, {
    corpus: o.corpus,
    layers,
    samples: o.samples ?? statsHparams(model.config).samples,
    cacheDir: o.cacheDir,
    log: o.log,
    onProgress: o.onProgress,
  });
}

/** One probe prompt: the fact's prompt, a paraphrase or a neighbour. */
export interface CaseProbe {
  /** Which of the case's prompts it is. */
  kind: "prompt" | "paraphrase" | "neighbor";
  /** The prompt with the subject filled in. */
  text: string;
}

/** The case's prompt and its first paraphrase and neighbour (those it has). */
export function caseProbes(c: EditingCase): CaseProbe[] {
  return [
    { kind: "prompt", text: c.prompt.replace("{}", c.subject) },
    ...c.paraphrases.slice(0, 1).map((text) => ({ kind: "paraphrase" as const, text })),
    ...c.neighbors.slice(0, 1).map((text) => ({ kind: "neighbor" as const, text })),
  ];
}

/** What one edit changed; the model is back to its weights when it is returned. */
export interface EditOutcome {
  /** The prompts shown. */
  probes: CaseProbe[];
  /** Greedy continuations of each probe before and after. */
  before: string[];
  /** Continuations after the edit. */
  after: string[];
  /** The problem's target probabilities on every prompt of the case, before and after. */
  probabilities: { pre: CaseProbabilities; post: CaseProbabilities };
  /** Hase et al.'s scores (NaN where the case has no prompts of a kind). */
  scores: CaseScores;
  /** null for problems the standard metrics do not define (no second object, or a noised subject). */
  standard: StandardScores | null;
}

/** Applies `edit`, measures what it changed against the unedited model, and undoes it. */
export async function evaluateEdit(
  model: Model,
  tok: Tokenizer,
  c: EditingCase,
  request: EditRequest,
  edit: Edit,
  tokens: number,
): Promise<EditOutcome> {
  const probes = caseProbes(c);
  const texts = probes.map((p) => p.text);
  const before = await greedyGenerate(model, tok, texts, tokens);
  const pre = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  // The standard metrics judge the edit towards the problem's target against the true object (fact
  // erasure and amplification have no second object: only Hase et al.'s scores apply); a noised-subject
  // problem (fact forcing) is not what they were defined for either.
  const baseline = await standardBaseline(model, tok, c, request);
  const applied = await applyEdit(model, edit);
  try {
    const after = await greedyGenerate(model, tok, texts, tokens);
    const measured = await caseMeasurements(model, tok, [{ c, request }], [baseline]);
    const [post, standard] = [measured.probabilities[0], measured.standard[0]];
    return {
      probes,
      before: before.continuations,
      after: after.continuations,
      probabilities: { pre, post },
      scores: caseScores(request, pre, post),
      standard,
    };
  } finally {
    applied.undo();
  }
}
