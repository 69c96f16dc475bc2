// Attribution of many facts, as `./locus task attribute` runs it: the requests of a dataset (checked
// before any work, optionally only the facts the model knows), integrated gradients over MLP neurons with
// the layers they select and optional causal tracing of the same facts (Dai et al., "Knowledge Neurons in
// Pretrained Transformers", section 3; Chun & Hur, layer choice by attribution), Layer Gradient Analysis
// (the Golden Layers paper, section 5.1), and the records and hyper-parameters a run's JSON keeps.
import type { Model } from "../../engine/model.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { checkRecord, loadDataset } from "../data/datasets.ts";
import { knowsAnswers } from "../evaluation/recall.ts";
import {
  attributeFacts,
  type AverageAttribution,
  averageAttributions,
  bestWindow,
  type FactAttribution,
  knowledgeNeurons,
  type LgaParam,
  type LgaResult,
} from "./attribution.ts";
import { type SelectionRequest, selectionRequests } from "./layer_selection.ts";
import { factChunks } from "./tracing.ts";

/** Integrated gradients over MLP neurons, or Layer Gradient Analysis. */
export type AttributionMethod = "ig" | "lga";

/** The requests of a dataset file and how many of its cases they are. */
export interface AttributionCases {
  /** The requests, in the file's order. */
  requests: SelectionRequest[];
  /** Cases in the file, how many the model completes correctly (null without `known`), how many used. */
  cases: { records: number; known: number | null; used: number };
  /** The file's format (datasets.ts). */
  format: string;
}

/**
 * The first `limit` cases of a dataset file as requests. Integrated gradients needs only the true
 * answer, so known_1000-style files work too; LGA needs CounterFact's new target. With `known` the whole
 * file is filtered to the facts the model completes correctly first, then limited (as tracing does).
 * Unknown words and prompts longer than the model reads (with LGA's answer tokens after them) are
 * reported with their record before any work starts.
 */
export async function attributionCases(
  model: Model,
  tok: Tokenizer,
  file: string,
  method: AttributionMethod,
  o: { limit?: number; known?: boolean } = {},
): Promise<AttributionCases> {
  const limit = o.limit ?? Infinity;
  const loaded = await loadDataset(file);
  const used = o.known ? loaded.cases : loaded.cases.slice(0, limit);
  let requests = method === "lga" ? selectionRequests(used) : used.map((c) => {
    if (c.targetTrue === null) throw new Error(`${file}: ${c.id}: no true answer to attribute`);
    return { prompt: c.prompt, subject: c.subject, targetTrue: c.targetTrue, targetNew: c.targetNew ?? "" };
  });
  requests.forEach((r, i) =>
    checkRecord(file, used[i], () => {
      const answers = [
        targetIds(tok, r.prompt, r.targetTrue, { refuseUnknown: true }),
        ...(method === "lga" ? [targetIds(tok, r.prompt, r.targetNew, { refuseUnknown: true })] : []),
      ];
      const needed = tok.encode(r.prompt).length +
        (method === "lga" ? Math.max(...answers.map((a) => a.length)) - 1 : 0);
      if (needed > model.config.nPositions) {
        throw new Error(`needs ${needed} positions, the model has ${model.config.nPositions}`);
      }
    })
  );
  let known: number | null = null;
  if (o.known) {
    const knows = await knowsAnswers(
      model,
      tok,
      requests.map((r) => ({ prompt: r.prompt, answer: r.targetTrue })),
    );
    requests = requests.filter((_, i) => knows[i]);
    known = requests.length;
    requests = requests.slice(0, limit);
  }
  return {
    requests,
    cases: { records: loaded.cases.length, known, used: requests.length },
    format: loaded.format,
  };
}

/** Rounds for JSON: 5 significant digits are plenty for attributions and keep files small. */
const round = (v: number) => (Number.isFinite(v) ? Number(v.toPrecision(5)) : null);
const roundAll = (xs: ArrayLike<number>) => Array.from(xs, round);

/** ROME's single layer and MEMIT's window of up to 5 layers with the highest scores. */
function selected(scores: number[]) {
  return { rome: bestWindow(scores, 1), memit: bestWindow(scores, Math.min(5, scores.length)) };
}

/** Integrated gradients' Riemann steps, the per-layer aggregate that selects layers, and optional tracing. */
export interface IgRunOptions {
  /** Points of the Riemann sum. */
  steps: number;
  /** The per-layer score the reported selection uses: the sum or the largest of a layer's attributions. */
  aggregate: "sum" | "max";
  /** Also trace each fact (MLP window and noise draws); null: attribution alone. */
  trace: { window: number; samples: number } | null;
  /** Progress of the (fact, layer) pairs attributed and of the facts traced. */
  onProgress?: (what: string) => ((done: number, total: number) => void) | undefined;
}

/** Integrated gradients of every request, averaged, with the layers each aggregate selects. */
export interface IgRun {
  /** Each request's attributions. */
  results: FactAttribution[];
  /** Their average over requests. */
  average: AverageAttribution;
  /** ROME's layer and MEMIT's window chosen by each aggregate. */
  selection: Record<"sum" | "max", { rome: number[]; memit: number[] }>;
  /** Per fact, the MLP indirect effect at the last subject token per layer (with `trace`). */
  tracing: number[][] | null;
  /** Its mean over facts per layer. */
  tracingMean: number[] | null;
  /** The layers that mean selects. */
  tracingSelection: { rome: number[]; memit: number[] } | null;
}

/** Attributes every request's true answer to MLP neurons, averages, selects ROME's layer and MEMIT's window
 *  by each aggregate, and (with `trace`) traces each fact's MLP effect at its last subject token. */
export async function runIntegratedGradients(
  model: Model,
  tok: Tokenizer,
  requests: SelectionRequest[],
  o: IgRunOptions,
): Promise<IgRun> {
  const L = model.nLayer;
  const facts = requests.map((r) => ({ prompt: r.prompt, target: r.targetTrue }));
  const results = await attributeFacts(model, tok, facts, {
    steps: o.steps,
    onProgress: facts.length > 1 ? o.onProgress?.("(fact, layer) pairs") : undefined,
  });
  const average = averageAttributions(results);
  const selection = { sum: selected(average.layerSum), max: selected(average.layerMax) };
  let tracing: number[][] | null = null;
  if (o.trace) {
    const report = requests.length > 1 ? o.onProgress?.("facts traced") : undefined;
    tracing = [];
    const facts = requests.map((r) => ({ prompt: r.prompt, subject: r.subject, target: r.targetTrue }));
    for await (const chunk of factChunks(model, tok, facts, { kinds: ["mlp"], ...o.trace })) {
      for (const t of chunk) tracing.push(t.grids[0].layers.lastSubjectEffect);
      report?.(tracing.length, requests.length);
    }
  }
  const t = tracing;
  const tracingMean = t && Array.from({ length: L }, (_, l) => t.reduce((s, x) => s + x[l], 0) / t.length);
  return {
    results,
    average,
    selection,
    tracing,
    tracingMean,
    tracingSelection: tracingMean && selected(tracingMean),
  };
}

/** Mean over facts of p - p(layer zeroed): what each layer's attributions add up to (completeness). */
export function averageDrop(results: FactAttribution[]): number[] {
  return results[0].baselineProb.map((_, l) =>
    results.reduce((s, r) => s + r.prob - r.baselineProb[l], 0) / results.length
  );
}

/** attribution.json's body for integrated gradients (values rounded to 5 significant digits). */
export function igRecords(run: IgRun, requests: SelectionRequest[], aggregate: "sum" | "max") {
  const { results, average, selection, tracing, tracingMean, tracingSelection } = run;
  return {
    records: results.map((r, i) => ({
      prompt: r.prompt,
      subject: requests[i].subject,
      target: r.target,
      targetToken: r.targetToken,
      prob: round(r.prob),
      baselineProb: roundAll(r.baselineProb),
      layerSum: roundAll(r.layerSum),
      layerMax: roundAll(r.layerMax),
      knowledgeNeurons: knowledgeNeurons(r).map((n) => ({ ...n, score: round(n.score) })),
      ...(tracing ? { tracingLastSubjectMlpEffect: roundAll(tracing[i]) } : {}),
    })),
    average: {
      facts: average.facts,
      prob: round(average.prob),
      layerSum: roundAll(average.layerSum),
      layerMax: roundAll(average.layerMax),
      neurons: average.neurons.map(roundAll),
    },
    selection: {
      aggregate,
      ...selection[aggregate],
      byAggregate: selection,
      ...(tracingMean ? { tracing: { meanEffect: roundAll(tracingMean), ...tracingSelection } } : {}),
    },
  };
}

/** attribution.json's body for LGA. */
export function lgaRecords(result: LgaResult, requests: SelectionRequest[]) {
  return {
    records: requests.map((r, q) => ({
      prompt: r.prompt,
      targetTrue: r.targetTrue,
      targetNew: r.targetNew,
      lossOld: round(result.lossOld[q]),
      lossNew: round(result.lossNew[q]),
      innerProducts: roundAll(result.perRequest[q]),
    })),
    scores: result.scores,
    selection: result.selection,
  };
}

/** The hyper-parameters attribution.json's metadata records for integrated gradients. */
export function igHyperparameters(o: IgRunOptions) {
  return {
    steps: o.steps,
    rule:
      "baseline 0, alpha_k = k/(steps-1) for k = 0..steps-1, score_i = a_i/steps * sum_k dp/d(alpha_k a)_i",
    target: "probability of the first token of ' ' + target_true at the last prompt position",
    aggregate: o.aggregate,
    selection:
      "ROME: argmax over layers of the mean per-layer score; MEMIT: the 5 consecutive layers with the highest total",
    knowledgeNeurons: "score > 0.2 x the largest score over all layers",
    tracing: o.trace
      ? {
        ...o.trace,
        kind: "mlp",
        noise: "3 x std(wte)",
        seed: 1,
        score: "indirect effect at the last subject token",
      }
      : null,
  };
}

/** The hyper-parameters attribution.json's metadata records for LGA. */
export function lgaHyperparameters(params: LgaParam[], fence: number) {
  return {
    params: params.map((p) => `mlp.${p}.weight`),
    loss:
      "teacher-forced mean cross-entropy of the answer's tokens after the prompt (tokens of ' ' + answer)",
    score:
      "S_l = sum over requests of <grad loss(target_true), grad loss(target_new)> w.r.t. the layer's weights",
    fenceK: fence,
    selection: "exclude layers outside Tukey's fences, then argmax of S_l",
  };
}
