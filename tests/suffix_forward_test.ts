// The suffix forward (Model.forward's `suffix`: only the rows from a position on, the earlier rows'
// keys and values cached) against the whole forward and backward, on every family's
// transformers-made fixture: a delta added at each sequence's start position at a layer (ROME's v*
// path) changes logits and d loss / d delta identically whether the pass recomputes every row or
// starts from the cache of the delta-free pass. Rotary positions, grouped heads, sliding windows
// shorter than the prompts and soft-caps are all in the fixtures.
import assert from "node:assert/strict";
import { allocateGradients, backward } from "../engine/autograd.ts";
import { crossEntropy } from "../engine/backward_ops.ts";
import { getGpu, type Tensor } from "../engine/gpu.ts";
import { type Batch, type Hook, makeBatch, type Model, type Site, type Suffix } from "../engine/model.ts";
import { rowOps } from "../engine/ops.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { assertClose, randomArray } from "./util.ts";

const gpu = await getGpu();

/** Logits at `rows` and d (summed cross-entropy at those rows) / d delta, delta [B, d] added at `at`. */
async function run(
  model: Model,
  batch: Batch,
  o: {
    layer: number;
    site: Site;
    delta: Tensor;
    at: number[]; // per sequence, the row the delta is added at
    rows: number[];
    targets: number[];
    start?: { input: Tensor; suffix: Suffix };
  },
): Promise<{ logits: Float32Array; grad: Float32Array }> {
  const hooks: Hook[] = [{
    layer: o.layer,
    site: o.site,
    patch: { src: o.delta, entries: o.at.map((dst, b) => ({ dst, src: b, keep: 1, take: 1 })) },
  }];
  const fwd = model.forward(batch, {
    hooks,
    outputRows: o.rows,
    keep: true,
    ...(o.start ? { startLayer: o.layer, input: o.start.input, suffix: o.start.suffix } : {}),
  });
  const V = model.config.vocabSize, n = o.rows.length;
  const dlogits = gpu.empty([n, V]);
  crossEntropy(gpu, fwd.logits, gpu.tensor([n], o.targets, "u32"), n, V, { dlogits });
  const grad = gpu.zeros(o.delta.shape);
  backward(model, fwd, { dlogits, patchSources: new Map([[o.delta, grad]]) });
  const [logits, g] = await gpu.readMany([fwd.logits, grad]);
  model.releaseForward(fwd);
  gpu.release(dlogits, grad);
  return { logits, grad: g };
}

for (const name of CASES) {
  Deno.test(`suffix forward and backward from a cached prefix equal the whole pass (${name})`, async () => {
    const { model, expected } = await loadCase(name);
    const cfg = model.config, d = cfg.nEmbd, width = (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim;
    // Sequences of different lengths, each starting at its own position (one at 0).
    const prompts = [...expected.prompts, expected.prompts[0].slice(0, 3)];
    const starts = prompts.map((p, b) => b === 0 ? 0 : Math.min(p.length - 1, b + 1));
    const full = makeBatch(prompts), B = full.B, Tk = full.T;
    const suffixBatch = makeBatch(prompts.map((p, b) => p.slice(starts[b])));
    const Tq = suffixBatch.T;
    for (const [layer, site] of [[Math.min(1, cfg.nLayer - 1), "mlp"], [0, "resid"]] as const) {
      const delta = gpu.tensor([B, d], randomArray(B * d, 7 + layer, 0.5));
      // Every position from the start on is scored (the next token, or token 0 at the last).
      const targets: number[] = [], fullRows: number[] = [], rows: number[] = [];
      prompts.forEach((p, b) => {
        for (let t = starts[b]; t < p.length; t++) {
          targets.push(p[t + 1] ?? 0);
          fullRows.push(b * Tk + t);
          rows.push(b * Tq + t - starts[b]);
        }
      });
      const whole = await run(model, full, {
        layer,
        site,
        delta,
        at: starts.map((s, b) => b * Tk + s),
        rows: fullRows,
        targets,
      });
      // The cache: the delta-free pass's q|k|v at every layer from `layer` on and the residual entering it.
      const qkv = Array.from({ length: cfg.nLayer - layer }, () => gpu.zeros([B * Tk, width]));
      const entering = gpu.zeros([B * Tk, d]);
      const all = Array.from({ length: B * Tk }, (_, r) => r);
      model.releaseForward(model.forward(full, {
        hooks: [{
          layer: layer - 1,
          site: layer === 0 ? "embed" : "resid",
          capture: { into: entering, rows: all },
        }],
        captureQkv: new Map(qkv.map((t, i) => [layer + i, t])),
      }));
      const input = gpu.zeros([B * Tq, d]);
      const gather = starts.flatMap((s, b) =>
        Array.from({ length: prompts[b].length - s }, (_, i) => ({ dst: b * Tq + i, src: b * Tk + s + i }))
      );
      rowOps(gpu, input, entering, d, gather.map((e) => ({ ...e, keep: 0, take: 1 })));
      const part = await run(model, suffixBatch, {
        layer,
        site,
        delta,
        at: starts.map((_, b) => b * Tq),
        rows,
        targets,
        start: { input, suffix: { starts, qkv, bases: starts.map((_, b) => b * Tk), T: Tk } },
      });
      const what = `${name} layer ${layer} ${site}`;
      const scale = Math.max(...whole.logits.map(Math.abs));
      assertClose(part.logits, whole.logits, 1e-4 * scale, `logits ${what}`);
      const gscale = Math.max(...whole.grad.map(Math.abs));
      assert.ok(gscale > 0, `${what}: the gradient is zero`);
      assertClose(part.grad, whole.grad, 1e-4 * gscale, `d loss / d delta ${what}`);
      gpu.release(delta, entering, input, ...qkv);
    }
  });
}

for (const name of CASES) {
  Deno.test(`a suffix forward from layer 0 embeds its tokens at their positions (${name})`, async () => {
    // Generation's steps: each sequence's newest token alone, its earlier positions from the cache.
    const { model, expected } = await loadCase(name);
    const cfg = model.config, width = (cfg.nHead + 2 * cfg.nKvHead) * cfg.headDim;
    const prompts = [...expected.prompts, expected.prompts[0].slice(0, 3)];
    const full = makeBatch(prompts), B = full.B, Tk = full.T;
    const last = prompts.map((p) => p.length - 1);
    const qkv = Array.from({ length: cfg.nLayer }, () => gpu.zeros([B * Tk, width]));
    const whole = model.forward(full, {
      outputRows: last.map((t, b) => b * Tk + t),
      captureQkv: new Map(qkv.map((t, l) => [l, t])),
    });
    const step = model.forward(makeBatch(prompts.map((p) => [p.at(-1)!])), {
      suffix: { starts: last, qkv, bases: prompts.map((_, b) => b * Tk), T: Tk },
    });
    const [w, s] = await gpu.readMany([whole.logits, step.logits]);
    assertClose(s, w, 1e-4 * Math.max(...w.map(Math.abs)), `${name}: the newest tokens' logits`);
    model.releaseForward(whole);
    model.releaseForward(step);
    gpu.release(...qkv);
  });
}

Deno.test("suffix forward: parameter gradients and bad caches are refused", async () => {
  const { model } = await loadCase("gpt2");
  const cfg = model.config, width = 3 * cfg.nEmbd;
  const batch = makeBatch([[1, 2]]);
  const input = gpu.zeros([2, cfg.nEmbd]);
  const qkv = Array.from({ length: cfg.nLayer }, () => gpu.zeros([4 * width]));
  const suffix = { starts: [1], qkv, bases: [0], T: 4 };
  assert.throws(
    () => model.forward(batch, { input, suffix: { ...suffix, starts: [0, 1] } }),
    /2 starts and 1 cache bases for 1 sequences/,
  );
  assert.throws(
    () => model.forward(batch, { input, suffix: { ...suffix, starts: [4] } }),
    /start 4 of sequence 0 outside \[0, 4\)/,
  );
  assert.throws(
    () => model.forward(batch, { input, suffix: { ...suffix, qkv: qkv.slice(1) } }),
    /q\|k\|v caches for layers 0/,
  );
  assert.throws(
    () => model.forward(batch, { input, suffix: { ...suffix, starts: [2], bases: [3] } }),
    /cache rows \[3, 5\) of sequence 0 are not among the 4 q\|k\|v rows/,
  );
  // Embedded by the forward itself: every row must be one of the model's positions.
  const late = cfg.nPositions - 1;
  const longCache = Array.from({ length: cfg.nLayer }, () => gpu.zeros([(late + 1) * width]));
  assert.throws(
    () => model.forward(batch, { suffix: { starts: [late], qkv: longCache, bases: [0], T: late + 1 } }),
    new RegExp(`suffix rows up to position ${late + 1}, beyond the model's ${cfg.nPositions} positions`),
  );
  gpu.release(...longCache);
  const fwd = model.forward(batch, { input, suffix, keep: true });
  assert.throws(
    () =>
      backward(model, fwd, {
        dlogits: gpu.zeros([1, cfg.vocabSize]),
        params: allocateGradients(model, ["ln_f.weight"]),
      }),
    /no parameter gradients/,
  );
  model.releaseForward(fwd);
});
