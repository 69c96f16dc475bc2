// The engine CLI end to end (predict / generate / tokenize) on a tiny model saved to a temp folder:
// JSON output keeps its fields, text output is readable, and bad input gives a clear error.
import assert from "node:assert/strict";
import { predictNext } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { makeBatch, Model } from "../engine/model.ts";
import { softmax } from "../engine/ops.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { runScript, type ScriptRun } from "./util.ts";

const gpu = await getGpu();
const words = ["<unk>", "<|endoftext|>", "the", "cat", "sat", "on", "mat", "."];
const tok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<|endoftext|>" });
const dir = await Deno.makeTempDir();
const model = Model.random(
  gpu,
  { vocabSize: words.length, nPositions: 16, nEmbd: 16, nLayer: 2, nHead: 2, layerNormEpsilon: 1e-5 },
  5,
  true,
);
await model.save(dir);
await Deno.writeTextFile(`${dir}/tokenizer.json`, tok.toTokenizerJson());

function cli(...args: string[]): Promise<ScriptRun> {
  return runScript("experiments/commands/predict.ts", ...args);
}

Deno.test("predict --json: the top-k distribution equals the softmax of the forward", async () => {
  const r = await cli("predict", "--model", dir, "--prompt", "the cat sat", "--top", "3", "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(j).sort(), ["adapter", "input_ids", "model", "top"]);
  assert.deepEqual(j.input_ids, [2, 3, 4]);
  assert.equal(j.top.length, 3);
  const res = model.forward(makeBatch([[2, 3, 4]]));
  const probs = await softmax(gpu, res.logits, 1, words.length).read();
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b).slice(0, 3);
  assert.deepEqual(j.top.map((p: { id: number }) => p.id), order);
  for (const p of j.top) {
    assert.ok(Math.abs(p.prob - probs[p.id]) < 1e-6);
    assert.equal(p.token, tok.tokenString(p.id));
  }
});

Deno.test("predict --tokens and --prompt agree; generate continues greedily", async () => {
  const a = JSON.parse((await cli("predict", "--model", dir, "--tokens", "2,3,4", "--json")).stdout);
  const b = JSON.parse((await cli("predict", "--model", dir, "--prompt", "the cat sat", "--json")).stdout);
  assert.deepEqual(b.input_ids, [2, 3, 4], "the prompt's own ids, not only the same answer");
  assert.deepEqual(a.top, b.top);
  const direct = await predictNext(model, [2, 3, 4], a.top.length, tok);
  assert.deepEqual(b.top.map((p: { id: number }) => p.id), direct.map((p) => p.id));
  const g = await cli("generate", "--model", dir, "--prompt", "the cat", "--max-new", "3", "--json");
  assert.equal(g.code, 0, g.stderr);
  const j = JSON.parse(g.stdout);
  assert.deepEqual(Object.keys(j).sort(), ["adapter", "input_ids", "model", "output_ids", "text"]);
  assert.deepEqual(j.input_ids, [2, 3]);
  // --max-new 3: three tokens, or fewer ending at end-of-text (an empty list would pass the loop below).
  assert.ok(j.output_ids.length === 3 || (j.output_ids.length > 0 && j.output_ids.at(-1) === tok.eosId));
  assert.equal(j.text, tok.decode(j.output_ids));
  // Greedy: each generated token is the argmax after the prefix so far.
  let prefix = [2, 3];
  for (const id of j.output_ids) {
    const [best] = await predictNext(model, prefix, 1);
    assert.equal(id, best.id);
    prefix = [...prefix, id];
  }
});

Deno.test("tokenize prints ids; text mode prints a readable table", async () => {
  const t = await cli("tokenize", "--model", dir, "--text", "the cat sat on the mat .");
  assert.equal(t.stdout.trim(), "2 3 4 5 2 6 7");
  const p = await cli("predict", "--model", dir, "--prompt", "the cat", "--top", "2", "--adapter-info");
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /next-token distribution after "the cat":\n\s+1\. /);
  assert.match(p.stderr, /adapter: /);
});

Deno.test("bad input gives a clear error and a non-zero exit", async () => {
  const none = await cli("predict", "--model", dir);
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /exactly one of --prompt or --tokens/);
  const badTokens = await cli("predict", "--model", dir, "--tokens", "1,x");
  assert.match(badTokens.stderr, /--tokens: expected comma-separated ids/);
  const outOfVocab = await cli("predict", "--model", dir, "--tokens", "99");
  assert.match(outOfVocab.stderr, /token id 99 is outside the vocabulary/);
  const missing = await cli("predict", "--model", dir + "/nope", "--prompt", "the");
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /nope/);
});
