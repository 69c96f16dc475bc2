// Edit quality on a model with a CounterFact file (the embedded model by default): Hase et al.'s
// normalised rewrite / paraphrase / neighborhood scores, averaged over fixed cases.
//
//   ./locus run -A experiments/editing/quality.ts [--model DIR] [--cases 100] [--sweep-cases 20]
//       [--first K] [--problem error-injection] [--methods rome,r-rome,memit,emmet,ft] [--json FILE] [--check]
//       [--layers L] [--fact-token T] [--v-steps N] [--v-lr X] [--v-wd X] [--kl-factor X] [--clamp-norm X]
//       [--lambda X] [--ft-eps X] [--ft-steps N] [--ft-lr X]
//
// The hyper-parameter options override the family's defaults (experiments/editing/hparams.ts) for every
// method they apply to, as the edit command's do; --layers replaces the methods' layers and --sweep-cases 0
// skips ROME's per-layer sweep, so that one setting can be measured quickly.
//
// Cases: the first --cases records of DIR/counterfact.json (file order) whose true object the model
// predicts (greedy first token), as Hase et al. keep facts the model knows, one per subject: keyed at the
// subject's last token, two facts of one subject in "{} works as a" / "{} works for" share their key, so
// a batch edit (MEMIT, EMMET) holding both must map one key to two values and fails both (the embedded
// model's CounterFact file lists every fact of a subject, CounterFact itself one per subject). Reported:
//   - ROME at every layer (the per-layer averages; --sweep-cases cases at layers other than the
//     default, all cases at the default layer), each fact edited alone on the unedited model;
//   - the other methods at their default layers: R-ROME and FT-L one fact at a time, MEMIT and EMMET
//     all cases as ONE batch edit;
//   - the quality bar: ROME at its default layer rewrite >= 0.9 with neighborhood >= 0.8, and a MEMIT
//     batch of >= 100 edits with rewrite >= 0.8 (--check: exit 1 if not met).
import { writeAtomic } from "../../engine/files.ts";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { getGpu } from "../../engine/gpu.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer, type Tokenizer } from "../../engine/tokenizer.ts";
import { loadDataset } from "../data/datasets.ts";
import { knowsAnswers } from "../evaluation/recall.ts";
import { subjectNoiseLevel } from "../localization/tracing.ts";
import { positiveInt } from "../output.ts";
import { runMain } from "../../engine/main.ts";
import { sem } from "../study/stats.ts";
import { applyEdit, type Edit, type EditRequest } from "./edit.ts";
import { OVERRIDE_OPTIONS, parseOverrides } from "./override_options.ts";
import { statsHparams } from "./hparams.ts";
import {
  computeEdits,
  describeEdit,
  editedLayers,
  methodConfig,
  type MethodName,
  parseMethod,
  statsLayers,
  templateStartWords,
} from "./methods.ts";
import {
  type CaseProbabilities,
  caseProbabilities,
  type CaseScores,
  caseScores,
  type EditingCase,
  editingCase,
  parseProblem,
  problemRequest,
} from "./problems.ts";
import { keyStats } from "./stats.ts";

interface Pair {
  c: EditingCase;
  request: EditRequest;
}

interface Row {
  label: string;
  layers: number[];
  cases: number;
  seconds: number;
  mean: CaseScores;
  scores: CaseScores[];
}

function meanScores(scores: CaseScores[]): CaseScores {
  const avg = (k: keyof CaseScores) => {
    const xs = scores.map((s) => s[k]).filter((x) => !Number.isNaN(x));
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
  };
  return {
    rewrite: avg("rewrite"),
    paraphrase: avg("paraphrase"),
    neighborhood: avg("neighborhood"),
    overall: avg("overall"),
  };
}

/** Each edit applied alone to the unedited model, its own case scored, then undone. */
async function scoreEach(
  model: Model,
  tok: Tokenizer,
  edits: Edit[],
  pairs: Pair[],
  pre: CaseProbabilities[],
): Promise<CaseScores[]> {
  const out: CaseScores[] = [];
  for (const [i, edit] of edits.entries()) {
    const applied = await applyEdit(model, edit);
    const [post] = await caseProbabilities(model, tok, [pairs[i]]);
    applied.undo();
    out.push(caseScores(pairs[i].request, pre[i], post));
  }
  return out;
}

/** One edit of all pairs at once, every case scored on the edited model. */
async function scoreBatch(
  model: Model,
  tok: Tokenizer,
  edit: Edit,
  pairs: Pair[],
  pre: CaseProbabilities[],
): Promise<CaseScores[]> {
  const applied = await applyEdit(model, edit);
  const post = await caseProbabilities(model, tok, pairs);
  applied.undo();
  return pairs.map((p, i) => caseScores(p.request, pre[i], post[i]));
}

const fmt = (x: number) => (Number.isNaN(x) ? "  -  " : x.toFixed(3));

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
    },
  });
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

  // Fixed cases: the first nCases known facts in file order.
  const { cases: all } = await loadDataset(`${dir}/counterfact.json`);
  const candidates = all.map(editingCase);
  const knows = await knowsAnswers(
    model,
    tok,
    candidates.map((c) => ({ prompt: c.prompt.replace("{}", c.subject), answer: c.targetTrue })),
  );
  const known = candidates.filter((_, i) => knows[i]);
  const subjects = new Set<string>();
  const distinct = known.filter((c) => !subjects.has(c.subject) && subjects.add(c.subject));
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
  const pairs: Pair[] = [];
  for (const c of cases) pairs.push({ c, request: await problemRequest(model, tok, c, problem, noise) });
  const pre = await caseProbabilities(model, tok, pairs);
  // What the unedited model itself does with these facts: the ceiling that paraphrase scores of new
  // objects are read against (paraphrases are held-out templates for the embedded model).
  const known0 = await caseProbabilities(
    model,
    tok,
    cases.map((c) => ({ c, request: { prompt: c.prompt, subject: c.subject, target: c.targetTrue } })),
  );
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

  const rows: Row[] = [];
  /** One line of means ± standard errors over the cases' scores. */
  const print = (label: string, layers: number[], scores: CaseScores[], seconds: number) => {
    const m = meanScores(scores);
    const withSe = (k: keyof CaseScores) => {
      const xs = scores.map((s) => s[k]).filter((x) => !Number.isNaN(x));
      return `${fmt(m[k])}${xs.length > 1 ? ` ± ${sem(xs).toFixed(3)}` : ""}`;
    };
    console.log(
      `${label.padEnd(26)} layers ${layers.join(",").padEnd(6)} n=${String(scores.length).padEnd(4)} ` +
        `rewrite ${withSe("rewrite")}  paraphrase ${withSe("paraphrase")}  neighborhood ${
          withSe("neighborhood")
        }  overall ${fmt(m.overall)}  (${seconds.toFixed(0)} s)`,
    );
  };
  /** Edits the first n cases with `method` ("each": every fact alone; "batch": all in one edit) and scores them. */
  const run = async (
    label: string,
    method: MethodName,
    layers: number[] | undefined,
    n: number,
    mode: "each" | "batch",
  ) => {
    const mc = methodConfig(model, method, { ...overrides, ...(layers ? { layers } : {}) });
    const sub = pairs.slice(0, n), subPre = pre.slice(0, n);
    const requests = sub.map((p) => p.request);
    const t0 = performance.now();
    let scores: CaseScores[];
    if (mode === "batch") {
      const [edit] = await computeEdits(model, tok, mc, requests, stats, { startWords });
      scores = await scoreBatch(model, tok, edit, sub, subPre);
    } else if (method === "rome" || method === "r-rome") {
      // Independent per-fact edits, computed in one call.
      scores = await scoreEach(
        model,
        tok,
        await computeEdits(model, tok, mc, requests, stats, { startWords }),
        sub,
        subPre,
      );
    } else {
      // One call per fact, in turn: FT-L trains the model's own weights while it runs.
      const edits: Edit[] = [];
      for (const r of requests) edits.push(...await computeEdits(model, tok, mc, [r], stats, { startWords }));
      scores = await scoreEach(model, tok, edits, sub, subPre);
    }
    const seconds = (performance.now() - t0) / 1000;
    const row: Row = {
      label: `${label}, ${describeEdit(mc)}`,
      layers: editedLayers(mc),
      cases: n,
      seconds,
      mean: meanScores(scores),
      scores,
    };
    rows.push(row);
    return row;
  };

  const defaultRomeLayer = methodConfig(model, "rome", overrides).hparams.layer;
  let romeDefault: Row | undefined;
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
        print(row.label, row.layers, row.scores.slice(0, nSweep), row.seconds * nSweep / row.cases);
      }
      if (isDefault) romeDefault = row;
    }
    if (romeDefault) {
      print(
        `rome layer ${defaultRomeLayer}, all cases`,
        romeDefault.layers,
        romeDefault.scores,
        romeDefault.seconds,
      );
    }
  }
  console.log(`\nOther methods at their default layers (${problem}), all ${cases.length} cases:`);
  let memitRow: Row | undefined;
  for (const method of methods.filter((m) => m !== "rome")) {
    const mode = method === "memit" || method === "emmet" ? "batch" : "each";
    const row = await run(
      `${method} (${mode === "batch" ? "one batch" : "one at a time"})`,
      method,
      undefined,
      cases.length,
      mode,
    );
    print(row.label, row.layers, row.scores, row.seconds);
    if (method === "memit") memitRow = row;
  }

  console.log("\nQuality bar:");
  const checks: [string, boolean][] = [];
  if (romeDefault) {
    checks.push([
      `ROME layer ${defaultRomeLayer}: mean rewrite ${
        fmt(romeDefault.mean.rewrite)
      } >= 0.9 over ${romeDefault.cases} edits (>= 100)`,
      romeDefault.cases >= 100 && romeDefault.mean.rewrite >= 0.9,
    ]);
    checks.push([
      `ROME layer ${defaultRomeLayer}: mean neighborhood ${fmt(romeDefault.mean.neighborhood)} >= 0.8`,
      romeDefault.mean.neighborhood >= 0.8,
    ]);
  }
  if (memitRow) {
    checks.push([
      `MEMIT: one batch of ${memitRow.cases} edits (>= 100), mean rewrite ${
        fmt(memitRow.mean.rewrite)
      } >= 0.8`,
      memitRow.cases >= 100 && memitRow.mean.rewrite >= 0.8,
    ]);
  }
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
