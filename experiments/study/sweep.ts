// Sweeps: facts x layers x editing methods x editing problems x localization methods, every result
// written to the results store (experiments/study/store.ts) the moment it exists.
//
//   ./locus task sweep --out runs/sweep.db --facts 20 --methods rome,memit --problems all
//   ./locus task sweep --out shard0.db --shard 0/2 ...      (same options on every machine)
//   ./locus task sweep merge all.db shard0.db shard1.db     ./locus task sweep csv all.db results.csv
//
// A sweep is a list of work items, each one stored result (store.ts ResultKey):
//
//   trace    one fact, one localization method (method "none", layer null): where the fact lives.
//            "causal-tracing": noise the subject, restore clean MLP outputs (window w around each
//            layer); the per-layer regressor is Hase et al.'s fractional effect, max over tokens.
//            "zeroing": zero the subject's MLP outputs over the window; the regressor is the
//            fraction of the clean probability removed. The whole grid is kept for the report.
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
//
// Noise: causal tracing, fact forcing and tracing reversal use ROME's rule, 3 x the std of the
// subject-token embeddings of the dataset's known facts (tracing.ts subjectNoiseLevel), recorded with
// every result using it.
//
// Sharding: item i belongs to shard hash(key) mod n (store.ts shardItems); shards write their own
// stores, merged afterwards. Facts are sampled with a seeded shuffle of the facts the model knows, so
// every process sees the same plan.
//
// Order and batching: edits run in blocks of `batchSize` facts, each block through every (problem,
// method, layer), so a sweep stopped early holds every condition for fewer facts. ROME and R-ROME
// compute a block's edits of one (problem, method) at every layer together (independent rank-one edits;
// their v* batches filled layer by layer up to the row budget, editing/values.ts), then score them all
// in one batched pass where each prompt carries its own edit as a virtual edit (engine/virtual_edits.ts:
// the weights are never written); FT-L's dense edits (and every edit under --apply-to-score, the
// reference) are applied alone, scored and undone. MEMIT and EMMET optimise a block's z (facts x layers)
// together the same way, then solve each fact's edit on its own; FT-L computes one fact at a time.
// Pre-edit probabilities are computed once per (fact, problem).
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { mulberry32 } from "../../engine/random.ts";
import { loadTokenizer, targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { checkRecord, loadDataset, recordLabel } from "../data/datasets.ts";
import {
  applyEdit,
  type Edit,
  type EditRequest,
  type SubjectNoise,
  VirtualEditSet,
} from "../editing/edit.ts";
import { contextTemplates } from "../editing/keys.ts";
import { optimiseValues, valueOptions } from "../editing/values.ts";
import { statsHparams } from "../editing/hparams.ts";
import {
  computeEdits,
  editedLayers,
  type MethodConfig,
  methodConfig,
  type MethodName,
  METHODS,
  type Overrides,
  parseMethod,
  statsLayers,
  templateStartWords,
} from "../editing/methods.ts";
import {
  type CaseProbabilities,
  caseProbabilities,
  caseScores,
  type EditingCase,
  editingCase,
  type EditingProblem,
  parseProblem,
  problemRequest,
  PROBLEMS,
} from "../editing/problems.ts";
import { computeRomeAt } from "../editing/rome.ts";
import { type KeyStats, keyStats } from "../editing/stats.ts";
import {
  causalTracingSelector,
  integratedGradientsSelector,
  type LayerSelector,
  lgaSelector,
  scaledMlpWindow,
  type SelectionRequest,
} from "../localization/layer_selection.ts";
import {
  formatStandardScores,
  localityReference,
  meanStandardScores,
  standardCaseOf,
  type StandardScores,
  standardScores,
} from "../evaluation/metrics.ts";
import { formatSeconds, intOption, numberOption, ProgressBar, type ProgressOptions } from "../output.ts";
import { greedyNextTokens } from "../evaluation/recall.ts";
import {
  type Json,
  mergeStores,
  parseShard,
  type ResultKey,
  resultKey,
  ResultStore,
  type Shard,
  shardFromEnv,
  shardItems,
  type StoredResult,
  writeCsv,
} from "./store.ts";
import {
  type FactTrace,
  type NoiseLevel,
  type StateKind,
  subjectNoiseLevel,
  traceFact,
  windowLayers,
} from "../localization/tracing.ts";
import { runMain } from "../../engine/main.ts";
import { exists } from "../../engine/files.ts";

// ------------------------------------------------------------------------------------------------
// The plan

/** Per-fact localization measurements. */
export const LOCALIZATIONS = ["causal-tracing", "zeroing"] as const;
export type Localization = typeof LOCALIZATIONS[number];

/** Layer-selection strategies, run once on the proxy facts. */
export const SELECTORS = ["causal-tracing", "integrated-gradients", "lga"] as const;
export type SelectorName = typeof SELECTORS[number];

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
}

export interface SweepPlan {
  /** The sweep's name, part of every result key. */
  name: string;
  facts: SweepFact[];
  layers: number[];
  methods: MethodName[];
  problems: EditingProblem[];
  localizations: Localization[];
  selectors: SelectorName[];
  settings: SweepSettings;
  /** Subjects whose token embeddings set the noise level (ROME: every known fact of the dataset);
   *  default: the plan's facts. */
  noiseSubjects?: string[];
  /** Dataset records the fact sample left out (FactSample.skipped), stored as SKIPPED records. */
  skipped?: SkippedRecord[];
}

/** A dataset record left out of a sweep, and why. */
export interface SkippedRecord {
  /** The case id, e.g. "counterfact:17". */
  id: string;
  /** recordLabel(): "FILE: record I (ID)". */
  label: string;
  reason: string;
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
  };
}

export type WorkItem =
  | { kind: "trace"; key: ResultKey; fact: SweepFact; localization: Localization }
  | { kind: "select"; key: ResultKey; selector: SelectorName }
  | {
    kind: "edit";
    key: ResultKey;
    fact: SweepFact;
    method: MethodName;
    layer: number;
    problem: EditingProblem;
  };

/** Every work item of the plan, in the order they run: traces, selections, then edits. */
export function planItems(plan: SweepPlan): WorkItem[] {
  const sweep = plan.name;
  const items: WorkItem[] = [];
  for (const localization of plan.localizations) {
    for (const fact of plan.facts) {
      items.push({
        kind: "trace",
        key: { sweep, fact: fact.id, method: NONE, layer: null, problem: NONE, localization },
        fact,
        localization,
      });
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
  const edited = plan.facts.filter((f) => f.split !== "trace-only");
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
 * field's standard metrics (metrics.ts STANDARD_METRICS; n/a for the problems they do not judge):
 *   "error-injection rome (18 edits): rewrite 0.912  paraphrase 0.403  neighborhood 0.977  overall 0.611 |
 *    ES 1.00  PS 0.56 ..."
 */
export function scoreSummary(results: Iterable<StoredResult>, sweep: string): string[] {
  const groups = new Map<string, StoredResult[]>();
  for (const r of results) {
    if (r.sweep !== sweep || r.localization !== LAYER_GRID) continue;
    const g = `${r.problem} ${r.method}`;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(r);
  }
  const mean = (rows: StoredResult[], key: string) => {
    const xs = rows.map((r) => r.metrics[key]).filter((x): x is number => typeof x === "number");
    return xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3) : "n/a";
  };
  return [...groups].map(([name, rows]) => {
    const hase = ["rewrite", "paraphrase", "neighborhood", "overall"].map((k) => `${k} ${mean(rows, k)}`);
    const standard = rows.map((r) => r.metrics.standard).filter((x) => x !== null && typeof x === "object");
    return `${name} (${rows.length} edits): ${hase.join("  ")} | ` +
      (standard.length
        ? formatStandardScores(meanStandardScores(standard as unknown as StandardScores[]))
        : "standard metrics n/a (they compare a new object against the true one)");
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
 * ceil(proxyFraction * edit) of them form the proxy set), then up to `traceOnly` more facts only traced.
 */
export async function sampleFacts(
  model: Model,
  tok: Tokenizer,
  datasetPath: string,
  o: { edit: number; traceOnly: number; proxyFraction: number; seed: number },
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
  const predicted = await greedyNextTokens(model, candidates.map((c) => tok.encode(filledPrompt(c.case))));
  const known = candidates.filter((c, i) =>
    predicted[i] === targetIds(tok, filledPrompt(c.case), c.case.targetTrue, { refuseUnknown: true })[0]
  );
  // Fisher-Yates with the project's PRNG: the same seed picks the same facts on every machine.
  const random = mulberry32(o.seed);
  const order = [...known];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const edited = order.slice(0, o.edit);
  const proxy = edited.length ? Math.max(1, Math.ceil(o.proxyFraction * edited.length)) : 0;
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
}

/** The layers `method` edits for the sweep layer `layer`. */
export function methodLayers(plan: SweepPlan, method: MethodName, layer: number, nLayer: number): number[] {
  const window = method === "memit"
    ? plan.settings.memitWindow
    : method === "ft"
    ? plan.settings.ftWindow
    : 1;
  const [from, to] = windowLayers(layer, window, nLayer);
  return Array.from({ length: to - from }, (_, i) => from + i);
}

function configFor(model: Model, plan: SweepPlan, method: MethodName, layer: number): MethodConfig {
  return methodConfig(model, method, {
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
  o: { shard?: Shard; deadline?: number; force?: boolean; applyToScore?: boolean } = {},
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
  const mine = o.shard ? shardItems(all, (it) => resultKey(it.key), o.shard) : all;
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
  const show = (what: string) => bar?.update(done, what);
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

  // Localization measurements.
  const s = plan.settings;
  for (const item of pending) {
    if (item.kind !== "trace") continue;
    if (outOfTime()) break;
    const fact = item.fact;
    const t0 = performance.now();
    const zero = item.localization === "zeroing";
    const trace = await traceFact(model, tok, {
      prompt: filledPrompt(fact.case),
      subject: fact.case.subject,
      target: fact.case.targetTrue,
    }, {
      method: zero ? "zero" : "noise",
      kinds: zero ? ["mlp"] : s.traceKinds,
      window: { resid: 1, mlp: s.traceWindow, attn: s.traceWindow },
      samples: s.traceSamples,
      seed: s.seed + 1,
      noise: noise!.level,
    });
    put(item.key, {
      metrics: traceMetrics(trace),
      hparams: jsonSafe({
        seed: s.seed,
        window: s.traceWindow,
        samples: s.traceSamples,
        kinds: trace.grids.map((g) => g.kind),
        noise: zero ? null : noise,
      }) as { [k: string]: Json },
      model: ctx.meta.model,
      dataset: datasetOf(fact),
      adapter: ctx.meta.adapter,
      timings: { trace: (performance.now() - t0) / 1000 },
    });
    show(`traced ${fact.id} (${item.localization})`);
    // Prompts differ in length, so pooled buffers of one trace rarely fit the next: free them.
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

  // Edits.
  const edits = pending.filter((it): it is Extract<WorkItem, { kind: "edit" }> => it.kind === "edit");
  if (edits.length > 0 && !outOfTime()) {
    const neededStats = new Set<number>();
    for (const it of edits) {
      for (const l of statsLayers(configFor(model, plan, it.method, it.layer))) neededStats.add(l);
    }
    let stats = new Map<number, KeyStats>();
    if (neededStats.size > 0) {
      if (!ctx.corpus) {
        throw new Error(
          `sweep "${plan.name}": ${
            [...new Set(edits.map((e) => e.method))].join(", ")
          } need key statistics; give a corpus`,
        );
      }
      stats = await keyStats(model, tok, {
        corpus: ctx.corpus,
        layers: [...neededStats].sort((a, b) => a - b),
        samples: statsHparams(model.config).samples,
        cacheDir: ctx.statsDir,
        log,
        onProgress: (keys, total) => show(`key statistics ${keys}/${total} keys`),
      });
    }
    const startWords = await templateStartWords(tok, ctx.corpus);
    const subjectNoise: SubjectNoise = { seed: s.seed + 1, scale: noise!.level };
    const requests = new Map<string, EditRequest>();
    const pres = new Map<string, CaseProbabilities>();
    const prepare = async (group: typeof edits) => {
      const missing = group.filter((it) => !pres.has(`${it.fact.id}|${it.problem}`));
      for (const it of missing) {
        requests.set(
          `${it.fact.id}|${it.problem}`,
          await problemRequest(model, tok, it.fact.case, it.problem, subjectNoise),
        );
      }
      const probs = await caseProbabilities(
        model,
        tok,
        missing.map((it) => ({ c: it.fact.case, request: requests.get(`${it.fact.id}|${it.problem}`)! })),
      );
      missing.forEach((it, i) => pres.set(`${it.fact.id}|${it.problem}`, probs[i]));
    };

    // Blocks of `batchSize` facts, each through every (problem, method, layer): a sweep stopped early
    // (killed, or out of time) holds every condition for fewer facts, not some conditions for all.
    const factOrder = [...new Set(edits.map((e) => e.fact.id))];
    const chunks: (typeof edits)[] = [];
    for (let b = 0; b < factOrder.length; b += s.batchSize) {
      const block = new Set(factOrder.slice(b, b + s.batchSize));
      const groups = new Map<string, typeof edits>();
      for (const it of edits) {
        if (!block.has(it.fact.id)) continue;
        // ROME, R-ROME, MEMIT and EMMET: one group over every layer (layer by layer, so their v* / z
        // batches mostly hold one layer each and straddle two only where a layer's requests leave room).
        const batched = it.method !== "ft";
        const g = `${it.problem}|${it.method}|${batched ? "all" : it.layer}`;
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g)!.push(it);
      }
      for (const group of groups.values()) {
        // A block's edits (facts x layers) are computed together; FT-L's one fact at a time.
        if (group[0].method !== "ft") chunks.push(group);
        else chunks.push(...group.map((it) => [it]));
      }
    }
    const runEdits = async (part: typeof edits) => {
      const { method, problem } = part[0];
      const layers = [...new Set(part.map((it) => it.layer))];
      await prepare(part);
      const reqs = part.map((it) => requests.get(`${it.fact.id}|${it.problem}`)!);
      const t0 = performance.now();
      const first = configFor(model, plan, method, part[0].layer);
      let computed: Edit[];
      if (first.method === "rome" || first.method === "r-rome") {
        computed = await computeRomeAt(model, tok, reqs, part.map((it) => it.layer), stats, first.hparams, {
          variant: first.method,
          startWords,
        });
      } else if (first.method === "memit" || first.method === "emmet") {
        // Every fact's z in one batch (each at its window's last layer), then each fact's own edit.
        const configs = part.map((it) => configFor(model, plan, method, it.layer));
        const zLayers = configs.map((mc) => editedLayers(mc).at(-1)!);
        const contexts = await contextTemplates(model, tok, { ...first.hparams.templates, startWords });
        const zs = await optimiseValues(model, tok, reqs, {
          ...valueOptions(first.hparams, zLayers[0], "resid", contexts),
          layers: zLayers,
        });
        computed = [];
        for (const [j, mc] of configs.entries()) {
          computed.push(
            ...await computeEdits(model, tok, mc, [reqs[j]], stats, { startWords, values: [zs[j]] }),
          );
        }
      } else computed = await computeEdits(model, tok, first, reqs, stats, { startWords });
      const editSeconds = (performance.now() - t0) / 1000 / part.length;
      // Scoring: every low-rank edit of the part at once, each prompt under its own virtual edit, in
      // one batched pass; a dense delta (FT-L), or o.applyToScore, applies, scores and undoes each.
      const t1 = performance.now();
      const pairs = part.map((it, j) => ({ c: it.fact.case, request: reqs[j] }));
      const virtual = !o.applyToScore && computed.every((e) => e.deltas.every((d) => d.kind === "low-rank"));
      const posts: CaseProbabilities[] = [];
      if (virtual) {
        const set = new VirtualEditSet(model, computed);
        try {
          posts.push(...await caseProbabilities(model, tok, pairs, set));
        } finally {
          set.release();
        }
      } else {
        for (const [j, pair] of pairs.entries()) {
          const applied = await applyEdit(model, computed[j]);
          posts.push(...await caseProbabilities(model, tok, [pair]));
          applied.undo();
        }
      }
      const scoreSeconds = (performance.now() - t1) / 1000 / part.length;
      for (const [j, it] of part.entries()) {
        const mc = configFor(model, plan, method, it.layer);
        const pre = pres.get(`${it.fact.id}|${it.problem}`)!;
        const post = posts[j];
        // The field's standard metrics beside Hase et al.'s scores, where they apply (metrics.ts): they
        // score other prompts (locality references, generations), so the edit is applied for them.
        const standardCase = standardCaseOf(it.fact.case, reqs[j]);
        let standard = null;
        if (standardCase) {
          const reference = await localityReference(model, tok, standardCase);
          const applied = await applyEdit(model, computed[j]);
          standard = await standardScores(model, tok, standardCase, reference);
          applied.undo();
        }
        const scores = caseScores(reqs[j], pre, post);
        put(it.key, {
          metrics: jsonSafe({
            ...scores,
            standard,
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
          }) as { [k: string]: Json },
          model: ctx.meta.model,
          dataset: datasetOf(it.fact),
          adapter: ctx.meta.adapter,
          timings: { edit: editSeconds, batch: part.length, score: scoreSeconds, virtual: virtual ? 1 : 0 },
        });
      }
      show(`${problem} ${method} layer${layers.length > 1 ? "s" : ""} ${layers.join(",")}`);
    };
    for (const part of chunks) {
      if (outOfTime()) break;
      // A block that was started before and is still not stored was killed: retry it in halves (then
      // quarters, ...), so frequent kills still let the sweep progress, one edit at a time at worst.
      const block = `edit block ${resultKey(part[0].key)} x${part.length}`;
      const retries = part.length > 1 ? store.attempt(block) : 0;
      const size = Math.max(1, Math.ceil(part.length / 2 ** retries));
      for (let at = 0; at < part.length && !outOfTime(); at += size) {
        await runEdits(part.slice(at, at + size));
      }
      if (part.length > 1 && !stopped) store.finished(block);
    }
  }
  if (stopped) log(`stopped: out of time at ${done}/${mine.length} results`);
  return {
    total: mine.length,
    skipped: already,
    written,
    seconds: (performance.now() - started) / 1000,
    stopped,
  };
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

export const SWEEP_USAGE = `usage: ./locus task sweep [options]
       ./locus task sweep merge TARGET.db SHARD.db...      combine shard stores
       ./locus task sweep csv STORE.db OUT.csv [--name N]   export results as CSV
  --model DIR            GPT-2 folder (default: the embedded model ${DEFAULT_MODEL_DIR})
  --dataset FILE         CounterFact-style file (default: DIR/counterfact.json)
  --out FILE             results store (SQLite; default runs/sweep.db)
  --name NAME            sweep name in the result keys (default "sweep")
  --facts N              facts edited (default 20), a seeded sample of the facts the model knows
  --trace-only N         more facts only traced, for the average tracing curves (default 0)
  --proxy-fraction X     share of the edited facts forming the proxy set of layer selection (default 0.1)
  --seed N               fact sample and noise seed (default 0)
  --layers L             all | 3 | 2,3,4 | 2-4 (default all)
  --methods M            ${METHODS.join(",")} (default rome)
  --problems P           all | ${PROBLEMS.join(",")} (default all)
  --localizations L      ${LOCALIZATIONS.join(",")} | none (default causal-tracing)
  --selectors S          ${SELECTORS.join(",")} | none (default all)
  --trace-window N       MLP window of the traces (default: ROME's 10 of 48 layers scaled to the model)
  --trace-samples N      noise draws per trace (default 10)
  --memit-window N       layers of a MEMIT edit (default 3); --ft-window N for FT-L (default 1)
  --batch N              facts whose edits (at every layer) are computed together (default 8)
  --ig-steps N           integrated-gradients steps (default 20)
  --v-steps N, --ft-steps N   hyper-parameter overrides (fewer steps for speed)
  --corpus FILE          key statistics / template text (default DIR/corpus.txt)
  --stats-dir DIR        key statistics cache (default runs/editing-stats)
  --shard k/n            run only shard k of n (numbered from 0); merge the stores afterwards. Default in a
                         job array: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (minus SLURM_ARRAY_TASK_MIN),
                         or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX/LOCUS_SHARD_COUNT
  --max-minutes M        start no new work after M minutes (run again to continue)
  --apply-to-score       score each edit by applying, scoring and undoing it (the slow reference path)
  --force                resume although the store holds results of other settings (refused otherwise)
  --csv FILE             also export the sweep's results as CSV when done`;

async function main(args: string[]): Promise<number> {
  const started = performance.now();
  if (args[0] === "merge") {
    const [target, ...sources] = args.slice(1);
    if (!target || sources.length === 0) {
      throw new Error("usage: ./locus task sweep merge TARGET.db SHARD.db...");
    }
    const r = mergeStores(target, sources);
    console.log(
      `${target}: ${r.inserted} results added, ${r.duplicates} already there, ${r.conflicts.length} conflicts`,
    );
    for (const key of r.conflicts) console.error(`conflict (kept the first): ${key}`);
    return r.conflicts.length ? 1 : 0;
  }
  if (args[0] === "csv") {
    const { values, positionals } = parseArgs({
      args: args.slice(1),
      allowPositionals: true,
      options: { name: { type: "string" } },
    });
    if (positionals.length !== 2) {
      throw new Error("usage: ./locus task sweep csv STORE.db OUT.csv [--name NAME]");
    }
    const store = ResultStore.open(positionals[0], { create: false });
    try {
      console.log(
        `${positionals[1]}: ${await writeCsv(store, positionals[1], { sweep: values.name })} results`,
      );
    } finally {
      store.close();
    }
    return 0;
  }
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      dataset: { type: "string" },
      out: { type: "string", default: "runs/sweep.db" },
      name: { type: "string", default: "sweep" },
      facts: { type: "string" },
      "trace-only": { type: "string" },
      "proxy-fraction": { type: "string" },
      seed: { type: "string" },
      layers: { type: "string", default: "all" },
      methods: { type: "string", default: "rome" },
      problems: { type: "string", default: "all" },
      localizations: { type: "string", default: "causal-tracing" },
      selectors: { type: "string", default: "all" },
      "trace-window": { type: "string" },
      "trace-samples": { type: "string" },
      "memit-window": { type: "string" },
      "ft-window": { type: "string" },
      batch: { type: "string" },
      "ig-steps": { type: "string" },
      "v-steps": { type: "string" },
      "ft-steps": { type: "string" },
      corpus: { type: "string" },
      "stats-dir": { type: "string" },
      shard: { type: "string" },
      "max-minutes": { type: "string" },
      csv: { type: "string" },
      force: { type: "boolean", default: false },
      "apply-to-score": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(SWEEP_USAGE);
    return 0;
  }
  const dir = await resolveModelDir(values.model!);
  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  const seed = intOption("seed", values.seed, 0);
  const settings = defaultSettings(L, seed);
  settings.traceWindow = intOption("trace-window", values["trace-window"], settings.traceWindow, 1);
  settings.traceSamples = intOption("trace-samples", values["trace-samples"], settings.traceSamples, 1);
  settings.memitWindow = intOption("memit-window", values["memit-window"], settings.memitWindow, 1);
  settings.ftWindow = intOption("ft-window", values["ft-window"], settings.ftWindow, 1);
  settings.batchSize = intOption("batch", values.batch, settings.batchSize, 1);
  settings.igSteps = intOption("ig-steps", values["ig-steps"], settings.igSteps, 2);
  settings.overrides = {
    vNumGradSteps: numberOption("v-steps", values["v-steps"]),
    numSteps: numberOption("ft-steps", values["ft-steps"]),
  };
  const proxyFraction = numberOption("proxy-fraction", values["proxy-fraction"]) ?? 0.1;
  if (!(proxyFraction > 0 && proxyFraction < 1)) {
    throw new Error(`--proxy-fraction must be in (0, 1), got ${proxyFraction}`);
  }
  const datasetPath = values.dataset ?? `${dir}/counterfact.json`;
  const corpus = values.corpus ?? ((await exists(`${dir}/corpus.txt`)) ? `${dir}/corpus.txt` : null);
  const fromEnv = values.shard === undefined ? shardFromEnv(Deno.env.toObject()) : undefined;
  const shard = values.shard === undefined ? fromEnv?.shard : parseShard(values.shard);
  if (fromEnv) console.log(`shard ${fromEnv.shard.index}/${fromEnv.shard.count} from ${fromEnv.source}`);
  const minutes = numberOption("max-minutes", values["max-minutes"]);
  if (minutes !== undefined && !(minutes > 0)) throw new Error(`--max-minutes must be > 0, got ${minutes}`);

  const deadline = minutes === undefined ? undefined : started + minutes * 60_000;
  const sample = await sampleFacts(model, tok, datasetPath, {
    edit: intOption("facts", values.facts, 20),
    traceOnly: intOption("trace-only", values["trace-only"], 0),
    proxyFraction,
    seed,
  });
  const plan: SweepPlan = {
    name: values.name!,
    facts: sample.facts,
    layers: parseLayerList(values.layers!, L),
    methods: parseNames("methods", values.methods!, METHODS).map(parseMethod),
    problems: parseNames("problems", values.problems!, PROBLEMS).map(parseProblem),
    localizations: parseNames("localizations", values.localizations!, LOCALIZATIONS),
    selectors: parseNames("selectors", values.selectors!, SELECTORS),
    settings,
    noiseSubjects: sample.knownSubjects,
    skipped: sample.skipped,
  };
  console.log(`model ${dir} (${L} layers, d=${model.config.nEmbd}); ${gpu.describe()}`);
  console.log(
    `${datasetPath}: ${sample.known} of ${sample.candidates} facts known; ` +
      `${plan.facts.filter((f) => f.split !== "trace-only").length} edited, ` +
      `${plan.facts.filter((f) => f.split === "trace-only").length} traced only`,
  );
  for (const line of skippedReport(sample)) console.log(line);
  const store = ResultStore.open(values.out!);
  try {
    const summary = await runSweep(
      {
        model,
        tok,
        store,
        meta: await runMeta(model, dir, datasetPath),
        corpus,
        statsDir: values["stats-dir"],
        log: (l) => console.log(l),
      },
      plan,
      { shard, deadline, force: values.force, applyToScore: values["apply-to-score"] },
    );
    console.log(
      `${values.out}: ${summary.written} results written in ${formatSeconds(summary.seconds)} ` +
        `(${summary.skipped} were already there; ${summary.total} in this ${shard ? "shard" : "sweep"})`,
    );
    for (const line of scoreSummary(store.results({ sweep: plan.name }), plan.name)) console.log(`  ${line}`);
    if (summary.stopped) {
      console.log(`--max-minutes ${minutes} ran out: run the same command again to continue`);
    }
    if (values.csv) {
      console.log(`${values.csv}: ${await writeCsv(store, values.csv, { sweep: plan.name })} results`);
    }
  } finally {
    store.close();
  }
  return 0;
}

if (import.meta.main) await runMain("sweep", main);
