// Trains Locus's embedded GPT-2 on the generated knowledge base (the library behind ./locus task train,
// whose options experiments/commands/train.ts reads).
//
//   knowledge base (seed) -> corpus sentences -> word-level tokenizer -> sentences packed into
//   sequences of T+1 tokens (each starts at a sentence start, so facts are learned both at
//   position 0 and after other text) -> AdamW with warmup + cosine decay -> checkpoints ->
//   recall evaluation -> model folder (config.json, model.safetensors, tokenizer.json, dataset,
//   MODEL_CARD.md, loss curve SVG).
//
// Killed at any point, it resumes from the last checkpoint in --run-dir with identical results:
// the batch order is a pure function of (seed, step). Steps are recorded back to back without
// waiting for the GPU: each step's per-row losses stay on the GPU and are read, LOSS_READ_EVERY
// steps at a time, in one readback (a readback per step would stall the stream every step). A checkpoint is two files, each written
// atomically (engine/files.ts): the weights and Adam state as checkpoint-<step>.safetensors, then the
// manifest checkpoint.json naming that file, written last; the previous weights file is deleted only
// after the manifest points past it, so a kill between the two resumes from the older, complete pair.
import { allocateGradients, backward, type Gradients } from "../../engine/autograd.ts";
import { crossEntropy } from "../../engine/backward_ops.ts";
import type { GPT2Config } from "../../engine/config.ts";
import { getGpu, type Gpu, type Tensor } from "../../engine/gpu.ts";
import { type Batch, makeBatch, Model, parameterShapes } from "../../engine/model.ts";
import { Adam, zeroGrads } from "../../engine/optimizer.ts";
import { exists, writeAtomic } from "../../engine/files.ts";
import { openSafetensors, writeSafetensors } from "../../engine/safetensors.ts";
import { mulberry32 } from "../../engine/random.ts";
import { WordLevelTokenizer } from "../../engine/tokenizer.ts";
import { lineChart } from "../pictures/charts.ts";
import { datasetFiles, generateKnowledgeBase, type KnowledgeBase, trainingCorpus } from "./knowledge_base.ts";
import { ProgressBar } from "../output.ts";
import { factRecall, type RecallItem, type RecallResult } from "../evaluation/recall.ts";
import { sem } from "../study/stats.ts";

export interface TrainOptions {
  seed: number;
  /** Subjects per type in the knowledge base (a smaller world trains faster). */
  subjects: { person: number; place: number; organisation: number; work: number };
  nLayer: number;
  nEmbd: number;
  nHead: number;
  seqLen: number; // T: tokens per training sequence
  batchSize: number; // B: sequences per step
  steps: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  clipNorm: number;
  checkpointEvery: number;
}

export const DEFAULT_TRAIN: TrainOptions = {
  seed: 0,
  subjects: { person: 90, place: 54, organisation: 42, work: 54 },
  nLayer: 6,
  nEmbd: 128,
  nHead: 4,
  seqLen: 48,
  batchSize: 16,
  steps: 2000,
  lr: 3e-3,
  warmup: 50,
  weightDecay: 0.01,
  clipNorm: 1.0,
  checkpointEvery: 100,
};

/** Steps whose losses are read back together (also how often the progress line is updated). */
const LOSS_READ_EVERY = 20;

/** Packs tokenized sentences (in the given order) into sequences of at most `len` tokens. */
export function packSequences(sentences: number[][], len: number): number[][] {
  const out: number[][] = [];
  let cur: number[] = [];
  for (const s of sentences) {
    if (s.length > len) {
      throw new Error(`a corpus sentence has ${s.length} tokens, more than the sequence length ${len}`);
    }
    if (cur.length + s.length > len) {
      out.push(cur);
      cur = [];
    }
    cur.push(...s);
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Seeded Fisher-Yates shuffle of indices 0..n-1. */
function permutation(n: number, seed: number): number[] {
  const r = mulberry32(seed);
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Learning rate at a step: linear warmup, then cosine decay to 10%. */
export function learningRate(o: TrainOptions, step: number): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  const t = (step - o.warmup) / Math.max(1, o.steps - o.warmup);
  return o.lr * (0.1 + 0.45 * (1 + Math.cos(Math.PI * Math.min(1, t))));
}

/** Recall items: every fact under every training template, and under every held-out paraphrase. */
export function recallSets(kb: KnowledgeBase): { train: RecallItem[]; heldOut: RecallItem[] } {
  const relations = new Map(kb.relations.map((r) => [r.id, r]));
  const train: RecallItem[] = [], heldOut: RecallItem[] = [];
  for (const f of kb.facts) {
    const r = relations.get(f.relation)!;
    for (const t of r.trainingTemplates) train.push({ prompt: t.replace("{}", f.subject), answer: f.object });
    for (const t of r.heldOutTemplates) {
      heldOut.push({ prompt: t.replace("{}", f.subject), answer: f.object });
    }
  }
  return { train, heldOut };
}

/** What a run of `o` trains on: the knowledge base, its corpus and word-level tokenizer, the corpus
 *  sentences as token ids, and the model's shape. */
export interface TrainingData {
  kb: KnowledgeBase;
  corpus: string[];
  tok: WordLevelTokenizer;
  sentences: number[][];
  cfg: GPT2Config;
}

/** The knowledge base of `o.seed`, its corpus tokenized, and the GPT-2 config `o` describes. */
export function trainingData(o: TrainOptions): TrainingData {
  const kb = generateKnowledgeBase({ seed: o.seed, subjectsPerType: o.subjects });
  const corpus = trainingCorpus(kb);
  const tok = new WordLevelTokenizer(["<unk>", "<|endoftext|>", ...kb.vocabulary], {
    unk: "<unk>",
    eos: "<|endoftext|>",
  });
  const cfg: GPT2Config = {
    vocabSize: tok.vocabSize,
    nPositions: o.seqLen,
    nEmbd: o.nEmbd,
    nLayer: o.nLayer,
    nHead: o.nHead,
    layerNormEpsilon: 1e-5,
  };
  return { kb, corpus, tok, sentences: corpus.map((line) => tok.encode(line)), cfg };
}

/**
 * The sequences of every step, a pure function of (seed, step): epoch e shuffles the sentences with
 * seed*1000 + e and packs them into sequences of seqLen + 1 tokens; step s takes sequences
 * [s*B, (s+1)*B) of the epochs consumed in order (each epoch's leftover short of B dropped).
 */
export class BatchSchedule {
  /** The epoch whose sequences are held (-1: none yet). */
  epoch = -1;
  private sequences: number[][] = [];

  constructor(private readonly sentences: number[][], private readonly o: TrainOptions) {}

  /** The B sequences of `step` (its epoch becomes `this.epoch`). */
  at(step: number): number[][] {
    const B = this.o.batchSize;
    let index = step * B, e = 0;
    for (;;) {
      if (e !== this.epoch) {
        this.epoch = e;
        const order = permutation(this.sentences.length, this.o.seed * 1000 + e);
        this.sequences = packSequences(order.map((i) => this.sentences[i]), this.o.seqLen + 1);
      }
      const perEpoch = Math.floor(this.sequences.length / B) * B;
      if (index < perEpoch) break;
      index -= perEpoch;
      e++;
    }
    return this.sequences.slice(index, index + B);
  }
}

/** A step's next-token problem: every sequence but its last token as input, and for each input
 *  position its row in the batch and the token that follows it. */
export function stepInputs(seqs: number[][]): { batch: Batch; rows: number[]; targets: number[] } {
  const batch = makeBatch(seqs.map((s) => s.slice(0, -1)));
  const rows: number[] = [], targets: number[] = [];
  seqs.forEach((s, b) =>
    s.slice(1).forEach((next, t) => {
      rows.push(b * batch.T + t);
      targets.push(next);
    })
  );
  return { batch, rows, targets };
}

/** The model of a run (seeded random weights), its gradient buffers and AdamW (no decay on biases,
 *  LayerNorms and positions), and one training step recorded on the GPU. */
export class Trainer {
  readonly model: Model;
  /** Every parameter's name, in checkpoint and optimizer order. */
  readonly names: string[];
  readonly grads: Gradients;
  readonly adam: Adam;

  constructor(readonly gpu: Gpu, readonly cfg: GPT2Config, readonly o: TrainOptions) {
    this.model = Model.random(gpu, cfg, o.seed);
    this.names = parameterShapes(cfg).map(([n]) => n);
    this.grads = allocateGradients(this.model, this.names);
    const noDecay = (n: string) => n.endsWith(".bias") || /ln_(\d|f)\.weight/.test(n) || n === "wpe.weight";
    this.adam = new Adam(
      gpu,
      this.names.map((n) => ({
        name: n,
        tensor: this.tensorOf(n),
        size: this.tensorOf(n).size,
        weightDecay: noDecay(n) ? 0 : undefined,
      })),
      { lr: o.lr, weightDecay: o.weightDecay, clipNorm: o.clipNorm },
    );
  }

  /** The tensor holding parameter `name` (the embedding's single chunk for wte). */
  tensorOf(name: string): Tensor {
    return name === "wte.weight" ? this.model.wte[0].tensor : this.model.p(name);
  }

  /** The weights and Adam moments as a checkpoint holds them: `name`, `adam.m.name`, `adam.v.name`. */
  async state(): Promise<Record<string, { shape: number[]; data: Float32Array }>> {
    const state = await this.adam.saveState();
    const weights = await this.model.toArrays();
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [i, n] of this.names.entries()) {
      const shape = [this.tensorOf(n).size];
      tensors[n] = { shape, data: weights.get(n)! };
      tensors[`adam.m.${n}`] = { shape, data: state.m[i] };
      tensors[`adam.v.${n}`] = { shape, data: state.v[i] };
    }
    return tensors;
  }

  /** Loads what state() saved after `step` steps (read tensor by tensor, e.g. from a checkpoint file). */
  async restore(step: number, read: (name: string) => Promise<Float32Array>): Promise<void> {
    for (const n of this.names) this.gpu.write(this.tensorOf(n), await read(n));
    const m: Float32Array[] = [], v: Float32Array[] = [];
    for (const n of this.names) {
      m.push(await read(`adam.m.${n}`));
      v.push(await read(`adam.v.${n}`));
    }
    this.adam.loadState({ step, names: this.names, m, v });
  }

  /**
   * Records step `step` on `seqs` (zeroed gradients, forward, mean cross-entropy, backward, AdamW at
   * the step's learning rate) and submits it; nothing is read back. Returns the per-row losses
   * [rows] (the caller releases them) and the number of rows.
   */
  record(step: number, seqs: number[][]): { losses: Tensor; rows: number } {
    const { gpu, model, cfg } = this;
    const { batch, rows, targets } = stepInputs(seqs);
    zeroGrads(gpu, [...this.grads.values()]);
    const fwd = model.forward(batch, { outputRows: rows, keep: true });
    const targetT = gpu.upload([rows.length], targets, "u32");
    const dlogits = gpu.empty([rows.length, cfg.vocabSize]);
    const { losses } = crossEntropy(gpu, fwd.logits, targetT, rows.length, cfg.vocabSize, {
      dlogits,
      scale: 1 / rows.length,
    });
    backward(model, fwd, { dlogits, params: this.grads });
    this.adam.lr = learningRate(this.o, step);
    this.adam.step(this.names.map((n) => this.grads.get(n)!));
    gpu.release(dlogits);
    model.releaseForward(fwd);
    gpu.flush(); // the GPU starts on this step while the next one is recorded
    return { losses, rows: rows.length };
  }
}

/** A step's mean loss from its per-row losses (summed in order, in float64). */
export function meanLoss(rowLosses: Float32Array, rows: number): number {
  return rowLosses.reduce((a, b) => a + b, 0) / rows;
}

/**
 * Trains steps [from, to) back to back: each step is recorded and submitted without waiting for the
 * GPU, and the per-row losses stay there until LOSS_READ_EVERY steps, a multiple of `readEvery` or
 * step `to` is reached; then they are read in one readback and `onRead(step, losses, tokens)` gets
 * the steps done so far, the [step, mean loss] of the steps since the last read and the tokens they
 * predicted (a non-finite loss is an error naming its step).
 */
export async function trainSteps(
  trainer: Trainer,
  schedule: BatchSchedule,
  from: number,
  to: number,
  readEvery: number,
  onRead: (step: number, losses: [number, number][], tokens: number) => Promise<void>,
): Promise<void> {
  let pending: { step: number; losses: Tensor; rows: number }[] = [];
  for (let step = from; step < to; step++) {
    pending.push({ step, ...trainer.record(step, schedule.at(step)) });
    const done = step + 1;
    if (done % LOSS_READ_EVERY !== 0 && done % readEvery !== 0 && done !== to) continue;
    const values = await trainer.gpu.readMany(pending.map((p) => p.losses));
    const losses = pending.map((p, i): [number, number] => {
      const loss = meanLoss(values[i], p.rows);
      if (!Number.isFinite(loss)) throw new Error(`training diverged at step ${p.step} (loss ${loss})`);
      return [p.step, loss];
    });
    trainer.gpu.release(...pending.map((p) => p.losses));
    const tokens = pending.reduce((sum, p) => sum + p.rows, 0);
    pending = [];
    await onRead(done, losses, tokens);
  }
}

interface CheckpointMeta {
  step: number;
  /** The weights and Adam state of `step`: a file name in the run folder. */
  weights: string;
  /** Steps at which a killed run was resumed from its checkpoint. */
  resumedAt?: number[];
  losses: [number, number][];
  elapsedSeconds: number;
  options: TrainOptions;
}

/** Deletes the temp files that killed atomic writes of `names` left in `dir` (engine/files.ts writes
 *  `<name>.tmp-<pid>-<uuid>`, then renames it over `<name>`). */
async function removeTempFiles(dir: string, names: string[]): Promise<void> {
  for (const entry of Deno.readDirSync(dir)) {
    if (names.some((name) => entry.name.startsWith(`${name}.tmp-`))) {
      await Deno.remove(`${dir}/${entry.name}`);
    }
  }
}

/** The manifest of a run folder, checked field by field (a hand-edited or foreign file is an error). */
async function readManifest(path: string, o: TrainOptions): Promise<CheckpointMeta> {
  let saved: CheckpointMeta;
  try {
    saved = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`${path}: not a readable checkpoint manifest (${(e as Error).message})`);
  }
  const fail = (field: string, expected: string): never => {
    throw new Error(`${path}: field "${field}" must be ${expected}; delete the run folder to start over`);
  };
  if (typeof saved !== "object" || saved === null) fail("(root)", "an object");
  if (!Number.isSafeInteger(saved.step) || saved.step < 0) fail("step", "an integer >= 0");
  if (typeof saved.weights !== "string" || !/^checkpoint-\d+\.safetensors$/.test(saved.weights)) {
    fail("weights", `a file name "checkpoint-<step>.safetensors"`);
  }
  if (!Array.isArray(saved.losses) || saved.losses.length !== saved.step) {
    fail("losses", `${saved.step} entries`);
  }
  if (JSON.stringify(saved.options) !== JSON.stringify(o)) {
    throw new Error(`${path} was written with other options; use another --run-dir or delete it`);
  }
  return saved;
}

export async function train(o: TrainOptions, outDir: string, runDir: string): Promise<void> {
  const gpu = await getGpu();
  console.log(`adapter: ${gpu.describe()}`);

  // ---- data
  const { kb, corpus, tok, sentences, cfg } = trainingData(o);
  const corpusTokens = sentences.reduce((s, x) => s + x.length, 0);
  console.log(
    `knowledge base seed ${o.seed}: ${kb.facts.length} facts, ${corpus.length} sentences, ${corpusTokens} tokens, ` +
      `vocabulary ${tok.vocabSize}; model ${o.nLayer} layers, d=${o.nEmbd}, ${o.nHead} heads`,
  );

  // ---- model, optimizer, resume
  const trainer = new Trainer(gpu, cfg, o);
  const { model, names, adam } = trainer;
  let meta: CheckpointMeta = { step: 0, weights: "", losses: [], elapsedSeconds: 0, options: o };
  await Deno.mkdir(runDir, { recursive: true });
  const ckptMeta = `${runDir}/checkpoint.json`;
  if (await exists(ckptMeta)) {
    const saved = await readManifest(ckptMeta, o);
    const file = await openSafetensors(`${runDir}/${saved.weights}`);
    try {
      const step = file.metadata.step;
      if (step !== String(saved.step)) {
        throw new Error(`${file.path} holds step ${step}, but ${ckptMeta} names it for step ${saved.step}`);
      }
      await trainer.restore(saved.step, (name) => file.read(name));
    } finally {
      file.close();
    }
    meta = { ...saved, resumedAt: [...(saved.resumedAt ?? []), saved.step] };
    console.log(`resumed from ${runDir} at step ${meta.step}`);
  }
  // A kill can leave a temp file of either atomic write (the weights' or the manifest's, which the
  // manifest's fsync makes a wide window under load), or a weights file written before its manifest:
  // not part of the run.
  for (const entry of Deno.readDirSync(runDir)) {
    if (/^checkpoint-\d+\.safetensors/.test(entry.name) && entry.name !== meta.weights) {
      await Deno.remove(`${runDir}/${entry.name}`);
    }
  }
  await removeTempFiles(runDir, ["checkpoint.json"]);
  const saveCheckpoint = async () => {
    const previous = meta.weights;
    meta.weights = `checkpoint-${meta.step}.safetensors`;
    await writeSafetensors(`${runDir}/${meta.weights}`, await trainer.state(), { step: String(meta.step) });
    await writeAtomic(ckptMeta, JSON.stringify(meta)); // names the weights file: written last
    if (previous && previous !== meta.weights) await Deno.remove(`${runDir}/${previous}`).catch(() => {});
  };

  // ---- training loop
  const schedule = new BatchSchedule(sentences, o);
  const started = performance.now() - meta.elapsedSeconds * 1000;
  let windowStart = performance.now(), windowTokens = 0;
  // Progress with an ETA on stderr; a resumed run's earlier steps count as done but not towards the rate.
  const bar = new ProgressBar("training", o.steps, { already: meta.step });
  // A run killed after its last checkpoint (while evaluating or writing the model folder) has no step
  // left to train: its bar still ends at 100%, as every finished run's does.
  if (meta.step === o.steps) bar.update(meta.step, "no steps left");
  await trainSteps(trainer, schedule, meta.step, o.steps, o.checkpointEvery, async (step, losses, tokens) => {
    meta.losses.push(...losses);
    meta.step = step;
    windowTokens += tokens;
    if (step % LOSS_READ_EVERY === 0 || step === o.steps) {
      const now = performance.now();
      const tps = windowTokens / ((now - windowStart) / 1000);
      bar.update(
        step,
        `epoch ${schedule.epoch}  loss ${losses.at(-1)![1].toFixed(4)}  lr ${adam.lr.toExponential(2)}  ` +
          `${tps.toFixed(0)} tok/s`,
      );
      windowStart = now;
      windowTokens = 0;
    }
    if (step % o.checkpointEvery === 0 || step === o.steps) {
      meta.elapsedSeconds = (performance.now() - started) / 1000;
      await saveCheckpoint();
    }
  });

  // ---- evaluation and the model folder
  const { train: trainItems, heldOut } = recallSets(kb);
  const trainRecall = await factRecall(model, tok, trainItems);
  const heldOutRecall = await factRecall(model, tok, heldOut);
  const finalLoss = meta.losses.slice(-50).reduce((s, [, l]) => s + l, 0) / Math.min(50, meta.losses.length);
  /** "99.9% ± 0.1 (3260/3264)": the accuracy with its standard error over prompts. */
  const recallText = (r: RecallResult) =>
    `${(100 * r.accuracy).toFixed(1)}% ± ${
      (100 * sem(r.hits.map(Number))).toFixed(1)
    } (${r.correct}/${r.total}`;
  console.log(
    `recall: training templates ${recallText(trainRecall)}), held-out paraphrases ${
      recallText(heldOutRecall)
    })`,
  );
  await Deno.mkdir(outDir, { recursive: true });
  // What a run killed while writing the folder left of these files' atomic writes.
  await removeTempFiles(outDir, [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    ...Object.keys(datasetFiles(kb)),
    "loss_curve.svg",
    "MODEL_CARD.md",
  ]);
  await model.save(outDir, { locus_seed: String(o.seed) });
  await writeAtomic(`${outDir}/tokenizer.json`, tok.toTokenizerJson());
  for (const [name, text] of Object.entries(datasetFiles(kb))) await writeAtomic(`${outDir}/${name}`, text);
  const smooth = meta.losses.map(([s], i, a) => {
    const w = a.slice(Math.max(0, i - 19), i + 1);
    return [s, w.reduce((x, [, l]) => x + l, 0) / w.length] as [number, number];
  });
  await writeAtomic(
    `${outDir}/loss_curve.svg`,
    lineChart([{ name: "loss (20-step mean)", points: smooth }], {
      title: `Training loss, ${o.nLayer} layers d=${o.nEmbd}, seed ${o.seed}`,
      xLabel: "step",
      yLabel: "cross-entropy (nats)",
      logY: true,
    }),
  );
  const minutes = meta.elapsedSeconds / 60;
  const card = `# Locus embedded model (locus-kb)

A GPT-2-architecture model trained from scratch by Locus on a generated knowledge base of invented
facts, so that localization and editing experiments run offline on any machine.

| | |
|---|---|
| architecture | GPT-2, ${o.nLayer} layers, d=${o.nEmbd}, ${o.nHead} heads, ${cfg.nPositions} positions, vocabulary ${cfg.vocabSize} (word level) |
| parameters | ${names.reduce((s, n) => s + trainer.tensorOf(n).size, 0).toLocaleString("en-US")} |
| data | knowledge base seed ${o.seed}: ${kb.subjects.length} subjects, ${kb.relations.length} relations, ${kb.facts.length} facts; ${corpus.length} sentences (${corpusTokens} tokens) |
| training | ${o.steps} steps x ${o.batchSize} sequences x ${o.seqLen} tokens, AdamW lr ${o.lr} (warmup ${o.warmup}, cosine to 10%), weight decay ${o.weightDecay}, clip ${o.clipNorm} |
| adapter | ${gpu.describe()} |
| training time | ${minutes.toFixed(1)} minutes${
    meta.resumedAt?.length ? ` (resumed from checkpoints at steps ${meta.resumedAt.join(", ")})` : ""
  } |
| final loss | ${finalLoss.toFixed(4)} (mean of the last 50 steps) |
| recall, training templates | ${recallText(trainRecall)}; greedy first object token, ± standard error) |
| recall, held-out paraphrases | ${recallText(heldOutRecall)}) |

Reproduce: \`./locus task train --seed ${o.seed} --steps ${o.steps}\` (writes this folder; checkpoints in runs/).

Files: config.json and model.safetensors (Hugging Face GPT-2 layout), tokenizer.json (word level),
counterfact.json (ROME's CounterFact schema), known_facts.json (ROME's known_1000 schema), zsre.json
(zsRE in MEND's schema), corpus.txt (the training text), loss_curve.svg.
`;
  await writeAtomic(`${outDir}/MODEL_CARD.md`, card);
  console.log(`wrote ${outDir}`);
}
