// experiments/study/shared_values.ts: a value optimisation is reused only when the request, its layer and
// every setting are equal, the reused result is the one optimiseValues computes, and anything that differs
// (a hyper-parameter, the site, the contexts, the subject noise, the direction, the layer) is optimised
// anew; results kept in a sweep's store serve another SharedValues (another process). The sweep's use of it
// (ROME + R-ROME, MEMIT + EMMET, the mass-editing curve) is tested end to end in tests/sweep_test.ts.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import type { EditRequest } from "../experiments/editing/edit.ts";
import { optimiseValues, type ValueOptions } from "../experiments/editing/values.ts";
import {
  keptInStore,
  SharedValues,
  valueFromJson,
  valueKeys,
  valueToJson,
} from "../experiments/study/shared_values.ts";
import { ResultStore } from "../experiments/study/store.ts";
import { EDITING_CONFIG, EDITING_TOKENIZER } from "./fixtures_tiny_kb.ts";

const gpu = await getGpu();
const tok = EDITING_TOKENIZER;

/** A request both tests optimise, and small v* settings at layer 1 (3 steps, 2 contexts). */
const a: EditRequest = { prompt: "{} lives in", subject: "Anna Berg", target: "Oslo" };
const small: ValueOptions = {
  layer: 1,
  site: "mlp",
  contexts: ["{}", "Paris is a city . {}"],
  steps: 3,
  lr: 0.05,
  weightDecay: 0.01,
  klFactor: 0.1,
  clampNormFactor: 50,
};

Deno.test("SharedValues: equal requests and settings are optimised once; any difference is optimised anew", async () => {
  const model = Model.random(gpu, EDITING_CONFIG, 31, true);
  const b: EditRequest = { prompt: "{} works at", subject: "Carl", target: "Paris" };
  const o = small;
  const shared = new SharedValues();
  const first = await shared.optimise(model, tok, [a, b], { ...o, layers: [1, 0] });
  assert.deepEqual(shared.lastReused, [false, false]);
  // The results are optimiseValues's own, bit for bit.
  const direct = await optimiseValues(model, tok, [a, b], { ...o, layers: [1, 0] });
  first.forEach((r, i) => assert.deepEqual(r.target, direct[i].target, `request ${i}`));

  // The same requests at the same layers (an equal copy of a request, o.layer instead of o.layers, a
  // field left undefined) are served from the first call; b at another layer is not.
  const again = await shared.optimise(model, tok, [{ ...a, direction: undefined }, b], {
    ...o,
    layers: [1, 1],
  });
  assert.deepEqual(shared.lastReused, [true, false]);
  assert.equal(again[0], first[0]);
  assert.deepEqual([shared.optimised, shared.reused], [3, 1]);

  // Anything the optimisation depends on differs: optimised anew, each once.
  const noised: EditRequest = { ...a, noise: { seed: 2, scale: 0.5 } };
  const variants: [string, EditRequest, ValueOptions][] = [
    ["steps", a, { ...o, steps: 4 }],
    ["lr", a, { ...o, lr: 0.1 }],
    ["weight decay", a, { ...o, weightDecay: 0.02 }],
    ["KL factor", a, { ...o, klFactor: 0.2 }],
    ["clamp", a, { ...o, clampNormFactor: 40 }],
    ["KL prompt", a, { ...o, klPrompt: "{} is" }],
    ["fact token", a, { ...o, factToken: "last" }],
    ["site", a, { ...o, site: "resid" }],
    ["contexts", a, { ...o, contexts: ["{}", "Oslo is a city . {}"] }],
    ["noise", noised, o],
    ["noise seed", { ...a, noise: { seed: 3, scale: 0.5 } }, o],
    ["direction", { ...a, direction: "decrease" }, o],
    ["target", { ...a, target: "Paris" }, o],
  ];
  for (const [what, request, options] of variants) {
    await shared.optimise(model, tok, [request, request], options);
    assert.deepEqual(shared.lastReused, [false, true], `${what}: optimised once, for both copies`);
  }
  assert.deepEqual([shared.optimised, shared.reused], [3 + variants.length, 1 + variants.length]);
  // ... and each is reused by an equal call.
  await shared.optimise(model, tok, [noised], o);
  assert.deepEqual(shared.lastReused, [true]);
  await assert.rejects(
    () => shared.optimise(model, tok, [a], { ...o, layers: [0, 1] }),
    /optimiseValues: 2 layers for 1 requests/,
  );
});

Deno.test("SharedValues.prefetch: results optimised ahead are served as the first user's own, with its share of the time", async () => {
  const model = Model.random(gpu, EDITING_CONFIG, 37, true);
  const b: EditRequest = { prompt: "{} works at", subject: "Carl", target: "Paris", direction: "decrease" };
  const o: ValueOptions = { ...small, layer: 0 };
  const shared = new SharedValues();
  // Two later calls' requests (another problem's direction; layers 0 and 1), with equal options, merged
  // into one optimisation.
  const keys = await shared.prefetch(model, tok, [
    { requests: [a, b], o: { ...o, layers: [0, 0] } },
    { requests: [a], o: { ...o, layer: 1 } },
  ]);
  assert.equal(keys.length, 3, "the keys of the three results it optimised");
  assert.deepEqual([shared.optimised, shared.reused], [0, 0], "a prefetch counts nothing itself");
  const direct = await optimiseValues(model, tok, [a, b, a], { ...o, layers: [0, 0, 1] });
  const first = await shared.optimise(model, tok, [a, a], { ...o, layers: [0, 1] });
  assert.deepEqual(shared.lastReused, [false, false], "the first user's own");
  assert.ok(shared.lastPrefetchSeconds.every((s) => s > 0), "with its share of the prefetch's time");
  assert.deepEqual(first[0].target, direct[0].target);
  assert.deepEqual(first[1].target, direct[2].target);
  const second = await shared.optimise(model, tok, [b, a], o);
  assert.deepEqual(shared.lastReused, [false, true], "b is its first user's; a was used before");
  assert.deepEqual(shared.lastPrefetchSeconds.map((s) => s > 0), [true, false]);
  assert.deepEqual(second[0].target, direct[1].target);
  assert.deepEqual([shared.optimised, shared.reused], [3, 1]);

  // A prefetch that ran beside other work is charged a share of its span: scaled by 0 here, nothing.
  const beside = new SharedValues();
  const besideKeys = await beside.prefetch(model, tok, [{ requests: [a], o }]);
  beside.scaleSeconds(besideKeys, 0);
  assert.deepEqual((await beside.optimise(model, tok, [a], o))[0].target, direct[0].target);
  assert.deepEqual([beside.lastReused, beside.lastPrefetchSeconds], [[false], [0]]);
});

Deno.test("SharedValues with kept values: wanted results are kept in the store as computed and served from it to another SharedValues (another process), exactly; others are not kept", async () => {
  const model = Model.random(gpu, EDITING_CONFIG, 41, true);
  const b: EditRequest = { prompt: "{} works at", subject: "Carl", target: "Paris" };
  const dir = await Deno.makeTempDir();
  try {
    const [wantedKey, otherKey] = valueKeys([a, b], small);
    const keptIn = (store: ResultStore) => keptInStore(store, (k) => k === wantedKey);
    // One process optimises a (wanted) and b (not) beside each other, as a sweep block does.
    const writer = ResultStore.open(`${dir}/s.db`);
    const first = await new SharedValues(keptIn(writer)).optimise(model, tok, [a, b], small);
    assert.ok(writer.kept(wantedKey) !== undefined && writer.kept(otherKey) === undefined);
    writer.close();

    // Another process on the same store: a is served from the store, the same values bit for bit (float32
    // values as JSON numbers), counted as reused; b is optimised again.
    const reader = ResultStore.open(`${dir}/s.db`);
    const shared = new SharedValues(keptIn(reader));
    const [servedA, servedB] = await shared.prefetch(model, tok, [{ requests: [a, b], o: small }]).then(() =>
      shared.optimise(model, tok, [a, b], small)
    );
    assert.deepEqual(shared.lastReused, [true, false]);
    assert.deepEqual(shared.lastPrefetchSeconds.map((s) => s > 0), [false, true], "b was prefetched, a not");
    for (const field of ["targetInit", "delta", "target", "losses", "targetProb", "updates"] as const) {
      assert.deepEqual(servedA[field], first[0][field], field);
    }
    assert.deepEqual(servedB.target, first[1].target);
    // The first value kept under a key stays.
    reader.keep(wantedKey, valueToJson({ ...first[1] })!);
    assert.deepEqual(valueFromJson(reader.kept(wantedKey)!).delta, first[0].delta);
    reader.close();
    // A value that is not finite is not kept (JSON cannot hold it).
    assert.equal(valueToJson({ ...first[0], losses: [NaN] }), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
