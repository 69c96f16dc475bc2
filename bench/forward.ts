// Forward-pass throughput for GPT-2 shapes with random weights, the same forward in numpy
// measured in the same run (when python3 + numpy exist) and printed as a ratio, and training
// throughput for the embedded model's shape.
//
//   ./locus run -A bench/forward.ts [--shapes gpt2,gpt2-medium,gpt2-xl] [--tokens 16] [--reps 9] [--no-training]
import { parseArgs } from "node:util";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { GPT2_SHAPES, type GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import { makeBatch, Model, parameterShapes } from "../engine/model.ts";
import { topK } from "../engine/ops.ts";
import { DEFAULT_TRAIN } from "../experiments/knowledge/train.ts";
import { median } from "../experiments/study/stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "gpt2,gpt2-medium,gpt2-xl" },
    tokens: { type: "string", default: "16" },
    reps: { type: "string", default: "9" },
    "no-training": { type: "boolean", default: false },
  },
});
const T = Number(values.tokens), reps = Number(values.reps);
const WARMUP = 3;
const gpu = await getGpu();
console.log(`# forward benchmark on ${gpu.describe()}`);

/** Fast deterministic weights for speed tests (values do not matter, only shapes). */
function benchWeights(cfg: GPT2Config): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  let s = 1;
  for (const [name, shape] of parameterShapes(cfg)) {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    const gain = name.includes("ln_") && name.endsWith("weight") ? 1 : 0;
    for (let i = 0; i < a.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      a[i] = gain + ((s >>> 8) / 16777216 - 0.5) * 0.04;
    }
    out.set(name, a);
  }
  return out;
}

async function numpyForwardMs(cfg: GPT2Config): Promise<number | null> {
  try {
    const out = await new Deno.Command("python3", {
      args: [
        new URL("./numpy_forward.py", import.meta.url).pathname,
        ...[cfg.nLayer, cfg.nEmbd, cfg.nHead, cfg.vocabSize, T, reps].map(String),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) return null;
    return JSON.parse(new TextDecoder().decode(out.stdout)).ms_median;
  } catch {
    return null; // no python3 or numpy: the ratio is simply not printed
  }
}

console.log("| shape | tokens | Locus forward (ms) | tokens/s | numpy (ms) | Locus / numpy |");
console.log("|---|---|---|---|---|---|");
for (const name of values.shapes!.split(",")) {
  const cfg = GPT2_SHAPES[name];
  if (!cfg) throw new Error(`unknown shape ${name} (known: ${Object.keys(GPT2_SHAPES).join(", ")})`);
  const model = Model.fromArrays(gpu, cfg, benchWeights(cfg), name);
  const ids = Array.from({ length: T }, (_, i) => (i * 7919) % cfg.vocabSize);
  const run = async () => {
    const res = model.forward(makeBatch([ids]));
    const top = topK(gpu, res.logits, 1, cfg.vocabSize, 1);
    await gpu.read(top.values); // the readback is part of a real prediction
    gpu.release(top.indices, top.values);
    model.releaseForward(res);
  };
  // Warm-up, as in numpy_forward.py: the first run compiles pipelines, and the next few are often
  // slower on llvmpipe while its threads settle.
  for (let i = 0; i < WARMUP; i++) await run();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  const ms = median(times);
  for (const t of model.params.values()) t.destroy();
  for (const c of model.wte) c.tensor.destroy();
  gpu.trimPool();
  const np = await numpyForwardMs(cfg); // after freeing the model: XL twice would not fit in memory
  console.log(
    `| ${name} | ${T} | ${ms.toFixed(1)} | ${(T / (ms / 1000)).toFixed(1)} | ${
      np === null ? "n/a" : np.toFixed(1)
    } | ` +
      `${np === null ? "n/a" : (ms / np).toFixed(2) + "x"} |`,
  );
}

// Training throughput for the embedded model's shape: forward + loss + backward (the Adam update is not timed).
if (!values["no-training"]) {
  const o = DEFAULT_TRAIN;
  const V = 640;
  const cfg: GPT2Config = {
    vocabSize: V,
    nPositions: o.seqLen,
    nEmbd: o.nEmbd,
    nLayer: o.nLayer,
    nHead: o.nHead,
    layerNormEpsilon: 1e-5,
  };
  const model = Model.fromArrays(gpu, cfg, benchWeights(cfg), "embedded shape");
  const grads = allocateGradients(model, parameterShapes(cfg).map(([n]) => n));
  const seqs = Array.from(
    { length: o.batchSize },
    (_, b) => Array.from({ length: o.seqLen }, (_, t) => (b * 31 + t * 17) % V),
  );
  const batch = makeBatch(seqs);
  const rows = [...Array(batch.B * batch.T).keys()];
  const targets = gpu.tensor(
    [rows.length],
    rows.map((r) => seqs[Math.floor(r / o.seqLen)][(r % o.seqLen + 1) % o.seqLen]),
    "u32",
  );
  const step = async () => {
    const fwd = model.forward(batch, { outputRows: rows, keep: true });
    const dlogits = gpu.empty([rows.length, V]);
    const { losses } = crossEntropy(gpu, fwd.logits, targets, rows.length, V, {
      dlogits,
      scale: 1 / rows.length,
    });
    backward(model, fwd, { dlogits, params: grads });
    await gpu.read(losses);
    gpu.release(dlogits, losses);
    model.releaseForward(fwd);
  };
  await step();
  const times: number[] = [];
  for (let i = 0; i < Math.max(2, Math.min(reps, 3)); i++) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
  }
  const ms = median(times);
  const params = parameterShapes(cfg).reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);
  // ~6 FLOPs per parameter per token (forward 2, backward 4) for the matmuls, plus attention.
  const flops = 6 * params * rows.length;
  console.log(
    `\ntraining step, embedded shape (${o.nLayer} layers, d=${o.nEmbd}, B=${o.batchSize}, T=${o.seqLen}): ` +
      `${ms.toFixed(0)} ms/step, ${(rows.length / (ms / 1000)).toFixed(0)} tokens/s, ~${
        (flops / (ms / 1000) / 1e9).toFixed(2)
      } GFLOP/s`,
  );
}
