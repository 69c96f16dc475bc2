// Key statistics shipped in a model folder (key-stats/, see experiments/editing/stats.ts): used when their
// fingerprint and corpus hash match the weights and corpus, and recomputed, with a message, when the model
// was retrained or the corpus changed, so stale statistics never reach an edit.
import * as assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { keyStats, shippedStatsDir } from "../experiments/editing/stats.ts";
import { makeTinyKb } from "./fixtures_tiny_kb.ts";

const gpu = await getGpu();

Deno.test("shipped key statistics: used when they match, recomputed when weights or corpus changed", async () => {
  const root = await Deno.makeTempDir();
  try {
    const { dir } = await makeTinyKb(gpu, `${root}/a`, 5);
    const model = await Model.load(gpu, dir);
    const tok = await loadTokenizer(dir);
    const lines: string[] = [];
    const opts = {
      corpus: `${dir}/corpus.txt`,
      layers: [1],
      samples: 200,
      log: (l: string) => lines.push(l),
    };
    const shipped = await keyStats(model, tok, { ...opts, ship: true });
    await Deno.stat(`${shippedStatsDir(dir)}/layer1-n200.safetensors`);

    // Read back without any cache: bit-identical, and said to be shipped.
    lines.length = 0;
    const read = await keyStats(model, tok, { ...opts, cacheDir: null });
    assert.match(lines.join("\n"), /layer 1: shipped with the model \(200 keys\)/);
    assert.deepEqual(read.get(1)!.moment, shipped.get(1)!.moment);

    // A retrained model (other weights) carrying the old folder's statistics: recomputed, not used.
    const { dir: other } = await makeTinyKb(gpu, `${root}/b`, 6);
    await Deno.mkdir(shippedStatsDir(other));
    await Deno.copyFile(
      `${shippedStatsDir(dir)}/layer1-n200.safetensors`,
      `${shippedStatsDir(other)}/layer1-n200.safetensors`,
    );
    const retrained = await Model.load(gpu, other);
    lines.length = 0;
    const fresh = await keyStats(retrained, tok, { ...opts, corpus: `${other}/corpus.txt`, cacheDir: null });
    assert.match(
      lines.join("\n"),
      /layer 1 shipped in .* are for other weights or another corpus .*recomputing/,
    );
    assert.match(lines.join("\n"), /streaming up to 200 keys/);
    assert.notDeepEqual(fresh.get(1)!.moment, shipped.get(1)!.moment);

    // The same weights with another corpus: recomputed too.
    await Deno.writeTextFile(
      `${root}/corpus2.txt`,
      (await Deno.readTextFile(`${dir}/corpus.txt`)).split("\n").reverse().join("\n"),
    );
    lines.length = 0;
    await keyStats(model, tok, { ...opts, corpus: `${root}/corpus2.txt`, cacheDir: null });
    assert.match(lines.join("\n"), /recomputing/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
