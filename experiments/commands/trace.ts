// ./locus task trace: causal tracing / representation zeroing of one prompt or of a known-facts dataset.
//
//   ./locus task trace --prompt "The Eiffel Tower is in" --subject "Eiffel Tower" --target Paris
//   ./locus task trace --dataset weights/locus-kb/known_facts.json --limit 50 --kind mlp --window 5
//   ./locus task trace --dataset weights/locus-kb/counterfact.json   (any schema with prompt, subject, target)
//   ./locus task trace --zero --prompt ... (representation zeroing instead of noise + restore)
//
// Writes into --out (default runs/trace): trace.json (every grid, with the run's metadata),
// trace.csv (one row per fact, kind, token, layer), heatmaps/*.svg (one per fact), and for datasets
// averages.csv, average-<kind>.svg (ROME's per-layer curves by token group) and average-heatmap.svg
// (ROME's averaged token-group x layer heatmaps, one panel per kind). The terminal gets
// shaded grids and the strongest cells.
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import {
  averageCurvesSvg,
  averageHeatmapSvg,
  heatmapSvg,
  terminalAverage,
  terminalHeatmap,
  topCells,
} from "../pictures/heatmap.ts";
import { detectFormat, parseDataset } from "../data/datasets.ts";
import { scaledMlpWindow } from "../localization/layer_selection.ts";
import {
  formatSeconds,
  makeOutputFolder,
  positiveInt,
  ProgressBar,
  runMetadata,
  writeRunJson,
} from "../output.ts";
import { writeAtomic } from "../../engine/files.ts";
import {
  type AverageTrace,
  averageTraces,
  DEFAULT_NOISE_STDS,
  type FactQuery,
  type FactTrace,
  type KnownFact,
  knownFacts,
  parseKnownFacts,
  STATE_KINDS,
  type StateKind,
  subjectNoiseLevel,
  traceFact,
  type TraceOptions,
  windowFor,
} from "../localization/tracing.ts";
import { runMain } from "../../engine/main.ts";
import { decodeDataset } from "../data/datasets.ts";

const USAGE = `usage: ./locus task trace [options]
  --model DIR       Hugging Face GPT-2 folder (default: the embedded model ${DEFAULT_MODEL_DIR})
  --prompt TEXT --subject TEXT --target TEXT
                    trace one fact (the target's first token, with a leading space, is scored)
  --dataset FILE    facts to trace: known_1000, CounterFact (ROME's or EasyEdit's), zsRE or KnowEdit
                    JSON (default: known_facts.json in the model folder); the true answer is the target,
                    and only facts whose greedy next token is its first token are traced
  --kind K          resid | mlp | attn | all (default all)
  --window N        layers restored around each centre layer (default: resid 1; mlp and attn ROME's
                    10 of 48 layers scaled to the model's depth, max(1, round(10 L / 48)))
  --samples N       noise draws per prompt (default 10)
  --noise X         fixed noise level (default ${DEFAULT_NOISE_STDS} x the std of the traced subjects' token embeddings)
  --zero            representation zeroing: zero clean states instead of restoring them
  --limit N         trace at most N facts of the dataset (after the known-facts filter)
  --seed N          noise seed (default 1)
  --out DIR         output folder (default runs/trace)`;

function csvField(v: string | number | boolean | null): string {
  const s = v === null || (typeof v === "number" && !Number.isFinite(v)) ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

function csv(header: string[], rows: (string | number | boolean | null)[][]): string {
  return [header, ...rows].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
}

/** Columns that say how a run was made, repeated on every CSV row so that each row stands alone. */
type RunColumns = Record<string, string | number | null>;

/** One CSV row per fact x kind x token x layer. */
function traceCsv(run: RunColumns, facts: (FactTrace & { known_id: number | null })[]): string {
  const rows: (string | number | boolean | null)[][] = [];
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
  return csv(header, rows);
}

/** One CSV row per kind x token group x layer of the averages (zeroing adds the group "all subject
 *  tokens": every subject token zeroed together, one row per fact). */
function averagesCsv(run: RunColumns, averages: AverageTrace[]): string {
  const rows: (string | number | null)[][] = [];
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
  return csv([...Object.keys(run), ...header, "mean_clean_prob", "mean_corrupted_prob"], rows);
}

/**
 * The facts of a dataset file: known_1000 records as they are; any other schema (datasets.ts) gives
 * its true answer as the target, keeping the records whose prompt contains the subject and that have
 * one. An error names the file when no record qualifies.
 */
function datasetFacts(text: string, file: string): KnownFact[] {
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
    console.error(
      `${file}: ${cases.length - facts.length} of ${cases.length} ${format} records lack a true answer ` +
        `or a prompt containing the subject; skipped`,
    );
  }
  return facts;
}

/** Runs the CLI with `argv` (without the program name); returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      prompt: { type: "string" },
      subject: { type: "string" },
      target: { type: "string" },
      dataset: { type: "string" },
      kind: { type: "string", default: "all" },
      window: { type: "string" },
      samples: { type: "string" },
      noise: { type: "string" },
      zero: { type: "boolean", default: false },
      limit: { type: "string" },
      seed: { type: "string" },
      out: { type: "string", default: "runs/trace" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const single = [values.prompt, values.subject, values.target];
  if (single.some((v) => v !== undefined) && single.some((v) => v === undefined)) {
    throw new Error("--prompt, --subject and --target go together");
  }
  if (values.prompt !== undefined && values.dataset !== undefined) {
    throw new Error("give either --prompt ... or --dataset, not both");
  }
  const kinds: readonly StateKind[] = values.kind === "all" ? STATE_KINDS : [values.kind as StateKind];
  if (!STATE_KINDS.includes(kinds[0])) {
    throw new Error(`--kind must be resid, mlp, attn or all, got ${JSON.stringify(values.kind)}`);
  }
  const method = values.zero ? "zero" : "noise";
  const window = values.window === undefined ? undefined : positiveInt("window", values.window, 1);
  const samples = positiveInt("samples", values.samples, 10);
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isSafeInteger(seed)) {
    throw new Error(`--seed must be an integer, got ${JSON.stringify(values.seed)}`);
  }
  const limit = values.limit === undefined ? Infinity : positiveInt("limit", values.limit, 1);
  const fixedNoise = values.noise === undefined ? undefined : Number(values.noise);
  if (fixedNoise !== undefined && !(Number.isFinite(fixedNoise) && fixedNoise >= 0)) {
    throw new Error(`--noise must be a number >= 0, got ${JSON.stringify(values.noise)}`);
  }

  const modelDir = await resolveModelDir(values.model!);
  const gpu = await getGpu();
  const [model, tok] = await Promise.all([Model.load(gpu, modelDir), loadTokenizer(modelDir)]);
  console.error(
    `model ${modelDir} (${model.config.nLayer} layers, d=${model.config.nEmbd}) on ${gpu.describe()}`,
  );

  // The facts to trace, each with its known_id (null for a command-line prompt).
  let facts: (FactQuery & { known_id: number | null })[];
  let dataset: string;
  let counts: { records: number; known: number } | null = null;
  let noiseSubjects: string[]; // ROME's noise rule runs over every known fact's subject
  if (values.prompt !== undefined) {
    facts = [{ prompt: values.prompt, subject: values.subject!, target: values.target!, known_id: null }];
    dataset = "command line";
    noiseSubjects = [values.subject!];
  } else {
    dataset = values.dataset ?? join(modelDir, "known_facts.json");
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(dataset);
    } catch (e) {
      throw new Error(`${dataset}: cannot read the dataset (${(e as Error).message})`);
    }
    const records = datasetFacts(decodeDataset(bytes, dataset), dataset);
    const known = await knownFacts(model, tok, records, dataset);
    counts = { records: records.length, known: known.length };
    noiseSubjects = known.map((f) => f.subject);
    console.error(
      `${dataset}: the model completes ${known.length} of ${records.length} facts correctly; tracing ${
        Math.min(limit, known.length)
      }`,
    );
    facts = known.slice(0, limit).map((f) => ({
      prompt: f.prompt,
      subject: f.subject,
      target: f.attribute,
      known_id: f.known_id,
    }));
  }

  // ROME's rule, unless --noise fixes the level.
  const rule = method === "noise" && fixedNoise === undefined && noiseSubjects.length > 0
    ? await subjectNoiseLevel(model, tok, noiseSubjects)
    : null;
  const noise = method === "noise" ? fixedNoise ?? rule?.level ?? null : null;
  // The default windows scale ROME's 10 of 48 layers to this model's depth (a window of 10 would
  // restore every layer of a model with 10 layers or fewer, and every cell would look the same).
  const scaled = scaledMlpWindow(model.nLayer);
  const windows = window ?? { resid: 1, mlp: scaled, attn: scaled };
  const options: TraceOptions = { method, kinds, window: windows, samples, noise: noise ?? undefined, seed };
  console.error(
    `windows: ${kinds.map((k) => `${k} ${windowFor(k, windows)}`).join(", ")} of ${model.nLayer} layers` +
      (window === undefined
        ? ` (default: resid 1, otherwise max(1, round(10 x ${model.nLayer} / 48)))`
        : "") +
      (method === "noise" ? `; ${samples} noise samples, seed ${seed}` : ""),
  );

  const outDir = values.out!;
  await makeOutputFolder(outDir, ["heatmaps"]);
  const traces: (FactTrace & { known_id: number | null })[] = [];
  const started = performance.now();
  const progress = facts.length > 1 ? new ProgressBar("tracing", facts.length) : null;
  for (const [i, fact] of facts.entries()) {
    const trace = { ...await traceFact(model, tok, fact, options), known_id: fact.known_id };
    traces.push(trace);
    gpu.trimPool(); // prompts of other lengths need other buffer sizes: do not hoard this prompt's
    await writeAtomic(join(outDir, "heatmaps", `fact-${fact.known_id ?? i}.svg`), heatmapSvg(trace));
    progress?.update(i + 1, `${fact.subject} -> ${fact.target}: p(clean) ${trace.clean.toFixed(3)}`);
  }
  const seconds = (performance.now() - started) / 1000;

  const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
  const averages = traces.length > 1 ? averageTraces(traces) : [];
  if (traces.length === 1) {
    const t = traces[0];
    console.log(
      `${JSON.stringify(t.prompt)} -> ${JSON.stringify(t.targetToken)}: p(clean) ${t.clean.toFixed(4)}` +
        (t.corrupted === null ? "" : `, p(corrupted) ${t.corrupted.toFixed(4)}`),
    );
    for (const kind of kinds) console.log("\n" + terminalHeatmap(t, kind, { color }));
    console.log("\nstrongest cells:");
    for (const c of topCells(t, 8)) {
      console.log(
        `  ${c.kind.padEnd(5)} ${c.tokenString.padEnd(16)} layer ${String(c.layer).padStart(3)}  p ${
          c.prob.toFixed(4)
        }  effect ${c.effect.toPrecision(3)}  fraction ${
          Number.isFinite(c.fraction) ? c.fraction.toFixed(3) : "n/a"
        }`,
      );
    }
  } else if (traces.length === 0) {
    console.log("no facts to trace");
  } else {
    for (const a of averages) {
      console.log("\n" + terminalAverage(a, { color }));
      await writeAtomic(join(outDir, `average-${a.kind}.svg`), averageCurvesSvg(a));
    }
    await writeAtomic(join(outDir, "average-heatmap.svg"), averageHeatmapSvg(averages));
  }

  const meta = runMetadata({
    tool: "./locus task trace",
    model: modelDir,
    config: model.config,
    dataset,
    adapter: gpu.describe(),
  }, {
    facts: { ...(counts ?? {}), traced: traces.length },
    method: method === "noise"
      ? "causal tracing: noise the subject, restore clean states"
      : "representation zeroing of clean states",
    hyperparameters: {
      kinds,
      windows: Object.fromEntries(kinds.map((k) => [k, windowFor(k, windows)])),
      windowRule: window === undefined
        ? "resid 1; mlp and attn max(1, round(10 L / 48))"
        : "fixed (--window)",
      samples: method === "noise" ? samples : null,
      noise,
      noiseRule: method === "noise"
        ? (rule
          ? `${rule.rule} over ${rule.subjects} subjects = ${DEFAULT_NOISE_STDS} x ${rule.std}`
          : "fixed (--noise)")
        : null,
      target: "probability of the first token of ' ' + target at the last prompt position",
      knownFilter: counts ? "greedy next token = first token of ' ' + the true answer" : null,
    },
    seed,
  }, seconds);
  await writeRunJson(join(outDir, "trace.json"), meta, { facts: traces, averages });
  const run: RunColumns = {
    model: modelDir,
    dataset,
    method,
    seed,
    samples: meta.hyperparameters.samples,
    noise,
    adapter: meta.adapter,
  };
  await writeAtomic(join(outDir, "trace.csv"), traceCsv(run, traces));
  if (averages.length) await writeAtomic(join(outDir, "averages.csv"), averagesCsv(run, averages));
  console.error(
    `\n${traces.length} fact(s) traced in ${
      formatSeconds(seconds)
    }; wrote ${outDir}/trace.json, trace.csv, heatmaps/` +
      (averages.length ? ", averages.csv, average-*.svg (curves and heatmap)" : ""),
  );
  return 0;
}

if (import.meta.main) await runMain("trace", main);
