// ./locus task edit: edit one fact of a GPT-2 model and show what changed.
//
//   ./locus task edit --method rome --prompt "Vela Dornik was born in" --subject "Vela Dornik" --target-new Lisbon
//   ./locus task edit --method memit --case 12                       (a record of the model's counterfact.json)
//   ./locus task edit --model gpt2-xl/ --corpus wiki.txt --method rome --layer 17 --prompt ... --subject ... --target-new ...
//   ./locus task edit --model openai-community/gpt2-xl --layer 17 --stats transformer.h.17.mlp.c_proj_float32_mom2_100000.npz ...
//
// Prints the greedy completions of the prompt, a paraphrase and a neighbor before and after the edit,
// the probabilities of the problem's target, Hase et al.'s rewrite / paraphrase / neighborhood
// scores, and next to them the field's standard metrics (metrics.ts STANDARD_METRICS: CounterFact's
// ES/PS/NS and EM/PM/NM, EasyEdit's reliability/generalization/locality/portability) for the case's
// prompts, paraphrases and neighbours (new object = the problem's target). The edit can be saved (--save FILE) and re-applied later (--load FILE).
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { exists } from "../../engine/files.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import { combineEdits, type Edit, loadEdit, saveEdit } from "../editing/edit.ts";
import {
  computeEdits,
  describeEdit,
  methodConfig,
  parseMethod,
  statsLayers,
  templateStartWords,
} from "../editing/methods.ts";
import { parseProblem, problemRequest, PROBLEMS } from "../editing/problems.ts";
import { evaluateEdit, methodKeyStats, resolveCase } from "../editing/single_edit.ts";
import { formatStandardScores } from "../evaluation/metrics.ts";
import { numberOption, ProgressBar } from "../output.ts";
import { OVERRIDE_OPTIONS, OVERRIDE_USAGE, parseOverrides } from "../editing/override_options.ts";
import { type NoiseLevel, subjectNoiseLevel } from "../localization/tracing.ts";

const USAGE = `usage: ./locus task edit [options]
  --model DIR           GPT-2 folder (default: the embedded model, ${DEFAULT_MODEL_DIR})
  --method NAME         rome | r-rome | memit | emmet | ft (default rome)
  --layer N, --layers A,B or A-B   layer(s) to edit (default: the model family's published/documented layers)
  --problem NAME        ${PROBLEMS.join(" | ")} (default error-injection)
  --case N              take prompt, subject, objects, paraphrase and neighbor from CounterFact record
                        case_id N of --dataset (default: DIR/counterfact.json)
  --dataset FILE        a CounterFact-style dataset file
  --prompt TEXT         the prompt, containing the subject (or "{}" in its place)
  --subject TEXT        the subject
  --target-new TEXT     the new object (error injection)
  --target-true TEXT    the true object (default: the model's greedy next token)
  --paraphrase TEXT     a paraphrase of the prompt (repeatable)
  --neighbor TEXT       a prompt about another subject that should not change (repeatable)
  --corpus FILE         text for the key statistics (default: DIR/corpus.txt; GPT-2 needs one)
  --corpus wikitext-103 WikiText-103 from the hub cache (./locus task fetch-data wikitext-103)
  --samples N           keys (tokens) for the key statistics (default: the whole corpus, up to 1,000,000,
                        for small models; 100,000 for GPT-2)
  --stats-dir DIR       key statistics cache (default runs/editing-stats)
  --stats FILE          key statistics released by ROME/MEMIT (.npz, e.g. transformer.h.17.mlp.c_proj_
                        float32_mom2_100000.npz), one per edited layer (repeatable; L=FILE names the layer)
${OVERRIDE_USAGE}
  --tokens N            tokens to generate per completion (default 8)
  --save FILE           write the edit (safetensors)
  --load FILE           apply a saved edit instead of computing one
  --json                print a JSON summary instead of text`;

/** A score for the terminal; caseScores gives NaN for a score the case has no prompts for. */
function formatScore(score: number): string {
  return Number.isNaN(score) ? "n/a" : score.toFixed(3);
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      method: { type: "string", default: "rome" },
      layer: { type: "string" },
      problem: { type: "string", default: "error-injection" },
      case: { type: "string" },
      dataset: { type: "string" },
      prompt: { type: "string" },
      subject: { type: "string" },
      "target-new": { type: "string" },
      "target-true": { type: "string" },
      paraphrase: { type: "string", multiple: true },
      neighbor: { type: "string", multiple: true },
      corpus: { type: "string" },
      samples: { type: "string" },
      "stats-dir": { type: "string" },
      stats: { type: "string", multiple: true },
      ...OVERRIDE_OPTIONS,
      tokens: { type: "string", default: "8" },
      save: { type: "string" },
      load: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const say = values.json ? (_: string) => {} : (line: string) => console.log(line);
  const dir = await resolveModelDir(values.model!);
  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const method = parseMethod(values.method!);
  const problem = parseProblem(values.problem!);
  const overrides = parseOverrides({ ...values, layers: values.layers ?? values.layer });
  const mc = methodConfig(model, method, overrides);
  const c = await resolveCase(model, tok, {
    caseId: values.case,
    dataset: values.dataset ?? `${dir}/counterfact.json`,
    prompt: values.prompt,
    subject: values.subject,
    targetTrue: values["target-true"],
    targetNew: values["target-new"],
    paraphrases: values.paraphrase,
    neighbors: values.neighbor,
  });
  // The problems that noise the subject use causal tracing's corruption: ROME's rule over the edited
  // subject's embeddings, as `trace --prompt` computes it (recorded in the output).
  const noiseLevel: NoiseLevel | null = problem === "fact-forcing" || problem === "tracing-reversal"
    ? await subjectNoiseLevel(model, tok, [c.subject])
    : null;
  const noise = { seed: 1, scale: noiseLevel?.level ?? 0 };
  const request = await problemRequest(model, tok, c, problem, noise);
  const corpus = values.corpus ?? (await exists(`${dir}/corpus.txt`) ? `${dir}/corpus.txt` : null);
  say(`model ${dir} (${model.config.nLayer} layers, d=${model.config.nEmbd}); ${gpu.describe()}`);
  say(
    `${method} ${problem}: "${request.prompt.replace("{}", c.subject)}" -> ${
      request.direction === "decrease" ? "not " : ""
    }"${request.target}"` +
      (noiseLevel ? ` (subject noised: ${noiseLevel.rule} = ${noiseLevel.level.toFixed(4)})` : ""),
  );
  say(`${method}: ${describeEdit(mc)}`);

  let edit: Edit;
  const timings: Record<string, number> = {};
  if (values.load) {
    edit = await loadEdit(values.load);
    say(`loaded ${values.load}: ${edit.method}, ${edit.deltas.length} weight delta(s)`);
  } else {
    if (!values.stats && !corpus && statsLayers(mc).length > 0) {
      throw new Error(`${method} needs key statistics: give --corpus FILE (no corpus.txt in ${dir})`);
    }
    const t = performance.now();
    let progress: ProgressBar | undefined;
    const stats = await methodKeyStats(model, tok, mc, {
      files: values.stats,
      corpus,
      samples: numberOption("samples", values["samples"]),
      cacheDir: values["stats-dir"],
      log: say,
      onProgress: (done, total) => {
        if (values.json) return;
        progress ??= new ProgressBar("key statistics", total);
        progress.update(done);
      },
    });
    if (!values.stats && stats.size > 0) timings.statsSeconds = (performance.now() - t) / 1000;
    if (stats.size > 0) {
      // The factorisation of C (or reading its kept factor) is timed on its own, before the edit.
      const t1 = performance.now();
      for (const s of stats.values()) await s.prepareSolve(say);
      timings.factorSeconds = (performance.now() - t1) / 1000;
    }
    const t0 = performance.now();
    const edits = await computeEdits(model, tok, mc, [request], stats, {
      startWords: await templateStartWords(tok, corpus),
      log: say,
    });
    timings.editSeconds = (performance.now() - t0) / 1000;
    edit = edits.length === 1 ? edits[0] : combineEdits(edits);
    say(
      `edit computed in ${timings.editSeconds.toFixed(2)} s (layers ${
        JSON.stringify(edit.deltas.map((d) => d.param))
      })`,
    );
  }

  const outcome = await evaluateEdit(model, tok, c, request, edit, Number(values.tokens));
  const { probes, before, after, scores, standard } = outcome;
  const { pre, post } = outcome.probabilities;

  if (values.save) {
    await saveEdit(values.save, edit);
    say(`saved ${values.save}`);
  }
  if (values.json) {
    console.log(JSON.stringify(
      {
        method: edit.method,
        problem,
        request,
        noise: noiseLevel,
        completions: probes.map((p, i) => ({
          ...p,
          before: before[i],
          after: after[i],
        })),
        probabilities: { pre, post },
        scores, // JSON.stringify writes the NaN of a score without prompts as null
        standardMetrics: standard,
        timings,
      },
      null,
      1,
    ));
    return 0;
  }
  for (const [i, p] of probes.entries()) {
    say(`\n${p.kind}: ${p.text}`);
    say(`  before: ...${before[i]}`);
    say(`  after:  ...${after[i]}`);
  }
  say(
    `\np(${request.target}) after the prompt: ${pre.rewrite.toFixed(4)} -> ${post.rewrite.toFixed(4)}` +
      (request.noise ? " (noised subject)" : ""),
  );
  say(
    `scores: rewrite ${formatScore(scores.rewrite)}  paraphrase ${
      formatScore(scores.paraphrase)
    }  neighborhood ${formatScore(scores.neighborhood)}  overall ${formatScore(scores.overall)}` +
      `  (Hase et al.; ${c.paraphrases.length} paraphrase(s), ${c.neighbors.length} neighbour(s) averaged)`,
  );
  say(
    standard
      ? `standard metrics: ${formatStandardScores(standard)}  (definitions: docs/metrics.md)`
      : `standard metrics: n/a for ${problem} (they compare a new object against the true one)`,
  );
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`edit: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
