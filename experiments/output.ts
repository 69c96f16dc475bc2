// The output folder and JSON file of a command-line experiment (deno task trace, deno task attribute),
// and the small argument and progress helpers they share.
// The JSON file starts with the run's metadata, so that a file found later says how it was made: the
// tool, model, dataset and adapter, the tool's own method and hyper-parameters, when and how long.
import { writeAtomic } from "../engine/files.ts";
import { join } from "node:path";
import type { GPT2Config } from "../engine/config.ts";

/** What every run's metadata names, whatever the tool. */
export interface RunIdentity {
  tool: string;
  /** The model folder. */
  model: string;
  config: GPT2Config;
  dataset: string;
  /** The GPU adapter's description (Gpu.describe()): timings depend on it. */
  adapter: string;
}

/** Creates the output folder and the given subfolders of it (existing ones are kept). */
export async function makeOutputFolder(dir: string, subfolders: string[] = []): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const folder of subfolders) await Deno.mkdir(join(dir, folder), { recursive: true });
}

/** The run's metadata: its identity, then the tool's own fields, then the adapter, the date and the
 *  run's duration. Written out key by key because the key order is the order in the JSON file. */
export function runMetadata<Details extends object>(run: RunIdentity, details: Details, seconds: number) {
  return {
    tool: run.tool,
    model: run.model,
    config: run.config,
    dataset: run.dataset,
    ...details,
    adapter: run.adapter,
    date: new Date().toISOString(),
    seconds,
  };
}

/** Writes `{ meta, ...body }` to `path` as one line of JSON (atomically: engine/files.ts). */
export async function writeRunJson(path: string, meta: object, body: object): Promise<void> {
  await writeAtomic(path, JSON.stringify({ meta, ...body }) + "\n");
}

/** The value of option --`name` as a positive integer (`fallback` when absent); a clear error otherwise. */
export function positiveInt(name: string, s: string | undefined, fallback: number): number {
  if (s === undefined) return fallback;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(s)}`);
  }
  return n;
}

/** "42s" or "3m07s", for progress lines. */
export function formatSeconds(s: number): string {
  return s < 60
    ? `${s.toFixed(0)}s`
    : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}
