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
  averageTraces,
  DEFAULT_NOISE_STDS,
  factChunks,
  type FactTrace,
  STATE_KINDS,
  type StateKind,
  windowFor,
} from "../localization/tracing.ts";
import {
  averagesCsv,
  commandLineSelection,
  datasetSelection,
  type RunColumns,
  traceCsv,
  traceHyperparameters,
  tracePlan,
  type TraceRequest,
} from "../localization/trace_facts.ts";
import { runMain } from "../../engine/main.ts";

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

  const selection = values.prompt !== undefined
    ? commandLineSelection({ prompt: values.prompt, subject: values.subject!, target: values.target! })
    : await datasetSelection(
      model,
      tok,
      values.dataset ?? join(modelDir, "known_facts.json"),
      limit,
      (line) => console.error(line),
    );
  const { facts, dataset, counts } = selection;
  if (counts) {
    console.error(
      `${dataset}: the model completes ${counts.known} of ${counts.records} facts correctly; tracing ${facts.length}`,
    );
  }
  const request: TraceRequest = { method, kinds, window, samples, noise: fixedNoise, seed };
  const plan = await tracePlan(model, tok, selection, request);
  const { options, noise } = plan;
  console.error(
    `windows: ${
      kinds.map((k) => `${k} ${windowFor(k, options.window)}`).join(", ")
    } of ${model.nLayer} layers` +
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
  // Facts are traced in chunks that share their batches (as many as the adapter's limits allow).
  for await (const chunk of factChunks(model, tok, facts, options)) {
    gpu.trimPool(); // prompts of other lengths need other buffer sizes: do not hoard this chunk's
    for (const trace of chunk) {
      const i = traces.length;
      traces.push(trace);
      await writeAtomic(join(outDir, "heatmaps", `fact-${trace.known_id ?? i}.svg`), heatmapSvg(trace));
      progress?.update(i + 1, `${trace.subject} -> ${trace.target}: p(clean) ${trace.clean.toFixed(3)}`);
    }
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
    hyperparameters: traceHyperparameters(request, plan, counts !== null),
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
