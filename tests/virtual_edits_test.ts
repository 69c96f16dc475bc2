// Virtual edits (engine/virtual_edits.ts): the kernel against its float64 reference, and a batched
// forward where each prompt carries its own edit against applying that edit to the weights, scoring
// the prompt alone and undoing it, on GPT-2 (Conv1D layout) and rotary families (nn.Linear layout):
// a ROME-shaped rank-one edit at one layer, MEMIT-shaped edits spread over two layers and an FT-L-shaped
// dense change of a layer's weight and bias, with unedited prompts in the same batch.
import assert from "node:assert/strict";
import { getGpu } from "../engine/gpu.ts";
import { makeBatch } from "../engine/model.ts";
import { matmulTiles } from "../engine/ops.ts";
import { applyVirtualEdit, promptRowEdits } from "../engine/virtual_edits.ts";
import {
  applyEdit,
  combineEdits,
  type Edit,
  keyValueDelta,
  VirtualEditSet,
} from "../experiments/editing/edit.ts";
import { type PromptInstance, readFactStates, type StateRead } from "../experiments/editing/keys.ts";
import { scoreTokens, type ScoringItem } from "../experiments/evaluation/metrics.ts";
import { ResidualCache } from "../experiments/evaluation/residuals.ts";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { Model } from "../engine/model.ts";
import { loadCase } from "./families_fixtures.ts";
import { softmaxRef, virtualEditRef } from "./reference.ts";
import { assertClose, maxAbsDiff, randomArray } from "./util.ts";

const gpu = await getGpu();

Deno.test("virtual edit kernel matches its float64 reference (mixed ranks, dense changes, unedited rows)", async () => {
  const cases: [number, number, number, number[], boolean[]][] = [
    [1, 1, 1, [1], [false]],
    [9, 13, 7, [1, 3, 2], [false, false, false]],
    [40, 64, 32, [2, 1], [false, false]],
    [11, 12, 5, [0, 2, 1], [true, true, false]], // only dense; dense with low rank; low rank
    [6, 8, 4, [0], [true]], // every edit dense: a placeholder value row
    [23, 16, 8, [1, 0, 2], [false, true, true]],
  ];
  // Rows take turns between the edits, or come in runs of one edit (a prompt's tokens), which the
  // vec4 kernel scores four rows at a time from shared key loads (runs of 1-6 rows, some unedited).
  const layouts = {
    interleaved: (R: number, n: number) => Array.from({ length: R }, (_, r) => (r % (n + 1)) - 1),
    runs: (R: number, n: number) => {
      const out: number[] = [];
      for (let run = 0; out.length < R; run++) out.push(...Array(1 + (run % 6)).fill((run % (n + 1)) - 1));
      return out.slice(0, R);
    },
  };
  for (
    const [R, F, D, ranks, dense, layout] of cases.flatMap((c) =>
      [[...c, "interleaved"], [...c, "runs"]] as const
    )
  ) {
    const C = ranks.reduce((a, k, e) => a + k + (dense[e] ? D : 0), 0);
    const L = Math.max(1, ranks.reduce((a, b) => a + b, 0));
    const rowEdit = layouts[layout](R, ranks.length);
    const mlp = randomArray(R * D, 1), key = randomArray(R * F, 2), U = randomArray(C * F, 3);
    const V = randomArray(L * D, 4);
    // The scores one row per invocation (GPUs' choice) and four (software adapters'): the same bits.
    const got: Float32Array[] = [];
    const choice = gpu.kernels as { virtualScoreRows: number };
    const chosen = choice.virtualScoreRows;
    try {
      for (const rows of [1, 4]) {
        choice.virtualScoreRows = rows;
        const out = gpu.tensor([R, D], mlp);
        applyVirtualEdit(
          gpu,
          out,
          gpu.tensor([R, F], key),
          { layer: 0, keys: gpu.tensor([C, F], U), values: gpu.tensor([L, D], V), ranks, dense, rowEdit },
          R,
          F,
          D,
        );
        got.push(await out.read());
      }
    } finally {
      choice.virtualScoreRows = chosen;
    }
    const what = `virtual edit [${R},${F},${D}] ranks ${ranks} dense ${dense}, ${layout}`;
    assertClose(got[0], virtualEditRef(mlp, key, U, V, ranks, rowEdit, F, D, dense), 1e-5, what);
    assert.deepEqual(got[1], got[0], `${what}: 4 rows per invocation against 1`);
  }
});

Deno.test("virtual edit: edits that are only a dense change run as one grouped product from texture mirrors where the adapter reads them, with the scores kernel's bits", async () => {
  const maxDim = gpu.limits.maxTextureDimension2D;
  const cases: [number, number, number, number[], boolean[]][] = [
    // Dense only (first key rows 0 and 12); low rank (24); dense only from key row 25, not a multiple of 4
    // (a texel column), so on the scores kernel beside the others.
    [60, 128, 12, [0, 0, 1, 0], [true, true, false, true]],
    // More rows than a texture holds: the keys' mirror in two chunks, a dispatch each.
    [maxDim + 37, 64, 8, [0, 0], [true, true]],
  ];
  // Runs of 1-20 rows of one edit (a prompt's tokens: blocks of up to TM rows, the last shorter), some
  // unedited; or rows taking turns (blocks of one row).
  const layouts = {
    runs: (R: number, n: number) => {
      const out: number[] = [];
      for (let run = 0; out.length < R; run++) out.push(...Array(1 + (run % 20)).fill((run % (n + 1)) - 1));
      return out.slice(0, R);
    },
    interleaved: (R: number, n: number) => Array.from({ length: R }, (_, r) => (r % (n + 1)) - 1),
  };
  const texture = matmulTiles(gpu).texture;
  const products = texture?.transposed !== undefined && texture.activations !== false;
  for (const [R, F, D, ranks, dense] of cases) {
    for (const layout of ["runs", "interleaved"] as const) {
      const C = ranks.reduce((a, k, e) => a + k + (dense[e] ? D : 0), 0);
      const L = Math.max(1, ranks.reduce((a, b) => a + b, 0));
      const rowEdit = layouts[layout](R, ranks.length);
      const mlp = randomArray(R * D, 5), key = randomArray(R * F, 6), U = randomArray(C * F, 7);
      const V = randomArray(L * D, 8);
      const edit = {
        layer: 0,
        keys: gpu.tensor([C, F], U),
        values: gpu.tensor([L, D], V),
        ranks,
        dense,
        rowEdit,
      };
      const keys = gpu.tensor([R, F], key);
      const got: Float32Array[] = [];
      const entries = new Set<string>();
      const pipeline = gpu.pipeline;
      gpu.pipeline = (file, entry, params) => (entries.add(entry), pipeline.call(gpu, file, entry, params));
      try {
        for (const denseProducts of [true, false]) {
          const out = gpu.tensor([R, D], mlp);
          applyVirtualEdit(gpu, out, keys, edit, R, F, D, { denseProducts });
          got.push(await out.read());
          if (denseProducts) assert.equal(entries.has("virtual_dense"), products, "the grouped product ran");
        }
      } finally {
        delete (gpu as { pipeline?: unknown }).pipeline;
      }
      const what = `virtual edit [${R},${F},${D}] ranks ${ranks} dense ${dense}, ${layout}`;
      assert.ok(
        got[0].every((v, i) => Object.is(v, got[1][i])),
        `${what}: the product's bits against the scores'`,
      );
      assertClose(got[0], virtualEditRef(mlp, key, U, V, ranks, rowEdit, F, D, dense), 1e-5, what);
    }
  }
});

Deno.test("virtual edit refuses a row naming a missing edit and mismatched shapes", () => {
  const t = (n: number) => gpu.tensor([n], new Float32Array(n));
  const edit = { layer: 2, keys: gpu.tensor([1, 4], [1, 2, 3, 4]), values: gpu.tensor([1, 3], [1, 2, 3]) };
  assert.throws(
    () => applyVirtualEdit(gpu, t(6), t(8), { ...edit, rowEdit: [0, 1] }, 2, 4, 3),
    /layer 2: row 1 names edit 1/,
  );
  assert.throws(() => applyVirtualEdit(gpu, t(6), t(8), { ...edit, rowEdit: [0] }, 2, 4, 3), /2 rows/);
  assert.throws(
    () => applyVirtualEdit(gpu, t(6), t(8), { ...edit, ranks: [2], rowEdit: [0, 0] }, 2, 4, 3),
    /give 2 key rows, the keys have 1/,
  );
  assert.throws(
    () => applyVirtualEdit(gpu, t(6), t(8), { ...edit, dense: [true], rowEdit: [0, 0] }, 2, 4, 3),
    /dense changes need the edits' ranks/,
  );
  assert.throws(
    () => applyVirtualEdit(gpu, t(6), t(8), { ...edit, ranks: [0], rowEdit: [0, 0] }, 2, 4, 3),
    /ranks must be integers >= 0 \(>= 1 where an edit is not dense\), got \[0\]/,
  );
  assert.throws(
    () => applyVirtualEdit(gpu, t(6), t(8), { ...edit, ranks: [0], dense: [true], rowEdit: [0, 0] }, 2, 4, 3),
    /ranks \[0\] and 1 dense changes of 3 rows give 3 key rows, the keys have 1/,
  );
});

/** Random low-rank deltas of a layer's c_proj in the family's layout, large enough to move predictions. */
function randomEdit(
  model: Awaited<ReturnType<typeof loadCase>>["model"],
  parts: [number, number][],
  seed: number,
): Edit {
  const f = model.config.nInner, d = model.config.nEmbd;
  return {
    method: "random",
    requests: [],
    deltas: parts.map(([layer, rank], i) =>
      keyValueDelta(
        model,
        layer,
        randomArray(f * rank, seed * 10 + i, 3),
        randomArray(rank * d, seed * 10 + i + 5, 3),
        rank,
      )
    ),
    info: {},
  };
}

/** A random dense change of a layer's c_proj weight (and bias, where the family has one), FT-L's kind. */
function denseEdit(model: Awaited<ReturnType<typeof loadCase>>["model"], layer: number, seed: number): Edit {
  const deltas: Edit["deltas"] = [];
  for (const [part, scale] of [["weight", 0.05], ["bias", 0.5]] as const) {
    const param = `h.${layer}.mlp.c_proj.${part}`;
    if (!model.params.has(param)) continue;
    const t = model.p(param);
    deltas.push({
      kind: "dense",
      param,
      shape: [...t.shape],
      values: randomArray(t.size, seed + deltas.length, scale),
    });
  }
  return { method: "ft", requests: [], deltas, info: {} };
}

for (const name of ["gpt2", "llama", "gptj", "gpt_neox_parallel"]) {
  Deno.test(`${name}: a batched forward with virtual edits equals apply / forward / undo per prompt`, async () => {
    const { model } = await loadCase(name);
    const V = model.config.vocabSize;
    const edits = [
      randomEdit(model, [[0, 1]], 1), // ROME: rank one at one layer
      randomEdit(model, [[0, 2], [1, 2]], 2), // MEMIT: two facts spread over two layers
      randomEdit(model, [[1, 1], [1, 1]], 3), // two deltas of one layer (a combined edit)
      denseEdit(model, 1, 4), // FT-L: a dense change of a layer's weight (and bias)
      combineEdits([randomEdit(model, [[1, 1]], 5), denseEdit(model, 1, 6)]), // low rank and dense at one layer
    ];
    const prompts = [[5, 9, 3, 17], [2, 4, 8], [11, 12, 13, 14], [7, 1], [30, 31, 32], [6, 2, 9], [3, 3, 5]];
    const promptEdit = [0, 1, -1, 2, 1, 3, 4];
    const batch = makeBatch(prompts);
    const rows = prompts.flatMap((p, b) => p.map((_, t) => b * batch.T + t));
    const set = new VirtualEditSet(model, edits);
    const fwd = model.forward(batch, {
      outputRows: rows,
      virtualEdits: set.forBatch(promptEdit, batch.T),
    });
    const virtual = softmaxRef(await fwd.logits.read(), rows.length, V);
    model.releaseForward(fwd);
    set.release();

    let at = 0;
    for (const [b, ids] of prompts.entries()) {
      const one = makeBatch([ids]);
      const all = ids.map((_, t) => t);
      const score = async () => {
        const r = model.forward(one, { outputRows: all });
        const p = softmaxRef(await r.logits.read(), ids.length, V);
        model.releaseForward(r);
        return p;
      };
      const plain = await score();
      let expected = plain;
      if (promptEdit[b] >= 0) {
        const applied = await applyEdit(model, edits[promptEdit[b]]);
        expected = await score();
        applied.undo();
        assert.ok(
          maxAbsDiff(expected, plain) > 1e-3,
          `${name}: edit ${promptEdit[b]} changes the prediction`,
        );
      }
      const got = virtual.subarray(at * V, (at + ids.length) * V);
      assertClose(got, expected, 1e-5, `${name}: prompt ${b} (edit ${promptEdit[b]}) probabilities`);
      at += ids.length;
    }
  });
}

for (const name of ["gpt2", "llama", "gptj", "gpt_neox_parallel", "gemma3_text", "embedded"]) {
  Deno.test(`${name}: scores under virtual edits that start at each edit's block from cached residuals are the same bits`, async () => {
    const model = name === "embedded"
      ? await Model.load(gpu, DEFAULT_MODEL_DIR)
      : (await loadCase(name)).model;
    const L = model.nLayer, top = L - 1, mid = Math.min(1, top);
    const edits = [
      randomEdit(model, [[0, 1]], 1), // from block 0: the whole model
      randomEdit(model, [[top, 1]], 2), // the last block only
      randomEdit(model, [[mid, 2], [top, 2]], 3), // a window: from its lowest block
      denseEdit(model, mid, 4), // FT-L's dense change
      combineEdits([randomEdit(model, [[top, 1]], 5), denseEdit(model, top, 6)]),
    ];
    // Items of several lengths, each under an edit or none (-1: unedited, from the last block), the same
    // sequence under several edits (cached once), in small batches so that groups span batches.
    const V = model.config.vocabSize;
    const ids = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 7 + i * 13) % V);
    const items: ScoringItem[] = [];
    const itemEdit: number[] = [];
    for (let k = 0; k < 14; k++) {
      items.push({ context: ids(k % 5, 2 + (k % 4)), continuation: ids(k + 3, 1 + (k % 3)) });
      itemEdit.push((k % (edits.length + 1)) - 1);
    }
    const plain = new VirtualEditSet(model, edits);
    const residuals = new ResidualCache(model);
    const cached = new VirtualEditSet(model, edits, residuals);
    try {
      const want = await scoreTokens(model, items, 3, { edits: plain, itemEdit });
      const got = await scoreTokens(model, items, 3, { edits: cached, itemEdit });
      assert.deepEqual(got, want);
      assert.equal(cached.firstLayer(2), mid);
      assert.equal(cached.firstLayer(-1), L);
      // Every sequence scored from a block above 0 was cached, once.
      const fromAbove = new Set(
        items.flatMap((it, i) =>
          Math.min(cached.firstLayer(itemEdit[i]), top) > 0
            ? [[...it.context, ...it.continuation.slice(0, -1)].join(",")]
            : []
        ),
      );
      assert.equal(residuals.size, fromAbove.size);
      // A cache with room for 5 positions: a sequence or two; the others start at block 0, the same bits.
      const small = new ResidualCache(model, 4 * 5 * model.config.nEmbd * (L - 1));
      const smallSet = new VirtualEditSet(model, edits, small);
      try {
        assert.deepEqual(await scoreTokens(model, items, 3, { edits: smallSet, itemEdit }), want);
        assert.ok(
          small.size >= 1 && small.size < fromAbove.size,
          `${small.size} of ${fromAbove.size} cached`,
        );
      } finally {
        smallSet.release();
        small.release();
      }
      // The unedited items too: the model as it is (no set) gives the same bits.
      const unedited = items.filter((_, i) => itemEdit[i] === -1);
      const alone = await scoreTokens(model, unedited, 3);
      assert.deepEqual(alone.logProbs, got.logProbs.filter((_, i) => itemEdit[i] === -1));
    } finally {
      plain.release();
      cached.release();
      residuals.release();
    }
  });
}

for (const name of ["gpt2", "llama", "embedded"]) {
  Deno.test(`${name}: fact-state reads, identical passes merged, started from cached residuals and unedited states kept, equal each read's own pass`, async () => {
    const model = name === "embedded"
      ? await Model.load(gpu, DEFAULT_MODEL_DIR)
      : (await loadCase(name)).model;
    const L = model.nLayer, top = L - 1, mid = Math.min(1, top);
    const edits = [
      randomEdit(model, [[0, 1]], 1),
      randomEdit(model, [[mid, 2], [top, 2]], 3),
      denseEdit(model, top, 4),
    ];
    const V = model.config.vocabSize;
    const A = [3, 9, 27, 5, 11].map((x) => x % V), B = [8, 2, 14, 6].map((x) => x % V);
    const noise = { seed: 7, scale: 3 };
    // (tokens, edit, noised): instance 1 repeats 0's pass, 4 repeats 3's; 5 is 3 with subject noise, 9 is 0
    // with subject noise, unedited.
    const spec: [number[], number, boolean][] = [
      [A, -1, false],
      [A, -1, false],
      [A, 0, false],
      [B, 1, false],
      [B, 1, false],
      [B, 1, true],
      [A, 2, false],
      [B, -1, false],
      [B, -1, true],
      [A, -1, true],
    ];
    const instances: PromptInstance[] = spec.map(([ids, , noised], k) => ({
      ids,
      subject: [1, 3],
      fact: 1 + (k % 3),
      noise: noised ? noise : undefined,
    }));
    const itemEdit = spec.map(([, e]) => e);
    const reads: StateRead[] = instances.flatMap((_, k) => [
      { instance: k, layer: k === 0 ? 0 : top, site: "key" as const },
      { instance: k, layer: top, site: "resid" as const },
      { instance: k, layer: mid, site: "mlp" as const },
    ]);
    const plain = new VirtualEditSet(model, edits);
    const residuals = new ResidualCache(model);
    const cached = new VirtualEditSet(model, edits, residuals);
    try {
      const want: Float32Array[] = [];
      for (const r of reads) {
        const [one] = await readFactStates(model, [instances[r.instance]], [{ ...r, instance: 0 }], {
          edits: plain,
          itemEdit: [itemEdit[r.instance]],
        });
        want.push(one);
      }
      assert.deepEqual(await readFactStates(model, instances, reads, { edits: cached, itemEdit }, 3), want);
      // The unedited noise-free reads were kept: read again they need no pass and come back as copies; a
      // noised or edited read is never kept.
      const isKept = (r: StateRead) => itemEdit[r.instance] === -1 && !instances[r.instance].noise;
      const keptWant = want.filter((_, i) => isKept(reads[i]));
      let dispatches = gpu.dispatchCount;
      const again = await readFactStates(model, instances, reads.filter(isKept), { edits: cached, itemEdit });
      assert.equal(gpu.dispatchCount, dispatches, "kept states are read without a pass");
      assert.deepEqual(again, keptWant);
      again[0].fill(0);
      assert.deepEqual(
        await readFactStates(model, instances, reads.filter(isKept), { edits: cached, itemEdit }),
        keptWant,
      );
      dispatches = gpu.dispatchCount;
      const rest = reads.filter((r) => !isKept(r));
      assert.deepEqual(
        await readFactStates(model, instances, rest, { edits: cached, itemEdit }),
        want.filter((_, i) => !isKept(reads[i])),
      );
      assert.ok(gpu.dispatchCount > dispatches, "edited and noised reads are computed");
      // Read back after every batch (a budget of one byte): the same states.
      assert.deepEqual(
        await readFactStates(model, instances, reads, { edits: cached, itemEdit }, 3, 1),
        want,
      );
      // A (under the dense edit at the top, read from block 1) and B (from block 1) cached once each.
      assert.equal(residuals.size, 2);
      // Without a set: the unedited reads alone, the same bits.
      const unedited = reads.filter((r) => itemEdit[r.instance] === -1);
      assert.deepEqual(
        await readFactStates(model, instances, unedited),
        want.filter((_, i) => itemEdit[reads[i].instance] === -1),
      );
    } finally {
      plain.release();
      cached.release();
      residuals.release();
    }
  });
}

Deno.test("virtual edits are refused with kept activations and outside the forward's layers", async () => {
  const { model } = await loadCase("gpt2");
  const set = new VirtualEditSet(model, [randomEdit(model, [[1, 1]], 4)]);
  const batch = makeBatch([[1, 2, 3]]);
  const virtualEdits = set.forBatch([0], batch.T);
  assert.throws(() => model.forward(batch, { virtualEdits, keep: true }), /backward/);
  assert.throws(() => set.forBatch([1], batch.T), /outside \[-1, 1\)/);
  assert.equal(promptRowEdits([2, -1], 2).join(","), "2,2,-1,-1");
  const denseOf = (param: string): Edit => {
    const t = model.p(param);
    return {
      method: "ft",
      requests: [],
      deltas: [{ kind: "dense", param, shape: [...t.shape], values: new Float32Array(t.size) }],
      info: {},
    };
  };
  assert.throws(
    () => new VirtualEditSet(model, [denseOf("h.0.attn.c_proj.weight")]),
    /only deltas of an MLP output projection .* h\.0\.attn\.c_proj\.weight; apply it instead/,
  );
  assert.throws(
    () => new VirtualEditSet(model, [denseOf("h.0.mlp.c_proj.bias")]),
    /a bias change at layer 0 without a weight change/,
  );
  set.release();
});
