// The results store: one SQLite file (node:sqlite) per sweep or shard, one row per result.
//
// A result is keyed by (sweep, fact, method, layer, problem, localization) and holds JSON fields:
// metrics, hyper-parameters, model, dataset, adapter and timings. Experiments write each result the
// moment it exists, one transaction per row, so a killed run loses at most the result in progress;
// on restart they skip every key the store `has`. The key is the primary key and rows are inserted
// with INSERT OR IGNORE, so re-running never duplicates (nor overwrites) a result.
//
// Opening checks the file with SQLite's integrity check (a torn or overwritten file is an error, not
// a silently shorter table). A sweep's settings (everything that changes a result's value) are kept
// in a `settings` table under a fingerprint: resuming under other settings is refused with the
// differences listed, unless forced (then both fingerprints are recorded). `attempts` counts how
// often a unit of work was started, so a sweep can shrink work that keeps getting killed. `kept` holds
// intermediate values a later item of the sweep reuses, whichever process of it computed them (the
// value optimisations of the mass-editing curve's facts): not results, so never merged or exported.
// `claims` records which units of work the processes of one run on this store have taken (a block of
// edits goes to whichever process is free first).
//
// Long sweeps split across processes or machines with `--shard k/n`: a work item belongs to shard
// hash(item key) mod n, or to one its sweep deals it to (a fact's traces and edits together), so the n
// shards partition the items exactly; mergeStores then combines the shard files into one, and writeCsv
// exports it for pandas/R.
//
//   ./locus task sweep merge all.db shard0.db shard1.db ...   (experiments/commands/sweep.ts)
//   ./locus task sweep csv all.db results.csv [--name NAME] [--method NAME]
import { existsSync, writeAtomic } from "../../engine/files.ts";
import { csvField } from "../output.ts";
import { createHash } from "node:crypto";
import { DatabaseSync, type StatementSync } from "node:sqlite";

/** The identity of one result: the columns of its primary key (see resultKey). */
export interface ResultKey {
  /** Name of the sweep (one experiment configuration run over many facts). */
  sweep: string;
  /** The fact's id, e.g. EditCase.id "counterfact:17". */
  fact: string;
  /** Editing method: "ROME", "MEMIT", "FT-L", ... */
  method: string;
  /** (Central) edit layer; null for results that are not per layer. */
  layer: number | null;
  /** Editing problem: "error_injection", "fact_erasure", ... */
  problem: string;
  /** How the layer was chosen or measured: "causal_tracing", "lga", "fixed", ... */
  localization: string;
}

/** JSON-serialisable data (no NaN or Infinity: JSON cannot hold them). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One result as an experiment writes it: its key plus JSON fields (missing ones are stored as {}). */
export interface ResultRecord extends ResultKey {
  /** The measured values, e.g. efficacy, paraphrase and neighborhood scores, tracing effects. */
  metrics: { [key: string]: Json };
  /** The method's hyper-parameters the result was computed with. */
  hparams?: { [key: string]: Json };
  /** The model the result was computed on (name, family, layer count, ...). */
  model?: { [key: string]: Json };
  /** Where the fact came from (dataset name, path, checksum, case id, ...). */
  dataset?: { [key: string]: Json };
  /** The GPU adapter the result was computed on. */
  adapter?: { [key: string]: Json };
  /** Wall-clock seconds of the phases (edit, evaluation, ...). */
  timings?: { [key: string]: Json };
}

/** A result as read back from the store: every JSON field present, plus its key and write time. */
export interface StoredResult extends Required<ResultRecord> {
  /** The primary key string resultKey made from the key fields. */
  key: string;
  /** ISO time the row was written. */
  createdAt: string;
}

const KEY_COLUMNS = ["sweep", "fact", "method", "layer", "problem", "localization"] as const;
const JSON_COLUMNS = ["metrics", "hparams", "model", "dataset", "adapter", "timings"] as const;
const COLUMNS = ["key", ...KEY_COLUMNS, ...JSON_COLUMNS, "created_at"] as const;
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS results (
  key TEXT PRIMARY KEY,
  sweep TEXT NOT NULL,
  fact TEXT NOT NULL,
  method TEXT NOT NULL,
  layer INTEGER,
  problem TEXT NOT NULL,
  localization TEXT NOT NULL,
  metrics TEXT NOT NULL,
  hparams TEXT NOT NULL,
  model TEXT NOT NULL,
  dataset TEXT NOT NULL,
  adapter TEXT NOT NULL,
  timings TEXT NOT NULL,
  created_at TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS results_by_sweep ON results (sweep, method, layer);
CREATE TABLE IF NOT EXISTS settings (
  sweep TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  settings TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (sweep, fingerprint)
) STRICT;
CREATE TABLE IF NOT EXISTS attempts (
  key TEXT PRIMARY KEY,
  count INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS kept (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS claims (
  run TEXT NOT NULL,
  key TEXT NOT NULL,
  PRIMARY KEY (run, key)
) STRICT;
`;

/** The unique key string of a result: its six key fields as a JSON array (unambiguous, readable). */
export function resultKey(k: ResultKey): string {
  for (const field of ["sweep", "fact", "method", "problem", "localization"] as const) {
    if (typeof k[field] !== "string" || k[field] === "") {
      throw new Error(`result key: ${field} must be a non-empty string, got ${JSON.stringify(k[field])}`);
    }
  }
  if (k.layer !== null && !Number.isInteger(k.layer)) {
    throw new Error(`result key: layer must be an integer or null, got ${JSON.stringify(k.layer)}`);
  }
  return JSON.stringify(KEY_COLUMNS.map((c) => k[c]));
}

/** Throws naming the first value JSON would silently change (NaN, Infinity, undefined, ...). */
function checkJson(value: unknown, path: string): void {
  if (value === null || typeof value === "string" || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`${path} is ${value}, which JSON cannot store`);
    return;
  }
  if (Array.isArray(value)) return value.forEach((v, i) => checkJson(v, `${path}[${i}]`));
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const [k, v] of Object.entries(value)) checkJson(v, `${path}.${k}`);
    return;
  }
  throw new Error(
    `${path} is ${typeof value === "object" ? "a non-plain object" : typeof value}, which JSON cannot store`,
  );
}

/** Selects results by key fields: given fields must match exactly, missing ones match anything. */
export type ResultFilter = Partial<ResultKey>;

function where(filter: ResultFilter): { sql: string; params: (string | number)[] } {
  const clauses: string[] = [], params: (string | number)[] = [];
  for (const c of KEY_COLUMNS) {
    const v = filter[c];
    if (v === undefined) continue;
    if (v === null) clauses.push(`${c} IS NULL`);
    else {
      clauses.push(`${c} = ?`);
      params.push(v);
    }
  }
  return { sql: clauses.length ? ` WHERE ${clauses.join(" AND ")}` : "", params };
}

type Row = Record<string, string | number | null>;

function fromRow(row: Row): StoredResult {
  const r = {
    key: row.key as string,
    sweep: row.sweep as string,
    fact: row.fact as string,
    method: row.method as string,
    layer: row.layer as number | null,
    problem: row.problem as string,
    localization: row.localization as string,
    createdAt: row.created_at as string,
  } as StoredResult;
  for (const c of JSON_COLUMNS) r[c] = JSON.parse(row[c] as string);
  return r;
}

/** Throws unless `db` (at `path`) has a results table of this code's schema version, or none at all. */
function checkVersion(db: DatabaseSync, path: string): boolean {
  const version = (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  const hasTable =
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'").get() !== undefined;
  if (hasTable && version !== SCHEMA_VERSION) {
    throw new Error(`${path}: results schema version ${version}, this code reads version ${SCHEMA_VERSION}`);
  }
  return hasTable;
}

/** Throws unless SQLite's integrity check passes (a damaged file fails here, not mid-sweep). */
function checkIntegrity(db: DatabaseSync, path: string): void {
  let problems: string[];
  try {
    problems = (db.prepare("PRAGMA integrity_check(5)").all() as { integrity_check: string }[])
      .map((r) => r.integrity_check);
  } catch (e) {
    throw new Error(`${path}: not a readable results database (${(e as Error).message})`);
  }
  if (problems.length !== 1 || problems[0] !== "ok") {
    throw new Error(
      `${path}: the results database is damaged (SQLite integrity check: ${problems.join("; ")}); ` +
        `restore it from a copy or start a new store`,
    );
  }
}

/** Opens a results database; creates it if `create`, else a missing file is an error. */
function openDatabase(path: string, create = true): DatabaseSync {
  if (!create && !existsSync(path)) throw new Error(`${path}: no results store there`);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot open the results database (${(e as Error).message})`);
  }
  try {
    // Concurrent writers (several shard processes on one file) wait for each other instead of failing.
    db.exec("PRAGMA busy_timeout = 30000");
    checkIntegrity(db, path);
    checkVersion(db, path);
    db.exec(SCHEMA);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/** JSON text with object keys sorted at every level: equal settings give equal text and fingerprint. */
export function canonicalJson(value: Json): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

/** "field: stored X, now Y" for every dotted field where two settings objects differ. */
export function settingsDifferences(stored: { [key: string]: Json }, now: { [key: string]: Json }): string[] {
  const [a, b] = [new Map<string, string>(), new Map<string, string>()];
  flatten(stored, "", a);
  flatten(now, "", b);
  const fields = [...new Set([...a.keys(), ...b.keys()])].sort();
  return fields.filter((f) => a.get(f) !== b.get(f)).map((f) =>
    `${f.slice(1)}: stored ${a.get(f) ?? "(none)"}, now ${b.get(f) ?? "(none)"}`
  );
}

/** A results store: one SQLite file holding results, sweep settings and attempt counts. */
export class ResultStore {
  private readonly insert: StatementSync;
  private readonly lookup: StatementSync;

  private constructor(readonly path: string, private readonly db: DatabaseSync) {
    this.insert = db.prepare(
      `INSERT OR IGNORE INTO results (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`,
    );
    this.lookup = db.prepare("SELECT * FROM results WHERE key = ?");
  }

  /** Opens (by default creating) a store; `create: false` makes a missing file an error. */
  static open(path: string, o: { create?: boolean } = {}): ResultStore {
    return new ResultStore(path, openDatabase(path, o.create ?? true));
  }

  /**
   * Records the settings `sweep` runs under (results computed under other settings must not be
   * mixed into one table). Settings seen before for this sweep pass; new ones are refused with the
   * differences from the first stored settings listed, unless `force` (then they are recorded too
   * and the differences returned).
   */
  checkSettings(sweep: string, settings: { [key: string]: Json }, force = false): string[] {
    checkJson(settings, `settings of sweep "${sweep}"`);
    const text = canonicalJson(settings);
    const fingerprint = createHash("sha256").update(text).digest("hex");
    const stored = this.db.prepare(
      "SELECT fingerprint, settings FROM settings WHERE sweep = ? ORDER BY rowid",
    )
      .all(sweep) as { fingerprint: string; settings: string }[];
    const record = () =>
      this.db.prepare("INSERT OR IGNORE INTO settings VALUES (?, ?, ?, ?)")
        .run(sweep, fingerprint, text, new Date().toISOString());
    if (stored.length === 0 || stored.some((r) => r.fingerprint === fingerprint)) {
      record();
      return [];
    }
    const differences = settingsDifferences(JSON.parse(stored[0].settings), settings);
    if (!force) {
      throw new Error(
        `${this.path}: sweep "${sweep}" was run with other settings (${differences.join("; ")}); ` +
          `resume with the same options, use another --out or --name, or --force to add results ` +
          `computed under the new settings`,
      );
    }
    record();
    return differences;
  }

  /** Counts one more start of the unit of work `key`; returns how many starts came before. */
  attempt(key: string): number {
    const row = this.db.prepare(
      "INSERT INTO attempts VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET count = count + 1 RETURNING count",
    ).get(key) as { count: number };
    return row.count - 1;
  }

  /** Forgets the starts of `key` once its work is stored (deleting results later starts it afresh). */
  finished(key: string): void {
    this.db.prepare("DELETE FROM attempts WHERE key = ?").run(key);
  }

  /** Takes the unit of work `key` for this process among the processes of one run (`run`, a token they
   *  share): true for the first to ask, false for every later one. A run with another token claims afresh
   *  (what a killed run claimed and did not store is then run again). */
  claim(run: string, key: string): boolean {
    return Number(this.db.prepare("INSERT OR IGNORE INTO claims VALUES (?, ?)").run(run, key).changes) === 1;
  }

  /** Whether a process of run `run` has claimed `key` (claim), without claiming it. */
  claimed(run: string, key: string): boolean {
    return this.db.prepare("SELECT 1 FROM claims WHERE run = ? AND key = ?").get(run, key) !== undefined;
  }

  /** Keeps an intermediate value under `key` for later work of any process on this store; the first
   *  value kept under a key stays. */
  keep(key: string, value: Json): void {
    checkJson(value, `kept value ${key}`);
    this.db.prepare("INSERT OR IGNORE INTO kept VALUES (?, ?)").run(key, JSON.stringify(value));
  }

  /** The value kept under `key`, or undefined. */
  kept(key: string): Json | undefined {
    const row = this.db.prepare("SELECT value FROM kept WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return row && JSON.parse(row.value);
  }

  /**
   * Writes one result in its own transaction. Returns true if it was inserted, false if a result
   * with the same key was already stored (which is left as it was).
   */
  put(record: ResultRecord): boolean {
    const key = resultKey(record);
    const json = JSON_COLUMNS.map((c) => {
      const value = record[c] ?? {};
      checkJson(value, `result ${key}: ${c}`);
      return JSON.stringify(value);
    });
    const { changes } = this.insert.run(
      key,
      ...KEY_COLUMNS.map((c) => record[c]),
      ...json,
      new Date().toISOString(),
    );
    return Number(changes) === 1;
  }

  /** Is a result with this key stored? (For resuming: skip the work if so.) */
  has(key: ResultKey | string): boolean {
    return this.lookup.get(typeof key === "string" ? key : resultKey(key)) !== undefined;
  }

  /** The stored result with this key, or undefined if there is none. */
  get(key: ResultKey | string): StoredResult | undefined {
    const row = this.lookup.get(typeof key === "string" ? key : resultKey(key)) as Row | undefined;
    return row && fromRow(row);
  }

  /** How many stored results match the filter. */
  count(filter: ResultFilter = {}): number {
    const w = where(filter);
    return (this.db.prepare(`SELECT count(*) AS n FROM results${w.sql}`).get(...w.params) as { n: number }).n;
  }

  /** Results matching the filter (null layer matches results without a layer), in insertion order. */
  *results(filter: ResultFilter = {}): IterableIterator<StoredResult> {
    const w = where(filter);
    for (const row of this.db.prepare(`SELECT * FROM results${w.sql} ORDER BY rowid`).iterate(...w.params)) {
      yield fromRow(row as Row);
    }
  }

  /** Closes the database file; the store cannot be used afterwards. */
  close(): void {
    this.db.close();
  }
}

// ------------------------------------------------------------------------------------------------
// Shards

/** Which part of a sweep's work items a process runs (`--shard k/n`). */
export interface Shard {
  /** 0-based shard number. */
  index: number;
  /** Number of shards the work is split into (n >= 1). */
  count: number;
}

/** Parses "k/n" (0 <= k < n), as given to --shard. */
export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`--shard "${text}": expected k/n, e.g. 0/4 (shards are numbered from 0)`);
  const index = Number(m[1]), count = Number(m[2]);
  if (count < 1) throw new Error(`--shard "${text}": n must be at least 1`);
  if (index >= count) {
    throw new Error(`--shard "${text}": k must be in 0..${count - 1} (shards are numbered from 0)`);
  }
  return { index, count };
}

/** The variable that gives a Kubernetes Indexed Job's shard count (set it to the Job's `completions`):
 *  Kubernetes sets JOB_COMPLETION_INDEX in each pod but no count. */
export const SHARD_COUNT_VARIABLE = "LOCUS_SHARD_COUNT";

/**
 * The shard a job-array task runs when --shard is not given, from its scheduler's variables: a SLURM
 * array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT; `--array=0-7` or `1-8`,
 * no step) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX of LOCUS_SHARD_COUNT). Undefined when
 * neither is set; a half-set pair, or an index outside the count, is an error naming the variables.
 */
export function shardFromEnv(
  env: Record<string, string | undefined>,
): { shard: Shard; source: string } | undefined {
  const integer = (name: string): number | undefined => {
    const text = env[name];
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text.trim())) throw new Error(`${name}="${text}": expected a non-negative integer`);
    return Number(text);
  };
  const pairs: [string, string, string][] = [
    ["SLURM", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"],
    ["Kubernetes", "JOB_COMPLETION_INDEX", SHARD_COUNT_VARIABLE],
  ];
  for (const [scheduler, indexName, countName] of pairs) {
    const id = integer(indexName), count = integer(countName);
    if (id === undefined && count === undefined) continue;
    if (id === undefined || count === undefined) {
      const [set, unset] = id === undefined ? [countName, indexName] : [indexName, countName];
      throw new Error(`${set} is set but ${unset} is not: cannot tell this ${scheduler} task's shard`);
    }
    const min = scheduler === "SLURM" ? integer("SLURM_ARRAY_TASK_MIN") ?? 0 : 0;
    const index = id - min;
    const names = `${indexName}=${id}${min ? ` - SLURM_ARRAY_TASK_MIN=${min}` : ""}, ${countName}=${count}`;
    if (count < 1 || index < 0 || index >= count) {
      throw new Error(
        `${names}: not a shard k of n with 0 <= k < n (array indices must be consecutive, without a step)`,
      );
    }
    return { shard: { index, count }, source: `${scheduler} (${names})` };
  }
  return undefined;
}

/** 32-bit FNV-1a of the UTF-8 bytes: a fixed hash, so every process and machine agrees. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

/** The shard (0..count-1) a work item belongs to, by the hash of its key. */
export function shardOf(itemKey: string, count: number): number {
  return fnv1a(itemKey) % count;
}

/** The work items of one shard, in their original order; `shardOfItem` gives an item's shard (0..count-1),
 *  e.g. shardOf of its key. */
export function shardItems<T>(
  items: readonly T[],
  shard: Shard,
  shardOfItem: (item: T, count: number) => number,
): T[] {
  return items.filter((item) => shardOfItem(item, shard.count) === shard.index);
}

// ------------------------------------------------------------------------------------------------
// Merging and export

/** What mergeStores did with the source rows. */
export interface MergeReport {
  /** Rows copied into the target. */
  inserted: number;
  /** Rows whose key the target already had with identical content. */
  duplicates: number;
  /** Keys the target already had with different content (the target's row is kept). */
  conflicts: string[];
}

/** Checks a database to merge (readable, intact, this schema); returns whether it has a settings table. */
function checkSource(source: string): boolean {
  let src: DatabaseSync;
  try {
    src = new DatabaseSync(source, { readOnly: true });
  } catch (e) {
    throw new Error(`merge: cannot open source database ${source} (${(e as Error).message})`);
  }
  try {
    checkIntegrity(src, source);
    if (!checkVersion(src, source)) throw new Error(`merge: ${source} has no results table`);
    return src.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'").get() !==
      undefined;
  } finally {
    src.close();
  }
}

/** Copies every result of the source databases into `target` (created if needed), one transaction per source. */
export function mergeStores(target: string, sources: readonly string[]): MergeReport {
  // Every source is checked before the target is opened (or created): a bad source leaves no target.
  const withSettings = new Map(sources.map((source) => [source, checkSource(source)]));
  const db = openDatabase(target);
  const report: MergeReport = { inserted: 0, duplicates: 0, conflicts: [] };
  const data = [...KEY_COLUMNS, ...JSON_COLUMNS];
  try {
    for (const source of sources) {
      const hasSettings = withSettings.get(source)!;
      db.prepare("ATTACH DATABASE ? AS src").run(source);
      try {
        db.exec("BEGIN");
        const conflicts = db.prepare(
          `SELECT s.key FROM src.results s JOIN main.results m ON s.key = m.key
           WHERE ${data.map((c) => `s.${c} IS NOT m.${c}`).join(" OR ")} ORDER BY s.rowid`,
        ).all() as { key: string }[];
        const total = (db.prepare("SELECT count(*) AS n FROM src.results").get() as { n: number }).n;
        const { changes } = db.prepare(
          `INSERT OR IGNORE INTO main.results (${COLUMNS.join(", ")}) SELECT ${
            COLUMNS.join(", ")
          } FROM src.results ORDER BY rowid`,
        ).run();
        if (hasSettings) {
          db.exec("INSERT OR IGNORE INTO main.settings SELECT * FROM src.settings ORDER BY rowid");
        }
        db.exec("COMMIT");
        report.inserted += Number(changes);
        report.conflicts.push(...conflicts.map((c) => c.key));
        report.duplicates += total - Number(changes) - conflicts.length;
      } catch (e) {
        if (db.isTransaction) db.exec("ROLLBACK");
        throw e;
      } finally {
        db.exec("DETACH DATABASE src");
      }
    }
    // Shards of one sweep must have run under the same settings.
    const mixed = db.prepare("SELECT sweep FROM settings GROUP BY sweep HAVING count(*) > 1 ORDER BY sweep")
      .all() as { sweep: string }[];
    for (const { sweep } of mixed) {
      report.conflicts.push(`settings of sweep "${sweep}" differ between stores`);
    }
  } finally {
    db.close();
  }
  return report;
}

/** Nested JSON flattened to dotted column names; arrays stay JSON text, null becomes "". */
function flatten(value: Json, prefix: string, out: Map<string, string>): void {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, `${prefix}.${k}`, out);
  } else {
    out.set(prefix, value === null ? "" : typeof value === "string" ? value : JSON.stringify(value));
  }
}

/**
 * CSV of results: the key columns, created_at, then every metrics.*, hparams.*, model.*, dataset.*,
 * adapter.*, timings.* field found in any row (sorted within each group; missing fields are empty).
 */
export function toCsv(results: Iterable<StoredResult>): string {
  const rows: Map<string, string>[] = [];
  const jsonColumns = new Set<string>();
  for (const r of results) {
    const row = new Map<string, string>([["key", r.key], ["created_at", r.createdAt]]);
    for (const c of KEY_COLUMNS) row.set(c, r[c] === null ? "" : String(r[c]));
    for (const c of JSON_COLUMNS) {
      const fields = new Map<string, string>();
      flatten(r[c], c, fields);
      fields.forEach((v, k) => {
        row.set(k, v);
        jsonColumns.add(k);
      });
    }
    rows.push(row);
  }
  const group = (name: string) => JSON_COLUMNS.indexOf(name.split(".")[0] as typeof JSON_COLUMNS[number]);
  const extra = [...jsonColumns].sort((a, b) => group(a) - group(b) || (a < b ? -1 : a > b ? 1 : 0));
  const header = ["key", ...KEY_COLUMNS, "created_at", ...extra];
  const lines = [header.map(csvField).join(",")];
  for (const row of rows) lines.push(header.map((h) => csvField(row.get(h) ?? "")).join(","));
  return lines.join("\r\n") + "\r\n";
}

/** Writes `results` (e.g. a store's results(filter)) as CSV (atomically: engine/files.ts); returns how many. */
export async function writeCsv(results: Iterable<StoredResult>, path: string): Promise<number> {
  const rows = [...results];
  await writeAtomic(path, toCsv(rows));
  return rows.length;
}
