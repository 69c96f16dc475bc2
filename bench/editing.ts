// Editing speed: seconds per ROME edit (key statistics cached), per MEMIT batch and per FT-L edit,
// for the embedded model and for GPT-2 small / XL shapes with random weights.
//
//   ./locus run -A bench/editing.ts [--shapes embedded,gpt2,gpt2-xl,factor6400] [--rome-edits 2] [--memit-batch N]
//       [--ft-edits 2] [--xl-layers 20] [--steps N] [--out FILE]
//
// Every method runs with its family's defaults (hparams.ts; GPT-2 XL's for the XL shape whatever its
// depth) except where --steps caps the v* / z optimisation: ROME's 20 steps of a forward and backward
// pass over 21 prompts take minutes per edit at GPT-2 size on a software adapter. Then ROME runs the same
// request with --steps and --steps + 1 steps; the difference is the cost of one step, and a full edit
// is extrapolated from it.
// GPT-2 XL runs with --xl-layers blocks (default 20: its ROME layer 17, MEMIT's 13-17 and two more);
// a v* step costs about (blocks from the edit layer on) units, so the 48-layer model's step is about
// 31/3 times the measured one.
// Key statistics: the embedded model's real ones (runs/editing-stats cache; the streaming time is
// reported when they are computed), one synthetic well-conditioned C [f,f] shared by every layer of
// the random shapes. The float64 Cholesky factorisation of C (once per layer) is timed on its own;
// "factor<f>" times only it, at key width f, with the factor kept on disk and read back.
// Random shapes keep GPT-2's vocabulary only where wte fits one storage binding: the engine's backward
// pass does not run through a split embedding (engine/autograd.ts), so on an adapter with 128 MiB
// bindings (llvmpipe) the vocabulary is cut to fit (43,690 rows at d=768, 20,971 at d=1600).
import { parseArgs } from "node:util";
import { GPT2_SHAPES, type GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, parameterShapes, randomWeights } from "../engine/model.ts";
import { loadTokenizer, type Tokenizer, WordLevelTokenizer } from "../engine/tokenizer.ts";
import { applyEdit, type EditRequest } from "../experiments/editing/edit.ts";
import { ftHparams, memitHparams, romeHparams, statsHparams } from "../experiments/editing/hparams.ts";
import { contextTemplates } from "../experiments/editing/keys.ts";
import { computeEdits, type MethodConfig, templateStartWords } from "../experiments/editing/methods.ts";
import { KeyStats, keyStats } from "../experiments/editing/stats.ts";
import { mulberry32 } from "../engine/random.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "embedded,gpt2" },
    "rome-edits": { type: "string", default: "2" },
    // Default: 100 edits on the embedded model, 10 on the GPT-2 shapes (100 take tens of minutes there
    // on a software adapter).
    "memit-batch": { type: "string" },
    "ft-edits": { type: "string", default: "2" },
    "xl-layers": { type: "string", default: "20" },
    steps: { type: "string" },
    out: { type: "string" },
  },
});

const EMBEDDED_DIR = new URL("../weights/locus-kb", import.meta.url).pathname;

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
function randomModel(cfg: GPT2Config): Model {
  const one = randomWeights({ ...cfg, nLayer: 1 }, 0, false);
  const weights = new Map<string, Float32Array>();
  for (const [name] of parameterShapes(cfg)) weights.set(name, one.get(name.replace(/^h\.\d+\./, "h.0."))!);
  return Model.fromArrays(gpu, cfg, weights, `random ${cfg.nLayer} layers, d=${cfg.nEmbd}`);
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

/**
 * Shape "factor<f>" (factor6400: GPT-2 XL's key width): the first solve with a C [f,f], which
 * factorises it and keeps the factor on disk, then the first solve of another process with the same
 * statistics (a new KeyStats reading the kept factor), then one solve with the factor in memory.
 */
async function benchFactor(f: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "locus-factor-" });
  try {
    const C = syntheticStats(0, f).moment, b = new Float64Array(f).fill(1);
    const first = new KeyStats(0, f, 100_000, C, dir);
    const [, factorSeconds] = await timed(() => first.prepareSolve());
    report(`factor`, `Cholesky of C (f=${f}) and write its factor`, factorSeconds);
    const [, readSeconds] = await timed(() => new KeyStats(0, f, 100_000, C, dir).prepareSolve());
    report(`factor`, `read the kept factor (f=${f}; hash of C included)`, readSeconds);
    const [, solveSeconds] = await timed(() => first.solve(b));
    report(`factor`, `one solve C^-1 k with the factor (f=${f})`, solveSeconds);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
  const factorWidth = /^factor(\d+)$/.exec(shape);
  if (factorWidth) {
    await benchFactor(Number(factorWidth[1]));
    continue;
  }
  let model: Model, tok: Tokenizer, startWords: string[] | undefined;
  /** The configuration the family's hyper-parameters come from (full GPT-2 XL for the shortened model). */
  let family: GPT2Config;
  let stats: (layers: number[]) => Promise<Map<number, KeyStats>>;
  if (shape === "embedded") {
    model = await Model.load(gpu, EMBEDDED_DIR);
    family = model.config;
    tok = await loadTokenizer(EMBEDDED_DIR);
    startWords = await templateStartWords(tok, `${EMBEDDED_DIR}/corpus.txt`);
    stats = async (layers) => {
      const samples = statsHparams(model.config).samples;
      const [s, seconds] = await timed(() =>
        keyStats(model, tok, { corpus: `${EMBEDDED_DIR}/corpus.txt`, layers, samples })
      );
      const note = `${s.get(layers[0])!.count} keys (read from the cache after the first run)`;
      report(shape, `key statistics, layers ${layers.join(",")}`, seconds, note);
      return s;
    };
  } else if (shape === "gpt2" || shape === "gpt2-xl") {
    family = GPT2_SHAPES[shape];
    const maxRows = Math.floor(gpu.limits.maxStorageBufferBindingSize / (4 * family.nEmbd));
    const cfg = {
      ...family,
      nLayer: shape === "gpt2-xl" ? Number(values["xl-layers"]) : family.nLayer,
      vocabSize: Math.min(family.vocabSize, maxRows),
    };
    const [m, seconds] = await timed(() => randomModel(cfg));
    model = m;
    report(shape, `random weights, ${cfg.nLayer} layers, d=${cfg.nEmbd}, V=${cfg.vocabSize}`, seconds);
    tok = syntheticTokenizer(cfg.vocabSize);
    // One synthetic C for every layer: its factorisation (timed below) is then paid once, as a cache of
    // real statistics would pay it once per layer.
    const shared = syntheticStats(romeHparams(family).layer, 4 * cfg.nEmbd);
    stats = (layers) => Promise.resolve(new Map(layers.map((l) => [l, shared])));
  } else throw new Error(`unknown shape "${shape}"; known: embedded, gpt2, gpt2-xl`);

  const rome: MethodConfig = { method: "rome", hparams: romeHparams(family) };
  const memit: MethodConfig = { method: "memit", hparams: memitHparams(family) };
  const ft: MethodConfig = { method: "ft", hparams: ftHparams(family) };
  const withSteps = <M extends MethodConfig>(mc: M, steps: number): M =>
    "vNumGradSteps" in mc.hparams ? { ...mc, hparams: { ...mc.hparams, vNumGradSteps: steps } } : mc;

  // Context templates are sampled once per model and process (ROME caches them too): timed apart.
  for (const mc of [rome, memit]) {
    const [, seconds] = await timed(() =>
      contextTemplates(model, tok, { ...mc.hparams.templates, startWords })
    );
    report(shape, `${mc.method} context templates, once per model`, seconds);
  }

  // ROME: one request per call, as a user edits; the factorisation of C is timed on its own.
  const romeLayer = rome.hparams.layer;
  const romeStats = await stats([romeLayer]);
  const [, factorSeconds] = await timed(() =>
    romeStats.get(romeLayer)!.solve(new Float64Array(4 * model.config.nEmbd).fill(1))
  );
  report(shape, `Cholesky of C (f=${4 * model.config.nEmbd}), once per layer`, factorSeconds);
  const romeRequests = await requestsFor(shape, Number(values["rome-edits"]));
  const romeEdit = async (mc: MethodConfig, request: EditRequest) => {
    const [[edit], seconds] = await timed(() =>
      computeEdits(model, tok, mc, [request], romeStats, { startWords })
    );
    return { seconds, evaluations: (edit.info.valueLosses as number[]).length, edit };
  };
  if (stepsCap === undefined) {
    let total = 0, evaluations = 0;
    for (const request of romeRequests) {
      const r = await romeEdit(rome, request);
      total += r.seconds;
      evaluations += r.evaluations;
      const [applied, applySeconds] = await timed(() => applyEdit(model, r.edit));
      applied.undo();
      report(shape, `  apply the ROME edit (rank-one kernel)`, applySeconds);
    }
    const n = romeRequests.length;
    report(
      shape,
      `ROME edit at layer ${romeLayer}, mean of ${n}`,
      total / n,
      `${(evaluations / n).toFixed(1)} v* evaluations per edit`,
    );
  } else {
    // The cost of one more v* step is the difference of two capped runs of the same request.
    const [a, b] = [
      await romeEdit(withSteps(rome, stepsCap), romeRequests[0]),
      await romeEdit(withSteps(rome, stepsCap + 1), romeRequests[0]),
    ];
    const perStep = (b.seconds - a.seconds) / (b.evaluations - a.evaluations);
    report(shape, `ROME edit at layer ${romeLayer}, ${a.evaluations} v* evaluations`, a.seconds);
    report(shape, `  one more v* step (forward + backward)`, perStep);
    const full = rome.hparams.vNumGradSteps;
    report(
      shape,
      `ROME edit, ${full} steps (extrapolated)`,
      a.seconds + perStep * (full - a.evaluations),
      "--steps capped the run",
    );
  }

  // MEMIT: one batch of many requests.
  const memitStats = await stats(memit.hparams.layers);
  for (const l of memit.hparams.layers) {
    memitStats.get(l)!.solve(new Float64Array(4 * model.config.nEmbd).fill(1)); // factorised
  }
  const batch = await requestsFor(shape, Number(values["memit-batch"] ?? (shape === "embedded" ? 100 : 10)));
  const memitRun = stepsCap === undefined ? memit : withSteps(memit, stepsCap);
  const [, memitSeconds] = await timed(() =>
    computeEdits(model, tok, memitRun, batch, memitStats, { startWords })
  );
  report(
    shape,
    `MEMIT batch of ${batch.length} edits, layers ${memit.hparams.layers.join(",")}`,
    memitSeconds,
    `${memitRun.hparams.vNumGradSteps} z steps`,
  );

  // FT-L: one request per call.
  const ftRequests = await requestsFor(shape, Number(values["ft-edits"]));
  let ftTotal = 0;
  for (const request of ftRequests) {
    ftTotal += (await timed(() => computeEdits(model, tok, ft, [request], new Map(), {})))[1];
  }
  report(
    shape,
    `FT-L edit, mean of ${ftRequests.length}`,
    ftTotal / ftRequests.length,
    `layer ${ft.hparams.layers.join(",")}, ${ft.hparams.numSteps} steps`,
  );
  gpu.trimPool();
}

if (values.out) {
  await Deno.writeTextFile(values.out, JSON.stringify({ adapter: gpu.describe(), results }, null, 1));
  console.log(`wrote ${values.out}`);
}
