// ./locus task fetch-model ID [--revision R]: downloads a Hugging Face model into the hub cache
// (experiments/data/hub_download.ts does it: resumable, every file checked against the hub's hash), so
// `--model ID` then works in every command.
//
//   ./locus task fetch-model openai-community/gpt2-xl
//   ./locus task fetch-model EleutherAI/gpt-j-6b --revision float16
//   HF_ENDPOINT=https://mirror.example ./locus task fetch-model gpt2      (a hub mirror)
import { parseArgs } from "node:util";
import { runMain } from "../../engine/main.ts";
import { perFileProgress } from "../data/download.ts";
import { fetchRepo } from "../data/hub_download.ts";

const USAGE = `usage: ./locus task fetch-model ID [--revision R] [--cache-dir DIR]
  ID            a Hugging Face model id, e.g. openai-community/gpt2-xl
  --revision R  branch, tag or commit (default main)
  --cache-dir   the hub cache (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)
  environment:  HF_TOKEN for gated or private models; HF_ENDPOINT for a mirror`;

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      revision: { type: "string", default: "main" },
      "cache-dir": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help || positionals.length !== 1) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const id = positionals[0];
  const r = await fetchRepo(id, {
    revision: values.revision,
    cacheDir: values["cache-dir"],
    log: (line) => console.error(line),
    onProgress: perFileProgress(),
  });
  for (const f of r.files) {
    const how = f.how === "downloaded" && f.resumedFrom > 0 ? `resumed at byte ${f.resumedFrom}` : f.how;
    console.log(`  ${f.path} (${f.bytes} bytes, ${how})`);
  }
  const name = values.revision === "main" ? id : `${id}@${values.revision}`;
  const env = values["cache-dir"] === undefined ? "" : ` (with HF_HUB_CACHE=${values["cache-dir"]})`;
  console.log(`${id}@${r.commit}: ${r.snapshot}\nuse it with --model ${name}${env}`);
  return 0;
}

if (import.meta.main) await runMain("fetch-model", main);
