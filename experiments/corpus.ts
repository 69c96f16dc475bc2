// Text corpora for the key statistics, read lazily, one text at a time: a local text file (one text per
// line), or WikiText-103 (raw), the corpus ROME's layer_stats offers besides Wikipedia, as the
// Hugging Face dataset Salesforce/wikitext publishes it: two parquet shards of the train split
// (wikitext-103-raw-v1/train-0000{0,1}-of-00002.parquet, one WikiText line per row, column "text"),
// ~315 MB, ~1.8 M rows. `./locus task fetch-data wikitext-103` downloads them into the hub cache
// (datasets--Salesforce--wikitext, reused by and from Python's huggingface_hub) at a pinned revision,
// checked against the pinned sha256 and size; the shards are then read one row group at a time
// (hyparquet), so a statistics run that needs 100,000 keys reads a few megabytes, not the corpus.
import { parquetMetadataAsync, parquetReadObjects } from "npm:hyparquet@1.31.5";
import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import { cachedSnapshot, hubCacheDir } from "../engine/hub.ts";
import { exists } from "./download.ts";
import { fetchRepo, type FetchRepoOptions, type FetchRepoResult } from "./fetch_model.ts";

/** A corpus: a name and content hash for cache keys, and its texts in a fixed order. */
export interface Corpus {
  name: string;
  /** Short hex hash of the content (a changed corpus gets new cache entries). */
  hash: string;
  texts(): AsyncIterable<string>;
}

/** A dataset repository's files on the hub at a pinned revision, with their published sizes and sha256. */
export interface HubCorpusSpec {
  name: string;
  repo: string;
  revision: string;
  /** The parquet column holding the text. */
  column: string;
  files: { path: string; size: number; sha256: string }[];
}

/**
 * WikiText-103 (raw), train split. Revision b08601e of Salesforce/wikitext is the parquet conversion
 * that `datasets.load_dataset("Salesforce/wikitext", "wikitext-103-raw-v1")` reads; the sizes and
 * sha256 are the hub's Git LFS object ids of the two shards at that revision (the hub lists them in
 * its file tree, which fetch-model's download is verified against as well).
 */
export const WIKITEXT_103: HubCorpusSpec = {
  name: "wikitext-103",
  repo: "Salesforce/wikitext",
  revision: "b08601e04326c79dfdd32d625aee71d232d685c3",
  column: "text",
  files: [
    {
      path: "wikitext-103-raw-v1/train-00000-of-00002.parquet",
      size: 156987808,
      sha256: "74da360f23826045b3e6ac6375411fdb15f003030aa74f2596ed08b857cb9212",
    },
    {
      path: "wikitext-103-raw-v1/train-00001-of-00002.parquet",
      size: 157088770,
      sha256: "ba090ac30dbf5461e8dcbdd1a1b8e6f3cf9c2c756d64f0c1220450acd514f720",
    },
  ],
};

/** The corpora known by name (`--corpus wikitext-103`). */
export const HUB_CORPORA: Record<string, HubCorpusSpec> = { [WIKITEXT_103.name]: WIKITEXT_103 };

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
  const hash = createHash("sha256").update(spec.files.map((f) => f.sha256).join(",")).digest("hex").slice(
    0,
    12,
  );
  return {
    name: spec.name,
    hash,
    async *texts() {
      for (const p of paths) yield* parquetTexts(p!, spec.column);
    },
  };
}

/** A text file, one text per line. */
export async function textFileCorpus(path: string): Promise<Corpus> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`key statistics: cannot read the corpus ${path}: ${(e as Error).message}`);
  }
  return {
    name: basename(path),
    hash: createHash("sha256").update(text).digest("hex").slice(0, 12),
    async *texts() {
      yield* text.split("\n");
    },
  };
}

/** `--corpus` as given: a known corpus name (wikitext-103) or a text file. */
export function openCorpus(arg: string, cacheDir?: string): Promise<Corpus> {
  const spec = HUB_CORPORA[arg];
  return spec ? hubCorpus(spec, cacheDir) : textFileCorpus(arg);
}
