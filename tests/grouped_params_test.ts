// Grouped parameters (engine/model.ts GroupedParams): a batch whose groups of sequences each use their own
// copy of MLP output projections (FT-L of many edits in one pass). On transformers-made fixtures of three
// block forms (GPT-2: Conv1D with biases and fused residual adds; Llama: nn.Linear without biases; Gemma 2:
// post-norms), each group's logits and gradients equal those of a model holding that group's copy, run on
// the group's sequences alone, and the grouped gradients match central finite differences.
import assert from "node:assert/strict";
import { allocateGradients, backward, releaseFactors } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { getGpu, type Tensor } from "../engine/gpu.ts";
import { type GroupedParams, makeBatch, Model } from "../engine/model.ts";
import { loadCase } from "./families_fixtures.ts";
import { assertClose, maxAbsDiff, nextTokenTargets, randomArray } from "./util.ts";

const gpu = await getGpu();

/** Summed next-token cross-entropy over every position of `prompts` and the logits of those rows; with
 *  `grads`, also the backward pass into them, leaving the `factored` weights' gradients as factors, whose
 *  products (each group's a^T b, in float64) come back as `formed`. */
async function lossOf(
  model: Model,
  prompts: number[][],
  grouped?: GroupedParams,
  grads?: Map<string, Tensor>,
  factored?: Set<string>,
): Promise<{ loss: number; logits: Float32Array; formed: Map<string, Float64Array> }> {
  const batch = makeBatch(prompts);
  const { rows, targets } = nextTokenTargets(prompts, batch.T);
  const fwd = model.forward(batch, { outputRows: rows, keep: !!grads, grouped });
  const V = model.config.vocabSize;
  const dlogits = grads ? gpu.empty([rows.length, V]) : undefined;
  const { losses } = crossEntropy(
    gpu,
    fwd.logits,
    gpu.tensor([rows.length], targets, "u32"),
    rows.length,
    V,
    {
      dlogits,
    },
  );
  const factors = grads
    ? backward(model, fwd, { dlogits: dlogits!, params: grads, factored }).factors
    : new Map();
  const formed = new Map<string, Float64Array>();
  for (const [name, f] of factors) {
    const [a, b] = await gpu.readMany([f.a, f.b]);
    const out = new Float64Array(f.groups * f.M * f.N);
    for (let g = 0; g < f.groups; g++) {
      for (let r = g * f.rows; r < (g + 1) * f.rows; r++) {
        for (let m = 0; m < f.M; m++) {
          for (let n = 0; n < f.N; n++) out[(g * f.M + m) * f.N + n] += a[r * f.M + m] * b[r * f.N + n];
        }
      }
    }
    formed.set(name, out);
  }
  releaseFactors(gpu, factors);
  const [l, logits] = await gpu.readMany([losses, fwd.logits]);
  model.releaseForward(fwd);
  return { loss: l.reduce((a, b) => a + b, 0), logits, formed };
}

for (const name of ["gpt2", "llama", "gemma2"]) {
  Deno.test(`${name}: grouped MLP output projections equal per-group models and match finite differences`, async () => {
    const { model, expected } = await loadCase(name);
    const cfg = model.config;
    const weights = await model.toArrays();
    const layers = [...new Set([0, cfg.nLayer - 1])];
    const names = layers.flatMap((l) =>
      [`h.${l}.mlp.c_proj.weight`, `h.${l}.mlp.c_proj.bias`].filter((n) => weights.has(n))
    );
    const G = 3;
    // Group g: both fixture prompts, the first shortened by g % 2 tokens (padding differs between groups).
    const groupPrompts = Array.from({ length: G }, (_, g) => [
      expected.prompts[0].slice(0, expected.prompts[0].length - (g % 2)),
      expected.prompts[1],
    ]);
    // Each group's copies: the weights moved by a random 20% of their rms, so that groups differ visibly.
    const copies = Array.from({ length: G }, (_, g) =>
      new Map(names.map((n, i) => {
        const w = weights.get(n)!;
        const rms = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length) + 1e-2;
        const noise = randomArray(w.length, 100 * g + i + 1, 0.2 * rms);
        return [n, w.map((x, j) => x + noise[j])];
      })));
    const stacked = (values: (n: string, g: number) => Float32Array) =>
      new Map(names.map((n) => {
        const size = weights.get(n)!.length;
        const all = new Float32Array(G * size);
        for (let g = 0; g < G; g++) all.set(values(n, g), g * size);
        return [n, gpu.tensor([G, ...model.p(n).shape], all)];
      }));
    const grouped: GroupedParams = { groups: G, tensors: stacked((n, g) => copies[g].get(n)!) };
    const grads = new Map(names.map((n) => [n, gpu.zeros([G, ...model.p(n).shape])]));
    const all = await lossOf(model, groupPrompts.flat(), grouped, grads);

    // Each group alone on a model holding its copies.
    let total = 0, rowAt = 0;
    const V = cfg.vocabSize;
    for (let g = 0; g < G; g++) {
      const own = Model.fromArrays(gpu, cfg, new Map([...weights, ...copies[g]]));
      const ownGrads = allocateGradients(own, names);
      const alone = await lossOf(own, groupPrompts[g], undefined, ownGrads);
      total += alone.loss;
      const rows = alone.logits.length / V;
      assertClose(
        all.logits.subarray(rowAt * V, (rowAt + rows) * V),
        alone.logits,
        1e-4,
        `${name}: group ${g} logits`,
      );
      rowAt += rows;
      for (const n of names) {
        const want = await ownGrads.get(n)!.read();
        const size = want.length;
        const got = (await grads.get(n)!.read()).subarray(g * size, (g + 1) * size);
        const scale = Math.max(1e-3, ...want.map(Math.abs));
        assert.ok(maxAbsDiff(got, want) < 1e-4 * scale, `${name}: group ${g} gradient of ${n}`);
      }
    }
    assert.ok(Math.abs(all.loss - total) < 1e-4 * Math.abs(total), `${name}: loss ${all.loss} vs ${total}`);

    // The weights' gradients left as factors (FT-L's, formed inside Adam's step): each group's a^T b is
    // the gradient accumulated above; the biases still accumulate, as before.
    const weightNames = new Set(names.filter((n) => n.endsWith(".weight")));
    const biasGrads = new Map(
      names.filter((n) => !weightNames.has(n)).map((n) => [n, gpu.zeros([G, ...model.p(n).shape])]),
    );
    const { formed } = await lossOf(model, groupPrompts.flat(), grouped, biasGrads, weightNames);
    assert.deepEqual([...formed.keys()].sort(), [...weightNames].sort());
    for (const n of names) {
      const want = await grads.get(n)!.read();
      const got = formed.get(n) ?? await biasGrads.get(n)!.read();
      const scale = Math.max(1e-3, ...want.map(Math.abs));
      assert.ok(maxAbsDiff(got, want) < 1e-5 * scale, `${name}: ${n} factored vs accumulated`);
    }

    // Central differences along a random direction over every group's copies.
    const direction = new Map(
      names.map((n, i) => [n, randomArray(G * weights.get(n)!.length, 50 + i, 1e-3)]),
    );
    let predicted = 0;
    for (const n of names) {
      const g = await grads.get(n)!.read(), v = direction.get(n)!;
      for (let i = 0; i < v.length; i++) predicted += g[i] * v[i];
    }
    const shifted = (sign: number): GroupedParams => ({
      groups: G,
      tensors: stacked((n, g) => {
        const size = weights.get(n)!.length, v = direction.get(n)!;
        return copies[g].get(n)!.map((x, j) => x + sign * v[g * size + j]);
      }),
    });
    const fd = ((await lossOf(model, groupPrompts.flat(), shifted(1))).loss -
      (await lossOf(model, groupPrompts.flat(), shifted(-1))).loss) / 2;
    assert.ok(Math.abs(fd) > 1e-4, `${name}: the direction barely changes the loss (${fd})`);
    const err = Math.abs(predicted - fd) / Math.abs(fd);
    assert.ok(err < 2e-2, `${name}: backward ${predicted} vs finite difference ${fd} (relative ${err})`);
  });
}

Deno.test("grouped parameters are refused when they cannot apply, naming the parameter", async () => {
  const { model, expected } = await loadCase("gpt2");
  const batch = makeBatch([expected.prompts[0], expected.prompts[1]]);
  const name = "h.0.mlp.c_proj.weight";
  const shape = model.p(name).shape;
  const run = (g: GroupedParams) => () => model.forward(batch, { grouped: g });
  assert.throws(
    run({ groups: 3, tensors: new Map([[name, gpu.zeros([3, ...shape])]]) }),
    /3 parameter groups/,
  );
  assert.throws(
    run({ groups: 2, tensors: new Map([[name, gpu.zeros([1, ...shape])]]) }),
    /h\.0\.mlp\.c_proj\.weight is \[1,/,
  );
  assert.throws(
    run({ groups: 1, tensors: new Map([["h.0.attn.c_proj.weight", gpu.zeros([1, 4])]]) }),
    /h\.0\.attn\.c_proj\.weight is not an MLP output projection/,
  );
  // Factored gradients: grouped weights only, and not also accumulated.
  const grouped = { groups: 2, tensors: new Map([[name, gpu.zeros([2, ...shape])]]) };
  const fwd = model.forward(batch, { grouped, keep: true });
  const dlogits = gpu.zeros([fwd.outputRows.length, model.config.vocabSize]);
  assert.throws(
    () => backward(model, fwd, { dlogits, factored: new Set(["h.1.mlp.c_proj.weight"]) }),
    /only grouped weights can be factored, not h\.1\.mlp\.c_proj\.weight/,
  );
  assert.throws(
    () =>
      backward(model, fwd, {
        dlogits,
        params: new Map([[name, gpu.zeros([2, ...shape])]]),
        factored: new Set([name]),
      }),
    /h\.0\.mlp\.c_proj\.weight is asked for both factored and accumulated/,
  );
  model.releaseForward(fwd);
});

// FT-L's steps start at the lowest trained block's MLP output projection (Model.resumePoint): the blocks
// below and that block's attention and MLP input are the same at every step. On every block form (fused
// residual adds, GPT-J's and NeoX's parallel branches, Gemma 2's post-norms, Llama's gated MLP), at the
// first block and at the last (trimmed to the scored rows), the resumed forward's logits and its
// backward's grouped gradients are the bits of the whole forward's.
for (const name of ["gpt2", "gptj", "gpt_neox_parallel", "gemma2", "llama"]) {
  Deno.test(`${name}: a forward resumed at an MLP output projection gives the whole forward's bits`, async () => {
    const { model, expected } = await loadCase(name);
    const cfg = model.config, V = cfg.vocabSize;
    const batch = makeBatch([expected.prompts[0], expected.prompts[1]]);
    for (const layer of [...new Set([0, cfg.nLayer - 1])]) {
      const names = [`h.${layer}.mlp.c_proj.weight`, `h.${layer}.mlp.c_proj.bias`].filter((n) =>
        model.params.has(n)
      );
      const grouped: GroupedParams = {
        groups: 2,
        tensors: new Map(names.map((n, i) => {
          const shape = model.p(n).shape, size = model.p(n).size;
          return [n, gpu.tensor([2, ...shape], randomArray(2 * size, 7 + i, 0.05))];
        })),
      };
      const weight = names[0], bias = names[1];
      const whole = model.forward(batch, { keep: true, fullLastBlock: true });
      const point = model.resumePoint(whole, layer);
      model.releaseForward(whole);
      const run = async (resume?: typeof point) => {
        const fwd = model.forward(batch, { keep: true, grouped, resume });
        const dlogits = gpu.tensor([fwd.outputRows.length, V], randomArray(fwd.outputRows.length * V, 3, 1));
        const params = new Map(bias ? [[bias, gpu.zeros([2, ...model.p(bias).shape])]] : []);
        const { factors } = backward(model, fwd, { dlogits, params, factored: new Set([weight]) });
        const f = factors.get(weight)!;
        const out = await gpu.readMany([fwd.logits, f.a, f.b, ...params.values()]);
        releaseFactors(gpu, factors);
        model.releaseForward(fwd);
        gpu.release(dlogits, ...params.values());
        return out;
      };
      const [full, resumed] = [await run(), await run(point)];
      ["logits", "factor a", "factor b", "bias gradient"].slice(0, full.length).forEach((what, i) =>
        assert.deepEqual(resumed[i], full[i], `${name} block ${layer}: ${what}`)
      );
      gpu.release(point.m, point.key, point.attn, ...grouped.tensors.values());
    }
  });
}

Deno.test("resume points are refused where they cannot apply, and give no gradient below them", async () => {
  const { model, expected } = await loadCase("gpt2");
  const batch = makeBatch([expected.prompts[0], expected.prompts[1]]);
  const whole = model.forward(batch, { keep: true });
  assert.throws(() => model.resumePoint(whole, model.config.nLayer - 1), /kept no whole block/);
  const point = model.resumePoint(whole, 0);
  model.releaseForward(whole);
  const into = gpu.zeros([batch.B * batch.T, model.config.nEmbd]);
  const rows = [0];
  assert.throws(
    () =>
      model.forward(batch, { resume: point, hooks: [{ layer: 0, site: "attn", capture: { into, rows } }] }),
    /a hook at attn 0 acts before the resume point/,
  );
  assert.throws(
    () => model.forward(batch, { resume: point, startLayer: 1 }),
    /resume at block 0 with startLayer 1/,
  );
  assert.throws(
    () => model.forward(makeBatch([expected.prompts[0]]), { resume: point }),
    /m has \d+ values, the batch needs \d+/,
  );
  const fwd = model.forward(batch, { resume: point, keep: true });
  const dlogits = gpu.zeros([fwd.outputRows.length, model.config.vocabSize]);
  const params = new Map([["h.0.attn.c_proj.weight", gpu.zeros(model.p("h.0.attn.c_proj.weight").shape)]]);
  assert.throws(
    () => backward(model, fwd, { dlogits, params }),
    /block 0 started at its MLP output projection/,
  );
  model.releaseForward(fwd);
  gpu.release(point.m, point.key, into, dlogits, ...params.values());
});
