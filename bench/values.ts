// What the transposed texture mirrors (matmul_texture_kt) give ROME's v* optimisation on this adapter:
// optimiseValues on the first --requests CounterFact facts of the embedded model at one layer, with the
// adapter's matmul tiles and with the same tiles minus `texture.transposed` (so dX = dY W^T runs on
// matmul_texture_k), alternating in one process for --rounds rounds; wall and process CPU seconds of
// each run, and whether both give the same v* bits (they must: the two kernels sum alike).
//
//   ./locus run -A bench/values.ts [--requests 16] [--layer 0] [--rounds 3]
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../engine/cli.ts";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";
import { type MatmulTiles, matmulTiles, setMatmulTiles } from "../engine/ops.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { loadDataset } from "../experiments/data/datasets.ts";
import { editingCase } from "../experiments/editing/problems.ts";
import { contextTemplates } from "../experiments/editing/keys.ts";
import { methodConfig, templateStartWords } from "../experiments/editing/methods.ts";
import { optimiseValues, valueOptions } from "../experiments/editing/values.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "16" },
    layer: { type: "string", default: "0" },
    rounds: { type: "string", default: "3" },
  },
});
const dir = DEFAULT_MODEL_DIR;
const gpu = await getGpu();
const tiles = matmulTiles(gpu);
if (!tiles.texture?.transposed) {
  throw new Error(`bench/values.ts: ${gpu.describe()} has no transposed texture mirrors to compare`);
}
const model = await Model.load(gpu, dir);
const tok = await loadTokenizer(dir);
const { cases } = await loadDataset(`${dir}/counterfact.json`);
const requests = cases.slice(0, Number(values.requests)).map(editingCase).map((c) => ({
  prompt: c.prompt,
  subject: c.subject,
  target: c.targetNew,
}));
const rome = methodConfig(model, "rome");
const startWords = await templateStartWords(tok, `${dir}/corpus.txt`);
const contexts = await contextTemplates(model, tok, { ...rome.hparams.templates, startWords });
const o = valueOptions(rome.hparams, Number(values.layer), "mlp", contexts);

/** Seconds of CPU this process has used (every llvmpipe thread included), from /proc (Linux). */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

const variants: [string, MatmulTiles][] = [
  ["matmul_texture_kt", tiles],
  ["matmul_texture_k ", { ...tiles, texture: { ...tiles.texture, transposed: undefined } }],
];
console.log(`adapter: ${gpu.describe()}`);
console.log(
  `v* of ${requests.length} requests at layer ${o.layer}: ${o.steps} steps, ${contexts.length} contexts`,
);
for (let round = 0; round < Number(values.rounds); round++) {
  const targets: Float32Array[][] = [];
  for (const [name, t] of variants) {
    setMatmulTiles(gpu, t);
    const [wall, cpu] = [performance.now(), cpuSeconds()];
    targets.push((await optimiseValues(model, tok, requests, o)).map((r) => r.target));
    console.log(
      `round ${round} ${name}: ${((performance.now() - wall) / 1000).toFixed(2)} s wall, ` +
        `${(cpuSeconds() - cpu).toFixed(2)} s CPU (load ${Deno.loadavg()[0].toFixed(1)})`,
    );
  }
  const same = targets[0].every((t, i) => t.every((v, j) => Object.is(v, targets[1][i][j])));
  console.log(`  v* bit-identical: ${same}`);
}
setMatmulTiles(gpu, tiles);
