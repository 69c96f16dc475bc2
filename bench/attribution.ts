// Layer-selection time on one proxy set of edit requests: Layer Gradient Analysis against causal
// tracing (CMA), integrated gradients and brute force (the Golden Layers paper's figure 4 reports LGA much faster than
// both CMA and brute force).
//
//   ./locus run -A bench/attribution.ts                         embedded model, first 10 CounterFact cases
//   ./locus run -A bench/attribution.ts --proxy 20 --method rome --out runs/bench-attribution.json
//
// Brute force is real: at every layer, the editing method (R-ROME by default, as in the Golden Layers paper, without
// the mom2 adjustment as in EasyEdit's R-ROME/gpt2-xl.yaml, so no key statistics are needed) computes
// one edit per request, and each edit is applied, scored (efficacy magnitude: mean over requests of
// p(target_new) - p(target_true) after the prompt, teacher forced) and undone; the best layer wins.
// With the mom2 adjustment brute force would also need key statistics at every layer: slower still.
// Every strategy first runs once on one request so that pipeline compilation is not timed.
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { applyEdit, type EditRequest } from "../experiments/editing/edit.ts";
import { computeEdits, methodConfig, templateStartWords } from "../experiments/editing/methods.ts";
import {
  bruteForceSelector,
  causalTracingSelector,
  type EditAndScore,
  integratedGradientsSelector,
  type LayerSelection,
  type LayerSelector,
  lgaSelector,
  scaledMlpWindow,
  type SelectionRequest,
  selectionRequests,
} from "../experiments/localization/layer_selection.ts";
import { probabilityOfContinuation } from "../experiments/evaluation/metrics.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: DEFAULT_MODEL_DIR },
    dataset: { type: "string" },
    proxy: { type: "string", default: "10" },
    method: { type: "string", default: "r-rome" },
    samples: { type: "string", default: "10" },
    steps: { type: "string", default: "20" },
    out: { type: "string" },
  },
});
const positive = (name: string, s: string) => {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(s)}`);
  }
  return n;
};
const proxy = positive("proxy", values.proxy!),
  samples = positive("samples", values.samples!),
  steps = positive("steps", values.steps!);
const method = values.method!;
if (method !== "rome" && method !== "r-rome") {
  throw new Error(`--method must be rome or r-rome, got ${JSON.stringify(method)}`);
}

const modelDir = values.model!;
try {
  await Deno.stat(join(modelDir, "model.safetensors"));
} catch {
  console.log(`skipped: ${modelDir}/model.safetensors does not exist yet (train it: ./locus task train)`);
  Deno.exit(0);
}
const gpu = await getGpu();
const [model, tok] = await Promise.all([Model.load(gpu, modelDir), loadTokenizer(modelDir)]);
const cfg = model.config;
const datasetPath = values.dataset ?? join(modelDir, "counterfact.json");
const cases = (await loadDataset(datasetPath)).cases.slice(0, proxy);
const requests = selectionRequests(cases);
const editRequests: EditRequest[] = cases.map((c) => {
  if (c.template === null) {
    throw new Error(`${c.id}: the subject does not occur in the prompt, so it cannot be edited`);
  }
  return { prompt: c.template, subject: c.subject, target: c.targetNew! };
});
const corpus = join(modelDir, "corpus.txt");
const startWords = await templateStartWords(tok, await Deno.stat(corpus).then(() => corpus, () => null));
console.log(`adapter: ${gpu.describe()}`);
console.log(
  `model ${modelDir} (L=${cfg.nLayer}, d=${cfg.nEmbd}, V=${cfg.vocabSize}); proxy set: ${requests.length} cases of ${datasetPath}`,
);

/** Edit at `layer` (one edit per request, computed together), apply each alone, score it, undo it. */
const editAndScore: EditAndScore = async (layer, rs) => {
  const mc = methodConfig(model, method, { layers: [layer] });
  if (mc.method !== "rome" && mc.method !== "r-rome") throw new Error("unreachable: a ROME-family method");
  mc.hparams.mom2Adjustment = false;
  const chosen = rs.map((r) => editRequests[requests.indexOf(r)]);
  const edits = await computeEdits(model, tok, mc, chosen, new Map(), { startWords });
  let total = 0;
  for (const [i, edit] of edits.entries()) {
    const applied = await applyEdit(model, edit);
    const [nllNew, nllTrue] = await probabilityOfContinuation(model, tok, [rs[i].prompt, rs[i].prompt], [
      rs[i].targetNew,
      rs[i].targetTrue,
    ]);
    applied.undo();
    total += Math.exp(-nllNew) - Math.exp(-nllTrue);
  }
  return total / rs.length;
};

const selectors: LayerSelector[] = [
  lgaSelector(),
  causalTracingSelector({ trace: { samples } }),
  integratedGradientsSelector({ steps }),
  bruteForceSelector(editAndScore),
];

// Warm-up on one request (brute force at one layer): pipelines compile at first use.
const one: SelectionRequest[] = requests.slice(0, 1);
for (const s of selectors.slice(0, 3)) await s.select(model, tok, one);
await editAndScore(0, one);

const timings: (LayerSelection & { name: string })[] = [];
for (const s of selectors) {
  const result = await s.select(model, tok, requests);
  timings.push({ name: s.name, ...result });
}
const brute = timings.at(-1)!.seconds;
console.log(
  `\n${"strategy".padEnd(28)} ${"seconds".padStart(9)}  ${"x faster than brute force".padStart(25)}  layers`,
);
for (const t of timings) {
  console.log(
    `${t.name.padEnd(28)} ${t.seconds.toFixed(2).padStart(9)}  ${
      (brute / t.seconds).toFixed(1).padStart(25)
    }  ${t.layers.join(",")}`,
  );
}
console.log(
  `\nLGA: one forward + backward over ${
    2 * requests.length
  } sequences; causal tracing: ${requests.length} x (tokens x layers) ` +
    `cells x ${samples} samples (MLP, window ${
      scaledMlpWindow(cfg.nLayer)
    }); integrated gradients: ${requests.length} x ${cfg.nLayer} x ${steps} scaled copies; ` +
    `brute force: ${cfg.nLayer} layers x (${method} on ${requests.length} requests, without mom2 adjustment, + apply/score/undo each).`,
);
if (values.out) {
  await Deno.writeTextFile(
    values.out,
    JSON.stringify(
      {
        bench: "layer selection",
        model: modelDir,
        config: cfg,
        dataset: datasetPath,
        proxy: requests.length,
        bruteForce: {
          method,
          mom2Adjustment: false,
          score: "mean p(target_new) - p(target_true) after the edit",
        },
        tracing: { kind: "mlp", window: scaledMlpWindow(cfg.nLayer), samples },
        integratedGradients: { steps },
        adapter: gpu.describe(),
        date: new Date().toISOString(),
        timings,
      },
      null,
      1,
    ) + "\n",
  );
}
