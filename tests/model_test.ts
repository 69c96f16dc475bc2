// The whole GPT-2 forward on the GPU against the float64 reference in tests/reference_model.ts.
import assert from "node:assert/strict";
import type { GPT2Config } from "../engine/config.ts";
import { getGpu } from "../engine/gpu.ts";
import {
  type ForwardOptions,
  type Hook,
  makeBatch,
  Model,
  randomWeights,
  type Site,
} from "../engine/model.ts";
import { referenceForward } from "./reference_model.ts";
import { assertClose, rng } from "./util.ts";

const gpu = await getGpu();

function config(o: Partial<GPT2Config>): GPT2Config {
  return { vocabSize: 37, nPositions: 16, nEmbd: 24, nLayer: 2, nHead: 3, layerNormEpsilon: 1e-5, ...o };
}

function randomTokens(n: number, V: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * V));
}

/** Logits of every real position of every prompt, read back as [rows][V]. */
async function allLogits(model: Model, prompts: number[][]): Promise<Float32Array[]> {
  const batch = makeBatch(prompts);
  const rows = prompts.flatMap((p, b) => p.map((_, t) => b * batch.T + t));
  const res = model.forward(batch, { outputRows: rows });
  const flat = await res.logits.read();
  model.releaseForward(res);
  const V = model.config.vocabSize;
  return rows.map((_, i) => flat.subarray(i * V, (i + 1) * V));
}

const cases: [string, Partial<GPT2Config>, number[]][] = [
  ["2 layers d=24 3 heads", {}, [1, 5, 9]],
  ["d=18 (not a multiple of 4), head dim 6", { nEmbd: 18, nHead: 3 }, [1, 7]],
  ["4 layers d=32 4 heads, 1 head of 32", { nLayer: 4, nEmbd: 32, nHead: 1 }, [3, 16]],
  ["vocab 50 d=64 8 heads", { vocabSize: 50, nEmbd: 64, nHead: 8, nLayer: 3 }, [11]],
];

for (const [name, o, lengths] of cases) {
  Deno.test(`forward matches float64 reference: ${name}, lengths ${lengths}`, async () => {
    const cfg = config(o);
    const weights = randomWeights(cfg, 7, true);
    const model = Model.fromArrays(gpu, cfg, weights);
    const prompts = lengths.map((n, i) => randomTokens(n, cfg.vocabSize, 100 + i));
    const got = await allLogits(model, prompts);
    let i = 0;
    for (const p of prompts) {
      const ref = referenceForward(cfg, weights, p);
      for (let t = 0; t < p.length; t++) {
        assertClose(got[i++], ref[t], 1e-4, `prompt len ${p.length} pos ${t}`);
      }
    }
  });
}

Deno.test("batched prompts of different lengths give the same logits as one at a time", async () => {
  const cfg = config({});
  const model = Model.random(gpu, cfg, 3, true);
  const prompts = [randomTokens(2, 37, 1), randomTokens(9, 37, 2), randomTokens(5, 37, 3)];
  const batched = await allLogits(model, prompts);
  let i = 0;
  for (const p of prompts) {
    const alone = await allLogits(model, [p]);
    for (const row of alone) assertClose(batched[i++], row, 1e-5, "batched vs alone");
  }
});

Deno.test("a vocabulary split into embedding chunks gives identical logits", async () => {
  const cfg = config({ vocabSize: 41 });
  const weights = randomWeights(cfg, 9, true);
  const whole = Model.fromArrays(gpu, cfg, weights);
  const split = Model.fromArrays(gpu, cfg, weights, "chunked", { embeddingChunkRows: 10 });
  assert.equal(split.wte.length, 5);
  const prompt = [0, 40, 10, 9, 20, 31];
  assertClose(
    (await allLogits(split, [prompt])).flatMap((r) => [...r]),
    (await allLogits(whole, [prompt])).flatMap((r) => [...r]),
    1e-6,
    "chunked",
  );
});

Deno.test("hooks: patch, add, zero, capture at every site match the reference", async () => {
  const cfg = config({ nLayer: 3 });
  const weights = randomWeights(cfg, 11, true);
  const model = Model.fromArrays(gpu, cfg, weights);
  const prompt = randomTokens(6, cfg.vocabSize, 5);
  const d = cfg.nEmbd;
  for (const site of ["embed", "attn", "mlp_pre", "key", "mlp", "resid"] as const) {
    const layer = site === "embed" ? -1 : 1;
    const width = model.siteWidth(site);
    const delta = Float32Array.from({ length: width }, (_, i) => Math.sin(i + 1));
    const deltaT = gpu.tensor([1, width], delta);
    const captured = gpu.zeros([2, width]);
    const batch = makeBatch([prompt]);
    // row 2 <- row 0 (in place copy), row 4 += delta, row 5 zeroed; capture rows 3 and 1 before.
    const res = model.forward(batch, {
      outputRows: [0, 1, 2, 3, 4, 5],
      hooks: [
        { layer, site, capture: { into: captured, rows: [3, 1] } },
        {
          layer,
          site,
          patch: {
            src: null,
            entries: [{ dst: 2, src: 0, keep: 0, take: 1 }, { dst: 5, src: 5, keep: 0, take: 0 }],
          },
        },
        { layer, site, patch: { src: deltaT, entries: [{ dst: 4, src: 0, keep: 1, take: 1 }] } },
      ],
    });
    const [logits, cap] = await gpu.readMany([res.logits, captured]);
    let refCaptured: Float64Array[] = [];
    const ref = referenceForward(cfg, weights, prompt, [{
      layer,
      site,
      capture: (rows) => refCaptured = [rows[3].slice(), rows[1].slice()],
      patch: (rows) => {
        rows[2] = rows[0].slice();
        rows[5].fill(0);
        rows[4] = rows[4].map((v, i) => v + delta[i]);
      },
    }]);
    for (let t = 0; t < 6; t++) {
      assertClose(
        logits.subarray(t * cfg.vocabSize, (t + 1) * cfg.vocabSize),
        ref[t],
        1e-4,
        `${site} pos ${t}`,
      );
    }
    assertClose(cap, [...refCaptured[0], ...refCaptured[1]], 1e-4, `${site} capture`);
    assert.equal(width, site === "mlp_pre" || site === "key" ? 4 * d : d);
    model.releaseForward(res);
  }
});

Deno.test("starting mid-model from a captured residual reproduces the full forward", async () => {
  const cfg = config({ nLayer: 4 });
  const model = Model.random(gpu, cfg, 13, true);
  const prompt = randomTokens(7, cfg.vocabSize, 8);
  const batch = makeBatch([prompt]);
  const resid1 = gpu.zeros([7, cfg.nEmbd]);
  const full = model.forward(batch, {
    hooks: [{ layer: 1, site: "resid", capture: { into: resid1, rows: [0, 1, 2, 3, 4, 5, 6] } }],
  });
  const fullLogits = await full.logits.read();
  const captured = await resid1.read();
  const tail = model.forward(batch, { startLayer: 2, input: resid1 });
  assertClose(await tail.logits.read(), fullLogits, 1e-5, "resumed at layer 2");
  assert.deepEqual(await resid1.read(), captured, "the residual adds never write into the caller's input");
  // Blocks 2..3 alone, without the head: the residual leaving block 3 at the chosen rows.
  const resid3 = gpu.zeros([7, cfg.nEmbd]);
  model.releaseForward(model.forward(batch, {
    hooks: [{ layer: 3, site: "resid", capture: { into: resid3, rows: [0, 1, 2, 3, 4, 5, 6] } }],
  }));
  const part = model.forward(batch, { startLayer: 2, endLayer: 4, input: resid1, outputRows: [6, 2] });
  const d = cfg.nEmbd, want = await resid3.read();
  assertClose(
    await part.logits.read(),
    [...want.subarray(6 * d, 7 * d), ...want.subarray(2 * d, 3 * d)],
    1e-5,
    "blocks 2..3",
  );
  // A pass of no blocks gives its input's rows back; endLayer out of range or kept is refused.
  const none = model.forward(batch, { startLayer: 2, endLayer: 2, input: resid1, outputRows: [6] });
  assert.deepEqual(await none.logits.read(), captured.subarray(6 * d, 7 * d));
  assert.throws(
    () => model.forward(batch, { startLayer: 2, endLayer: 1, input: resid1 }),
    /endLayer 1 outside \[2, 4\]/,
  );
  assert.throws(() => model.forward(batch, { endLayer: 2, keep: true }), /stops at endLayer cannot be kept/);
});

Deno.test("the fused forward (GELU and residual adds in matmul epilogues) gives the unfused one's bits", async () => {
  const cfg = config({ nLayer: 3, nEmbd: 64, nHead: 4 });
  const model = Model.random(gpu, cfg, 21, true);
  const batch = makeBatch([randomTokens(6, cfg.vocabSize, 4), randomTokens(3, cfg.vocabSize, 5)]);
  const R = batch.B * batch.T, rows = [...Array(R).keys()];
  // A capture hook at a site keeps its op on its own (one row copy each): every op unfused.
  const captures: Hook[] = ["attn", "mlp_pre", "mlp"].flatMap((site) =>
    [...Array(cfg.nLayer).keys()].map((layer) => ({
      site: site as Site,
      layer,
      capture: { into: gpu.empty([R, model.siteWidth(site as Site)]), rows },
    }))
  );
  const dispatches = (o: ForwardOptions) => {
    const before = gpu.dispatchCount;
    const res = model.forward(batch, o);
    return { res, count: gpu.dispatchCount - before };
  };
  // (Hooks at the last block keep it whole: the others run it whole too, to count the same ops.)
  const whole = { fullLastBlock: true };
  // A first forward makes the weights' texture mirrors (the head's transposed one is a dispatch).
  model.releaseForward(model.forward(batch, whole));
  const fused = dispatches(whole), kept = dispatches({ ...whole, keep: true });
  const unfused = dispatches({ ...whole, hooks: captures });
  // Kept activations need GELU's input (one GELU per layer more); the adds stay fused, into copies.
  assert.equal(kept.count - fused.count, cfg.nLayer, "GELU unfused when activations are kept");
  assert.equal(unfused.count - fused.count - captures.length, 3 * cfg.nLayer, "GELU and two adds fused away");
  const [a, b, c] = await gpu.readMany([fused.res.logits, kept.res.logits, unfused.res.logits]);
  assert.deepEqual(a, c, "fused vs unfused logits");
  assert.deepEqual(b, c, "kept vs unfused logits");
  for (const r of [fused, kept, unfused]) model.releaseForward(r.res);
});

Deno.test("save and load round trip through safetensors", async () => {
  const cfg = config({});
  const model = Model.random(gpu, cfg, 21, true);
  const dir = await Deno.makeTempDir();
  await model.save(dir);
  const loaded = await Model.load(gpu, dir);
  const prompt = [1, 2, 3, 4];
  assertClose((await allLogits(loaded, [prompt]))[3], (await allLogits(model, [prompt]))[3], 0, "reloaded");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("load gives clear errors for bad folders", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(Model.load(gpu, dir), /no config.json/);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ model_type: "mamba", n_embd: 8 }));
  await assert.rejects(
    Model.load(gpu, dir),
    /config\.json: field "model_type" must be one of "gpt2", "gptj", .*got "mamba"/,
  );
  const cfg = config({});
  await Model.random(gpu, cfg, 1).save(dir);
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      model_type: "gpt2",
      vocab_size: 37,
      n_positions: 16,
      n_embd: 24,
      n_layer: 3,
      n_head: 3,
    }),
  );
  await assert.rejects(Model.load(gpu, dir), /no tensor h\.2\.ln_1\.weight/);
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      model_type: "gpt2",
      vocab_size: 38,
      n_positions: 16,
      n_embd: 24,
      n_layer: 2,
      n_head: 3,
    }),
  );
  await assert.rejects(
    Model.load(gpu, dir),
    /wte\.weight has shape \[37,24\] but config\.json implies \[38,24\]/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("releaseForward never returns the caller's input to the pool (also at startLayer 0)", () => {
  const cfg = config({});
  const model = Model.random(gpu, cfg, 2);
  const batch = makeBatch([[1, 2, 3]]);
  for (const startLayer of [0, 1]) {
    const input = gpu.tensor([3, cfg.nEmbd], new Float32Array(3 * cfg.nEmbd).fill(0.5));
    const res = model.forward(batch, { startLayer, input, keep: true });
    model.releaseForward(res);
    // Were `input` in the pool, draining the pool's buffers of its size would hand it out.
    const drained = Array.from({ length: 64 }, () => gpu.empty([3, cfg.nEmbd]));
    assert.ok(drained.every((t) => t.buffer !== input.buffer), `startLayer ${startLayer}`);
    gpu.release(...drained);
  }
});
