// Batched greedy next-token prediction, and fact recall (does the model complete a prompt with
// the object's first token?), used by training, the model card and the known-facts filter.
import type { Model } from "../../engine/model.ts";
import { makeBatch } from "../../engine/model.ts";
import { topK } from "../../engine/ops.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";

/** The argmax next token after each prompt; prompts are run `batchSize` at a time, one readback each. */
export async function greedyNextTokens(
  model: Model,
  prompts: number[][],
  batchSize = 256,
): Promise<number[]> {
  const gpu = model.gpu, V = model.config.vocabSize;
  const out: number[] = [];
  for (let i = 0; i < prompts.length; i += batchSize) {
    const chunk = prompts.slice(i, i + batchSize);
    const res = model.forward(makeBatch(chunk));
    const top = topK(gpu, res.logits, chunk.length, V, 1);
    const ids = await gpu.readU32(top.indices);
    gpu.release(top.indices, top.values);
    model.releaseForward(res);
    out.push(...ids);
  }
  return out;
}

export interface RecallItem {
  prompt: string;
  answer: string;
}

export interface RecallResult {
  correct: number;
  total: number;
  accuracy: number;
  /** Per item: was the greedy next token the answer's first token? */
  hits: boolean[];
}

/** Per item: is the model's greedy next token the answer's first token after the prompt (the known-facts
 *  filter of ROME and Hase et al.)? An answer with a word the tokenizer does not know is an error. */
export async function knowsAnswers(model: Model, tok: Tokenizer, items: RecallItem[]): Promise<boolean[]> {
  const firsts = items.map((it) => targetIds(tok, it.prompt, it.answer, { refuseUnknown: true })[0]);
  const predicted = await greedyNextTokens(model, items.map((it) => tok.encode(it.prompt)));
  return predicted.map((id, i) => id === firsts[i]);
}

/** Fraction of prompts whose greedy next token is the answer's first token after the prompt. */
export async function factRecall(model: Model, tok: Tokenizer, items: RecallItem[]): Promise<RecallResult> {
  const prompts = items.map((it) => tok.encode(it.prompt));
  const firsts = items.map((it) => targetIds(tok, it.prompt, it.answer)[0]);
  const got = await greedyNextTokens(model, prompts);
  const hits = got.map((id, i) => id === firsts[i]);
  const correct = hits.filter(Boolean).length;
  return { correct, total: items.length, accuracy: items.length ? correct / items.length : 0, hits };
}
