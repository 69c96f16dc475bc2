// Whole-model gradients (engine/autograd.ts) against central finite differences of the float64
// reference forward, on tiny random models. The loss is the summed next-token cross-entropy.
import assert from "node:assert/strict";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import type { GPT2Config } from "../engine/config.ts";
import { getGpu, Tensor } from "../engine/gpu.ts";
import { type ForwardOptions, makeBatch, Model, parameterShapes, randomWeights } from "../engine/model.ts";
import { referenceForward, type RefHook } from "./reference_model.ts";
import { nextTokenTargets, rng } from "./util.ts";

const gpu = await getGpu();
const cfg: GPT2Config = {
  vocabSize: 11,
  nPositions: 8,
  nEmbd: 12,
  nLayer: 2,
  nHead: 2,
  layerNormEpsilon: 1e-5,
};
const prompts = [[1, 4, 2, 7, 3], [5, 9, 0]];
const batch = makeBatch(prompts);
// Score every position but the last of each prompt against the next token.
const { rows, targets } = nextTokenTargets(prompts, batch.T);

/** A reference hook whose patch also learns which prompt (b) it is applied to. */
interface BatchHook {
  layer: number;
  site: RefHook["site"];
  patch: (rows: Float64Array[], b: number) => void;
}

function referenceLoss(w: Map<string, Float32Array>, hooks: BatchHook[] = []): number {
  let loss = 0;
  prompts.forEach((p, b) => {
    const refHooks: RefHook[] = hooks.map((h) => ({
      layer: h.layer,
      site: h.site,
      patch: (r) => h.patch(r, b),
    }));
    const logits = referenceForward(cfg, w, p, refHooks);
    for (let t = 0; t < p.length - 1; t++) {
      const row = logits[t];
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
      loss += lse - row[p[t + 1]];
    }
  });
  return loss;
}

/** Forward (keep) + cross-entropy + backward on the GPU; returns the loss. */
async function gpuLossAndBackward(
  model: Model,
  request: Omit<Parameters<typeof backward>[2], "dlogits">,
  fo: ForwardOptions = {},
) {
  const fwd = model.forward(batch, { ...fo, outputRows: rows, keep: true });
  const t = gpu.tensor([rows.length], targets, "u32");
  const dlogits = gpu.empty([rows.length, cfg.vocabSize]);
  const { losses } = crossEntropy(gpu, fwd.logits, t, rows.length, cfg.vocabSize, { dlogits });
  backward(model, fwd, { ...request, dlogits });
  const l = await losses.read();
  model.releaseForward(fwd);
  return l.reduce((a, b) => a + b, 0);
}

/** Central difference of f at x[i], dividing by the step actually representable in float32. */
function centralDifference(x: Float32Array, i: number, f: () => number, h = 1e-3): number {
  const orig = x[i];
  x[i] = orig + h;
  const up = x[i], fUp = f();
  x[i] = orig - h;
  const down = x[i], fDown = f();
  x[i] = orig;
  return (fUp - fDown) / (up - down);
}

function relativeError(got: number[], want: number[]): number {
  let num = 0, den = 0;
  got.forEach((g, i) => {
    num += (g - want[i]) ** 2;
    den += want[i] ** 2;
  });
  return Math.sqrt(num / Math.max(den, 1e-30));
}

Deno.test("parameter gradients of every tensor match finite differences", async () => {
  const weights = randomWeights(cfg, 3, true);
  const model = Model.fromArrays(gpu, cfg, weights);
  const names = parameterShapes(cfg).map(([n]) => n);
  const grads = allocateGradients(model, names);
  const loss = await gpuLossAndBackward(model, { params: grads });
  assert.ok(Math.abs(loss - referenceLoss(weights)) < 1e-4 * Math.abs(loss), "loss matches the reference");
  const gradArrays = await gpu.readMany(names.map((n) => grads.get(n)!));
  const r = rng(5);
  for (const [k, name] of names.entries()) {
    const w = weights.get(name)!;
    const idx = Array.from({ length: 4 }, () => Math.floor(r() * w.length));
    const fd = idx.map((i) => centralDifference(w, i, () => referenceLoss(weights)));
    const got = idx.map((i) => gradArrays[k][i]);
    const err = relativeError(got, fd);
    // float32 GPU gradients vs float64 finite differences: well below 1e-3 where gradients are not tiny.
    assert.ok(
      err < 1e-3 || Math.max(...fd.map(Math.abs)) < 1e-4,
      `${name}: relative error ${err} (got ${got}, fd ${fd})`,
    );
  }
});

Deno.test("a subset of parameters gets the same gradients as the full request, and is reproducible", async () => {
  const model = Model.random(gpu, cfg, 4, true);
  const all = allocateGradients(model, parameterShapes(cfg).map(([n]) => n));
  await gpuLossAndBackward(model, { params: all });
  const subset = allocateGradients(model, ["h.1.mlp.c_proj.weight", "h.1.ln_2.bias"]);
  await gpuLossAndBackward(model, { params: subset });
  const again = allocateGradients(model, ["h.1.mlp.c_proj.weight", "h.1.ln_2.bias"]);
  await gpuLossAndBackward(model, { params: again });
  for (const n of ["h.1.mlp.c_proj.weight", "h.1.ln_2.bias"]) {
    const [full, sub, sub2] = await gpu.readMany([all.get(n)!, subset.get(n)!, again.get(n)!]);
    assert.deepEqual([...sub], [...full], `${n} subset vs full`);
    assert.deepEqual([...sub2], [...sub], `${n} bit-reproducible`);
  }
});

Deno.test("gradient w.r.t. a delta added to an MLP output matches finite differences (ROME's v* needs this)", async () => {
  const weights = randomWeights(cfg, 6, true);
  const model = Model.fromArrays(gpu, cfg, weights);
  const delta = Float32Array.from({ length: cfg.nEmbd }, (_, i) => 0.1 * Math.cos(i));
  const deltaT: Tensor = gpu.tensor([1, cfg.nEmbd], delta);
  const gradDelta = gpu.zeros([1, cfg.nEmbd]);
  // The delta is added at token 2 of both prompts (rows 2 and T+2).
  const hook = {
    layer: 0,
    site: "mlp" as const,
    patch: { src: deltaT, entries: [2, batch.T + 2].map((r) => ({ dst: r, src: 0, keep: 1, take: 1 })) },
  };
  await gpuLossAndBackward(model, { patchSources: new Map([[deltaT, gradDelta]]) }, { hooks: [hook] });
  const got = [...await gradDelta.read()];
  const refHook = {
    layer: 0,
    site: "mlp" as const,
    patch: (r: Float64Array[]) => {
      for (let i = 0; i < cfg.nEmbd; i++) r[2][i] += delta[i];
    },
  };
  const fd = [...delta.keys()].map((i) =>
    centralDifference(delta, i, () => referenceLoss(weights, [refHook]))
  );
  assert.ok(relativeError(got, fd) < 1e-3, `relative error ${relativeError(got, fd)}`);
});

Deno.test("gradient w.r.t. MLP keys at chosen rows matches finite differences (integrated gradients needs this)", async () => {
  const weights = randomWeights(cfg, 8, true);
  const model = Model.fromArrays(gpu, cfg, weights);
  const into = gpu.zeros([1, 4 * cfg.nEmbd]);
  await gpuLossAndBackward(model, { states: [{ layer: 1, site: "key", rows: [3], into }] });
  const got = [...await into.read()];
  // Finite differences: perturb key j at token 3 of prompt 0 in the reference.
  const bump = new Float32Array(4 * cfg.nEmbd);
  const hook = {
    layer: 1,
    site: "key" as const,
    patch: (r: Float64Array[], b: number) => {
      if (b === 0) { for (let i = 0; i < bump.length; i++) r[3][i] += bump[i]; }
    },
  };
  const fd = [...bump.keys()].map((i) => centralDifference(bump, i, () => referenceLoss(weights, [hook])));
  assert.ok(relativeError(got, fd) < 1e-3, `relative error ${relativeError(got, fd)}`);
});
