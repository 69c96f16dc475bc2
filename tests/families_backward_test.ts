// The backward pass of every family (engine/autograd.ts) against central finite differences of the
// forward, on the transformers-made fixtures of tests/fixtures/families (whose forward is checked
// against transformers in families_test.ts). The loss is the summed next-token cross-entropy; the
// check is directional: <gradient, v> for a random direction v over every parameter of the blocks,
// the final norm and the head, and over a delta added to layer 0's MLP output (ROME's v* path),
// equals (loss(theta + v) - loss(theta - v)) / 2.
import assert from "node:assert/strict";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { getGpu, type Tensor } from "../engine/gpu.ts";
import { type Hook, makeBatch, Model, parameterShapes } from "../engine/model.ts";
import { attentionSaved, setAttentionSaved } from "../engine/ops.ts";
import type { HalfTensor } from "../engine/safetensors.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { maxAbsDiff, nextTokenTargets, randomArray } from "./util.ts";

const gpu = await getGpu();

/** Summed next-token cross-entropy of the prompts; with `grads`, also the backward pass into them. */
async function loss(
  model: Model,
  prompts: number[][],
  delta: Tensor,
  back?: { grads: Map<string, Tensor>; ddelta: Tensor },
): Promise<number> {
  const batch = makeBatch(prompts);
  const { rows, targets } = nextTokenTargets(prompts, batch.T);
  // ROME's path: a delta added to the MLP output of layer 0 at each prompt's last token.
  const hooks: Hook[] = [{
    layer: 0,
    site: "mlp",
    patch: {
      src: delta,
      entries: prompts.map((p, b) => ({ dst: b * batch.T + p.length - 2, src: 0, keep: 1, take: 1 })),
    },
  }];
  const fwd = model.forward(batch, { outputRows: rows, keep: !!back, hooks });
  const V = model.config.vocabSize;
  const dlogits = back ? gpu.empty([rows.length, V]) : undefined;
  const { losses } = crossEntropy(
    gpu,
    fwd.logits,
    gpu.tensor([rows.length], targets, "u32"),
    rows.length,
    V,
    { dlogits },
  );
  if (back) {
    backward(model, fwd, {
      dlogits: dlogits!,
      params: back.grads,
      patchSources: new Map([[delta, back.ddelta]]),
    });
  }
  const total = (await losses.read()).reduce((a, b) => a + b, 0);
  model.releaseForward(fwd);
  return total;
}

for (const name of CASES) {
  Deno.test(`${name}: gradients of every block parameter, the head and a hooked delta match finite differences`, async () => {
    const { model, expected } = await loadCase(name);
    const cfg = model.config, d = cfg.nEmbd;
    const prompts = expected.prompts;
    const weights = await model.toArrays();
    const names = parameterShapes(cfg).map(([n]) => n).filter((n) =>
      n !== "wte.weight" && n !== "wpe.weight"
    );
    const grads = allocateGradients(model, names);
    const delta = gpu.zeros([1, d]), ddelta = gpu.zeros([1, d]);
    await loss(model, prompts, delta, { grads, ddelta });

    // A direction scaled to each tensor's size: a step of 1e-3 of its rms.
    let seed = 1;
    const direction = new Map<string, Float32Array>();
    let predicted = 0;
    for (const n of names) {
      const w = weights.get(n)!;
      const rms = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length) + 1e-2;
      const v = randomArray(w.length, seed++, 1e-3 * rms);
      direction.set(n, v);
      const g = await grads.get(n)!.read();
      for (let i = 0; i < v.length; i++) predicted += g[i] * v[i];
    }
    const vDelta = randomArray(d, seed++, 1e-3);
    const gDelta = await ddelta.read();
    let predictedDelta = 0;
    for (let i = 0; i < d; i++) predictedDelta += gDelta[i] * vDelta[i];

    const shifted = (sign: number) => {
      const w = new Map(weights);
      for (const [n, v] of direction) w.set(n, weights.get(n)!.map((x, i) => x + sign * v[i]));
      return Model.fromArrays(gpu, cfg, w);
    };
    const zero = gpu.zeros([1, d]);
    const fd = ((await loss(shifted(1), prompts, zero)) - (await loss(shifted(-1), prompts, zero))) / 2;
    const fdDelta = ((await loss(model, prompts, gpu.tensor([1, d], vDelta))) -
      (await loss(model, prompts, gpu.tensor([1, d], vDelta.map((x) => -x))))) / 2;

    const check = (what: string, got: number, want: number) => {
      const err = Math.abs(got - want) / Math.max(Math.abs(want), 1e-3);
      assert.ok(
        err < 2e-2,
        `${name}: ${what}: backward ${got} vs finite difference ${want} (relative ${err})`,
      );
    };
    assert.ok(
      Math.abs(fd) > 1e-4,
      `${name}: the direction barely changes the loss (${fd}); the check would be empty`,
    );
    check("parameters", predicted, fd);
    check("hooked delta", predictedDelta, fdDelta);
  });
}

/** Per model: [[loss], d delta, ...d params] on `prompts` (token ids), the delta hooked as `loss` does. */
function lossAndGradients(models: Model[], prompts: number[][], params: string[]): Promise<number[][][]> {
  return Promise.all(models.map(async (m) => {
    const delta = gpu.zeros([1, m.config.nEmbd]), ddelta = gpu.zeros([1, m.config.nEmbd]);
    const g = allocateGradients(m, params);
    const l = await loss(m, prompts, delta, { grads: g, ddelta });
    return [
      [l],
      [...await ddelta.read()],
      ...await Promise.all(params.map(async (n) => [...await g.get(n)!.read()])),
    ];
  }));
}

/** Each of `whole`'s values equals `chunked`'s within `tolerance` relative to its largest magnitude. */
function assertSameValues(whole: number[][], chunked: number[][], tolerance: number, label: string): void {
  whole.forEach((w, i) =>
    assert.ok(maxAbsDiff(w, chunked[i]) < tolerance * Math.max(1, ...w.map(Math.abs)), `${label}: value ${i}`)
  );
}

Deno.test("a head split into row chunks (vocabularies over one binding) gives the same gradients", async () => {
  for (const name of ["llama", "gemma2"]) {
    const { model, expected } = await loadCase(name);
    const split = Model.fromArrays(gpu, model.config, await model.toArrays(), "split", {
      embeddingChunkRows: 50,
    });
    assert.ok(split.head.length > 1, "the head is split");
    const [whole, chunked] = await lossAndGradients([model, split], expected.prompts, [
      "ln_f.weight",
      "h.0.mlp.c_proj.weight",
    ]);
    assertSameValues(whole, chunked, 1e-5, name);
  }
});

Deno.test("a bf16 embedding and head split into row chunks give the logits and gradients of the whole ones", async () => {
  const { model, expected } = await loadCase("llama_bf16"); // untied head
  const arrays = new Map<string, Float32Array | HalfTensor>(await model.toArrays());
  for (const n of ["wte.weight", "lm_head.weight"]) {
    // The fixture's values are bf16 values: their f32 bits' top halves are the checkpoint's bits.
    const bits32 = new Uint32Array((arrays.get(n) as Float32Array).slice().buffer);
    arrays.set(n, { dtype: "bf16", bits: Uint16Array.from(bits32, (b) => b >>> 16) });
  }
  const split = Model.fromArrays(gpu, model.config, arrays, "split", { embeddingChunkRows: 50 });
  assert.ok(split.wte.length === 3 && split.head.length === 3, "wte and head are split");
  assert.ok([...split.wte, ...split.head].every((c) => c.tensor.dtype === "bf16"));
  const [whole, chunked] = await lossAndGradients([model, split], expected.prompts, ["ln_f.weight"]);
  assertSameValues(whole, chunked, 1e-5, "llama_bf16");
});

Deno.test("projections split into row chunks (over one storage binding) give the same logits and gradients", async () => {
  for (const name of ["llama", "gpt_neox_parallel", "gemma_f16"]) {
    const { model, expected } = await loadCase(name);
    const arrays = await model.toArrays();
    const split = Model.fromArrays(gpu, model.config, arrays, "split", { projectionChunkRows: 20 });
    assert.ok(
      split.rowChunks.size > 0 && !split.params.has("h.0.mlp.c_fc.weight"),
      `${name}: projections are split`,
    );
    const [whole, chunked] = await lossAndGradients([model, split], expected.prompts, ["ln_f.weight"]);
    assertSameValues(whole, chunked, 1e-4, name);
    assert.throws(() => split.p("h.0.mlp.c_fc.weight"), /split into \d+ row chunks/);
  }
});

Deno.test("attention kept as rows' log-sum-exp (no T x T probabilities) gives the probabilities' loss and gradients", async () => {
  // gemma2: grouped heads, soft-cap, a window shorter than the prompts; llama: grouped heads;
  // gpt2: multi-head. Every attention parameter and the MLP after it, through the whole model.
  const chosen = attentionSaved(gpu);
  try {
    for (const name of ["gemma2", "llama", "gpt2"]) {
      const { model, expected } = await loadCase(name);
      const params = parameterShapes(model.config).map(([n]) => n).filter((n) => /\.(attn|mlp)\./.test(n));
      const runs: number[][][] = [];
      for (const saved of ["probs", "lse"] as const) {
        setAttentionSaved(gpu, saved);
        const fwd = model.forward(makeBatch(expected.prompts), { keep: true });
        const kept = fwd.acts!.layers.map((a) => [!!a.probs, !!a.lse].join());
        assert.deepEqual(
          kept,
          kept.map(() => saved === "probs" ? "true,false" : "false,true"),
          `${name}: ${saved}`,
        );
        model.releaseForward(fwd);
        runs.push(...await lossAndGradients([model], expected.prompts, params));
      }
      assert.ok(params.length >= 4 * model.nLayer, `${name}: ${params.length} parameters compared`);
      assertSameValues(runs[0], runs[1], 1e-5, name);
    }
  } finally {
    setAttentionSaved(gpu, chosen);
  }
});
