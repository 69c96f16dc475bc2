// Precomputes a model's key statistics into its own folder (key-stats/, see stats.ts), so that the first
// edit (in Deno or in the web page) computes nothing: `./locus task ship-stats [--model DIR]`.
// Layers: those the model's default ROME, MEMIT and EMMET configurations read; the corpus is the
// folder's corpus.txt; the sample count the family's default (statsHparams).
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../../engine/cli.ts";
import { getGpu } from "../../engine/gpu.ts";
import { runMain } from "../../engine/main.ts";
import { Model } from "../../engine/model.ts";
import { loadTokenizer } from "../../engine/tokenizer.ts";
import { statsHparams } from "../editing/hparams.ts";
import { methodConfig, statsLayers } from "../editing/methods.ts";
import { keyStats, shippedStatsDir } from "../editing/stats.ts";

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { model: { type: "string", default: DEFAULT_MODEL_DIR } } });
  const dir = values.model!;
  const model = await Model.load(await getGpu(), dir);
  const tok = await loadTokenizer(dir);
  const layers = [
    ...new Set((["rome", "memit", "emmet"] as const).flatMap((m) => statsLayers(methodConfig(model, m)))),
  ]
    .sort((a, b) => a - b);
  // Files of other layers or sample counts from an earlier run would be dead weight: start empty.
  await Deno.remove(shippedStatsDir(dir), { recursive: true }).catch(() => {});
  await keyStats(model, tok, {
    corpus: `${dir}/corpus.txt`,
    layers,
    samples: statsHparams(model.config).samples,
    ship: true,
    log: (line) => console.log(line),
  });
  console.log(`key statistics of layers ${layers.join(",")} written to ${shippedStatsDir(dir)}`);
  return 0;
}

if (import.meta.main) runMain("ship-stats", main);
