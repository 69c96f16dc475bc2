// Every family at the published size of the models the papers study (bench/shapes/*.json, the Hub's
// config.json of each), with random weights: the GPU memory the weights take, the time of a forward
// over a 16-token prompt, and the time of one ROME v* step (a forward from the edit layer and a
// backward to the delta hooked into its MLP output, over ROME's 21 context prompts of ~12 tokens; a
// ROME edit is about 20 such steps, so the edit time printed is 20 x the step, extrapolated).
//
//   ./locus run -A bench/families.ts [--shapes gemma-3-1b,gpt2-xl,...] [--half] [--step-layers N]
//
// --half keeps every matrix (projections, embedding, head) in 16 bits, as f16/bf16 checkpoints load (the
// torch_dtype of each config decides which), instead of f32; a 7B model needs it to fit in this machine's
// memory. The matmul reads f16 natively where the adapter has shader-f16 (Vulkan), else unpacks it.
// The v* step runs on a model of --step-layers blocks (default 4: the cost per block is what matters;
// the printed edit time scales it to the blocks from the family's edit layer to the top).
import { parseArgs } from "node:util";
import { type ModelConfig, parseConfig } from "../engine/config.ts";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { getGpu } from "../engine/gpu.ts";
import { makeBatch, Model, parameterShapes } from "../engine/model.ts";
import { mulberry32 } from "../engine/random.ts";
import type { HalfTensor } from "../engine/safetensors.ts";
import { median } from "../experiments/study/stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "gemma-3-1b,gemma-2b,gemma-2-2b,gpt2-xl" },
    half: { type: "boolean", default: false },
    "step-layers": { type: "string", default: "4" },
  },
});

const gpu = await getGpu();
const SHAPES = new URL("./shapes/", import.meta.url).pathname;
const T = 16, PROMPTS = 21, PROMPT_TOKENS = 12;

/**
 * Random weights, one set per role shared by every block, on the CPU and on the GPU (the time of a
 * block does not depend on its values; a software adapter's driver holds weights about twice while
 * uploading them, which a 7B model's 13 GB cannot afford in 24 GB): projections N(0, 0.02)-sized
 * (16-bit bit patterns with --half, the embedding and head too), norm gains 1 (Gemma: 0), biases 0. The memory column counts
 * every block's weights as a loaded checkpoint holds them.
 */
function randomModel(cfg: ModelConfig, half: "f16" | "bf16" | null): Model {
  const draw = mulberry32(7);
  const shared = new Map<string, Float32Array | HalfTensor>();
  const weights = new Map<string, Float32Array | HalfTensor>();
  for (const [name, shape] of parameterShapes(cfg)) {
    const role = name.replace(/^h\.\d+\./, "h.0.");
    if (!shared.has(role)) {
      const n = shape.reduce((a, b) => a * b, 1);
      const isGain = /(ln_\w+|_norm)\.weight$/.test(name);
      // Every matrix (projections, the embedding and an untied head) stays 16-bit as Model.load keeps it.
      const matrix = shape.length === 2 && !isGain && name !== "wpe.weight";
      if (matrix && half) {
        // Magnitudes 2^-7..2^-5, random signs and mantissas.
        const bits = Uint16Array.from({ length: n }, () => {
          const u = Math.floor(draw() * 65536);
          return half === "f16"
            ? (u & 0x83ff) | ((8 + (u % 3)) << 10)
            : (u & 0x807f) | ((120 + (u % 3)) << 7);
        });
        shared.set(role, { dtype: half, bits });
      } else if (isGain) shared.set(role, new Float32Array(n).fill(1 - cfg.normGainOffset));
      else if (name.endsWith(".bias")) shared.set(role, new Float32Array(n));
      else shared.set(role, Float32Array.from({ length: n }, () => 0.04 * (draw() - 0.5)));
    }
    weights.set(name, shared.get(role)!);
  }
  return Model.fromArrays(gpu, cfg, weights, `random ${cfg.family}`, { shareRepeated: true });
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(2);
}

async function timed(run: () => Promise<void>, reps: number): Promise<number> {
  await run(); // compiles the pipelines
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  return median(times);
}

console.log(`adapter: ${gpu.describe()}`);
console.log(
  `| model | family | parameters | weights on the GPU (GiB) | forward, ${T} tokens (ms) | v* step, ${PROMPTS} prompts (ms) | ROME edit, 20 steps (s, extrapolated) |`,
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const shape of values.shapes!.split(",")) {
  const file = `${SHAPES}${shape}.json`;
  const text = await Deno.readTextFile(file);
  const cfg = parseConfig(text, file);
  const dtype = JSON.parse(text).torch_dtype;
  const half = values.half ? (dtype === "bfloat16" ? "bf16" : "f16") : null;
  const params = parameterShapes(cfg).reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);

  const model = randomModel(cfg, half);
  const matrices = (m: Model) => [
    ...m.params.values(),
    ...[...m.rowChunks.values()].flat().map((c) => c.tensor),
    ...new Set([...m.wte, ...m.head].map((c) => c.tensor)),
  ];
  // What a checkpoint of this shape takes on the GPU (the blocks here share one set of tensors).
  const bytes = parameterShapes(cfg).reduce((s, [name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return s + (half && shape.length === 2 && name !== "wpe.weight" ? 2 : 4) * n;
  }, 0);
  const batch = makeBatch([Array.from({ length: T }, (_, t) => (t * 7919) % cfg.vocabSize)]);
  const forwardMs = await timed(async () => {
    const fwd = model.forward(batch);
    await fwd.logits.read();
    model.releaseForward(fwd);
  }, 3);
  for (const t of new Set(matrices(model))) t.destroy();
  gpu.trimPool();

  // The v* step on a shallower model.
  const stepLayers = Math.min(cfg.nLayer, Number(values["step-layers"]));
  const small: ModelConfig = {
    ...cfg,
    nLayer: stepLayers,
    windows: cfg.windows.slice(0, stepLayers),
    rotary: cfg.rotary && { ...cfg.rotary, invFreq: cfg.rotary.invFreq.slice(0, stepLayers) },
  };
  const stepModel = randomModel(small, half);
  const prompts = makeBatch(
    Array.from(
      { length: PROMPTS },
      (_, p) => Array.from({ length: PROMPT_TOKENS }, (_, t) => (p * 31 + t * 17) % small.vocabSize),
    ),
  );
  const delta = gpu.zeros([1, cfg.nEmbd]), ddelta = gpu.zeros([1, cfg.nEmbd]);
  const rows = Array.from({ length: PROMPTS }, (_, p) => p * PROMPT_TOKENS + PROMPT_TOKENS - 1);
  const targets = gpu.tensor([PROMPTS], rows.map((_, i) => i % small.vocabSize), "u32");
  const stepMs = await timed(async () => {
    const fwd = stepModel.forward(prompts, {
      keep: true,
      outputRows: rows,
      hooks: [{
        layer: 0,
        site: "mlp",
        patch: { src: delta, entries: rows.map((r) => ({ dst: r - 4, src: 0, keep: 1, take: 1 })) },
      }],
    });
    const dlogits = gpu.empty([PROMPTS, small.vocabSize]);
    crossEntropy(gpu, fwd.logits, targets, PROMPTS, small.vocabSize, { dlogits });
    backward(stepModel, fwd, {
      dlogits,
      patchSources: new Map([[delta, ddelta]]),
      params: allocateGradients(stepModel, []),
    });
    await ddelta.read();
    gpu.release(dlogits);
    stepModel.releaseForward(fwd);
  }, 2);
  for (const t of new Set(matrices(stepModel))) t.destroy();
  gpu.trimPool();
  // ROME's step runs from its edit layer (about a third of the depth) to the top.
  const editBlocks = cfg.nLayer - Math.round(cfg.nLayer / 3);
  const editSeconds = 20 * stepMs * editBlocks / stepLayers / 1000;
  console.log(
    `| ${shape} | ${cfg.family} | ${(params / 1e9).toFixed(2)} B | ${gib(bytes)}${
      half ? ` (${half})` : " (f32)"
    } | ` +
      `${forwardMs.toFixed(0)} | ${stepMs.toFixed(0)} (${stepLayers} blocks) | ${editSeconds.toFixed(0)} |`,
  );
}
