// deno task demo: the README's main command. On the embedded model: pick a fact, show what the
// model answers and how sure it is, and where it would continue a paraphrase and a neighbour.
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR, predictNext } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { GPT2 } from "../engine/model.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";

interface CounterfactCase {
  case_id: number;
  requested_rewrite: { prompt: string; subject: string; target_new: { str: string }; target_true: { str: string } };
  paraphrase_prompts: string[];
  neighborhood_prompts: string[];
}

const { values } = parseArgs({
  args: Deno.args,
  options: { model: { type: "string", default: DEFAULT_MODEL_DIR }, case: { type: "string", default: "0" } },
});
const dir = values.model!;
try {
  await Deno.stat(`${dir}/model.safetensors`);
} catch {
  console.error(`No model in ${dir}. Train the embedded model first: ./locus task train`);
  Deno.exit(1);
}

const started = performance.now();
const gpu = await getGpu();
console.log(`Locus demo on ${gpu.describe()}\n`);
const model = await GPT2.load(gpu, dir);
const tok = await loadTokenizer(dir);
const cases: CounterfactCase[] = JSON.parse(await Deno.readTextFile(`${dir}/counterfact.json`));
const index = Number(values.case);
const c = cases[index];
if (!c) throw new Error(`--case ${values.case}: ${dir}/counterfact.json has ${cases.length} cases`);
const rw = c.requested_rewrite;
const prompt = rw.prompt.replace("{}", rw.subject);
console.log(
  `Model: ${dir} (${model.config.nLayer} layers, d=${model.config.nEmbd}, vocabulary ${model.config.vocabSize})`,
);
console.log(`Fact #${c.case_id}: "${prompt} ___"   (true answer: ${rw.target_true.str})\n`);

async function show(label: string, text: string): Promise<void> {
  const top = await predictNext(model, tok.encode(text), 3, tok);
  const list = top.map((p) => `${p.token.trim()} ${(100 * p.prob).toFixed(1)}%`).join(", ");
  console.log(`  ${label.padEnd(11)} "${text}" -> ${list}`);
}

console.log("What the model says now:");
await show("prompt", prompt);
if (c.paraphrase_prompts[0]) await show("paraphrase", c.paraphrase_prompts[0]);
if (c.neighborhood_prompts[0]) await show("neighbour", c.neighborhood_prompts[0]);
console.log(`\nDone in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
