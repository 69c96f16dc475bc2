// The next-token distribution after a prompt: the one call behind `predict`, the demo's answers and the
// web page's top-k table (kept apart from cli.ts so a browser build does not pull in the command line).
import type { Model } from "./model.ts";
import { makeBatch } from "./model.ts";
import { softmax, topK } from "./ops.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** One candidate next token. */
export interface Prediction {
  /** The token's text (its id as a string when no tokenizer was given). */
  token: string;
  /** Token id. */
  id: number;
  /** Softmax probability of the token after the prompt. */
  prob: number;
}

/** Top-k next-token distribution after `ids` (one forward, one small readback). */
export async function predictNext(
  model: Model,
  ids: number[],
  k: number,
  tok?: Tokenizer,
): Promise<Prediction[]> {
  const gpu = model.gpu, V = model.config.vocabSize;
  const res = model.forward(makeBatch([ids]));
  const probs = softmax(gpu, res.logits, 1, V);
  const top = topK(gpu, probs, 1, V, Math.min(k, V));
  const [idx, val] = await gpu.readMany([top.indices, top.values]);
  gpu.release(probs, top.indices, top.values);
  model.releaseForward(res);
  const ids32 = new Uint32Array(idx.buffer, idx.byteOffset, idx.length);
  return [...ids32].map((id, i) => ({ id, prob: val[i], token: tok ? tok.tokenString(id) : String(id) }));
}
