// Essence drift and fluency: the generation-based measurements of what an edit does to the rest of the
// model, on the GPU (metrics.ts generate, tokenPerplexity, fluency). Both are seeded: the same seed gives
// the same samples and generations on every run, so a pre-edit and a post-edit measurement differ only
// by the edit. Both take many measurements at once (a sweep block's edits), each of them under its own
// virtual edit if asked (experiments/editing/edit.ts ScoredUnder), in shared batches; every fluency run
// draws from its own PRNG stream, so it samples the tokens it samples alone.
//
//  - Essence (Hase et al., "Does Localization Inform Editing?", appendix B, "Measuring essence drift"):
//    `samples` texts sampled (top-k) from the unedited model after "{subject} is a", which tend to
//    describe what the subject is; their mean perplexity before and after the edit; essence score
//    = 1 - clip(post - pre, 0, 5) / 5 (metrics.ts essenceScore), part of their four-way overall score.
//  - Fluency (Meng et al., "Locating and Editing Factual Associations in GPT", section 4.2, "generation
//    entropy"): the weighted bi- and trigram entropy (metrics.ts fluency) of top-k sampled generations
//    from the case's generation prompts, averaged over the prompts. Repetitive text after a bad edit
//    scores low.
import type { Model } from "../../engine/model.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import { repeatUnder, type ScoredUnder } from "../editing/edit.ts";
import { essenceScore, fluency, generate, tokenPerplexity } from "./metrics.ts";

/** Hase et al.'s essence prompt; "{}" is the subject. */
export const ESSENCE_TEMPLATE = "{} is a";

/** Sampling of one generation-based measurement. */
export interface SamplingOptions {
  /** New tokens per text (fewer where the model's positions run out). */
  tokens: number;
  /** Sample among the k most likely tokens (Hase et al. and ROME: 5). */
  topK: number;
  /** PRNG seed of the draws. */
  seed: number;
}

/** The unedited model's essence texts of one subject and their mean perplexity. */
export interface EssenceTexts {
  /** The prompt the texts continue ("{subject} is a"). */
  prompt: string;
  /** prompt tokens ++ sampled tokens, per sample: [samples][tokens]. */
  sequences: number[][];
  /** The decoded samples. */
  texts: string[];
  /** Mean perplexity of the samples (metrics.ts perplexity) under the model that sampled them. */
  perplexity: number;
}

/** An edit's essence: the samples' mean perplexity before and after it, and the score. */
export interface Essence {
  /** 1 - clip(post - pre, 0, 5) / 5. */
  score: number;
  /** Mean perplexity of the essence texts before the edit. */
  pre: number;
  /** The same after the edit. */
  post: number;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * `samples` essence texts of `subject`, sampled from the model as it is now (call it before editing).
 * A word of the prompt outside a word-level vocabulary is an error naming it (the model would see its
 * unknown token instead).
 */
export async function essenceTexts(
  model: Model,
  tok: Tokenizer,
  subject: string,
  o: SamplingOptions & { samples: number },
): Promise<EssenceTexts> {
  return (await essenceTextsOf(model, tok, [{ subject, seed: o.seed }], o))[0];
}

/**
 * essenceTexts of several subjects, each with its own seed: sampled together (each subject's draws from
 * its own stream, the samples it gets alone) and their perplexities scored in one call.
 */
export async function essenceTextsOf(
  model: Model,
  tok: Tokenizer,
  subjects: readonly { subject: string; seed: number }[],
  o: Omit<SamplingOptions, "seed"> & { samples: number },
): Promise<EssenceTexts[]> {
  if (!Number.isInteger(o.samples) || o.samples < 1) {
    throw new Error(`essence: samples must be a positive integer, got ${o.samples}`);
  }
  const prompts = subjects.map(({ subject }) => {
    const prompt = ESSENCE_TEMPLATE.replace("{}", subject);
    try {
      targetIds(tok, subject, ESSENCE_TEMPLATE.replace("{} ", ""), { refuseUnknown: true });
    } catch (e) {
      throw new Error(`essence prompt ${JSON.stringify(prompt)}: ${(e as Error).message}`);
    }
    return prompt;
  });
  const g = await generate(model, tok, prompts.flatMap((p) => Array(o.samples).fill(p)), {
    maxNewTokens: o.tokens,
    topK: o.topK,
    streams: subjects.map(({ seed }) => ({ seed, prompts: o.samples })),
  });
  const perplexities = await tokenPerplexity(model, g.sequences);
  return prompts.map((prompt, i) => {
    const at = i * o.samples, to = at + o.samples;
    return {
      prompt,
      sequences: g.sequences.slice(at, to),
      texts: g.texts.slice(at, to),
      perplexity: mean(perplexities.slice(at, to)),
    };
  });
}

/**
 * The essence of the model as it is now (call it with the edit applied) against each set of unedited
 * texts; with `under`, texts[i] are scored under virtual edit under.itemEdit[i] instead (every edit's
 * texts in the same batches).
 */
export async function essenceOf(
  model: Model,
  texts: readonly EssenceTexts[],
  under?: ScoredUnder,
): Promise<Essence[]> {
  const perplexities = await tokenPerplexity(
    model,
    texts.flatMap((t) => t.sequences),
    undefined,
    under && repeatUnder(under, texts.map((t) => t.sequences.length)),
  );
  let at = 0;
  return texts.map((t) => {
    const post = mean(perplexities.slice(at, at += t.sequences.length));
    return { score: essenceScore(t.perplexity, post), pre: t.perplexity, post };
  });
}

/** The essence of an edit that changes no weight (editing/edit.ts changesNothing): the model after it is
 *  the unedited model, whose perplexity of the texts is the one they were sampled with, bit for bit. */
export function unchangedEssence(texts: EssenceTexts): Essence {
  return {
    score: essenceScore(texts.perplexity, texts.perplexity),
    pre: texts.perplexity,
    post: texts.perplexity,
  };
}

/** One fluency measurement: its generation prompts and the seed of their draws. */
export interface FluencyRun {
  /** The generation prompts, one sampled generation each. */
  prompts: readonly string[];
  /** PRNG seed of the run's draws. */
  seed: number;
}

/**
 * ROME's fluency of the model as it is now, per run: the mean n-gram entropy of one sampled generation
 * from each of its prompts (the whole text, prompt included, as ROME measures it). The runs are
 * generated together, each with its own stream of draws (the tokens it gets generated alone); with
 * `under`, run i under virtual edit under.itemEdit[i]; `batchSize`: generate's prompts per batch.
 */
export async function generationFluency(
  model: Model,
  tok: Tokenizer,
  runs: readonly FluencyRun[],
  o: Omit<SamplingOptions, "seed">,
  under?: ScoredUnder,
  batchSize?: number,
): Promise<number[]> {
  runs.forEach((r, i) => {
    if (r.prompts.length === 0) throw new Error(`fluency: run ${i} has no generation prompts`);
  });
  const g = await generate(
    model,
    tok,
    runs.flatMap((r) => r.prompts),
    {
      maxNewTokens: o.tokens,
      topK: o.topK,
      streams: runs.map((r) => ({ seed: r.seed, prompts: r.prompts.length })),
    },
    under && repeatUnder(under, runs.map((r) => r.prompts.length)),
    batchSize,
  );
  let at = 0;
  return runs.map((r) => mean(g.texts.slice(at, at += r.prompts.length).map(fluency)));
}
