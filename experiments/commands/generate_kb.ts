// Writes the invented knowledge base and its datasets (see experiments/knowledge/knowledge_base.ts):
//   ./locus task generate-kb --seed 0 --out DIR
// DIR/kb.json (the whole knowledge base), DIR/corpus.txt (training sentences, one per line),
// DIR/counterfact.json (ROME's CounterFact schema), DIR/known_facts.json (known_1000 schema),
// DIR/zsre.json (zsRE in MEND's schema). The datasets are written exactly as `./locus task train` writes
// them into a model folder, so `--embedded` regenerates the embedded model's files byte for byte.
import { parseArgs } from "node:util";
import { writeAtomic } from "../../engine/files.ts";
import {
  datasetFiles,
  generateKnowledgeBase,
  type KnowledgeBase,
  SUBJECT_TYPES,
  type SubjectType,
  trainingCorpus,
} from "../knowledge/knowledge_base.ts";
import { DEFAULT_TRAIN } from "../knowledge/train.ts";

const USAGE = `Usage: ./locus task generate-kb --out DIR [options]

Generates Locus's invented knowledge base and writes DIR/kb.json, DIR/corpus.txt,
DIR/counterfact.json, DIR/known_facts.json and DIR/zsre.json. The same options give byte-identical files.

Options:
  --out DIR                   output folder (created if missing)            [required]
  --embedded                  the embedded model's knowledge base (./locus task train's seed and
                              subjects): --out weights/locus-kb rewrites its datasets unchanged and
                              writes zsre.json (no kb.json); no other option may be given
  --seed N                    random seed                                   [default 0]
  --persons N                 person subjects                               [default 150]
  --places N                  place subjects                                [default 90]
  --organisations N           organisation subjects                         [default 70]
  --works N                   work subjects (novels, films...)              [default 90]
  --objects-per-relation N    cap on each relation's object pool (>= 2)     [default: whole pool]
  --neighbors N               most neighborhood prompts per record          [default 10]
  --help                      show this text`;

const SIZE_FLAGS: Record<SubjectType, string> = {
  person: "persons",
  place: "places",
  organisation: "organisations",
  work: "works",
};

function integerFlag(values: Record<string, string | boolean | undefined>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || !/^-?\d+$/.test(raw)) {
    throw new Error(`--${name}: expected an integer, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      seed: { type: "string" },
      persons: { type: "string" },
      places: { type: "string" },
      organisations: { type: "string" },
      works: { type: "string" },
      "objects-per-relation": { type: "string" },
      neighbors: { type: "string" },
      embedded: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.out) throw new Error("--out DIR is required (see --help)");

  const out = values.out;
  let kb: KnowledgeBase;
  if (values.embedded) {
    const other = ["seed", ...Object.values(SIZE_FLAGS), "objects-per-relation", "neighbors"]
      .filter((k) => values[k as keyof typeof values] !== undefined);
    if (other.length) throw new Error(`--embedded fixes the knowledge base; drop --${other.join(", --")}`);
    kb = generateKnowledgeBase({ seed: DEFAULT_TRAIN.seed, subjectsPerType: DEFAULT_TRAIN.subjects });
  } else {
    const subjectsPerType: Partial<Record<SubjectType, number>> = {};
    for (const type of SUBJECT_TYPES) {
      const n = integerFlag(values, SIZE_FLAGS[type]);
      if (n !== undefined) subjectsPerType[type] = n;
    }
    kb = generateKnowledgeBase({
      seed: integerFlag(values, "seed") ?? 0,
      subjectsPerType,
      objectsPerRelation: integerFlag(values, "objects-per-relation"),
      maxNeighbors: integerFlag(values, "neighbors"),
    });
  }
  const files = datasetFiles(kb);
  await Deno.mkdir(out, { recursive: true });
  // A model folder holds the datasets only; kb.json (the whole knowledge base) is for other outputs.
  if (!values.embedded) await writeAtomic(`${out}/kb.json`, JSON.stringify(kb, null, 2) + "\n");
  for (const [name, text] of Object.entries(files)) await writeAtomic(`${out}/${name}`, text);

  const corpus = trainingCorpus(kb);
  const words = corpus.reduce((n, line) => n + line.split(" ").length, 0);
  const typeCounts = SUBJECT_TYPES.map((t) => `${kb.options.subjectsPerType[t]} ${t}`).join(", ");
  console.log(
    `Knowledge base (seed ${kb.seed}): ${kb.subjects.length} subjects (${typeCounts}), ` +
      `${kb.relations.length} relations, ${kb.facts.length} facts. Corpus: ${corpus.length} sentences, ` +
      `${words} words, vocabulary of ${kb.vocabulary.length} words. ` +
      `${kb.facts.length} CounterFact, known-fact and zsRE records each. ` +
      `Written to ${out}/.`,
  );
}

try {
  await main();
} catch (e) {
  console.error(`generate_kb: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
