// ./locus task study: the whole localization-vs-editing study on the embedded model (or any --model),
// at the papers' scale by default, resumable under a time budget; --quick is a small smoke test.
//
//   1. facts: a seeded sample of the dataset's facts the model knows (DIR/counterfact.json, or any file
//      Locus reads: --dataset zsre.json): --proxy facts for layer selection, then --facts test facts
//      (disjoint), more traced up to --trace-facts;
//   2. localization: causal tracing (and representation zeroing) of every traced fact, and the
//      window-size study's traces of the edited facts (Hase et al.'s windows 1, 3, 5, 10 scaled to depth);
//   3. layer selection on the proxy facts: causal tracing (CMA), integrated gradients, LGA;
//   4. edits: every method (ROME, R-ROME, MEMIT, EMMET, FT-L on 1 and on 5 layers) at every layer for every edited fact x
//      Hase et al.'s five editing problems, in blocks of facts through every condition;
//   5. analyses and the HTML report (experiments/study/analysis.ts, experiments/study/report.ts), a CSV of
//      every result, and in the terminal the same summary as the report's: the R² table with the verdict
//      rule, what the run supports and the caveats found in the data.
//
// Every result goes to OUT/results.db as it is produced (experiments/study/sweep.ts): a study stopped by
// its time budget or killed resumes where it stopped when run again with the same options.
//
//   ./locus task study [--quick] [--model DIR] [--dataset FILE] [--out runs/study] [--facts 250] [--proxy 50]
//                      [--windows 1,3,5,10] [--minutes 30]
import { writeAll, writeAtomic } from "../../engine/files.ts";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu, type Gpu } from "../../engine/gpu.ts";
import { io } from "../../engine/io.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import {
  caveats,
  driftDescription,
  driftSummary,
  findings,
  formatP,
  headline,
  loadSweep,
  r2Table,
  type RunPlan,
  windowStudy,
} from "../study/analysis.ts";
import { VERDICT_RULE } from "../study/stats.ts";
import { parseProblem, PROBLEMS } from "../editing/problems.ts";
import { formatSeconds, intOption, positiveInt, positiveNumber } from "../output.ts";
import { renderReport } from "../study/report.ts";
import { parseShard, ResultStore, type Shard, shardFromEnv, writeCsv } from "../study/store.ts";
import {
  DEFAULT_DRIFT,
  defaultSettings,
  LOCALIZATIONS,
  MASS_METHODS,
  MASS_SIZES,
  parseNames,
  parseWindowSizes,
  planStatsLayers,
  runMeta,
  runSweep,
  sampleFacts,
  scoreSummary,
  SELECTORS,
  SKIPPED,
  skippedReport,
  SWEEP_METHODS,
  type SweepContext,
  sweepKeyStats,
  type SweepPlan,
  type SweepSummary,
} from "../study/sweep.ts";
import { runMain } from "../../engine/main.ts";
import { WINDOW_STUDY } from "../localization/layer_selection.ts";

/** Facts per edit block (runSweep's blocks): the papers'-scale study in blocks of 24 facts took 19% less
 *  time than in blocks of 4 (larger v* / z and FT-L batches, fewer per-block passes; bench/RESULTS.md);
 *  on the embedded model a 24-fact block of the low-rank methods peaked at 3.4 GB against 2.4 GB. */
const STUDY_BLOCK_FACTS = 24;

/** The default study (the papers' scale: Hase et al. edit 652 facts, the golden-layer paper hundreds)
 *  and --quick, a smoke test of the whole pipeline. Every option below overrides its preset. */
const PRESETS = {
  default: {
    facts: 250,
    proxy: 50,
    traceFacts: 300,
    methods: "all",
    problems: "all",
    mass: "memit,emmet",
    windows: WINDOW_STUDY.join(","),
    minutes: 30,
  },
  quick: {
    facts: 6,
    proxy: 2,
    traceFacts: 12,
    methods: "rome,memit",
    problems: "error-injection,fact-forcing",
    mass: "memit",
    // The smallest and the widest window: the window study's whole code path at a fraction of the traces.
    windows: `${WINDOW_STUDY[0]},${WINDOW_STUDY.at(-1)}`,
    minutes: 10,
  },
} as const;

const USAGE = `usage: ./locus task study [options]
  --quick              a small smoke-test preset: ${PRESETS.quick.facts} test + ${PRESETS.quick.proxy} proxy facts,
                       ${PRESETS.quick.methods} on ${PRESETS.quick.problems}
  --model DIR          model folder with counterfact.json and corpus.txt (default: the embedded model)
  --dataset FILE       the facts: any dataset file Locus reads (default DIR/counterfact.json); a zsRE file
                       (MEND's schema, e.g. weights/locus-kb/zsre.json) adds the ZsRE metrics to the report
  --out DIR            results.db, results.csv and report.html go here (default runs/study)
  --facts N            test facts edited at every layer (default ${PRESETS.default.facts})
  --proxy N            proxy facts for layer selection, disjoint from the test facts (default ${PRESETS.default.proxy})
  --trace-facts N      facts traced in all, the edited ones included (default ${PRESETS.default.traceFacts})
  --methods M          all | any of ${SWEEP_METHODS.join(",")} (default all), each on every problem and
                       layer (ft-5: FT-L on the 5 layers around the edit layer, Hase et al.'s FT-5)
  --problems P         all | any of ${PROBLEMS.join(",")} (default all)
  --mass M             the mass-editing curve: ${MASS_METHODS.join(",")} or none (default both) edit ${
  MASS_SIZES.join(", ")
}
                       of the test facts at once
  --localizations L    ${LOCALIZATIONS.join(",")} (default both)
  --windows W          the window-size study: Hase et al.'s tracing windows (of GPT-J's 28 layers) scaled
                       to the model's depth, or none (default ${PRESETS.default.windows}; --quick ${PRESETS.quick.windows})
  --minutes M          time budget: no new work starts after M minutes (default ${PRESETS.default.minutes}); run again
                       to continue (facts are edited in blocks through every condition, so a partial study is
                       balanced)
  --processes N|auto   run the study's traces and edits in N processes on this machine, all writing to
                       OUT/results.db (workers log to OUT/worker-K.log), then report (default auto: 2 on a
                       software adapter with 2+ cores and memory for 4 copies of the model, which keeps about
                       one core of two busy, so 2 processes finish 1.2-1.4x sooner: bench/RESULTS.md; else 1);
                       on a software adapter each process gets its share of the cores as llvmpipe threads
                       (LP_NUM_THREADS, unless set; 0, kernels on the process's own thread, for one core)
  --shard k/n          run only shard k of n of the study's work (no report); default in a SLURM array or a
                       Kubernetes Indexed Job: the scheduler's task (as the sweep command's --shard); merge
                       the stores (./locus task sweep merge) and run without --shard for the report
  --claims TOKEN       with --shard, on a store every shard writes to: the edits go by blocks to whichever
                       shard claims a block first, among the shards given the same TOKEN (--processes sets it
                       for its workers; the other work still goes by shard)
  --seed N             fact sample and noise seed (default 0)
  --drift-every N      essence (Hase et al.) and fluency (ROME) on every N-th edited fact, at every layer,
                       method and problem (default ${DEFAULT_DRIFT.every}; 1: all, 0: none); short seeded generations
  --block-facts N      edit the facts in blocks of at most N through every condition (default ${STUDY_BLOCK_FACTS}; the
                       last blocks shorter so that processes finish together): larger blocks are larger
                       batches and take more memory; on a software adapter the records are the same for any N
  --v-steps N          ROME/MEMIT optimisation steps (default: the model's hyper-parameters, e.g. 20 for
                       GPT-2/GPT-J and for ROME on small models, 50 for MEMIT on small models)
  --stats-dir DIR      key statistics cache (default runs/editing-stats)
  --force              continue a store that holds results of other settings (refused otherwise, e.g. a
                       store made before a setting was added)`;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      out: { type: "string", default: "runs/study" },
      quick: { type: "boolean", default: false },
      facts: { type: "string" },
      proxy: { type: "string" },
      "trace-facts": { type: "string" },
      methods: { type: "string" },
      problems: { type: "string" },
      mass: { type: "string" },
      localizations: { type: "string", default: "all" },
      windows: { type: "string" },
      dataset: { type: "string" },
      minutes: { type: "string" },
      seed: { type: "string" },
      "v-steps": { type: "string" },
      "drift-every": { type: "string" },
      "block-facts": { type: "string" },
      "stats-dir": { type: "string" },
      force: { type: "boolean", default: false },
      processes: { type: "string" },
      shard: { type: "string" },
      claims: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const preset = values.quick ? PRESETS.quick : PRESETS.default;
  const started = performance.now();
  const deadline = started + positiveNumber("minutes", values.minutes, preset.minutes) * 60_000;
  const dir = await resolveModelDir(values.model!), out = values.out!;
  const datasetPath = values.dataset ?? `${dir}/counterfact.json`, corpus = `${dir}/corpus.txt`;
  // Weights in one file or sharded (real Llama/Gemma checkpoints are: model.safetensors.index.json).
  const index = `${dir}/model.safetensors.index.json`;
  const weights = await Deno.stat(index).then(() => index, () => `${dir}/model.safetensors`);
  for (const path of [weights, datasetPath, corpus]) {
    try {
      await Deno.stat(path);
    } catch {
      throw new Error(
        `${path} is missing${
          dir === DEFAULT_MODEL_DIR && path !== values.dataset ? " (train it: ./locus task train)" : ""
        }`,
      );
    }
  }
  const proxy = positiveInt("proxy", values.proxy, preset.proxy);
  const editFacts = positiveInt("facts", values.facts, preset.facts) + proxy;
  const traceFacts = Math.max(
    editFacts,
    positiveInt("trace-facts", values["trace-facts"], preset.traceFacts),
  );
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`--seed: expected an integer >= 0, got "${values.seed}"`);
  }
  const vSteps = values["v-steps"] === undefined ? undefined : positiveInt("v-steps", values["v-steps"], 20);
  const chosenProcesses = values.processes === undefined || values.processes === "auto"
    ? undefined
    : positiveInt("processes", values.processes, 1);
  if (values.shard !== undefined && (chosenProcesses ?? 1) > 1) {
    throw new Error("--shard and --processes: give one of them");
  }
  // A job array's task takes its shard from the scheduler's variables (as the sweep command does).
  const fromEnv = values.shard === undefined && (chosenProcesses ?? 1) === 1
    ? shardFromEnv(Deno.env.toObject())
    : undefined;
  const shard = values.shard === undefined ? fromEnv?.shard : parseShard(values.shard);
  if (fromEnv) console.log(`shard ${fromEnv.shard.index}/${fromEnv.shard.count} from ${fromEnv.source}`);
  if (values.claims !== undefined && shard === undefined) throw new Error("--claims goes with --shard");

  const gpu = await getGpu();
  const model = await Model.load(gpu, dir);
  const processes = chosenProcesses ?? (shard ? 1 : autoProcesses(gpu, model));
  const threads = Deno.env.get(LLVMPIPE_THREADS);
  if (processes > 1 && gpu.info.software && threads === undefined) {
    // llvmpipe made its compute threads with the adapter, one per core, and so would every worker: the
    // processes would share each core among as many threads (3.6% slower with 2 on 2 cores:
    // bench/RESULTS.md). The command runs again with each process's share of the cores (llvmpipeThreads).
    const perProcess = llvmpipeThreads(navigator.hardwareConcurrency ?? 1, processes);
    return await rerunWith({ [LLVMPIPE_THREADS]: String(perProcess) }, args);
  }
  const tok = await loadTokenizer(dir);
  const L = model.nLayer;
  console.log(`Locus study: does localization (causal tracing) tell us where to edit?`);
  console.log(`model ${dir} (${L} layers, d=${model.config.nEmbd}); ${gpu.describe()}`);
  if (processes > 1) {
    console.log(
      `${processes} processes${
        chosenProcesses ? "" : " (--processes auto: a software adapter on 2+ cores)"
      }` +
        (gpu.info.software && threads !== undefined ? `, ${LLVMPIPE_THREADS}=${threads} each` : ""),
    );
  }
  const sample = await sampleFacts(model, tok, datasetPath, {
    edit: editFacts,
    traceOnly: traceFacts - editFacts,
    proxy,
    seed,
  });
  const edited = sample.facts.filter((f) => f.split !== "trace-only");
  console.log(
    `${datasetPath}: the model knows ${sample.known} of ${sample.candidates} facts; ${edited.length} edited ` +
      `(${edited.filter((f) => f.split === "proxy").length} proxy), ${sample.facts.length} traced`,
  );
  for (const line of skippedReport(sample)) console.log(line);

  const settings = defaultSettings(L, seed);
  settings.batchSize = positiveInt("block-facts", values["block-facts"], STUDY_BLOCK_FACTS);
  settings.overrides = { vNumGradSteps: vSteps };
  settings.drift.every = intOption("drift-every", values["drift-every"], settings.drift.every, 0);
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
      methods: parseNames("methods", values.methods ?? preset.methods, SWEEP_METHODS),
      problems: parseNames("problems", values.problems ?? preset.problems, PROBLEMS).map(parseProblem),
      localizations: parseNames("localizations", values.localizations!, LOCALIZATIONS),
      selectors: [...SELECTORS],
      massMethods: parseNames("mass", values.mass ?? preset.mass, MASS_METHODS),
      windows: parseWindowSizes("windows", values.windows ?? preset.windows, L),
    },
  }];

  await Deno.mkdir(out, { recursive: true });
  const storePath = `${out}/results.db`;
  let store = ResultStore.open(storePath);
  const summaries: SweepSummary[] = [];
  // Results in the store (every process's), not the sample's skipped records.
  const results = () =>
    store.count({ sweep: "study" }) - store.count({ sweep: "study", localization: SKIPPED });
  const before = results();
  try {
    const meta = await runMeta(model, dir, datasetPath);
    const phaseOf = (i: number) => `[${i + 1}/${plans.length} ${plans[i].title}]`;
    const contextOf = (phase: string): SweepContext => ({
      model,
      tok,
      store,
      meta,
      corpus,
      statsDir: values["stats-dir"],
      log: (line) => console.log(`${phase} ${line}`),
      progress: { label: phase },
    });
    const runPlans = async (o: { shard?: Shard; claims?: string; quiet?: boolean }) => {
      for (const [i, { plan }] of plans.entries()) {
        const phase = phaseOf(i);
        if (!o.quiet) {
          console.log(
            `\n${phase} ${
              plan.methods.join(", ")
            } x ${plan.problems.length} problems x ${plan.layers.length} layers` +
              (plan.localizations.length ? ` + ${plan.localizations.join(" and ")} + layer selection` : ""),
          );
        }
        summaries.push(
          await runSweep(contextOf(phase), plan, {
            deadline,
            force: values.force,
            shard: o.shard,
            claims: o.claims,
          }),
        );
      }
    };
    // Workers run shards 1..n-1 beside this process's shard 0; what a worker left undone (it failed, or
    // its time ran out) this process then runs, from the store as the workers left it.
    if (processes > 1) {
      // Key statistics first, so that the processes do not each compute them.
      for (const [i, { plan }] of plans.entries()) {
        await sweepKeyStats(contextOf(phaseOf(i)), plan, planStatsLayers(model, plan), plan.methods);
      }
    }
    // The processes claim the edits' blocks from the store as each comes free (runSweep's claims), so they
    // finish together and every block's records are those one process would write.
    const claims = processes > 1 ? crypto.randomUUID() : values.claims;
    const workers = Array.from(
      { length: processes - 1 },
      (_, k) => startWorker(args, k + 1, processes, out, claims!),
    );
    try {
      await runPlans({ shard: workers.length ? { index: 0, count: processes } : shard, claims });
    } catch (e) {
      for (const w of workers) w.child.kill();
      throw e;
    }
    if (workers.length) {
      for (const [k, code] of (await Promise.all(workers.map((w) => w.code))).entries()) {
        console.log(
          `worker ${k + 1}/${processes} ${
            code === 0 ? "finished" : `exited with code ${code}`
          } (${out}/worker-${k + 1}.log)`,
        );
      }
      store.close();
      store = ResultStore.open(storePath);
      await runPlans({ quiet: true });
    }
    const stopped = summaries.some((s) => s.stopped);
    const written = workers.length ? results() - before : summaries.reduce((s, x) => s + x.written, 0);
    const timing = `${written} results computed in ${formatSeconds((performance.now() - started) / 1000)}` +
      (stopped ? "; the time budget ran out: run the same command again to continue the study." : ".");
    if (shard) {
      console.log(`\nShard ${shard.index}/${shard.count}: ${timing} Run without --shard for the report.`);
      return 0;
    }
    if (store.count({ sweep: "study" }) === 0) {
      console.log(`\nNo results yet, so no report. ${timing}`);
      return 0;
    }
    // Every result read from the store once, for the CSV, the analyses and the score summary.
    const stored = [...store.results({ sweep: "study" })];
    await writeCsv(stored, `${out}/results.csv`);
    const data = loadSweep(stored, "study");
    const runPlan: RunPlan = {
      facts: edited.length,
      proxyFacts: edited.filter((f) => f.split === "proxy").length,
      complete: !stopped,
    };
    await writeAtomic(
      `${out}/report.html`,
      renderReport(data, { title: `Locus study on ${dir}`, plan: runPlan }),
    );

    console.log(
      `\n=== Findings (${data.edits.length} edits, ${data.traces.length} localization records) ===`,
    );
    console.log("Mean scores: Hase et al.'s | the field's standard metrics (docs/metrics.md)");
    for (const line of scoreSummary(stored, "study")) console.log(`  ${line}`);
    console.log(driftDescription(driftSummary(data)));
    const rewrite = r2Table(data, { metric: "rewrite" });
    const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : " n/a ");
    console.log(
      "R² of the rewrite score from:  layer | tracing effect | both   (Hase et al. table 3; 95% bootstrap " +
        "intervals in the report)",
    );
    for (const r of rewrite) {
      console.log(
        `  ${`${r.problem} ${r.method}`.padEnd(32)} ${f3(r.layer)} | ${f3(r.trace)} | ${f3(r.both)}   ` +
          `Diff ${f3(r.diff)} [${f3(r.ci.diff.lower)}, ${f3(r.ci.diff.upper)}], f² ${f3(r.f2)}, Holm p ${
            formatP(r.pAdjusted)
          }: ${r.verdict}${r.note && !Number.isFinite(r.layer) ? ` (${r.note})` : ""}`,
      );
    }
    const main = rewrite.find((r) => r.problem === "error-injection" && r.method === "rome") ?? rewrite[0];
    const windows = windowStudy(data, { metric: "rewrite" });
    if (main && windows.windows.length > 1) {
      // The window-size study for the headline's condition (the report has every condition).
      const rows = windows.rows.filter((r) => r.problem === main.problem && r.method === main.method);
      console.log(
        `Window study (${main.method} ${main.problem}, ${windows.facts} facts traced with every window): ` +
          rows.map((r) =>
            `window ${r.window}: trace R² ${f3(r.trace)} [${f3(r.ci.trace.lower)}, ${
              f3(r.ci.trace.upper)
            }], ` +
            `Diff ${f3(r.diff)}, Holm p ${formatP(r.pAdjusted)}`
          ).join("; "),
      );
    }
    if (main) console.log(`\n${headline(main, data)}`);
    console.log(
      `\n=== Summary (${data.model.name ?? dir}, ${model.config.family}; ${gpu.describe()}; results sha256 ${
        data.fingerprint.slice(0, 16)
      }…) ===`,
    );
    for (const line of findings(data)) console.log(`  + ${line}`);
    console.log("Caveats found in the data:");
    const warnings = caveats(data, { plan: runPlan });
    for (const line of warnings.length ? warnings : ["none detected"]) console.log(`  ! ${line}`);
    console.log(`Verdict rule: ${VERDICT_RULE}`);
    console.log(
      `\n${out}/report.html (the full report), ${out}/results.csv (${stored.length} results), ${storePath}\n${timing}`,
    );
  } finally {
    store.close();
  }
  return 0;
}

/**
 * The default process count: 2 on a software adapter (llvmpipe keeps about 1.2 of 2 cores busy, so a
 * second process overlaps its idle time: bench/RESULTS.md) with 2+ cores and memory for 4 copies of the
 * model's weights (each process holds one, as CPU memory), else 1 (a GPU is busy with one process).
 */
function autoProcesses(gpu: Gpu, model: Model): number {
  const memory = io().memoryBytes();
  const tensors = [
    ...model.params.values(),
    ...[...model.wte, ...(model.config.tiedHead ? [] : model.head)].map((c) => c.tensor),
  ];
  const weights = tensors.reduce((s, t) => s + t.bytes, 0);
  const cores = navigator.hardwareConcurrency ?? 1;
  return gpu.info.software && cores >= 2 && memory !== null && 4 * weights <= memory ? 2 : 1;
}

/** The variable llvmpipe (Mesa's software adapter, GL and Vulkan) reads its compute thread count from when
 *  the adapter is made (default: one per core). */
const LLVMPIPE_THREADS = "LP_NUM_THREADS";

/**
 * llvmpipe's compute threads for each of `processes` processes on `cores` cores: each process's share of the
 * cores, or 0 where that share is one core or less. With 0, llvmpipe runs a dispatch on the thread that submits
 * it, without the hand-off to a pool thread (41 us -> 3 us for a small dispatch): 2 processes on 2 cores
 * finished the 24-fact study block 3.3% sooner than with one pool thread each (bench/RESULTS.md).
 */
function llvmpipeThreads(cores: number, processes: number): number {
  const share = Math.floor(cores / processes);
  return share > 1 ? share : 0;
}

/** Deno's arguments that run this command with `args`. */
const commandLine = (args: string[]) => ["run", "-A", new URL(import.meta.url).pathname, ...args];

/** Runs this command again with `args` and the variables `env` added, its output this process's; its exit
 *  code. */
async function rerunWith(env: Record<string, string>, args: string[]): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: commandLine(args),
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

/** Starts this command with `args` as shard k of n (--processes' worker) claiming edit blocks with the run's
 *  `claims` token, its output into OUT/worker-K.log; `code` resolves to its exit code once its output is
 *  written. */
function startWorker(
  args: string[],
  k: number,
  n: number,
  out: string,
  claims: string,
): { child: Deno.ChildProcess; code: Promise<number> } {
  const own = args.filter((a, i) => !a.startsWith("--processes") && args[i - 1] !== "--processes");
  const child = new Deno.Command(Deno.execPath(), {
    args: commandLine([...own, "--shard", `${k}/${n}`, "--claims", claims]),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const code = (async () => {
    const log = await Deno.open(`${out}/worker-${k}.log`, { write: true, create: true, truncate: true });
    // Each chunk written as it comes, one after another (a file's WritableStream kept a worker's whole output
    // until it closed, so the log stayed empty while the worker ran).
    let written = Promise.resolve();
    const copy = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) await (written = written.then(() => writeAll(log, chunk)));
    };
    await Promise.all([copy(child.stdout), copy(child.stderr)]);
    log.close();
    return (await child.status).code;
  })();
  return { child, code };
}

if (import.meta.main) await runMain("study", main);
