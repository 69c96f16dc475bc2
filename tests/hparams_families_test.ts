// Editing defaults follow each family's published hyper-parameter files (experiments/editing/hparams.ts),
// recognised from the published configs of the models themselves (bench/shapes/*.json).
import assert from "node:assert/strict";
import { parseConfig } from "../engine/config.ts";
import { familyOf, ftHparams, memitHparams, romeHparams } from "../experiments/editing/hparams.ts";

const shape = (name: string) => {
  const file = new URL(`../bench/shapes/${name}.json`, import.meta.url).pathname;
  return parseConfig(Deno.readTextFileSync(file), file);
};

Deno.test("GPT-J 6B: ROME's layer 5 with mom2 adjustment, MEMIT's layers 3-8 with lambda 15000, FT-L radius 5e-5", () => {
  const cfg = shape("gpt-j-6b");
  assert.equal(familyOf(cfg), "gpt-j-6b");
  const rome = romeHparams(cfg);
  assert.deepEqual([
    rome.layer,
    rome.clampNormFactor,
    rome.vNumGradSteps,
    rome.mom2Adjustment,
    rome.factToken,
  ], [5, 4, 20, true, "subject_last"]);
  const memit = memitHparams(cfg);
  assert.deepEqual([memit.layers, memit.mom2UpdateWeight, memit.vNumGradSteps, memit.clampNormFactor], [
    [3, 4, 5, 6, 7, 8],
    15000,
    25,
    0.75,
  ]);
  assert.equal(ftHparams(cfg).normConstraint, 5e-5);
});

Deno.test("Llama 2 7B, Llama 3 8B, Mistral 7B and Qwen2 7B: EasyEdit's ROME layer 5 (no mom2 adjustment) and MEMIT layers 4-8", () => {
  for (const name of ["llama-2-7b", "llama-3-8b", "mistral-7b-v0.1", "qwen2-7b"]) {
    const cfg = shape(name);
    assert.equal(familyOf(cfg), "easyedit-7b", name);
    const rome = romeHparams(cfg);
    assert.deepEqual([rome.layer, rome.vNumGradSteps, rome.vWeightDecay, rome.mom2Adjustment], [
      5,
      25,
      1e-3,
      false,
    ], name);
    const memit = memitHparams(cfg);
    assert.deepEqual([memit.layers, memit.mom2UpdateWeight, memit.clampNormFactor], [
      [4, 5, 6, 7, 8],
      15000,
      4,
    ], name);
  }
});

Deno.test("families without a published file: ROME at a third of the depth, keyed at the subject's last token", () => {
  for (const name of ["gemma-2b", "gemma-2-2b", "gemma-3-1b", "pythia-6.9b"]) {
    const cfg = shape(name);
    assert.equal(familyOf(cfg), "unpublished", name);
    const rome = romeHparams(cfg);
    assert.equal(rome.layer, Math.round(cfg.nLayer / 3), name);
    assert.equal(rome.factToken, "subject_last", name);
    assert.deepEqual(memitHparams(cfg).layers.at(-1), rome.layer);
  }
  assert.equal(familyOf(shape("gpt2-xl")), "gpt2-xl");
});
