// Training speed of the embedded model, side by side in one process: the training loop
// (experiments/knowledge/train.ts trainSteps) against the reference loop it replaced
// (tests/reference_train.ts), on the real configuration (knowledge base, model shape, batch), in
// alternating blocks of steps so that both see the same machine load. Each runs its own trainer from
// the same seed; at the end their weights and Adam moments must be bit-identical. Prints ms per step,
// dispatches and submits per step, the projection for the default run's steps, and the load average.
//
//   ./locus run -A bench/training.ts [--steps 40] [--block 10]
import { parseArgs } from "node:util";
import { getGpu } from "../engine/gpu.ts";
import {
  BatchSchedule,
  DEFAULT_TRAIN,
  Trainer,
  trainingData,
  trainSteps,
} from "../experiments/knowledge/train.ts";
import { referenceSteps } from "../tests/reference_train.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { steps: { type: "string", default: "40" }, block: { type: "string", default: "10" } },
});
const steps = Number(values.steps), block = Number(values.block);
if (!(steps > 0 && block > 0 && steps % block === 0)) {
  throw new Error(`--steps ${values.steps} must be a positive multiple of --block ${values.block}`);
}
const WARMUP = 2; // steps each loop runs first, untimed (pipeline compilation, buffer pool, mirrors)
const gpu = await getGpu();
const o = DEFAULT_TRAIN;
const data = trainingData(o);
const loadAverage = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
console.log(`# training loop benchmark on ${gpu.describe()}`);
console.log(
  `embedded model: ${o.nLayer} layers, d=${o.nEmbd}, ${o.nHead} heads, vocabulary ${data.cfg.vocabSize}; ` +
    `${o.batchSize} sequences x ${o.seqLen} tokens per step; ${steps} timed steps each, blocks of ${block}`,
);
console.log(`load average at the start: ${loadAverage()}`);

/** One loop's own trainer and batches, and its totals over the timed blocks. */
interface Loop {
  trainer: Trainer;
  schedule: BatchSchedule;
  run: (loop: Loop, from: number, to: number) => Promise<unknown>;
  ms: number;
  dispatches: number;
  submits: number;
}
const loop = (run: Loop["run"]): Loop => ({
  trainer: new Trainer(gpu, data.cfg, o),
  schedule: new BatchSchedule(data.sentences, o),
  run,
  ms: 0,
  dispatches: 0,
  submits: 0,
});
const loops: Record<"reference" | "new", Loop> = {
  reference: loop((l, from, to) => referenceSteps(l.trainer, l.schedule, from, to)),
  new: loop((l, from, to) => trainSteps(l.trainer, l.schedule, from, to, to, () => Promise.resolve())),
};

for (const l of Object.values(loops)) await l.run(l, 0, WARMUP);
for (let from = WARMUP; from < WARMUP + steps; from += block) {
  for (const l of Object.values(loops)) {
    await gpu.sync();
    const [d0, s0, t0] = [gpu.dispatchCount, gpu.submitCount, performance.now()];
    await l.run(l, from, from + block); // ends with a readback: the GPU has finished the block
    l.ms += performance.now() - t0;
    l.dispatches += gpu.dispatchCount - d0;
    l.submits += gpu.submitCount - s0;
  }
}
console.log(`load average at the end: ${loadAverage()}`);
console.log("\n| loop | ms per step | dispatches per step | submits per step | projected 2000 steps |");
console.log("| --- | --- | --- | --- | --- |");
for (const [name, l] of Object.entries(loops)) {
  const ms = l.ms / steps;
  console.log(
    `| ${name} | ${ms.toFixed(0)} | ${(l.dispatches / steps).toFixed(0)} | ${
      (l.submits / steps).toFixed(2)
    } | ${(ms * o.steps / 60000).toFixed(1)} min |`,
  );
}
console.log(`speedup: ${(loops.reference.ms / loops.new.ms).toFixed(2)}x`);

const [a, b] = await Promise.all([loops.reference.trainer.state(), loops.new.trainer.state()]);
const differing = Object.keys(a).filter((name) => {
  const x = new Uint32Array(a[name].data.buffer), y = new Uint32Array(b[name].data.buffer);
  return x.length !== y.length || x.some((v, i) => v !== y[i]);
});
console.log(
  differing.length === 0
    ? `after ${WARMUP + steps} steps the weights and Adam moments of both loops are bit-identical`
    : `DIFFERENT after ${WARMUP + steps} steps: ${differing.join(", ")}`,
);
if (differing.length) Deno.exit(1);
