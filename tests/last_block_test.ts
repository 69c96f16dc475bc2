// The last block run only at the scored rows (Model.forward's default; ForwardOptions.fullLastBlock
// runs it whole): on every family's transformers-made fixture, the logits, every parameter's gradient,
// a hooked delta's gradient and a state gradient at the last block equal the whole block's. The whole path itself is checked against transformers (families_test.ts)
// and finite differences (families_backward_test.ts run trimmed; attribution's LGA runs whole).
// At the other end, a backward that needs nothing under the lowest block's MLP output projection ends
// there (engine/autograd.ts), with the same bits.
import assert from "node:assert/strict";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { getGpu } from "../engine/gpu.ts";
import { type Hook, makeBatch, Model, parameterShapes, type Site } from "../engine/model.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { maxAbsDiff, randomArray } from "./util.ts";

const gpu = await getGpu();

/** Logits, gradients of every block parameter and of a delta at layer 0, and the gradient of the last
 *  block's `site` state at `stateRows`, from a forward scored at `outputRows`. */
async function pass(model: Model, prompts: number[][], outputRows: number[], site: Site, whole: boolean) {
  const cfg = model.config, d = cfg.nEmbd, last = cfg.nLayer - 1;
  const batch = makeBatch(prompts);
  const delta = gpu.tensor([1, d], randomArray(d, 3, 0.1)), ddelta = gpu.zeros([1, d]);
  const hooks: Hook[] = [{
    layer: 0,
    site: "mlp",
    patch: { src: delta, entries: [{ dst: 1, src: 0, keep: 1, take: 1 }] },
  }];
  const names = parameterShapes(cfg).map(([n]) => n).filter((n) => n !== "wte.weight" && n !== "wpe.weight");
  const grads = allocateGradients(model, names);
  const fwd = model.forward(batch, { outputRows, keep: true, hooks, fullLastBlock: whole });
  const rowsAfterAttention = fwd.acts!.layers.at(-1)!.rows;
  const V = cfg.vocabSize;
  const dlogits = gpu.tensor([outputRows.length, V], randomArray(outputRows.length * V, 5, 1));
  // Every row of the batch: the rows the trimmed block did not compute get gradient 0.
  const stateRows = [...Array(batch.B * batch.T).keys()];
  const into = gpu.zeros([stateRows.length, model.siteWidth(site)]);
  backward(model, fwd, {
    dlogits,
    params: grads,
    patchSources: new Map([[delta, ddelta]]),
    states: [{ layer: last, site, rows: stateRows, into }],
  });
  const [logits, dDelta, dState, ...dParams] = await gpu.readMany([
    fwd.logits,
    ddelta,
    into,
    ...grads.values(),
  ]);
  model.releaseForward(fwd);
  return { logits, dDelta, dState, dParams, names, rowsAfterAttention };
}

for (const name of CASES) {
  Deno.test(`${name}: the last block at the scored rows only gives the whole block's logits and gradients`, async () => {
    const { model, expected } = await loadCase(name);
    const prompts = expected.prompts;
    const T = Math.max(...prompts.map((p) => p.length));
    // Scored: each prompt's last token, and row 1 twice (a repeated row's gradients add up).
    const outputRows = [...prompts.map((p, b) => b * T + p.length - 1), 1, 1];
    for (const site of ["key", "resid"] as const) {
      const trimmed = await pass(model, prompts, outputRows, site, false);
      const whole = await pass(model, prompts, outputRows, site, true);
      assert.deepEqual(trimmed.rowsAfterAttention, outputRows, `${name}: the trimmed block's rows`);
      assert.equal(whole.rowsAfterAttention, undefined, `${name}: the whole block's rows`);
      const close = (a: Float32Array, b: Float32Array, what: string) => {
        const scale = Math.max(1e-3, ...b.map(Math.abs));
        assert.ok(maxAbsDiff(a, b) <= 1e-5 * scale, `${name} ${site}: ${what} differ by ${maxAbsDiff(a, b)}`);
      };
      close(trimmed.logits, whole.logits, "logits");
      close(trimmed.dDelta, whole.dDelta, "the delta's gradient");
      close(trimmed.dState, whole.dState, `the last block's ${site} gradient`);
      trimmed.dParams.forEach((g, i) => close(g, whole.dParams[i], `${trimmed.names[i]}'s gradient`));
      // The state gradient is 0 at rows no logit reads, and not everywhere.
      const width = model.siteWidth(site);
      const rowsWithGradient = new Set(
        [...Array(trimmed.dState.length / width).keys()].filter((r) =>
          trimmed.dState.subarray(r * width, (r + 1) * width).some((v) => v !== 0)
        ),
      );
      const scored = [...new Set(outputRows)].sort((a, b) => a - b);
      assert.deepEqual([...rowsWithGradient].sort((a, b) => a - b), scored, `${name} ${site}: rows`);
    }
  });
}

for (const name of ["gpt2", "gptj", "gemma2"]) {
  Deno.test(`${name}: a backward asked only for the lowest block's MLP output projection ends there, with its bits`, async () => {
    // FT-L's request (the projection's weight and bias at one layer), alone and with a parameter under it
    // (c_fc's weight) that makes the walk go through the whole block: the projection's gradients agree
    // bit for bit, and the first walk stops early (fewer dispatches).
    const { model, expected } = await loadCase(name);
    const layer = 1, p = `h.${layer}.mlp.`;
    const batch = makeBatch(expected.prompts);
    const outputRows = expected.prompts.map((q, b) => b * batch.T + q.length - 1);
    const V = model.config.vocabSize;
    const dlogitValues = randomArray(outputRows.length * V, 9, 1);
    const run = async (names: string[]) => {
      const grads = allocateGradients(model, names);
      const fwd = model.forward(batch, { outputRows, keep: true });
      const before = gpu.dispatchCount;
      backward(model, fwd, { dlogits: gpu.tensor([outputRows.length, V], dlogitValues), params: grads });
      const dispatches = gpu.dispatchCount - before;
      const got = await gpu.readMany([grads.get(`${p}c_proj.weight`)!]);
      model.releaseForward(fwd);
      return { dW: got[0], dispatches };
    };
    const alone = await run([`${p}c_proj.weight`]);
    const through = await run([`${p}c_proj.weight`, `${p}c_fc.weight`]);
    assert.deepEqual(alone.dW, through.dW, "the projection's weight gradient");
    assert.ok(alone.dW.some((v) => v !== 0), "a gradient that is not all zeros");
    assert.ok(
      alone.dispatches < through.dispatches,
      `the walk ends at the projection: ${alone.dispatches} dispatches against ${through.dispatches}`,
    );
  });
}
