// The editing methods' hyper-parameter overrides as command-line options, shared by ./locus task edit and
// ./locus task quality: the option declarations for node:util's parseArgs and the Overrides
// they give (editing/methods.ts applies them over the model family's documented defaults).
import { numberOption } from "../output.ts";
import type { FactToken } from "./keys.ts";
import type { Overrides } from "./methods.ts";

/** parseArgs declarations of the override options (all strings, parsed by parseOverrides). */
export const OVERRIDE_OPTIONS = {
  layers: { type: "string" },
  "fact-token": { type: "string" },
  "v-steps": { type: "string" },
  "v-lr": { type: "string" },
  "v-wd": { type: "string" },
  "kl-factor": { type: "string" },
  "clamp-norm": { type: "string" },
  lambda: { type: "string" },
  "ft-eps": { type: "string" },
  "ft-steps": { type: "string" },
  "ft-lr": { type: "string" },
} as const;

/** The usage lines of the override options. */
export const OVERRIDE_USAGE =
  `  --fact-token T        subject_last | subject_first | last: where keys are read and values written
  --v-steps N, --v-lr X, --v-wd X, --kl-factor X, --clamp-norm X, --lambda X, --ft-eps X, --ft-steps N,
  --ft-lr X             hyper-parameter overrides`;

/** The Overrides of parsed option values (`layers` as "3", "2,3,4" or "2-4"); a clear error otherwise. */
export function parseOverrides(values: Partial<Record<keyof typeof OVERRIDE_OPTIONS, string>>): Overrides {
  return {
    layers: values.layers === undefined ? undefined : parseLayers(values.layers),
    factToken: parseFactToken(values["fact-token"]),
    vNumGradSteps: numberOption("v-steps", values["v-steps"]),
    vLr: numberOption("v-lr", values["v-lr"]),
    vWeightDecay: numberOption("v-wd", values["v-wd"]),
    klFactor: numberOption("kl-factor", values["kl-factor"]),
    clampNormFactor: numberOption("clamp-norm", values["clamp-norm"]),
    mom2UpdateWeight: numberOption("lambda", values.lambda),
    normConstraint: numberOption("ft-eps", values["ft-eps"]),
    numSteps: numberOption("ft-steps", values["ft-steps"]),
    ftLr: numberOption("ft-lr", values["ft-lr"]),
  };
}

/** --fact-token's value. */
export function parseFactToken(s: string | undefined): FactToken | undefined {
  if (s === undefined) return undefined;
  if (s !== "subject_last" && s !== "subject_first" && s !== "last") {
    throw new Error(`--fact-token: expected subject_last, subject_first or last, got "${s}"`);
  }
  return s;
}

/** "3", "2,3,4" or "2-4". */
export function parseLayers(s: string): number[] {
  const range = /^(\d+)-(\d+)$/.exec(s);
  const layers = range
    ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, i) => Number(range[1]) + i)
    : s.split(",").map((x) => Number(x.trim()));
  if (layers.length === 0 || layers.some((l) => !Number.isInteger(l) || l < 0)) {
    throw new Error(`--layers: expected "3", "2,3,4" or "2-4", got "${s}"`);
  }
  return layers;
}
