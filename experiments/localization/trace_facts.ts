// Causal tracing of many facts, as `./locus task trace` runs it (Meng et al. 2022, "Locating and Editing
// Factual Associations in GPT", section 2.1 and its known_1000 averages; Hase et al., "Does Localization
// Inform Editing?", section 3): which facts to trace (a dataset's facts the model knows), the noise level
// (ROME's 3 sigma over the known facts' subjects) and windows, the run's hyper-parameters as they are
// recorded, and the traces as CSV tables (one row per fact x kind x token x layer, one per averaged
// token group x layer).
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import { decodeDataset, detectFormat, parseDataset } from "../data/datasets.ts";
import { csvText, type CsvValue } from "../output.ts";
import { defaultTraceWindows } from "./layer_selection.ts";
import {
  type AverageTrace,
  DEFAULT_NOISE_STDS,
  type FactQuery,
  type FactTrace,
  type KnownFact,
  knownFacts,
  type NoiseLevel,
  parseKnownFacts,
  type StateKind,
  subjectNoiseLevel,
  type TraceMethod,
  type TraceOptions,
  windowFor,
} from "./tracing.ts";

/** A fact to trace with its dataset id (null for a fact given on the command line). */
export type TracedQuery = FactQuery & { known_id: number | null };

/** The facts of one run and where they came from. */
export interface TraceSelection {
  /** The facts to trace, in order. */
  facts: TracedQuery[];
  /** The dataset file, or "command line". */
  dataset: string;
  /** Records in the dataset and how many of them the model completes correctly (null: command line). */
  counts: { records: number; known: number } | null;
  /** The subjects ROME's noise rule runs over: every known fact's (not only the traced ones'). */
  noiseSubjects: string[];
}

/** One fact given on the command line. */
export function commandLineSelection(fact: FactQuery): TraceSelection {
  return {
    facts: [{ ...fact, known_id: null }],
    dataset: "command line",
    counts: null,
    noiseSubjects: [fact.subject],
  };
}

/**
 * The facts of a dataset file: known_1000 records as they are; any other schema (datasets.ts) gives
 * its true answer as the target, keeping the records whose prompt contains the subject and that have
 * one (the others are counted in a warning through `warn`). An error names the file when no record
 * qualifies.
 */
export function datasetFacts(
  text: string,
  file: string,
  warn: (line: string) => void = () => {},
): KnownFact[] {
  let first: unknown;
  try {
    first = (JSON.parse(text) as unknown[])[0];
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (detectFormat(first, file) === "known_1000") return parseKnownFacts(text, file);
  const { format, cases } = parseDataset(text, file);
  const facts = cases.filter((c) => c.targetTrue !== null && c.template !== null).map((c) => {
    const id = Number(c.id.slice(c.id.indexOf(":") + 1));
    return {
      known_id: Number.isSafeInteger(id) ? id : c.recordIndex,
      subject: c.subject,
      attribute: c.targetTrue!,
      prompt: c.prompt,
    };
  });
  if (facts.length === 0) {
    throw new Error(`${file}: no ${format} record has a true answer and a prompt that contains its subject`);
  }
  if (facts.length < cases.length) {
    warn(
      `${file}: ${cases.length - facts.length} of ${cases.length} ${format} records lack a true answer ` +
        `or a prompt containing the subject; skipped`,
    );
  }
  return facts;
}

/** The first `limit` facts of a dataset file that the model completes correctly (greedy next token =
 *  the answer's first token), as ROME traces only known facts. */
export async function datasetSelection(
  model: Model,
  tok: Tokenizer,
  file: string,
  limit = Infinity,
  warn: (line: string) => void = () => {},
): Promise<TraceSelection> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (e) {
    throw new Error(`${file}: cannot read the dataset (${(e as Error).message})`);
  }
  const records = datasetFacts(decodeDataset(bytes, file), file, warn);
  const known = await knownFacts(model, tok, records, file);
  return {
    facts: known.slice(0, limit).map((f) => ({
      prompt: f.prompt,
      subject: f.subject,
      target: f.attribute,
      known_id: f.known_id,
    })),
    dataset: file,
    counts: { records: records.length, known: known.length },
    noiseSubjects: known.map((f) => f.subject),
  };
}

/** What a run was asked for beyond the facts. */
export interface TraceRequest {
  /** Noise and restore (causal tracing) or zeroing. */
  method: TraceMethod;
  /** The states traced: residual stream, MLP output, attention output. */
  kinds: readonly StateKind[];
  /** One window for every kind; undefined: defaultTraceWindows. */
  window?: number;
  /** Noise draws per fact. */
  samples: number;
  /** A fixed noise level; undefined: ROME's rule over the selection's noise subjects. */
  noise?: number;
  /** The noise draws' seed. */
  seed: number;
}

/** A run's trace options, with the noise rule that set the level (null when fixed or zeroing). */
export interface TracePlan {
  /** What traceFact gets for every fact. */
  options: TraceOptions;
  /** ROME's noise rule as applied (null: a fixed level, or zeroing). */
  rule: NoiseLevel | null;
  /** The noise level used (null when zeroing). */
  noise: number | null;
}

/** The options `traceFact` gets for every fact of the selection. */
export async function tracePlan(
  model: Model,
  tok: Tokenizer,
  selection: TraceSelection,
  r: TraceRequest,
): Promise<TracePlan> {
  const rule = r.method === "noise" && r.noise === undefined && selection.noiseSubjects.length > 0
    ? await subjectNoiseLevel(model, tok, selection.noiseSubjects)
    : null;
  const noise = r.method === "noise" ? r.noise ?? rule?.level ?? null : null;
  const window = r.window ?? defaultTraceWindows(model.nLayer);
  return {
    options: {
      method: r.method,
      kinds: r.kinds,
      window,
      samples: r.samples,
      noise: noise ?? undefined,
      seed: r.seed,
    },
    rule,
    noise,
  };
}

/** The hyper-parameters a run's metadata records (trace.json's `meta`). */
export function traceHyperparameters(r: TraceRequest, plan: TracePlan, known: boolean) {
  return {
    kinds: r.kinds,
    windows: Object.fromEntries(r.kinds.map((k) => [k, windowFor(k, plan.options.window)])),
    windowRule: r.window === undefined
      ? "resid 1; mlp and attn max(1, round(10 L / 48))"
      : "fixed (--window)",
    samples: r.method === "noise" ? r.samples : null,
    noise: plan.noise,
    noiseRule: r.method === "noise"
      ? (plan.rule
        ? `${plan.rule.rule} over ${plan.rule.subjects} subjects = ${DEFAULT_NOISE_STDS} x ${plan.rule.std}`
        : "fixed (--noise)")
      : null,
    target: "probability of the first token of ' ' + target at the last prompt position",
    knownFilter: known ? "greedy next token = first token of ' ' + the true answer" : null,
  };
}

/** Columns that say how a run was made, repeated on every CSV row so that each row stands alone. */
export type RunColumns = Record<string, string | number | null>;

/** One CSV row per fact x kind x token x layer. */
export function traceCsv(run: RunColumns, facts: (FactTrace & { known_id: number | null })[]): string {
  const rows: CsvValue[][] = [];
  for (const f of facts) {
    const [b, e] = f.subjectRange;
    for (const g of f.grids) {
      g.prob.forEach((row, t) =>
        row.forEach((p, l) => {
          const cell = [
            g.kind,
            g.window,
            t,
            f.tokens[t],
            t >= b && t < e,
            l,
            p,
            g.effect[t][l],
            g.fraction[t][l],
          ];
          rows.push([...Object.values(run), f.known_id, f.subject, f.target, ...cell, f.clean, f.corrupted]);
        })
      );
    }
  }
  const cellHeader = [
    "kind",
    "window",
    "token_index",
    "token",
    "is_subject",
    "layer",
    "prob",
    "effect",
    "fraction",
  ];
  const header = [
    ...Object.keys(run),
    "known_id",
    "subject",
    "target",
    ...cellHeader,
    "clean_prob",
    "corrupted_prob",
  ];
  return csvText(header, rows);
}

/** One CSV row per kind x token group x layer of the averages (zeroing adds the group "all subject
 *  tokens": every subject token zeroed together, one row per fact). */
export function averagesCsv(run: RunColumns, averages: AverageTrace[]): string {
  const rows: CsvValue[][] = [];
  for (const a of averages) {
    const curves: {
      name: string;
      count: number;
      prob: number[];
      effect: number[];
      effectSe?: number[];
      fraction: number[];
    }[] = a.groups.map((g) => ({
      name: g.group,
      count: g.count,
      prob: g.prob,
      effect: g.effect,
      effectSe: g.effectSe,
      fraction: g.fraction,
    }));
    if (a.subjectZeroed) {
      const { prob, fraction } = a.subjectZeroed;
      curves.push({
        name: "all subject tokens",
        count: a.facts,
        prob,
        effect: prob.map((p) => a.clean - p),
        fraction,
      });
    }
    for (const c of curves) {
      c.prob.forEach((p, l) =>
        rows.push([
          ...Object.values(run),
          a.kind,
          a.window,
          a.facts,
          c.name,
          c.count,
          l,
          p,
          c.effect[l],
          c.effectSe?.[l] ?? null,
          c.fraction[l],
          a.clean,
          a.corrupted,
        ])
      );
    }
  }
  const header = [
    "kind",
    "window",
    "facts",
    "group",
    "rows",
    "layer",
    "prob",
    "effect",
    "effect_se",
    "fraction",
  ];
  return csvText([...Object.keys(run), ...header, "mean_clean_prob", "mean_corrupted_prob"], rows);
}
