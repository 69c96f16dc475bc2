// Causal tracing at full batch (experiments/localization/tracing.ts): the grids of several prompts traced
// together (shared runs in one batch, cells of every prompt in shared suffix batches, identical cells once,
// residual cells from the layer after their first) equal the per-cell reference path (every cell its own
// forward from the embeddings, one prompt at a time), on the embedded model and on non-GPT-2 families.
import assert from "node:assert/strict";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import {
  factChunks,
  type GridTrace,
  promptChunks,
  subjectNoiseLevel,
  type TraceOptions,
  type TracePrompt,
  tracePrompts,
  traceTokens,
} from "../experiments/localization/tracing.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { loadCase } from "./families_fixtures.ts";

/** Each prompt traced alone with one forward per cell (reuse off, a batch of one cell's samples). */
async function perCell(model: Model, prompts: TracePrompt[], o: TraceOptions): Promise<GridTrace[]> {
  const out: GridTrace[] = [];
  for (const p of prompts) {
    const rows = Math.max(1, o.method === "zero" ? 1 : o.samples ?? 10) * p.ids.length;
    out.push(await traceTokens(model, p.ids, p.subject, p.target, { ...o, reuse: false, maxRows: rows }));
  }
  return out;
}

/** Largest difference between two traces' probabilities (grids, clean, corrupted, subject zeroing). */
function maxDiff(a: GridTrace[], b: GridTrace[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((x, i) => {
    const y = b[i];
    assert.deepEqual(x.ids, y.ids);
    worst = Math.max(worst, Math.abs(x.clean - y.clean), Math.abs((x.corrupted ?? 0) - (y.corrupted ?? 0)));
    x.grids.forEach((g, k) => {
      assert.equal(g.kind, y.grids[k].kind);
      g.prob.forEach((row, t) =>
        row.forEach((p, l) => worst = Math.max(worst, Math.abs(p - y.grids[k].prob[t][l])))
      );
      g.subjectZeroed?.prob.forEach((p, l) =>
        worst = Math.max(worst, Math.abs(p - y.grids[k].subjectZeroed!.prob[l]))
      );
    });
  });
  return worst;
}

/** The spread of a trace's effects: the comparison means something only where cells differ. */
function effectRange(traces: GridTrace[]): number {
  const effects = traces.flatMap((t) => t.grids.flatMap((g) => g.effect.flat()));
  return Math.max(...effects) - Math.min(...effects);
}

const gpu = await getGpu();

Deno.test("embedded model: two facts traced together equal the per-cell path (ROME's windows; zeroing)", async () => {
  const model = await Model.load(gpu, DEFAULT_MODEL_DIR);
  const tok = await loadTokenizer(DEFAULT_MODEL_DIR);
  const { cases } = await loadDataset(`${DEFAULT_MODEL_DIR}/known_facts.json`);
  // Facts of different lengths, subjects not at the start (tokens before the subject are shortcut).
  const facts = [cases[0], cases[5]].map((c) => ({
    prompt: c.prompt,
    subject: c.subject,
    target: c.targetTrue!,
  }));
  const noise = (await subjectNoiseLevel(model, tok, facts.map((f) => f.subject))).level;
  const traced = [];
  for await (
    const chunk of factChunks(model, tok, facts, {
      samples: 2,
      noise,
      window: { resid: 1, mlp: 10, attn: 10 },
    })
  ) {
    traced.push(...chunk);
  }
  const prompts = traced.map((t) => ({ ids: t.ids, subject: t.subjectRange, target: t.targetId }));
  assert.ok(new Set(prompts.map((p) => p.ids.length)).size > 1, "prompts of different lengths");
  assert.ok(prompts.some((p) => p.subject[0] > 0), "a subject after the first token");
  assert.deepEqual(traced.map((t) => t.prompt), facts.map((f) => f.prompt), "traces in the facts' order");
  for (
    const o of [
      { samples: 2, noise, window: { resid: 1, mlp: 10, attn: 10 } },
      { method: "zero", window: 1 },
    ] as TraceOptions[]
  ) {
    const batched = await tracePrompts(model, prompts, o);
    const reference = await perCell(model, prompts, o);
    const diff = maxDiff(batched, reference);
    assert.ok(diff < 1e-6, `${JSON.stringify(o)}: batched vs per cell ${diff}`);
    assert.ok(effectRange(batched) > 1e-3, `${JSON.stringify(o)}: the grids are not flat`);
  }
  assert.ok(
    maxDiff(
      traced,
      await tracePrompts(model, prompts, { samples: 2, noise, window: { resid: 1, mlp: 10, attn: 10 } }),
    ) === 0,
  );
});

Deno.test("prompts are chunked by the row cap: chunks of one prompt give the same grids as one chunk", async () => {
  const model = await Model.load(gpu, DEFAULT_MODEL_DIR);
  const prompts: TracePrompt[] = [
    { ids: [5, 9, 17, 30, 12, 8], subject: [1, 3], target: 40 },
    { ids: [7, 21, 3, 44, 2, 19, 6, 11], subject: [2, 5], target: 12 },
    { ids: [14, 2, 9], subject: [0, 2], target: 3 },
  ];
  const o: TraceOptions = { samples: 3, noise: 0.5, window: 1 };
  assert.deepEqual(promptChunks(model, prompts, 3), [[0, 3]]);
  // A cap of 3 x 8 rows holds the prepare batch of no two prompts (4 sequences x their longest).
  assert.deepEqual(promptChunks(model, prompts, 3, 3 * 8), [[0, 1], [1, 2], [2, 3]]);
  const whole = await tracePrompts(model, prompts, o);
  const split = await tracePrompts(model, prompts, { ...o, maxRows: 3 * 8 });
  assert.ok(maxDiff(whole, split) < 1e-6, `chunked vs whole ${maxDiff(whole, split)}`);
  assert.ok(effectRange(whole) > 1e-4, "the grids are not flat");
});

for (const name of ["llama", "gemma2", "gpt_neox_parallel"]) {
  Deno.test(`${name}: prompts traced together equal the per-cell path`, async () => {
    const { model } = await loadCase(name);
    const V = model.config.vocabSize;
    const prompts: TracePrompt[] = [
      { ids: [1, 5 % V, 9 % V, 14 % V, 3 % V, 7 % V], subject: [1, 3], target: 11 % V },
      { ids: [1, 8 % V, 2 % V, 6 % V], subject: [2, 4], target: 4 % V },
    ];
    for (const o of [{ samples: 2, noise: 3, window: 2 }, { method: "zero", window: 1 }] as TraceOptions[]) {
      const batched = await tracePrompts(model, prompts, o);
      const reference = await perCell(model, prompts, o);
      const diff = maxDiff(batched, reference);
      assert.ok(diff < 1e-6, `${name} ${JSON.stringify(o)}: batched vs per cell ${diff}`);
      assert.ok(effectRange(batched) > 1e-5, `${name} ${JSON.stringify(o)}: the grids are not flat`);
    }
  });
}
