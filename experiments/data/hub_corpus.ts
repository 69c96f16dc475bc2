// The hub corpora of corpus.ts (WikiText-103): downloaded into the Hugging Face hub cache and read from
// there one parquet row group at a time (hyparquet). Deno only: corpus.ts's openCorpus imports this
// module dynamically, so the web page's bundle leaves it out.
import { parquetMetadataAsync, parquetReadObjects } from "npm:hyparquet@1.31.5";
import { join } from "node:path";
import { cachedSnapshot, hubCacheDir, repoCacheDir } from "../../engine/hub.ts";
import { writeAtomic } from "../../engine/files.ts";
import { type Corpus, type HubCorpusSpec, sha256Text } from "./corpus.ts";
import { exists } from "../../engine/files.ts";
import { fetchRepo, type FetchRepoOptions, type FetchRepoResult } from "./hub_download.ts";

/**
 * What a corpus's first download found on the hub, kept in the hub cache next to its snapshots
 * (<repo cache>/locus-corpus-<name>.json): the commit the revision resolved to and each file's size
 * and sha256. Checksums not pinned in the spec are trusted on first use and held to this record after.
 */
interface CorpusRecord {
  revision: string;
  commit: string;
  recorded: string;
  files: { path: string; size: number; sha256: string }[];
}

function recordPath(spec: HubCorpusSpec, cacheDir: string): string {
  return join(repoCacheDir(spec.repo, "dataset", cacheDir), `locus-corpus-${spec.name}.json`);
}

async function readRecord(spec: HubCorpusSpec, cacheDir: string): Promise<CorpusRecord | null> {
  const path = recordPath(spec, cacheDir);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const r = JSON.parse(text) as CorpusRecord;
  const ok = typeof r.commit === "string" && Array.isArray(r.files) &&
    spec.files.every((f) => r.files.some((g) => g.path === f.path && /^[0-9a-f]{64}$/.test(g.sha256)));
  if (!ok) throw new Error(`${path}: not a record of the files of ${spec.name}; delete it and fetch again`);
  return r;
}

/**
 * Downloads a hub corpus into the hub cache (resumable; every file verified against the hub's tree).
 * Files with a pinned size and sha256 must match them. The others are trusted on first use: their
 * sizes and sha256 as the hub lists them are recorded (and logged as such), and a later download that
 * finds anything else is refused, naming the record.
 */
export async function fetchHubCorpus(
  spec: HubCorpusSpec,
  o: Omit<FetchRepoOptions, "type" | "revision" | "include"> = {},
): Promise<FetchRepoResult & { trust: string }> {
  const log = o.log ?? (() => {});
  const cacheDir = o.cacheDir ?? hubCacheDir();
  const wanted = new Map(spec.files.map((f) => [f.path, f]));
  const r = await fetchRepo(spec.repo, {
    ...o,
    type: "dataset",
    revision: spec.revision,
    include: (p) => wanted.has(p),
  });
  const where = `${spec.repo}@${spec.revision}`;
  const found = spec.files.map((f) => {
    const got = r.files.find((x) => x.path === f.path);
    if (!got) throw new Error(`${where}: the hub lists no ${f.path}`);
    if (f.sha256 !== undefined && (got.etag !== f.sha256 || got.bytes !== f.size)) {
      throw new Error(
        `${where}: ${f.path} is ${got.bytes} bytes with sha256 ${got.etag}; expected the ` +
          `pinned ${f.size} bytes, sha256 ${f.sha256}`,
      );
    }
    return { path: f.path, size: got.bytes, sha256: got.etag };
  });
  const path = recordPath(spec, cacheDir);
  const record = await readRecord(spec, cacheDir);
  const unpinned = spec.files.filter((f) => f.sha256 === undefined).length;
  if (record) {
    for (const f of found) {
      const was = record.files.find((g) => g.path === f.path)!;
      if (was.sha256 !== f.sha256 || was.size !== f.size) {
        throw new Error(
          `${where}: ${f.path} is now ${f.size} bytes with sha256 ${f.sha256}, but the first download ` +
            `(${record.recorded}, commit ${record.commit}) recorded ${was.size} bytes, sha256 ${was.sha256} in ` +
            `${path}; the hub's file changed. Delete that record to trust the new one.`,
        );
      }
    }
  } else {
    await writeAtomic(
      path,
      JSON.stringify(
        { revision: spec.revision, commit: r.commit, recorded: new Date().toISOString(), files: found },
        null,
        2,
      ) + "\n",
    );
  }
  const trust = unpinned === 0
    ? "every file matches its pinned sha256"
    : record
    ? `the files match the checksums recorded at the first download (${record.recorded}) in ${path}`
    : `trust on first use: ${unpinned} file(s) have no pinned checksum; the sha256 the hub lists for ` +
      `commit ${r.commit} are recorded in ${path} and later downloads must match them`;
  log(`${spec.name}: ${trust}`);
  return { ...r, trust };
}

/** A parquet file read through a Deno file handle, fetching only the byte ranges hyparquet asks for. */
async function fileBuffer(
  path: string,
): Promise<
  { buffer: { byteLength: number; slice(s: number, e?: number): Promise<ArrayBuffer> }; close(): void }
> {
  const file = await Deno.open(path, { read: true });
  const byteLength = (await file.stat()).size;
  return {
    buffer: {
      byteLength,
      async slice(start: number, end = byteLength) {
        const out = new Uint8Array(end - start);
        await file.seek(start, Deno.SeekMode.Start);
        for (let at = 0; at < out.length;) {
          const n = await file.read(out.subarray(at));
          if (n === null) throw new Error(`${path}: unexpected end of file at byte ${start + at}`);
          at += n;
        }
        return out.buffer;
      },
    },
    close: () => file.close(),
  };
}

/** The rows of one string column of a parquet file, one row group at a time. */
export async function* parquetTexts(path: string, column: string): AsyncGenerator<string> {
  const { buffer, close } = await fileBuffer(path);
  try {
    let metadata;
    try {
      metadata = await parquetMetadataAsync(buffer);
    } catch (e) {
      throw new Error(`${path}: not a parquet file (${(e as Error).message})`);
    }
    const columns = metadata.schema.slice(1).map((s) => s.name);
    if (!columns.includes(column)) {
      throw new Error(`${path}: no column "${column}" (columns: ${columns.join(", ")})`);
    }
    let start = 0;
    for (const group of metadata.row_groups) {
      const end = start + Number(group.num_rows);
      const rows = await parquetReadObjects({
        file: buffer,
        metadata,
        columns: [column],
        rowStart: start,
        rowEnd: end,
      });
      for (const [i, row] of rows.entries()) {
        const text = row[column];
        if (typeof text !== "string") {
          throw new Error(`${path}: row ${start + i}: "${column}" is not a string`);
        }
        yield text;
      }
      start = end;
    }
  } finally {
    close();
  }
}

/**
 * A downloaded hub corpus, read from the hub cache at the commit its download recorded; an error says
 * how to download it if it is not there. Its hash (part of the statistics cache's key) is over the
 * files' sha256.
 */
export async function hubCorpus(spec: HubCorpusSpec, cacheDir = hubCacheDir()): Promise<Corpus> {
  const record = await readRecord(spec, cacheDir);
  const snapshot = record && await cachedSnapshot(spec.repo, record.commit, "dataset", cacheDir);
  const paths = spec.files.map((f) => snapshot && join(snapshot, f.path));
  for (const p of paths) {
    if (p === null || !(await exists(p))) {
      throw new Error(
        `corpus ${spec.name}: not downloaded (looked for ${
          p ?? `a download record ${recordPath(spec, cacheDir)}`
        } in ` +
          `${cacheDir}); run ./locus task fetch-data ${spec.name}`,
      );
    }
  }
  const sums = spec.files.map((f) => record!.files.find((g) => g.path === f.path)!.sha256);
  const hash = (await sha256Text(sums.join(","))).slice(0, 12);
  return {
    name: spec.name,
    hash,
    async *texts() {
      for (const p of paths) yield* parquetTexts(p!, spec.column);
    },
  };
}
