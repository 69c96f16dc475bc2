// ./locus task train: trains the embedded model on the generated knowledge base (experiments/knowledge/
// train.ts does the work; this file reads the options). Killed at any point, it resumes from --run-dir.
//
//   ./locus task train [--seed N] [--steps N] [--layers N] [--d N] [--heads N] [--seq-len N] [--batch N]
//                      [--lr X] [--checkpoint-every N] [--out DIR] [--run-dir DIR]
import { parseArgs } from "node:util";
import { runMain } from "../../engine/main.ts";
import { DEFAULT_TRAIN, train, type TrainOptions } from "../knowledge/train.ts";
import { intOption, positiveInt, positiveNumber } from "../output.ts";

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string", default: new URL("../../weights/locus-kb", import.meta.url).pathname },
      "run-dir": { type: "string" },
      seed: { type: "string" },
      steps: { type: "string" },
      layers: { type: "string" },
      d: { type: "string" },
      heads: { type: "string" },
      "seq-len": { type: "string" },
      batch: { type: "string" },
      lr: { type: "string" },
      "checkpoint-every": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      `usage: ./locus task train [--seed N] [--steps N] [--layers N] [--d N] [--heads N] [--seq-len N]
                    [--batch N] [--lr X] [--checkpoint-every N] [--out DIR] [--run-dir DIR]
Trains the embedded model on the generated knowledge base; resumes from --run-dir if killed.`,
    );
    return 0;
  }
  const o: TrainOptions = {
    ...DEFAULT_TRAIN,
    seed: intOption("seed", values.seed, DEFAULT_TRAIN.seed),
    steps: positiveInt("steps", values.steps, DEFAULT_TRAIN.steps),
    nLayer: positiveInt("layers", values.layers, DEFAULT_TRAIN.nLayer),
    nEmbd: positiveInt("d", values.d, DEFAULT_TRAIN.nEmbd),
    nHead: positiveInt("heads", values.heads, DEFAULT_TRAIN.nHead),
    seqLen: positiveInt("seq-len", values["seq-len"], DEFAULT_TRAIN.seqLen),
    batchSize: positiveInt("batch", values.batch, DEFAULT_TRAIN.batchSize),
    lr: positiveNumber("lr", values.lr, DEFAULT_TRAIN.lr),
    checkpointEvery: positiveInt(
      "checkpoint-every",
      values["checkpoint-every"],
      DEFAULT_TRAIN.checkpointEvery,
    ),
  };
  if (o.nEmbd % o.nHead !== 0) throw new Error(`--d ${o.nEmbd} must be a multiple of --heads ${o.nHead}`);
  const runDir = values["run-dir"] ?? new URL(`../../runs/train-seed${o.seed}`, import.meta.url).pathname;
  await train(o, values.out!, runDir);
  return 0;
}

if (import.meta.main) await runMain("train", main);
