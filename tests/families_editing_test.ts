// Above the engine, every family runs the same experiments: on each transformers-made fixture
// (tests/fixtures/families) every editing method (ROME and R-ROME on one fact; MEMIT, EMMET and FT-L on
// two) raises the new targets' probabilities and undo restores the weights bit-exactly, the low-rank
// edits scored as virtual edits give the probabilities of the applied edits (to 1e-5), FT-L's batched
// training gives each edit as trained alone, and causal tracing returns a full grid.
// The fixtures have no tokenizer of their own: a word-level one maps the editing words onto the
// first ids of the model's vocabulary and fills the rest with placeholder words.
import assert from "node:assert/strict";
import { logProbOf } from "../engine/ops.ts";
import { makeBatch } from "../engine/model.ts";
import { applyEdit, type EditRequest, VirtualEditSet } from "../experiments/editing/edit.ts";
import { computeFt, computeFtBatch } from "../experiments/editing/ft.ts";
import { computeEdits, methodConfig, METHODS } from "../experiments/editing/methods.ts";
import { computeKeyStats, packCorpus } from "../experiments/editing/stats.ts";
import { traceFact } from "../experiments/localization/tracing.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { EDITING_START_WORDS, EDITING_TEMPLATES, EDITING_WORDS } from "./fixtures_tiny_kb.ts";
import { maxAbsDiff, rng } from "./util.ts";

/** Random sentences over every word but <unk> and <eos>: parallel-block families key layer 0's MLP
 *  on single tokens, so C needs more distinct tokens than the MLP has neurons. */
function corpusLines(words: string[], count: number, seed: number): string[] {
  const r = rng(seed);
  return Array.from(
    { length: count },
    () =>
      Array.from({ length: 3 + Math.floor(r() * 6) }, () => words[2 + Math.floor(r() * (words.length - 2))])
        .join(" "),
  );
}

const requests: EditRequest[] = [
  { prompt: "{} lives in", subject: "Anna Berg", target: "Oslo" },
  { prompt: "{} works in", subject: "Carl Dorn", target: "Lima" },
];

for (const name of CASES) {
  Deno.test(`${name}: ROME, R-ROME, MEMIT, EMMET and FT-L move the target and undo exactly; tracing covers every cell`, async () => {
    const { model } = await loadCase(name);
    // Layer 0: some fixtures have 2 layers, and a last-layer MLP edit at the subject cannot reach the
    // prediction at the prompt's last token (no attention follows it).
    const gpu = model.gpu, layer = 0, param = `h.${layer}.mlp.c_proj.weight`;
    const fillers = Array.from({ length: model.config.vocabSize - EDITING_WORDS.length }, (_, i) => `w${i}`);
    const words = [...EDITING_WORDS, ...fillers];
    const tok = new WordLevelTokenizer(words, { unk: "<unk>", eos: "<eos>" });
    /** p(first target token) after the prompt; with `virtual`, under that edit applied virtually. */
    const probOf = async (r: EditRequest, virtual?: VirtualEditSet) => {
      const ids = tok.encode(r.prompt.replace("{}", r.subject));
      const batch = makeBatch([ids]);
      const fwd = model.forward(batch, { virtualEdits: virtual?.forBatch([0], batch.T) });
      const lp = logProbOf(
        gpu,
        fwd.logits,
        gpu.tensor([1], [tok.encode(" " + r.target)[0]], "u32"),
        1,
        model.config.vocabSize,
      );
      const [v] = await lp.read();
      model.releaseForward(fwd);
      return Math.exp(v);
    };
    const { stats } = await computeKeyStats(model, packCorpus(tok, corpusLines(words, 300, 3), 24), {
      layers: [layer],
      samples: 600,
    });
    const original = (await model.p(param).read()).slice();

    for (const method of METHODS) {
      const batch = method === "rome" || method === "r-rome" ? requests.slice(0, 1) : requests;
      const mc = methodConfig(model, method, {
        layers: [layer],
        factToken: "subject_last",
        ...(method === "ft" ? { normConstraint: 0.05, numSteps: 10 } : {}),
      });
      if ("templates" in mc.hparams) mc.hparams.templates = EDITING_TEMPLATES;
      const before = await Promise.all(batch.map((r) => probOf(r)));
      const edits = await computeEdits(model, tok, mc, batch, stats, { startWords: EDITING_START_WORDS });
      const virtual = method === "ft" ? null : new VirtualEditSet(model, [edits[0]]);
      const virtualAfter: number[] = [];
      if (virtual) { for (const r of batch) virtualAfter.push(await probOf(r, virtual)); }
      virtual?.release();
      const applied = await applyEdit(model, edits[0]);
      const after = await Promise.all(batch.map((r) => probOf(r)));
      // An edit applied to a 16-bit weight is rounded to its format; a virtual edit is not.
      const agreement = model.p(param).dtype === "f32" ? 1e-5 : 1e-3;
      virtualAfter.forEach((p, i) =>
        assert.ok(
          Math.abs(p - after[i]) <= agreement,
          `${name} ${method}: scored virtually ${p}, applied ${after[i]}`,
        )
      );
      // ROME's single rank-one edit moves its fact strongly; the batch methods' defaults (MEMIT's clamp
      // 0.75, FT-L's radius) move each fact less on these random models, but must move it up.
      const factor = method === "rome" || method === "r-rome" ? 1.5 : 1;
      batch.forEach((r, i) =>
        assert.ok(
          after[i] > factor * before[i],
          `${name} ${method}: p(${r.target}) only from ${before[i]} to ${after[i]}`,
        )
      );
      applied.undo();
      assert.deepEqual(
        await model.p(param).read(),
        original,
        `${name} ${method}: undo restores ${param} bit-exactly`,
      );
    }

    // FT-L's batched training (each edit its own weight copy, whose gradient Adam forms from backward's
    // factors in its step) gives each edit as computeFt trains it alone, on this family's block form.
    const ftHp = methodConfig(model, "ft", { layers: [layer], normConstraint: 0.05, numSteps: 10 }).hparams;
    const together = await computeFtBatch(model, tok, requests.map((r) => ({ requests: [r], hp: ftHp })));
    for (const [i, r] of requests.entries()) {
      const alone = await computeFt(model, tok, [r], ftHp);
      assert.deepEqual(together[i].info.epochs, alone.info.epochs, `${name}: FT-L edit ${i} stopping step`);
      together[i].deltas.forEach((d, k) => {
        const want = alone.deltas[k];
        assert.ok(d.kind === "dense" && want.kind === "dense" && d.param === want.param);
        const scale = Math.max(...want.values.map(Math.abs));
        assert.ok(scale > 0, `${name}: FT-L edit ${i} moved ${d.param}`);
        assert.ok(
          maxAbsDiff(d.values, want.values) <= 1e-3 * scale,
          `${name}: FT-L edit ${i} ${d.param} batched vs alone`,
        );
      });
    }

    const trace = await traceFact(model, tok, {
      prompt: "Anna Berg lives in",
      subject: "Anna Berg",
      target: "Paris",
    }, { samples: 3 });
    assert.deepEqual(trace.grids.map((g) => g.kind).sort(), ["attn", "mlp", "resid"]);
    for (const g of trace.grids) {
      assert.equal(g.prob.length, trace.tokens.length, `${name}: ${g.kind} rows`);
      for (const row of g.prob) {
        assert.equal(row.length, model.nLayer);
        for (const v of row) {
          assert.ok(Number.isFinite(v) && v >= 0 && v <= 1, `${name}: ${g.kind} probability ${v}`);
        }
      }
    }
    // Restoring the whole residual stream at the last token of the last layer gives the clean run back.
    const resid = trace.grids.find((g) => g.kind === "resid")!;
    const last = resid.prob[trace.tokens.length - 1][model.nLayer - 1];
    assert.ok(
      Math.abs(last - trace.clean) < 1e-4,
      `${name}: restoring the final state gives the clean probability`,
    );
  });
}
