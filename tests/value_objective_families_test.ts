// The v* / z objective (experiments/editing/values.ts) on every transformers-made family fixture: its
// suffix forwards in parts of similar lengths, started above the edited layer where the edited state
// feeds the residual stream unchanged (not under Gemma's post-norms), give each rewrite prompt the
// target NLL of a plain whole-prompt forward with delta added at the fact token, and its gradient
// agrees with central differences of its own loss.
import assert from "node:assert/strict";
import { logProbOf } from "../engine/ops.ts";
import { makeBatch, type Model } from "../engine/model.ts";
import { WordLevelTokenizer } from "../engine/tokenizer.ts";
import { planRequest, ValueObjective, type ValueOptions } from "../experiments/editing/values.ts";
import { CASES, loadCase } from "./families_fixtures.ts";
import { EDITING_WORDS } from "./fixtures_tiny_kb.ts";
import { randomArray } from "./util.ts";

/** Mean over the rewrite prompts of the mean target-token NLL, each prompt run whole with delta added at
 *  its fact token's `site` state of `layer`. */
async function wholePromptNll(
  model: Model,
  plan: ReturnType<typeof planRequest>,
  nContexts: number,
  site: ValueOptions["site"],
  delta: Float64Array,
): Promise<number> {
  const gpu = model.gpu, V = model.config.vocabSize, m = plan.target.length;
  const src = gpu.tensor([1, delta.length], Float32Array.from(delta));
  let total = 0;
  for (const inst of plan.instances.slice(0, nContexts)) {
    const batch = makeBatch([inst.ids]);
    const promptLength = inst.ids.length - (m - 1);
    const rows = plan.target.map((_, j) => promptLength - 1 + j);
    const fwd = model.forward(batch, {
      hooks: [{
        layer: plan.layer,
        site,
        patch: { src, entries: [{ dst: inst.fact, src: 0, keep: 1, take: 1 }] },
      }],
      outputRows: rows,
    });
    const lp = await logProbOf(gpu, fwd.logits, gpu.tensor([m], plan.target, "u32"), m, V).read();
    model.releaseForward(fwd);
    total -= lp.reduce((a, b) => a + b, 0) / m / nContexts;
  }
  gpu.release(src);
  return total;
}

for (const name of CASES) {
  Deno.test(`${name}: the v*/z objective's loss equals whole-prompt forwards and its gradient central differences`, async () => {
    const { model } = await loadCase(name);
    const fillers = Array.from({ length: model.config.vocabSize - EDITING_WORDS.length }, (_, i) => `w${i}`);
    const tok = new WordLevelTokenizer([...EDITING_WORDS, ...fillers], { unk: "<unk>", eos: "<eos>" });
    const d = model.config.nEmbd, last = model.config.nLayer - 1;
    // Contexts of different lengths after the subject (and the KL prompt's) give the objective several parts.
    const contexts = ["{}", "Carl lives in Oslo . {}", "{} works in Lima and"];
    // At the last layer delta reaches the scored rows only at the prompt's last token (no attention follows).
    const cells = [[0, "mlp", "subject_last"], [last, "mlp", "last"], [0, "resid", "subject_last"]] as const;
    for (const [layer, site, factToken] of cells) {
      const o: ValueOptions = {
        factToken,
        layer,
        site,
        contexts,
        steps: 1,
        lr: 0,
        weightDecay: 0,
        klFactor: 0,
        clampNormFactor: 4,
      };
      const plan = planRequest(tok, { prompt: "{} lives in", subject: "Anna Berg", target: "Rome Lima" }, o);
      const objective = new ValueObjective(model, [plan], o);
      try {
        await objective.evaluate([new Float64Array(d)]);
        const delta = Float64Array.from(randomArray(d, 5 + layer, 0.5));
        const { losses, grads } = await objective.evaluate([delta], [true]);
        const expected = await wholePromptNll(model, plan, contexts.length, site, delta);
        const where = `${name}, layer ${layer} ${site} at the ${factToken} token`;
        assert.ok(
          Math.abs(losses[0] - expected) < 1e-4 * Math.max(1, expected),
          `${where}: loss ${losses[0]} vs whole prompts ${expected}`,
        );
        // Directional derivative along the gradient itself, by central differences of the loss (float32:
        // a step of 1e-2 of the unit direction keeps the rounding well below the tolerance).
        const g = grads[0]!, norm = Math.hypot(...g), h = 1e-2;
        const at = async (s: number) =>
          (await objective.evaluate([delta.map((v, i) => v + s * h * g[i] / norm)])).losses[0];
        const numeric = (await at(1) - await at(-1)) / (2 * h);
        assert.ok(norm > 1e-6, `${where}: the gradient is not zero`);
        assert.ok(
          Math.abs(numeric - norm) < 2e-2 * norm + 1e-4,
          `${where}: |gradient| ${norm} vs central difference ${numeric}`,
        );
      } finally {
        objective.release();
      }
    }
  });
}
