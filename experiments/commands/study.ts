// ./locus task study: the whole localization-vs-editing study on the embedded model, sized to finish in
// under 30 minutes on a CPU-only machine (WebGPU on the software adapter, 2 cores), resumable.
//
//   1. facts: a seeded sample of the CounterFact facts the model knows (--facts edited, --trace-facts
//      traced in all), the first --proxy-fraction of the edited ones forming the proxy set;
//   2. localization: causal tracing (and representation zeroing) of every traced fact;
//   3. layer selection on the proxy facts: causal tracing (CMA), integrated gradients, LGA;
//   4. edits: ROME at every layer for every edited fact x Hase et al.'s five editing problems, then the
//      --extra-methods (MEMIT, FT-L) on the --extra-problems as time allows;
//   5. analyses and the HTML report (experiments/study/analysis.ts, experiments/study/report.ts), a CSV of every
//      result, and the headline in the terminal: does the edit layer explain far more of the variance
//      in edit success than the tracing effect (Hase et al.'s finding)?
//
// Every result goes to OUT/results.db as it is produced (experiments/study/sweep.ts): a study stopped by
// its time budget or killed resumes where it stopped when run again with the same options.
//
//   ./locus task study [--model DIR] [--out runs/study] [--facts 8] [--trace-facts 40] [--minutes 26]
import { writeAtomic } from "../../engine/files.ts";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import {
  concentratedFacts,
  formatP,
  goldenVsSampleWise,
  headline,
  loadSweep,
  r2Table,
  selectionScores,
  STRATEGY_NAMES,
} from "../study/analysis.ts";
import { METHODS, parseMethod } from "../editing/methods.ts";
import { parseProblem, PROBLEMS } from "../editing/problems.ts";
import { formatSeconds, positiveInt, positiveNumber } from "../output.ts";
import { renderReport } from "../study/report.ts";
import { ResultStore, writeCsv } from "../study/store.ts";
import {
  defaultSettings,
  LOCALIZATIONS,
  parseNames,
  runMeta,
  runSweep,
  sampleFacts,
  scoreSummary,
  SELECTORS,
  skippedReport,
  type SweepPlan,
  type SweepSummary,
} from "../study/sweep.ts";
import { runMain } from "../../engine/main.ts";

const USAGE = `usage: ./locus task study [options]
  --model DIR          GPT-2 folder with counterfact.json and corpus.txt (default: the embedded model)
  --out DIR            results.db, results.csv and report.html go here (default runs/study)
  --facts N            facts edited at every layer (default 8)
  --trace-facts N      facts traced in all, the edited ones included (default 40)
  --proxy-fraction X   share of the edited facts used for layer selection (default 0.25)
  --methods M          methods run on every problem (default rome; any of ${METHODS.join(",")})
  --problems P         editing problems (default all: ${PROBLEMS.join(",")})
  --extra-methods M    methods run afterwards on --extra-problems as time allows (default memit,ft; none)
  --extra-problems P   (default error-injection,fact-forcing)
  --localizations L    ${LOCALIZATIONS.join(",")} (default both)
  --minutes M          time budget: no new work starts after M minutes (default 26); run again to continue
  --seed N             fact sample and noise seed (default 0)
  --v-steps N          ROME/MEMIT optimisation steps (default: the method's, 20)
  --stats-dir DIR      key statistics cache (default runs/editing-stats)`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      out: { type: "string", default: "runs/study" },
      facts: { type: "string" },
      "trace-facts": { type: "string" },
      "proxy-fraction": { type: "string" },
      methods: { type: "string", default: "rome" },
      problems: { type: "string", default: "all" },
      "extra-methods": { type: "string", default: "memit,ft" },
      "extra-problems": { type: "string", default: "error-injection,fact-forcing" },
      localizations: { type: "string", default: "all" },
      minutes: { type: "string" },
      seed: { type: "string" },
      "v-steps": { type: "string" },
      "stats-dir": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const started = performance.now();
  const deadline = started + positiveNumber("minutes", values.minutes, 26) * 60_000;
  const dir = await resolveModelDir(values.model!), out = values.out!;
  const datasetPath = `${dir}/counterfact.json`, corpus = `${dir}/corpus.txt`;
  // Weights in one file or sharded (real Llama/Gemma checkpoints are: model.safetensors.index.json).
  const index = `${dir}/model.safetensors.index.json`;
  const weights = await Deno.stat(index).then(() => index, () => `${dir}/model.safetensors`);
  for (const path of [weights, datasetPath, corpus]) {
    try {
      await Deno.stat(path);
    } catch {
      throw new Error(
        `${path} is missing${dir === DEFAULT_MODEL_DIR ? " (train it: ./locus task train)" : ""}`,
      );
    }
  }
  const editFacts = positiveInt("facts", values.facts, 8);
  const traceFacts = Math.max(editFacts, positiveInt("trace-facts", values["trace-facts"], 40));
  const proxyFraction = positiveNumber("proxy-fraction", values["proxy-fraction"], 0.25);
  if (proxyFraction >= 1) throw new Error(`--proxy-fraction must be below 1, got ${proxyFraction}`);
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`--seed: expected an integer >= 0, got "${values.seed}"`);
  }
  const vSteps = values["v-steps"] === undefined ? undefined : positiveInt("v-steps", values["v-steps"], 20);

  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  console.log(`Locus study: does localization (causal tracing) tell us where to edit?`);
  console.log(`model ${dir} (${L} layers, d=${model.config.nEmbd}); ${gpu.describe()}`);
  const sample = await sampleFacts(model, tok, datasetPath, {
    edit: editFacts,
    traceOnly: traceFacts - editFacts,
    proxyFraction,
    seed,
  });
  const edited = sample.facts.filter((f) => f.split !== "trace-only");
  console.log(
    `${datasetPath}: the model knows ${sample.known} of ${sample.candidates} facts; ${edited.length} edited ` +
      `(${edited.filter((f) => f.split === "proxy").length} proxy), ${sample.facts.length} traced`,
  );
  for (const line of skippedReport(sample)) console.log(line);

  const settings = defaultSettings(L, seed);
  settings.batchSize = 4;
  settings.overrides = { vNumGradSteps: vSteps };
  const base = {
    name: "study",
    facts: sample.facts,
    layers: Array.from({ length: L }, (_, l) => l),
    settings,
    noiseSubjects: sample.knownSubjects,
    skipped: sample.skipped,
  };
  const plans: { title: string; plan: SweepPlan }[] = [{
    title: "localization + editing",
    plan: {
      ...base,
      methods: parseNames("methods", values.methods!, METHODS).map(parseMethod),
      problems: parseNames("problems", values.problems!, PROBLEMS).map(parseProblem),
      localizations: parseNames("localizations", values.localizations!, LOCALIZATIONS),
      selectors: [...SELECTORS],
    },
  }];
  const extraMethods = parseNames("extra-methods", values["extra-methods"]!, METHODS).map(parseMethod);
  if (extraMethods.length > 0) {
    plans.push({
      title: "more editing methods",
      plan: {
        ...base,
        methods: extraMethods,
        problems: parseNames("extra-problems", values["extra-problems"]!, PROBLEMS).map(parseProblem),
        localizations: [],
        selectors: [],
      },
    });
  }

  await Deno.mkdir(out, { recursive: true });
  const storePath = `${out}/results.db`;
  const store = ResultStore.open(storePath);
  const summaries: SweepSummary[] = [];
  try {
    const meta = await runMeta(model, dir, datasetPath);
    for (const [i, { title, plan }] of plans.entries()) {
      const phase = `[${i + 1}/${plans.length} ${title}]`;
      console.log(
        `\n${phase} ${
          plan.methods.join(", ")
        } x ${plan.problems.length} problems x ${plan.layers.length} layers` +
          (plan.localizations.length ? ` + ${plan.localizations.join(" and ")} + layer selection` : ""),
      );
      summaries.push(
        await runSweep(
          {
            model,
            tok,
            store,
            meta,
            corpus,
            statsDir: values["stats-dir"],
            log: (line) => console.log(`${phase} ${line}`),
            progress: { label: phase },
          },
          plan,
          { deadline },
        ),
      );
    }
    const stopped = summaries.some((s) => s.stopped);
    const written = summaries.reduce((s, x) => s + x.written, 0);
    const timing = `${written} results computed in ${formatSeconds((performance.now() - started) / 1000)}` +
      (stopped ? "; the time budget ran out: run the same command again to continue the study." : ".");
    if (store.count({ sweep: "study" }) === 0) {
      console.log(`\nNo results yet, so no report. ${timing}`);
      return 0;
    }
    const csvCount = await writeCsv(store, `${out}/results.csv`, { sweep: "study" });
    const data = loadSweep(store.results({ sweep: "study" }), "study");
    await writeAtomic(`${out}/report.html`, renderReport(data, { title: `Locus study on ${dir}` }));

    console.log(
      `\n=== Findings (${data.edits.length} edits, ${data.traces.length} localization records) ===`,
    );
    console.log("Mean scores: Hase et al.'s | the field's standard metrics (docs/metrics.md)");
    for (const line of scoreSummary(store.results({ sweep: "study" }), "study")) console.log(`  ${line}`);
    const rewrite = r2Table(data, { metric: "rewrite" });
    const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : " n/a ");
    console.log("R² of the rewrite score from:  layer | tracing effect | both   (Hase et al. table 3)");
    for (const r of rewrite) {
      console.log(
        `  ${`${r.problem} ${r.method}`.padEnd(32)} ${f3(r.layer)} | ${f3(r.trace)} | ${f3(r.both)}   ` +
          `Diff ${f3(r.diff)}, F-test p ${formatP(r.p)}${
            r.note && !Number.isFinite(r.layer) ? ` (${r.note})` : ""
          }`,
      );
    }
    const main = rewrite.find((r) => r.problem === "error-injection" && r.method === "rome") ?? rewrite[0];
    if (main) console.log(`\n${headline(main)}`);
    const holds = rewrite.filter((r) => Number.isFinite(r.layer) && Number.isFinite(r.trace));
    const layerWins = holds.filter((r) => r.layer > r.trace && r.diff < 0.1).length;
    console.log(
      `Hase et al.'s finding (here: the layer's R² is above the tracing effect's, and adding the tracing ` +
        `effect to the layer gains less than 0.1): holds in ${layerWins} of ${holds.length} problem x method conditions.`,
    );
    const concentrated = concentratedFacts(data, { nLayer: L });
    console.log(
      `Facts with concentrated tracing effects: ${concentrated.size} of ${
        data.traces.filter((t) => t.localization === "causal-tracing").length
      }.`,
    );
    for (const g of goldenVsSampleWise(data).filter((g) => g.method === "rome")) {
      console.log(
        `Golden layer (${g.problem}): ${g.goldenLayer}, rewrite ${
          g.golden.mean.toFixed(3)
        } vs each fact's best layer ` +
          `${g.optimal.mean.toFixed(3)} (paired t-test p ${formatP(g.p)}${
            g.different ? ", different" : ", no significant difference"
          })`,
      );
    }
    const chosen = selectionScores(data).filter((s) =>
      s.problem === (main?.problem ?? "") && s.method === (main?.method ?? "")
    );
    if (chosen.length) {
      console.log(`Layer selection (${main!.method}, ${main!.problem}; mean rewrite on the test facts):`);
      for (const s of chosen) {
        console.log(
          `  ${(STRATEGY_NAMES[s.strategy] ?? s.strategy).padEnd(30)} ${
            s.layer === null ? "per fact" : `layer ${s.layer}`
          }: ${f3(s.means.rewrite)}`,
        );
      }
    }
    console.log(
      `\n${out}/report.html (the full report), ${out}/results.csv (${csvCount} results), ${storePath}\n${timing}`,
    );
  } finally {
    store.close();
  }
  return 0;
}

if (import.meta.main) await runMain("study", main);
