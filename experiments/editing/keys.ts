// Where an edit reads and writes: prompts built from context templates, the subject's token range
// and the fact token (ROME's fact_token: the subject's last token by default), the subject noise of
// fact forcing, and batched read-outs of the MLP key k (c_proj input) and value v (c_proj output) there.
//
// Context templates (ROME's reference code): ROME averages the subject key over the bare prompt
// "{}" and 20 prompts prefixed by short texts sampled from the model itself, "<text>. {}", so
// that k* describes the subject in many contexts. Texts are drawn by top-k sampling (k = 5) with
// a seeded generator (ROME's are unseeded), starting from:
//   - GPT-2 (byte-level BPE): <|endoftext|>, as in ROME;
//   - the embedded word-level model: the first word of a seeded-random corpus line. Its corpus never
//     contains <|endoftext|> (sentences are packed back to back), so generations from eos would start
//     from an untrained embedding; a sentence-initial corpus word gives corpus-like prefixes.
import type { Gpu, Tensor } from "../../engine/gpu.ts";
import { type Batch, type Hook, makeBatch, type Model, type Site } from "../../engine/model.ts";
import { topK } from "../../engine/ops.ts";
import { mulberry32 } from "../../engine/random.ts";
import { subjectTokenRange, type Tokenizer } from "../../engine/tokenizer.ts";
import { sharedPasses, startGroups } from "../evaluation/residuals.ts";
import { gaussianNoise } from "../localization/tracing.ts";
import type { ScoredUnder, SubjectNoise } from "./edit.ts";

/** A prompt as token ids, with the subject's token range [start, end) and the fact token. */
export interface PromptInstance {
  /** The prompt's token ids. */
  ids: number[];
  /** The subject's token range [start, end). */
  subject: [number, number];
  /** Index of the fact token: where keys are read and values written. */
  fact: number;
  /** Fact forcing's and tracing's noise on the subject's embeddings. */
  noise?: SubjectNoise;
}

/**
 * Which token an edit reads its key at and writes its value to (ROME's fact_token): the subject's
 * last token (the default, where causal tracing finds GPT-2's subject information), its first, or
 * the prompt's last token.
 */
export type FactToken = "subject_last" | "subject_first" | "last";

/**
 * `context` holds "{}" where the prompt goes, the prompt holds "{}" where the subject goes:
 * context "Lisbon is a city. {}", prompt "{} was born in", subject "Vela Dornik". The subject is
 * located through token offsets (its occurrences inside the context text itself are skipped).
 */
export function instantiate(
  tok: Tokenizer,
  context: string,
  prompt: string,
  subject: string,
  noise?: SubjectNoise,
  factToken: FactToken = "subject_last",
): PromptInstance {
  const at = context.indexOf("{}");
  if (at < 0) throw new Error(`context template ${JSON.stringify(context)} has no "{}" for the prompt`);
  if (!prompt.includes("{}")) throw new Error(`prompt ${JSON.stringify(prompt)} has no "{}" for the subject`);
  const template = context.slice(0, at) + prompt + context.slice(at + 2);
  const slot = template.indexOf("{}");
  const text = template.slice(0, slot) + subject + template.slice(slot + 2);
  let occurrence = 0;
  for (let i = text.indexOf(subject); i >= 0 && i < slot; i = text.indexOf(subject, i + 1)) occurrence++;
  const subjectRange = subjectTokenRange(tok, text, subject, occurrence);
  const ids = tok.encode(text);
  const fact = factToken === "subject_last"
    ? subjectRange[1] - 1
    : factToken === "subject_first"
    ? subjectRange[0]
    : ids.length - 1;
  return { ids, subject: subjectRange, fact, noise };
}

// ---------------------------------------------------------------------------------------------
// Subject noise

/** Noise for `count` subject tokens [count, d]: `scale` times causal tracing's first noise sample
 *  (experiments/localization/tracing.ts gaussianNoise), so fact forcing uses tracing's corrupted input. */
export function subjectNoise(noise: SubjectNoise, count: number, d: number): Float32Array {
  return gaussianNoise(count * d, noise.seed).map((v) => v * noise.scale);
}

/**
 * A batch of instances plus the hook that adds each noised instance's subject noise to the
 * embeddings ("embed" site = wte + wpe rows, the same rows causal tracing corrupts).
 * `release` frees the noise tensor after the forward that used it is recorded.
 */
export function batchWithNoise(
  gpu: Gpu,
  d: number,
  instances: PromptInstance[],
): { batch: Batch; hooks: Hook[]; release: () => void } {
  const batch = makeBatch(instances.map((p) => p.ids));
  const rows: Float32Array[] = []; // one [subject length, d] block per noised instance
  let count = 0;
  const entries = instances.flatMap((p, b) => {
    if (!p.noise) return [];
    const length = p.subject[1] - p.subject[0];
    rows.push(subjectNoise(p.noise, length, d));
    count += length;
    return Array.from(
      { length },
      (_, i) => ({ dst: b * batch.T + p.subject[0] + i, src: count - length + i, keep: 1, take: 1 }),
    );
  });
  if (entries.length === 0) return { batch, hooks: [], release: () => {} };
  const flat = new Float32Array(count * d);
  let at = 0;
  for (const block of rows) {
    flat.set(block, at);
    at += block.length;
  }
  const src = gpu.tensor([count, d], flat);
  return {
    batch,
    hooks: [{ layer: 0, site: "embed", patch: { src, entries } }],
    release: () => gpu.release(src),
  };
}

// ---------------------------------------------------------------------------------------------
// Read-outs at the fact token

/**
 * The states of `sites` at layer `layer` at the fact token of each instance: result[s][i] is site
 * s of instance i (length 4d for "key"/"mlp_pre", d otherwise).
 */
export async function factStates(
  model: Model,
  instances: PromptInstance[],
  layer: number,
  sites: Site[],
): Promise<Float32Array[][]> {
  const reads = sites.flatMap((site) => instances.map((_, instance) => ({ instance, layer, site })));
  const states = await readFactStates(model, instances, reads);
  return sites.map((_, s) => states.slice(s * instances.length, (s + 1) * instances.length));
}

/** One state to read at an instance's fact token. */
export interface StateRead {
  /** Index of the prompt instance. */
  instance: number;
  /** The layer whose site is read. */
  layer: number;
  /** The site read. */
  site: Site;
}

/** Captured bytes after which readFactStates reads its states back before recording more passes (default). */
const READ_BACK_BYTES = 64 * 2 ** 20;

/**
 * The state of each read at the fact token of its instance, each prompt under its own virtual edit
 * (under.itemEdit[i] for instance i; a MEMIT step reads every edit's keys with its lower layers' updates
 * in place). Instances with the same tokens, subject noise and edit are one pass (a MEMIT call's jobs of
 * one fact at different layers read the same unedited prompts). Under a set that keeps the unedited
 * residuals (VirtualEditSet's `residuals`), a noise-free pass starts at its edit's lowest edited block or
 * its lowest read, whichever is lower: the rows below are the unedited model's, the same bits
 * (evaluation/residuals.ts); and the states of unedited noise-free prompts are kept there, so a later
 * call's read of a kept state needs no pass (a sweep block's problems and methods read the same keys).
 * Passes run in batches of `batchSize` sequences, each up to the highest layer it reads, read back at
 * once (every `readBackBytes` of states, 64 MB by default).
 */
export async function readFactStates(
  model: Model,
  instances: PromptInstance[],
  reads: StateRead[],
  under?: ScoredUnder,
  batchSize = 128,
  readBackBytes = READ_BACK_BYTES,
): Promise<Float32Array[]> {
  const kept = under?.edits.residuals;
  if (!kept) return await computeFactStates(model, instances, reads, under, batchSize, readBackBytes);
  const out: (Float32Array | undefined)[] = reads.map(() => undefined);
  const unedited = (i: number) =>
    under.itemEdit[reads[i].instance] === -1 && !instances[reads[i].instance].noise;
  reads.forEach((r, i) => {
    const inst = instances[r.instance];
    if (unedited(i)) out[i] = kept.factState(inst.ids, inst.fact, r.layer, r.site);
  });
  const todo = reads.flatMap((_, i) => (out[i] ? [] : [i]));
  if (todo.length > 0) {
    const computed = await computeFactStates(
      model,
      instances,
      todo.map((i) => reads[i]),
      under,
      batchSize,
      readBackBytes,
    );
    todo.forEach((i, j) => {
      out[i] = computed[j];
      const r = reads[i], inst = instances[r.instance];
      if (unedited(i)) kept.keepFactState(inst.ids, inst.fact, r.layer, r.site, computed[j]);
    });
  }
  return out as Float32Array[];
}

/**
 * readFactStates' passes: every read computed.
 */
async function computeFactStates(
  model: Model,
  instances: PromptInstance[],
  reads: StateRead[],
  under: ScoredUnder | undefined,
  batchSize: number,
  readBackBytes: number,
): Promise<Float32Array[]> {
  const gpu = model.gpu;
  const editOf = (i: number) => under?.itemEdit[i] ?? -1;
  // One pass per distinct (tokens, subject noise, edit): the reads it serves, the first one's instance.
  const passes = sharedPasses(reads.length, (i) => {
    const inst = instances[reads[i].instance];
    return [editOf(reads[i].instance), inst.ids, inst.noise ? [inst.noise, inst.subject] : null];
  });
  const instanceOf = (k: number) => reads[passes[k][0]].instance;
  // The passes grouped by their first block: a noise-free one from the lowest of its edit's first block
  // and its reads.
  const residuals = under?.edits.residuals;
  const groups = startGroups(residuals, passes.map((_, k) => instances[instanceOf(k)].ids), (k) => {
    if (instances[instanceOf(k)].noise) return 0;
    const lowestRead = Math.min(...passes[k].map((i) => reads[i].site === "embed" ? 0 : reads[i].layer));
    return Math.min(under!.edits.firstLayer(editOf(instanceOf(k))), lowestRead, residuals!.deepest);
  });
  // Captured states wait on the GPU for one readback (each waits for all the work recorded before it),
  // or for one per `readBackBytes` where there are more (a mass edit of a large model's keys).
  const out: Float32Array[] = new Array(reads.length);
  const recorded: { into: Tensor; reads: number[]; width: number }[] = [];
  let recordedBytes = 0;
  const readBack = async () => {
    const done = recorded.splice(0);
    recordedBytes = 0;
    const arrays = await gpu.readMany(done.map((c) => c.into));
    done.forEach((c, k) => {
      c.reads.forEach((i, j) => out[i] = arrays[k].slice(j * c.width, (j + 1) * c.width));
      gpu.release(c.into);
    });
  };
  for (const [first, members] of groups) {
    for (let start = 0; start < members.length; start += batchSize) {
      const chunk = members.slice(start, start + batchSize);
      const chunkInstances = chunk.map((k) => instances[instanceOf(k)]);
      const { batch, hooks, release } = batchWithNoise(gpu, model.config.nEmbd, chunkInstances);
      // This batch's reads, one capture per (layer, site).
      const captures = new Map<string, { layer: number; site: Site; reads: number[]; rows: number[] }>();
      chunk.forEach((k, b) => {
        for (const i of passes[k]) {
          const r = reads[i], key = `${r.layer}|${r.site}`;
          if (!captures.has(key)) captures.set(key, { layer: r.layer, site: r.site, reads: [], rows: [] });
          const c = captures.get(key)!;
          c.reads.push(i);
          c.rows.push(b * batch.T + instances[r.instance].fact);
        }
      });
      for (const c of captures.values()) {
        const width = model.siteWidth(c.site), into = gpu.empty([c.rows.length, width]);
        hooks.push({ layer: c.layer, site: c.site, capture: { into, rows: c.rows } });
        recorded.push({ into, reads: c.reads, width });
        recordedBytes += 4 * into.size;
      }
      const virtualEdits = under?.edits.forBatch(chunk.map((k) => editOf(instanceOf(k))), batch.T);
      const input = first > 0
        ? residuals!.input(first, chunkInstances.map((x) => x.ids), batch.T)
        : undefined;
      // The blocks above the highest read change nothing read: the pass ends there (without the head).
      const endLayer = Math.max(...[...captures.values()].map((c) => c.layer)) + 1;
      const res = model.forward(batch, {
        hooks,
        outputRows: [0],
        virtualEdits,
        startLayer: first,
        input,
        endLayer,
      });
      release();
      gpu.release(input);
      model.releaseForward(res);
      if (recordedBytes >= readBackBytes) await readBack();
    }
  }
  await readBack();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Context templates

/** How context templates are sampled (ROME's get_context_templates). */
export interface TemplateSpec {
  /** [tokens per text (the start token included), how many texts] pairs; ROME: [[5,10],[10,10]]. */
  lengths: [number, number][];
  /** Seed of the sampling. */
  seed: number;
  /** Sample among the k most likely next tokens (ROME: 5). */
  topK: number;
  /** Words a text may start with (one picked per text, seeded); none = the tokenizer's eos. */
  startWords?: string[];
}

const templateCache = new WeakMap<Model, Map<string, string[]>>();

/**
 * ["{}", "<text>. {}", ...]: the bare template followed by one per sampled text (ROME's
 * get_context_templates, braces in texts replaced by spaces). Cached per model and spec.
 */
export async function contextTemplates(model: Model, tok: Tokenizer, spec: TemplateSpec): Promise<string[]> {
  const key = JSON.stringify(spec);
  const cache = templateCache.get(model) ?? new Map<string, string[]>();
  templateCache.set(model, cache);
  const hit = cache.get(key);
  if (hit) return hit;

  const random = mulberry32(spec.seed);
  // Sampling starts as the model reads any text: after BOS where the tokenizer puts one (Llama, Gemma);
  // without start words, from BOS or, as ROME does for GPT-2, from <|endoftext|>.
  const bos = tok.bosId === null ? [] : [tok.bosId];
  let starts: number[][];
  if (spec.startWords && spec.startWords.length > 0) {
    starts = spec.startWords.map((w) => {
      const ids = tok.encode(w).slice(bos.length);
      if (ids.length !== 1) throw new Error(`template start word ${JSON.stringify(w)} is not a single token`);
      return [...bos, ids[0]];
    });
  } else {
    const start = tok.bosId ?? tok.eosId;
    if (start === null) {
      throw new Error("context templates: the tokenizer has no bos or eos token; give startWords");
    }
    starts = [[start]];
  }
  const templates = ["{}"];
  for (const [length, count] of spec.lengths) {
    if (!(Number.isInteger(length) && length >= 2 && Number.isInteger(count) && count >= 1)) {
      throw new Error(`context templates: bad [length, count] pair [${length}, ${count}]`);
    }
    const texts = Array.from({ length: count }, () => [...starts[Math.floor(random() * starts.length)]]);
    for (let t = 1; t < length; t++) {
      const next = await sampleNext(model, texts, spec.topK, random);
      texts.forEach((s, i) => s.push(next[i]));
    }
    for (const ids of texts) {
      const text = tok.decode(ids.filter((id) => id !== tok.eosId)).replace(/[{}]/g, " ");
      templates.push(text + ". {}");
    }
  }
  cache.set(key, templates);
  return templates;
}

/** One top-k sampled next token per sequence (all of equal length): one forward, one readback. */
async function sampleNext(
  model: Model,
  sequences: number[][],
  k: number,
  random: () => number,
): Promise<number[]> {
  const gpu = model.gpu, V = model.config.vocabSize;
  const res = model.forward(makeBatch(sequences));
  const top = topK(gpu, res.logits, sequences.length, V, Math.min(k, V));
  const [idx, val] = await gpu.readMany([top.indices, top.values]);
  const ids = new Uint32Array(idx.buffer, idx.byteOffset, idx.length);
  model.releaseForward(res);
  gpu.release(top.indices, top.values);
  const kk = Math.min(k, V);
  return sequences.map((_, i) => {
    const logits = val.subarray(i * kk, (i + 1) * kk);
    const weights = Array.from(logits, (v) => Math.exp(v - logits[0])); // sorted descending
    let r = random() * weights.reduce((a, b) => a + b, 0);
    for (let j = 0; j < kk; j++) {
      r -= weights[j];
      if (r <= 0) return ids[i * kk + j];
    }
    return ids[i * kk + kk - 1];
  });
}

/** Distinct first words of corpus lines, sorted: start words for the embedded model's templates. */
export function sentenceStartWords(lines: string[]): string[] {
  const words = new Set<string>();
  for (const line of lines) {
    const w = line.trim().split(/\s+/)[0];
    if (w) words.add(w);
  }
  return [...words].sort();
}

/** Mean of each group's vectors, then the mean over groups (MEMIT: bare prompt and prefixed prompts weigh half each). */
export function groupMean(groups: Float32Array[][]): Float64Array {
  const width = groups[0]?.[0]?.length;
  if (width === undefined) throw new Error("groupMean: empty group");
  const out = new Float64Array(width);
  for (const g of groups) {
    if (g.length === 0) throw new Error("groupMean: empty group");
    for (const v of g) for (let i = 0; i < width; i++) out[i] += v[i] / (g.length * groups.length);
  }
  return out;
}
