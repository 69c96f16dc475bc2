// ./locus task fetch-data NAME...: downloads public fact-editing datasets into a data directory
// (experiments/data/remote_datasets.ts: pinned sizes and checksums, resumable), and text corpora for the
// key statistics into the Hugging Face hub cache (experiments/data/hub_corpus.ts).
//
//   ./locus task fetch-data known_1000                  -> data/known_1000.json (+ .sha256)
//   ./locus task fetch-data all --data-dir /tmp/data    (the three fact datasets)
//   ./locus task fetch-data zsre --base-url http://mirror.example/dsets   (or LOCUS_DATA_BASE_URL=...)
//   ./locus task fetch-data wikitext-103                -> the hub cache (experiments/data/corpus.ts), ~315 MB
import { parseArgs } from "node:util";
import { runMain } from "../../engine/main.ts";
import { HUB_CORPORA } from "../data/corpus.ts";
import { DownloadError, perFileProgress, progressPrinter } from "../data/download.ts";
import { fetchHubCorpus } from "../data/hub_corpus.ts";
import {
  BASE_URL_ENV,
  byHandMessage,
  DEFAULT_BASE_URLS,
  DEFAULT_DATA_DIR,
  fetchDataset,
  type FetchResult,
  REMOTE_DATASETS,
  resolveBaseUrls,
} from "../data/remote_datasets.ts";

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
  const names = Object.keys(REMOTE_DATASETS), corpora = Object.keys(HUB_CORPORA);
  if (values.help || positionals.length === 0) {
    console.log(
      `usage: ./locus task fetch-data NAME... [--data-dir ${DEFAULT_DATA_DIR}] [--base-url URL] [--force]\n` +
        `  NAME: ${names.join(", ")} or all (these three), or the corpus ${corpora.join(", ")}\n` +
        `  base URL: --base-url, else $${BASE_URL_ENV}, else ${DEFAULT_BASE_URLS.join(" then ")}\n` +
        `  corpora go to the Hugging Face hub cache (HF_HUB_CACHE, HF_HOME); a hub mirror: HF_ENDPOINT`,
    );
    if (!values.help) Deno.exit(2);
    return;
  }
  const wanted = positionals.includes("all") ? names : positionals;
  for (const name of wanted) {
    if (!REMOTE_DATASETS[name] && !HUB_CORPORA[name]) {
      throw new Error(`unknown dataset "${name}"; known: ${[...names, ...corpora].join(", ")}, all`);
    }
  }
  const baseUrls = resolveBaseUrls(values["base-url"]);
  for (const name of wanted) {
    if (HUB_CORPORA[name]) {
      const r = await fetchHubCorpus(HUB_CORPORA[name], {
        onProgress: perFileProgress(),
        log: console.error,
      });
      for (const f of r.files) console.log(`  ${f.path} (${f.bytes} bytes, sha256 ${f.etag}, ${f.how})`);
      console.log(`${name}: ${r.snapshot}; use it with --corpus ${name}`);
      continue;
    }
    const spec = REMOTE_DATASETS[name];
    const tried: string[] = [];
    let r: FetchResult | null = null;
    for (const baseUrl of baseUrls) {
      try {
        r = await fetchDataset(spec, {
          baseUrl,
          dataDir: values["data-dir"],
          force: values.force && tried.length === 0,
          onProgress: progressPrinter(spec.size),
        });
        break;
      } catch (e) {
        if (!(e instanceof DownloadError)) throw e;
        tried.push(e.message);
      }
    }
    if (r === null) throw new Error(byHandMessage(name, spec, tried, values["data-dir"]!));
    const how = r.alreadyPresent
      ? "already present"
      : r.resumedFrom > 0
      ? `resumed at byte ${r.resumedFrom}`
      : "downloaded";
    console.log(`${name}: ${r.path} (${how}), ${r.bytes} bytes, ${r.records} records, sha256 ${r.sha256}`);
    if (spec.sha256 === undefined && !r.alreadyPresent) {
      console.log(
        `  no published checksum is pinned for ${spec.file}: this one is recorded in ${r.path}.sha256`,
      );
    }
  }
}

if (import.meta.main) await runMain("fetch-data", main);
