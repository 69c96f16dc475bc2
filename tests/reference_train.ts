// The embedded model's training step as Locus first wrote it, kept as the reference the faster loop
// (experiments/knowledge/train.ts trainSteps) must match bit for bit: every step read back before the
// next is recorded, gradients zeroed by one fill kernel per tensor, weight gradients and attention on
// their buffer kernels (no texture mirrors of activations). Shared by tests/train_loop_test.ts and
// bench/training.ts (which times both).
import { backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { matmulTiles, setMatmulTiles } from "../engine/ops.ts";
import { fill } from "../engine/optimizer.ts";
import {
  type BatchSchedule,
  learningRate,
  meanLoss,
  stepInputs,
  type Trainer,
} from "../experiments/knowledge/train.ts";

/** Trains steps [from, to) the reference way; returns each step's [step, mean loss]. */
export async function referenceSteps(
  trainer: Trainer,
  schedule: BatchSchedule,
  from: number,
  to: number,
): Promise<[number, number][]> {
  const { gpu, model, cfg, grads, adam, names, o } = trainer;
  const tiles = matmulTiles(gpu);
  setMatmulTiles(gpu, { ...tiles, texture: tiles.texture && { ...tiles.texture, activations: false } });
  const out: [number, number][] = [];
  try {
    for (let step = from; step < to; step++) {
      const { batch, rows, targets } = stepInputs(schedule.at(step));
      for (const g of grads.values()) fill(gpu, g, 0);
      const fwd = model.forward(batch, { outputRows: rows, keep: true });
      const targetT = gpu.tensor([rows.length], targets, "u32");
      const dlogits = gpu.empty([rows.length, cfg.vocabSize]);
      const { losses } = crossEntropy(gpu, fwd.logits, targetT, rows.length, cfg.vocabSize, {
        dlogits,
        scale: 1 / rows.length,
      });
      backward(model, fwd, { dlogits, params: grads });
      adam.lr = learningRate(o, step);
      adam.step(names.map((n) => grads.get(n)!));
      const lossValues = await losses.read();
      gpu.release(targetT, dlogits, losses);
      model.releaseForward(fwd);
      out.push([step, meanLoss(lossValues, rows.length)]);
    }
  } finally {
    setMatmulTiles(gpu, tiles);
  }
  return out;
}
