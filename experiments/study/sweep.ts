// Sweeps: facts x layers x editing methods x editing problems x localization methods, every result
// written to the results store (experiments/study/store.ts) the moment it exists. The command line is
// experiments/commands/sweep.ts (`./locus task sweep`).
//
// A sweep is a list of work items, each one stored result (store.ts ResultKey):
//
//   trace    one fact, one localization method (method "none", layer null): where the fact lives.
//            "causal-tracing": noise the subject, restore clean MLP outputs (window w around each
//            layer); the per-layer regressor is Hase et al.'s fractional effect, max over tokens.
//            "zeroing": zero the subject's MLP outputs over the window; the regressor is the
//            fraction of the clean probability removed. The whole grid is kept for the report.
//            "tracing-window:W": the window-size study (Hase et al., appendix): causal tracing of the
//            edited facts' MLP outputs with a window of W layers (plan.windows), where the main trace
//            does not already have that window; same regressor, recorded with its window.
//   select   one layer-selection strategy run on the proxy facts (fact "proxy-set", method "none"):
//            causal tracing (CMA), integrated gradients or LGA; its chosen layer and per-layer scores.
//   edit     one fact x method x layer x editing problem (localization "layer-grid"): the edit made
//            alone on the unedited model, its Hase et al. scores and pre/post probabilities.
//
// Localization methods multiply the measurements, not the edits: the analyses join each edit with
// the fact's tracing (or zeroing) effect at the edited layer, and read the scores at the layer a
// selection strategy chose out of the layer grid (experiments/study/analysis.ts).
//
// Resuming: items whose key the store already holds are skipped, so a sweep killed at any point
// continues where it stopped, with nothing lost or duplicated. The store keeps the sweep's settings
// fingerprint (settings, model and dataset hashes, proxy set, noise level) and refuses to resume under
// other settings unless forced. A ROME block killed before it was stored is retried in halves, then
// quarters, ..., so a sweep killed more often than one block takes still progresses. Records whose
// prompts cannot fit the model's positions are skipped when the facts are sampled, reported, and stored
// as "skipped" records (for the CSV and the report).
//
// Scores: every edit stores Hase et al.'s scores and, beside them, the field's standard metrics
// (metrics.ts standardScores: CounterFact ES/PS/NS/EM/PM/NM, EasyEdit's reliability ...) where they apply.
// The edits of every `drift.every`-th fact also store Hase et al.'s essence and ROME's fluency
// (evaluation/drift.ts; DriftSettings says why only some), with the settings and seed used.
//
// Methods: the engine's five and "ft-5", FT-L on the 5 layers around the edit layer (SWEEP_METHODS).
//
// Noise: causal tracing, fact forcing and tracing reversal use ROME's rule, 3 x the std of the
// subject-token embeddings of the dataset's known facts (tracing.ts subjectNoiseLevel), recorded with
// every result using it.
//
// Sharding: the facts are dealt out in turn to the n shards (dealFacts), those whose edits also measure
// essence and fluency first, then the other edited facts, then those only traced; a fact's traces and edits
// go with it, so a shard edits whole blocks of its own facts and shards hold as many facts, and as many
// measured facts, as can be. Every other item (a layer selection, a mass edit) goes to shard hash(its key)
// mod n (store.ts shardItems). Shards write their own stores (merged afterwards) or one store together;
// on one store with a `claims` token (the study's --processes) the edits go instead by the plan's blocks
// to whichever shard claims a block first (store.ts claim), so the shards finish together and a block's
// records are the same bits whichever process, or how many, ran the sweep.
// Facts are sampled with a seeded shuffle of the facts the model knows, so every process sees the same plan.
//
// Order and batching: edits run in blocks of `batchSize` facts, each block through every (problem,
// method, layer), so a sweep stopped early holds every condition for fewer facts. The v* / z of every
// problem of the block are optimised ahead, in one call per set of options (shared_values.ts prefetch;
// editing/values.ts fills a layer's batch with every problem's requests), and the block's FT-L edits of
// every problem at one layer window train in one batch (editing/ft.ts computeFtBatch). A part, one
// (problem, method) at every layer, then computes its edits together (ROME and R-ROME: independent
// rank-one edits; MEMIT and EMMET: editing/memit.ts computeBatchEdits) and scores them all in batched
// passes where each prompt carries its own edit as a virtual edit (engine/virtual_edits.ts: the weights
// are never written): Hase et al.'s probabilities, the standard metrics and the essence texts'
// perplexities, each pass starting at its edits' lowest edited block from the unedited residuals the
// block keeps of the sequences it scores or reads keys from (evaluation/residuals.ts: the same bits, less
// of the model run). The essence and fluency of a block's measured edits wait for one pass per block (each
// fact's fluency with its own stream of draws, so the samples are those of the edit applied), and the
// part's records are stored then. Under --apply-to-score, the reference, every edit is applied alone,
// scored and undone. Pre-edit probabilities are computed once per (fact, problem). Within a block, a v*
// or z that another method already optimised with the same request, layer and settings is reused
// (shared_values.ts: ROME's and R-ROME's v*, MEMIT's and EMMET's z), so the stored edits are those each
// method computes alone.
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { Model } from "../../engine/model.ts";
import { mulberry32 } from "../../engine/random.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { checkRecord, loadDataset, recordLabel } from "../data/datasets.ts";
import {
  applyEdit,
  type Edit,
  type EditRequest,
  type SubjectNoise,
  VirtualEditSet,
} from "../editing/edit.ts";
import { computeFtBatch } from "../editing/ft.ts";
import { ResidualCache } from "../evaluation/residuals.ts";
import type { ValueOptions } from "../editing/values.ts";
import { statsHparams } from "../editing/hparams.ts";
import {
  computeEdits,
  editedLayers,
  type MethodConfig,
  methodConfig,
  type MethodName,
  METHODS,
  type Overrides,
  statsLayers,
  templateStartWords,
} from "../editing/methods.ts";
import {
  caseMeasurements,
  type CaseProbabilities,
  caseProbabilities,
  caseScores,
  type EditingCase,
  editingCase,
  type EditingProblem,
  problemRequest,
  problemRequests,
} from "../editing/problems.ts";
import { batchValueOptions, computeBatchEdits } from "../editing/memit.ts";
import { computeRomeAt, romeValueOptions } from "../editing/rome.ts";
import { type KeyStats, keyStats } from "../editing/stats.ts";
import {
  causalTracingSelector,
  integratedGradientsSelector,
  type LayerSelector,
  lgaSelector,
  scaledMlpWindow,
  type SelectionRequest,
  studyWindows,
} from "../localization/layer_selection.ts";
import {
  formatStandardScores,
  harmonicMean,
  meanStandardScores,
  type StandardBaseline,
  standardBaselines,
  type StandardScores,
} from "../evaluation/metrics.ts";
import { ProgressBar, type ProgressOptions } from "../output.ts";
import { knowsAnswers } from "../evaluation/recall.ts";
import {
  type Json,
  type ResultKey,
  resultKey,
  ResultStore,
  type Shard,
  shardItems,
  shardOf,
  type StoredResult,
} from "./store.ts";
import {
  type FactTrace,
  type NoiseLevel,
  type StateKind,
  subjectNoiseLevel,
  traceFacts,
  windowLayers,
} from "../localization/tracing.ts";
import { exists } from "../../engine/files.ts";
import {
  type Essence,
  essenceOf,
  type EssenceTexts,
  essenceTextsOf,
  type FluencyRun,
  generationFluency,
  unchangedEssence,
} from "../evaluation/drift.ts";
import { keptInStore, SharedValues, valueKeys } from "./shared_values.ts";
import { BlockProgress } from "./block_progress.ts";

// ------------------------------------------------------------------------------------------------
// The plan

/**
 * The sweep's editing methods: the engine's (editing/methods.ts METHODS, "ft" training `ftWindow` layers)
 * and "ft-5", Hase et al.'s FT-L over 5 layers ("Does Localization Inform Editing?", section 5:
 * constrained fine-tuning of the five layers around the edit layer, the window clipped at the first and
 * last layers as MEMIT's is; editing/hparams.ts divides FT-L's radius by the layers it trains).
 */
export const SWEEP_METHODS = [...METHODS, "ft-5"] as const;
/** One of SWEEP_METHODS. */
export type SweepMethod = typeof SWEEP_METHODS[number];
/** The layers "ft-5" trains. */
export const FT5_WINDOW = 5;

/** The engine's method a sweep method runs ("ft-5" is FT-L over its window). */
export function engineMethod(method: SweepMethod): MethodName {
  return method === "ft-5" ? "ft" : method;
}

/** The name a table gives a method, as the papers write it ("FT-L"; methodLabel adds the layers). */
export const METHOD_TITLES: Readonly<Record<SweepMethod, string>> = {
  "rome": "ROME",
  "r-rome": "R-ROME",
  "memit": "MEMIT",
  "emmet": "EMMET",
  "ft": "FT-L",
  "ft-5": "FT-L",
};

/** Per-fact localization measurements. */
export const LOCALIZATIONS = ["causal-tracing", "zeroing"] as const;
export type Localization = typeof LOCALIZATIONS[number];

/** Facts traced together at most (one batch group of tracing; a time budget stops between groups). */
const TRACE_GROUP = 8;

/** Layer-selection strategies, run once on the proxy facts. */
export const SELECTORS = ["causal-tracing", "integrated-gradients", "lga"] as const;
export type SelectorName = typeof SELECTORS[number];

/** Localization of the window-size study's traces: causal tracing of the MLP outputs with a window of
 *  `window` layers (the main "causal-tracing" records serve the window they were traced with). */
export const windowLocalization = (window: number) => `tracing-window:${window}`;

/** Key values of the records that are not edits. */
export const NONE = "none";
export const PROXY_SET = "proxy-set";
/** Localization of edit records: the layer is a cell of the sweep's layer grid. */
export const LAYER_GRID = "layer-grid";
/** Localization of the records of dataset cases the sample left out (their prompts do not fit the
 *  model), stored so that `sweep csv` and the report list them beside the results. */
export const SKIPPED = "skipped";
/** Localization of selection records: "select:" + the strategy. */
export const selectionLocalization = (s: SelectorName) => `select:${s}`;
/** Mass-editing records: fact MASS_SET, localization "mass:" + the number of facts edited at once. */
export const MASS_SET = "mass-set";
export const massLocalization = (n: number) => `mass:${n}`;
/** The mass-editing curve of the MEMIT paper: edits of 1, 10, 100, 1000 facts at once (capped at the
 *  test facts, which are then edited all at once too). */
export const MASS_SIZES = [1, 10, 100, 1000] as const;
export const MASS_METHODS = ["memit", "emmet"] as const;

/** A fact of the sweep: edited at every layer (proxy or test split), or only traced. */
export interface SweepFact {
  /** The dataset's case id, e.g. "counterfact:17". */
  id: string;
  recordIndex: number;
  case: EditingCase;
  split: "proxy" | "test" | "trace-only";
}

export interface SweepSettings {
  /** Seeds the fact sample and the tracing / editing noise. */
  seed: number;
  /** MLP (and attention) window of the traces; the residual stream is traced with window 1. */
  traceWindow: number;
  traceSamples: number;
  /** State kinds of causal tracing (the regressor uses "mlp"; the others feed the heatmaps). */
  traceKinds: StateKind[];
  /** Layers MEMIT spreads an edit over, centred on the sweep layer (clipped at the ends). */
  memitWindow: number;
  /** Layers FT-L trains, centred on the sweep layer. */
  ftWindow: number;
  /** Facts whose edits are computed together (ROME / R-ROME v*, MEMIT / EMMET z, at every layer). */
  batchSize: number;
  igSteps: number;
  /** Hyper-parameter overrides applied to every edit (e.g. fewer v* steps for speed). */
  overrides: Overrides;
  /** Essence and fluency of the edits (evaluation/drift.ts). */
  drift: DriftSettings;
}

/**
 * Essence (Hase et al.) and fluency (ROME) of the edits: generation is the costliest scoring there is on
 * a software adapter (one forward per new token), so they are measured on every `every`-th edited fact
 * of the seeded sample (at every layer, method and problem, so per-layer curves stay balanced), with
 * short texts. Each fact's draws are seeded by the sweep's seed and its record index (driftSeed).
 */
export interface DriftSettings {
  /** Essence samples per subject (Hase et al.: 5); 0: essence not measured. */
  essenceSamples: number;
  /** New tokens per essence sample. */
  essenceTokens: number;
  /** The case's first generation prompts whose generations' fluency is measured; 0: not measured. */
  fluencyPrompts: number;
  /** New tokens per fluency generation (ROME: 100 on GPT-2's 1024 positions). */
  fluencyTokens: number;
  /** top-k sampling (Hase et al. and ROME: 5). */
  topK: number;
  /** Measure every `every`-th edited fact (1: all of them; 0: none). */
  every: number;
}

/** The default: Hase et al.'s 5 essence samples and ROME's top-5, with short texts, on a quarter of the
 *  facts: essence and fluency on every edit added about 40% to a sweep of the embedded model on this
 *  machine's software adapter (2.3 s per edit) when each edit was applied and generated alone; scored
 *  under a block's virtual edits with cached generation, about a tenth (0.15 s per edit; bench/RESULTS.md). */
export const DEFAULT_DRIFT: DriftSettings = {
  essenceSamples: 5,
  essenceTokens: 20,
  fluencyPrompts: 5,
  fluencyTokens: 20,
  topK: 5,
  every: 4,
};

/** Whether the edited fact at `index` (in the sample's order, proxy facts first) is measured. */
export function driftMeasured(d: DriftSettings, index: number): boolean {
  return d.every > 0 && (d.essenceSamples > 0 || d.fluencyPrompts > 0) && index % d.every === 0;
}

/**
 * Each fact's place in the deal of facts to shards (fact at place i goes to shard i mod n): the edited
 * facts whose edits also measure essence and fluency (driftMeasured), then the other edited facts, then the
 * facts only traced, each in the sample's order. Measured facts cost about a third more than the others;
 * dealt among the edited facts in one turn they all went to shard 0 whenever n divided drift.every (the
 * default 4 with 2 processes: one shard ran ~15% longer than the other, bench/RESULTS.md).
 */
export function dealFacts(plan: Pick<SweepPlan, "facts" | "settings">): Map<string, number> {
  const edited = plan.facts.filter((f) => f.split !== "trace-only");
  const measured = new Set(edited.filter((_, i) => driftMeasured(plan.settings.drift, i)));
  const order = [
    ...edited.filter((f) => measured.has(f)),
    ...edited.filter((f) => !measured.has(f)),
    ...plan.facts.filter((f) => f.split === "trace-only"),
  ];
  return new Map(order.map((f, i) => [f.id, i]));
}

/** The seed of a fact's essence samples and fluency generations (before and after every edit). */
export function driftSeed(seed: number, recordIndex: number): number {
  return (seed * 1_000_003 + recordIndex) >>> 0;
}

export interface SweepPlan {
  /** The sweep's name, part of every result key. */
  name: string;
  facts: SweepFact[];
  layers: number[];
  methods: SweepMethod[];
  problems: EditingProblem[];
  localizations: Localization[];
  selectors: SelectorName[];
  settings: SweepSettings;
  /** Subjects whose token embeddings set the noise level (ROME: every known fact of the dataset);
   *  default: the plan's facts. */
  noiseSubjects?: string[];
  /** Dataset records the fact sample left out (FactSample.skipped), stored as SKIPPED records. */
  skipped?: SkippedRecord[];
  /** The window-size study: MLP windows (in layers, e.g. layer_selection.ts studyWindows) the edited facts
   *  are traced with too; a window equal to settings.traceWindow reuses the "causal-tracing" records. */
  windows?: number[];
  /** The mass-editing curve: these batch methods edit the first n test facts at once (error
   *  injection, at the method's default layers), for each n of massSizes(test facts). */
  massMethods?: (typeof MASS_METHODS)[number][];
}

/** A dataset record left out of a sweep, and why. */
export interface SkippedRecord {
  /** The case id, e.g. "counterfact:17". */
  id: string;
  /** recordLabel(): "FILE: record I (ID)". */
  label: string;
  reason: string;
}

/**
 * Facts per edit block, in the plan's order, for `facts` facts and blocks of at most `largest`: larger
 * blocks are larger batches (v* / z, FT-L, scoring) and fewer per-block passes (a study in blocks of 24
 * facts instead of 4: 19% less time, bench/RESULTS.md). One process runs blocks of `largest`. Several
 * processes taking blocks as each comes free (the study's --processes) end together only if the last
 * blocks are short, so then a block takes 1 / (2 * processes) of what is left (the processes end within
 * about that share of each other), at most `largest` and at least `smallest`.
 */
export function blockSizes(
  facts: number,
  largest: number,
  processes = 1,
  smallest = Math.min(4, largest),
): number[] {
  const sizes: number[] = [];
  for (let left = facts; left > 0;) {
    const share = processes > 1 ? Math.ceil(left / (2 * processes)) : largest;
    const size = Math.min(left, Math.max(smallest, Math.min(largest, share)));
    sizes.push(size);
    left -= size;
  }
  return sizes;
}

export function defaultSettings(nLayer: number, seed = 0): SweepSettings {
  return {
    seed,
    traceWindow: scaledMlpWindow(nLayer), // the one window rule of every command that traces
    traceSamples: 10,
    traceKinds: ["resid", "mlp", "attn"],
    memitWindow: 3,
    ftWindow: 1,
    batchSize: 8,
    igSteps: 20,
    overrides: {},
    drift: { ...DEFAULT_DRIFT },
  };
}

export type WorkItem =
  | {
    kind: "trace";
    key: ResultKey;
    fact: SweepFact;
    /** A Localization, or windowLocalization(window). */
    localization: string;
    /** The window-size study's MLP window; undefined: the main trace (settings.traceWindow, every kind). */
    window?: number;
  }
  | { kind: "select"; key: ResultKey; selector: SelectorName }
  | {
    kind: "edit";
    key: ResultKey;
    fact: SweepFact;
    method: SweepMethod;
    layer: number;
    problem: EditingProblem;
  }
  | { kind: "mass"; key: ResultKey; method: (typeof MASS_METHODS)[number]; facts: SweepFact[] };

type MassItem = Extract<WorkItem, { kind: "mass" }>;

/** The batch sizes of the mass-editing curve for `test` test facts: MASS_SIZES up to `test`, and `test`. */
export function massSizes(test: number): number[] {
  const sizes = MASS_SIZES.filter((n) => n <= test) as number[];
  return test > 0 && !sizes.includes(test) ? [...sizes, test] : sizes;
}

/** Every work item of the plan, in the order they run: traces (the window study's after the main ones),
 *  selections, edits, then mass edits. */
export function planItems(plan: SweepPlan): WorkItem[] {
  const sweep = plan.name;
  const items: WorkItem[] = [];
  const traceKey = (fact: SweepFact, localization: string): ResultKey => ({
    sweep,
    fact: fact.id,
    method: NONE,
    layer: null,
    problem: NONE,
    localization,
  });
  for (const localization of plan.localizations) {
    for (const fact of plan.facts) {
      items.push({ kind: "trace", key: traceKey(fact, localization), fact, localization });
    }
  }
  const edited = plan.facts.filter((f) => f.split !== "trace-only");
  for (const window of new Set(plan.windows ?? [])) {
    if (window === plan.settings.traceWindow && plan.localizations.includes("causal-tracing")) continue;
    const localization = windowLocalization(window);
    for (const fact of edited) {
      items.push({ kind: "trace", key: traceKey(fact, localization), fact, localization, window });
    }
  }
  for (const selector of plan.selectors) {
    items.push({
      kind: "select",
      key: {
        sweep,
        fact: PROXY_SET,
        method: NONE,
        layer: null,
        problem: NONE,
        localization: selectionLocalization(selector),
      },
      selector,
    });
  }
  for (const problem of plan.problems) {
    for (const method of plan.methods) {
      for (const layer of plan.layers) {
        for (const fact of edited) {
          items.push({
            kind: "edit",
            key: { sweep, fact: fact.id, method, layer, problem, localization: LAYER_GRID },
            fact,
            method,
            layer,
            problem,
          });
        }
      }
    }
  }
  const test = edited.filter((f) => f.split === "test");
  for (const method of plan.massMethods ?? []) {
    for (const n of massSizes(test.length)) {
      items.push({
        kind: "mass",
        key: {
          sweep,
          fact: MASS_SET,
          method,
          layer: null,
          problem: "error-injection",
          localization: massLocalization(n),
        },
        method,
        facts: test.slice(0, n),
      });
    }
  }
  return items;
}

// ------------------------------------------------------------------------------------------------
// Choosing facts

/** The prompt of a case with its subject filled in. */
export function filledPrompt(c: EditingCase): string {
  return c.prompt.replace("{}", c.subject);
}

export interface FactSample {
  /** Cases the model completes with the first token of the true object. */
  known: number;
  /** Their subjects (the set ROME's noise level is computed over). */
  knownSubjects: string[];
  candidates: number;
  /** Records left out because a prompt the sweep runs would not fit the model's positions. */
  skipped: SkippedRecord[];
  facts: SweepFact[];
}

/**
 * Per problem x method, the mean of Hase et al.'s scores over the sweep's edits and, beside them, the
 * field's standard metrics (metrics.ts STANDARD_METRICS; n/a for the problems they do not judge), then
 * essence and fluency over the edits they were measured on:
 *   "error-injection rome (18 edits): rewrite 0.912  paraphrase 0.403  neighborhood 0.977  overall 0.611 |
 *    ES 1.00  PS 0.56 ... | essence 0.950 (6 edits)  fluency 4.610 (unedited 4.650; 6 edits)"
 */
export function scoreSummary(results: Iterable<StoredResult>, sweep: string): string[] {
  const groups = new Map<string, StoredResult[]>();
  for (const r of results) {
    if (r.sweep !== sweep || r.localization !== LAYER_GRID) continue;
    const g = `${r.problem} ${r.method}`;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(r);
  }
  // The mean of a stored number over the rows that have it: metrics[key], or metrics[key][field].
  const values = (rows: StoredResult[], key: string, field?: string) =>
    rows.map((r) => r.metrics[key])
      .map((x) => (field && x !== null && typeof x === "object" && !Array.isArray(x) ? x[field] : x))
      .filter((x): x is number => typeof x === "number");
  const mean = (xs: number[]) => (xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3) : "n/a");
  return [...groups].map(([name, rows]) => {
    const hase = ["rewrite", "paraphrase", "neighborhood", "overall"].map((k) =>
      `${k} ${mean(values(rows, k))}`
    );
    const standard = rows.map((r) => r.metrics.standard).filter((x) => x !== null && typeof x === "object");
    const essence = values(rows, "essence", "score"), fluency = values(rows, "fluency", "post");
    return `${name} (${rows.length} edits): ${hase.join("  ")} | ` +
      (standard.length
        ? formatStandardScores(meanStandardScores(standard as unknown as StandardScores[]))
        : "standard metrics n/a (they compare a new object against the true one)") +
      ` | essence ${mean(essence)} (${essence.length} edits)  fluency ${mean(fluency)} ` +
      `(unedited ${mean(values(rows, "fluency", "pre"))}; ${fluency.length} edits)`;
  });
}

/** The lines that report a sample's skipped records (none when nothing was skipped). */
export function skippedReport(sample: FactSample): string[] {
  if (sample.skipped.length === 0) return [];
  return [
    `skipped ${sample.skipped.length} records whose prompts do not fit the model:`,
    ...sample.skipped.map((r) => `  ${r.label}: ${r.reason}`),
  ];
}

/**
 * Positions a context template can put before a prompt: the longest ROME/MEMIT template text plus
 * ". " (editing/keys.ts contextTemplates), re-tokenized.
 */
function contextPrefixTokens(model: Model): number {
  let longest = 0;
  for (const m of METHODS) {
    const h = methodConfig(model, m).hparams as { templates?: { lengths: [number, number][] } };
    for (const [length] of h.templates?.lengths ?? []) longest = Math.max(longest, length);
  }
  return longest + 2;
}

/** The most positions any sequence of this case needs: prompt (after a context prefix), paraphrases and
 *  neighbours, each followed by its longest target. */
function positionsNeeded(tok: Tokenizer, c: EditingCase, prefix: number): number {
  const prompt = filledPrompt(c);
  const length = (target: string) => targetIds(tok, prompt, target, { refuseUnknown: true }).length;
  const targets = Math.max(length(c.targetTrue), length(c.targetNew));
  const trueTarget = length(c.targetTrue);
  return Math.max(
    prefix + tok.encode(filledPrompt(c)).length + targets,
    ...c.paraphrases.map((p) => tok.encode(p).length + targets),
    ...c.neighbors.map((p) => tok.encode(p).length + trueTarget),
  );
}

/**
 * A seeded sample of the dataset's facts that the model knows (greedy next token = first token of
 * target_true after the prompt, the known-facts filter of ROME and Hase et al.): `edit` facts edited (the first
 * `proxy` of them, or ceil(proxyFraction * edit), form the proxy set, disjoint from the test facts: a fixed
 * count keeps the same proxy set when a study grows), then up to `traceOnly` more facts only traced.
 */
export async function sampleFacts(
  model: Model,
  tok: Tokenizer,
  datasetPath: string,
  o: { edit: number; traceOnly: number; seed: number } & ({ proxyFraction: number } | { proxy: number }),
): Promise<FactSample> {
  const { cases } = await loadDataset(datasetPath);
  // A record the sweep cannot use at all (no template, a target outside the vocabulary) is an error
  // naming it; one whose prompts do not fit the model is skipped and reported (a longer model could).
  const positions = model.config.nPositions, prefix = contextPrefixTokens(model);
  const skipped: SkippedRecord[] = [];
  const candidates: Omit<SweepFact, "split">[] = [];
  for (const c of cases) {
    const ec = checkRecord(datasetPath, c, () => editingCase(c));
    const needed = checkRecord(datasetPath, c, () => positionsNeeded(tok, ec, prefix));
    if (needed > positions) {
      skipped.push({
        id: c.id,
        label: recordLabel(datasetPath, c),
        reason: `needs ${needed} positions, the model has ${positions}`,
      });
    } else candidates.push({ id: c.id, recordIndex: c.recordIndex, case: ec });
  }
  const knows = await knowsAnswers(
    model,
    tok,
    candidates.map((c) => ({ prompt: filledPrompt(c.case), answer: c.case.targetTrue })),
  );
  const known = candidates.filter((_, i) => knows[i]);
  // Fisher-Yates with the project's PRNG: the same seed picks the same facts on every machine.
  const random = mulberry32(o.seed);
  const order = [...known];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const edited = order.slice(0, o.edit);
  const proxy = edited.length === 0
    ? 0
    : "proxy" in o
    ? Math.min(o.proxy, edited.length - 1)
    : Math.max(1, Math.ceil(o.proxyFraction * edited.length));
  const traced = order.slice(o.edit, o.edit + o.traceOnly);
  return {
    known: known.length,
    knownSubjects: known.map((c) => c.case.subject),
    candidates: candidates.length,
    skipped,
    facts: [
      ...edited.map((c, i): SweepFact => ({ ...c, split: i < proxy ? "proxy" : "test" })),
      ...traced.map((c): SweepFact => ({ ...c, split: "trace-only" })),
    ],
  };
}

// ------------------------------------------------------------------------------------------------
// Run metadata (stored with every result)

async function fileSha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

export interface RunMeta {
  model: { [key: string]: Json };
  dataset: { [key: string]: Json };
  adapter: { [key: string]: Json };
}

/** What identifies the model (folder, shape, weights hash), the dataset file and the GPU adapter. */
export async function runMeta(model: Model, modelDir: string, datasetPath: string): Promise<RunMeta> {
  const weights = [`${modelDir}/model.safetensors`, `${modelDir}/model.safetensors.index.json`];
  const weightsFile = (await exists(weights[0])) ? weights[0] : weights[1];
  const c = model.config;
  return {
    model: {
      name: basename(modelDir),
      family: c.family,
      path: modelDir,
      weightsSha256: await fileSha256(weightsFile),
      nLayer: c.nLayer,
      nEmbd: c.nEmbd,
      nHead: c.nHead,
      vocabSize: c.vocabSize,
      nPositions: c.nPositions,
    },
    dataset: { name: basename(datasetPath), path: datasetPath, sha256: await fileSha256(datasetPath) },
    adapter: { ...model.gpu.info },
  };
}

/** A JSON value with every non-finite number (NaN: an undefined fraction) turned into null. */
export function jsonSafe(value: unknown): Json {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<number>, (v) => jsonSafe(v));
  if (typeof value === "object") {
    const out: { [key: string]: Json } = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (v !== undefined) out[k] = jsonSafe(v);
    }
    return out;
  }
  throw new Error(`jsonSafe: cannot store a ${typeof value}`);
}

// ------------------------------------------------------------------------------------------------
// Running

export interface SweepContext {
  model: Model;
  tok: Tokenizer;
  store: ResultStore;
  meta: RunMeta;
  /** Text for key statistics and context templates (the model's corpus.txt); null if none. */
  corpus: string | null;
  statsDir?: string;
  /** Informational lines (stdout). */
  log?: (line: string) => void;
  /** The progress bar (output.ts ProgressBar, on stderr): its label (default: sweep "NAME") and options. */
  progress?: ProgressOptions & { label?: string };
}

export interface SweepSummary {
  total: number;
  /** Items of this shard already stored when the run started. */
  skipped: number;
  written: number;
  seconds: number;
  /** The deadline passed before every item was done (run again to continue). */
  stopped: boolean;
  /** Requests whose v* / z were optimised, and those that reused another method's (shared_values.ts). */
  values: { optimised: number; reused: number };
}

/** The layers whose key statistics the plan's edits and mass edits read. */
export function planStatsLayers(model: Model, plan: SweepPlan): Set<number> {
  const layers = new Set<number>();
  for (const method of plan.methods) {
    for (const layer of plan.layers) {
      for (const l of statsLayers(configFor(model, plan, method, layer))) layers.add(l);
    }
  }
  for (const method of plan.massMethods ?? []) {
    for (const l of statsLayers(methodConfig(model, method, plan.settings.overrides))) layers.add(l);
  }
  return layers;
}

/** The key statistics of `layers` as the sweep reads them (shipped, cached or computed: keyStats). */
export async function sweepKeyStats(
  ctx: SweepContext,
  plan: SweepPlan,
  layers: Set<number>,
  methods: string[],
  onProgress?: (keys: number, total: number) => void,
): Promise<Map<number, KeyStats>> {
  if (layers.size === 0) return new Map<number, KeyStats>();
  if (!ctx.corpus) {
    throw new Error(`sweep "${plan.name}": ${methods.join(", ")} need key statistics; give a corpus`);
  }
  return await keyStats(ctx.model, ctx.tok, {
    corpus: ctx.corpus,
    layers: [...layers].sort((a, b) => a - b),
    samples: statsHparams(ctx.model.config).samples,
    cacheDir: ctx.statsDir,
    log: ctx.log,
    onProgress,
  });
}

/** The layers `method` edits for the sweep layer `layer`. */
export function methodLayers(plan: SweepPlan, method: SweepMethod, layer: number, nLayer: number): number[] {
  const window = method === "memit"
    ? plan.settings.memitWindow
    : method === "ft"
    ? plan.settings.ftWindow
    : method === "ft-5"
    ? FT5_WINDOW
    : 1;
  const [from, to] = windowLayers(layer, window, nLayer);
  return Array.from({ length: to - from }, (_, i) => from + i);
}

function configFor(model: Model, plan: SweepPlan, method: SweepMethod, layer: number): MethodConfig {
  return methodConfig(model, engineMethod(method), {
    ...plan.settings.overrides,
    layers: methodLayers(plan, method, layer, model.nLayer),
  });
}

function selectorFor(plan: SweepPlan, name: SelectorName, noise: NoiseLevel): LayerSelector {
  const s = plan.settings;
  switch (name) {
    case "causal-tracing":
      return causalTracingSelector({
        trace: { window: s.traceWindow, samples: s.traceSamples, seed: s.seed + 1, noise: noise.level },
      });
    case "integrated-gradients":
      return integratedGradientsSelector({ steps: s.igSteps });
    case "lga":
      return lgaSelector();
  }
}

/**
 * Runs every item of the plan (of `shard`, if given) that the store does not hold yet, writing each
 * result as soon as it exists. With a `deadline` (a performance.now() time in ms) no new work starts
 * after it; the sweep resumes from there when run again. `applyToScore` scores each edit by writing it
 * into the weights, scoring and undoing it, one at a time: the reference for the batched virtual scoring
 * (the same results to float tolerance, tests/sweep_test.ts).
 */
export async function runSweep(
  ctx: SweepContext,
  plan: SweepPlan,
  o: { shard?: Shard; claims?: string; deadline?: number; force?: boolean; applyToScore?: boolean } = {},
): Promise<SweepSummary> {
  const { model, tok, store } = ctx;
  const log = ctx.log ?? (() => {});
  checkPlan(plan, model.nLayer);
  const noiseSubjects = plan.noiseSubjects ?? plan.facts.map((f) => f.case.subject);
  const noise = noiseSubjects.length ? await subjectNoiseLevel(model, tok, noiseSubjects) : null;
  const differences = store.checkSettings(plan.name, settingsFingerprint(plan, ctx.meta, noise), o.force);
  if (differences.length) {
    log(`--force: this store now holds results computed under other settings (${differences.join("; ")})`);
  }
  const started = performance.now();
  let stopped = false;
  const outOfTime = () => (stopped ||= o.deadline !== undefined && performance.now() > o.deadline);
  const all = planItems(plan);
  const dealt = dealFacts(plan);
  // With `claims`, every edit is this process's to claim (by blocks, below); the other items follow the shard.
  const mine = o.shard
    ? shardItems(
      all,
      o.shard,
      (it, count) =>
        it.kind === "edit" && o.claims !== undefined
          ? o.shard!.index
          : it.kind === "edit" || it.kind === "trace"
          ? dealt.get(it.fact.id)! % count
          : shardOf(resultKey(it.key), count),
    )
    : all;
  const pending = mine.filter((it) => !store.has(it.key));
  // The bar counts this shard's results; those stored before count as done, not towards the ETA.
  const already = mine.length - pending.length;
  const bar = pending.length
    ? new ProgressBar(ctx.progress?.label ?? `sweep "${plan.name}"`, mine.length, {
      ...ctx.progress,
      already,
    })
    : null;
  let done = already, written = 0;
  // What the bar counts beyond the stored results while edit blocks run (block_progress.ts; made with the
  // blocks, below).
  let blockProgress: BlockProgress | null = null;
  const claimKey = (b: number) => `${plan.name} edit block ${b}`;
  const show = (what: string) => {
    bar?.update(Math.min(mine.length, done + Math.floor(blockProgress?.credit(done) ?? 0)), what);
  };
  const stepped = (side: string, what: string) => (step: number, steps: number) => {
    blockProgress?.step(side, step / Math.max(1, steps));
    show(`${what}: step ${step}/${steps}`);
  };
  const put = (key: ResultKey, record: Omit<Parameters<ResultStore["put"]>[0], keyof ResultKey>) => {
    if (store.put({ ...key, ...record })) written++;
    done++;
  };
  // The records the sample left out, stored (not work items: no progress, no shard) so the CSV and the
  // report list them. Every shard writes the same rows (no adapter, no time), so merging keeps one each.
  for (const r of plan.skipped ?? []) {
    store.put({
      sweep: plan.name,
      fact: r.id,
      method: NONE,
      layer: null,
      problem: NONE,
      localization: SKIPPED,
      metrics: { record: r.label, reason: r.reason },
      model: ctx.meta.model,
      dataset: { ...ctx.meta.dataset, caseId: r.id },
    });
  }
  const datasetOf = (fact: SweepFact) => ({
    ...ctx.meta.dataset,
    caseId: fact.id,
    recordIndex: fact.recordIndex,
    split: fact.split,
  });
  log(
    `sweep "${plan.name}": ${mine.length} results${
      o.shard ? ` in shard ${o.shard.index}/${o.shard.count}` : ""
    }, ` +
      `${mine.length - pending.length} already stored, ${pending.length} to run`,
  );
  show("starting");

  // Localization measurements: consecutive facts of one localization and window traced together (shared
  // batches, tracing.ts traceChunks), each stored with its share of its group's time; groups of
  // TRACE_GROUP facts, so that a time budget stops between them.
  const s = plan.settings;
  const traceItems = pending.filter((item) => item.kind === "trace");
  for (let at = 0; at < traceItems.length && !outOfTime();) {
    const localization = traceItems[at].localization;
    let end = at + 1;
    while (
      end < traceItems.length && end - at < TRACE_GROUP && traceItems[end].localization === localization &&
      traceItems[end].window === traceItems[at].window
    ) end++;
    const group = traceItems.slice(at, end);
    at = end;
    const t0 = performance.now();
    const zero = localization === "zeroing";
    // The window study traces only the MLP outputs (its regressor), with its own window.
    const window = group[0].window ?? s.traceWindow;
    const traces = await traceFacts(
      model,
      tok,
      group.map(({ fact }) => ({
        prompt: filledPrompt(fact.case),
        subject: fact.case.subject,
        target: fact.case.targetTrue,
      })),
      {
        method: zero ? "zero" : "noise",
        kinds: zero || group[0].window !== undefined ? ["mlp"] : s.traceKinds,
        window: { resid: 1, mlp: window, attn: window },
        samples: s.traceSamples,
        seed: s.seed + 1,
        noise: noise!.level,
      },
    );
    const seconds = (performance.now() - t0) / 1000 / group.length;
    group.forEach((item, i) => {
      const trace = traces[i];
      put(item.key, {
        metrics: traceMetrics(trace),
        hparams: jsonSafe({
          seed: s.seed,
          window,
          samples: s.traceSamples,
          kinds: trace.grids.map((g) => g.kind),
          noise: zero ? null : noise,
        }) as { [k: string]: Json },
        model: ctx.meta.model,
        dataset: datasetOf(item.fact),
        adapter: ctx.meta.adapter,
        timings: { trace: seconds },
      });
      show(`traced ${item.fact.id} (${localization})`);
    });
    // Prompts differ in length, so pooled buffers of one group rarely fit the next: free them.
    model.gpu.trimPool();
  }

  // Layer selection on the proxy facts.
  const proxy = plan.facts.filter((f) => f.split === "proxy");
  for (const item of pending) {
    if (item.kind !== "select") continue;
    if (outOfTime()) break;
    if (proxy.length === 0) throw new Error(`sweep "${plan.name}": layer selection needs proxy facts`);
    const requests: SelectionRequest[] = proxy.map((f) => ({
      prompt: filledPrompt(f.case),
      subject: f.case.subject,
      targetTrue: f.case.targetTrue,
      targetNew: f.case.targetNew,
    }));
    const selection = await selectorFor(plan, item.selector, noise!).select(model, tok, requests);
    put(item.key, {
      metrics: jsonSafe({
        layers: selection.layers,
        scores: selection.scores,
        proxy: proxy.map((f) => f.id),
      }) as {
        [k: string]: Json;
      },
      hparams: jsonSafe({
        seed: s.seed,
        window: s.traceWindow,
        samples: s.traceSamples,
        igSteps: s.igSteps,
        noise: item.selector === "causal-tracing" ? noise : null,
      }) as { [k: string]: Json },
      model: ctx.meta.model,
      dataset: { ...ctx.meta.dataset, split: "proxy", facts: proxy.length },
      adapter: ctx.meta.adapter,
      timings: { select: selection.seconds },
    });
    show(`layer selection: ${item.selector} chose ${selection.layers.join(",")}`);
  }

  // Key statistics of the layers an edit needs (cached on disk by keyStats).
  const statsFor = (layers: Set<number>, methods: string[]) =>
    sweepKeyStats(ctx, plan, layers, methods, (keys, total) => show(`key statistics ${keys}/${total} keys`));
  const subjectNoise: SubjectNoise = { seed: s.seed + 1, scale: noise?.level ?? 0 };
  const valueCounts = { optimised: 0, reused: 0 };

  // The mass-editing curve's z (error injection of the test facts at each mass method's default layers):
  // the sweep's own MEMIT / EMMET edits compute the same z where a layer window and its options agree (at
  // the defaults, EMMET's at the default layer), in whichever process edits the fact. Those z are kept in
  // the store (KeptValues) as they are computed, and the curve, in whichever process runs it, takes them
  // from there instead of optimising them again; any it does not find it optimises itself.
  const massItems = all.filter((it): it is MassItem => it.kind === "mass");
  const massRequests = new Map<string, EditRequest>();
  const massCall = async (item: MassItem, startWords: string[] | undefined) => {
    const mc = methodConfig(model, item.method, s.overrides);
    for (const f of item.facts) {
      if (massRequests.has(f.id)) continue;
      massRequests.set(f.id, await problemRequest(model, tok, f.case, "error-injection", subjectNoise));
    }
    const requests = item.facts.map((f) => massRequests.get(f.id)!);
    return { mc, requests, o: await batchValueOptions(model, tok, mc.hparams, startWords) };
  };
  // Every mass item not stored yet: its z requests and options, computed once here (for the keys the
  // sweep keeps) and used again by the curve below.
  const unstoredMass = massItems.filter((it) => !store.has(it.key));
  const massStartWords = unstoredMass.length ? await templateStartWords(tok, ctx.corpus) : undefined;
  const massCalls = new Map<MassItem, Awaited<ReturnType<typeof massCall>>>();
  for (const item of unstoredMass) massCalls.set(item, await massCall(item, massStartWords));
  const wanted = new Set([...massCalls.values()].flatMap(({ requests, o }) => valueKeys(requests, o)));
  const keptValues = wanted.size ? keptInStore(store, (key) => wanted.has(key)) : undefined;

  // Edits.
  const edits = pending.filter((it): it is Extract<WorkItem, { kind: "edit" }> => it.kind === "edit");
  if (edits.length > 0 && !outOfTime()) {
    const neededStats = new Set<number>();
    for (const it of edits) {
      for (const l of statsLayers(configFor(model, plan, it.method, it.layer))) neededStats.add(l);
    }
    const stats = await statsFor(neededStats, [...new Set(edits.map((e) => e.method))]);
    const startWords = await templateStartWords(tok, ctx.corpus);
    const requests = new Map<string, EditRequest>();
    const pres = new Map<string, CaseProbabilities>();
    // The unedited model's standard baseline (metrics.ts) of each fact and problem, or null where the
    // standard metrics do not apply.
    const standards = new Map<string, StandardBaseline | null>();
    const prepare = async (group: typeof edits) => {
      // Each (fact, problem) once, in batched passes: its request (a tracing reversal's noised
      // prediction), its standard metrics' locality reference and its probabilities before the edit.
      const missing = [
        ...new Map(
          group.filter((it) => !pres.has(`${it.fact.id}|${it.problem}`))
            .map((it) => [`${it.fact.id}|${it.problem}`, it]),
        ).values(),
      ];
      const posed = await problemRequests(
        model,
        tok,
        missing.map((it) => ({ c: it.fact.case, problem: it.problem })),
        subjectNoise,
      );
      const baselines = await standardBaselines(
        model,
        tok,
        missing.map((it, i) => ({ c: it.fact.case, request: posed[i] })),
      );
      missing.forEach((it, i) => {
        requests.set(`${it.fact.id}|${it.problem}`, posed[i]);
        standards.set(`${it.fact.id}|${it.problem}`, baselines[i]);
      });
      const probs = await caseProbabilities(
        model,
        tok,
        missing.map((it) => ({ c: it.fact.case, request: requests.get(`${it.fact.id}|${it.problem}`)! })),
      );
      missing.forEach((it, i) => pres.set(`${it.fact.id}|${it.problem}`, probs[i]));
    };

    // Essence texts and pre-edit fluency of the measured facts, once per fact (the unedited model).
    const edited = plan.facts.filter((f) => f.split !== "trace-only");
    const measured = new Set(edited.filter((_, i) => driftMeasured(s.drift, i)).map((f) => f.id));
    // The fluency generations' length and top-k, before and after every edit.
    const fluencySampling = { tokens: s.drift.fluencyTokens, topK: s.drift.topK };
    const drifts = new Map<string, DriftBefore>();
    // The unedited model's essence texts and fluency of the measured facts among `facts` not measured yet,
    // all of them together (each fact's draws from its own stream: what it gets alone).
    const measureBefore = async (facts: SweepFact[]) => {
      const todo = [
        ...new Map(facts.filter((f) => measured.has(f.id) && !drifts.has(f.id)).map((f) => [f.id, f]))
          .values(),
      ];
      if (todo.length === 0) return;
      const seeds = todo.map((f) => driftSeed(s.seed, f.recordIndex));
      const prompts = todo.map((f) => (f.case.generationPrompts ?? []).slice(0, s.drift.fluencyPrompts));
      const essences = s.drift.essenceSamples > 0
        ? await essenceTextsOf(
          model,
          tok,
          todo.map((f, i) => ({ subject: f.case.subject, seed: seeds[i] })),
          { topK: s.drift.topK, samples: s.drift.essenceSamples, tokens: s.drift.essenceTokens },
        )
        : null;
      const generated = todo.flatMap((_, i) => (prompts[i].length ? [i] : []));
      const fluencies = generated.length
        ? await generationFluency(
          model,
          tok,
          generated.map((i) => ({ prompts: prompts[i], seed: seeds[i] })),
          fluencySampling,
        )
        : [];
      todo.forEach((f, i) => {
        const k = generated.indexOf(i);
        drifts.set(f.id, {
          essence: essences ? essences[i] : null,
          prompts: prompts[i],
          seed: seeds[i],
          fluency: k === -1 ? null : fluencies[k],
        });
      });
    };

    // Blocks of up to `batchSize` facts (blockSizes), each through every (problem, method, layer): a sweep
    // stopped early (killed, or out of time) holds every condition for fewer facts, not some conditions
    // for all. With `claims` the blocks are the plan's, whatever is stored yet (so a block's batches, and
    // its records, are the same whichever process runs it, and the same as one process's), and each
    // process runs those it claims first.
    const factOrder = [
      ...new Set(
        (o.claims !== undefined ? mine.filter((it) => it.kind === "edit") : edits).map((e) => e.fact.id),
      ),
    ];
    const blocks: (typeof edits)[][] = [];
    let b = 0;
    const claimants = o.claims !== undefined ? o.shard?.count ?? 1 : 1;
    for (const size of blockSizes(factOrder.length, s.batchSize, claimants)) {
      const chunks: (typeof edits)[] = [];
      blocks.push(chunks);
      const block = new Set(factOrder.slice(b, b += size));
      const groups = new Map<string, typeof edits>();
      for (const it of edits) {
        if (!block.has(it.fact.id)) continue;
        // Every method: one group over every layer, its edits (facts x layers) computed together (ROME's
        // v* / MEMIT's z batches layer by layer, FT-L's edits in batches of one layer window).
        const g = `${it.problem}|${it.method}`;
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g)!.push(it);
      }
      chunks.push(...groups.values());
    }
    const progress = blockProgress = new BlockProgress(
      blocks.map((chunks) => chunks.flat().map((it) => resultKey(it.key))),
      o.claims === undefined ? null : {
        claimed: (k) => store.claimed(o.claims!, claimKey(k)),
        stored: (key) => store.has(key),
      },
    );
    // The value optimisation a low-rank part asks for (null for FT-L): ROME / R-ROME's v* at the MLP output
    // of each edit's layer, with the options computeRomeAt builds, or MEMIT / EMMET's z at the block output
    // of each window's last layer.
    const valueCall = async (part: typeof edits) => {
      const first = configFor(model, plan, part[0].method, part[0].layer);
      if (first.method === "ft") return null;
      if (first.method === "rome" || first.method === "r-rome") {
        return await romeValueOptions(model, tok, first.hparams, part.map((it) => it.layer), startWords);
      }
      const layers = part.map((it) => editedLayers(configFor(model, plan, part[0].method, it.layer)).at(-1)!);
      return { ...await batchValueOptions(model, tok, first.hparams, startWords), layers };
    };
    // FT-L's edits of a block, trained ahead, by item key (each edit's info.seconds: its share of its
    // batch's training time).
    type Trained = Map<string, Edit>;
    const ftJob = (it: (typeof edits)[number]) => {
      const mc = configFor(model, plan, it.method, it.layer);
      if (mc.method !== "ft") throw new Error(`sweep: ${it.method} is not FT-L`);
      return { requests: [requests.get(`${it.fact.id}|${it.problem}`)!], hp: mc.hparams };
    };
    const trainFt = async (items: typeof edits, trained: Trained) => {
      const computed = await computeFtBatch(
        model,
        tok,
        items.map(ftJob),
        { onProgress: stepped("ft", "the block's FT-L") },
      );
      items.forEach((it, i) => trained.set(resultKey(it.key), computed[i]));
    };
    // The block's v* / z ahead of its parts, one optimisation per set of options: a part's batches hold
    // one layer's requests of one problem (4 in the study's blocks of 4 facts); together, every problem's
    // (v* of 8 facts x 6 layers: 0.67 s per request, of 32 facts: 0.45 s on the software adapter). Its
    // FT-L edits likewise: every problem's at one layer window in one batch.
    const prefetch = async (chunks: (typeof edits)[], values: SharedValues, trained: Trained) => {
      const calls: { requests: EditRequest[]; o: ValueOptions }[] = [];
      const ft: typeof edits = [];
      await prepare(chunks.flat());
      for (const part of chunks) {
        if (engineMethod(part[0].method) === "ft") ft.push(...part);
        const o = await valueCall(part);
        if (o) calls.push({ requests: part.map((it) => requests.get(`${it.fact.id}|${it.problem}`)!), o });
      }
      // The v*/z optimisations and the FT-L training are independent: they run side by side, so that each
      // one's readback waits (engine/gpu.ts sideBySide) overlap the other's steps. Each side is charged its
      // own span scaled so that the two add up to the wall time, as computeFtBatch charges its chunks.
      const started = performance.now();
      const spans = [0, 0];
      const timed = async <T>(side: number, run: () => Promise<T>): Promise<T> => {
        const t0 = performance.now();
        try {
          return await run();
        } finally {
          spans[side] = (performance.now() - t0) / 1000;
        }
      };
      if (calls.length) progress.step("values", 0);
      if (ft.length) progress.step("ft", 0);
      const [optimised, training] = await Promise.allSettled([
        timed(0, () => values.prefetch(model, tok, calls, stepped("values", "the block's v*/z"))),
        timed(1, async () => ft.length ? await trainFt(ft, trained) : undefined),
      ]);
      for (const side of [optimised, training]) if (side.status === "rejected") throw side.reason;
      const share = (performance.now() - started) / 1000 / Math.max(1e-9, spans[0] + spans[1]);
      values.scaleSeconds((optimised as PromiseFulfilledResult<string[]>).value, share);
      for (const it of ft) {
        const info = trained.get(resultKey(it.key))!.info;
        info.seconds = (info.seconds as number) * share;
      }
    };
    // `values`: the block's v* / z optimisations, shared between the methods that compute the same ones.
    // A block's deferred essence and fluency in one: every measured edit's essence texts scored and its
    // generation prompts generated under its own virtual edit (each fact's fluency with its own stream of
    // draws, the same draws as alone), then the parts' records are stored; each measured edit's drift
    // time gets an equal share.
    // The block's unedited residuals of the sequences it scores and reads keys from (evaluation/residuals.ts):
    // every fact's prompts are scored under each method, problem and layer, each pass starting at its
    // edit's lowest edited block (a key read at the layer it reads). Set for the block being run.
    let blockResiduals: ResidualCache | undefined;
    const flushDrift = async (queue: DriftQueue) => {
      const entries = queue.entries.splice(0);
      if (entries.length === 0) return;
      const t0 = performance.now();
      const set = new VirtualEditSet(model, entries.flatMap((e) => e.edits), blockResiduals);
      let essences: Essence[], fluencies: number[];
      const firsts = entries.map((_, k) => entries.slice(0, k).reduce((n, e) => n + e.edits.length, 0));
      const items = <T>(pick: (e: DriftQueue["entries"][number]) => (T | null)[]) =>
        entries.flatMap((e, k) =>
          pick(e).flatMap((x, i) => (x === null ? [] : [{ x, edit: firsts[k] + i }]))
        );
      const texts = items((e) => e.essence), runs = items((e) => e.runs);
      try {
        const under = (list: { edit: number }[]) => ({ edits: set, itemEdit: list.map((x) => x.edit) });
        essences = await essenceOf(model, texts.map((t) => t.x), under(texts));
        fluencies = await generationFluency(
          model,
          tok,
          runs.map((r) => r.x),
          fluencySampling,
          under(runs),
          FLUENCY_BATCH,
        );
      } finally {
        set.release();
      }
      const essenceOfEdit = new Map(texts.map((t, i) => [t.edit, essences[i]]));
      const fluencyOfEdit = new Map(runs.map((r, i) => [r.edit, fluencies[i]]));
      const each = (performance.now() - t0) / 1000 / set.edits.length;
      entries.forEach((e, k) => {
        const at = e.edits.map((_, i) => firsts[k] + i);
        e.done(
          at.map((x) => essenceOfEdit.get(x) ?? null),
          at.map((x) => fluencyOfEdit.get(x) ?? null),
          each,
        );
      });
    };
    const runEdits = async (
      part: typeof edits,
      values: SharedValues,
      trained: Trained,
      driftQueue: DriftQueue,
    ) => {
      const { method, problem } = part[0];
      const layers = [...new Set(part.map((it) => it.layer))];
      await prepare(part);
      const reqs = part.map((it) => requests.get(`${it.fact.id}|${it.problem}`)!);
      const t0 = performance.now();
      const first = configFor(model, plan, method, part[0].layer);
      // The bar's note follows the value optimisation, the long part of a block's edits.
      const onProgress = (step: number, steps: number) =>
        show(`${problem} ${method} layers ${layers.join(",")}: v*/z step ${step}/${steps}`);
      let computed: Edit[];
      if (first.method === "rome" || first.method === "r-rome") {
        computed = await computeRomeAt(model, tok, reqs, part.map((it) => it.layer), stats, first.hparams, {
          variant: first.method,
          startWords,
          optimise: (m, t, r, vo) => values.optimise(m, t, r, { ...vo, onProgress }),
          residuals: blockResiduals,
        });
      } else if (first.method === "memit" || first.method === "emmet") {
        // Every fact's z in one batch (each at its window's last layer), then every fact's own edit
        // together (memit.ts computeBatchEdits).
        const zs = await values.optimise(model, tok, reqs, { ...(await valueCall(part))!, onProgress });
        const jobs = part.map((it, j) => {
          const mc = configFor(model, plan, method, it.layer);
          if (mc.method !== first.method) throw new Error(`sweep: ${mc.method} in a ${first.method} part`);
          return { requests: [reqs[j]], hp: mc.hparams, values: [zs[j]] };
        });
        computed = await computeBatchEdits(model, tok, first.method, jobs, stats, {
          startWords,
          residuals: blockResiduals,
        });
      } else {
        // FT-L: trained ahead with the block (a part retried after a kill trains its own edits).
        const missing = part.filter((it) => !trained.has(resultKey(it.key)));
        if (missing.length) await trainFt(missing, trained);
        computed = part.map((it) => trained.get(resultKey(it.key))!);
      }
      // Per edit, the part's time: a v* / z optimisation shared between methods is counted in the time of
      // the method that computed it (the first in the plan), and the others' times leave it out
      // (timings.valuesReused says which edits reused one); an FT-L edit's is its share of its batch's.
      const ft = engineMethod(method) === "ft";
      const reused = ft ? part.map(() => false) : values.lastReused;
      const prefetched = ft ? computed.map((e) => e.info.seconds as number) : values.lastPrefetchSeconds;
      const editSeconds = ft ? 0 : (performance.now() - t0) / 1000 / part.length;
      // Scoring: Hase et al.'s probabilities, the field's standard metrics (where they apply) and, on the
      // measured facts, essence and fluency. Every edit of the part at once, each prompt under its own
      // virtual edit, in batched passes; o.applyToScore applies, scores and undoes each edit through the
      // same functions.
      const pairs = part.map((it, j) => ({ c: it.fact.case, request: reqs[j] }));
      const baselines = part.map((it) => standards.get(`${it.fact.id}|${it.problem}`)!);
      // The unedited model's measurements of the measured facts, before any edit is applied.
      const befores: (DriftBefore | null)[] = [];
      await measureBefore(part.map((it) => it.fact));
      for (const it of part) befores.push(measured.has(it.fact.id) ? drifts.get(it.fact.id)! : null);
      const virtual = !o.applyToScore;
      const posts: CaseProbabilities[] = [];
      const standard: (StandardScores | null)[] = part.map(() => null);
      const essence: (Essence | null)[] = part.map(() => null);
      const fluency: (number | null)[] = part.map(() => null);
      const seconds = { score: 0, drift: 0 };
      // Scores edits js of the part: on the model as it is (with one of them applied), or with `set`,
      // edit j's prompts under virtual edit j of the set (js then holds every edit of the part).
      const scoreEdits = async (js: number[], set?: VirtualEditSet) => {
        let t = performance.now();
        const lap = (what: keyof typeof seconds) => {
          seconds[what] += (performance.now() - t) / 1000;
          t = performance.now();
        };
        // Hase et al.'s probabilities and the standard metrics, in one call.
        const measured = await caseMeasurements(
          model,
          tok,
          js.map((j) => pairs[j]),
          js.map((j) => baselines[j]),
          set,
        );
        posts.push(...measured.probabilities);
        js.forEach((j, i) => standard[j] = measured.standard[i]);
        lap("score");
        if (set) {
          // Under virtual edits, essence and fluency wait for the block's (flushDrift), except an edit's
          // that changes no weight: the model after it is the unedited one, whose essence texts' perplexity
          // and fluency (the same prompts and draws) were measured before any edit.
          for (const j of js) {
            const before = befores[j];
            if (before === null) continue;
            if (set.acting(j) !== -1) {
              deferred.push(j);
              continue;
            }
            essence[j] = before.essence && unchangedEssence(before.essence);
            fluency[j] = before.fluency;
          }
          return;
        }
        const ess = js.filter((j) => befores[j]?.essence);
        const essences = await essenceOf(model, ess.map((j) => befores[j]!.essence!));
        ess.forEach((j, i) => essence[j] = essences[i]);
        const flu = js.filter((j) => befores[j] && befores[j]!.fluency !== null);
        const runs = flu.map((j) => ({ prompts: befores[j]!.prompts, seed: befores[j]!.seed }));
        const fluencies = await generationFluency(model, tok, runs, fluencySampling);
        flu.forEach((j, i) => fluency[j] = fluencies[i]);
        lap("drift");
      };
      const deferred: number[] = [];
      const driftShare: number[] = part.map(() => 0);
      if (virtual) {
        const set = new VirtualEditSet(model, computed, blockResiduals);
        try {
          await scoreEdits(part.map((_, j) => j), set);
        } finally {
          set.release();
        }
      } else {
        for (const j of part.keys()) {
          const applied = await applyEdit(model, computed[j]);
          try {
            await scoreEdits([j]);
          } finally {
            applied.undo();
          }
        }
      }
      const driftMeasuredEdits = befores.filter((b) => b !== null).length;
      const putRecords = () => {
        for (const [j, it] of part.entries()) {
          const mc = configFor(model, plan, method, it.layer);
          const pre = pres.get(`${it.fact.id}|${it.problem}`)!;
          const post = posts[j], before = befores[j];
          const scores = caseScores(reqs[j], pre, post);
          const parts = [scores.rewrite, scores.paraphrase, scores.neighborhood].filter((x) =>
            !Number.isNaN(x)
          );
          put(it.key, {
            metrics: jsonSafe({
              ...scores,
              standard: standard[j],
              // Hase et al.'s essence and their four-way overall score (target_score_v2), ROME's fluency
              // after the edit and of the unedited model with the same draws; null where not measured.
              essence: essence[j],
              overallEssence: essence[j] ? harmonicMean([...parts, essence[j]!.score]) : null,
              fluency: fluency[j] === null ? null : { post: fluency[j], pre: before!.fluency },
              target: reqs[j].target,
              direction: reqs[j].direction ?? "increase",
              pre,
              post,
            }) as { [k: string]: Json },
            hparams: jsonSafe({
              seed: s.seed,
              method,
              editedLayers: editedLayers(mc),
              ...mc.hparams,
              noise: reqs[j].noise ? { ...reqs[j].noise, rule: noise!.rule } : null,
              drift: {
                ...s.drift,
                measured: before !== null,
                seed: driftSeed(s.seed, it.fact.recordIndex),
                prompts: before?.prompts.length ?? 0,
              },
            }) as { [k: string]: Json },
            model: ctx.meta.model,
            dataset: datasetOf(it.fact),
            adapter: ctx.meta.adapter,
            timings: {
              edit: editSeconds + prefetched[j],
              batch: part.length,
              // Per edit, its share of the part's scoring time (Hase et al.'s probabilities and the standard
              // metrics), and each measured edit's of essence and fluency.
              score: seconds.score / part.length,
              virtual: virtual ? 1 : 0,
              drift: before ? seconds.drift / driftMeasuredEdits + driftShare[j] : 0,
              valuesReused: reused[j] ? 1 : 0,
            },
          });
        }
      };
      const where = `${problem} ${method} layer${layers.length > 1 ? "s" : ""} ${layers.join(",")}`;
      if (deferred.length) {
        driftQueue.entries.push({
          edits: deferred.map((j) => computed[j]),
          essence: deferred.map((j) => befores[j]!.essence),
          runs: deferred.map((j) =>
            befores[j]!.fluency === null ? null : { prompts: befores[j]!.prompts, seed: befores[j]!.seed }
          ),
          done: (essences, fluencies, secondsEach) => {
            deferred.forEach((j, i) => {
              [essence[j], fluency[j], driftShare[j]] = [essences[i], fluencies[i], secondsEach];
            });
            putRecords();
            show(where);
          },
        });
        show(`${where}; their essence and fluency with the block's`);
        if (driftQueue.bytes() > DRIFT_QUEUE_BYTES) await flushDrift(driftQueue);
      } else {
        putRecords();
        show(where);
      }
    };
    for (const [b, chunks] of blocks.entries()) {
      if (outOfTime()) break;
      if (progress.items(b) === 0) continue;
      if (o.claims !== undefined && !store.claim(o.claims, claimKey(b))) {
        // Another process of this run has the block: credited as it goes, so that each process's bar
        // shows how far the run as a whole has come.
        progress.passOther(b);
        show("a block another process runs");
        continue;
      }
      progress.start(b, done);
      const values = new SharedValues(keptValues);
      const trained: Trained = new Map();
      const driftQueue = new DriftQueue();
      blockResiduals = new ResidualCache(model);
      try {
        if (!outOfTime()) {
          // Only what is not stored yet (a resumed block's stored edits are not recomputed).
          const todo = chunks.map((part) => part.filter((it) => !store.has(it.key))).filter((p) => p.length);
          await prefetch(todo, values, trained);
        }
        for (const part of chunks) {
          if (outOfTime()) break;
          // A block that was started before and is still not stored was killed: retry it in halves (then
          // quarters, ...), so frequent kills still let the sweep progress, one edit at a time at worst.
          const block = `edit block ${resultKey(part[0].key)} x${part.length}`;
          const retries = part.length > 1 ? store.attempt(block) : 0;
          const size = Math.max(1, Math.ceil(part.length / 2 ** retries));
          for (let at = 0; at < part.length && !outOfTime(); at += size) {
            await runEdits(part.slice(at, at + size), values, trained, driftQueue);
          }
          if (part.length > 1 && !stopped) store.finished(block);
        }
        await flushDrift(driftQueue);
      } finally {
        blockResiduals.release();
        blockResiduals = undefined;
        progress.finish();
      }
      valueCounts.optimised += values.optimised;
      valueCounts.reused += values.reused;
    }
    if (!stopped) done += progress.endLoop();
  }

  // Mass editing: one batch edit of n test facts at once, applied, every fact scored, undone. A fact's z
  // depends only on its request and the z options (values.ts optimises each request as if alone), and the
  // curve edits the first n test facts for every n and both methods (whose z options are one set when their
  // last edited layers agree, as at the defaults): every fact's z is optimised once, ahead, for the items
  // not stored yet, in one batch per set of options (but those the sweep's edits kept: keptValues above),
  // and each item's edit is computed from them.
  const massPending = pending.filter((it): it is MassItem => it.kind === "mass");
  if (massPending.length > 0 && !outOfTime()) {
    // Only the items still pending: the z of items already stored are not needed again.
    const values = new SharedValues(keptValues);
    const calls = massPending.map((item) => massCalls.get(item)!);
    await values.prefetch(model, tok, calls, (step, steps) => show(`mass edits' z: step ${step}/${steps}`));
    for (const [i, item] of massPending.entries()) {
      if (outOfTime()) break;
      const { mc, requests: reqs, o: zOptions } = calls[i];
      const stats = await statsFor(new Set(statsLayers(mc)), [item.method]);
      const pairs = item.facts.map((f, j) => ({ c: f.case, request: reqs[j] }));
      const pre = await caseProbabilities(model, tok, pairs);
      const t0 = performance.now();
      const zs = await values.optimise(model, tok, reqs, zOptions);
      const [edit] = await computeEdits(model, tok, mc, reqs, stats, {
        startWords: massStartWords,
        values: zs,
      });
      // The item's own time (keys and solves, and any z not prefetched) plus the prefetch's share of the z
      // it is the first item to use: a z shared by several items is charged once, to the first (the
      // smallest n of the first method), and the others' times leave it out (timings.valuesReused counts
      // the item's reused z).
      const editSeconds = (performance.now() - t0) / 1000 +
        values.lastPrefetchSeconds.reduce((a, b) => a + b, 0);
      const valuesReused = values.lastReused.filter((r) => r).length;
      const applied = await applyEdit(model, edit);
      let post: CaseProbabilities[];
      try {
        post = await caseProbabilities(model, tok, pairs);
      } finally {
        applied.undo();
      }
      const scores = reqs.map((r, j) => caseScores(r, pre[j], post[j]));
      put(item.key, {
        metrics: jsonSafe({
          n: item.facts.length,
          facts: item.facts.map((f) => f.id),
          rewrite: scores.map((x) => x.rewrite),
          paraphrase: scores.map((x) => x.paraphrase),
          neighborhood: scores.map((x) => x.neighborhood),
          overall: scores.map((x) => x.overall),
        }) as { [k: string]: Json },
        hparams: jsonSafe({
          seed: s.seed,
          method: item.method,
          editedLayers: editedLayers(mc),
          ...mc.hparams,
        }) as {
          [k: string]: Json;
        },
        model: ctx.meta.model,
        dataset: { ...ctx.meta.dataset, split: "test", facts: item.facts.length },
        adapter: ctx.meta.adapter,
        timings: { edit: editSeconds, valuesReused },
      });
      show(`mass edit: ${item.method} x ${item.facts.length} facts`);
    }
    valueCounts.optimised += values.optimised;
    valueCounts.reused += values.reused;
  }
  if (stopped) log(`stopped: out of time at ${done}/${mine.length} results`);
  return {
    total: mine.length,
    skipped: already,
    written,
    seconds: (performance.now() - started) / 1000,
    stopped,
    values: valueCounts,
  };
}

/** Generation prompts per batch of a block's fluency generations (generate's batchSize): one block's
 *  measured edits (up to a few hundred runs of 5 prompts) in a few batches per new token. */
const FLUENCY_BATCH = 256;

/** Deltas a block's queue of essence and fluency measurements may hold before they are measured early: a
 *  large model's dense FT-L deltas (GPT-2 XL's FT-5: 200 MB an edit) would not all fit. */
const DRIFT_QUEUE_BYTES = 512 * 2 ** 20;

/** Essence and fluency measurements waiting for one pass per block (runSweep): per part, its measured
 *  edits, their essence texts and generation runs (null: not measured), and what stores the part's records
 *  once they are known. */
class DriftQueue {
  readonly entries: {
    edits: Edit[];
    essence: (EssenceTexts | null)[];
    runs: (FluencyRun | null)[];
    done: (essences: (Essence | null)[], fluencies: (number | null)[], secondsEach: number) => void;
  }[] = [];

  /** Bytes of the queued edits' deltas. */
  bytes(): number {
    let n = 0;
    for (const e of this.entries) {
      for (const edit of e.edits) {
        for (const d of edit.deltas) {
          n += 4 * (d.kind === "dense" ? d.values.length : d.left.length + d.right.length);
        }
      }
    }
    return n;
  }
}

/** A measured fact's essence texts and fluency on the unedited model, and how its generations are drawn. */
interface DriftBefore {
  /** null: essence not measured (essenceSamples 0). */
  essence: EssenceTexts | null;
  /** The generation prompts whose fluency is measured (none: fluency not measured). */
  prompts: string[];
  /** The seed of the essence samples and of the fluency generations, before and after every edit. */
  seed: number;
  /** Mean fluency of the unedited model's generations; null without prompts. */
  fluency: number | null;
}

/** What a trace record keeps: the per-layer regressors and the whole grid (for the report). */
function traceMetrics(trace: FactTrace): { [k: string]: Json } {
  const mlp = trace.grids.find((g) => g.kind === "mlp");
  if (!mlp) throw new Error(`trace of "${trace.prompt}" has no MLP grid`);
  const effect = trace.method === "zero" ? mlp.subjectZeroed!.fraction : mlp.layers.maxFraction;
  return jsonSafe({
    clean: trace.clean,
    corrupted: trace.corrupted,
    // The regressor of the analyses, per layer: Hase et al.'s fractional effect (max over tokens) for
    // causal tracing; for zeroing, the fraction of p(clean) removed by zeroing every subject token.
    effect,
    lastSubjectEffect: mlp.layers.lastSubjectFraction,
    trace,
  }) as { [k: string]: Json };
}

/** What must not change while a sweep's results accumulate in one store (refused on resume otherwise). */
function settingsFingerprint(
  plan: SweepPlan,
  meta: RunMeta,
  noise: NoiseLevel | null,
): { [k: string]: Json } {
  return jsonSafe({
    settings: plan.settings,
    model: meta.model.weightsSha256,
    dataset: meta.dataset.sha256,
    proxyFacts: plan.facts.filter((f) => f.split === "proxy").map((f) => f.id),
    noise: noise && { rule: noise.rule, level: noise.level },
  }) as { [k: string]: Json };
}

function checkPlan(plan: SweepPlan, nLayer: number): void {
  const where = `sweep "${plan.name}"`;
  if (!plan.name) throw new Error("sweep: the plan has no name");
  for (const l of plan.layers) {
    if (!Number.isInteger(l) || l < 0 || l >= nLayer) {
      throw new Error(`${where}: layer ${l} outside [0, ${nLayer})`);
    }
  }
  const ids = new Set<string>();
  for (const f of plan.facts) {
    if (ids.has(f.id)) throw new Error(`${where}: fact ${f.id} appears twice`);
    ids.add(f.id);
  }
  if (plan.settings.batchSize < 1) throw new Error(`${where}: batch size must be >= 1`);
  const d = plan.settings.drift;
  for (
    const [name, min] of [["every", 0], ["topK", 1], ["essenceSamples", 0], ["fluencyPrompts", 0]] as const
  ) {
    if (!Number.isInteger(d[name]) || d[name] < min) {
      throw new Error(`${where}: drift.${name} must be an integer >= ${min}, got ${d[name]}`);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Command line

/** "all", "3", "2,3,4" or "2-4" (layers within [0, nLayer)). */
export function parseLayerList(text: string, nLayer: number): number[] {
  if (text === "all") return Array.from({ length: nLayer }, (_, l) => l);
  const range = /^(\d+)-(\d+)$/.exec(text);
  const layers = range
    ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, i) => Number(range[1]) + i)
    : text.split(",").map((x) => Number(x.trim()));
  if (layers.length === 0 || layers.some((l) => !Number.isInteger(l) || l < 0 || l >= nLayer)) {
    throw new Error(`--layers: expected "all", "3", "2,3,4" or "2-4" within 0..${nLayer - 1}, got "${text}"`);
  }
  return layers;
}

/** The window study's option: "none", or window sizes of Hase et al.'s GPT-J ("1,3,5,10"), scaled to the
 *  model (layer_selection.ts studyWindows); the MLP windows in this model's layers, ascending. */
export function parseWindowSizes(option: string, text: string, nLayer: number): number[] {
  if (text === "none" || text === "") return [];
  const sizes = text.split(",").map((x) => Number(x.trim()));
  if (sizes.some((w) => !Number.isInteger(w) || w < 1)) {
    throw new Error(`--${option}: expected "none" or window sizes such as "1,3,5,10", got "${text}"`);
  }
  return studyWindows(nLayer, sizes).map((w) => w.layers);
}

/** A comma-separated list of names from `known` ("all" = every one; "none" = empty). */
export function parseNames<T extends string>(option: string, text: string, known: readonly T[]): T[] {
  if (text === "all") return [...known];
  if (text === "none" || text === "") return [];
  return text.split(",").map((x) => x.trim()).map((x) => {
    if (!(known as readonly string[]).includes(x)) {
      throw new Error(`--${option}: unknown "${x}"; known: ${known.join(", ")}`);
    }
    return x as T;
  });
}
