// ./locus task predict | generate | tokenize: the engine on the command line.
//   predict  --model DIR (--prompt TEXT | --tokens 1,2,3) [--top K] [--json]   next-token distribution
//   generate --model DIR (--prompt TEXT | --tokens ...) [--max-new N] [--json]  greedy decoding
//   tokenize --model DIR --text TEXT [--json]                                   token ids
// Every command accepts --adapter-info (print the WebGPU adapter in use). --model defaults to
// the embedded model shipped in weights/. JSON output keeps its field names stable for scripts.
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR, generateGreedy, predictNext } from "../../engine/cli.ts";
import { getGpu, Gpu } from "../../engine/gpu.ts";
import { resolveModelDir } from "../../engine/hub.ts";
import { runMain } from "../../engine/main.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";

const USAGE = `usage: ./locus task <predict|generate|tokenize> [options]
  --model DIR        Hugging Face GPT-2 folder (default: the embedded model, ${DEFAULT_MODEL_DIR})
  --prompt TEXT      text to continue (predict, generate)
  --tokens 1,2,3     token ids instead of a prompt (predict, generate)
  --text TEXT        text to tokenize (tokenize)
  --top K            how many next tokens to list (predict, default 10)
  --max-new N        tokens to generate (generate, default 20)
  --json             machine-readable output
  --adapter-info     print the WebGPU adapter in use`;

function parseTokens(s: string): number[] {
  const ids = s.split(",").map((x) => x.trim()).filter((x) => x !== "").map(Number);
  const bad = ids.find((x) => !Number.isSafeInteger(x) || x < 0);
  if (ids.length === 0 || bad !== undefined) {
    throw new Error(`--tokens: expected comma-separated ids, got "${s}"`);
  }
  return ids;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      model: { type: "string", default: DEFAULT_MODEL_DIR },
      prompt: { type: "string" },
      tokens: { type: "string" },
      text: { type: "string" },
      top: { type: "string", default: "10" },
      "max-new": { type: "string", default: "20" },
      json: { type: "boolean", default: false },
      "adapter-info": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help || !["predict", "generate", "tokenize"].includes(command)) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const dir = await resolveModelDir(values.model!);
  const tok = await loadTokenizer(dir);

  if (command === "tokenize") {
    if (values.text === undefined) throw new Error("tokenize needs --text");
    const { ids, offsets } = tok.encodeWithOffsets(values.text);
    if (values.json) {
      console.log(JSON.stringify({
        model: dir,
        text: values.text,
        ids,
        tokens: ids.map((i) => tok.tokenString(i)),
        offsets,
      }));
    } else console.log(ids.join(" "));
    return 0;
  }

  const gpu: Gpu = await getGpu();
  if (values["adapter-info"]) console.error(`adapter: ${gpu.describe()}`);
  if ((values.prompt === undefined) === (values.tokens === undefined)) {
    throw new Error(`${command} needs exactly one of --prompt or --tokens`);
  }
  const ids = values.tokens !== undefined ? parseTokens(values.tokens) : tok.encode(values.prompt!);
  if (ids.length === 0) throw new Error("the prompt has no tokens");
  const model = await Model.load(gpu, dir);

  if (command === "predict") {
    const k = Number(values.top);
    if (!Number.isSafeInteger(k) || k < 1) {
      throw new Error(`--top must be a positive integer, got ${values.top}`);
    }
    const top = await predictNext(model, ids, k, tok);
    if (values.json) {
      console.log(JSON.stringify({ model: dir, adapter: gpu.describe(), input_ids: ids, top }));
    } else {
      console.log(`next-token distribution after ${JSON.stringify(tok.decode(ids))}:`);
      for (const [i, p] of top.entries()) {
        console.log(
          `${String(i + 1).padStart(3)}. ${JSON.stringify(p.token).padEnd(20)} id ${
            String(p.id).padStart(6)
          }  p=${p.prob.toFixed(4)}`,
        );
      }
    }
  } else {
    const n = Number(values["max-new"]);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new Error(`--max-new must be a non-negative integer, got ${values["max-new"]}`);
    }
    const out = await generateGreedy(model, ids, n, tok.eosId);
    if (values.json) {
      console.log(
        JSON.stringify({
          model: dir,
          adapter: gpu.describe(),
          input_ids: ids,
          output_ids: out,
          text: tok.decode(out),
        }),
      );
    } else console.log(tok.decode([...ids, ...out]));
  }
  return 0;
}

if (import.meta.main) await runMain("locus", main);
