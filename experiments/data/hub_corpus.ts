// The hub corpora of corpus.ts (WikiText-103): downloaded into the Hugging Face hub cache and read from
// there one parquet row group at a time (hyparquet). Deno only: corpus.ts's openCorpus imports this
// module dynamically, so the web page's bundle leaves it out.
import { parquetMetadataAsync, parquetReadObjects } from "npm:hyparquet@1.31.5";
import { join } from "node:path";
import { cachedSnapshot, hubCacheDir } from "../../engine/hub.ts";
import { type Corpus, type HubCorpusSpec, sha256Text } from "./corpus.ts";
import { exists } from "../../engine/files.ts";
import { fetchRepo, type FetchRepoOptions, type FetchRepoResult } from "./hub_download.ts";

/**
 * Downloads a hub corpus into the hub cache (resumable, verified against the hub's tree and against
 * the pinned size and sha256 here).
 */
export async function fetchHubCorpus(
  spec: HubCorpusSpec,
  o: Omit<FetchRepoOptions, "type" | "revision" | "include"> = {},
): Promise<FetchRepoResult> {
  const wanted = new Map(spec.files.map((f) => [f.path, f]));
  const r = await fetchRepo(spec.repo, {
    ...o,
    type: "dataset",
    revision: spec.revision,
    include: (p) => wanted.has(p),
  });
  for (const f of spec.files) {
    const got = r.files.find((x) => x.path === f.path);
    if (!got) throw new Error(`${spec.repo}@${spec.revision}: the hub lists no ${f.path}`);
    if (got.etag !== f.sha256 || got.bytes !== f.size) {
      throw new Error(
        `${spec.repo}@${spec.revision}: ${f.path} is ${got.bytes} bytes with sha256 ${got.etag}; expected the ` +
          `pinned ${f.size} bytes, sha256 ${f.sha256}`,
      );
    }
  }
  return r;
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

/** A downloaded hub corpus, read from the hub cache; an error says how to download it if it is not there. */
export async function hubCorpus(spec: HubCorpusSpec, cacheDir = hubCacheDir()): Promise<Corpus> {
  const snapshot = await cachedSnapshot(spec.repo, spec.revision, "dataset", cacheDir);
  const paths = spec.files.map((f) => snapshot && join(snapshot, f.path));
  for (const p of paths) {
    if (p === null || !(await exists(p))) {
      throw new Error(
        `corpus ${spec.name}: not downloaded (looked for ${
          p ?? `revision ${spec.revision} of ${spec.repo}`
        } in ` +
          `${cacheDir}); run ./locus task fetch-data ${spec.name}`,
      );
    }
  }
  const hash = (await sha256Text(spec.files.map((f) => f.sha256).join(","))).slice(0, 12);
  return {
    name: spec.name,
    hash,
    async *texts() {
      for (const p of paths) yield* parquetTexts(p!, spec.column);
    },
  };
}
