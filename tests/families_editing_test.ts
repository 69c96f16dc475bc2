// Above the engine, every family runs the same experiments: on each transformers-made fixture
// (tests/fixtures/families) a ROME edit raises the new target's probability and undo restores the
// weights bit-exactly, MEMIT does the same for two facts, both edits scored as virtual edits give the
// probabilities of the applied edits (to 1e-5), and causal tracing returns a full grid.
// The fixtures have no tokenizer of their own: a word-level one maps the editing words onto the
// first ids of the model's vocabulary and fills the rest with placeholder words.
import assert from "node:assert/strict";
import { logProbOf } from "../engine/ops.ts";
import { makeBatch } from "../engine/model.ts";
import { applyEdit, type EditRequest, VirtualEditSet } from "../experiments/editing/edit.ts";
import { memitHparams, romeHparams } from "../experiments/editing/hparams.ts";
import { computeMemit } from "../experiments/editing/memit.ts";
import { computeRome } from "../experiments/editing/rome.ts";
import { computeKeyStats, packCorpus } from "../experiments/editing/stats.ts";
import { traceFact } from "../experiments/tracing.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { EDITING_START_WORDS, EDITING_TEMPLATES, EDITING_WORDS } from "./fixtures_tiny_kb.ts";
import { rng } from "./util.ts";

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
  Deno.test(`${name}: ROME and MEMIT edits move the target and undo exactly; tracing covers every cell`, async () => {
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

    const hp = {
      ...romeHparams(model.config),
      layer,
      factToken: "subject_last" as const,
      templates: EDITING_TEMPLATES,
    };
    const before = await probOf(requests[0]);
    const [edit] = await computeRome(model, tok, [requests[0]], stats.get(layer)!, hp, {
      startWords: EDITING_START_WORDS,
    });
    const romeVirtual = new VirtualEditSet(model, [edit]);
    const virtualAfter = await probOf(requests[0], romeVirtual);
    romeVirtual.release();
    const applied = await applyEdit(model, edit);
    const after = await probOf(requests[0]);
    assert.ok(
      Math.abs(virtualAfter - after) <= 1e-5,
      `${name}: ROME scored virtually ${virtualAfter}, applied ${after}`,
    );
    assert.ok(
      after > 1.5 * before,
      `${name}: ROME moved p(${requests[0].target}) only from ${before} to ${after}`,
    );
    applied.undo();
    assert.deepEqual(await model.p(param).read(), original, `${name}: undo restores ${param} bit-exactly`);

    const mhp = {
      ...memitHparams(model.config),
      layers: [layer],
      factToken: "subject_last" as const,
      templates: EDITING_TEMPLATES,
    };
    const pBefore = await Promise.all(requests.map((r) => probOf(r)));
    const memit = await computeMemit(model, tok, requests, stats, mhp, { startWords: EDITING_START_WORDS });
    const memitVirtual = new VirtualEditSet(model, [memit]);
    const pVirtual: number[] = [];
    for (const r of requests) pVirtual.push(await probOf(r, memitVirtual));
    memitVirtual.release();
    const memitApplied = await applyEdit(model, memit);
    const pAfter = await Promise.all(requests.map((r) => probOf(r)));
    requests.forEach((r, i) =>
      assert.ok(
        Math.abs(pVirtual[i] - pAfter[i]) <= 1e-5,
        `${name}: MEMIT p(${r.target}) scored virtually ${pVirtual[i]}, applied ${pAfter[i]}`,
      )
    );
    requests.forEach((r, i) => assert.ok(pAfter[i] > pBefore[i], `${name}: MEMIT lowered p(${r.target})`));
    memitApplied.undo();
    assert.deepEqual(await model.p(param).read(), original, `${name}: MEMIT undo restores ${param}`);

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
    // Restoring the whole residual stream at the last subject token of the top layer... rather, at
    // the last token of the last layer the corrupted run is the clean run again.
    const resid = trace.grids.find((g) => g.kind === "resid")!;
    const last = resid.prob[trace.tokens.length - 1][model.nLayer - 1];
    assert.ok(
      Math.abs(last - trace.clean) < 1e-4,
      `${name}: restoring the final state gives the clean probability`,
    );
  });
}
