// Value optimisations (ROME's v*, MEMIT's z: editing/values.ts optimiseValues) shared between the editing
// methods of a sweep block. ROME and R-ROME optimise the same v* (they differ only in the key the rank-one
// update is solved for), and MEMIT and EMMET the same z at their window's last layer; the optimisation is
// the dominant cost of an edit on a software adapter (~1 s per request), so a sweep that runs several of
// these methods computes each distinct optimisation once and hands the same result to the others. The
// mass-editing curve shares z the same way between its items (every batch size of MEMIT and EMMET edits
// the first n test facts).
//
// A result is reused only when everything it depends on is equal: the request (prompt, subject, target,
// direction, subject noise), the layer its delta is added at, and every ValueOptions field (site, context
// templates, steps, learning rate, weight decay, KL factor and prompt, clamp, fact token, batch row
// budget); anything else (another hyper-parameter, other templates) computes its own. Requests not seen
// before are optimised together in one call, as the method would have; values.ts optimises each request
// exactly as if it ran alone, so a reused value is the one the method would have computed. `prefetch`
// optimises ahead what several later calls will ask for, in bigger batches.
import type { Model } from "../../engine/model.ts";
import type { Tokenizer } from "../../engine/tokenizer.ts";
import type { EditRequest } from "../editing/edit.ts";
import { optimiseValues, type ValueOptions, type ValueResult } from "../editing/values.ts";
import { canonicalJson, type Json, type ResultStore } from "./store.ts";

/** Key text of a JSON-like value: fields left undefined are dropped (they mean the default), object keys sorted. */
const keyOf = (value: unknown): string => canonicalJson(JSON.parse(JSON.stringify(value)) as Json);

/** Key text of a call's options: the per-request layer (in the request's key) stands for o.layer / o.layers,
 *  which only say where each delta goes; callbacks (progress) are not settings. */
const optionsKey = (o: ValueOptions): string => keyOf({ ...o, layer: undefined, layers: undefined });

/** The key of request i's result of a call (its options, then the request and its layer): equal keys,
 *  equal results. */
export function valueKeys(requests: EditRequest[], o: ValueOptions): string[] {
  const layers = o.layers ?? requests.map(() => o.layer);
  if (layers.length !== requests.length) {
    throw new Error(`optimiseValues: ${layers.length} layers for ${requests.length} requests`);
  }
  const options = optionsKey(o);
  return requests.map((r, i) => `${options}\n${keyOf({ request: r, layer: layers[i] })}`);
}

/**
 * Results kept beyond one SharedValues (in a sweep's store, so that every process of the sweep sees
 * them): `wanted` says which keys a later call will ask for; those are kept once computed and looked up
 * before optimising.
 */
export interface KeptValues {
  wanted(key: string): boolean;
  get(key: string): ValueResult | undefined;
  put(key: string, result: ValueResult): void;
}

/** A ValueResult as JSON (float32 values are exact as JSON numbers) and back; null where a value is not
 *  finite (not kept). */
export function valueToJson(r: ValueResult): Json | null {
  const all = [...r.targetInit, ...r.delta, ...r.losses, r.targetProb];
  if (!all.every(Number.isFinite)) return null;
  return {
    targetInit: [...r.targetInit],
    delta: [...r.delta],
    losses: r.losses,
    targetProb: r.targetProb,
    updates: r.updates,
  };
}

export function valueFromJson(j: Json): ValueResult {
  const o = j as {
    targetInit: number[];
    delta: number[];
    losses: number[];
    targetProb: number;
    updates: number;
  };
  const targetInit = Float32Array.from(o.targetInit), delta = Float32Array.from(o.delta);
  return {
    targetInit,
    delta,
    target: targetInit.map((v, i) => v + delta[i]),
    losses: o.losses,
    targetProb: o.targetProb,
    updates: o.updates,
  };
}

/** KeptValues in a results store (store.ts `keep` / `kept`), of the keys `wanted` accepts; a value that
 *  JSON cannot hold is not kept. */
export function keptInStore(store: ResultStore, wanted: (key: string) => boolean): KeptValues {
  return {
    wanted,
    get: (key) => {
      const json = store.kept(key);
      return json === undefined ? undefined : valueFromJson(json);
    },
    put: (key, result) => {
      const json = valueToJson(result);
      if (json !== null) store.keep(key, json);
    },
  };
}

export class SharedValues {
  /** `kept`: results that outlive this object (see KeptValues). */
  constructor(private readonly kept?: KeptValues) {}

  #results = new Map<string, ValueResult>();
  /** The keys the latest call optimised (not found computed or kept). */
  #lastOptimised: string[] = [];
  /** Seconds per request of the prefetch calls' results that no method has used yet. */
  #prefetched = new Map<string, number>();
  /** Requests optimised, and requests served with an earlier call's result, over every call. */
  optimised = 0;
  reused = 0;
  /** Per request of the latest call, whether its result was computed for another (an earlier call's, or an
   *  equal request's earlier in the call). */
  lastReused: boolean[] = [];
  /** Per request of the latest call, the prefetch's seconds charged to it: its share of a prefetch call, for
   *  the first method to use that result (which the call does not time itself), else 0. */
  lastPrefetchSeconds: number[] = [];

  /**
   * Optimises ahead what several later calls will ask for (`calls`: their requests and options), in one
   * optimisation per set of options (a sweep block's problems share ROME's options: each request carries
   * its own target, direction and noise), so that their batches hold more requests; each result is then
   * served to the first call that asks for it as its own (not reused), with its share of the time.
   * Returns the keys of the results it optimised (for scaleSeconds). `onProgress(done, total)` counts
   * the whole call, each set's steps weighted by its requests times its most steps.
   */
  prefetch = async (
    model: Model,
    tok: Tokenizer,
    calls: { requests: EditRequest[]; o: ValueOptions }[],
    onProgress?: ValueOptions["onProgress"],
  ): Promise<string[]> => {
    const optimised: string[] = [];
    const merged = new Map<string, { requests: EditRequest[]; layers: number[]; o: ValueOptions }>();
    for (const { requests, o } of calls) {
      const key = optionsKey(o);
      if (!merged.has(key)) merged.set(key, { requests: [], layers: [], o });
      const m = merged.get(key)!;
      m.requests.push(...requests);
      m.layers.push(...(o.layers ?? requests.map(() => o.layer)));
    }
    // Progress over the whole call: each set's steps weighted by its requests times its most steps.
    const sets = [...merged.values()];
    const weights = sets.map(({ requests, o }) => requests.length * o.steps);
    const total = weights.reduce((a, b) => a + b, 0);
    let before = 0;
    for (const [set, { requests, layers, o }] of sets.entries()) {
      const t0 = performance.now();
      const progress = onProgress &&
        ((step: number, steps: number) =>
          onProgress(Math.round(before + weights[set] * Math.min(1, step / Math.max(1, steps))), total));
      await this.optimise(model, tok, requests, { ...o, layers, onProgress: progress });
      before += weights[set];
      const fresh = this.#lastOptimised;
      for (const k of fresh) this.#prefetched.set(k, (performance.now() - t0) / 1000 / fresh.length);
      optimised.push(...fresh);
      this.optimised -= fresh.length;
      this.reused -= requests.length - fresh.length;
    }
    return optimised;
  };

  /** Multiplies the seconds charged to prefetched results (`keys`, from prefetch) by `factor`: a prefetch
   *  that ran beside other work is charged its share of the wall time, not its whole span. */
  scaleSeconds(keys: string[], factor: number): void {
    for (const k of keys) {
      const seconds = this.#prefetched.get(k);
      if (seconds !== undefined) this.#prefetched.set(k, seconds * factor);
    }
  }

  /** optimiseValues's results for `requests`, optimising only those no earlier call computed. */
  optimise = async (
    model: Model,
    tok: Tokenizer,
    requests: EditRequest[],
    o: ValueOptions,
  ): Promise<ValueResult[]> => {
    const layers = o.layers ?? requests.map(() => o.layer);
    const keys = valueKeys(requests, o);
    // Results kept by an earlier call elsewhere (another process of the sweep) count as reused.
    for (const k of keys) {
      if (this.#results.has(k) || !this.kept?.wanted(k)) continue;
      const found = this.kept.get(k);
      if (found) this.#results.set(k, found);
    }
    const firsts = keys.flatMap((k, i) => (!this.#results.has(k) && keys.indexOf(k) === i ? [i] : []));
    // A prefetched result counts as computed by its first user, as if that call had optimised it.
    const claimed = keys.flatMap((k, i) => (this.#prefetched.has(k) && keys.indexOf(k) === i ? [i] : []));
    this.lastPrefetchSeconds = keys.map((k, i) => (claimed.includes(i) ? this.#prefetched.get(k)! : 0));
    for (const i of claimed) this.#prefetched.delete(keys[i]);
    const own = [...firsts, ...claimed];
    this.lastReused = keys.map((_, i) => !own.includes(i));
    this.#lastOptimised = firsts.map((i) => keys[i]);
    if (firsts.length > 0) {
      const computed = await optimiseValues(model, tok, firsts.map((i) => requests[i]), {
        ...o,
        layers: firsts.map((i) => layers[i]),
      });
      firsts.forEach((i, j) => {
        this.#results.set(keys[i], computed[j]);
        if (this.kept?.wanted(keys[i])) this.kept.put(keys[i], computed[j]);
      });
    }
    this.optimised += own.length;
    this.reused += requests.length - own.length;
    return keys.map((k) => this.#results.get(k)!);
  };
}
