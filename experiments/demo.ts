// deno task demo: the README's main command. In under a minute on the embedded model:
//   1. pick a fact the model knows and show its answer,
//   2. trace where the answer comes from (causal tracing: terminal heatmap + SVG),
//   3. choose a layer to edit (Layer Gradient Analysis on a few other facts, or the fact's own trace),
//   4. rewrite the fact with ROME and show the new answer, a paraphrase and a neighbouring subject,
//   5. undo the edit and show that the model is back to its original answers.
//
//   deno task demo [--case N] [--strategy lga|tracing] [--model DIR] [--out DIR]
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR, type Prediction, predictNext } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { GPT2 } from "../engine/model.ts";
import { loadTokenizer, targetIds, type Tokenizer } from "../engine/tokenizer.ts";
import { layerGradientAnalysis } from "./attribution.ts";
import { loadDataset } from "./datasets.ts";
import { applyEdit } from "./editing/edit.ts";
import { computeEdits, methodConfig, statsLayers, templateStartWords } from "./editing/methods.ts";
import { caseProbabilities, caseScores, type EditingCase, editingCase } from "./editing/problems.ts";
import { statsHparams } from "./editing/hparams.ts";
import { keyStats } from "./editing/stats.ts";
import { heatmapSvg, terminalHeatmap } from "./heatmap.ts";
import { scaledMlpWindow } from "./layer_selection.ts";
import { greedyNextTokens } from "./recall.ts";
import { traceFact } from "./tracing.ts";
import { runMain } from "../engine/main.ts";

const USAGE = `usage: deno task demo [options]
  --case N            the CounterFact case_id to edit (default: the first fact the model knows)
  --strategy S        how to choose the layer: tracing (the peak of this fact's causal trace at the
                      last subject word, default) or lga (Layer Gradient Analysis on 10 other facts)
  --model DIR         a GPT-2 folder with counterfact.json and corpus.txt (default ${DEFAULT_MODEL_DIR})
  --out DIR           where the trace's SVG goes (default runs/demo)
  --stats-dir DIR     key statistics cache (default runs/editing-stats)
  --v-steps N         ROME's optimisation steps (default 20)
  --no-color          plain characters instead of coloured cells`;

const PROXY_FACTS = 10;

function percent(p: number): string {
  return `${(100 * p).toFixed(p >= 0.1 ? 0 : 1)}%`;
}

/** "Oslo 62%, Paris 20%, Rome 4%" */
function top3(predictions: Prediction[]): string {
  return predictions.map((p) => `${p.token.trim()} ${percent(p.prob)}`).join(", ");
}

interface Probe {
  label: string;
  text: string;
}

async function answers(model: GPT2, tok: Tokenizer, probes: Probe[]): Promise<Prediction[][]> {
  const out: Prediction[][] = [];
  for (const p of probes) out.push(await predictNext(model, tok.encode(p.text), 3, tok));
  return out;
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      case: { type: "string" },
      strategy: { type: "string", default: "tracing" },
      out: { type: "string", default: "runs/demo" },
      "stats-dir": { type: "string" },
      "v-steps": { type: "string" },
      "no-color": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const strategy = values.strategy!;
  if (strategy !== "lga" && strategy !== "tracing") {
    throw new Error(`--strategy must be "lga" or "tracing", got "${strategy}"`);
  }
  const dir = values.model!;
  for (const file of ["model.safetensors", "counterfact.json", "corpus.txt"]) {
    try {
      await Deno.stat(`${dir}/${file}`);
    } catch {
      throw new Error(
        `${dir}/${file} is missing.` +
          (dir === DEFAULT_MODEL_DIR ? " Train the embedded model first: ./locus task train" : ""),
      );
    }
  }
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  let lap = started;
  /** Seconds since the previous call, for the "(2.3 s)" after each step. */
  const took = () => {
    const now = performance.now(), s = ((now - lap) / 1000).toFixed(1);
    lap = now;
    return `(${s} s)`;
  };
  const color = !values["no-color"] && Deno.stdout.isTerminal();
  const gpu = await getGpu();
  const model = await GPT2.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  console.log(`Locus demo: where does a language model keep a fact, and can we rewrite it?`);
  console.log(`Model ${dir}: GPT-2 with ${L} layers, width ${model.config.nEmbd}, on ${gpu.describe()}\n`);

  // 1. A fact the model knows.
  const { cases } = await loadDataset(`${dir}/counterfact.json`);
  const pool = values.case === undefined ? cases.slice(0, 200) : cases;
  const candidates = pool.map((c) => ({ id: c.id, c: editingCase(c) }));
  const predicted = await greedyNextTokens(
    model,
    candidates.map(({ c }) => tok.encode(c.prompt.replace("{}", c.subject))),
  );
  const isKnown = candidates.map(({ c }, i) =>
    predicted[i] ===
      targetIds(tok, c.prompt.replace("{}", c.subject), c.targetTrue, { refuseUnknown: true })[0]
  );
  let index: number;
  if (values.case !== undefined) {
    index = candidates.findIndex(({ id }) => id === `counterfact:${values.case}`);
    if (index < 0) {
      throw new Error(`--case ${values.case}: ${dir}/counterfact.json has no case_id ${values.case}`);
    }
  } else {
    index = isKnown.indexOf(true);
    if (index < 0) {
      throw new Error(`the model answers none of the first ${pool.length} facts of ${dir}/counterfact.json`);
    }
  }
  const c: EditingCase = candidates[index].c;
  const prompt = c.prompt.replace("{}", c.subject);
  const probes: Probe[] = [
    { label: "the fact", text: prompt },
    ...c.paraphrases.slice(0, 1).map((text) => ({ label: "a paraphrase", text })),
    ...c.neighbors.slice(0, 1).map((text) => ({ label: "a neighbour", text })),
  ];
  console.log(`1. The fact (${candidates[index].id}): "${prompt} ..." -> ${c.targetTrue}`);
  const before = await answers(model, tok, probes);
  console.log(
    `   The model answers: ${top3(before[0])}` + (isKnown[index] ? "" : "  (it does not know this fact)") +
      ` ${took()}`,
  );

  // 2. Causal tracing: which hidden states carry the answer?
  const window = scaledMlpWindow(L);
  const trace = await traceFact(model, tok, { prompt, subject: c.subject, target: c.targetTrue }, {
    window: { resid: 1, mlp: window, attn: window },
  });
  console.log(
    `\n2. Causal tracing: noise the subject's words (*), then restore one hidden state at a time.` +
      `\n   Darker = restoring that state brings back more of p(${c.targetTrue}) ` +
      `(clean ${percent(trace.clean)}, noised ${percent(trace.corrupted!)}).`,
  );
  for (const kind of ["resid", "mlp"] as const) {
    console.log(
      terminalHeatmap(trace, kind, { color }).split("\n").map((line) => `   ${line}`).join("\n"),
    );
  }
  await Deno.mkdir(values.out!, { recursive: true });
  const svgPath = `${values.out}/trace-${candidates[index].id.replace(":", "-")}.svg`;
  await Deno.writeTextFile(svgPath, heatmapSvg(trace));
  console.log(`   (all three heatmaps: ${svgPath}) ${took()}`);

  // 3. Which layer to edit? Both strategies are cheap; the chosen one decides.
  const mlp = trace.grids.find((g) => g.kind === "mlp")!;
  const lastSubject = mlp.layers.lastSubjectEffect;
  const tracingLayer = lastSubject.indexOf(Math.max(...lastSubject));
  const others = candidates.filter((_, i) => i !== index && isKnown[i]).slice(0, PROXY_FACTS);
  let lgaLayer: number | null = null;
  if (others.length > 0) {
    const lga = await layerGradientAnalysis(
      model,
      tok,
      others.map(({ c }) => ({
        prompt: c.prompt.replace("{}", c.subject),
        targetTrue: c.targetTrue,
        targetNew: c.targetNew,
      })),
    );
    lgaLayer = lga.selection.golden;
  } else if (strategy === "lga") {
    throw new Error("LGA needs other facts the model knows; use --strategy tracing");
  }
  const layer = strategy === "lga" ? lgaLayer! : tracingLayer;
  const tracingText =
    `at the last subject word, restoring the MLP output helps most at layer ${tracingLayer} ` +
    `(effect ${lastSubject[tracingLayer].toFixed(3)})`;
  const lgaText = lgaLayer === null
    ? "Layer Gradient Analysis has no other known facts to run on"
    : `Layer Gradient Analysis on ${others.length} other facts picks layer ${lgaLayer}`;
  console.log(
    `\n3. Where to edit? ${
      strategy === "lga" ? `${lgaText} (and ${tracingText})` : `${tracingText} (${lgaText})`
    }` +
      `:\n   we edit MLP layer ${layer}. ${took()}`,
  );

  // 4. ROME: a rank-one change of that layer's MLP weights.
  const mc = methodConfig(model, "rome", {
    layers: [layer],
    vNumGradSteps: values["v-steps"] === undefined ? undefined : Number(values["v-steps"]),
  });
  const corpus = `${dir}/corpus.txt`;
  const stats = await keyStats(model, tok, {
    corpus,
    layers: statsLayers(mc),
    samples: statsHparams(model.config).samples,
    cacheDir: values["stats-dir"],
  });
  const request = { prompt: c.prompt, subject: c.subject, target: c.targetNew };
  const [edit] = await computeEdits(model, tok, mc, [request], stats, {
    startWords: await templateStartWords(tok, corpus),
  });
  const pre = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  const applied = await applyEdit(model, edit);
  console.log(
    `\n4. ROME rewrites "${prompt}" to answer ${c.targetNew} (one rank-one change of layer ${layer}'s MLP) ${took()}:`,
  );
  const after = await answers(model, tok, probes);
  const post = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  probes.forEach((p, i) => {
    console.log(`   ${p.label.padEnd(13)} "${p.text}"`);
    console.log(`   ${"".padEnd(13)}   before: ${top3(before[i])}`);
    console.log(`   ${"".padEnd(13)}   after:  ${top3(after[i])}`);
  });
  const s = caseScores(request, pre, post);
  const score = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
  console.log(
    `   Scores (1 = perfect): rewrite ${score(s.rewrite)}, paraphrase ${score(s.paraphrase)}, ` +
      `neighbour unchanged ${score(s.neighborhood)}`,
  );

  // 5. Undo.
  applied.undo();
  const restored = await answers(model, tok, probes);
  const same = restored.every((r, i) =>
    r.every((p, j) => p.id === before[i][j].id && p.prob === before[i][j].prob)
  );
  console.log(`\n5. Undo: the original weights are back. The model answers: ${top3(restored[0])} ${took()}`);
  console.log(
    `   ${
      same ? "Identical to before the edit, to the last bit." : "WARNING: not identical to before the edit."
    }`,
  );
  console.log(
    `\nDone in ${seconds()} s. Next: ./locus task study (the whole localization-vs-editing study).`,
  );
  return same ? 0 : 1;
}

if (import.meta.main) await runMain("demo", main);
