// The web page in headless Chromium (WebGPU on) against the Deno engine: web/headless.ts builds and serves
// the page and drives it like a user (predict, trace, ROME edit, undo and download through its buttons on
// the embedded model, then Hugging Face folders of other families chosen through its folder input and
// predicted on), and the numbers the page computed are compared with the same calls made here in Deno on
// the same inputs.
//
// Adapters: headless Chromium here gets SwiftShader (Vulkan on the CPU; its only WebGPU adapter without a
// GPU), Deno gets Mesa's llvmpipe. Both run the same WGSL in f32 but compile it differently (fused
// multiply-adds, exp/log implementations), so results agree to f32 rounding amplified by the model, not bit
// for bit. Measured here (the test prints it): predict 1e-7, trace 4e-7, the edit's probabilities 3e-7
// (two v* steps), the dropped folders' 3e-7. The tolerance, 1e-5 on probabilities, leaves a 30x margin over that and is still far
// below any effect the page shows (an edit moves p(new) by orders of magnitude).
import * as assert from "node:assert/strict";
import { familyFolder, openHeadless } from "../web/headless.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { type Prediction, predictNext } from "../engine/predict.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { applyEdit, type Edit, loadEdit } from "../experiments/editing/edit.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import {
  computeEdits,
  methodConfig,
  statsLayers,
  templateStartWords,
} from "../experiments/editing/methods.ts";
import { keyStats } from "../experiments/editing/stats.ts";
import { scaledMlpWindow } from "../experiments/localization/layer_selection.ts";
import { objectProbabilities } from "../experiments/evaluation/metrics.ts";
import { type FactTrace, traceFact } from "../experiments/localization/tracing.ts";

const MODEL = "weights/locus-kb";
const TOLERANCE = 1e-5;
/** Small settings so the test stays short on a software adapter (the page's defaults are 10 and 20). */
const SAMPLES = 2, V_STEPS = 4;

/**
 * Hugging Face folders chosen through the page's folder input after the embedded model's steps: the
 * transformers-made fixtures (tests/fixtures/families) of other families, 16-bit files and a sharded
 * index, each with a Llama 2-format tokenizer.json (tests/fixtures/web, which the bundled
 * @huggingface/tokenizers reads; web/headless.ts familyFolder makes the folders) and one of its prompts.
 */
const DROPS = [
  { fixture: "llama_bf16", prompt: "the miller sells bread in" },
  { fixture: "gemma_f16", prompt: "a lantern over the station" },
  { fixture: "qwen2_sharded", prompt: "Quiet rain!" },
  { fixture: "gemma3_text", prompt: "the miller sells bread in" },
];
/** The Python `tokenizers` library's ids of the DROPS' prompts (tests/fixtures/web/make_tokenizer.py). */
const TOKENIZER_IDS: Record<string, number[]> = JSON.parse(
  await Deno.readTextFile("tests/fixtures/web/tokenizer_expected.json"),
);
/** How many next tokens the page lists for a dropped model (its largest top-k). */
const DROP_TOP = 50;

interface PagePrediction {
  prompt: string;
  ids: number[];
  top: Prediction[];
}

interface PageResults {
  adapter: string;
  model: string;
  predict: PagePrediction;
  trace: FactTrace;
  edit: {
    method: string;
    layers: number[];
    request: { prompt: string; subject: string; target: string };
    targetTrue: string;
    statsSource: string[];
    probes: { label: string; text: string; pTrue: [number, number]; pNew: [number, number] }[];
  };
  undo: { identical: boolean; top: Prediction[] };
}

/** Largest |page - Deno| per step ("predict", "trace", "edit"), printed with the adapters. */
const largest: Record<string, number> = {};

function close(got: number, want: number, what: string): void {
  const step = what.split(/[: ]/)[0];
  largest[step] = Math.max(largest[step] ?? 0, Math.abs(got - want));
  assert.ok(Math.abs(got - want) <= TOLERANCE, `${what}: page ${got}, Deno ${want} (tolerance ${TOLERANCE})`);
}

Deno.test({
  name:
    "web page in headless Chromium: predict, trace, ROME edit, undo and dropped HF folders match the Deno engine",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const folders = await Deno.makeTempDir();
    const dropDirs = await Promise.all(DROPS.map((d) => familyFolder(folders, d.fixture)));
    const timings: string[] = [];
    const timed = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
      const started = performance.now();
      const result = await work();
      timings.push(`${what} ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return result;
    };
    const tab = await timed("build, launch and load", openHeadless);
    let page: PageResults;
    let downloaded: Edit;
    const dropped: { model: string; predict: PagePrediction }[] = [];
    try {
      await tab.fill({ samples: SAMPLES, "v-steps": V_STEPS });
      for (const button of ["predict", "trace", "edit", "undo"]) await timed(button, () => tab.press(button));
      page = await tab.results<PageResults>();
      downloaded = await loadEdit(await tab.download("download", "rome-edit.safetensors"));
      for (const [i, d] of DROPS.entries()) {
        await timed(`${d.fixture} load + predict`, async () => {
          await tab.chooseFolder(dropDirs[i]);
          await tab.fill({ prompt: d.prompt, "top-k": DROP_TOP });
          await tab.press("predict");
        });
        dropped.push(await tab.results<{ model: string; predict: PagePrediction }>());
      }
    } finally {
      await tab.close();
    }
    assert.deepEqual(tab.errors, []);
    assert.equal(page.model, MODEL);

    // The same calls in Deno, on the page's own inputs.
    const model = await Model.load(await getGpu(), MODEL);
    const tok = await loadTokenizer(MODEL);
    const top = await predictNext(model, tok.encode(page.predict.prompt), page.predict.top.length, tok);
    assert.deepEqual(page.predict.top.map((p) => p.id), top.map((p) => p.id), "predict: the same top tokens");
    top.forEach((p, i) => close(page.predict.top[i].prob, p.prob, `predict: p(${p.token})`));

    const t = page.trace;
    const w = scaledMlpWindow(model.nLayer);
    const trace = await traceFact(model, tok, { prompt: t.prompt, subject: t.subject, target: t.target }, {
      window: { resid: 1, mlp: w, attn: w },
      samples: SAMPLES,
    });
    assert.deepEqual(t.ids, trace.ids);
    assert.deepEqual(t.grids.map((g) => g.kind), ["resid", "mlp", "attn"]);
    close(t.clean, trace.clean, "trace: clean p");
    close(t.corrupted!, trace.corrupted!, "trace: corrupted p");
    for (const [k, g] of t.grids.entries()) {
      g.prob.forEach((row, i) =>
        row.forEach((p, l) => close(p, trace.grids[k].prob[i][l], `trace ${g.kind} [${i}][${l}]`))
      );
    }

    // The page read the shipped statistics (part of the model folder), and so does Deno here.
    assert.ok(
      page.edit.statsSource.some((l) => /shipped with the model/.test(l)),
      page.edit.statsSource.join("\n"),
    );
    const mc = methodConfig(model, "rome", { layers: page.edit.layers, vNumGradSteps: V_STEPS });
    const lines: string[] = [];
    const stats = await keyStats(model, tok, {
      corpus: `${MODEL}/corpus.txt`,
      layers: statsLayers(mc),
      samples: statsHparams(model.config).samples,
      cacheDir: null,
      log: (l) => lines.push(l),
    });
    assert.match(lines.join("\n"), /shipped with the model/);
    const { request, targetTrue } = page.edit;
    const [edit] = await computeEdits(model, tok, mc, [request], stats, {
      startWords: await templateStartWords(tok, `${MODEL}/corpus.txt`),
    });
    const texts = page.edit.probes.map((p) => p.text);
    const probs = () => objectProbabilities(model, tok, texts, targetTrue, request.target);
    const before = await probs();
    const applied = await applyEdit(model, edit);
    const after = await probs();
    applied.undo();
    page.edit.probes.forEach((p, i) => {
      close(p.pTrue[0], before[i][0], `edit: ${p.label} p(true) before`);
      close(p.pNew[0], before[i][1], `edit: ${p.label} p(new) before`);
      close(p.pTrue[1], after[i][0], `edit: ${p.label} p(true) after`);
      close(p.pNew[1], after[i][1], `edit: ${p.label} p(new) after`);
    });
    // The downloaded file is the page's edit: it loads with loadEdit and matches Deno's own edit.
    assert.equal(downloaded.method, "rome");
    assert.deepEqual(downloaded.requests, [request]);
    assert.equal(downloaded.deltas.length, edit.deltas.length);
    downloaded.deltas.forEach((d, i) => {
      const want = edit.deltas[i];
      assert.ok(d.kind === "low-rank" && want.kind === "low-rank" && d.param === want.param);
      // The factors are not probabilities: compared relative to their largest entry.
      for (const side of ["left", "right"] as const) {
        const scale = Math.max(...want[side].map(Math.abs));
        want[side].forEach((v, j) =>
          assert.ok(
            Math.abs(d[side][j] - v) <= TOLERANCE * scale,
            `download: delta ${i} ${side}[${j}]: page ${d[side][j]}, Deno ${v}`,
          )
        );
      }
    });
    // The edit did something (the fact's new object gained), and undo restored the page's model exactly.
    assert.ok(
      page.edit.probes[0].pNew[1] > 10 * page.edit.probes[0].pNew[0],
      "ROME raised p(new) on the prompt",
    );
    assert.equal(page.undo.identical, true, "undo in the page restores the answers bit for bit");

    // Each dropped folder: the page named it, its tokenizer gave the Python library's ids, and its
    // next-token distribution is Deno's on the same folder.
    for (const [i, d] of DROPS.entries()) {
      const got = dropped[i];
      assert.equal(got.model, d.fixture, `the page loaded the chosen folder ${d.fixture}`);
      assert.equal(got.predict.prompt, d.prompt);
      assert.deepEqual(got.predict.ids, TOKENIZER_IDS[d.prompt], `${d.fixture}: the page's token ids`);
      const m = await Model.load(model.gpu, dropDirs[i]);
      const ids = (await loadTokenizer(dropDirs[i])).encode(d.prompt);
      assert.deepEqual(ids, TOKENIZER_IDS[d.prompt], `${d.fixture}: Deno's token ids`);
      const want = await predictNext(m, ids, DROP_TOP);
      for (const t of m.params.values()) t.destroy();
      assert.equal(got.predict.top.length, DROP_TOP);
      assert.deepEqual(
        got.predict.top.map((p) => p.id),
        want.map((p) => p.id),
        `${d.fixture}: the same top ids`,
      );
      want.forEach((p, j) => close(got.predict.top[j].prob, p.prob, `dropped ${d.fixture}: p(${p.id})`));
    }
    await Deno.remove(folders, { recursive: true });
    console.log(
      `page on ${page.adapter}, Deno on ${model.gpu.describe()}; largest |page - Deno|: ` +
        Object.entries(largest).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(", ") +
        `; page steps: ${timings.join(", ")}`,
    );
  },
});
