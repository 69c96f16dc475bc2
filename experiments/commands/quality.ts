// ./locus task quality: edit quality on a model with a CounterFact file (the embedded model by default):
// Hase et al.'s normalised rewrite / paraphrase / neighborhood scores and CounterFact's ES / PS / NS,
// averaged over fixed cases with their standard errors (the measuring: experiments/editing/edit_quality.ts).
//
//   ./locus task quality [--model DIR] [--cases 100] [--sweep-cases 20] [--first K] [--methods rome,memit]
//   ./locus task quality --methods rome --layers 3 --sweep-cases 0 --v-lr 0.5   (one setting, quickly)
//
// Cases: the first --cases known facts of DIR/counterfact.json, one per subject (edit_quality.ts
// knownCases). Printed, with --json FILE also written (every row with its per-case scores):
//   - ROME at every layer (the per-layer averages; --sweep-cases cases at layers other than the
//     default, all cases at the default layer), each fact edited alone on the unedited model;
//   - the other methods at their default layers: R-ROME and FT-L one fact at a time, MEMIT and EMMET
//     all cases as ONE batch edit;
//   - the quality bar (--check: exit 1 if it is not met).
import { writeAtomic } from "../../engine/files.ts";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import { subjectNoiseLevel } from "../localization/tracing.ts";
import { positiveInt } from "../output.ts";
import { runMain } from "../../engine/main.ts";
import { statsHparams } from "../editing/hparams.ts";
import {
  type EditMode,
  editMode,
  formatMean,
  knownCases,
  meanScores,
  measureMethod,
  qualityBar,
  type QualityCase,
  type QualityRow,
  scoreSem,
  standardMean,
  trueObjectProbabilities,
} from "../editing/edit_quality.ts";
import { STANDARD_METRICS, type StandardScores } from "../evaluation/metrics.ts";
import {
  methodConfig,
  type MethodName,
  parseMethod,
  statsLayers,
  templateStartWords,
} from "../editing/methods.ts";
import { OVERRIDE_OPTIONS, OVERRIDE_USAGE, parseOverrides } from "../editing/override_options.ts";
import {
  caseProbabilities,
  type CaseScores,
  parseProblem,
  problemRequest,
  PROBLEMS,
} from "../editing/problems.ts";
import { keyStats } from "../editing/stats.ts";

const USAGE = `usage: ./locus task quality [options]
  --model DIR           model folder with counterfact.json and corpus.txt (default: the embedded model,
                        ${DEFAULT_MODEL_DIR})
  --cases N             known facts to edit, one per subject (default 100)
  --sweep-cases N       cases per layer of ROME's per-layer sweep (default 20; 0: only its default layer)
  --first K             skip the first K known facts, to measure in parts (default 0)
  --problem NAME        ${PROBLEMS.join(" | ")} (default error-injection)
  --methods LIST        comma-separated, of rome, r-rome, memit, emmet, ft (default all five)
  --stats-dir DIR       key statistics cache (default runs/editing-stats)
  --json FILE           write every row with its per-case scores
  --check               exit 1 if the quality bar is not met
  --layers L            "3", "2,3,4" or "2-4": replaces every method's default layers
${OVERRIDE_USAGE}`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      cases: { type: "string", default: "100" },
      "sweep-cases": { type: "string", default: "20" },
      first: { type: "string", default: "0" },
      problem: { type: "string", default: "error-injection" },
      methods: { type: "string", default: "rome,r-rome,memit,emmet,ft" },
      "stats-dir": { type: "string" },
      json: { type: "string" },
      check: { type: "boolean", default: false },
      ...OVERRIDE_OPTIONS,
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const overrides = parseOverrides(values);
  const dir = await resolveModelDir(values.model!);
  const nCases = positiveInt("cases", values.cases, 100);
  const sweepCases = values["sweep-cases"] === "0"
    ? 0
    : positiveInt("sweep-cases", values["sweep-cases"], 20);
  const problem = parseProblem(values.problem!);
  const methods = values.methods!.split(",").map((m) => parseMethod(m.trim()));
  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const corpus = `${dir}/corpus.txt`;
  const startWords = await templateStartWords(tok, corpus);
  console.log(`model ${dir}: ${model.config.nLayer} layers, d=${model.config.nEmbd}; ${gpu.describe()}`);

  const { candidates, known, distinct } = await knownCases(model, tok, `${dir}/counterfact.json`);
  // --first K: cases K.. of that list, so that a long measurement can run in parts (each part's --json
  // holds its per-case scores; the parts' union is the measurement of --first 0 with all their cases).
  const first = values.first === "0" ? 0 : positiveInt("first", values.first, 0);
  const cases = distinct.slice(first, first + nCases);
  console.log(
    `${known.length} of ${candidates.length} CounterFact facts are known (greedy first token), ${distinct.length} ` +
      `of distinct subjects; using ${cases.length} from number ${first}`,
  );
  if (cases.length === 0) throw new Error("no known facts to edit");

  // Tracing's noise (fact forcing, tracing reversal): ROME's rule over the known facts' subjects.
  const noise = { seed: 1, scale: (await subjectNoiseLevel(model, tok, known.map((c) => c.subject))).level };
  const pairs: QualityCase[] = [];
  for (const c of cases) pairs.push({ c, request: await problemRequest(model, tok, c, problem, noise) });
  const pre = await caseProbabilities(model, tok, pairs);
  const known0 = await trueObjectProbabilities(model, tok, cases);
  const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const paraphraseTrue = known0.flatMap((k) => k.paraphrase);
  console.log(
    `unedited p(true object): prompt ${meanOf(known0.map((k) => k.rewrite)).toFixed(3)}, paraphrases ${
      paraphraseTrue.length ? meanOf(paraphraseTrue).toFixed(3) : "-"
    } (mean over the cases)`,
  );
  const allLayers = Array.from({ length: model.nLayer }, (_, l) => l);
  // Statistics of every layer for ROME's per-layer sweep, else only of the layers the methods read.
  const needed = sweepCases > 0 && methods.includes("rome")
    ? allLayers
    : [...new Set(methods.flatMap((m) => statsLayers(methodConfig(model, m, overrides))))];
  const stats = await keyStats(model, tok, {
    corpus,
    layers: needed,
    samples: statsHparams(model.config).samples,
    cacheDir: values["stats-dir"],
    log: (l) => console.log(l),
  });

  const rows: QualityRow[] = [];
  /** One line of means ± standard errors over the cases' scores. */
  const print = (
    label: string,
    layers: number[],
    scores: CaseScores[],
    standard: (StandardScores | null)[],
    seconds: number,
  ) => {
    const m = meanScores(scores);
    const withSe = (k: keyof CaseScores) => {
      const se = scoreSem(scores, k);
      return `${formatMean(m[k])}${Number.isNaN(se) ? "" : ` ± ${se.toFixed(3)}`}`;
    };
    console.log(
      `${label.padEnd(26)} layers ${layers.join(",").padEnd(6)} n=${String(scores.length).padEnd(4)} ` +
        `rewrite ${withSe("rewrite")}  paraphrase ${withSe("paraphrase")}  neighborhood ${
          withSe("neighborhood")
        }  overall ${formatMean(m.overall)}  (${seconds.toFixed(0)} s)`,
    );
    const counterfact = (["efficacySuccess", "paraphraseSuccess", "neighborhoodSuccess"] as const).map(
      (k) => {
        const { mean, se } = standardMean(standard, k);
        const name = STANDARD_METRICS.find((sm) => sm.key === k)!.short;
        return `${name} ${formatMean(mean)}${Number.isNaN(se) ? "" : ` ± ${se.toFixed(3)}`}`;
      },
    );
    if (standard.some((x) => x)) console.log(`${"".padEnd(48)}CounterFact ${counterfact.join("  ")}`);
  };
  /** Measures `method` (at `layers`, else its default layers) over the first n cases. */
  const run = async (
    label: string,
    method: MethodName,
    layers: number[] | undefined,
    n: number,
    mode: EditMode,
  ) => {
    const row = await measureMethod(model, tok, {
      label,
      config: methodConfig(model, method, { ...overrides, ...(layers ? { layers } : {}) }),
      cases: pairs.slice(0, n),
      pre: pre.slice(0, n),
      mode,
      stats,
      startWords,
    });
    rows.push(row);
    return row;
  };

  const defaultRomeLayer = methodConfig(model, "rome", overrides).hparams.layer;
  let romeDefault: QualityRow | undefined;
  if (methods.includes("rome")) {
    const nSweep = Math.min(sweepCases, cases.length);
    console.log(
      `\nROME, ${problem}, per layer, mean over the first ${nSweep} cases (each fact edited alone):`,
    );
    for (const l of nSweep > 0 ? allLayers : [defaultRomeLayer]) {
      const isDefault = l === defaultRomeLayer;
      const row = await run(
        `rome layer ${l}${isDefault ? " (default)" : ""}`,
        "rome",
        [l],
        isDefault ? cases.length : nSweep,
        "each",
      );
      if (nSweep > 0) {
        print(
          row.label,
          row.layers,
          row.scores.slice(0, nSweep),
          row.standard.slice(0, nSweep),
          row.seconds * nSweep / row.cases,
        );
      }
      if (isDefault) romeDefault = row;
    }
    if (romeDefault) {
      print(
        `rome layer ${defaultRomeLayer}, all cases`,
        romeDefault.layers,
        romeDefault.scores,
        romeDefault.standard,
        romeDefault.seconds,
      );
    }
  }
  console.log(`\nOther methods at their default layers (${problem}), all ${cases.length} cases:`);
  let memitRow: QualityRow | undefined;
  for (const method of methods.filter((m) => m !== "rome")) {
    const mode = editMode(method);
    const row = await run(
      `${method} (${mode === "batch" ? "one batch" : "one at a time"})`,
      method,
      undefined,
      cases.length,
      mode,
    );
    print(row.label, row.layers, row.scores, row.standard, row.seconds);
    if (method === "memit") memitRow = row;
  }

  console.log("\nQuality bar:");
  const checks = qualityBar(romeDefault, defaultRomeLayer, memitRow);
  for (const [text, ok] of checks) console.log(`  ${ok ? "PASS" : "FAIL"}  ${text}`);
  if (values.json) {
    await writeAtomic(
      values.json,
      JSON.stringify({ model: dir, problem, cases: cases.length, rows, checks }, null, 1),
    );
    console.log(`wrote ${values.json}`);
  }
  return values.check && checks.some(([, ok]) => !ok) ? 1 : 0;
}

if (import.meta.main) await runMain("quality", main);
