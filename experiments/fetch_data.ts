// deno task fetch-data NAME...: downloads public fact-editing datasets into a data directory.
//
//   deno task fetch-data known_1000                  -> data/known_1000.json (+ .sha256)
//   deno task fetch-data all --data-dir /tmp/data
//   deno task fetch-data zsre --base-url http://mirror.example/dsets   (or LOCUS_DATA_BASE_URL=...)
//
// A download goes to FILE.part and is resumed with an HTTP Range request if it was interrupted.
// When complete it is checked against the known size and sha256 (when configured), validated by
// the dataset loader, and only then renamed to FILE, with its checksum written to FILE.sha256
// (sha256sum format). So FILE exists only if it is whole and valid; a checksum or validation
// failure deletes the partial file.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type DatasetFormat, parseDataset } from "./datasets.ts";
import { runMain } from "../engine/main.ts";

export interface RemoteDataset {
  /** The file name, both under the base URL and in the data directory. */
  file: string;
  format: DatasetFormat;
  /** Known hex sha256 and size in bytes; verified when given. */
  sha256?: string;
  size?: number;
}

/** The ROME project's public data files. Only known_1000's checksum is pinned: the other files'
 *  published versions have not been checked here, so their checksums are recorded, not verified. */
export const REMOTE_DATASETS: Record<string, RemoteDataset> = {
  known_1000: {
    file: "known_1000.json",
    format: "known_1000",
    sha256: "61daca55318bb5260c1e62e133debef9102c7b278bbc7b19dd2ac655543f333a",
    size: 343229,
  },
  counterfact: { file: "counterfact.json", format: "counterfact" },
  zsre: { file: "zsre_mend_eval.json", format: "zsre" },
};

export const DEFAULT_BASE_URL = "https://rome.baulab.info/data/dsets";
export const BASE_URL_ENV = "LOCUS_DATA_BASE_URL";
export const DEFAULT_DATA_DIR = "data";

export interface Progress {
  file: string;
  /** Bytes of the file on disk so far (a resumed download starts at the old part's size). */
  bytes: number;
  /** The full size, when the server says it. */
  total: number | null;
}

export interface FetchOptions {
  baseUrl?: string;
  dataDir?: string;
  /** Download again even if the file is present (and drop any partial download). */
  force?: boolean;
  onProgress?: (p: Progress) => void;
}

export interface FetchResult {
  path: string;
  sha256: string;
  bytes: number;
  records: number;
  /** Bytes that were already in FILE.part when this download started (0 = from scratch). */
  resumedFrom: number;
  /** The file was already there and valid: nothing was downloaded. */
  alreadyPresent: boolean;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Hex sha256 of a file, read in chunks. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1 << 20);
  for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}

/** Checks a complete download; returns its record count or throws after deleting it. */
async function verify(
  spec: RemoteDataset,
  part: string,
  url: string,
): Promise<{ sha256: string; bytes: number; records: number }> {
  const bytes = (await Deno.stat(part)).size;
  const sha256 = await sha256File(part);
  const reject = async (problem: string): Promise<never> => {
    await removeIfExists(part);
    throw new Error(`${url}: ${problem}; the downloaded file was deleted`);
  };
  if (spec.size !== undefined && bytes !== spec.size) {
    await reject(`got ${bytes} bytes, expected ${spec.size}`);
  }
  if (spec.sha256 !== undefined && sha256 !== spec.sha256) {
    await reject(`checksum mismatch: sha256 ${sha256}, expected ${spec.sha256}`);
  }
  try {
    const { cases } = parseDataset(await Deno.readTextFile(part), url, spec.format);
    return { sha256, bytes, records: cases.length };
  } catch (e) {
    return await reject(`not a valid ${spec.format} dataset (${(e as Error).message})`);
  }
}

/**
 * Downloads `spec.file` from the base URL into the data directory (see the file comment for the
 * guarantees). A file already present is re-verified instead of downloaded, unless `force`.
 */
export async function fetchDataset(spec: RemoteDataset, o: FetchOptions = {}): Promise<FetchResult> {
  const baseUrl = (o.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const dataDir = o.dataDir ?? DEFAULT_DATA_DIR;
  const url = `${baseUrl}/${spec.file}`;
  const path = join(dataDir, spec.file), part = `${path}.part`, sumFile = `${path}.sha256`;
  await Deno.mkdir(dataDir, { recursive: true });

  if (!o.force && await exists(path)) {
    const { sha256, bytes, records } = await verifyPresent(spec, path, sumFile);
    return { path, sha256, bytes, records, resumedFrom: 0, alreadyPresent: true };
  }
  if (o.force) await removeIfExists(part);

  let offset = (await exists(part)) ? (await Deno.stat(part)).size : 0;
  let response = await fetch(url, offset > 0 ? { headers: { Range: `bytes=${offset}-` } } : {});
  if (offset > 0 && response.status === 416) {
    // Nothing left to send: the part already holds the whole file (verified below).
    await response.body?.cancel();
  } else {
    if (
      offset > 0 &&
      !(response.status === 206 && response.headers.get("content-range")?.startsWith(`bytes ${offset}-`))
    ) {
      // The server ignored the range (200) or answered another one: start over.
      await response.body?.cancel();
      offset = 0;
      response = await fetch(url);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
    }
    await download(response, part, offset, url, spec.file, o.onProgress);
  }
  const { sha256, bytes, records } = await verify(spec, part, url);
  await Deno.rename(part, path);
  const tmp = `${sumFile}.tmp`;
  await Deno.writeTextFile(tmp, `${sha256}  ${spec.file}\n`);
  await Deno.rename(tmp, sumFile);
  return { path, sha256, bytes, records, resumedFrom: offset, alreadyPresent: false };
}

/** A file already in the data directory: its checksum must match the pinned one and its sidecar. */
async function verifyPresent(spec: RemoteDataset, path: string, sumFile: string) {
  const sha256 = await sha256File(path);
  const recorded = (await exists(sumFile)) ? (await Deno.readTextFile(sumFile)).split(/\s+/)[0] : undefined;
  for (const [expected, where] of [[spec.sha256, "the pinned checksum"], [recorded, sumFile]]) {
    if (expected !== undefined && expected !== sha256) {
      throw new Error(
        `${path}: sha256 ${sha256} differs from ${where} (${expected}); fetch it again with --force`,
      );
    }
  }
  const { cases } = parseDataset(await Deno.readTextFile(path), path, spec.format);
  return { sha256, bytes: (await Deno.stat(path)).size, records: cases.length };
}

/** Streams the response body onto the end of `part` (which holds `offset` bytes). */
async function download(
  response: Response,
  part: string,
  offset: number,
  url: string,
  file: string,
  onProgress?: (p: Progress) => void,
): Promise<void> {
  const length = response.headers.get("content-length");
  const total = length === null ? null : offset + Number(length);
  using out = await Deno.open(part, {
    write: true,
    create: true,
    append: offset > 0,
    truncate: offset === 0,
  });
  let bytes = offset;
  onProgress?.({ file, bytes, total });
  try {
    for await (const chunk of response.body!) {
      for (let written = 0; written < chunk.length;) written += await out.write(chunk.subarray(written));
      bytes += chunk.length;
      onProgress?.({ file, bytes, total });
    }
  } catch (e) {
    throw new Error(
      `${url}: download interrupted after ${bytes}${total === null ? "" : ` of ${total}`} bytes (${
        (e as Error).message
      }); run again to resume`,
    );
  } finally {
    await out.sync();
  }
  if (total !== null && bytes !== total) {
    throw new Error(`${url}: truncated: got ${bytes} of ${total} bytes; run again to resume`);
  }
}

/** The base URL: --base-url, else $LOCUS_DATA_BASE_URL, else the ROME project's. */
export function resolveBaseUrl(flag: string | undefined): string {
  return flag ?? Deno.env.get(BASE_URL_ENV) ?? DEFAULT_BASE_URL;
}

/** A progress line on stderr, redrawn at most every 200 ms (and at the end). */
function progressPrinter(): (p: Progress) => void {
  let last = 0;
  const encoder = new TextEncoder();
  return (p) => {
    const now = performance.now();
    const done = p.total !== null && p.bytes === p.total;
    if (now - last < 200 && !done) return;
    last = now;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    const of = p.total === null ? "" : ` / ${mb(p.total)} MB (${((100 * p.bytes) / p.total).toFixed(0)}%)`;
    Deno.stderr.writeSync(encoder.encode(`\r${p.file}: ${mb(p.bytes)} MB${of}${done ? "\n" : ""}`));
  };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      "base-url": { type: "string" },
      "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
      force: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const names = Object.keys(REMOTE_DATASETS);
  if (values.help || positionals.length === 0) {
    console.log(
      `usage: deno task fetch-data NAME... [--data-dir ${DEFAULT_DATA_DIR}] [--base-url URL] [--force]\n` +
        `  NAME: ${
          names.join(", ")
        } or all\n  base URL: --base-url, else $${BASE_URL_ENV}, else ${DEFAULT_BASE_URL}`,
    );
    if (!values.help) Deno.exit(2);
    return;
  }
  const wanted = positionals.includes("all") ? names : positionals;
  for (const name of wanted) {
    if (!REMOTE_DATASETS[name]) throw new Error(`unknown dataset "${name}"; known: ${names.join(", ")}, all`);
  }
  const baseUrl = resolveBaseUrl(values["base-url"]);
  for (const name of wanted) {
    const r = await fetchDataset(REMOTE_DATASETS[name], {
      baseUrl,
      dataDir: values["data-dir"],
      force: values.force,
      onProgress: progressPrinter(),
    });
    const how = r.alreadyPresent
      ? "already present"
      : r.resumedFrom > 0
      ? `resumed at byte ${r.resumedFrom}`
      : "downloaded";
    console.log(`${name}: ${r.path} (${how}), ${r.bytes} bytes, ${r.records} records, sha256 ${r.sha256}`);
  }
}

if (import.meta.main) await runMain("fetch-data", main);
