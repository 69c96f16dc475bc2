// Causal-tracing grid time, three ways in one run: the library's batched grid that reuses the corrupted
// run below each window; the same batches with every cell recomputed from the embeddings; and one
// forward per cell (ROME's loop, nothing shared). All three give the same probabilities (checked).
//
//   ./locus run -A bench/tracing.ts                          embedded model, GPT-2 small and XL shapes
//   ./locus run -A bench/tracing.ts --shapes gpt2 --tokens 10 --samples 10 --kinds resid,mlp,attn
//   options: --shapes a,b  --tokens N  --samples N  --kinds k1,k2  --per-cell yes|no  --out FILE.json
//
// A grid is every token x every layer x each kind x samples, with the default windows (resid 1,
// mlp/attn 10). The embedded model is loaded from weights/locus-kb when it has been trained (else random
// weights of its config.json); the GPT-2 shapes have random weights and a random prompt whose tokens
// 2..4 are the subject. On a software adapter the big shapes take few tokens, few samples and fewer
// kinds by default; every line says what it ran.
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { GPT2_SHAPES, type GPT2Config, parseConfig } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model, parameterShapes } from "../engine/model.ts";
import { mulberry32 } from "../engine/random.ts";
import {
  STATE_KINDS,
  type StateKind,
  type TraceOptions,
  TraceRun,
  traceTokens,
} from "../experiments/localization/tracing.ts";

interface Shape {
  name: string;
  tokens: number;
  samples: number;
  kinds: StateKind[];
  /** Also time one forward per cell (slow for big shapes). */
  perCell: boolean;
}

/** Defaults sized for the 2-core software adapter (minutes, not hours); flags override them. */
const SHAPES: Record<string, Shape> = {
  "locus-kb": { name: "locus-kb", tokens: 10, samples: 10, kinds: [...STATE_KINDS], perCell: true },
  "gpt2": { name: "gpt2", tokens: 6, samples: 2, kinds: [...STATE_KINDS], perCell: true },
  "gpt2-xl": { name: "gpt2-xl", tokens: 3, samples: 1, kinds: ["resid"], perCell: false },
};

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: Object.keys(SHAPES).join(",") },
    tokens: { type: "string" },
    samples: { type: "string" },
    kinds: { type: "string" },
    "per-cell": { type: "string" },
    out: { type: "string" },
  },
});

/**
 * GPT-2-initialised random weights made tensor by tensor when Model.fromArrays asks for them, so that
 * GPT-2 XL's 6 GB are held once (on the GPU), not twice. Uniform with std 0.02 (c_proj 0.02/sqrt(2L)),
 * gains 1, biases 0: the distribution does not matter for timing.
 */
class LazyRandomWeights extends Map<string, Float32Array> {
  private shapes: Map<string, number[]>;
  constructor(private cfg: GPT2Config, private seed: number) {
    super();
    this.shapes = new Map(parameterShapes(cfg));
  }
  override get(name: string): Float32Array | undefined {
    const shape = this.shapes.get(name);
    if (!shape) return undefined;
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    if (/ln_\d\.weight|ln_f\.weight/.test(name)) return a.fill(1);
    if (name.endsWith(".bias")) return a;
    const std = name.endsWith("c_proj.weight") ? 0.02 / Math.sqrt(2 * this.cfg.nLayer) : 0.02;
    const halfWidth = std * Math.sqrt(3), uniform = mulberry32(this.seed ^ a.length);
    for (let i = 0; i < a.length; i++) a[i] = halfWidth * (2 * uniform() - 1);
    return a;
  }
}

const gpu = await getGpu();
console.log(`adapter: ${gpu.describe()}`);
const results: Record<string, unknown>[] = [];

for (const name of values.shapes!.split(",")) {
  const shape = SHAPES[name];
  if (!shape) {
    throw new Error(`unknown shape ${JSON.stringify(name)}; known: ${Object.keys(SHAPES).join(", ")}`);
  }
  const tokens = Number(values.tokens ?? shape.tokens), samples = Number(values.samples ?? shape.samples);
  const kinds = (values.kinds?.split(",") ?? shape.kinds) as StateKind[];
  const perCell = values["per-cell"] === undefined ? shape.perCell : values["per-cell"] === "yes";

  let model: Model, weights: string;
  const built = performance.now();
  if (name === "locus-kb") {
    let configText: string;
    try {
      configText = await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/config.json`);
    } catch {
      console.log(
        `locus-kb: skipped, ${DEFAULT_MODEL_DIR}/config.json does not exist yet (train it: ./locus task train)`,
      );
      continue;
    }
    try {
      model = await Model.load(gpu, DEFAULT_MODEL_DIR);
      weights = "trained weights";
    } catch {
      const cfg = parseConfig(configText, `${DEFAULT_MODEL_DIR}/config.json`);
      model = Model.fromArrays(gpu, cfg, new LazyRandomWeights(cfg, 1), "random");
      weights = "random weights (no trained checkpoint yet)";
    }
  } else {
    const cfg = GPT2_SHAPES[name];
    model = Model.fromArrays(gpu, cfg, new LazyRandomWeights(cfg, 1), `random ${name}`);
    weights = "random weights";
  }
  const cfg = model.config;
  const rand = mulberry32(7);
  const ids = Array.from({ length: tokens }, () => Math.floor(rand() * cfg.vocabSize));
  const subject: [number, number] = [Math.min(2, tokens - 1), Math.min(5, tokens)];
  const target = ids[0];
  const label = `${name} (L=${cfg.nLayer}, d=${cfg.nEmbd}, V=${cfg.vocabSize}, ${weights}): ` +
    `${tokens} tokens x ${cfg.nLayer} layers x ${kinds.join("/")} x ${samples} samples`;
  console.log(`\n${label}  [model ready in ${((performance.now() - built) / 1000).toFixed(1)} s]`);

  const options: TraceOptions = { kinds, samples, noise: 0.1, seed: 1 };
  // Warm-up: compiles the pipelines of both paths on one cell per kind (pipelines compile at first use).
  const warm = TraceRun.prepare(model, [{ ids, subject, target }], { samples, noise: 0.1, seed: 1 });
  const lastLayerCells = kinds.map((kind) => ({
    kind,
    tokens: [tokens - 1],
    from: cfg.nLayer - 1,
    to: cfg.nLayer,
  }));
  await warm.score(lastLayerCells, "restore", true);
  await warm.score(lastLayerCells, "restore", false);
  warm.release();

  // Three ways to compute the same grid:
  //   reuse    cells batched by first window layer, each batch starting there (the library's default);
  //   batched  the same batches of cells x samples, every cell recomputed from the embeddings;
  //   per cell one forward per cell (its samples), from the embeddings: ROME's loop, nothing shared.
  const paths: { name: string; reuse: boolean; maxRows?: number }[] = [
    { name: "reuse", reuse: true },
    { name: "batched", reuse: false },
  ];
  if (perCell) paths.push({ name: "per cell", reuse: false, maxRows: samples * tokens });
  const timings: Record<string, unknown>[] = [];
  let reference: number[] | null = null, reuseSeconds = 0;
  for (const path of paths) {
    const [submits, dispatches, start] = [gpu.submitCount, gpu.dispatchCount, performance.now()];
    const trace = await traceTokens(model, ids, subject, target, {
      ...options,
      reuse: path.reuse,
      maxRows: path.maxRows,
    });
    const seconds = (performance.now() - start) / 1000;
    const probs = trace.grids.flatMap((g) => g.prob.flat());
    reference ??= probs;
    if (path.reuse) reuseSeconds = seconds;
    const maxDiff = Math.max(...probs.map((p, i) => Math.abs(p - reference![i])));
    const timing = {
      path: path.name,
      seconds,
      submits: gpu.submitCount - submits,
      dispatches: gpu.dispatchCount - dispatches,
      reuseSpeedup: seconds / reuseSeconds,
      maxDiffFromReuse: maxDiff,
    };
    timings.push(timing);
    console.log(
      `  ${path.name.padEnd(8)} ${seconds.toFixed(2).padStart(8)} s  ${
        String(timing.submits).padStart(3)
      } submits ` +
        `${String(timing.dispatches).padStart(6)} dispatches  reuse is ${
          timing.reuseSpeedup.toFixed(2)
        }x faster  ` +
        `max |p - p_reuse| ${maxDiff.toExponential(1)}`,
    );
  }
  const cells = kinds.length * tokens * cfg.nLayer;
  console.log(`  (${cells} cells, ${cells * samples} sequences of ${tokens} tokens)`);
  results.push({ shape: name, config: cfg, weights, tokens, samples, kinds, cells, timings });
  // Free this model's weights before the next shape's (GPT-2 XL needs the room).
  for (const t of model.params.values()) t.destroy();
  for (const c of model.wte) c.tensor.destroy();
  gpu.trimPool();
}

if (values.out) {
  await Deno.writeTextFile(
    values.out,
    JSON.stringify({ adapter: gpu.describe(), date: new Date().toISOString(), results }, null, 2) + "\n",
  );
  console.log(`\nwrote ${values.out}`);
}
