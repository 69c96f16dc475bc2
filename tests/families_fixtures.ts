// The transformers-made fixtures of every family (tests/fixtures/families, written by its
// make_families.py): a folder per case with config.json, model.safetensors and expected.json.
import { fileURLToPath } from "node:url";
import { getGpu } from "../engine/gpu.ts";
import { Model } from "../engine/model.ts";

const FIXTURES = fileURLToPath(new URL("./fixtures/families/", import.meta.url));

/** transformers' float64 outputs for two prompts (see make_families.py for the site definitions). */
export interface Expected {
  case: string;
  model_type: string;
  dtype: string;
  prompts: number[][];
  logits: number[][][]; // [prompt][position][vocab]
  sites: Record<string, number[][][] | number[][][][]>; // embed [prompt][t][d]; others [prompt][layer][t][w]
}

export const CASES = [...Deno.readDirSync(FIXTURES)].filter((e) => e.isDirectory).map((e) => e.name).sort();

export function caseDir(name: string): string {
  return FIXTURES + name;
}

export async function loadCase(name: string): Promise<{ model: Model; expected: Expected; dir: string }> {
  const dir = caseDir(name);
  const expected = JSON.parse(await Deno.readTextFile(`${dir}/expected.json`)) as Expected;
  return { model: await Model.load(await getGpu(), dir), expected, dir };
}
