// ./locus task demo: the README's main command. In about a minute on the embedded model:
//   1. pick a fact the model knows and show its answer (with a warning when it does not predict it),
//   2. trace where the answer comes from (causal tracing: terminal heatmap + SVG),
//   3. choose the layer to edit, saying why: the trace's peak at the token the edit keys on when it
//      clears the noise threshold (tracingEvidence), else the model's documented default layer
//      (editing/hparams.ts); or Layer Gradient Analysis with --strategy lga,
//   4. rewrite the fact with ROME and show, for each prompt, p(true object) and p(new object) before and
//      after as bars, then the scores (each average labelled with what it averages over),
//   5. undo the edit and show that the model is back to its original answers bit for bit.
// Everything shown is also written as one self-contained page, runs/demo/index.html.
//
//   ./locus task demo [--case N] [--strategy lga|tracing] [--model DIR] [--out DIR]
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { exists, writeAtomic } from "../../engine/files.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import { runMain } from "../../engine/main.ts";
import { loadDataset } from "../data/datasets.ts";
import { applyEdit } from "../editing/edit.ts";
import { romeHparams } from "../editing/hparams.ts";
import { instantiate } from "../editing/keys.ts";
import { computeEdits, FACT_TOKEN_NAMES, methodConfig, templateStartWords } from "../editing/methods.ts";
import { caseProbabilities, caseScores, editingCase } from "../editing/problems.ts";
import { methodKeyStats } from "../editing/single_edit.ts";
import {
  formatStandardScores,
  neighborhoodScore,
  type Probe,
  probeAnswers,
  type ProbeResult,
  probeResults,
  rewriteScore,
  standardBaseline,
  standardScores,
} from "../evaluation/metrics.ts";
import { knowsAnswers } from "../evaluation/recall.ts";
import { layerGradientAnalysis } from "../localization/attribution.ts";
import {
  defaultTraceWindows,
  EVIDENCE_MIN,
  EVIDENCE_SHARE,
  tracingEvidence,
} from "../localization/layer_selection.ts";
import { subjectNoiseLevel, traceFact } from "../localization/tracing.ts";
import { demoHtml, noiseText, percent, terminalBars, top3 } from "../pictures/demo_page.ts";
import { heatmapSvg, terminalHeatmap } from "../pictures/heatmap.ts";
import { numberOption, ProgressBar } from "../output.ts";

const USAGE = `usage: ./locus task demo [options]
  --case N            the CounterFact case_id to edit (default: the first fact the model knows)
  --strategy S        how to choose the layer: tracing (default: the peak of this fact's causal trace at
                      the token the edit keys on, if it clears the noise threshold, else the model's
                      documented default layer) or lga (Layer Gradient Analysis on 10 other facts)
  --model DIR         a GPT-2 folder with counterfact.json and corpus.txt (default ${DEFAULT_MODEL_DIR})
  --out DIR           where the page (index.html) and the trace's SVG go (default runs/demo)
  --stats-dir DIR     key statistics cache (default runs/editing-stats)
  --v-steps N         ROME's optimisation steps (default: the model's, editing/hparams.ts)
  --no-color          plain characters instead of coloured cells`;

const PROXY_FACTS = 10;

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
  const dir = await resolveModelDir(values.model!);
  for (const file of ["model.safetensors", "counterfact.json", "corpus.txt"]) {
    if (!(await exists(`${dir}/${file}`))) {
      throw new Error(
        `${dir}/${file} is missing.` +
          (dir === DEFAULT_MODEL_DIR ? " Train the embedded model first: ./locus task train" : ""),
      );
    }
  }
  const started = performance.now();
  let lap = started;
  /** Seconds since the previous call, for the "(2.3 s)" after each step. */
  const took = () => {
    const now = performance.now(), s = ((now - lap) / 1000).toFixed(1);
    lap = now;
    return `(${s} s)`;
  };
  const color = !values["no-color"] && Deno.stdout.isTerminal();
  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  console.log(`Locus demo: where does a language model keep a fact, and can we rewrite it?`);
  console.log(`Model ${dir}: ${model.config.family} with ${L} layers, width ${model.config.nEmbd}`);
  console.log(`Adapter: ${gpu.describe()}\n`);

  // 1. A fact the model knows.
  const { cases } = await loadDataset(`${dir}/counterfact.json`);
  const pool = values.case === undefined ? cases.slice(0, 200) : cases;
  const candidates = pool.map((c) => ({ id: c.id, c: editingCase(c) }));
  const isKnown = await knowsAnswers(
    model,
    tok,
    candidates.map(({ c }) => ({ prompt: c.prompt.replace("{}", c.subject), answer: c.targetTrue })),
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
  const { id, c } = candidates[index];
  const prompt = c.prompt.replace("{}", c.subject);
  const probes: Probe[] = [
    { label: "the fact", text: prompt },
    ...c.paraphrases.slice(0, 1).map((text) => ({ label: "a paraphrase", text })),
    ...c.neighbors.slice(0, 1).map((text) => ({ label: "a neighbour", text })),
  ];
  console.log(`1. The fact (${id}): "${prompt} ..." -> ${c.targetTrue}`);
  const before = await probeAnswers(model, tok, probes, c.targetTrue, c.targetNew);
  console.log(`   After "${prompt}" the model answers: ${top3(before.top[0])} ${took()}`);
  const knownWarning = isKnown[index] ? null : `WARNING: the model does not predict ${c.targetTrue} here ` +
    `(its answer is ${before.top[0][0].token.trim()}), so there is no known fact to trace or rewrite; ` +
    `the numbers below are about a fact the model does not hold.`;
  if (knownWarning) console.log(`   ${knownWarning}`);

  // 2. Causal tracing: which hidden states carry the answer? The noise follows ROME's rule over the
  // subjects of the facts the model knows among those it was asked (this one's alone if it knows none).
  const windows = defaultTraceWindows(L);
  const knownSubjects = candidates.filter((_, i) => isKnown[i]).map(({ c }) => c.subject);
  const noise = await subjectNoiseLevel(model, tok, knownSubjects.length ? knownSubjects : [c.subject]);
  const trace = await traceFact(model, tok, { prompt, subject: c.subject, target: c.targetTrue }, {
    window: windows,
    noise: noise.level,
  });
  console.log(
    `\n2. Causal tracing: noise the subject's words (*), then restore one hidden state at a time.` +
      `\n   Darker = restoring that state brings back more of p(${c.targetTrue}) ` +
      `(clean ${percent(trace.clean)}, noised ${percent(trace.corrupted!)}; windows: resid 1, MLP and ` +
      `attention ${windows.mlp} of ${L} layers = ROME's 10 of 48 scaled to the depth; ${trace.samples} noise samples).` +
      `\n   Noise: ${noiseText(noise)}.`,
  );
  for (const kind of ["resid", "mlp"] as const) {
    console.log(
      terminalHeatmap(trace, kind, { color }).split("\n").map((line) => `   ${line}`).join("\n"),
    );
  }
  await Deno.mkdir(values.out!, { recursive: true });
  const svgPath = join(values.out!, `trace-${id.replace(":", "-")}.svg`);
  await writeAtomic(svgPath, heatmapSvg(trace));
  console.log(`   (all three heatmaps: ${svgPath}) ${took()}`);

  // 3. Which layer to edit, and which token keys the edit (both from the model's documented defaults,
  // editing/hparams.ts, unless the trace clears the noise).
  const defaults = methodConfig(model, "rome", {});
  const factToken = defaults.hparams.factToken;
  const instance = instantiate(tok, "{}", c.prompt, c.subject, undefined, factToken);
  if (instance.ids.join() !== trace.ids.join()) {
    throw new Error(`"${prompt}": the edit and the trace tokenize the prompt differently`);
  }
  const keyToken = tok.tokenString(instance.ids[instance.fact]).trim();
  const evidence = tracingEvidence(trace, instance.fact);
  const defaultLayer = romeHparams(model.config).layer;
  const others = candidates.filter((_, i) => i !== index && isKnown[i]).slice(0, PROXY_FACTS);
  let lgaLayer: number | null = null;
  if (strategy === "lga") {
    if (others.length === 0) throw new Error("LGA needs other facts the model knows; use --strategy tracing");
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
  }
  const peakText = `restoring the MLP output at "${keyToken}" helps most at layer ${evidence.peak} ` +
    `(effect ${evidence.effects[evidence.peak].toFixed(3)}; noise threshold ${
      evidence.threshold.toFixed(3)
    } = ` +
    `max(${EVIDENCE_MIN}, ${EVIDENCE_SHARE} x (clean - noised)))`;
  const layer = lgaLayer ?? (evidence.clears ? evidence.peak : defaultLayer);
  const layerText = [
    `The edit keys on "${keyToken}", ${FACT_TOKEN_NAMES[factToken]} (this model's default fact token; ` +
    "editing/hparams.ts).",
    lgaLayer !== null
      ? `Layer Gradient Analysis on ${others.length} other facts picks layer ${lgaLayer}; we edit it. ` +
        `(For comparison, ${peakText}.)`
      : evidence.clears
      ? `The trace clears the noise: ${peakText}. We edit MLP layer ${layer}.`
      : `The trace does not clear the noise: ${peakText}. It cannot tell the layers apart, so we edit ` +
        `this model's documented default layer ${defaultLayer} (editing/hparams.ts).`,
  ];
  console.log(`\n3. Where to edit? ${layerText.join("\n   ")} ${took()}`);

  // 4. ROME: a rank-one change of that layer's MLP weights.
  const mc = methodConfig(model, "rome", {
    layers: [layer],
    vNumGradSteps: numberOption("v-steps", values["v-steps"]),
  });
  const corpus = `${dir}/corpus.txt`;
  let statsProgress: ProgressBar | undefined;
  const stats = await methodKeyStats(model, tok, mc, {
    corpus,
    cacheDir: values["stats-dir"],
    // Only a first run computes them (then they are cached): say so rather than sit silent.
    onProgress: (done, total) => {
      statsProgress ??= new ProgressBar(`   key statistics of layer ${layer} (first run only)`, total);
      statsProgress.update(done);
    },
  });
  const request = { prompt: c.prompt, subject: c.subject, target: c.targetNew };
  const [edit] = await computeEdits(model, tok, mc, [request], stats, {
    startWords: await templateStartWords(tok, corpus),
  });
  const pre = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  // The demo's edit injects a new object, so the standard metrics always apply.
  const baseline = (await standardBaseline(model, tok, c, request))!;
  const applied = await applyEdit(model, edit);
  console.log(
    `\n4. ROME rewrites "${prompt}" to answer ${c.targetNew}: one rank-one change of layer ${layer}'s MLP, ` +
      `keyed on "${keyToken}" ${took()}`,
  );
  const after = await probeAnswers(model, tok, probes, c.targetTrue, c.targetNew);
  const post = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  const [standard] = await standardScores(model, tok, [baseline]);
  const results = probeResults(probes, before, after);
  for (const r of results) {
    console.log(`   ${r.label.padEnd(13)} "${r.text}"`);
    console.log(`   ${"".padEnd(13)}   top answers before: ${top3(r.before)}`);
    console.log(`   ${"".padEnd(13)}   top answers after:  ${top3(r.after)}`);
    for (const row of terminalBars(r, c, !values["no-color"])) console.log(row);
  }
  const s = caseScores(request, pre, post);
  const score = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
  // The scores of the prompts shown, then the averages over all of the case's prompts of that kind.
  const shown = (label: string, f: (r: ProbeResult) => number) => {
    const r = results.find((x) => x.label === label);
    return r ? `${score(f(r))} for the one shown, ` : "";
  };
  const scoreLines = [
    `Hase et al.'s scores (1 = perfect): rewrite ${score(s.rewrite)} (the fact's prompt); paraphrase ` +
    `${shown("a paraphrase", (r) => rewriteScore(r.pNew[0], r.pNew[1]))}${
      score(s.paraphrase)
    } average over ` +
    `${c.paraphrases.length}; neighbour unchanged (p(${c.targetNew}) stays put) ` +
    `${shown("a neighbour", (r) => neighborhoodScore(r.pNew[0], r.pNew[1]))}${score(s.neighborhood)} ` +
    `average over ${c.neighbors.length}.`,
    `Standard metrics (docs/metrics.md; success and locality are averages over the same prompts): ` +
    formatStandardScores(standard),
  ];
  for (const line of scoreLines) console.log(`   ${line}`);

  // 5. Undo.
  applied.undo();
  const restored = await probeAnswers(model, tok, probes, c.targetTrue, c.targetNew);
  const same =
    restored.top.every((r, i) =>
      r.every((p, j) => p.id === before.top[i][j].id && p.prob === before.top[i][j].prob)
    ) && restored.p.every(([t, n], i) => t === before.p[i][0] && n === before.p[i][1]);
  const undoText = same
    ? "Identical to before the edit, to the last bit."
    : "WARNING: not identical to before the edit.";
  console.log(
    `\n5. Undo: the original weights are back. The model answers: ${top3(restored.top[0])} ${took()}`,
  );
  console.log(`   ${undoText}`);
  const seconds = (performance.now() - started) / 1000;
  const page = resolve(values.out!, "index.html");
  await writeAtomic(
    page,
    demoHtml({
      model: dir,
      adapter: gpu.describe(),
      id,
      c,
      prompt,
      knownWarning,
      noise,
      trace,
      evidence,
      keyToken,
      layerText,
      layer,
      probes: results,
      scoreLines,
      undoText,
      seconds,
    }),
  );
  console.log(
    `\nDone in ${seconds.toFixed(1)} s. The page: ${page}. ` +
      `Next: ./locus task study (the whole localization-vs-editing study).`,
  );
  return same ? 0 : 1;
}

if (import.meta.main) await runMain("demo", main);
