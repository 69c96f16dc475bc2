// What the commands (experiments/commands/) share: option parsing with clear errors (intOption,
// positiveInt, numberOption, positiveNumber), CSV fields and files, the output folder and JSON file of an
// experiment (./locus task trace, ./locus task attribute), and a progress bar with an ETA, redrawn in place
// on a terminal and written as about 20 plain lines into a log or a pipe.
// The JSON file starts with the run's metadata, so that a file found later says how it was made: the
// tool, model, dataset and adapter, the tool's own method and hyper-parameters, when and how long.
import { writeAtomic } from "../engine/files.ts";
import { join } from "node:path";
import { configSummary, type ModelConfig } from "../engine/config.ts";

/** What every run's metadata names, whatever the tool. */
export interface RunIdentity {
  tool: string;
  /** The model folder. */
  model: string;
  config: ModelConfig;
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
    config: configSummary(run.config),
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

/** A CSV cell's value: null and non-finite numbers are written as empty fields. */
export type CsvValue = string | number | boolean | null;

/** One CSV field (RFC 4180): quoted if it holds a comma, quote, line break or edge whitespace. */
export function csvField(value: CsvValue): string {
  const s = value === null || (typeof value === "number" && !Number.isFinite(value)) ? "" : String(value);
  return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** A CSV file's text: the header line, then one line per row (each row in the header's order). */
export function csvText(header: string[], rows: CsvValue[][]): string {
  return [header, ...rows].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
}

/** The value of option --`name` as an integer >= `min` (`fallback` when absent); a clear error otherwise. */
export function intOption(name: string, s: string | undefined, fallback: number, min = 0): number {
  if (s === undefined) return fallback;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min) {
    const what = min === 1 ? "a positive integer" : `an integer >= ${min}`;
    throw new Error(`--${name} must be ${what}, got ${JSON.stringify(s)}`);
  }
  return n;
}

/** The value of option --`name` as a positive integer (`fallback` when absent); a clear error otherwise. */
export function positiveInt(name: string, s: string | undefined, fallback: number): number {
  return intOption(name, s, fallback, 1);
}

/** The value of option --`name` as a finite number (undefined when absent); a clear error otherwise. */
export function numberOption(name: string, s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const x = Number(s);
  if (s.trim() === "" || !Number.isFinite(x)) {
    throw new Error(`--${name} must be a number, got ${JSON.stringify(s)}`);
  }
  return x;
}

/** The value of option --`name` as a number > 0 (`fallback` when absent); a clear error otherwise. */
export function positiveNumber(name: string, s: string | undefined, fallback: number): number {
  if (s === undefined) return fallback;
  const x = Number(s);
  if (s.trim() === "" || !(Number.isFinite(x) && x > 0)) {
    throw new Error(`--${name} must be a positive number, got ${JSON.stringify(s)}`);
  }
  return x;
}

/** "42s", "3m07s" or "1h02m", for progress lines and run summaries ("?" when not finite). */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Where and how a ProgressBar writes. */
export interface ProgressOptions {
  /** Where it is written (default stderr). */
  stream?: { writeSync(p: Uint8Array): number; isTerminal(): boolean };
  /** Formats a count ("3.1 MB" for bytes); default the plain number. */
  format?: (n: number) => string;
  /** Plain lines written over the whole run when the stream is not a terminal (default 20). */
  lines?: number;
  /** Items done before this run started (a resumed run): counted as done, left out of the rate. */
  already?: number;
}

/**
 * A progress bar for long runs: `label [#####-----] 12/40 30%  1m02s elapsed, ETA 2m25s  note`.
 * On a terminal it is redrawn in place (at most every 100 ms, and at the end); otherwise it writes a
 * plain line at about every 1/`lines` of the total and at the end, so logs stay short. The ETA assumes
 * the remaining items take as long as the ones done in this run; it is left out until one is.
 */
export class ProgressBar {
  private readonly started = performance.now();
  private readonly stream: NonNullable<ProgressOptions["stream"]>;
  private readonly tty: boolean;
  private lastDraw = -Infinity;
  private lastLineAt = -1;
  private readonly encoder = new TextEncoder();

  constructor(readonly label: string, readonly total: number, private readonly o: ProgressOptions = {}) {
    this.stream = o.stream ?? Deno.stderr;
    this.tty = this.stream.isTerminal();
  }

  /** The line for `done` of the total after `seconds`. */
  line(done: number, seconds: number, note = ""): string {
    const f = this.o.format ?? String;
    const share = this.total > 0 ? Math.min(1, done / this.total) : 0;
    const width = 20, filled = Math.round(share * width);
    const now = done - (this.o.already ?? 0);
    const eta = now > 0 && done < this.total
      ? `, ETA ${formatSeconds((seconds / now) * (this.total - done))}`
      : "";
    return `${this.label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${f(done)}/${f(this.total)} ` +
      `${(100 * share).toFixed(0)}%  ${formatSeconds(seconds)} elapsed${eta}${note ? `  ${note}` : ""}`;
  }

  /** Reports `done` items (of the total) finished, with an optional note (the current item). */
  update(done: number, note = ""): void {
    const now = performance.now(), finished = done >= this.total;
    if (this.tty) {
      if (now - this.lastDraw < 100 && !finished) return;
      this.lastDraw = now;
      const text = this.line(done, (now - this.started) / 1000, note);
      this.stream.writeSync(this.encoder.encode(`\r\x1b[K${text}${finished ? "\n" : ""}`));
      return;
    }
    const step = Math.max(1, this.total / (this.o.lines ?? 20));
    const at = Math.floor(done / step);
    if (at === this.lastLineAt && !finished) return;
    if (finished && this.lastLineAt === Infinity) return;
    this.lastLineAt = finished ? Infinity : at;
    this.stream.writeSync(this.encoder.encode(this.line(done, (now - this.started) / 1000, note) + "\n"));
  }
}
