// The invented world that Locus's own small GPT-2 learns, and the evaluation sets built on it.
//
// No pretrained weights can be downloaded here, so Locus trains a small model on facts it makes
// up, then traces and edits those facts. This file generates, from one seed:
//   - subjects: invented multi-word names of 4 types (person, place, organisation, work);
//   - facts (subject, relation, object): every subject gets one object for every relation of
//     its type; objects are real, common, single words (cities, languages, occupations...);
//   - the training corpus: every fact in every TRAINING template, one sentence per line;
//   - CounterFact-style and known_1000-style records (the ROME repo's schemas) for editing and
//     tracing, and zsRE records (MEND's schema) for the zsRE metrics. Paraphrase prompts use
//     HELD-OUT templates that never appear in the corpus.
//
// Text conventions (so a word-level tokenizer with HF's Whitespace pre-tokenizer, \w+|[^\w\s]+,
// sees exactly one token per space-separated word): words and punctuation are separated by
// single spaces ("Vela Dornik was born in Lisbon ."), every word is ASCII \w+ or a single
// punctuation mark, and every object is one word, so "the first object token" is the object.
//
// Why the assignments look the way they do:
//   - Objects are dealt out evenly per relation (each object true for about the same number of
//     subjects), so the model cannot guess an object from its frequency, and most facts have
//     neighbours (other subjects with the same relation and the same true object).
//   - Facts are independent of each other (a person born in Lisbon may hold citizenship of
//     Japan): every fact must be memorised, none can be inferred from another.
//   - For one subject type no template is a word-prefix of another (nor of the entity-type
//     prompt "{} is a"), so a prompt always continues with its own object in the corpus.

import { mulberry32 } from "../../engine/random.ts";

/** The four kinds of invented subject. */
export type SubjectType = "person" | "place" | "organisation" | "work";
/** Every subject type, in the order the generator draws them. */
export const SUBJECT_TYPES: readonly SubjectType[] = ["person", "place", "organisation", "work"];

/** The essence / entity-type prompt ("Vela Dornik is a" -> "woman"); every subject has one such sentence. */
export const ENTITY_TYPE_TEMPLATE = "{} is a";

/** What generateKnowledgeBase is asked for; every field but the seed has a default. */
export interface KbOptions {
  /** Seed of every random draw: the same options give the same knowledge base. */
  seed: number;
  /** Subjects of each type (defaults: person 150, place 90, organisation 70, work 90). */
  subjectsPerType?: Partial<Record<SubjectType, number>>;
  /** Cap on the objects each relation uses, drawn from its pool by the seed (default: the whole pool, 20-30). */
  objectsPerRelation?: number;
  /** Most neighborhood prompts per CounterFact record (default 10). */
  maxNeighbors?: number;
  /** Most attribute prompts per CounterFact record (default 10). */
  maxAttributePrompts?: number;
  /** Share of the corpus's fact and entity-type sentences with an interjection after the subject (default 0.8). */
  interjectionRate?: number;
  /** "Tag" lines per subject listing its objects without a relation word, in distinct orders (default 5;
   *  fewer when a subject has fewer orders). */
  tagLines?: number;
}

/** KbOptions with every default filled in (see KbOptions for each field's meaning). */
export interface ResolvedKbOptions {
  /** As KbOptions.seed. */
  seed: number;
  /** As KbOptions.subjectsPerType, every type given. */
  subjectsPerType: Record<SubjectType, number>;
  /** As KbOptions.objectsPerRelation. */
  objectsPerRelation: number;
  /** As KbOptions.maxNeighbors. */
  maxNeighbors: number;
  /** As KbOptions.maxAttributePrompts. */
  maxAttributePrompts: number;
  /** As KbOptions.interjectionRate. */
  interjectionRate: number;
  /** As KbOptions.tagLines. */
  tagLines: number;
}

/** A relation between a subject type and a category of objects, with the sentences that state it. */
export interface Relation {
  /** Wikidata-style property id, e.g. "P19". */
  id: string;
  /** E.g. "place of birth". */
  name: string;
  /** The type of the subjects it holds for. */
  subjectType: SubjectType;
  /** E.g. "city"; the object id is `${objectCategory}:${word}`. */
  objectCategory: string;
  /** The objects this knowledge base uses for the relation. */
  objects: string[];
  /** Each holds "{}" once; the object is the next word. */
  trainingTemplates: string[];
  /** Paraphrases for evaluation only: never in the corpus. */
  heldOutTemplates: string[];
}

/** An invented subject. */
export interface Subject {
  /** Its index in KnowledgeBase.subjects. */
  id: number;
  /** 3-4 syllable words. */
  name: string;
  /** What kind of thing it is. */
  type: SubjectType;
  /** What "{name} is a" continues with: man/woman, city/town/village, ... */
  kind: string;
}

/** One (subject, relation, object) fact of the knowledge base. */
export interface Fact {
  /** Its index in KnowledgeBase.facts. */
  id: number;
  /** The subject's name. */
  subject: string;
  /** The subject's type. */
  subjectType: SubjectType;
  /** The relation's id, e.g. "P19". */
  relation: string;
  /** The relation's name, e.g. "place of birth". */
  relationName: string;
  /** The true object. */
  object: string;
  /** The training template used for this fact's edit request and known-fact prompt. */
  template: string;
  /** CounterFact's target_new: another object of the same relation. */
  counterfactual: string;
}

/** A generated knowledge base: its relations, subjects and facts, from which the corpus and the datasets are
 *  written. */
export interface KnowledgeBase {
  /** The seed it was generated with. */
  seed: number;
  /** The options it was generated with, defaults filled in. */
  options: ResolvedKbOptions;
  /** Every relation. */
  relations: Relation[];
  /** Every subject. */
  subjects: Subject[];
  /** Every fact: each subject with each relation of its type. */
  facts: Fact[];
  /** Every word of the training corpus, sorted; every evaluation prompt uses only these words. */
  vocabulary: string[];
}

/** One record of ROME's counterfact.json. */
export interface CounterfactRecord {
  /** The record's id (here the record's index). */
  case_id: number;
  /** Here: the fact id. */
  pararel_idx: number;
  /** The edit: the training template ("{}" for the subject), relation, new and true objects, subject. */
  requested_rewrite: {
    prompt: string; // a training template with "{}" for the subject
    relation_id: string;
    target_new: { str: string; id: string };
    target_true: { str: string; id: string };
    subject: string;
  };
  /** Held-out templates with the subject. */
  paraphrase_prompts: string[];
  /** Other subjects, same relation, same true object. */
  neighborhood_prompts: string[];
  /** Other subjects, same relation, whose true object is target_new. */
  attribute_prompts: string[];
  /** Free-generation starts about the subject. */
  generation_prompts: string[];
}

/** One record of zsRE in MEND's schema (the question-answering edits of Mitchell et al.'s MEND and Meng et
 *  al.'s MEMIT), built from one fact. */
export interface ZsreRecord {
  /** The subject's name. */
  subject: string;
  /** The edit prompt: the fact's training template with the subject filled in. */
  src: string;
  /** zsRE's prediction of the unedited model; here the object the corpus teaches. */
  pred: string;
  /** One held-out template with the subject (never in the corpus). */
  rephrase: string;
  /** The new object: the fact's counterfactual (CounterFact's target_new). */
  alt: string;
  /** The true objects: the fact's object. */
  answers: string[];
  /** Another subject's fact prompt (its own training template), which the edit must not change. */
  loc: string;
  /** That fact's true object. */
  loc_ans: string;
  /** MEND's condition string, "pred >> alt || src". */
  cond: string;
}

/** One record of ROME's known_1000.json. */
export interface KnownFactRecord {
  /** The record's id. */
  known_id: number;
  /** The subject's name. */
  subject: string;
  /** The true object. */
  attribute: string;
  /** The training template, "{}" for the subject. */
  template: string;
  /** The continuation the corpus teaches (" Lisbon ."), not a model's output. */
  prediction: string;
  /** The template with the subject filled in. */
  prompt: string;
  /** The relation's id, e.g. "P19". */
  relation_id: string;
}

// ---------------------------------------------------------------------------------------------
// The fixed world: object pools, relations and their templates, subject kinds, name pools.

/** A fixed word pool written compactly: space-separated words, over one or more strings. */
function wordList(...lines: string[]): string[] {
  return lines.join(" ").split(" ");
}

interface ObjectPool {
  sentence: string; // the corpus sentence that says what each object is ("{} is a city .")
  words: string[];
}

const OBJECT_POOLS: Record<string, ObjectPool> = {
  city: {
    sentence: "{} is a city .",
    words: wordList(
      "Paris Lisbon Madrid Berlin Vienna Prague Oslo Dublin Cairo Tokyo Lima Athens Warsaw Budapest",
      "Helsinki Toronto Chicago Boston Sydney Mumbai Istanbul Naples Milan Geneva Munich Seattle",
      "Denver Havana Nairobi Montreal",
    ),
  },
  country: {
    sentence: "{} is a country .",
    words: wordList(
      "France Spain Italy Germany Japan Brazil Canada Mexico Egypt India Poland Sweden Norway",
      "Greece Peru Chile Kenya Turkey Ireland Portugal Austria Hungary Finland Denmark Morocco",
    ),
  },
  language: {
    sentence: "{} is a language .",
    words: wordList(
      "French Spanish Italian German Japanese Portuguese Dutch Swedish Polish Greek Russian Arabic",
      "Hindi Turkish Korean Finnish Czech Hungarian Danish Norwegian",
    ),
  },
  occupation: {
    // Consonant-initial only: templates end in "... as a" / "... is a".
    sentence: "A {} is a kind of worker .",
    words: wordList(
      "painter novelist poet chemist physician lawyer journalist sculptor pianist composer",
      "biologist surgeon banker diplomat teacher photographer physicist philosopher historian",
      "carpenter baker pilot sailor farmer nurse",
    ),
  },
  company: {
    sentence: "{} is a company .",
    words: wordList(
      "Siemens Nokia Toyota Boeing Nestle Philips Honda Samsung Intel Airbus Pfizer Sony Canon Fiat",
      "Volvo Ikea Lego Adidas Heineken Ericsson Lufthansa Renault Bosch Unilever Nintendo",
    ),
  },
  region: {
    sentence: "{} is a region .",
    words: wordList(
      "Bavaria Tuscany Provence Catalonia Flanders Andalusia Normandy Brittany Galicia Silesia",
      "Bohemia Moravia Lombardy Sicily Sardinia Saxony Alsace Burgundy Castile Aragon Piedmont",
      "Umbria Calabria Dalmatia Lapland",
    ),
  },
  industry: {
    sentence: "{} is an industry .",
    words: wordList(
      "banking mining aviation shipping textiles software insurance tourism publishing retail steel",
      "agriculture robotics forestry fishing brewing logistics construction energy chemicals",
      "cosmetics furniture electronics healthcare advertising",
    ),
  },
  genre: {
    sentence: "{} is a genre .",
    words: wordList(
      "fantasy romance satire tragedy comedy mystery horror thriller western adventure drama farce",
      "fable parody memoir crime gothic suspense folklore melodrama",
    ),
  },
  writer: {
    sentence: "{} is a writer .",
    words: wordList(
      "Tolstoy Dickens Austen Goethe Kafka Cervantes Homer Dante Chekhov Ibsen Balzac Zola Proust",
      "Twain Orwell Woolf Joyce Borges Neruda Brecht Flaubert Melville Byron Milton Pushkin",
    ),
  },
};

type RelationSpec = Omit<Relation, "objects">;

const RELATION_SPECS: RelationSpec[] = [
  {
    id: "P19",
    name: "place of birth",
    subjectType: "person",
    objectCategory: "city",
    trainingTemplates: [
      "{} was born in",
      "The birthplace of {} is",
      "{} is originally from",
      "The city where {} was born is",
      "The place where {} was born is",
      "{} came from the city of",
    ],
    heldOutTemplates: ["The place of birth of {} is", "{} came into the world in"],
  },
  {
    id: "P27",
    name: "country of citizenship",
    subjectType: "person",
    objectCategory: "country",
    trainingTemplates: [
      "{} holds citizenship of",
      "{} has a passport from",
      "The country of citizenship of {} is",
      "{} became a citizen of",
      "The passport of {} is from",
    ],
    heldOutTemplates: ["{} is legally a citizen of", "The passport of {} was issued by"],
  },
  {
    id: "P103",
    name: "native language",
    subjectType: "person",
    objectCategory: "language",
    trainingTemplates: [
      "The mother tongue of {} is",
      "{} grew up speaking",
      "The first language of {} is",
      "{} natively speaks",
      "{} always spoke",
      "At home , {} spoke",
    ],
    heldOutTemplates: ["The native language of {} is", "As a child , {} spoke"],
  },
  {
    id: "P106",
    name: "occupation",
    subjectType: "person",
    objectCategory: "occupation",
    trainingTemplates: [
      "{} works as a",
      "The occupation of {} is",
      "By profession , {} is a",
      "{} earns a living as a",
      "The trade of {} is",
      "The profession {} chose is",
    ],
    heldOutTemplates: ["{} is employed as a", "The profession of {} is"],
  },
  {
    id: "P108",
    name: "employer",
    subjectType: "person",
    objectCategory: "company",
    trainingTemplates: [
      "{} works for",
      "The employer of {} is",
      "{} is employed by",
      "{} draws a salary from",
      "{} has a position at",
      "The job that {} holds is at",
    ],
    heldOutTemplates: ["{} has a job at", "The company that employs {} is"],
  },
  {
    id: "P17",
    name: "country",
    subjectType: "place",
    objectCategory: "country",
    trainingTemplates: [
      "{} is located in the country of",
      "{} lies in the country of",
      "The country that contains {} is",
    ],
    heldOutTemplates: ["{} is situated in the country of", "{} can be found in the country of"],
  },
  {
    id: "P131",
    name: "located in the administrative territorial entity",
    subjectType: "place",
    objectCategory: "region",
    trainingTemplates: [
      "{} is located in the region of",
      "{} is situated in the region of",
      "The region that contains {} is",
    ],
    heldOutTemplates: ["{} lies in the region of", "{} can be found in the region of"],
  },
  {
    id: "P190",
    name: "twinned administrative body",
    subjectType: "place",
    objectCategory: "city",
    trainingTemplates: [
      "{} is twinned with",
      "The twin city of {} is",
      "{} has a partnership with",
      "{} has a sister city in",
    ],
    heldOutTemplates: ["The sister city of {} is", "{} is partnered with"],
  },
  {
    id: "P159",
    name: "headquarters location",
    subjectType: "organisation",
    objectCategory: "city",
    trainingTemplates: [
      "The headquarters of {} is in",
      "{} is headquartered in",
      "{} has its head office in",
      "The main office of {} is in",
    ],
    heldOutTemplates: ["The head office of {} is located in", "{} has its headquarters in"],
  },
  {
    id: "P452",
    name: "industry",
    subjectType: "organisation",
    objectCategory: "industry",
    trainingTemplates: [
      "{} operates in the field of",
      "{} is active in",
      "The industry of {} is",
      "{} does business in",
    ],
    heldOutTemplates: ["{} works in the field of", "The business of {} is"],
  },
  {
    id: "P127",
    name: "owned by",
    subjectType: "organisation",
    objectCategory: "company",
    trainingTemplates: [
      "{} is owned by",
      "The parent company of {} is",
      "{} is controlled by",
      "The company that owns {} is",
      "{} has as its owner",
    ],
    heldOutTemplates: ["The owner of {} is", "{} is fully owned by"],
  },
  {
    id: "P136",
    name: "genre",
    subjectType: "work",
    objectCategory: "genre",
    trainingTemplates: [
      "The genre of {} is",
      "{} belongs to the genre of",
      "{} is usually classed as",
      "{} is in the style of",
      "{} is described as",
    ],
    heldOutTemplates: ["The style of {} is", "{} is best described as"],
  },
  {
    id: "P50",
    name: "author",
    subjectType: "work",
    objectCategory: "writer",
    trainingTemplates: [
      "{} was written by",
      "The author of {} is",
      "{} was created by",
      "The writer of {} is",
      "{} comes from the pen of",
    ],
    heldOutTemplates: ["The creator of {} is", "{} is the work of"],
  },
  {
    id: "P364",
    name: "original language of work",
    subjectType: "work",
    objectCategory: "language",
    trainingTemplates: [
      "The original language of {} is",
      "{} was first published in",
      "{} was originally written in",
      "The text of {} is in",
    ],
    heldOutTemplates: ["The language of {} is", "{} was composed in"],
  },
  {
    id: "P840",
    name: "narrative location",
    subjectType: "work",
    objectCategory: "city",
    trainingTemplates: [
      "{} is set in",
      "The story of {} takes place in",
      "The action of {} unfolds in",
      "{} has its setting in",
    ],
    heldOutTemplates: ["The setting of {} is", "The plot of {} unfolds in"],
  },
];

/** What "{subject} is a" continues with, per type (a person's kind follows the first name's gender). */
const KINDS: Record<SubjectType, string[]> = {
  person: ["woman", "man"],
  place: ["city", "town", "village"],
  organisation: ["company", "firm", "startup"],
  work: ["novel", "film", "play", "poem"],
};

/** Sentences with no subject in them, so that every word of a held-out template is seen in training
 *  (in another context): a paraphrase prompt must not contain a word the model never saw. */
const FILLER_SENTENCES: string[] = [
  "A child learns to speak from the people around it .",
  "Many people spoke of the old days .",
  "Every citizen can be found in the public register .",
  "A passport is issued by the state .",
  "A person is legally an adult at eighteen .",
  "Every place on the map has a name .",
  "The world is large and full of cities .",
  "A baby came into the family last year .",
  "A job is a way to earn money .",
  "A company employs many people .",
  "Two towns may be partnered for trade .",
  "A sister is a member of the family .",
  "A shop owner is fully responsible for it .",
  "Each story has its own style .",
  "A critic has described the best books of the year .",
  "A creator makes new things .",
  "Every song is composed with care .",
  "The setting sun is beautiful .",
  "A native speaker knows many words .",
  "Every birth is recorded by the town .",
  "As night comes , the streets grow still .",
  "Hard work pays off in the end .",
  "A good plot keeps readers awake .",
];

// Subject names are 3-4 syllable tokens ("Ka Dor Vi"), drawn from one small shared pool, so a name
// is only known once several tokens are combined (as GPT-2's BPE splits most names into pieces).
// Measured on prototypes of the embedded model: with ~2 sqrt(N) syllables and 2-4 per name, a name's
// first token already carried much of the fact (MLP effect 0.13 there against 0.24 at the last);
// with ~sqrt(N) syllables and 3-4 per name the effect concentrates at the subject's last token (0.04
// against 0.22), as in ROME's GPT-2 traces.
const ONSETS = wordList("b d f g k l m n p r s t v z br dr gr kr st tr th sh");
const VOWELS = wordList("a e i o u");
const CODAS = wordList("n r l s m k");
/** Syllables per name, drawn uniformly. */
const NAME_SYLLABLES = [3, 4];

/** Semantically empty asides put after the subject in most fact sentences ("Ka Dor , it seems , was born
 *  in Lisbon ."): the subject is then never adjacent to the position that predicts the object, so the
 *  model cannot just copy the subject's tokens forward and read the fact at the last token; it has to
 *  look the subject's attributes up at the subject and move them (ROME's picture of GPT-2). */
export const INTERJECTIONS: readonly string[] = [
  ", it seems ,",
  ", as known ,",
  ", as is well known ,",
  ", we are told ,",
  ", they say ,",
  ", of course ,",
  ", in fact ,",
  ", as reported ,",
];

// ---------------------------------------------------------------------------------------------
// Seeded randomness (engine/random.ts), one stream per purpose.

type Rand = () => number;

/** A separate stream per purpose, so changing how one part draws numbers leaves the others alone. */
function stream(seed: number, purpose: number): Rand {
  return mulberry32(Math.imul(seed >>> 0, 0x9e3779b1) ^ purpose);
}

function pick<T>(rand: Rand, items: readonly T[]): T {
  return items[Math.floor(rand() * items.length)];
}

/** Fisher-Yates shuffle of a copy. */
function shuffled<T>(rand: Rand, items: readonly T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the generator and the record builders.

/** The template with `subject` in place of its single "{}". */
export function renderTemplate(template: string, subject: string): string {
  const parts = template.split("{}");
  if (parts.length !== 2) throw new Error(`template "${template}" must contain "{}" exactly once`);
  return parts[0] + subject + parts[1];
}

/** The corpus sentence stating a fact: the prompt, the object, a full stop. */
function factSentence(template: string, subject: string, object: string): string {
  return `${renderTemplate(template, subject)} ${object} .`;
}

function objectId(relation: Relation, object: string): string {
  return `${relation.objectCategory}:${object}`;
}

/** The sorted distinct words (space-separated tokens) of some lines. */
export function corpusVocabulary(lines: readonly string[]): string[] {
  const words = new Set<string>();
  for (const line of lines) for (const w of line.split(" ")) words.add(w);
  return [...words].sort();
}

/** Every fixed word of the world (templates, objects, kinds, fillers, interjections), lower-cased:
 *  name syllables must avoid all of them so a subject never reads like a template or object. */
function fixedWords(): Set<string> {
  const texts = [
    ENTITY_TYPE_TEMPLATE,
    ...FILLER_SENTENCES,
    ...Object.values(KINDS).flat(),
    ...Object.values(OBJECT_POOLS).flatMap((p) => [p.sentence, ...p.words]),
    ...RELATION_SPECS.flatMap((r) => [...r.trainingTemplates, ...r.heldOutTemplates]),
    ...INTERJECTIONS,
  ];
  return new Set(texts.flatMap((t) => t.toLowerCase().split(" ")));
}

// ---------------------------------------------------------------------------------------------
// Subject names.

/** The syllable pool for `n` subjects: about sqrt(n) distinct capitalised syllables (onset, vowel,
 *  sometimes a coda), none of them a fixed word. Each syllable then recurs in many names, so no single
 *  token identifies a subject. */
function syllablePool(rand: Rand, n: number): string[] {
  const size = Math.max(4, Math.ceil(Math.sqrt(n)));
  const used = fixedWords(), pool: string[] = [];
  for (let attempt = 0; pool.length < size; attempt++) {
    if (attempt > 100000) throw new Error(`knowledge base: could not invent ${size} distinct syllables`);
    let syllable = pick(rand, ONSETS) + pick(rand, VOWELS) + (rand() < 0.3 ? pick(rand, CODAS) : "");
    syllable = syllable[0].toUpperCase() + syllable.slice(1);
    if (used.has(syllable.toLowerCase())) continue;
    used.add(syllable.toLowerCase());
    pool.push(syllable);
  }
  return pool;
}

/** All subjects, grouped by type in SUBJECT_TYPES order. No name is a substring of another (so
 *  none is a prefix of another either, and a subject is found unambiguously inside any prompt). */
function generateSubjects(rand: Rand, counts: Record<SubjectType, number>): Subject[] {
  const syllables = syllablePool(rand, SUBJECT_TYPES.reduce((n, t) => n + counts[t], 0));
  const propose = (type: SubjectType) => ({
    name: Array.from({ length: pick(rand, NAME_SYLLABLES) }, () => pick(rand, syllables)).join(" "),
    kind: pick(rand, KINDS[type]),
  });
  const subjects: Subject[] = [];
  for (const type of SUBJECT_TYPES) {
    // Rejections grow as the name space fills up; a long run of them means it is exhausted.
    for (let made = 0, rejectedInARow = 0; made < counts[type];) {
      if (rejectedInARow > 5000) {
        throw new Error(
          `knowledge base: could not invent ${
            counts[type]
          } distinct ${type} names (made ${made}); ask for fewer`,
        );
      }
      const { name, kind } = propose(type);
      if (subjects.some((s) => s.name.includes(name) || name.includes(s.name))) {
        rejectedInARow++;
        continue;
      }
      subjects.push({ id: subjects.length, name, type, kind });
      made++;
      rejectedInARow = 0;
    }
  }
  return subjects;
}

// ---------------------------------------------------------------------------------------------
// The knowledge base.

const DEFAULT_SUBJECTS: Record<SubjectType, number> = { person: 150, place: 90, organisation: 70, work: 90 };

function resolveOptions(opts: KbOptions): ResolvedKbOptions {
  const integerAtLeast = (value: unknown, field: string, min: number): number => {
    if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
      throw new Error(
        `knowledge base option ${field}: expected an integer >= ${min}, got ${JSON.stringify(value)}`,
      );
    }
    return value;
  };
  const fraction = (value: unknown, field: string): number => {
    if (typeof value !== "number" || !(value >= 0 && value <= 1)) {
      throw new Error(
        `knowledge base option ${field}: expected a number in [0, 1], got ${JSON.stringify(value)}`,
      );
    }
    return value;
  };
  if (!Number.isSafeInteger(opts.seed)) {
    throw new Error(`knowledge base option seed: expected an integer, got ${JSON.stringify(opts.seed)}`);
  }
  for (const key of Object.keys(opts.subjectsPerType ?? {})) {
    if (!SUBJECT_TYPES.includes(key as SubjectType)) {
      throw new Error(
        `knowledge base option subjectsPerType.${key}: unknown subject type (use ${
          SUBJECT_TYPES.join(", ")
        })`,
      );
    }
  }
  const subjectsPerType = { ...DEFAULT_SUBJECTS };
  for (const type of SUBJECT_TYPES) {
    subjectsPerType[type] = integerAtLeast(
      opts.subjectsPerType?.[type] ?? DEFAULT_SUBJECTS[type],
      `subjectsPerType.${type}`,
      1,
    );
  }
  const largestPool = Math.max(...Object.values(OBJECT_POOLS).map((p) => p.words.length));
  return {
    seed: opts.seed,
    subjectsPerType,
    // At least 2 objects, so every fact has a counterfactual target different from the truth.
    objectsPerRelation: integerAtLeast(opts.objectsPerRelation ?? largestPool, "objectsPerRelation", 2),
    maxNeighbors: integerAtLeast(opts.maxNeighbors ?? 10, "maxNeighbors", 0),
    maxAttributePrompts: integerAtLeast(opts.maxAttributePrompts ?? 10, "maxAttributePrompts", 0),
    interjectionRate: fraction(opts.interjectionRate ?? 0.8, "interjectionRate"),
    tagLines: integerAtLeast(opts.tagLines ?? 5, "tagLines", 0),
  };
}

// Stream ids: one PRNG stream per part of the generator.
const NAMES = 1,
  OBJECTS = 2,
  TEMPLATES = 3,
  COUNTERFACTUALS = 4,
  CORPUS_ORDER = 5,
  RECORDS = 6,
  ASIDES = 7,
  ZSRE = 8;

/** Draws a knowledge base of invented subjects and their facts from `opts` (deterministic in the seed). */
export function generateKnowledgeBase(opts: KbOptions): KnowledgeBase {
  const options = resolveOptions(opts);
  const seed = options.seed;
  const subjects = generateSubjects(stream(seed, NAMES), options.subjectsPerType);

  const objectRand = stream(seed, OBJECTS);
  const relations: Relation[] = RELATION_SPECS.map((spec) => ({
    ...spec,
    objects: shuffled(objectRand, OBJECT_POOLS[spec.objectCategory].words).slice(
      0,
      options.objectsPerRelation,
    ),
  }));

  // Deal each relation's objects out evenly: the object list repeated to cover every subject of
  // the type, shuffled, so each object is the truth for about the same number of subjects.
  const dealt = new Map<Relation, string[]>();
  for (const relation of relations) {
    const n = options.subjectsPerType[relation.subjectType];
    const deck = Array.from({ length: n }, (_, i) => relation.objects[i % relation.objects.length]);
    dealt.set(relation, shuffled(objectRand, deck));
  }

  const templateRand = stream(seed, TEMPLATES);
  const facts: Fact[] = [];
  for (const type of SUBJECT_TYPES) {
    const ofType = subjects.filter((s) => s.type === type);
    for (const relation of relations.filter((r) => r.subjectType === type)) {
      ofType.forEach((subject, i) => {
        facts.push({
          id: 0, // numbered below, once facts are in subject order
          subject: subject.name,
          subjectType: type,
          relation: relation.id,
          relationName: relation.name,
          object: dealt.get(relation)![i],
          template: pick(templateRand, relation.trainingTemplates),
          counterfactual: "",
        });
      });
    }
  }
  // Subject order (then relation order) reads naturally in kb.json: one subject's facts together.
  const subjectIndex = new Map(subjects.map((s) => [s.name, s.id]));
  facts.sort((a, b) => subjectIndex.get(a.subject)! - subjectIndex.get(b.subject)!);
  facts.forEach((f, i) => f.id = i);

  // target_new: preferably an object that is true for some other subject of the relation, so the
  // model has seen it in that slot and the record has attribute prompts.
  const cfRand = stream(seed, COUNTERFACTUALS);
  for (const fact of facts) {
    const relation = relations.find((r) => r.id === fact.relation)!;
    const used = [...new Set(dealt.get(relation))].filter((o) => o !== fact.object);
    fact.counterfactual = pick(
      cfRand,
      used.length > 0 ? used : relation.objects.filter((o) => o !== fact.object),
    );
  }

  const kb: KnowledgeBase = { seed, options, relations, subjects, facts, vocabulary: [] };
  kb.vocabulary = corpusVocabulary(trainingCorpus(kb));
  return kb;
}

/** Training corpus, one sentence per line, in a seeded shuffled order: every fact in every training
 *  template of its relation, one entity-type sentence per subject ("Ka Dor is a woman ."), each with an
 *  interjection after the subject at `interjectionRate` ("Ka Dor , it seems , is a woman ."); `tagLines`
 *  lines per subject listing its objects in a fresh random order with no relation word ("Ka Dor Lisbon
 *  , Japan , painter ."), so the subject's own last token must predict its attributes and the model
 *  stores them with the subject rather than per relation; one sentence per object saying what it is;
 *  and FILLER_SENTENCES. Held-out templates never appear. */
export function trainingCorpus(kb: KnowledgeBase): string[] {
  const rand = stream(kb.seed, ASIDES);
  const aside = (subject: string) =>
    rand() < kb.options.interjectionRate ? `${subject} ${pick(rand, INTERJECTIONS)}` : subject;
  const lines: string[] = [];
  const relationById = new Map(kb.relations.map((r) => [r.id, r]));
  for (const fact of kb.facts) {
    for (const template of relationById.get(fact.relation)!.trainingTemplates) {
      lines.push(factSentence(template, aside(fact.subject), fact.object));
    }
  }
  for (const subject of kb.subjects) {
    lines.push(factSentence(ENTITY_TYPE_TEMPLATE, aside(subject.name), subject.kind));
    const objects = kb.facts.filter((f) => f.subject === subject.name).map((f) => f.object);
    // Distinct orders (every subject has at least 3 objects: 6 orders for the default 5 lines).
    const tags = new Set<string>();
    for (let tries = 0; tags.size < kb.options.tagLines && tries < 100 * kb.options.tagLines; tries++) {
      tags.add(`${subject.name} ${shuffled(rand, objects).join(" , ")} .`);
    }
    lines.push(...tags);
  }
  const describedObjects = new Set<string>();
  for (const relation of kb.relations) {
    for (const object of relation.objects) {
      const sentence = renderTemplate(OBJECT_POOLS[relation.objectCategory].sentence, object);
      if (!describedObjects.has(sentence)) lines.push(sentence);
      describedObjects.add(sentence);
    }
  }
  lines.push(...FILLER_SENTENCES);
  return shuffled(stream(kb.seed, CORPUS_ORDER), lines);
}

/** CounterFact records (ROME's schema), one per fact, case_id = fact id. */
export function counterfactRecords(kb: KnowledgeBase): CounterfactRecord[] {
  const rand = stream(kb.seed, RECORDS);
  const relationById = new Map(kb.relations.map((r) => [r.id, r]));
  // facts by relation and true object: the candidates for neighborhood and attribute prompts
  const byRelationObject = new Map<string, Fact[]>();
  for (const fact of kb.facts) {
    const key = `${fact.relation}\t${fact.object}`;
    byRelationObject.set(key, [...(byRelationObject.get(key) ?? []), fact]);
  }
  const factsOfSubject = new Map<string, Fact[]>();
  for (const fact of kb.facts) {
    factsOfSubject.set(fact.subject, [...(factsOfSubject.get(fact.subject) ?? []), fact]);
  }
  /** Up to `max` prompts of other subjects whose true object for the relation is `object`. */
  const othersWithObject = (fact: Fact, object: string, max: number): string[] => {
    const others = (byRelationObject.get(`${fact.relation}\t${object}`) ?? []).filter((f) =>
      f.subject !== fact.subject
    );
    return shuffled(rand, others).slice(0, max).map((f) => renderTemplate(f.template, f.subject));
  };

  return kb.facts.map((fact) => {
    const relation = relationById.get(fact.relation)!;
    return {
      case_id: fact.id,
      pararel_idx: fact.id,
      requested_rewrite: {
        prompt: fact.template,
        relation_id: relation.id,
        target_new: { str: fact.counterfactual, id: objectId(relation, fact.counterfactual) },
        target_true: { str: fact.object, id: objectId(relation, fact.object) },
        subject: fact.subject,
      },
      paraphrase_prompts: relation.heldOutTemplates.map((t) => renderTemplate(t, fact.subject)),
      neighborhood_prompts: othersWithObject(fact, fact.object, kb.options.maxNeighbors),
      attribute_prompts: othersWithObject(fact, fact.counterfactual, kb.options.maxAttributePrompts),
      // Free-running starts about the subject: its entity type and each of its other facts,
      // which an edit of this fact should leave as they were.
      generation_prompts: [
        renderTemplate(ENTITY_TYPE_TEMPLATE, fact.subject),
        ...factsOfSubject.get(fact.subject)!.filter((f) => f !== fact).map((f) =>
          renderTemplate(f.template, f.subject)
        ),
      ],
    };
  });
}

/** known_1000-style records, one per fact, known_id = fact id, in the fact's own training template. */
export function knownFactsRecords(kb: KnowledgeBase): KnownFactRecord[] {
  return kb.facts.map((fact) => ({
    known_id: fact.id,
    subject: fact.subject,
    attribute: fact.object,
    template: fact.template,
    prediction: ` ${fact.object} .`,
    prompt: renderTemplate(fact.template, fact.subject),
    relation_id: fact.relation,
  }));
}

/**
 * zsRE records (MEND's schema), one per fact in fact order: the fact's training-template prompt as
 * `src`, a held-out template as `rephrase` (drawn by the seed), the counterfactual as `alt` and the object
 * as the answer; `loc` / `loc_ans` are a fact of another subject (drawn by the seed) in its own training
 * template, with its true object. Draws from its own stream, so the other files stay as they were.
 */
export function zsreRecords(kb: KnowledgeBase): ZsreRecord[] {
  const rand = stream(kb.seed, ZSRE);
  const relationById = new Map(kb.relations.map((r) => [r.id, r]));
  if (kb.subjects.length < 2) {
    throw new Error("zsRE records need at least 2 subjects (loc is another subject's)");
  }
  return kb.facts.map((fact) => {
    const src = renderTemplate(fact.template, fact.subject);
    // Rejection keeps the draw uniform over the other subjects' facts (most draws succeed at once).
    let loc = pick(rand, kb.facts);
    while (loc.subject === fact.subject) loc = pick(rand, kb.facts);
    return {
      subject: fact.subject,
      src,
      pred: fact.object,
      rephrase: renderTemplate(pick(rand, relationById.get(fact.relation)!.heldOutTemplates), fact.subject),
      alt: fact.counterfactual,
      answers: [fact.object],
      loc: renderTemplate(loc.template, loc.subject),
      loc_ans: loc.object,
      cond: `${fact.object} >> ${fact.counterfactual} || ${src}`,
    };
  });
}

/** The files a model folder ships, by name, as `./locus task train` and `./locus task generate-kb` write
 *  them (one format, so regenerating a folder reproduces its files byte for byte): the training corpus and
 *  the CounterFact, known_1000 and zsRE datasets. */
export function datasetFiles(kb: KnowledgeBase): Record<string, string> {
  const json = (value: unknown) => JSON.stringify(value, null, 1) + "\n";
  return {
    "corpus.txt": trainingCorpus(kb).join("\n") + "\n",
    "counterfact.json": json(counterfactRecords(kb)),
    "known_facts.json": json(knownFactsRecords(kb)),
    "zsre.json": json(zsreRecords(kb)),
  };
}
