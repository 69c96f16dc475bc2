// Text corpora for the key statistics, read lazily, one text at a time: a local text file (one text per
// line), or WikiText-103 (raw), the corpus ROME's layer_stats offers besides Wikipedia, as the
// Hugging Face dataset Salesforce/wikitext publishes it: two parquet shards of the train split
// (wikitext-103-raw-v1/train-0000{0,1}-of-00002.parquet, one WikiText line per row, column "text"),
// ~315 MB, ~1.8 M rows. `./locus task fetch-data wikitext-103` downloads them into the hub cache
// (datasets--Salesforce--wikitext, reused by and from Python's huggingface_hub) at a pinned revision,
// checked against the pinned sha256 and size; the shards are then read one row group at a time
// (hyparquet), so a statistics run that needs 100,000 keys reads a few megabytes, not the corpus.
//
// This module is what the key statistics (experiments/editing/stats.ts) import, so it is browser-safe:
// text files are read through engine/io.ts and hashed with WebCrypto (the same sha256 of the UTF-8 text
// in Deno and in a web page, so statistics shipped with a model are found in both). The hub corpora
// (parquet via hyparquet, the hub cache) live in hub_corpus.ts, imported only when one is opened.
import { baseName, io } from "../../engine/io.ts";

/** A corpus: a name and content hash for cache keys, and its texts in a fixed order. */
export interface Corpus {
  /** The corpus's name (a file's base name, or the hub dataset's), part of cache keys. */
  name: string;
  /** Short hex hash of the content (a changed corpus gets new cache entries). */
  hash: string;
  /** Its texts, in the same fixed order on every call. */
  texts(): AsyncIterable<string>;
}

/**
 * A dataset repository's files on the hub: a revision (branch or commit) and, where they are known,
 * the files' pinned sizes and sha256. Without pinned values the first download records what the hub
 * lists (trust on first use, see hub_corpus.ts) and later downloads and reads are held to that record.
 */
export interface HubCorpusSpec {
  name: string;
  repo: string;
  revision: string;
  /** The parquet column holding the text. */
  column: string;
  files: { path: string; size?: number; sha256?: string }[];
}

/**
 * WikiText-103 (raw), train split: the two parquet shards of Salesforce/wikitext that
 * `datasets.load_dataset("Salesforce/wikitext", "wikitext-103-raw-v1")` reads. Nothing is pinned:
 * the commit, sizes and sha256 could not be confirmed against the hub when this was written (no
 * network), so the first `fetch-data wikitext-103` trusts the hub's main branch and records the
 * commit and the sha256 it lists (every byte downloaded is checked against them), and says so.
 */
export const WIKITEXT_103: HubCorpusSpec = {
  name: "wikitext-103",
  repo: "Salesforce/wikitext",
  revision: "main",
  column: "text",
  files: [
    { path: "wikitext-103-raw-v1/train-00000-of-00002.parquet" },
    { path: "wikitext-103-raw-v1/train-00001-of-00002.parquet" },
  ],
};

/** The corpora known by name (`--corpus wikitext-103`). */
export const HUB_CORPORA: Record<string, HubCorpusSpec> = { [WIKITEXT_103.name]: WIKITEXT_103 };

/** Lowercase hex SHA-256 of a string's UTF-8 bytes (WebCrypto: the same in Deno and in a browser). */
export async function sha256Text(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A text file, one text per line, read through io() (a file in Deno, a fetched one in a web page). */
export async function textFileCorpus(path: string): Promise<Corpus> {
  let text: string | null;
  try {
    text = await io().readText(path);
  } catch (e) {
    throw new Error(`key statistics: cannot read the corpus ${path}: ${(e as Error).message}`);
  }
  if (text === null) throw new Error(`key statistics: cannot read the corpus ${path}: no such file`);
  return {
    name: baseName(path),
    hash: (await sha256Text(text)).slice(0, 12),
    async *texts() {
      yield* text.split("\n");
    },
  };
}

/**
 * `--corpus` as given: a known corpus name (wikitext-103) or a text file. The hub corpus code (hyparquet,
 * the hub cache on disk) is imported only for a hub corpus, through a specifier esbuild does not follow,
 * so the web page's bundle does not contain it.
 */
export async function openCorpus(arg: string, cacheDir?: string): Promise<Corpus> {
  const spec = HUB_CORPORA[arg];
  if (!spec) return textFileCorpus(arg);
  const module = "./hub_corpus.ts";
  const { hubCorpus } = await import(module) as typeof import("./hub_corpus.ts");
  return hubCorpus(spec, cacheDir);
}
