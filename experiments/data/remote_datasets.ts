// The public fact-editing datasets (known_1000, CounterFact, zsRE as ROME and MEMIT publish them) and
// their resumable, verified download into a data directory (./locus task fetch-data).
//
// Without a base URL the ROME and MEMIT project sites are tried in turn (they
// serve the same files). A download goes to FILE.part, with a progress bar, and is resumed with an HTTP
// Range request if it was interrupted. When complete it is checked against the pinned size and sha256,
// validated by the dataset loader, and only then renamed to FILE, with its checksum written to
// FILE.sha256 (sha256sum format). So FILE exists only if it is whole and valid; a checksum or validation
// failure deletes the partial file. When no site answers (offline), the error lists what was tried and
// where to put a copy fetched by hand (it is then verified like a download).
import { join } from "node:path";
import { type DatasetFormat, parseDataset } from "./datasets.ts";
import { DownloadError, type Progress, resumeDownload, sha256File } from "./download.ts";
import { exists, moveIntoPlace, removeIfExists, writeAtomic } from "../../engine/files.ts";

export interface RemoteDataset {
  /** The file name, both under the base URL and in the data directory. */
  file: string;
  format: DatasetFormat;
  /** Known hex sha256 and size in bytes; verified when given. */
  sha256?: string;
  size?: number;
}

/**
 * The ROME project's public data files, each with its published size and sha256:
 *   known_1000.json    the file in kmeng01/rome's first commit (counterfact/compiled/known_1000.json),
 *                      byte for byte the one served at the URL below (checked);
 *   counterfact.json   the Git LFS pointer of scalable-model-editing/rebuilding-rome's data/counterfact.json
 *                      (oid sha256 and size of the same 45 MB file; not checked against the site here);
 *   zsre_mend_eval.json no published checksum was found: the first download's sha256 is recorded in
 *                      FILE.sha256 and every later run verifies the file against it.
 */
export const REMOTE_DATASETS: Record<string, RemoteDataset> = {
  known_1000: {
    file: "known_1000.json",
    format: "known_1000",
    sha256: "61daca55318bb5260c1e62e133debef9102c7b278bbc7b19dd2ac655543f333a",
    size: 343229,
  },
  counterfact: {
    file: "counterfact.json",
    format: "counterfact",
    sha256: "d017056125178a13728594e66a801357a8db9ed7973a7425554bb4271de9fc6f",
    size: 45108470,
  },
  zsre: { file: "zsre_mend_eval.json", format: "zsre" },
};

/** The ROME and MEMIT project sites, tried in this order. */
export const DEFAULT_BASE_URLS = [
  "https://rome.baulab.info/data/dsets",
  "https://memit.baulab.info/data/dsets",
];
export const BASE_URL_ENV = "LOCUS_DATA_BASE_URL";
export const DEFAULT_DATA_DIR = "data";

export { DownloadError, type Progress, sha256File };

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
  const baseUrl = (o.baseUrl ?? DEFAULT_BASE_URLS[0]).replace(/\/+$/, "");
  const dataDir = o.dataDir ?? DEFAULT_DATA_DIR;
  const url = `${baseUrl}/${spec.file}`;
  const path = join(dataDir, spec.file), part = `${path}.part`, sumFile = `${path}.sha256`;
  await Deno.mkdir(dataDir, { recursive: true });

  if (!o.force && await exists(path)) {
    const { sha256, bytes, records } = await verifyPresent(spec, path, sumFile);
    return { path, sha256, bytes, records, resumedFrom: 0, alreadyPresent: true };
  }
  if (o.force) await removeIfExists(part);

  const offset = await resumeDownload(url, part, { file: spec.file, onProgress: o.onProgress });
  const { sha256, bytes, records } = await verify(spec, part, url);
  await moveIntoPlace(part, path); // the part file was fsynced as it was downloaded
  await writeChecksum(sumFile, sha256, spec.file);
  return { path, sha256, bytes, records, resumedFrom: offset, alreadyPresent: false };
}

/** FILE.sha256 in sha256sum's format (written atomically). */
function writeChecksum(sumFile: string, sha256: string, file: string): Promise<void> {
  return writeAtomic(sumFile, `${sha256}  ${file}\n`);
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
  if (spec.size !== undefined && (await Deno.stat(path)).size !== spec.size) {
    throw new Error(
      `${path}: ${(await Deno.stat(path)).size} bytes, expected ${spec.size}; fetch it again with --force`,
    );
  }
  const { cases } = parseDataset(await Deno.readTextFile(path), path, spec.format);
  // A copy put there by hand gets its sidecar once it has passed the checks.
  if (recorded === undefined) await writeChecksum(sumFile, sha256, spec.file);
  return { sha256, bytes: (await Deno.stat(path)).size, records: cases.length };
}

/** The base URLs to try: --base-url, else $LOCUS_DATA_BASE_URL, else the ROME and MEMIT sites. */
export function resolveBaseUrls(flag: string | undefined): string[] {
  const chosen = flag ?? Deno.env.get(BASE_URL_ENV);
  return chosen === undefined ? DEFAULT_BASE_URLS : [chosen];
}

/** What to do when no site could be reached: the attempts, then the manual route. */
export function byHandMessage(name: string, spec: RemoteDataset, tried: string[], dataDir: string): string {
  const path = join(dataDir, spec.file);
  const check = spec.sha256 === undefined
    ? "no published checksum is pinned for it"
    : `${spec.size} bytes, sha256 ${spec.sha256}`;
  return [
    `could not download ${spec.file}; tried:`,
    ...tried.map((t) => `  ${t}`),
    `To install it by hand: fetch ${spec.file} (${check}) from one of those URLs on a machine with internet`,
    `access, put it at ${path} (or a partial copy at ${path}.part to resume), and run`,
    `./locus task fetch-data ${name} again: it verifies and validates the file. A mirror: --base-url URL or $${BASE_URL_ENV}.`,
  ].join("\n");
}
