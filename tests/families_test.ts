// Every model family against Hugging Face transformers' own outputs: tiny random checkpoints made
// by transformers itself (tests/fixtures/families/make_families.py), with the float64 logits and
// hook-site states it computed. Locus loads each folder as a user would and must agree at every
// position, every layer and every hook site.
import assert from "node:assert/strict";
import { getGpu, type Tensor } from "../engine/gpu.ts";
import { type Hook, makeBatch, Model, type Site } from "../engine/model.ts";
import { bf16ArrayToF32, openSafetensors } from "../engine/safetensors.ts";
import { caseDir, CASES, loadCase } from "./families_fixtures.ts";
import { buildSafetensors, f32Bytes, type RawTensor, u16Bytes } from "./fixtures_safetensors.ts";
import { maxAbsDiff } from "./util.ts";

const gpu = await getGpu();
/** Largest |got - want| relative to max(1, |want|), over nested arrays. */
function relativeError(got: ArrayLike<number>, want: number[]): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    if (!(e <= worst)) worst = Number.isNaN(e) ? Infinity : e;
  }
  return worst;
}

const LAYER_SITES: Site[] = ["attn", "key", "mlp", "resid"];

// f32 computation through 2-3 layers: transformers' float64 values agree to ~1e-6 relative; f16/bf16
// checkpoints are compared with their own rounded weights, so the same tolerance holds.
const TOLERANCE = 1e-4;

Deno.test("fixtures cover every family Locus supports", () => {
  const families = new Set(
    CASES.map((c) => JSON.parse(Deno.readTextFileSync(`${caseDir(c)}/config.json`)).model_type),
  );
  for (
    const f of ["gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text"]
  ) {
    assert.ok(families.has(f), `no fixture of ${f}`);
  }
});

for (const name of CASES) {
  Deno.test(`${name}: logits and every hook site match transformers (float64) within ${TOLERANCE}`, async () => {
    const { model, expected } = await loadCase(name);
    const L = model.nLayer;
    for (const [p, ids] of expected.prompts.entries()) {
      const T = ids.length;
      const rows = ids.map((_, t) => t);
      const captures = new Map<string, Tensor>();
      const hooks: Hook[] = [];
      const capture = (site: Site, layer: number) => {
        const into = gpu.empty([T, model.siteWidth(site)]);
        captures.set(`${site}.${layer}`, into);
        hooks.push({ site, layer, capture: { into, rows } });
      };
      capture("embed", -1);
      for (let l = 0; l < L; l++) for (const site of LAYER_SITES) capture(site, l);
      const fwd = model.forward(makeBatch([ids]), { hooks, outputRows: rows });
      const logits = await fwd.logits.read();
      const err = relativeError(logits, expected.logits[p].flat());
      assert.ok(err <= TOLERANCE, `${name} prompt ${p}: logits differ by ${err} (relative)`);
      for (const [key, tensor] of captures) {
        const [site, layer] = key.split(".");
        const want = site === "embed"
          ? (expected.sites.embed as number[][][])[p].flat()
          : (expected.sites[site] as number[][][][])[p][Number(layer)].flat();
        const got = await tensor.read();
        const e = relativeError(got, want);
        assert.ok(e <= TOLERANCE, `${name} prompt ${p}: site ${key} differs by ${e} (relative)`);
      }
      model.releaseForward(fwd);
      for (const t of captures.values()) gpu.release(t);
    }
    // A check that can fail: the expected logits are not degenerate (a broken model would not match by luck).
    const flat = expected.logits[1].flat();
    assert.ok(maxAbsDiff(flat, flat.map(() => flat[0])) > 0.5, "fixture logits are nearly constant");
  });
}

Deno.test("16-bit checkpoints keep their matrices (projections, embedding, head) in 16 bits on the GPU; widening them is exact", async () => {
  for (const [name, dtype] of [["llama_bf16", "bf16"], ["gemma_f16", "f16"]] as const) {
    const { model, expected, dir } = await loadCase(name);
    // llama_bf16's head is untied, gemma_f16's is the embedding.
    assert.ok([...model.wte, ...model.head].every((c) => c.tensor.dtype === dtype), `${name}: wte and head`);
    const weights = [...model.params.entries()].filter(([, t]) => t.dtype === dtype).map(([n]) => n);
    assert.ok(
      weights.includes("h.0.mlp.c_proj.weight") && weights.includes("h.0.attn.c_attn.weight"),
      `${name}: ${weights}`,
    );
    assert.equal(model.p("h.0.ln_1.weight").dtype, "f32", "norm gains are widened");
    const logits = async (m: typeof model) => {
      const fwd = m.forward(makeBatch([expected.prompts[1]]));
      const out = await fwd.logits.read();
      m.releaseForward(fwd);
      return out;
    };
    const packed = await logits(model);
    for (const n of weights) await model.writable(n);
    assert.ok(weights.every((n) => model.p(n).dtype === "f32"), "writable widens to f32");
    assert.ok(
      maxAbsDiff(await logits(model), packed) < 1e-5,
      `${name}: widened weights compute the same logits`,
    );
    const wide = await Model.load(gpu, dir, { keepHalf: false });
    assert.ok([...wide.params.values()].every((t) => t.dtype === "f32"));
    assert.ok(
      maxAbsDiff(await logits(wide), packed) < 1e-5,
      `${name}: keepHalf false computes the same logits`,
    );
  }
});

Deno.test("forwardWithCache returns every hook site of every layer, equal to transformers' states", async () => {
  const { model, expected } = await loadCase("gemma2");
  const ids = expected.prompts[0];
  const { result, cache } = model.forwardWithCache(makeBatch([ids]));
  assert.equal(cache.size, 1 + 5 * model.nLayer);
  for (const site of LAYER_SITES) {
    for (let l = 0; l < model.nLayer; l++) {
      const want = (expected.sites[site] as number[][][][])[0][l].flat();
      assert.ok(relativeError(await cache.get(`${site}.${l}`)!.read(), want) <= TOLERANCE, `${site}.${l}`);
    }
  }
  assert.ok(
    relativeError(await cache.get("embed")!.read(), (expected.sites.embed as number[][][])[0].flat()) <=
      TOLERANCE,
  );
  model.releaseForward(result);
  gpu.release(...cache.values());
});

Deno.test("a bf16 GPT-2 checkpoint keeps wte and projections in 16 bits, its learned positions in f32, and computes what the widened f32 file does", async () => {
  const src = caseDir("gpt2");
  const file = await openSafetensors(`${src}/model.safetensors`);
  const tensors = await Promise.all(
    file.names().map(async (n) => [n, await file.read(n), file.info(n).shape] as const),
  );
  file.close();
  // bf16 bits of every tensor (f32 bits cut to their top half), and an f32 file of exactly those values.
  const bits = (v: Float32Array) => Array.from(new Uint32Array(v.slice().buffer), (b) => b >>> 16);
  const half: [string, RawTensor][] = tensors.map((
    [n, v, shape],
  ) => [n, { dtype: "BF16", shape, bytes: u16Bytes(bits(v)) }]);
  const wide: [string, RawTensor][] = tensors.map(([n, v, shape]) => [
    n,
    { dtype: "F32", shape, bytes: f32Bytes(bf16ArrayToF32(Uint16Array.from(bits(v)))) },
  ]);
  const dirs = await Promise.all([half, wide].map(async (t) => {
    const dir = await Deno.makeTempDir();
    await Deno.copyFile(`${src}/config.json`, `${dir}/config.json`);
    await Deno.writeFile(`${dir}/model.safetensors`, buildSafetensors(t));
    return dir;
  }));
  try {
    const [h, w] = await Promise.all(dirs.map((d) => Model.load(gpu, d)));
    assert.equal(h.wte[0].tensor.dtype, "bf16");
    assert.equal(h.p("h.0.mlp.c_fc.weight").dtype, "bf16");
    assert.equal(h.p("wpe.weight").dtype, "f32", "the embedding kernel adds positions in f32");
    const ids = [3, 17, 5, 99, 42];
    const [a, b] = [h, w].map((m) => m.forward(makeBatch([ids])).logits.read());
    assert.ok(maxAbsDiff(await a, await b) < 1e-5, "16-bit and widened weights give the same logits");
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});
