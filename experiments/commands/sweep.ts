// ./locus task sweep: parses the command line, runs a sweep into its results store
// (experiments/study/sweep.ts runSweep), and exports or merges stores.
//
//   ./locus task sweep --out runs/sweep.db --facts 20 --methods rome,memit --problems all
//   ./locus task sweep --out shard0.db --shard 0/2 ...      (same options on every machine)
//   ./locus task sweep merge all.db shard0.db shard1.db     ./locus task sweep csv all.db results.csv
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import { runMain } from "../../engine/main.ts";
import { exists } from "../../engine/files.ts";
import { parseProblem, PROBLEMS } from "../editing/problems.ts";
import { formatSeconds, intOption, numberOption } from "../output.ts";
import { mergeStores, parseShard, ResultStore, shardFromEnv, writeCsv } from "../study/store.ts";
import {
  DEFAULT_DRIFT,
  defaultSettings,
  LOCALIZATIONS,
  parseLayerList,
  parseNames,
  parseWindowSizes,
  runMeta,
  runSweep,
  sampleFacts,
  scoreSummary,
  SELECTORS,
  skippedReport,
  SWEEP_METHODS,
  type SweepPlan,
} from "../study/sweep.ts";

const USAGE = `usage: ./locus task sweep [options]
       ./locus task sweep merge TARGET.db SHARD.db...      combine shard stores
       ./locus task sweep csv STORE.db OUT.csv [--name N] [--method M]   export results as CSV
  --model DIR            GPT-2 folder (default: the embedded model ${DEFAULT_MODEL_DIR})
  --dataset FILE         a dataset file Locus reads (CounterFact, zsRE, ...; default: DIR/counterfact.json)
  --out FILE             results store (SQLite; default runs/sweep.db)
  --name NAME            sweep name in the result keys (default "sweep")
  --facts N              facts edited (default 20), a seeded sample of the facts the model knows
  --trace-only N         more facts only traced, for the average tracing curves (default 0)
  --proxy-fraction X     share of the edited facts forming the proxy set of layer selection (default 0.1)
  --seed N               fact sample and noise seed (default 0)
  --layers L             all | 3 | 2,3,4 | 2-4 (default all)
  --methods M            all | ${SWEEP_METHODS.join(",")} (default rome; ft-5: FT-L on the 5 layers
                         around the edit layer, Hase et al.'s FT-5)
  --problems P           all | ${PROBLEMS.join(",")} (default all)
  --localizations L      ${LOCALIZATIONS.join(",")} | none (default causal-tracing)
  --selectors S          ${SELECTORS.join(",")} | none (default all)
  --trace-window N       MLP window of the traces (default: ROME's 10 of 48 layers scaled to the model)
  --windows W            the window-size study: Hase et al.'s window sizes (e.g. 1,3,5,10, of GPT-J's 28
                         layers, scaled to the model) the edited facts are also traced with (default none)
  --trace-samples N      noise draws per trace (default 10)
  --memit-window N       layers of a MEMIT edit (default 3); --ft-window N for ft (default 1)
  --batch N              facts whose edits (at every layer) are computed together (default 8)
  --ig-steps N           integrated-gradients steps (default 20)
  --v-steps N, --ft-steps N   hyper-parameter overrides (fewer steps for speed)
  --drift-every N        essence and fluency on every N-th edited fact (default ${DEFAULT_DRIFT.every}; 1: all, 0: none)
  --essence-samples N    Hase et al.'s essence: "{subject} is a" samples per fact (default ${DEFAULT_DRIFT.essenceSamples}; 0: off)
  --essence-tokens N     new tokens per essence sample (default ${DEFAULT_DRIFT.essenceTokens})
  --fluency-prompts N    ROME's fluency: generation prompts per fact (default ${DEFAULT_DRIFT.fluencyPrompts}; 0: off)
  --fluency-tokens N     new tokens per fluency generation (default ${DEFAULT_DRIFT.fluencyTokens})
  --corpus FILE          key statistics / template text (default DIR/corpus.txt)
  --stats-dir DIR        key statistics cache (default runs/editing-stats)
  --shard k/n            run only shard k of n (numbered from 0); merge the stores afterwards. Default in a
                         job array: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (minus SLURM_ARRAY_TASK_MIN),
                         or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX/LOCUS_SHARD_COUNT
  --max-minutes M        start no new work after M minutes (run again to continue)
  --apply-to-score       score each edit by applying, scoring and undoing it (the slow reference path)
  --force                resume although the store holds results of other settings (refused otherwise)
  --csv FILE             also export the sweep's results as CSV when done`;

async function main(args: string[]): Promise<number> {
  const started = performance.now();
  if (args[0] === "merge") {
    const [target, ...sources] = args.slice(1);
    if (!target || sources.length === 0) {
      throw new Error("usage: ./locus task sweep merge TARGET.db SHARD.db...");
    }
    const r = mergeStores(target, sources);
    console.log(
      `${target}: ${r.inserted} results added, ${r.duplicates} already there, ${r.conflicts.length} conflicts`,
    );
    for (const key of r.conflicts) console.error(`conflict (kept the first): ${key}`);
    return r.conflicts.length ? 1 : 0;
  }
  if (args[0] === "csv") {
    const { values, positionals } = parseArgs({
      args: args.slice(1),
      allowPositionals: true,
      options: { name: { type: "string" }, method: { type: "string" } },
    });
    if (positionals.length !== 2) {
      throw new Error("usage: ./locus task sweep csv STORE.db OUT.csv [--name NAME] [--method NAME]");
    }
    const store = ResultStore.open(positionals[0], { create: false });
    try {
      console.log(
        `${positionals[1]}: ${await writeCsv(
          store.results({ sweep: values.name, method: values.method }),
          positionals[1],
        )} results`,
      );
    } finally {
      store.close();
    }
    return 0;
  }
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      dataset: { type: "string" },
      out: { type: "string", default: "runs/sweep.db" },
      name: { type: "string", default: "sweep" },
      facts: { type: "string" },
      "trace-only": { type: "string" },
      "proxy-fraction": { type: "string" },
      seed: { type: "string" },
      layers: { type: "string", default: "all" },
      methods: { type: "string", default: "rome" },
      problems: { type: "string", default: "all" },
      localizations: { type: "string", default: "causal-tracing" },
      selectors: { type: "string", default: "all" },
      "trace-window": { type: "string" },
      windows: { type: "string", default: "none" },
      "trace-samples": { type: "string" },
      "memit-window": { type: "string" },
      "ft-window": { type: "string" },
      batch: { type: "string" },
      "ig-steps": { type: "string" },
      "v-steps": { type: "string" },
      "ft-steps": { type: "string" },
      "drift-every": { type: "string" },
      "essence-samples": { type: "string" },
      "essence-tokens": { type: "string" },
      "fluency-prompts": { type: "string" },
      "fluency-tokens": { type: "string" },
      corpus: { type: "string" },
      "stats-dir": { type: "string" },
      shard: { type: "string" },
      "max-minutes": { type: "string" },
      csv: { type: "string" },
      force: { type: "boolean", default: false },
      "apply-to-score": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const dir = await resolveModelDir(values.model!);
  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  const seed = intOption("seed", values.seed, 0);
  const settings = defaultSettings(L, seed);
  settings.traceWindow = intOption("trace-window", values["trace-window"], settings.traceWindow, 1);
  settings.traceSamples = intOption("trace-samples", values["trace-samples"], settings.traceSamples, 1);
  settings.memitWindow = intOption("memit-window", values["memit-window"], settings.memitWindow, 1);
  settings.ftWindow = intOption("ft-window", values["ft-window"], settings.ftWindow, 1);
  settings.batchSize = intOption("batch", values.batch, settings.batchSize, 1);
  settings.igSteps = intOption("ig-steps", values["ig-steps"], settings.igSteps, 2);
  const d = settings.drift;
  settings.drift = {
    ...d,
    every: intOption("drift-every", values["drift-every"], d.every, 0),
    essenceSamples: intOption("essence-samples", values["essence-samples"], d.essenceSamples, 0),
    essenceTokens: intOption("essence-tokens", values["essence-tokens"], d.essenceTokens, 1),
    fluencyPrompts: intOption("fluency-prompts", values["fluency-prompts"], d.fluencyPrompts, 0),
    fluencyTokens: intOption("fluency-tokens", values["fluency-tokens"], d.fluencyTokens, 1),
  };
  settings.overrides = {
    vNumGradSteps: numberOption("v-steps", values["v-steps"]),
    numSteps: numberOption("ft-steps", values["ft-steps"]),
  };
  const proxyFraction = numberOption("proxy-fraction", values["proxy-fraction"]) ?? 0.1;
  if (!(proxyFraction > 0 && proxyFraction < 1)) {
    throw new Error(`--proxy-fraction must be in (0, 1), got ${proxyFraction}`);
  }
  const datasetPath = values.dataset ?? `${dir}/counterfact.json`;
  const corpus = values.corpus ?? ((await exists(`${dir}/corpus.txt`)) ? `${dir}/corpus.txt` : null);
  const fromEnv = values.shard === undefined ? shardFromEnv(Deno.env.toObject()) : undefined;
  const shard = values.shard === undefined ? fromEnv?.shard : parseShard(values.shard);
  if (fromEnv) console.log(`shard ${fromEnv.shard.index}/${fromEnv.shard.count} from ${fromEnv.source}`);
  const minutes = numberOption("max-minutes", values["max-minutes"]);
  if (minutes !== undefined && !(minutes > 0)) throw new Error(`--max-minutes must be > 0, got ${minutes}`);

  const deadline = minutes === undefined ? undefined : started + minutes * 60_000;
  const sample = await sampleFacts(model, tok, datasetPath, {
    edit: intOption("facts", values.facts, 20),
    traceOnly: intOption("trace-only", values["trace-only"], 0),
    proxyFraction,
    seed,
  });
  const plan: SweepPlan = {
    name: values.name!,
    facts: sample.facts,
    layers: parseLayerList(values.layers!, L),
    methods: parseNames("methods", values.methods!, SWEEP_METHODS),
    problems: parseNames("problems", values.problems!, PROBLEMS).map(parseProblem),
    localizations: parseNames("localizations", values.localizations!, LOCALIZATIONS),
    selectors: parseNames("selectors", values.selectors!, SELECTORS),
    windows: parseWindowSizes("windows", values.windows!, L),
    settings,
    noiseSubjects: sample.knownSubjects,
    skipped: sample.skipped,
  };
  console.log(`model ${dir} (${L} layers, d=${model.config.nEmbd}); ${gpu.describe()}`);
  console.log(
    `${datasetPath}: ${sample.known} of ${sample.candidates} facts known; ` +
      `${plan.facts.filter((f) => f.split !== "trace-only").length} edited, ` +
      `${plan.facts.filter((f) => f.split === "trace-only").length} traced only`,
  );
  for (const line of skippedReport(sample)) console.log(line);
  const store = ResultStore.open(values.out!);
  try {
    const summary = await runSweep(
      {
        model,
        tok,
        store,
        meta: await runMeta(model, dir, datasetPath),
        corpus,
        statsDir: values["stats-dir"],
        log: (l) => console.log(l),
      },
      plan,
      { shard, deadline, force: values.force, applyToScore: values["apply-to-score"] },
    );
    console.log(
      `${values.out}: ${summary.written} results written in ${formatSeconds(summary.seconds)} ` +
        `(${summary.skipped} were already there; ${summary.total} in this ${shard ? "shard" : "sweep"})`,
    );
    const { optimised, reused } = summary.values;
    if (optimised + reused > 0) {
      console.log(
        `v* / z: ${optimised} optimised, ${reused} reused from another method with the same request, ` +
          `layer and settings`,
      );
    }
    for (const line of scoreSummary(store.results({ sweep: plan.name }), plan.name)) console.log(`  ${line}`);
    if (summary.stopped) {
      console.log(`--max-minutes ${minutes} ran out: run the same command again to continue`);
    }
    if (values.csv) {
      console.log(
        `${values.csv}: ${await writeCsv(store.results({ sweep: plan.name }), values.csv)} results`,
      );
    }
  } finally {
    store.close();
  }
  return 0;
}

if (import.meta.main) await runMain("sweep", main);
