// ./locus task attribute: integrated gradients over MLP neurons, or Layer Gradient Analysis, for one
// prompt or a CounterFact-style dataset.
//
//   ./locus task attribute --method ig --prompt "Vela Dornik was born in" --target Lisbon
//   ./locus task attribute --method ig --limit 50 --trace          (embedded counterfact.json, with causal tracing)
//   ./locus task attribute --method lga --prompt "Vela Dornik was born in" --target Lisbon --target-new Oslo
//   ./locus task attribute --method lga --dataset weights/locus-kb/counterfact.json --limit 100
//
// Writes into --out (default runs/attribute-<method>): attribution.json (records with the run's
// metadata) and pictures: for ig, layer-sum.svg / layer-max.svg (per-layer curves), neurons.svg
// (layers x neurons, averaged over facts) and with --trace, ig-vs-tracing.svg (prompts x layers,
// attribution above causal tracing, as in Chun & Hur's figure 1); for lga, lga.svg (S_l with fences).
import { writeAtomic } from "../../engine/files.ts";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import {
  DEFAULT_IG_STEPS,
  knowledgeNeurons,
  layerGradientAnalysis,
  type LgaParam,
  type LgaResult,
} from "../localization/attribution.ts";
import {
  attributionCases,
  averageDrop,
  igHyperparameters,
  igRecords,
  type IgRun,
  type IgRunOptions,
  lgaHyperparameters,
  lgaRecords,
  runIntegratedGradients,
} from "../localization/attribution_runs.ts";
import { heatmapPanelsSvg, layerCurvesSvg, lgaChartSvg, neuronHeatmapSvg } from "../pictures/attribution.ts";
import { scaledMlpWindow, type SelectionRequest } from "../localization/layer_selection.ts";
import {
  formatSeconds,
  makeOutputFolder,
  positiveInt,
  ProgressBar,
  runMetadata,
  writeRunJson,
} from "../output.ts";
import { runMain } from "../../engine/main.ts";

const USAGE = `usage: ./locus task attribute --method ig|lga [options]
  --model DIR          Hugging Face GPT-2 folder (default: the embedded model ${DEFAULT_MODEL_DIR})
  --method ig|lga      integrated gradients over MLP neurons, or Layer Gradient Analysis
  --prompt TEXT --target TEXT [--target-new TEXT] [--subject TEXT]
                       one fact (the prompt with its subject filled in; lga needs --target-new,
                       --trace needs --subject)
  --dataset FILE       CounterFact-style JSON (default: counterfact.json in the model folder);
                       ig also reads known_1000, zsRE and KnowEdit files (experiments/data/datasets.ts)
  --limit N            use the first N cases of the dataset (after --known)
  --known              keep only the cases whose greedy next token is the true answer's first token
  --steps N            ig: points of the Riemann sum (default ${DEFAULT_IG_STEPS})
  --aggregate sum|max  ig: per-layer score used for the selected layers (default sum)
  --trace              ig: also trace each fact (MLP indirect effect at the last subject token) and
                       draw attribution against tracing
  --window N           ig --trace: MLP layers restored around each layer (default: ROME's 10 of 48
                       layers scaled to the model, max(1, round(10 L / 48)))
  --samples N          ig --trace: noise draws per fact (default 10)
  --params LIST        lga: c_proj or c_proj,c_fc (default c_proj)
  --fence K            lga: Tukey fence multiplier (default 1.5)
  --out DIR            output folder (default runs/attribute-<method>)`;

/** A progress bar on stderr (plain lines when it is not a terminal) counting `what`. */
function progress(what: string): (done: number, total: number) => void {
  let bar: ProgressBar | null = null;
  return (done, total) => {
    bar ??= new ProgressBar(what, total);
    bar.update(done);
  };
}

/** A text table; each numeric column has the fixed decimals that give its largest value 4 significant
 *  digits, so small entries read as 0.000016 or 0.000000 rather than 1.591e-5 or 8.403e-19. */
function table(header: string[], rows: (string | number)[][]): string {
  const decimals = header.map((_, c) => {
    const big = Math.max(...rows.map((r) => (typeof r[c] === "number" ? Math.abs(r[c] as number) : 0)));
    return big > 0 && Number.isFinite(big) ? Math.min(12, Math.max(0, 3 - Math.floor(Math.log10(big)))) : 0;
  });
  const cells = [
    header,
    ...rows.map((r) => r.map((v, c) => (typeof v === "number" ? v.toFixed(decimals[c]) : v))),
  ];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => String(r[c]).length)));
  return cells.map((r) => r.map((v, c) => String(v).padStart(widths[c])).join("  ")).join("\n");
}

/** Writes integrated gradients' pictures and prints its per-layer table and choices. */
async function showIg(run: IgRun, aggregate: "sum" | "max", out: string): Promise<string[]> {
  const { results, average: avg, selection, tracing, tracingMean } = run;
  const title = results.length === 1
    ? `${results[0].prompt} → ${results[0].targetToken.trim()} (p ${results[0].prob.toFixed(3)})`
    : `mean over ${results.length} facts`;
  await writeAtomic(
    join(out, "layer-sum.svg"),
    layerCurvesSvg(
      [{ name: "sum", values: avg.layerSum }, { name: "p - p(layer zeroed)", values: averageDrop(results) }],
      `Integrated gradients, per-layer sum of neuron attributions: ${title}`,
      "attribution (probability)",
    ),
  );
  await writeAtomic(
    join(out, "layer-max.svg"),
    layerCurvesSvg(
      [{ name: "max", values: avg.layerMax }],
      `Integrated gradients, per-layer largest neuron attribution: ${title}`,
      "attribution (probability)",
    ),
  );
  await writeAtomic(join(out, "neurons.svg"), neuronHeatmapSvg(avg.neurons, `Neuron attributions: ${title}`));
  if (tracing) {
    const labels = results.map((r) => `${r.prompt} → ${r.targetToken.trim()}`);
    await writeAtomic(
      join(out, "ig-vs-tracing.svg"),
      heatmapPanelsSvg(
        [
          {
            title: "integrated gradients: per-layer sum of attributions",
            rowLabels: labels,
            values: results.map((r) => r.layerSum),
            xLabel: "layer",
          },
          {
            title: "causal tracing: MLP indirect effect at the last subject token",
            rowLabels: labels,
            values: tracing,
            xLabel: "layer",
          },
        ],
        "Attribution (top) vs causal tracing (bottom) per prompt",
      ),
    );
  }

  const rows = avg.layerSum.map((
    sum,
    l,
  ) => [String(l), sum, avg.layerMax[l], ...(tracingMean ? [tracingMean[l]] : [])]);
  console.log(`${title}\n`);
  console.log(table(["layer", "mean sum", "mean max", ...(tracing ? ["tracing AIE"] : [])], rows));
  console.log(
    `\nselected by ${aggregate}: ROME layer ${selection[aggregate].rome[0]}, MEMIT layers ${
      selection[aggregate].memit.join(",")
    }`,
  );
  if (run.tracingSelection) {
    console.log(
      `selected by causal tracing: ROME layer ${run.tracingSelection.rome[0]}, MEMIT layers ${
        run.tracingSelection.memit.join(",")
      }`,
    );
  }
  if (results.length === 1) {
    console.log("\nknowledge neurons (score > 0.2 x max):");
    for (const n of knowledgeNeurons(results[0]).slice(0, 10)) {
      console.log(`  layer ${n.layer} neuron ${n.neuron}: ${n.score.toPrecision(3)}`);
    }
  }
  return ["layer-sum.svg", "layer-max.svg", "neurons.svg", ...(tracing ? ["ig-vs-tracing.svg"] : [])];
}

/** Writes LGA's picture and prints its per-layer table and choice. */
async function showLga(result: LgaResult, fence: number, out: string): Promise<string[]> {
  await writeAtomic(join(out, "lga.svg"), lgaChartSvg(result));
  const { selection } = result;
  console.log(table(
    ["layer", "S_l", "kept"],
    result.scores.map((s, l) => [String(l), s, selection.excluded.includes(l) ? "excluded" : "yes"]),
  ));
  console.log(
    `\nTukey fences [${selection.fences.lower.toPrecision(4)}, ${
      selection.fences.upper.toPrecision(4)
    }] (k ${fence}); ` +
      `golden layer ${selection.golden}; ranking ${selection.ranking.join(",")}`,
  );
  return ["lga.svg"];
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      method: { type: "string" },
      prompt: { type: "string" },
      subject: { type: "string" },
      target: { type: "string" },
      "target-new": { type: "string" },
      dataset: { type: "string" },
      limit: { type: "string" },
      known: { type: "boolean", default: false },
      steps: { type: "string" },
      aggregate: { type: "string", default: "sum" },
      trace: { type: "boolean", default: false },
      window: { type: "string" },
      samples: { type: "string", default: "10" },
      params: { type: "string", default: "c_proj" },
      fence: { type: "string", default: "1.5" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const method = values.method;
  if (method !== "ig" && method !== "lga") {
    throw new Error(`--method must be ig or lga, got ${JSON.stringify(method)}\n${USAGE}`);
  }
  if (values.prompt !== undefined && values.dataset !== undefined) {
    throw new Error("give either --prompt ... or --dataset, not both");
  }
  if (values.prompt !== undefined && values.target === undefined) {
    throw new Error("--prompt needs --target (the true answer)");
  }
  if (
    values.prompt === undefined &&
    [values.target, values["target-new"], values.subject].some((v) => v !== undefined)
  ) {
    throw new Error("--target, --target-new and --subject go with --prompt");
  }
  if (method === "lga" && values.prompt !== undefined && values["target-new"] === undefined) {
    throw new Error("--method lga with --prompt needs --target-new (the new target)");
  }
  if (method === "ig" && values.trace && values.prompt !== undefined && values.subject === undefined) {
    throw new Error("--trace with --prompt needs --subject (causal tracing corrupts the subject's tokens)");
  }
  const aggregate = values.aggregate;
  if (aggregate !== "sum" && aggregate !== "max") {
    throw new Error(`--aggregate must be sum or max, got ${JSON.stringify(aggregate)}`);
  }
  const params = values.params!.split(",") as LgaParam[];
  if (params.some((p) => p !== "c_proj" && p !== "c_fc")) {
    throw new Error(`--params must list c_proj and/or c_fc, got ${JSON.stringify(values.params)}`);
  }
  const fence = Number(values.fence);
  if (!(fence >= 0)) throw new Error(`--fence must be a number >= 0, got ${JSON.stringify(values.fence)}`);
  const steps = positiveInt("steps", values.steps, DEFAULT_IG_STEPS);
  if (steps < 2) throw new Error("--steps must be at least 2 (alpha runs over k/(steps-1))");
  const limit = positiveInt("limit", values.limit, Infinity);

  const modelDir = await resolveModelDir(values.model!);
  const gpu = await getGpu();
  const [model, tok] = await Promise.all([Model.load(gpu, modelDir), loadTokenizer(modelDir)]);
  console.error(
    `model ${modelDir} (${model.config.nLayer} layers, d=${model.config.nEmbd}) on ${gpu.describe()}`,
  );
  const trace = values.trace
    ? {
      window: positiveInt("window", values.window, scaledMlpWindow(model.nLayer)),
      samples: positiveInt("samples", values.samples, 10),
    }
    : null;
  if (trace) {
    console.error(
      `tracing: MLP window ${trace.window} of ${model.nLayer} layers` +
        (values.window === undefined ? ` (default: max(1, round(10 x ${model.nLayer} / 48)))` : "") +
        `, ${trace.samples} noise samples`,
    );
  }

  let requests: SelectionRequest[];
  let dataset: string;
  let cases: { records: number; known: number | null; used: number } | null = null;
  if (values.prompt !== undefined) {
    dataset = "command line";
    requests = [{
      prompt: values.prompt,
      subject: values.subject ?? "",
      targetTrue: values.target!,
      targetNew: values["target-new"] ?? "",
    }];
  } else {
    dataset = values.dataset ?? join(modelDir, "counterfact.json");
    const got = await attributionCases(model, tok, dataset, method, { limit, known: values.known });
    requests = got.requests;
    cases = got.cases;
    console.error(
      `${dataset}: ${got.format}, using ${requests.length} of ${cases.records} cases` +
        (cases.known === null ? "" : ` (the model completes ${cases.known} correctly)`),
    );
  }
  if (requests.length === 0) throw new Error(`${dataset}: no cases`);

  const out = values.out ?? `runs/attribute-${method}`;
  await makeOutputFolder(out);
  const started = performance.now();
  let body: object, pictures: string[];
  const ig: IgRunOptions = { steps, aggregate, trace, onProgress: progress };
  if (method === "ig") {
    const run = await runIntegratedGradients(model, tok, requests, ig);
    pictures = await showIg(run, aggregate, out);
    body = igRecords(run, requests, aggregate);
  } else {
    const result = await layerGradientAnalysis(model, tok, requests, {
      params,
      fenceK: fence,
      onProgress: requests.length > 1 ? progress("requests") : undefined,
    });
    pictures = await showLga(result, fence, out);
    body = lgaRecords(result, requests);
  }
  const seconds = (performance.now() - started) / 1000;

  const meta = runMetadata({
    tool: "./locus task attribute",
    model: modelDir,
    config: model.config,
    dataset,
    adapter: gpu.describe(),
  }, {
    cases,
    method: method === "ig"
      ? "integrated gradients over MLP neurons (pre-GELU c_fc output at the last prompt position)"
      : "Layer Gradient Analysis",
    hyperparameters: method === "ig" ? igHyperparameters(ig) : lgaHyperparameters(params, fence),
  }, seconds);
  await writeRunJson(join(out, "attribution.json"), meta, { ...body, pictures });
  console.error(
    `\n${requests.length} case(s) in ${formatSeconds(seconds)}; wrote ${out}/attribution.json, ${
      pictures.join(", ")
    }`,
  );
  return 0;
}

if (import.meta.main) await runMain("attribute", main);
