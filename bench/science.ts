// The science section: what a study costs, side by side with PyTorch on the same machine (on its GPU
// when torch sees one through CUDA, else on its CPU).
//
//   ./locus run -A bench/science.ts [--facts 100] [--sequential-facts 4] [--peer-facts 4] [--layers all]
//       [--trace-samples 10] [--trace-repeats 3] [--no-peer] [--out FILE.json]
//
// 1. A ROME sweep on the embedded model: --facts facts x every layer, error injection, each edit scored
//    (rewrite, paraphrases, neighbours) as experiments/study/sweep.ts stores it. "batched": the sweep as it runs
//    (a layer's v* optimised for a block of facts together, their edits scored in one pass of virtual
//    edits); "sequential": the reference path, one fact per block and every edit applied, scored and
//    undone (on --sequential-facts facts: per-edit cost is what is compared). Key statistics and context
//    templates are computed (or read from the cache) before the clock starts, for both.
// 2. The PyTorch peer (bench/science_torch.py, when python3 with torch and transformers is present):
//    straightforward per-edit ROME in torch on --peer-facts facts x the same layers, from the same token
//    ids, context templates, key statistics and hyper-parameters (written to a job file), through
//    transformers' GPT-2; and a batched torch causal-trace grid of the same fact with the same noise.
// 3. A causal-trace grid of one fact (every token x every layer x resid/mlp/attn x --trace-samples), warm,
//    the median of --trace-repeats runs; and the grids of every sampled fact traced together (the way
//    `trace --dataset` and the study run them), against the torch grid of each fact in turn.
//
// Every figure is wall-clock on whatever adapter Locus finds; the peer prints how far its probabilities
// are from Locus's (same computation, other arithmetic: early stops can differ by a step).
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { statsHparams } from "../experiments/editing/hparams.ts";
import { contextTemplates } from "../experiments/editing/keys.ts";
import { methodConfig, templateStartWords } from "../experiments/editing/methods.ts";
import { caseItems } from "../experiments/editing/problems.ts";
import { keyStats } from "../experiments/editing/stats.ts";
import { planRequest, valueOptions } from "../experiments/editing/values.ts";
import { ResultStore } from "../experiments/study/store.ts";
import { median } from "../experiments/study/stats.ts";
import {
  defaultSettings,
  filledPrompt,
  parseLayerList,
  runMeta,
  runSweep,
  sampleFacts,
  type SweepFact,
  type SweepPlan,
} from "../experiments/study/sweep.ts";
import {
  gaussianNoise,
  type GridTrace,
  subjectNoiseLevel,
  targetTokenId,
  type TracePrompt,
  tracePrompts,
  traceTokens,
} from "../experiments/localization/tracing.ts";
import { subjectTokenRange } from "../engine/tokenizer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    facts: { type: "string", default: "100" },
    "sequential-facts": { type: "string", default: "4" },
    "peer-facts": { type: "string", default: "4" },
    layers: { type: "string", default: "all" },
    "trace-samples": { type: "string", default: "10" },
    "trace-repeats": { type: "string", default: "3" },
    "no-peer": { type: "boolean", default: false },
    out: { type: "string" },
  },
});

const dir = DEFAULT_MODEL_DIR, dataset = `${dir}/counterfact.json`, corpus = `${dir}/corpus.txt`;
const gpu = await getGpu();
const model = await Model.load(gpu, dir);
const tok = await loadTokenizer(dir);
const layers = parseLayerList(values.layers!, model.nLayer);
console.log(`adapter: ${gpu.describe()}`);
const work = await Deno.makeTempDir({ prefix: "locus-science-" });
const results: Record<string, unknown> = { adapter: gpu.describe(), date: new Date().toISOString() };

// ------------------------------------------------------------------------------------------------
// 1. The ROME sweep, batched and sequential

const sample = await sampleFacts(model, tok, dataset, {
  edit: Number(values.facts),
  traceOnly: 0,
  proxyFraction: 0.5,
  seed: 0,
});
const facts = sample.facts;
const rome = methodConfig(model, "rome");
const startWords = await templateStartWords(tok, corpus);
const contexts = await contextTemplates(model, tok, { ...rome.hparams.templates, startWords });
const stats = await keyStats(model, tok, { corpus, layers, samples: statsHparams(model.config).samples });
const meta = await runMeta(model, dir, dataset);
console.log(
  `${facts.length} known facts sampled; context templates and key statistics ready ` +
    `(${(performance.now() / 1000).toFixed(0)} s since start)`,
);

/** Runs a ROME sweep of `chosen` facts into a fresh store; returns seconds per edit and the stored rows. */
async function sweepSeconds(name: string, chosen: SweepFact[], batchSize: number, applyToScore: boolean) {
  // Essence and fluency off: this section compares scoring paths, which generation would only blur.
  const defaults = defaultSettings(model.nLayer);
  const settings = { ...defaults, batchSize, drift: { ...defaults.drift, every: 0 } };
  const plan: SweepPlan = {
    name,
    facts: chosen,
    layers,
    methods: ["rome"],
    problems: ["error-injection"],
    localizations: [],
    selectors: [],
    settings,
    noiseSubjects: sample.knownSubjects,
  };
  const store = ResultStore.open(`${work}/${name}-${batchSize}.db`);
  try {
    const t0 = performance.now();
    const summary = await runSweep({ model, tok, store, meta, corpus }, plan, { applyToScore });
    const seconds = (performance.now() - t0) / 1000;
    return {
      seconds,
      perEdit: seconds / summary.written,
      edits: summary.written,
      rows: [...store.results()],
    };
  } finally {
    store.close();
  }
}

const nSeq = Math.min(Number(values["sequential-facts"]), facts.length);
// One sweep name for both, so that their result keys match.
const batched = await sweepSeconds("science", facts, facts.length, false);
const sequential = await sweepSeconds("science", facts.slice(0, nSeq), 1, true);
// The same edits on both paths: v* of a fact optimised alone or in a block, scored applied or virtually.
const post = (r: { metrics: Record<string, unknown> }) => (r.metrics.post as { rewrite: number }).rewrite;
const byKey = new Map(batched.rows.map((r) => [r.key, r]));
const agreement = Math.max(...sequential.rows.map((r) => Math.abs(post(r) - post(byKey.get(r.key)!))));
const line = (what: string, s: number, note = "") =>
  console.log(`${what.padEnd(58)} ${s.toFixed(3).padStart(9)} s${note ? `  ${note}` : ""}`);
console.log(`\nROME sweep with evaluation, embedded model, layers ${layers.join(",")}, error injection`);
line(
  `  batched: ${facts.length} facts x ${layers.length} layers, per edit`,
  batched.perEdit,
  `(${batched.seconds.toFixed(1)} s in all)`,
);
line(
  `  sequential: ${nSeq} facts x ${layers.length} layers, per edit`,
  sequential.perEdit,
  `(${sequential.seconds.toFixed(1)} s in all)`,
);
console.log(
  `  batched is ${(sequential.perEdit / batched.perEdit).toFixed(1)}x faster; ` +
    `max |p_post(rewrite) batched - sequential| = ${agreement.toExponential(1)}`,
);
results.sweep = {
  facts: facts.length,
  layers,
  batched: { perEdit: batched.perEdit, seconds: batched.seconds, edits: batched.edits },
  sequential: { perEdit: sequential.perEdit, seconds: sequential.seconds, edits: sequential.edits },
  agreement,
};

// ------------------------------------------------------------------------------------------------
// 3. Causal-trace grids: the first fact's (warm: one untimed grid first), then every fact's together

const prompts = facts.map((f): TracePrompt => {
  const text = filledPrompt(f.case);
  return {
    ids: tok.encode(text),
    subject: subjectTokenRange(tok, text, f.case.subject),
    target: targetTokenId(tok, text, f.case.targetTrue),
  };
});
const { ids, subject, target } = prompts[0];
const noise = await subjectNoiseLevel(model, tok, sample.knownSubjects);
const samples = Number(values["trace-samples"]), repeats = Number(values["trace-repeats"]);
const traceOptions = { samples, noise: noise.level, seed: 1, window: { resid: 1, mlp: 10, attn: 10 } };
await traceTokens(model, ids, subject, target, traceOptions);
const timings: number[] = [];
let trace!: GridTrace;
for (let r = 0; r < repeats; r++) {
  const t0 = performance.now();
  trace = await traceTokens(model, ids, subject, target, traceOptions);
  timings.push((performance.now() - t0) / 1000);
}
const traceSeconds = median(timings);
const t1 = performance.now();
const traces = await tracePrompts(model, prompts, traceOptions);
const manySeconds = (performance.now() - t1) / 1000;
console.log(
  `\nCausal-trace grid: ${ids.length} tokens x ${model.nLayer} layers x 3 kinds x ${samples} samples`,
);
line(
  "  Locus (clean and corrupted runs once, cells batched)",
  traceSeconds,
  `(median of ${repeats}: ${timings.map((t) => t.toFixed(2)).join(", ")})`,
);
line(`  Locus, the ${prompts.length} facts' grids traced together`, manySeconds);
results.trace = {
  tokens: ids.length,
  samples,
  seconds: traceSeconds,
  timings,
  facts: prompts.length,
  manySeconds,
};

// ------------------------------------------------------------------------------------------------
// 2. The PyTorch peer

async function peerAvailable(): Promise<string | null> {
  try {
    const out = await new Deno.Command("python3", {
      args: ["-c", "import torch, transformers; print(torch.__version__)"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? null : "python3 has no torch or transformers";
  } catch {
    return "no python3";
  }
}

const missing = values["no-peer"] ? "--no-peer" : await peerAvailable();
if (missing) {
  console.log(`\n(PyTorch peer skipped: ${missing})`);
} else {
  const peerFacts = facts.slice(0, Math.min(Number(values["peer-facts"]), facts.length));
  const hp = rome.hparams;
  const edits = peerFacts.map((f) => {
    const request = { prompt: f.case.prompt, subject: f.case.subject, target: f.case.targetNew };
    const plan = planRequest(tok, request, valueOptions(hp, layers[0], "mlp", contexts));
    const { items } = caseItems(tok, [{ c: f.case, request }]);
    return {
      fact: f.id,
      target: plan.target,
      prompts: plan.instances.map((p) => ({ ids: p.ids, fact: p.fact })),
      eval: items.map((it) => ({ ids: it.instance.ids, target: it.target })),
      counts: [1, f.case.paraphrases.length, f.case.neighbors.length],
    };
  });
  for (const l of layers) {
    await Deno.writeFile(`${work}/C${l}.f32`, new Uint8Array(stats.get(l)!.moment.buffer));
  }
  const traceJob = (p: TracePrompt, grids: GridTrace) => ({
    ids: p.ids,
    subject: p.subject,
    target: p.target,
    windows: { resid: 1, mlp: 10, attn: 10 },
    noise: Array.from(
      gaussianNoise(samples * (p.subject[1] - p.subject[0]) * model.config.nEmbd, 1).map((v) =>
        v * noise.level
      ),
    ),
    samples,
    locus: Object.fromEntries(grids.grids.map((g) => [g.kind, g.prob])),
  });
  const job = {
    model: dir,
    layers,
    hparams: {
      steps: hp.vNumGradSteps,
      lr: hp.vLr,
      weightDecay: hp.vWeightDecay,
      klFactor: hp.klFactor,
      clampNormFactor: hp.clampNormFactor,
    },
    stats: Object.fromEntries(layers.map((l) => [l, `${work}/C${l}.f32`])),
    edits,
    trace: traceJob(prompts[0], trace),
    traces: prompts.map((p, i) => traceJob(p, traces[i])),
    repeats,
  };
  await Deno.writeTextFile(`${work}/job.json`, JSON.stringify(job));
  const script = new URL("./science_torch.py", import.meta.url).pathname;
  const out = await new Deno.Command("python3", {
    args: [script, `${work}/job.json`, `${work}/peer.json`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`bench/science_torch.py failed (exit code ${out.code})`);
  const peer = JSON.parse(await Deno.readTextFile(`${work}/peer.json`)) as {
    threads: number;
    device: string;
    rome: { perEdit: number; edits: { fact: string; layer: number; rewrite: number }[] };
    trace: { seconds: number; timings: number[]; maxDiff: number };
    traces: { seconds: number; maxDiff: number };
  };
  const locusPost = new Map(batched.rows.map((r) => [`${r.fact}|${r.layer}`, post(r)]));
  const romeDiff = Math.max(
    ...peer.rome.edits.map((x) => Math.abs(x.rewrite - locusPost.get(`${x.fact}|${x.layer}`)!)),
  );
  console.log(
    `\nPyTorch on ${peer.device === "CPU" ? `the CPU, ${peer.threads} threads` : peer.device}, same machine`,
  );
  line(
    `  per-edit ROME + evaluation (${peerFacts.length} facts x ${layers.length} layers), per edit`,
    peer.rome.perEdit,
  );
  console.log(
    `  Locus batched is ${(peer.rome.perEdit / batched.perEdit).toFixed(2)}x the torch speed; ` +
      `max |p_post(rewrite) torch - Locus| = ${romeDiff.toExponential(1)}`,
  );
  line(
    "  batched causal-trace grid",
    peer.trace.seconds,
    `(median of ${repeats}: ${peer.trace.timings.map((t) => t.toFixed(2)).join(", ")})`,
  );
  console.log(
    `  Locus is ${(peer.trace.seconds / traceSeconds).toFixed(2)}x the torch speed; ` +
      `max |p torch - Locus| over the grid = ${peer.trace.maxDiff.toExponential(1)}`,
  );
  line(`  the ${prompts.length} facts' grids, one after another`, peer.traces.seconds);
  console.log(
    `  Locus is ${(peer.traces.seconds / manySeconds).toFixed(2)}x the torch speed; ` +
      `max |p torch - Locus| over the grids = ${peer.traces.maxDiff.toExponential(1)}`,
  );
  results.peer = { ...peer, romeDiff };
}

if (values.out) {
  await Deno.writeTextFile(values.out, JSON.stringify(results, null, 1) + "\n");
  console.log(`wrote ${values.out}`);
}
await Deno.remove(work, { recursive: true });
