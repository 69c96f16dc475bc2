// Writes the invented knowledge base and its datasets (see experiments/knowledge/knowledge_base.ts):
//   ./locus run -A experiments/commands/generate_kb.ts --seed 0 --out DIR
// DIR/kb.json (the whole knowledge base), DIR/corpus.txt (training sentences, one per line),
// DIR/counterfact.json (ROME's CounterFact schema), DIR/known_facts.json (known_1000 schema).
import { parseArgs } from "node:util";
import {
  counterfactRecords,
  generateKnowledgeBase,
  knownFactsRecords,
  SUBJECT_TYPES,
  type SubjectType,
  trainingCorpus,
} from "../knowledge/knowledge_base.ts";

const USAGE = `Usage: ./locus run -A experiments/commands/generate_kb.ts --out DIR [options]

Generates Locus's invented knowledge base and writes DIR/kb.json, DIR/corpus.txt,
DIR/counterfact.json and DIR/known_facts.json. The same options give byte-identical files.

Options:
  --out DIR                   output folder (created if missing)            [required]
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
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.out) throw new Error("--out DIR is required (see --help)");

  const subjectsPerType: Partial<Record<SubjectType, number>> = {};
  for (const type of SUBJECT_TYPES) {
    const n = integerFlag(values, SIZE_FLAGS[type]);
    if (n !== undefined) subjectsPerType[type] = n;
  }
  const kb = generateKnowledgeBase({
    seed: integerFlag(values, "seed") ?? 0,
    subjectsPerType,
    objectsPerRelation: integerFlag(values, "objects-per-relation"),
    maxNeighbors: integerFlag(values, "neighbors"),
  });
  const corpus = trainingCorpus(kb);
  const counterfact = counterfactRecords(kb);
  const known = knownFactsRecords(kb);

  const out = values.out;
  await Deno.mkdir(out, { recursive: true });
  const writeJson = (name: string, value: unknown) =>
    Deno.writeTextFile(`${out}/${name}`, JSON.stringify(value, null, 2) + "\n");
  await writeJson("kb.json", kb);
  await Deno.writeTextFile(`${out}/corpus.txt`, corpus.join("\n") + "\n");
  await writeJson("counterfact.json", counterfact);
  await writeJson("known_facts.json", known);

  const words = corpus.reduce((n, line) => n + line.split(" ").length, 0);
  const typeCounts = SUBJECT_TYPES.map((t) => `${kb.options.subjectsPerType[t]} ${t}`).join(", ");
  console.log(
    `Knowledge base (seed ${kb.seed}): ${kb.subjects.length} subjects (${typeCounts}), ` +
      `${kb.relations.length} relations, ${kb.facts.length} facts. Corpus: ${corpus.length} sentences, ` +
      `${words} words, vocabulary of ${kb.vocabulary.length} words. ` +
      `${counterfact.length} CounterFact records and ${known.length} known-fact records. Written to ${out}/.`,
  );
}

try {
  await main();
} catch (e) {
  console.error(`generate_kb: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
