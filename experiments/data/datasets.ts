// Fact-editing datasets, validated and normalised into one EditCase type.
//
// Supported schemas (one JSON array of records per file):
//   counterfact           ROME's counterfact.json: case_id, requested_rewrite {prompt with "{}", subject,
//                         target_new.str, target_true.str, relation_id}, paraphrase_prompts,
//                         neighborhood_prompts (answer: target_true), attribute_prompts (answer:
//                         target_new), generation_prompts. Locus's own weights/*/counterfact.json too.
//   easyedit_counterfact  EasyEdit's reduced CounterFact splits: case_id, prompt (subject filled in),
//                         subject, target_new, ground_truth, rephrase_prompt, locality_prompt,
//                         locality_ground_truth.
//   known_1000            ROME's known facts: known_id, subject, attribute, template, prediction,
//                         prompt, relation_id.
//   zsre                  zsRE in MEND's schema: subject, src, pred, rephrase, alt (the new answer),
//                         answers (the true ones), loc, loc_ans, cond; optionally EasyEdit's
//                         portability {"New Question", "New Answer"}.
//   knowedit              KnowEdit-style: subject, prompt, target_new, ground_truth?, rephrase(_prompt)?,
//                         portability {kind: [{prompt, ground_truth}]}, locality {kind: [...]}.
//
// Every problem is reported as `file: record i (id): field "a.b[2]" <what is wrong>`, so a broken
// download or a hand-edited file points at the exact place.

/** The dataset schemas Locus reads. */
export type DatasetFormat = "counterfact" | "easyedit_counterfact" | "known_1000" | "zsre" | "knowedit";
/** Every dataset schema, in the order they are detected. */
export const DATASET_FORMATS: readonly DatasetFormat[] = [
  "counterfact",
  "easyedit_counterfact",
  "known_1000",
  "zsre",
  "knowedit",
];

/** A prompt with the answer expected after it. */
export interface Probe {
  /** The prompt, no answer. */
  prompt: string;
  /** The expected answer, trimmed. */
  answer: string;
  /** Where it came from: "neighborhood", "locality", or a KnowEdit kind such as "Reasoning". */
  kind: string;
}

/** One fact to edit (or, for known_1000, to trace), whatever file it came from. */
export interface EditCase {
  /** "<format>:<record id>", e.g. "counterfact:17"; records without an id use their index. */
  id: string;
  /** The file's format. */
  format: DatasetFormat;
  /** Position of the record in its file. */
  recordIndex: number;
  /** The subject, as it occurs in the prompt. */
  subject: string;
  /** The prompt with the subject filled in (no answer). */
  prompt: string;
  /** The prompt with "{}" in place of the subject, or null when the subject does not occur in it. */
  template: string | null;
  /** The requested new object, trimmed; null when the dataset has none (known_1000) or it is empty. */
  targetNew: string | null;
  /** The true object, trimmed; null when unknown. */
  targetTrue: string | null;
  /** The relation (Wikidata property id), when the dataset gives one. */
  relationId: string | null;
  /** Rephrasings of the prompt about the same subject (the answer should be targetNew after the edit). */
  paraphrases: string[];
  /** Prompts about other subjects whose answers the edit must not change. */
  neighborhood: Probe[];
  /** Prompts whose answers should follow from the edit (reasoning, aliases, ...). */
  portability: Probe[];
  /** Prompts about other subjects whose true answer is targetNew (CounterFact's attribute prompts). */
  attributePrompts: string[];
  /** Free-generation starts about the subject (CounterFact). */
  generationPrompts: string[];
}

/** A dataset record Locus refuses: the file, the record and the field are named. */
export class DatasetError extends Error {
  /** Names the error class in messages and stack traces. */
  override name = "DatasetError";
}

/** `file: record i (id)`: how every command names a dataset record in a message. */
export function recordLabel(source: string, c: EditCase): string {
  return `${source}: record ${c.recordIndex} (${c.id})`;
}

/** Runs `check` on one record's data; its error comes back as a DatasetError naming the record. */
export function checkRecord<T>(source: string, c: EditCase, check: () => T): T {
  try {
    return check();
  } catch (e) {
    throw new DatasetError(`${recordLabel(source, c)}: ${(e as Error).message}`);
  }
}

// ------------------------------------------------------------------------------------------------
// Field access with errors that name the file, record and field

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.length > 60 ? v.slice(0, 57) + "..." : v)}`;
  }
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One record being read: knows where it is, so every complaint can say so. */
class RecordReader {
  label: string;
  constructor(readonly source: string, readonly index: number, readonly record: Record<string, unknown>) {
    this.label = `record ${index}`;
  }

  fail(field: string, problem: string): never {
    throw new DatasetError(`${this.source}: ${this.label}: field "${field}" ${problem}`);
  }

  /** The value at a dotted path ("requested_rewrite.target_new.str"). */
  get(path: string): unknown {
    let v: unknown = this.record;
    for (const key of path.split(".")) v = isObject(v) ? v[key] : undefined;
    return v;
  }

  has(path: string): boolean {
    return this.get(path) !== undefined;
  }

  string(path: string, o: { nonEmpty?: boolean } = {}): string {
    const v = this.get(path);
    if (typeof v !== "string") this.fail(path, `must be a string, got ${describe(v)}`);
    if ((o.nonEmpty ?? true) && v.trim() === "") this.fail(path, "must not be empty");
    return v;
  }

  integer(path: string): number {
    const v = this.get(path);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      this.fail(path, `must be an integer >= 0, got ${describe(v)}`);
    }
    return v;
  }

  /** An array of non-empty strings (`allowSingle`: a lone string counts as a list of one). */
  strings(path: string, o: { optional?: boolean; allowSingle?: boolean } = {}): string[] {
    const v = this.get(path);
    if (v === undefined && o.optional) return [];
    if (typeof v === "string" && o.allowSingle) {
      return v.trim() === "" ? this.fail(path, "must not be empty") : [v];
    }
    if (!Array.isArray(v)) this.fail(path, `must be an array of strings, got ${describe(v)}`);
    return v.map((item, i) => {
      if (typeof item !== "string" || item.trim() === "") {
        this.fail(`${path}[${i}]`, `must be a non-empty string, got ${describe(item)}`);
      }
      return item;
    });
  }

  /** A template with exactly one "{}". */
  template(path: string): string {
    const t = this.string(path);
    if (t.split("{}").length !== 2) this.fail(path, `must contain "{}" exactly once, got ${describe(t)}`);
    return t;
  }
}

/** The prompt with its first occurrence of the subject replaced by "{}", or null if absent. */
export function templateOf(prompt: string, subject: string): string | null {
  const at = prompt.indexOf(subject);
  return at < 0 ? null : prompt.slice(0, at) + "{}" + prompt.slice(at + subject.length);
}

function emptyCase(
  format: DatasetFormat,
  r: RecordReader,
  id: string | number,
  subject: string,
  prompt: string,
): EditCase {
  return {
    id: `${format}:${id}`,
    format,
    recordIndex: r.index,
    subject,
    prompt,
    template: templateOf(prompt, subject),
    targetNew: null,
    targetTrue: null,
    relationId: null,
    paraphrases: [],
    neighborhood: [],
    portability: [],
    attributePrompts: [],
    generationPrompts: [],
  };
}

/** Targets are stored trimmed: scorers add the leading space themselves (targetIds(tok, prompt, target)). */
function target(s: string): string | null {
  const t = s.trim();
  return t === "" ? null : t;
}

// ------------------------------------------------------------------------------------------------
// One converter per schema

function fromCounterfact(r: RecordReader): EditCase {
  const id = r.integer("case_id");
  r.label = `record ${r.index} (case_id ${id})`;
  if (!isObject(r.get("requested_rewrite"))) {
    r.fail("requested_rewrite", `must be an object, got ${describe(r.get("requested_rewrite"))}`);
  }
  const template = r.template("requested_rewrite.prompt");
  const subject = r.string("requested_rewrite.subject");
  const targetTrue = r.string("requested_rewrite.target_true.str");
  const c = emptyCase("counterfact", r, id, subject, template.replace("{}", subject));
  c.template = template;
  c.targetNew = target(r.string("requested_rewrite.target_new.str"));
  c.targetTrue = target(targetTrue);
  c.relationId = r.has("requested_rewrite.relation_id") ? r.string("requested_rewrite.relation_id") : null;
  c.paraphrases = r.strings("paraphrase_prompts");
  c.neighborhood = r.strings("neighborhood_prompts").map((prompt) => ({
    prompt,
    answer: c.targetTrue!,
    kind: "neighborhood",
  }));
  c.attributePrompts = r.strings("attribute_prompts", { optional: true });
  c.generationPrompts = r.strings("generation_prompts", { optional: true });
  return c;
}

/** Pairs prompt and answer lists of equal length (EasyEdit allows a single string or a list). */
function pairedProbes(r: RecordReader, promptField: string, answerField: string, kind: string): Probe[] {
  const prompts = r.strings(promptField, { allowSingle: true });
  const answers = r.strings(answerField, { allowSingle: true });
  if (prompts.length !== answers.length) {
    r.fail(answerField, `has ${answers.length} answers for ${prompts.length} prompts in "${promptField}"`);
  }
  return prompts.map((prompt, i) => ({ prompt, answer: answers[i].trim(), kind }));
}

function fromEasyEditCounterfact(r: RecordReader): EditCase {
  const id = r.integer("case_id");
  r.label = `record ${r.index} (case_id ${id})`;
  const c = emptyCase("easyedit_counterfact", r, id, r.string("subject"), r.string("prompt"));
  c.targetNew = target(r.string("target_new"));
  c.targetTrue = target(r.string("ground_truth"));
  c.paraphrases = r.strings("rephrase_prompt", { allowSingle: true });
  c.neighborhood = pairedProbes(r, "locality_prompt", "locality_ground_truth", "locality");
  return c;
}

function fromKnown(r: RecordReader): EditCase {
  const id = r.integer("known_id");
  r.label = `record ${r.index} (known_id ${id})`;
  const subject = r.string("subject");
  const template = r.template("template");
  const prompt = r.string("prompt");
  r.string("prediction", { nonEmpty: false });
  const c = emptyCase("known_1000", r, id, subject, prompt);
  // known_1000's prompt is its template, sometimes extended by the first predicted words
  // ("{} is located in the continent" + " of"); keep the subject where the template puts it.
  const rendered = template.replace("{}", subject);
  if (prompt.startsWith(rendered)) c.template = template + prompt.slice(rendered.length);
  c.targetTrue = target(r.string("attribute"));
  c.relationId = r.string("relation_id");
  return c;
}

function fromZsre(r: RecordReader): EditCase {
  const c = emptyCase("zsre", r, r.index, r.string("subject"), r.string("src"));
  r.string("pred", { nonEmpty: false });
  c.targetNew = target(r.string("alt", { nonEmpty: false }));
  const answers = r.strings("answers");
  if (answers.length === 0) r.fail("answers", "must list at least one answer");
  c.targetTrue = target(answers[0]);
  c.paraphrases = [r.string("rephrase")];
  c.neighborhood = [{ prompt: r.string("loc"), answer: r.string("loc_ans").trim(), kind: "locality" }];
  if (r.has("portability")) {
    c.portability = [{
      prompt: r.string("portability.New Question"),
      answer: r.string("portability.New Answer").trim(),
      kind: "New Question",
    }];
  }
  return c;
}

/** KnowEdit answers are a string, a list of aliases, or a list of alias lists: the first alias. */
function firstAnswer(r: RecordReader, path: string, v: unknown): string {
  let a = v;
  while (Array.isArray(a) && a.length > 0) a = a[0];
  if (typeof a !== "string" || a.trim() === "") {
    r.fail(path, `must be a non-empty string or list of them, got ${describe(v)}`);
  }
  return a.trim();
}

/** {kind: [{prompt, ground_truth}, ...]} -> probes tagged with their kind. */
function probeGroups(r: RecordReader, field: string): Probe[] {
  const groups = r.get(field);
  if (groups === undefined) return [];
  if (!isObject(groups)) {
    r.fail(field, `must be an object of {kind: [{prompt, ground_truth}]}, got ${describe(groups)}`);
  }
  return Object.entries(groups).flatMap(([kind, items]) => {
    const path = `${field}.${kind}`;
    const list = isObject(items) ? [items] : items; // a single probe may stand alone
    if (!Array.isArray(list)) {
      r.fail(path, `must be a list of {prompt, ground_truth}, got ${describe(items)}`);
    }
    return list.map((item, i) => {
      const at = `${path}[${i}]`;
      if (!isObject(item)) r.fail(at, `must be an object {prompt, ground_truth}, got ${describe(item)}`);
      const prompt = firstAnswer(r, `${at}.prompt`, item.prompt);
      return { prompt, answer: firstAnswer(r, `${at}.ground_truth`, item.ground_truth), kind };
    });
  });
}

function fromKnowEdit(r: RecordReader): EditCase {
  const id = r.has("case_id") ? r.integer("case_id") : r.index;
  if (r.has("case_id")) r.label = `record ${r.index} (case_id ${id})`;
  if (!r.has("subject") && r.has("concept")) {
    r.fail("subject", "is missing (WikiBio's concept/text/labels schema is not supported)");
  }
  const c = emptyCase("knowedit", r, id, r.string("subject"), r.string("prompt"));
  c.targetNew = target(r.string("target_new"));
  const truth = r.get("ground_truth");
  c.targetTrue = truth === undefined || truth === null ? null : target(firstAnswer(r, "ground_truth", truth));
  for (const field of ["rephrase", "rephrase_prompt"]) {
    c.paraphrases.push(...r.strings(field, { optional: true, allowSingle: true }));
  }
  c.portability = probeGroups(r, "portability");
  c.neighborhood = probeGroups(r, "locality");
  return c;
}

const CONVERTERS: Record<DatasetFormat, (r: RecordReader) => EditCase> = {
  counterfact: fromCounterfact,
  easyedit_counterfact: fromEasyEditCounterfact,
  known_1000: fromKnown,
  zsre: fromZsre,
  knowedit: fromKnowEdit,
};

/** Guesses the schema from the keys of the first record. */
export function detectFormat(record: unknown, source = "dataset"): DatasetFormat {
  if (!isObject(record)) {
    throw new DatasetError(`${source}: record 0 is ${describe(record)}, expected an object`);
  }
  const has = (k: string) => k in record;
  if (has("requested_rewrite")) return "counterfact";
  if (has("known_id")) return "known_1000";
  if (has("src") && has("alt")) return "zsre";
  if (isObject(record.portability) || isObject(record.locality)) return "knowedit";
  if (has("rephrase_prompt") && has("locality_prompt")) return "easyedit_counterfact";
  throw new DatasetError(
    `${source}: cannot tell the schema from record 0's fields (${Object.keys(record).join(", ")}); ` +
      `pass one of ${DATASET_FORMATS.join(", ")}`,
  );
}

/** A dataset file's format and its cases. */
export interface LoadedDataset {
  /** The format, detected from the records. */
  format: DatasetFormat;
  /** Every record, in file order. */
  cases: EditCase[];
}

/** Parses and validates a dataset file's text. `source` names it in errors (usually its path). */
export function parseDataset(text: string, source: string, format?: DatasetFormat): LoadedDataset {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new DatasetError(`${source}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(root)) {
    throw new DatasetError(`${source}: expected a JSON array of records, got ${describe(root)}`);
  }
  if (root.length === 0) throw new DatasetError(`${source}: the file holds no records`);
  if (format !== undefined && !DATASET_FORMATS.includes(format)) {
    throw new DatasetError(`${source}: unknown format "${format}"; known: ${DATASET_FORMATS.join(", ")}`);
  }
  const fmt = format ?? detectFormat(root[0], source);
  const convert = CONVERTERS[fmt];
  const seen = new Map<string, number>();
  const cases = root.map((record, i) => {
    if (!isObject(record)) {
      throw new DatasetError(`${source}: record ${i} is ${describe(record)}, expected an object`);
    }
    const c = convert(new RecordReader(source, i, record));
    const first = seen.get(c.id);
    if (first !== undefined) {
      throw new DatasetError(`${source}: records ${first} and ${i} have the same id ${c.id}`);
    }
    seen.set(c.id, i);
    return c;
  });
  return { format: fmt, cases };
}

/** The index of the top-level array element that character `offset` of JSON `text` lies in (-1: none). */
function recordAt(text: string, offset: number): number {
  let depth = 0, commas = 0, inString = false;
  for (let i = 0; i < offset; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "[" || c === "{") depth++;
    else if (c === "]" || c === "}") depth--;
    else if (c === "," && depth === 1) commas++;
  }
  return depth >= 1 ? commas : -1;
}

/**
 * The file's text, or a DatasetError at its first invalid UTF-8 byte naming the record it is in
 * (a lossy decode would turn it into U+FFFD and let a corrupted prompt or target through).
 */
export function decodeDataset(bytes: Uint8Array, source: string): string {
  const lossy = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  const back = new TextEncoder().encode(lossy);
  let at = 0; // valid UTF-8 re-encodes to the same bytes: the first difference is the first bad byte
  while (at < bytes.length && bytes[at] === back[at]) at++;
  if (at === bytes.length && back.length === bytes.length) return lossy.replace(/^\uFEFF/, ""); // a BOM is not JSON
  const before = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes.subarray(0, at));
  const line = before.split("\n").length;
  const record = recordAt(lossy, before.length);
  throw new DatasetError(
    `${source}: ${record >= 0 ? `record ${record}: ` : ""}invalid UTF-8 at byte ${at} ` +
      `(0x${bytes[at].toString(16).padStart(2, "0")}, line ${line}); dataset files must be UTF-8`,
  );
}

/** Reads and validates a dataset file (schema detected unless `format` is given). */
export async function loadDataset(path: string, format?: DatasetFormat): Promise<LoadedDataset> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new DatasetError(`${path}: cannot read the dataset (${(e as Error).message})`);
  }
  return parseDataset(decodeDataset(bytes, path), path, format);
}
