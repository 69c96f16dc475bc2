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
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer, type Tokenizer } from "../../engine/tokenizer.ts";
import { loadDataset } from "../data/datasets.ts";
import { applyEdit, combineEdits, type Edit, loadEdit, saveEdit } from "../editing/edit.ts";
import { statsHparams } from "../editing/hparams.ts";
import type { FactToken } from "../editing/keys.ts";
import {
  computeEdits,
  describeEdit,
  methodConfig,
  type Overrides,
  parseMethod,
  statsLayers,
  templateStartWords,
} from "../editing/methods.ts";
import {
  caseProbabilities,
  caseScores,
  type EditingCase,
  parseProblem,
  problemRequest,
  PROBLEMS,
} from "../editing/problems.ts";
import { joinPath as join } from "../../engine/io.ts";
import { DEFAULT_STATS_DIR, importStatsFiles, type KeyStats, keyStats } from "../editing/stats.ts";
import {
  formatStandardScores,
  greedyGenerate,
  localityReference,
  standardCaseOf,
  standardScores,
} from "../evaluation/metrics.ts";
import { ProgressBar } from "../output.ts";
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
  --fact-token T        subject_last | subject_first | last: where keys are read and values written
  --v-steps N, --v-lr X, --kl-factor X, --clamp-norm X, --lambda X, --ft-eps X, --ft-steps N, --ft-lr X
                        hyper-parameter overrides
  --tokens N            tokens to generate per completion (default 8)
  --save FILE           write the edit (safetensors)
  --load FILE           apply a saved edit instead of computing one
  --json                print a JSON summary instead of text`;

function numberOption(values: Record<string, unknown>, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const x = Number(v);
  if (!Number.isFinite(x)) throw new Error(`--${name}: expected a number, got "${v}"`);
  return x;
}

function parseFactToken(s: string | undefined): FactToken | undefined {
  if (s === undefined) return undefined;
  if (s !== "subject_last" && s !== "subject_first" && s !== "last") {
    throw new Error(`--fact-token: expected subject_last, subject_first or last, got "${s}"`);
  }
  return s;
}

/** "3", "2,3,4" or "2-4". */
function parseLayers(s: string): number[] {
  const range = /^(\d+)-(\d+)$/.exec(s);
  const layers = range
    ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, i) => Number(range[1]) + i)
    : s.split(",").map((x) => Number(x.trim()));
  if (layers.length === 0 || layers.some((l) => !Number.isInteger(l) || l < 0)) {
    throw new Error(`--layers: expected "3", "2,3,4" or "2-4", got "${s}"`);
  }
  return layers;
}

/** A score for the terminal; caseScores gives NaN for a score the case has no prompts for. */
function formatScore(score: number): string {
  return Number.isNaN(score) ? "n/a" : score.toFixed(3);
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The case to edit: a dataset record (--case) with command-line fields taking precedence. */
async function resolveCase(
  model: Model,
  tok: Tokenizer,
  values: Record<string, unknown>,
  dir: string,
): Promise<EditingCase> {
  let base: Partial<EditingCase> = {};
  if (values.case !== undefined) {
    const path = (values.dataset as string | undefined) ?? `${dir}/counterfact.json`;
    const { cases } = await loadDataset(path);
    const id = String(values.case);
    const c = cases.find((x) => x.id.endsWith(`:${id}`));
    if (!c) throw new Error(`${path}: no record with case id ${id}`);
    if (c.template === null) throw new Error(`${path}: case ${id}: the prompt does not contain the subject`);
    base = {
      prompt: c.template,
      subject: c.subject,
      targetTrue: c.targetTrue ?? undefined,
      targetNew: c.targetNew ?? undefined,
      paraphrases: c.paraphrases,
      neighbors: c.neighborhood.map((p) => p.prompt),
    };
  }
  const subject = (values.subject as string | undefined) ?? base.subject;
  let prompt = (values.prompt as string | undefined) ?? base.prompt;
  if (!subject || !prompt) throw new Error("give --prompt and --subject, or --case N");
  if (!prompt.includes("{}")) {
    const at = prompt.indexOf(subject);
    if (at < 0) {
      throw new Error(
        `--prompt ${JSON.stringify(prompt)} contains neither the subject ${JSON.stringify(subject)} nor "{}"`,
      );
    }
    prompt = prompt.slice(0, at) + "{}" + prompt.slice(at + subject.length);
  }
  let targetTrue = (values["target-true"] as string | undefined) ?? base.targetTrue;
  if (!targetTrue) {
    const { continuations } = await greedyGenerate(model, tok, [prompt.replace("{}", subject)], 1);
    targetTrue = continuations[0].trim();
  }
  const targetNew = (values["target-new"] as string | undefined) ?? base.targetNew;
  if (!targetNew) throw new Error("give --target-new (or --case N)");
  const paraphrases = (values.paraphrase as string[] | undefined) ?? base.paraphrases ?? [];
  const neighbors = (values.neighbor as string[] | undefined) ?? base.neighbors ?? [];
  return { prompt, subject, targetTrue, targetNew, paraphrases, neighbors };
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      method: { type: "string", default: "rome" },
      layer: { type: "string" },
      layers: { type: "string" },
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
      "fact-token": { type: "string" },
      "v-steps": { type: "string" },
      "v-lr": { type: "string" },
      "kl-factor": { type: "string" },
      "clamp-norm": { type: "string" },
      lambda: { type: "string" },
      "ft-eps": { type: "string" },
      "ft-steps": { type: "string" },
      "ft-lr": { type: "string" },
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
  const layerText = values.layers ?? values.layer;
  const overrides: Overrides = {
    layers: layerText === undefined ? undefined : parseLayers(layerText),
    factToken: parseFactToken(values["fact-token"]),
    vNumGradSteps: numberOption(values, "v-steps"),
    vLr: numberOption(values, "v-lr"),
    klFactor: numberOption(values, "kl-factor"),
    clampNormFactor: numberOption(values, "clamp-norm"),
    mom2UpdateWeight: numberOption(values, "lambda"),
    normConstraint: numberOption(values, "ft-eps"),
    numSteps: numberOption(values, "ft-steps"),
    ftLr: numberOption(values, "ft-lr"),
  };
  const mc = methodConfig(model, method, overrides);
  const c = await resolveCase(model, tok, values, dir);
  // The problems that noise the subject use causal tracing's corruption: ROME's rule over the edited
  // subject's embeddings, as `trace --prompt` computes it (recorded in the output).
  const noiseLevel: NoiseLevel | null = problem === "fact-forcing" || problem === "tracing-reversal"
    ? await subjectNoiseLevel(model, tok, [c.subject])
    : null;
  const noise = { seed: 1, scale: noiseLevel?.level ?? 0 };
  const request = await problemRequest(model, tok, c, problem, noise);
  const corpus = values.corpus ?? (await fileExists(`${dir}/corpus.txt`) ? `${dir}/corpus.txt` : null);
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
    const layers = statsLayers(mc);
    let stats = new Map<number, KeyStats>();
    if (layers.length > 0 && values.stats) {
      // Their Cholesky factors are cached by the moment's hash under the statistics cache.
      const factorDir = join(values["stats-dir"] ?? DEFAULT_STATS_DIR, "imported-factors");
      stats = await importStatsFiles(values.stats, model.config.nInner, layers, factorDir);
      say(
        `key statistics of layers ${layers.join(",")}: imported (${
          [...stats.values()].map((s) => s.count).join(", ")
        } keys)`,
      );
    } else if (layers.length > 0) {
      if (!corpus) {
        throw new Error(`${method} needs key statistics: give --corpus FILE (no corpus.txt in ${dir})`);
      }
      const samples = numberOption(values, "samples") ?? statsHparams(model.config).samples;
      const t0 = performance.now();
      let progress: ProgressBar | undefined;
      stats = await keyStats(model, tok, {
        corpus,
        layers,
        samples,
        cacheDir: values["stats-dir"],
        log: (l) => say(l),
        onProgress: (done, total) => {
          if (values.json) return;
          progress ??= new ProgressBar("key statistics", total);
          progress.update(done);
        },
      });
      timings.statsSeconds = (performance.now() - t0) / 1000;
    }
    if (stats.size > 0) {
      // The factorisation (or reading its cached factor) is timed on its own, before the edit.
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

  const probes = [
    { kind: "prompt", text: c.prompt.replace("{}", c.subject) },
    ...c.paraphrases.slice(0, 1).map((text) => ({ kind: "paraphrase", text })),
    ...c.neighbors.slice(0, 1).map((text) => ({ kind: "neighbor", text })),
  ];
  const tokens = Number(values.tokens);
  const before = await greedyGenerate(model, tok, probes.map((p) => p.text), tokens);
  const pre = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  // The standard metrics judge the edit towards the problem's target against the true object (fact
  // erasure and amplification have no second object: only Hase et al.'s scores apply); a noised-subject
  // problem (fact forcing) is not what they were defined for either.
  const standardCase = standardCaseOf(c, request);
  const reference = standardCase ? await localityReference(model, tok, standardCase) : null;
  const applied = await applyEdit(model, edit);
  const after = await greedyGenerate(model, tok, probes.map((p) => p.text), tokens);
  const post = (await caseProbabilities(model, tok, [{ c, request }]))[0];
  const standard = standardCase ? await standardScores(model, tok, standardCase, reference!) : null;
  applied.undo();
  const scores = caseScores(request, pre, post);

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
          before: before.continuations[i],
          after: after.continuations[i],
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
    say(`  before: ...${before.continuations[i]}`);
    say(`  after:  ...${after.continuations[i]}`);
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
