// Editing speed: seconds per ROME edit (key statistics cached), per MEMIT batch and per FT-L edit,
// for the embedded model and for GPT-2 small / XL shapes with random weights.
//
//   ./locus run -A bench/editing.ts [--shapes embedded,gpt2,gpt2-xl] [--rome-edits 2] [--memit-batch 100]
//       [--ft-edits 2] [--xl-layers 20] [--steps N] [--out FILE]
//
// GPT-2 XL runs with --xl-layers blocks (default 20: its ROME layer 17, MEMIT's 13-17 and three more):
// on a software adapter one v* step of the 48-layer model (forward and backward of 31 blocks over 21
// prompts) takes minutes. The v* optimisation costs about (blocks after the edit layer + 1) units of
// time, which scales the measurement to the full depth.
//
// Every method runs with its published / documented defaults (hparams.ts) except where --steps caps
// the v* / z optimisation (ROME's 20 steps of a forward and backward pass over 21 prompts take
// minutes per edit at GPT-2 XL size on a software adapter); the report then gives the measured time
// per step and the closed-form time, and extrapolates a full edit from them.
// Key statistics: the embedded model's real ones (runs/editing-stats cache; the streaming time is
// reported when they are computed), one synthetic well-conditioned C [f,f] shared by every layer of
// the random shapes.
// The float64 Cholesky factorisation of C happens once per layer and is timed on its own.
// Random shapes keep GPT-2's vocabulary only where wte fits one storage binding: the engine's backward
// pass does not run through a split embedding (engine/autograd.ts), so on an adapter with 128 MiB
// bindings (llvmpipe) the vocabulary is cut to fit (43,690 rows at d=768, 20,971 at d=1600).
import { parseArgs } from "node:util";
import type { GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { GPT2, parameterShapes, randomWeights } from "../engine/model.ts";
import { loadTokenizer, type Tokenizer, WordLevelTokenizer } from "../engine/tokenizer.ts";
import { applyEdit, type EditRequest } from "../experiments/editing/edit.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import { contextTemplates } from "../experiments/editing/keys.ts";
import {
  computeEdits,
  type MethodConfig,
  methodConfig,
  statsLayers,
  templateStartWords,
} from "../experiments/editing/methods.ts";
import { KeyStats, keyStats } from "../experiments/editing/stats.ts";
import { mulberry32 } from "../engine/random.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "embedded,gpt2" },
    "rome-edits": { type: "string", default: "2" },
    "memit-batch": { type: "string", default: "100" },
    "ft-edits": { type: "string", default: "2" },
    "xl-layers": { type: "string", default: "20" },
    steps: { type: "string" },
    out: { type: "string" },
  },
});

const EMBEDDED_DIR = new URL("../weights/locus-kb", import.meta.url).pathname;
const GPT2_SMALL: GPT2Config = {
  vocabSize: 50257,
  nPositions: 1024,
  nEmbd: 768,
  nLayer: 12,
  nHead: 12,
  layerNormEpsilon: 1e-5,
};
const GPT2_XL: GPT2Config = {
  vocabSize: 50257,
  nPositions: 1024,
  nEmbd: 1600,
  nLayer: 48,
  nHead: 25,
  layerNormEpsilon: 1e-5,
};

/** A word-level tokenizer over "w0".."w{V-3}", so that random models can be given text requests. */
function syntheticTokenizer(V: number): WordLevelTokenizer {
  return new WordLevelTokenizer([
    "<unk>",
    "<|endoftext|>",
    ...Array.from({ length: V - 2 }, (_, i) => `w${i}`),
  ], { unk: "<unk>", eos: "<|endoftext|>" });
}

/**
 * Random GPT-2-initialised weights in which every block shares one set of CPU arrays (the GPU still
 * holds a copy per block): timings do not depend on the values, and GPT-2 XL's 6 GB of weights are
 * not held twice in memory while they are uploaded.
 */
function randomModel(cfg: GPT2Config): GPT2 {
  const one = randomWeights({ ...cfg, nLayer: 1 }, 0, false);
  const weights = new Map<string, Float32Array>();
  for (const [name] of parameterShapes(cfg)) weights.set(name, one.get(name.replace(/^h\.\d+\./, "h.0."))!);
  return GPT2.fromArrays(gpu, cfg, weights, `random ${cfg.nLayer} layers, d=${cfg.nEmbd}`);
}

/** A symmetric, diagonally dominant (so positive definite) stand-in for E[k k^T]. */
function syntheticStats(layer: number, f: number): KeyStats {
  const r = mulberry32(layer + 1);
  const C = new Float32Array(f * f);
  for (let i = 0; i < f; i++) {
    C[i * f + i] = 1 + r();
    for (let j = 0; j < i; j++) C[i * f + j] = C[j * f + i] = (r() - 0.5) / f;
  }
  return new KeyStats(layer, f, 100_000, C);
}

/** Requests about distinct invented subjects: embedded model -> its CounterFact file; random shapes -> synthetic words. */
async function requestsFor(shape: string, n: number): Promise<EditRequest[]> {
  if (shape === "embedded") {
    const records = JSON.parse(await Deno.readTextFile(`${EMBEDDED_DIR}/counterfact.json`)) as {
      requested_rewrite: { prompt: string; subject: string; target_new: { str: string } };
    }[];
    return records.slice(0, n).map((r) => ({
      prompt: r.requested_rewrite.prompt,
      subject: r.requested_rewrite.subject,
      target: r.requested_rewrite.target_new.str,
    }));
  }
  return Array.from(
    { length: n },
    (_, i) => ({
      prompt: "w1 w2 {} w3 w4",
      subject: `w${100 + 2 * i} w${101 + 2 * i}`,
      target: `w${5000 + i}`,
    }),
  );
}

interface Measurement {
  shape: string;
  what: string;
  seconds: number;
  note: string;
}
const results: Measurement[] = [];
function report(shape: string, what: string, seconds: number, note = "") {
  results.push({ shape, what, seconds, note });
  console.log(`${shape.padEnd(9)} ${what.padEnd(40)} ${seconds.toFixed(2).padStart(9)} s  ${note}`);
}

async function timed<T>(f: () => T | Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const out = await f();
  await gpu.sync();
  return [out, (performance.now() - t0) / 1000];
}

const gpu = await getGpu();
console.log(`adapter: ${gpu.describe()}`);
const stepsCap = values.steps === undefined ? undefined : Number(values.steps);

for (const shape of values.shapes!.split(",").map((s) => s.trim())) {
  let model: GPT2, tok: Tokenizer, startWords: string[] | undefined;
  let stats: (layers: number[]) => Promise<Map<number, KeyStats>>;
  if (shape === "embedded") {
    model = await GPT2.load(gpu, EMBEDDED_DIR);
    tok = await loadTokenizer(EMBEDDED_DIR);
    startWords = await templateStartWords(tok, `${EMBEDDED_DIR}/corpus.txt`);
    stats = async (layers) => {
      const [s, seconds] = await timed(() =>
        keyStats(model, tok, {
          corpus: `${EMBEDDED_DIR}/corpus.txt`,
          layers,
          samples: statsHparams(model.config).samples,
        })
      );
      report(
        shape,
        `key statistics, layers ${layers.join(",")}`,
        seconds,
        `${s.get(layers[0])!.count} keys (cached after the first run)`,
      );
      return s;
    };
  } else if (shape === "gpt2" || shape === "gpt2-xl") {
    const base = shape === "gpt2" ? GPT2_SMALL : { ...GPT2_XL, nLayer: Number(values["xl-layers"]) };
    const maxRows = Math.floor(gpu.limits.maxStorageBufferBindingSize / (4 * base.nEmbd));
    const cfg = { ...base, vocabSize: Math.min(base.vocabSize, maxRows) };
    const [m, seconds] = await timed(() => randomModel(cfg));
    model = m;
    report(shape, `random weights, ${cfg.nLayer} layers, d=${cfg.nEmbd}, V=${cfg.vocabSize}`, seconds);
    tok = syntheticTokenizer(cfg.vocabSize);
    // One synthetic C for every layer: its factorisation (timed below) is then paid once, as a cache of
    // real statistics would pay it once per layer.
    const shared = syntheticStats(methodConfig(model, "rome").hparams.layer, 4 * cfg.nEmbd);
    stats = (layers) => Promise.resolve(new Map(layers.map((l) => [l, shared])));
  } else throw new Error(`unknown shape "${shape}"; known: embedded, gpt2, gpt2-xl`);

  const defaultSteps = (mc: MethodConfig) => ("vNumGradSteps" in mc.hparams ? mc.hparams.vNumGradSteps : 0);
  const capped = (mc: MethodConfig): MethodConfig => {
    if (stepsCap === undefined || !("vNumGradSteps" in mc.hparams)) return mc;
    return {
      ...mc,
      hparams: { ...mc.hparams, vNumGradSteps: Math.min(stepsCap, mc.hparams.vNumGradSteps) },
    } as MethodConfig;
  };

  // Context templates are sampled once per model and process (ROME caches them too): timed apart.
  const rome = methodConfig(model, "rome");
  for (const mc of [rome, methodConfig(model, "memit")]) {
    const [, seconds] = await timed(() =>
      contextTemplates(model, tok, { ...mc.hparams.templates, startWords })
    );
    report(shape, `${mc.method} context templates, once per model`, seconds);
  }

  // ROME: one request per call, as a user edits; the factorisation of C is timed separately.
  const romeStats = await stats(statsLayers(rome));
  const [, factorSeconds] = await timed(() =>
    romeStats.get(statsLayers(rome)[0])!.solve(new Float64Array(4 * model.config.nEmbd).fill(1))
  );
  report(shape, `Cholesky of C (f=${4 * model.config.nEmbd}), once per layer`, factorSeconds);
  const nRome = Number(values["rome-edits"]);
  const romeRun = capped(rome);
  let romeTotal = 0, romeSteps = 0;
  for (const request of await requestsFor(shape, nRome)) {
    const [[edit], seconds] = await timed(() =>
      computeEdits(model, tok, romeRun, [request], romeStats, { startWords })
    );
    romeTotal += seconds;
    romeSteps += (edit.info.valueLosses as number[]).length;
    const [applied, applySeconds] = await timed(() => applyEdit(model, edit));
    applied.undo();
    report(shape, `  apply ROME edit (rank-one kernel + copy)`, applySeconds);
  }
  const perStep = romeTotal / romeSteps;
  report(
    shape,
    `ROME edit, mean of ${nRome}`,
    romeTotal / nRome,
    `${(romeSteps / nRome).toFixed(1)} v* evaluations per edit, ${perStep.toFixed(3)} s each`,
  );
  if (defaultSteps(romeRun) < defaultSteps(rome)) {
    report(
      shape,
      `ROME edit at ${defaultSteps(rome)} steps (extrapolated)`,
      romeTotal / nRome + perStep * (defaultSteps(rome) - romeSteps / nRome),
      "steps capped by --steps",
    );
  }

  // MEMIT: one batch of many requests.
  const memit = capped(methodConfig(model, "memit"));
  const memitStats = await stats(statsLayers(memit));
  for (const l of statsLayers(memit)) {
    memitStats.get(l)!.solve(new Float64Array(4 * model.config.nEmbd).fill(1));
  }
  const batch = await requestsFor(shape, Number(values["memit-batch"]));
  const [, memitSeconds] = await timed(() =>
    computeEdits(model, tok, memit, batch, memitStats, { startWords })
  );
  report(
    shape,
    `MEMIT batch of ${batch.length} edits, layers ${statsLayers(memit).join(",")}`,
    memitSeconds,
    `${defaultSteps(memit)} z steps`,
  );

  // FT-L: one request per call, 25 steps.
  const ft = methodConfig(model, "ft");
  const nFt = Number(values["ft-edits"]);
  let ftTotal = 0;
  for (const request of await requestsFor(shape, nFt)) {
    const [, seconds] = await timed(() => computeEdits(model, tok, ft, [request], new Map(), {}));
    ftTotal += seconds;
  }
  report(
    shape,
    `FT-L edit, mean of ${nFt}`,
    ftTotal / nFt,
    `layer ${ft.hparams.layers.join(",")}, ${ft.hparams.numSteps} steps`,
  );
  gpu.trimPool();
}

if (values.out) {
  await Deno.writeTextFile(values.out, JSON.stringify({ adapter: gpu.describe(), results }, null, 1));
  console.log(`wrote ${values.out}`);
}
