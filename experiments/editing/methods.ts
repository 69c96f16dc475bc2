// One entry point for every editing method, shared by the CLI (experiments/commands/edit.ts), the quality
// measurement (edit_quality.ts) and the benchmark (bench/editing.ts): default hyper-parameters for the
// model's family with optional overrides, the layers whose key statistics are needed, and the computation.
import { io } from "../../engine/io.ts";
import type { Model } from "../../engine/model.ts";
import { type Tokenizer, WordLevelTokenizer } from "../../engine/tokenizer.ts";
import type { Edit, EditRequest } from "./edit.ts";
import { computeFt } from "./ft.ts";
import {
  type EmmetHparams,
  emmetHparams,
  type FtHparams,
  ftHparams,
  type MemitHparams,
  memitHparams,
  type RomeHparams,
  romeHparams,
} from "./hparams.ts";
import { type FactToken, sentenceStartWords } from "./keys.ts";
import { type BatchEditOptions, computeEmmet, computeMemit } from "./memit.ts";
import { computeRome } from "./rome.ts";
import type { KeyStats } from "./stats.ts";

/** The editing methods: ROME, R-ROME, MEMIT, EMMET and constrained fine-tuning (FT-L). */
export const METHODS = ["rome", "r-rome", "memit", "emmet", "ft"] as const;
/** One of METHODS. */
export type MethodName = typeof METHODS[number];

/** A method name from the command line, or an error listing the methods. */
export function parseMethod(name: string): MethodName {
  if (!(METHODS as readonly string[]).includes(name)) {
    throw new Error(`unknown editing method "${name}"; known: ${METHODS.join(", ")}`);
  }
  return name as MethodName;
}

/** A method with its hyper-parameters (editing/hparams.ts). */
export type MethodConfig =
  | { method: "rome"; hparams: RomeHparams }
  | { method: "r-rome"; hparams: RomeHparams }
  | { method: "memit"; hparams: MemitHparams }
  | { method: "emmet"; hparams: EmmetHparams }
  | { method: "ft"; hparams: FtHparams };

/** Hyper-parameters that a command line may override (only those that apply to the method are used). */
export interface Overrides {
  /** Layers to edit (ROME, R-ROME: exactly one). */
  layers?: number[];
  /** Where keys are read and values written. */
  factToken?: FactToken;
  /** Optimisation steps of v* (ROME, R-ROME) or z (MEMIT, EMMET). */
  vNumGradSteps?: number;
  /** Learning rate of v* / z. */
  vLr?: number;
  /** Weight decay of v* / z. */
  vWeightDecay?: number;
  /** Weight of the KL term that keeps the subject's other predictions. */
  klFactor?: number;
  /** Cap on the norm of v* / z's change, relative to the original value's norm. */
  clampNormFactor?: number;
  /** MEMIT's lambda or EMMET's lambda_m. */
  mom2UpdateWeight?: number;
  /** FT-L's L-infinity radius. */
  normConstraint?: number;
  /** FT-L's steps. */
  numSteps?: number;
  /** FT-L's Adam learning rate. */
  ftLr?: number;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The family's defaults for `method` with overrides applied. */
export function methodConfig<M extends MethodName>(
  model: Model,
  method: M,
  o: Overrides = {},
): Extract<MethodConfig, { method: M }> {
  return configFor(model, method, o) as Extract<MethodConfig, { method: M }>;
}

function configFor(model: Model, method: MethodName, o: Overrides): MethodConfig {
  const cfg = model.config;
  const { layers, numSteps, normConstraint, ftLr, mom2UpdateWeight, ...value } = o;
  const valueOverrides = defined(value);
  for (const l of layers ?? []) {
    if (!Number.isInteger(l) || l < 0 || l >= cfg.nLayer) {
      throw new Error(`${method}: layer ${l} outside [0, ${cfg.nLayer})`);
    }
  }
  switch (method) {
    case "rome":
    case "r-rome": {
      if (layers && layers.length !== 1) {
        throw new Error(`${method} edits one layer; got layers ${layers.join(",")}`);
      }
      return {
        method,
        hparams: { ...romeHparams(cfg), ...valueOverrides, ...(layers ? { layer: layers[0] } : {}) },
      };
    }
    case "memit":
      return {
        method,
        hparams: { ...memitHparams(cfg), ...valueOverrides, ...defined({ layers, mom2UpdateWeight }) },
      };
    case "emmet":
      return {
        method,
        hparams: { ...emmetHparams(cfg), ...valueOverrides, ...defined({ layers, mom2UpdateWeight }) },
      };
    case "ft":
      return {
        method,
        hparams: { ...ftHparams(cfg, layers), ...defined({ numSteps, normConstraint, lr: ftLr }) },
      };
  }
}

/** Layers whose key statistics the method needs (none for FT-L, nor for ROME without mom2 adjustment). */
export function statsLayers(mc: MethodConfig): number[] {
  switch (mc.method) {
    case "rome":
    case "r-rome":
      return mc.hparams.mom2Adjustment ? [mc.hparams.layer] : [];
    case "memit":
    case "emmet":
      return mc.hparams.layers;
    case "ft":
      return [];
  }
}

/** The layers an edit changes. */
export function editedLayers(mc: MethodConfig): number[] {
  switch (mc.method) {
    case "rome":
    case "r-rome":
      return [mc.hparams.layer];
    default:
      return mc.hparams.layers;
  }
}

/** Where keys are read, in words ("the subject's last token"), for commands to print. */
export const FACT_TOKEN_NAMES: Record<FactToken, string> = {
  subject_last: "the subject's last token",
  subject_first: "the subject's first token",
  last: "the prompt's last token",
};

/** Where the method edits, for commands to print: "key at the subject's last token, layer 2" (FT-L: its layers). */
export function describeEdit(mc: MethodConfig): string {
  const layers = editedLayers(mc);
  const where = `layer${layers.length > 1 ? "s" : ""} ${layers.join(",")}`;
  return mc.method === "ft"
    ? `fine-tunes the MLP output weights of ${where}`
    : `key at ${FACT_TOKEN_NAMES[mc.hparams.factToken]}, ${where}`;
}

/**
 * Computes edits for `requests` on the current model. ROME and R-ROME give one independent edit per
 * request; MEMIT, EMMET and FT-L one edit for the whole batch.
 */
export async function computeEdits(
  model: Model,
  tok: Tokenizer,
  mc: MethodConfig,
  requests: EditRequest[],
  stats: Map<number, KeyStats>,
  o: BatchEditOptions = {},
): Promise<Edit[]> {
  switch (mc.method) {
    case "rome":
    case "r-rome":
      return await computeRome(model, tok, requests, stats.get(mc.hparams.layer) ?? null, mc.hparams, {
        variant: mc.method,
        startWords: o.startWords,
      });
    case "memit":
      return [await computeMemit(model, tok, requests, stats, mc.hparams, o)];
    case "emmet":
      return [await computeEmmet(model, tok, requests, stats, mc.hparams, o)];
    case "ft":
      return [await computeFt(model, tok, requests, mc.hparams)];
  }
}

/**
 * First words for the context texts: for a word-level tokenizer, the distinct first words of the
 * corpus lines (keys.ts explains why); for byte-level BPE none (texts start at <|endoftext|>).
 */
export async function templateStartWords(
  tok: Tokenizer,
  corpusPath: string | null,
): Promise<string[] | undefined> {
  if (!(tok instanceof WordLevelTokenizer)) return undefined;
  if (!corpusPath) {
    throw new Error(
      "a word-level model needs its corpus (corpus.txt) for the context templates' first words",
    );
  }
  const text = await io().readText(corpusPath);
  if (text === null) throw new Error(`${corpusPath}: no such file (the context templates' first words)`);
  return sentenceStartWords(text.split("\n"));
}
