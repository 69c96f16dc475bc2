// metrics.ts generate's cached decode (each step runs only the newest token, its earlier positions' q|k|v
// from the cache of Model.forward's suffix) against a loop of whole-sequence forwards, greedy, on every
// family fixture: rotary (interleaved and halves), grouped and multi-query heads, sliding windows shorter
// than the text, Gemma's soft-caps and local/global layers, parallel residuals, f16/bf16 weights; with
// prompts of different lengths in one batch, split over batches, and under virtual edits.
import assert from "node:assert/strict";
import { makeBatch, type Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { type Edit, keyValueDelta, VirtualEditSet } from "../experiments/editing/edit.ts";
import { generate } from "../experiments/evaluation/metrics.ts";
import { loadCase } from "./families_fixtures.ts";
import { randomArray } from "./util.ts";

const FAMILIES = [
  "gpt2",
  "gptj",
  "gpt_neox_parallel",
  "gpt_neox_sequential",
  "llama",
  "llama3_scaled",
  "llama_bf16",
  "mistral",
  "qwen2",
  "gemma",
  "gemma_f16",
  "gemma2",
  "gemma3_text",
];

/** Greedy continuation of `ids` by `n` tokens, one whole-sequence forward per token (under edit `edit` of
 *  `set`, if given); fails where the runner-up is within 1e-4 (the cached decode, equal to float
 *  tolerance, could pick either). */
async function wholeSequenceGreedy(
  model: Model,
  ids: number[],
  n: number,
  under?: { set: VirtualEditSet; edit: number },
): Promise<number[]> {
  const seq = [...ids];
  for (let i = 0; i < n && seq.length < model.config.nPositions; i++) {
    const batch = makeBatch([seq]);
    const res = model.forward(batch, { virtualEdits: under?.set.forBatch([under.edit], batch.T) });
    const row = await res.logits.read();
    model.releaseForward(res);
    const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
    assert.ok(row[order[0]] - row[order[1]] > 1e-4, `near tie after [${seq}]: pick other prompts`);
    seq.push(order[0]);
  }
  return seq.slice(ids.length);
}

/** A random rank-one edit of layer 0's c_proj, large enough to change the greedy text. */
function randomEdit(model: Model, seed: number): Edit {
  const f = model.config.nInner, d = model.config.nEmbd;
  return {
    method: "random",
    requests: [],
    deltas: [keyValueDelta(model, 0, randomArray(f, seed, 3), randomArray(d, seed + 1, 3), 1)],
    info: {},
  };
}

for (const name of FAMILIES) {
  Deno.test(`${name}: generate's cached decode equals whole-sequence forwards (batched, split, under virtual edits)`, async () => {
    const { model } = await loadCase(name);
    const V = model.config.vocabSize;
    // Word i is token i, so prompts are token lists; no end-of-sequence token stops the texts.
    const tok = new WordLevelTokenizer(Array.from({ length: V }, (_, i) => `w${i}`), { unk: "w0" });
    const prompts = [[5, 9, 3, 17, 2, 8], [2, 4], [11, 12, 13], [7]].map((p) => p.map((i) => i % V));
    const text = prompts.map((p) => p.map((i) => `w${i}`).join(" "));
    const n = 8; // past the fixtures' sliding windows of 4
    const expected = [];
    for (const p of prompts) expected.push(await wholeSequenceGreedy(model, p, n));
    for (const batchSize of [64, 3]) {
      const g = await generate(model, tok, text, { maxNewTokens: n, topK: 1 }, undefined, batchSize);
      assert.deepEqual(g.tokens, expected, `${name}: batches of ${batchSize}`);
    }
    // Under virtual edits (prompt 2 unedited), each prompt's rows under its own edit (tests/virtual_edits_test.ts
    // checks those against the edit applied).
    const set = new VirtualEditSet(model, [randomEdit(model, 1), randomEdit(model, 2)]);
    const itemEdit = [0, 1, -1, 0];
    const edited = [];
    for (const [i, p] of prompts.entries()) {
      edited.push(await wholeSequenceGreedy(model, p, n, { set, edit: itemEdit[i] }));
    }
    assert.notDeepEqual(edited, expected, `${name}: the edits change the greedy text`);
    const g = await generate(model, tok, text, { maxNewTokens: n, topK: 1 }, { edits: set, itemEdit }, 3);
    set.release();
    assert.deepEqual(g.tokens, edited, `${name}: under virtual edits`);
  });
}
