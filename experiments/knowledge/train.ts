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
// the batch order is a pure function of (seed, step). A checkpoint is two files, each written
// atomically (engine/files.ts): the weights and Adam state as checkpoint-<step>.safetensors, then the
// manifest checkpoint.json naming that file, written last; the previous weights file is deleted only
// after the manifest points past it, so a kill between the two resumes from the older, complete pair.
import { allocateGradients, backward } from "../../engine/autograd.ts";
import { crossEntropy } from "../../engine/backward_ops.ts";
import type { GPT2Config } from "../../engine/config.ts";
import { getGpu } from "../../engine/gpu.ts";
import { makeBatch, Model, parameterShapes } from "../../engine/model.ts";
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
  const kb = generateKnowledgeBase({ seed: o.seed, subjectsPerType: o.subjects });
  const corpus = trainingCorpus(kb);
  const tok = new WordLevelTokenizer(["<unk>", "<|endoftext|>", ...kb.vocabulary], {
    unk: "<unk>",
    eos: "<|endoftext|>",
  });
  const sentences = corpus.map((line) => tok.encode(line));
  const corpusTokens = sentences.reduce((s, x) => s + x.length, 0);
  const cfg: GPT2Config = {
    vocabSize: tok.vocabSize,
    nPositions: o.seqLen,
    nEmbd: o.nEmbd,
    nLayer: o.nLayer,
    nHead: o.nHead,
    layerNormEpsilon: 1e-5,
  };
  console.log(
    `knowledge base seed ${o.seed}: ${kb.facts.length} facts, ${corpus.length} sentences, ${corpusTokens} tokens, ` +
      `vocabulary ${tok.vocabSize}; model ${o.nLayer} layers, d=${o.nEmbd}, ${o.nHead} heads`,
  );

  // ---- model, optimizer, resume
  const model = Model.random(gpu, cfg, o.seed);
  const names = parameterShapes(cfg).map(([n]) => n);
  const tensorOf = (n: string) => (n === "wte.weight" ? model.wte[0].tensor : model.p(n));
  const grads = allocateGradients(model, names);
  const noDecay = (n: string) => n.endsWith(".bias") || /ln_(\d|f)\.weight/.test(n) || n === "wpe.weight";
  const adam = new Adam(
    gpu,
    names.map((n) => ({
      name: n,
      tensor: tensorOf(n),
      size: tensorOf(n).size,
      weightDecay: noDecay(n) ? 0 : undefined,
    })),
    { lr: o.lr, weightDecay: o.weightDecay, clipNorm: o.clipNorm },
  );
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
      for (const n of names) gpu.write(tensorOf(n), await file.read(n));
      const m: Float32Array[] = [], v: Float32Array[] = [];
      for (const n of names) {
        m.push(await file.read(`adam.m.${n}`));
        v.push(await file.read(`adam.v.${n}`));
      }
      adam.loadState({ step: saved.step, names, m, v });
    } finally {
      file.close();
    }
    meta = { ...saved, resumedAt: [...(saved.resumedAt ?? []), saved.step] };
    console.log(`resumed from ${runDir} at step ${meta.step}`);
  }
  // A kill can leave a temp file, or a weights file written before its manifest: not part of the run.
  for (const entry of Deno.readDirSync(runDir)) {
    if (/^checkpoint-\d+\.safetensors/.test(entry.name) && entry.name !== meta.weights) {
      await Deno.remove(`${runDir}/${entry.name}`);
    }
  }
  const saveCheckpoint = async () => {
    const state = await adam.saveState();
    const weights = await model.toArrays();
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [i, n] of names.entries()) {
      const shape = [tensorOf(n).size];
      tensors[n] = { shape, data: weights.get(n)! };
      tensors[`adam.m.${n}`] = { shape, data: state.m[i] };
      tensors[`adam.v.${n}`] = { shape, data: state.v[i] };
    }
    const previous = meta.weights;
    meta.weights = `checkpoint-${meta.step}.safetensors`;
    await writeSafetensors(`${runDir}/${meta.weights}`, tensors, { step: String(meta.step) });
    await writeAtomic(ckptMeta, JSON.stringify(meta)); // names the weights file: written last
    if (previous && previous !== meta.weights) await Deno.remove(`${runDir}/${previous}`).catch(() => {});
  };

  // ---- training loop
  const T = o.seqLen, B = o.batchSize;
  const epochSequences = (epoch: number) =>
    packSequences(permutation(sentences.length, o.seed * 1000 + epoch).map((i) => sentences[i]), T + 1);
  let epoch = -1, sequences: number[][] = [];
  const started = performance.now() - meta.elapsedSeconds * 1000;
  let windowStart = performance.now(), windowTokens = 0;
  // Progress with an ETA on stderr; a resumed run's earlier steps count as done but not towards the rate.
  const bar = new ProgressBar("training", o.steps, { already: meta.step });
  for (let step = meta.step; step < o.steps; step++) {
    // Batch `step` = sequences [i*B, (i+1)*B) of epoch e, where epochs are consumed in order.
    let index = step * B, e = 0;
    for (;;) {
      if (e !== epoch) {
        epoch = e;
        sequences = epochSequences(e);
      }
      const perEpoch = Math.floor(sequences.length / B) * B;
      if (index < perEpoch) break;
      index -= perEpoch;
      e++;
    }
    const seqs = sequences.slice(index, index + B);
    const inputs = seqs.map((s) => s.slice(0, -1));
    const batch = makeBatch(inputs);
    const rows: number[] = [], targets: number[] = [];
    seqs.forEach((s, b) =>
      s.slice(1).forEach((next, t) => {
        rows.push(b * batch.T + t);
        targets.push(next);
      })
    );

    zeroGrads(gpu, [...grads.values()]);
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
    const loss = lossValues.reduce((a, b) => a + b, 0) / rows.length;
    if (!Number.isFinite(loss)) throw new Error(`training diverged at step ${step} (loss ${loss})`);
    meta.losses.push([step, loss]);
    windowTokens += rows.length;
    meta.step = step + 1;

    if (meta.step % 20 === 0 || meta.step === o.steps) {
      const now = performance.now();
      const tps = windowTokens / ((now - windowStart) / 1000);
      bar.update(
        meta.step,
        `epoch ${epoch}  loss ${loss.toFixed(4)}  lr ${adam.lr.toExponential(2)}  ${tps.toFixed(0)} tok/s`,
      );
      windowStart = now;
      windowTokens = 0;
    }
    if (meta.step % o.checkpointEvery === 0 || meta.step === o.steps) {
      meta.elapsedSeconds = (performance.now() - started) / 1000;
      await saveCheckpoint();
    }
  }

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
| parameters | ${names.reduce((s, n) => s + tensorOf(n).size, 0).toLocaleString("en-US")} |
| data | knowledge base seed ${o.seed}: ${kb.subjects.length} subjects, ${kb.relations.length} relations, ${kb.facts.length} facts; ${corpus.length} sentences (${corpusTokens} tokens) |
| training | ${o.steps} steps x ${B} sequences x ${T} tokens, AdamW lr ${o.lr} (warmup ${o.warmup}, cosine to 10%), weight decay ${o.weightDecay}, clip ${o.clipNorm} |
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
