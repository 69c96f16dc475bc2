// Choosing the layer(s) to edit, as interchangeable strategies that run on the same proxy set of
// edit requests and report what they chose, their per-layer scores and how long they took:
//
//   causal tracing (CMA)   the layer with the highest average MLP indirect effect at the last subject
//                          token (ROME's choice; experiments/localization/tracing.ts, ROME's MLP window of 10 layers
//                          out of 48 scaled to the model's depth)
//   integrated gradients   the layer with the highest mean per-layer attribution (sum or max over its
//                          neurons) of the true answer (Chun & Hur; experiments/localization/attribution.ts)
//   LGA                    Layer Gradient Analysis's golden layer (Golden Layers paper; experiments/localization/attribution.ts)
//   fixed                  a given list, e.g. ROME's published layer
//   brute force            edit at every candidate layer with a caller's edit-and-score function and
//                          keep the best (the ground truth the others approximate, and the slowest)
//
// Scoring strategies select `span` consecutive layers: 1 for ROME, 5 for MEMIT (the window with the
// highest total score, attribution.ts bestWindow). LGA always names one golden layer (its Tukey fences
// act on single layers); with span > 1 it takes the best window among windows without excluded layers.
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import {
  attributeFacts,
  averageAttributions,
  bestWindow,
  layerGradientAnalysis,
  type LgaOptions,
} from "./attribution.ts";
import type { EditCase } from "../data/datasets.ts";
import { type FactTrace, type StateKind, traceFacts, type TraceOptions } from "./tracing.ts";

/** One edit request: the prompt with the subject filled in, the subject, the true answer and the new target. */
export interface SelectionRequest {
  /** The prompt, subject filled in. */
  prompt: string;
  /** The subject. */
  subject: string;
  /** The true answer. */
  targetTrue: string;
  /** The new target of the edit. */
  targetNew: string;
}

/** What a strategy chose, from which per-layer scores, in how long. */
export interface LayerSelection {
  /** The chosen layers, ascending. */
  layers: number[];
  /** Per-layer score the choice was made from (indexed by layer); empty for `fixed`. */
  scores: number[];
  /** Wall-clock seconds the selection took. */
  seconds: number;
}

/** A layer-choice strategy: a name and how it selects on a proxy set. */
export interface LayerSelector {
  /** How reports and stores name the strategy. */
  name: string;
  /** Chooses layers for `requests` (the proxy facts) on the unedited model. */
  select(model: Model, tok: Tokenizer, requests: SelectionRequest[]): Promise<LayerSelection>;
}

/** Runs `choose` and stamps its wall-clock time. */
async function timed(choose: () => Promise<Omit<LayerSelection, "seconds">>): Promise<LayerSelection> {
  const started = performance.now();
  const chosen = await choose();
  return { ...chosen, seconds: (performance.now() - started) / 1000 };
}

function requireRequests(name: string, requests: SelectionRequest[]): void {
  if (requests.length === 0) throw new Error(`${name} layer selection: no requests`);
}

/**
 * ROME's MLP window (10 layers of GPT-2 XL's 48) scaled to the model's depth: max(1, round(10 L / 48)).
 * A fixed window of 10 would restore every layer of a model with 10 layers or fewer, so every layer
 * would get the same score (the embedded model has 6).
 */
export function scaledMlpWindow(nLayer: number): number {
  return scaleWindow(10, 48, nLayer);
}

/** A tracing window of `window` layers in a model of `depth` layers, scaled to one of `nLayer` layers with
 *  the same share of the depth: max(1, round(window x nLayer / depth)). Clipping at the first and last
 *  layers is windowLayers' (tracing.ts), as for every window. */
export function scaleWindow(window: number, depth: number, nLayer: number): number {
  return Math.max(1, Math.round((window * nLayer) / depth));
}

/** Hase et al.'s tracing window sizes ("Does Localization Inform Editing?", section 3.2 and the appendix's
 *  window-size figures: 1, 3, 5 (their default) and 10 (ROME's)), on GPT-J's WINDOW_STUDY_DEPTH layers. */
export const WINDOW_STUDY = [1, 3, 5, 10] as const;
/** GPT-J's depth, the model Hase et al.'s window sizes were chosen for. */
export const WINDOW_STUDY_DEPTH = 28;

/** One window of the window-size study: the model's window in layers and the paper's sizes that scale to
 *  it (several coincide in a shallow model: the 6-layer embedded model restores 1 layer for 1, 3 and 5). */
export interface StudyWindow {
  /** Layers restored around each layer, in this model. */
  layers: number;
  /** Hase et al.'s window sizes (of GPT-J's 28 layers) that scale to it. */
  paper: number[];
}

/**
 * Hase et al.'s window sizes (default WINDOW_STUDY) scaled to a model of `nLayer` layers, distinct and
 * ascending: a window of one layer stays one layer (the finest a trace can be), a wider one keeps its share
 * of the depth, scaleWindow(w, 28, nLayer), so GPT-2 XL's 48 layers trace 1, 5, 9 and 17 layers.
 */
export function studyWindows(nLayer: number, paper: readonly number[] = WINDOW_STUDY): StudyWindow[] {
  const out: StudyWindow[] = [];
  for (const w of [...paper].sort((a, b) => a - b)) {
    if (!Number.isInteger(w) || w < 1) throw new Error(`window sizes must be integers >= 1, got ${w}`);
    const layers = w === 1 ? 1 : scaleWindow(w, WINDOW_STUDY_DEPTH, nLayer);
    const same = out.find((x) => x.layers === layers);
    if (same) {
      if (!same.paper.includes(w)) same.paper.push(w);
    } else out.push({ layers, paper: [w] });
  }
  return out.sort((a, b) => a.layers - b.layers);
}

/** The windows every command traces with by default: one layer for the residual stream (ROME restores a
 *  single hidden state), scaledMlpWindow(L) for MLP and attention outputs. */
export function defaultTraceWindows(nLayer: number): Record<StateKind, number> {
  const scaled = scaledMlpWindow(nLayer);
  return { resid: 1, mlp: scaled, attn: scaled };
}

/**
 * The noise threshold of a trace: restoring one MLP output counts as evidence for a layer only when it
 * brings back at least EVIDENCE_SHARE of the probability the noise took away (clean - corrupted), and at
 * least EVIDENCE_MIN in absolute terms. Below it the peak is indistinguishable from the ripple that
 * restoring any state causes (the embedded model's subject tokens peak at 0.02 of a 0.94 drop).
 */
export const EVIDENCE_SHARE = 0.1;
/** The absolute floor of the noise threshold (see EVIDENCE_SHARE). */
export const EVIDENCE_MIN = 0.05;

/** A trace's MLP row at the edit's key token, its peak layer and whether that clears the noise. */
export interface TracingEvidence {
  /** MLP effect per layer at the key token. */
  effects: number[];
  /** The layer with the largest effect. */
  peak: number;
  /** The noise threshold the peak must clear (max(EVIDENCE_MIN, EVIDENCE_SHARE x the total effect)). */
  threshold: number;
  /** The peak clears the threshold. */
  clears: boolean;
}

/** The MLP row of the trace at token `row` (the edit's key token) and whether its peak clears the noise. */
export function tracingEvidence(trace: FactTrace, row: number): TracingEvidence {
  const mlp = trace.grids.find((g) => g.kind === "mlp");
  if (!mlp) throw new Error("tracingEvidence: the trace has no MLP grid");
  const effects = mlp.effect[row];
  const peak = effects.indexOf(Math.max(...effects));
  const threshold = Math.max(EVIDENCE_MIN, EVIDENCE_SHARE * (trace.clean - (trace.corrupted ?? 0)));
  return { effects, peak, threshold, clears: effects[peak] >= threshold };
}

/** CMA: mean over requests of the MLP indirect effect at the last subject token, per layer. The MLP
 *  window defaults to scaledMlpWindow(L); `trace.window` overrides it. */
export function causalTracingSelector(o: { span?: number; trace?: TraceOptions } = {}): LayerSelector {
  const span = o.span ?? 1;
  return {
    name: "causal tracing",
    select: (model, tok, requests) =>
      timed(async () => {
        requireRequests("causal tracing", requests);
        const scores = new Array(model.nLayer).fill(0);
        const facts = requests.map((r) => ({ prompt: r.prompt, subject: r.subject, target: r.targetTrue }));
        const traces = await traceFacts(model, tok, facts, {
          window: scaledMlpWindow(model.nLayer),
          ...o.trace,
          method: "noise",
          kinds: ["mlp"],
        });
        for (const trace of traces) {
          trace.grids[0].layers.lastSubjectEffect.forEach((e, l) => (scores[l] += e / requests.length));
        }
        return { layers: bestWindow(scores, span), scores };
      }),
  };
}

/** Integrated gradients: mean over requests of each layer's attribution to the true answer. */
export function integratedGradientsSelector(
  o: { span?: number; steps?: number; aggregate?: "sum" | "max" } = {},
): LayerSelector {
  const span = o.span ?? 1, aggregate = o.aggregate ?? "sum";
  return {
    name: `integrated gradients (${aggregate})`,
    select: (model, tok, requests) =>
      timed(async () => {
        requireRequests("integrated gradients", requests);
        const results = await attributeFacts(
          model,
          tok,
          requests.map((r) => ({ prompt: r.prompt, target: r.targetTrue })),
          {
            steps: o.steps,
          },
        );
        const avg = averageAttributions(results);
        const scores = aggregate === "sum" ? avg.layerSum : avg.layerMax;
        return { layers: bestWindow(scores, span), scores };
      }),
  };
}

/** Layer Gradient Analysis: the golden layer of S_l after Tukey's fences. */
export function lgaSelector(o: LgaOptions & { span?: number } = {}): LayerSelector {
  const span = o.span ?? 1;
  return {
    name: "LGA",
    select: (model, tok, requests) =>
      timed(async () => {
        requireRequests("LGA", requests);
        const result = await layerGradientAnalysis(model, tok, requests, o);
        if (span === 1) return { layers: [result.selection.golden], scores: result.scores };
        // The window of `span` layers with the highest total among windows without an excluded layer.
        const excluded = new Set(result.selection.excluded);
        let best: number[] | null = null, bestTotal = -Infinity;
        for (let start = 0; start + span <= model.nLayer; start++) {
          const window = Array.from({ length: span }, (_, i) => start + i);
          if (window.some((l) => excluded.has(l))) continue;
          const total = window.reduce((s, l) => s + result.scores[l], 0);
          if (total > bestTotal) [best, bestTotal] = [window, total];
        }
        if (!best) {
          throw new Error(
            `LGA: every window of ${span} layers contains an excluded layer (${[...excluded]})`,
          );
        }
        return { layers: best, scores: result.scores };
      }),
  };
}

/** A fixed choice (e.g. ROME's published layer for the model family). */
export function fixedSelector(layers: number[], name = `fixed ${layers.join(",")}`): LayerSelector {
  if (layers.length === 0) throw new Error("fixed layer selection: no layers");
  return {
    name,
    select: (model) =>
      timed(() => {
        for (const l of layers) {
          if (!Number.isInteger(l) || l < 0 || l >= model.nLayer) {
            throw new Error(`fixed layer selection: layer ${l} outside [0, ${model.nLayer})`);
          }
        }
        return Promise.resolve({ layers: [...layers].sort((a, b) => a - b), scores: [] });
      }),
  };
}

/**
 * Callback of the brute-force search: edit the model at `layer` for these requests, measure, restore
 * the model, and return a score (higher is better, e.g. a mean edit-success metric).
 */
export type EditAndScore = (layer: number, requests: SelectionRequest[]) => Promise<number>;

/** Brute force: calls `editAndScore` at every candidate layer (default all) and keeps the best. */
export function bruteForceSelector(editAndScore: EditAndScore, o: { layers?: number[] } = {}): LayerSelector {
  return {
    name: "brute force",
    select: (model, _tok, requests) =>
      timed(async () => {
        requireRequests("brute force", requests);
        const candidates = o.layers ?? Array.from({ length: model.nLayer }, (_, l) => l);
        const scores = new Array(model.nLayer).fill(NaN);
        let best = -1;
        for (const layer of candidates) {
          if (!Number.isInteger(layer) || layer < 0 || layer >= model.nLayer) {
            throw new Error(`brute force layer selection: layer ${layer} outside [0, ${model.nLayer})`);
          }
          const score = await editAndScore(layer, requests);
          if (!Number.isFinite(score)) {
            throw new Error(`brute force layer selection: layer ${layer} scored ${score}`);
          }
          scores[layer] = score;
          if (best < 0 || score > scores[best]) best = layer;
        }
        return { layers: [best], scores };
      }),
  };
}

/** Selection requests from dataset cases; cases without a true answer or a new target are refused by id. */
export function selectionRequests(cases: EditCase[]): SelectionRequest[] {
  return cases.map((c) => {
    if (c.targetTrue === null) {
      throw new Error(`${c.id}: no true answer (target_true), needed for layer selection`);
    }
    if (c.targetNew === null) {
      throw new Error(`${c.id}: no new target (target_new), needed for layer selection`);
    }
    return { prompt: c.prompt, subject: c.subject, targetTrue: c.targetTrue, targetNew: c.targetNew };
  });
}
