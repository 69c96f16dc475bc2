// What the command line takes from the engine: the default model folder (the embedded model shipped in
// weights/), the next-token distribution and greedy decoding (experiments/commands/predict.ts runs them).
import type { Model } from "./model.ts";
import { predictNext } from "./predict.ts";

export { type Prediction, predictNext } from "./predict.ts";

/** The embedded model's folder, `weights/locus-kb`: every command's default `--model`. */
export const DEFAULT_MODEL_DIR: string = new URL("../weights/locus-kb", import.meta.url).pathname;

/** Greedy decoding: appends the argmax token `maxNew` times (stops at end-of-text). */
export async function generateGreedy(
  model: Model,
  ids: number[],
  maxNew: number,
  eos: number | null = null,
): Promise<number[]> {
  const out = [...ids];
  for (let i = 0; i < maxNew && out.length < model.config.nPositions; i++) {
    const [best] = await predictNext(model, out, 1);
    if (eos !== null && best.id === eos) break;
    out.push(best.id);
  }
  return out.slice(ids.length);
}
