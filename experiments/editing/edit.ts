// Edits are values. Computing an edit (ROME, MEMIT, FT-L, ...) never leaves the model changed: it
// returns the weight deltas, which can then be applied, undone, combined, saved and loaded.
//
//   const edit = (await computeRome(model, tok, [request], stats, hp))[0];
//   const applied = await applyEdit(model, edit);   // weights += deltas
//   ...                                              // evaluate the edited model
//   applied.undo();                                  // bit-identical original weights
//
// Undo restores a copy of every touched tensor taken at apply time, never "subtracts the delta"
// (float addition does not round-trip). Applied edits form a stack per model: applying B after
// A (sequential editing) is undone B first, then A.
//
// A closed-form edit is a low-rank delta W[rows, cols] += left[rows, rank] right[rank, cols]
// (ROME rank 1, a MEMIT/EMMET batch of n facts rank n), applied by shaders/rank_update.wgsl;
// fine-tuning gives a dense delta.
import { cdiv, Gpu, Tensor, uniforms } from "../../engine/gpu.ts";
import type { Model } from "../../engine/model.ts";
import { add, ELEMENT_WG, grid1d } from "../../engine/ops.ts";
import { promptRowEdits, type VirtualEdit } from "../../engine/virtual_edits.ts";
import type { ResidualCache } from "../evaluation/residuals.ts";
import { openSafetensors, SafetensorsError, writeSafetensors } from "../../engine/safetensors.ts";

/** Fixed Gaussian noise added to the subject's token embeddings (causal tracing's corruption). */
export interface SubjectNoise {
  /** Seed of the standard normal draws: noise row i (the i-th subject token) is the same in every prompt. */
  seed: number;
  /** Multiplies the draws (tracing's nu, e.g. 3 sigma of the embeddings). */
  scale: number;
}

/** One fact to edit, in CounterFact's form: prompt "{} was born in", subject "Vela Dornik", target "Lisbon". */
export interface EditRequest {
  /** The prompt with "{}" where the subject goes. */
  prompt: string;
  /** The subject, as it occurs in the prompts. */
  subject: string;
  /** The object whose probability the edit moves (written without a leading space). */
  target: string;
  /** "increase" (default): make `target` likely; "decrease": make it unlikely (fact erasure). */
  direction?: "increase" | "decrease";
  /** Fact forcing: the subject's embeddings are noised in every prompt the edit is computed from. */
  noise?: SubjectNoise;
}

/** W[rows, cols] += left[rows, rank] right[rank, cols] (row-major). */
export interface LowRankDelta {
  /** Discriminates the delta kinds. */
  kind: "low-rank";
  /** The parameter changed, by Locus name (e.g. "h.3.mlp.c_proj.weight"). */
  param: string;
  /** Rows of the parameter. */
  rows: number;
  /** Columns of the parameter. */
  cols: number;
  /** Columns of left, rows of right. */
  rank: number;
  /** [rows, rank], row-major. */
  left: Float32Array;
  /** [rank, cols], row-major. */
  right: Float32Array;
}

/**
 * The rank-n update of layer `layer`'s MLP output projection (every family's ROME/MEMIT target) that
 * maps key direction column i of keys [f, n] to value change row i of values [n, d], i.e. the papers'
 * W_math += values^T keys^T on W_math [d, f], stored in the family's layout: GPT-2's Conv1D [f, d]
 * takes keys x values, an nn.Linear [d, f] takes values^T x keys^T.
 */
export function keyValueDelta(
  model: Model,
  layer: number,
  keys: Float32Array,
  values: Float32Array,
  n: number,
): LowRankDelta {
  const f = model.config.nInner, d = model.config.nEmbd;
  const param = `h.${layer}.mlp.c_proj.weight`;
  if (model.config.linearLayout === "in_out") {
    return { kind: "low-rank", param, rows: f, cols: d, rank: n, left: keys, right: values };
  }
  const left = new Float32Array(d * n), right = new Float32Array(n * f);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) left[j * n + i] = values[i * d + j];
    for (let a = 0; a < f; a++) right[i * f + a] = keys[a * n + i];
  }
  return { kind: "low-rank", param, rows: d, cols: f, rank: n, left, right };
}

/** W += values (same shape as the parameter). */
export interface DenseDelta {
  /** Discriminates the delta kinds. */
  kind: "dense";
  /** The parameter changed, by Locus name. */
  param: string;
  /** The parameter's shape. */
  shape: number[];
  /** The change, row-major, of the parameter's shape. */
  values: Float32Array;
}

/** One weight's change: low rank (ROME, MEMIT, EMMET) or dense (FT-L). */
export type WeightDelta = LowRankDelta | DenseDelta;

/** An edit as weight deltas, with the method and requests that made it. */
export interface Edit {
  /** "rome", "r-rome", "memit", "emmet", "ft" (or "a+b" for combined edits). */
  method: string;
  /** The facts edited, in order. */
  requests: EditRequest[];
  /** Applied in order; several deltas may touch the same parameter. */
  deltas: WeightDelta[];
  /** JSON-serialisable details: hyper-parameters, losses, norms. */
  info: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Apply and undo

/** Records W[M,N] += U[M,rank] V[rank,N] on the GPU (shaders/rank_update.wgsl). A weight kept in
 *  16 bits (f16/bf16 checkpoints) is updated in place in its format, each value rounded back. */
export function rankUpdate(
  gpu: Gpu,
  W: Tensor,
  U: Tensor,
  V: Tensor,
  M: number,
  N: number,
  rank: number,
): void {
  for (const [name, v] of Object.entries({ M, N, rank })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new Error(`rankUpdate: ${name} must be a positive integer, got ${v}`);
    }
  }
  const half = W.dtype === "f16" || W.dtype === "bf16";
  for (const [name, t, n] of [["W", W, M * N], ["U", U, M * rank], ["V", V, rank * N]] as const) {
    if ((t.dtype !== "f32" && !(half && t === W)) || t.size < n) {
      throw new Error(`rankUpdate: ${name} [${t.shape}] must be f32 (W may be 16-bit) with >= ${n} values`);
    }
  }
  gpu.run(
    gpu.pipeline("rank_update.wgsl", half ? "rank_update_half" : "rank_update", {
      WG: ELEMENT_WG,
      HALF_BF16: W.dtype === "bf16",
    }),
    [W, U, V],
    grid1d(gpu, cdiv(half ? Math.ceil(M * N / 2) : M * N, ELEMENT_WG)),
    uniforms().u32(M, N, rank),
  );
}

/** An edit applied to a model; undo() restores the weights it found. */
export class AppliedEdit {
  private undone = false;
  /** Made by applyEdit, which has written `edit` into `model` after saving the tensors it touches. */
  constructor(
    readonly model: Model,
    readonly edit: Edit,
    /** The touched tensors' bytes as they were (any dtype). */
    private readonly originals: Map<string, ArrayBuffer>,
  ) {}

  /** Whether undo() has run. */
  get isUndone(): boolean {
    return this.undone;
  }

  /** Writes back the original tensors. Must be the most recently applied edit still in place. */
  undo(): void {
    if (this.undone) throw new Error(`undo: the ${this.edit.method} edit was already undone`);
    const stack = appliedStacks.get(this.model) ?? [];
    if (stack.at(-1) !== this) {
      throw new Error(`undo: a later edit is still applied to this model; undo edits in reverse order`);
    }
    for (const [name, bytes] of this.originals) this.model.gpu.writeBytes(this.model.p(name), bytes);
    stack.pop();
    this.undone = true;
  }
}

const appliedStacks = new WeakMap<Model, AppliedEdit[]>();

/** Throws naming the delta unless it fits the model's parameter. */
function checkDelta(model: Model, delta: WeightDelta, where: string): void {
  // A weight split into row chunks cannot take a delta: p() says so.
  const t = model.params.get(delta.param) ??
    (model.rowChunks.has(delta.param) ? model.p(delta.param) : undefined);
  if (!t) throw new Error(`${where}: the model has no parameter ${delta.param}`);
  if (delta.kind === "low-rank") {
    const { rows, cols, rank } = delta;
    if (t.shape.length !== 2 || t.shape[0] !== rows || t.shape[1] !== cols) {
      throw new Error(`${where}: ${delta.param} is [${t.shape}], the delta is [${rows}, ${cols}]`);
    }
    if (delta.left.length !== rows * rank || delta.right.length !== rank * cols) {
      throw new Error(
        `${where}: factors of ${delta.param} have ${delta.left.length} and ${delta.right.length} values, ` +
          `rank ${rank} needs ${rows * rank} and ${rank * cols}`,
      );
    }
  } else if (delta.values.length !== t.size || delta.shape.join(",") !== t.shape.join(",")) {
    throw new Error(
      `${where}: ${delta.param} is [${t.shape}], the dense delta is [${delta.shape}] with ${delta.values.length} values`,
    );
  }
}

/** Applies the deltas on the GPU after copying every touched tensor to the CPU (one readback). */
export async function applyEdit(model: Model, edit: Edit): Promise<AppliedEdit> {
  const gpu = model.gpu;
  edit.deltas.forEach((d, i) => checkDelta(model, d, `applyEdit (${edit.method}, delta ${i})`));
  // Low-rank updates write 16-bit weights in their format; a dense delta (FT-L) needs them in f32.
  for (const d of edit.deltas) if (d.kind === "dense") await model.writable(d.param);
  const names = [...new Set(edit.deltas.map((d) => d.param))];
  const copies = await gpu.readBytes(names.map((n) => model.p(n)));
  const originals = new Map(names.map((n, i) => [n, copies[i]]));
  for (const d of edit.deltas) {
    const W = model.p(d.param);
    if (d.kind === "low-rank") {
      const U = gpu.tensor([d.rows, d.rank], d.left), V = gpu.tensor([d.rank, d.cols], d.right);
      rankUpdate(gpu, W, U, V, d.rows, d.cols, d.rank);
      gpu.release(U, V);
    } else {
      const D = gpu.tensor(d.shape, d.values);
      add(gpu, W, D, W.size, { out: W });
      gpu.release(D);
    }
  }
  gpu.flush();
  const applied = new AppliedEdit(model, edit, originals);
  const stack = appliedStacks.get(model) ?? [];
  stack.push(applied);
  appliedStacks.set(model, stack);
  return applied;
}

// ---------------------------------------------------------------------------------------------
// Virtual edits (engine/virtual_edits.ts): many edits scored in one batched forward

/**
 * The deltas of many edits' MLP output projections, uploaded once per edited layer as key rows [C, f],
 * value rows [L, d] and per-edit bias changes [edits, d], so that any batch can give each prompt its own
 * edit (forBatch) without the weights being written. A low-rank delta gives its rank's components; a
 * dense one (FT-L) its d columns of W_math, whose scores are the correction itself (no value rows).
 */
export class VirtualEditSet {
  /** Per edited layer: its tensors, each edit's components there, and edit index -> local index. */
  private readonly layers: {
    layer: number;
    keys: Tensor;
    values: Tensor;
    ranks: number[];
    dense: boolean[];
    biases?: Tensor;
    local: Map<number, number>;
  }[] = [];
  /** The edits that change nothing (changesNothing): scored as the unedited model (`acting`). */
  private readonly unchanged = new Set<number>();

  /** Uploads the deltas of `edits` (low-rank or dense deltas of MLP output projections' weights, dense
   *  deltas of their biases). With `residuals`, passes scored under the set start at each prompt's
   *  edit's lowest edited block from the unedited residuals kept there (evaluation/metrics.ts
   *  scoreTokens; the same scores, less of the model run), and the owner releases it. */
  constructor(readonly model: Model, readonly edits: Edit[], readonly residuals?: ResidualCache) {
    const f = model.config.nInner, d = model.config.nEmbd;
    // Per layer, per edit there: its low-rank components and the sums of its dense weight and bias changes
    // (one edit with several deltas at a layer, a combined edit, sums them).
    type Share = {
      low: { u: Float32Array; v: Float32Array; rank: number }[];
      dense?: Float32Array;
      bias?: Float32Array;
    };
    const perLayer = new Map<number, Map<number, Share>>();
    const nothing = edits.map(changesNothing);
    nothing.forEach((n, e) => n && this.unchanged.add(e));
    edits.forEach((edit, e) => {
      edit.deltas.forEach((delta, i) => {
        const where = `virtual edit ${e} (${edit.method}, delta ${i})`;
        checkDelta(model, delta, where);
        const m = /^h\.(\d+)\.mlp\.c_proj\.(weight|bias)$/.exec(delta.param);
        if (!m) {
          throw new Error(
            `${where}: only deltas of an MLP output projection can be virtual, got one of ${delta.param}; ` +
              `apply it instead`,
          );
        }
        const layer = Number(m[1]);
        if (!perLayer.has(layer)) perLayer.set(layer, new Map());
        const shares = perLayer.get(layer)!;
        if (!shares.has(e)) shares.set(e, { low: [] });
        const share = shares.get(e)!;
        if (delta.kind === "low-rank") share.low.push({ ...keyValueFactors(model, delta), rank: delta.rank });
        else if (m[2] === "bias") share.bias = addInto(share.bias, delta.values);
        else share.dense = addInto(share.dense, denseColumns(model, delta));
      });
    });
    for (const [layer, shares] of [...perLayer].sort((a, b) => a[0] - b[0])) {
      for (const [e, share] of shares) {
        if (!share.low.length && !share.dense) {
          throw new Error(
            `virtual edit ${e}: a bias change at layer ${layer} without a weight change there cannot be ` +
              `virtual; apply it instead`,
          );
        }
      }
      // An edit that changes nothing (changesNothing) acts nowhere: its prompts are the unedited model's.
      for (const e of shares.keys()) if (nothing[e]) shares.delete(e);
      if (shares.size === 0) continue;
      const list = [...shares.values()];
      const ranks = list.map((x) => x.low.reduce((s, p) => s + p.rank, 0));
      const dense = list.map((x) => !!x.dense);
      const keyRows = ranks.reduce((a, k, i) => a + k + (dense[i] ? d : 0), 0);
      const U = new Float32Array(keyRows * f),
        Vs = new Float32Array(Math.max(1, ranks.reduce((a, b) => a + b, 0)) * d);
      let keyAt = 0, valueAt = 0;
      for (const x of list) {
        for (const p of x.low) {
          U.set(p.u, keyAt * f);
          Vs.set(p.v, valueAt * d);
          keyAt += p.rank;
          valueAt += p.rank;
        }
        if (x.dense) {
          U.set(x.dense, keyAt * f);
          keyAt += d;
        }
      }
      let biases: Tensor | undefined;
      if (list.some((x) => x.bias)) {
        const B = new Float32Array(list.length * d);
        list.forEach((x, i) => x.bias && B.set(x.bias, i * d));
        biases = model.gpu.tensor([list.length, d], B);
      }
      this.layers.push({
        layer,
        keys: model.gpu.tensor([keyRows, f], U),
        values: model.gpu.tensor([Vs.length / d, d], Vs),
        ranks,
        dense,
        biases,
        local: new Map([...shares.keys()].map((e, i) => [e, i])),
      });
    }
  }

  /** Edit `e` as it acts on a prompt: -1 (the unedited model) for -1 and for an edit that changes nothing,
   *  so that scorers share one pass between such a prompt and the same prompt under any other of them. */
  acting(e: number): number {
    return this.unchanged.has(e) ? -1 : e;
  }

  /** The lowest block whose MLP output projection edit `e` changes; the model's depth for -1 (unedited)
   *  or an edit of nothing. */
  firstLayer(e: number): number {
    return this.layers.find((l) => l.local.has(e))?.layer ?? this.model.nLayer;
  }

  /** The forward's virtualEdits for a batch of prompts of T slots, prompt b scored under edit promptEdit[b]
   *  (an index into `edits`; -1 for the unedited model). */
  forBatch(promptEdit: number[], T: number): VirtualEdit[] {
    for (const e of promptEdit) {
      if (!(Number.isInteger(e) && e >= -1 && e < this.edits.length)) {
        throw new Error(`VirtualEditSet: prompt edit ${e} outside [-1, ${this.edits.length})`);
      }
    }
    return this.layers.flatMap((l) => {
      const local = promptEdit.map((e) => l.local.get(e) ?? -1);
      if (local.every((e) => e === -1)) return [];
      return [{
        layer: l.layer,
        keys: l.keys,
        values: l.values,
        ranks: l.ranks,
        dense: l.dense,
        biases: l.biases,
        rowEdit: promptRowEdits(local, T),
      }];
    });
  }

  /** Frees the uploaded components; forBatch must not be called afterwards. */
  release(): void {
    for (const l of this.layers) this.model.gpu.release(l.keys, l.values, l.biases);
  }
}

/**
 * Virtual edits to score under: item i (a prompt, a case, a text: whatever the scorer takes) is scored
 * with edit itemEdit[i] of the set (-1: the model as it is).
 */
export interface ScoredUnder {
  /** The edits, uploaded once. */
  edits: VirtualEditSet;
  /** Per item, the edit it is scored under (-1: none). */
  itemEdit: number[];
}

/** `under` with item i repeated counts[i] times: an edit per case becomes an edit per prompt of the case. */
export function repeatUnder(under: ScoredUnder, counts: readonly number[]): ScoredUnder {
  if (counts.length !== under.itemEdit.length) {
    throw new Error(`${under.itemEdit.length} item edits for ${counts.length} items`);
  }
  return {
    edits: under.edits,
    itemEdit: under.itemEdit.flatMap((e, i) => new Array<number>(counts[i]).fill(e)),
  };
}

/**
 * Whether applying `edit` leaves every weight as it is: each delta exactly zero (a dense change of zeros;
 * low-rank components each with a zero key direction or value change). MEMIT's and EMMET's edits of a fact
 * the model already predicts with a loss under the stopping threshold are such (their z is the current
 * hidden state); the model under one is bit for bit the unedited model.
 */
export function changesNothing(edit: Edit): boolean {
  const zero = (x: Float32Array, from = 0, to = x.length, step = 1) => {
    for (let i = from; i < to; i += step) if (x[i] !== 0) return false;
    return true;
  };
  return edit.deltas.every((delta) => {
    if (delta.kind === "dense") return zero(delta.values);
    // Component c: column c of left [rows, rank], row c of right [rank, cols].
    for (let c = 0; c < delta.rank; c++) {
      const leftZero = zero(delta.left, c, delta.left.length, delta.rank);
      if (!leftZero && !zero(delta.right, c * delta.cols, (c + 1) * delta.cols)) return false;
    }
    return true;
  });
}

/** A delta of an MLP output projection as its components: u [rank, f] key directions, v [rank, d] value
 *  changes (W_math += sum_c v_c u_c^T), whatever the family's layout (keyValueDelta's inverse). */
function keyValueFactors(model: Model, delta: LowRankDelta): { u: Float32Array; v: Float32Array } {
  const f = model.config.nInner, d = model.config.nEmbd, n = delta.rank;
  const transpose = (m: Float32Array, rows: number) => {
    const t = new Float32Array(m.length);
    for (let a = 0; a < rows; a++) for (let i = 0; i < n; i++) t[i * rows + a] = m[a * n + i];
    return t;
  };
  return model.config.linearLayout === "in_out"
    ? { u: transpose(delta.left, f), v: delta.right }
    : { u: delta.right, v: transpose(delta.left, d) };
}

/** A dense delta of an MLP output projection's weight as its d columns of W_math [d, f], [d, f]: its
 *  columns in GPT-2's Conv1D [f, d], itself in an nn.Linear [d, f]. */
function denseColumns(model: Model, delta: DenseDelta): Float32Array {
  const f = model.config.nInner, d = model.config.nEmbd;
  if (model.config.linearLayout !== "in_out") return delta.values;
  const u = new Float32Array(d * f);
  for (let a = 0; a < f; a++) for (let j = 0; j < d; j++) u[j * f + a] = delta.values[a * d + j];
  return u;
}

/** sum + x (a copy of x when there is no sum yet). */
function addInto(sum: Float32Array | undefined, x: Float32Array): Float32Array {
  if (!sum) return x.slice();
  for (let i = 0; i < x.length; i++) sum[i] += x[i];
  return sum;
}

/** One edit holding all deltas of `edits`, in order (applying it = applying them one after another). */
export function combineEdits(edits: Edit[]): Edit {
  if (edits.length === 0) throw new Error("combineEdits: no edits");
  return {
    method: edits.map((e) => e.method).join("+"),
    requests: edits.flatMap((e) => e.requests),
    deltas: edits.flatMap((e) => e.deltas),
    info: { combined: edits.map((e) => e.info) },
  };
}

// ---------------------------------------------------------------------------------------------
// Save and load (safetensors: the factors as tensors, everything else in the metadata)

const METADATA_FIELD = "locus.edit";
const FORMAT = 1;

/** Writes an edit as safetensors (its deltas and metadata), atomically. */
export async function saveEdit(path: string, edit: Edit): Promise<void> {
  const { tensors, metadata } = editTensors(edit);
  await writeSafetensors(path, tensors, metadata);
}

/** An edit's safetensors contents (saveEdit writes them; the web page downloads them). */
export function editTensors(edit: Edit): {
  tensors: Record<string, { shape: number[]; data: Float32Array }>;
  metadata: Record<string, string>;
} {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  const deltas = edit.deltas.map((d, i) => {
    if (d.kind === "low-rank") {
      tensors[`delta.${i}.left`] = { shape: [d.rows, d.rank], data: d.left };
      tensors[`delta.${i}.right`] = { shape: [d.rank, d.cols], data: d.right };
      return { kind: d.kind, param: d.param, rows: d.rows, cols: d.cols, rank: d.rank };
    }
    tensors[`delta.${i}.values`] = { shape: d.shape, data: d.values };
    return { kind: d.kind, param: d.param, shape: d.shape };
  });
  const record = { format: FORMAT, method: edit.method, requests: edit.requests, deltas, info: edit.info };
  return { tensors, metadata: { [METADATA_FIELD]: JSON.stringify(record) } };
}

/** Reads an edit written by `saveEdit`, checking its format. */
export async function loadEdit(path: string): Promise<Edit> {
  const file = await openSafetensors(path);
  try {
    const fail = (what: string): never => {
      throw new SafetensorsError(path, undefined, `${path}: not a Locus edit file: ${what}`);
    };
    const text = file.metadata[METADATA_FIELD];
    if (text === undefined) fail(`no "${METADATA_FIELD}" metadata`);
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(text);
    } catch (e) {
      return fail(`metadata "${METADATA_FIELD}" is not JSON (${(e as Error).message})`);
    }
    if (record.format !== FORMAT) fail(`format ${JSON.stringify(record.format)}, expected ${FORMAT}`);
    if (typeof record.method !== "string") fail("field method is not a string");
    if (!Array.isArray(record.requests)) fail("field requests is not a list");
    (record.requests as unknown[]).forEach((r, i) => checkRequest(r, `requests[${i}]`, fail));
    if (!Array.isArray(record.deltas)) fail("field deltas is not a list");
    const read = async (name: string, shape: number[]): Promise<Float32Array> => {
      if (!file.has(name)) fail(`tensor ${name} is missing`);
      const info = file.info(name);
      if (info.shape.join(",") !== shape.join(",")) {
        fail(`tensor ${name} has shape [${info.shape}], expected [${shape}]`);
      }
      return await file.read(name);
    };
    const deltas: WeightDelta[] = [];
    for (const [i, raw] of (record.deltas as Record<string, unknown>[]).entries()) {
      const where = `deltas[${i}]`;
      if (typeof raw?.param !== "string") fail(`${where}.param is not a string`);
      const count = (field: string) => {
        const v = raw[field];
        if (!Number.isInteger(v) || (v as number) < 1) fail(`${where}.${field} is not a positive integer`);
        return v as number;
      };
      if (raw.kind === "low-rank") {
        const [rows, cols, rank] = [count("rows"), count("cols"), count("rank")];
        const left = await read(`delta.${i}.left`, [rows, rank]),
          right = await read(`delta.${i}.right`, [rank, cols]);
        deltas.push({ kind: "low-rank", param: raw.param as string, rows, cols, rank, left, right });
      } else if (raw.kind === "dense") {
        const shape = raw.shape;
        if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s > 0)) {
          fail(`${where}.shape is not a shape`);
        }
        deltas.push({
          kind: "dense",
          param: raw.param as string,
          shape: shape as number[],
          values: await read(`delta.${i}.values`, shape as number[]),
        });
      } else fail(`${where}.kind is ${JSON.stringify(raw.kind)}, expected "low-rank" or "dense"`);
    }
    return {
      method: record.method as string,
      requests: record.requests as EditRequest[],
      deltas,
      info: (record.info ?? {}) as Record<string, unknown>,
    };
  } finally {
    file.close();
  }
}

/** Throws (through `fail`) unless `r` is a well-formed EditRequest. */
export function checkRequest(r: unknown, where: string, fail: (what: string) => never): void {
  if (typeof r !== "object" || r === null) fail(`${where} is not an object`);
  const o = r as Record<string, unknown>;
  for (const field of ["prompt", "subject", "target"]) {
    if (typeof o[field] !== "string" || o[field] === "") fail(`${where}.${field} is not a non-empty string`);
  }
  if (!(o.prompt as string).includes("{}")) fail(`${where}.prompt has no "{}" for the subject`);
  if (o.direction !== undefined && o.direction !== "increase" && o.direction !== "decrease") {
    fail(`${where}.direction must be "increase" or "decrease"`);
  }
  if (o.noise !== undefined) {
    const n = o.noise as Record<string, unknown>;
    if (typeof n !== "object" || n === null || !Number.isInteger(n.seed) || typeof n.scale !== "number") {
      fail(`${where}.noise must be {seed: integer, scale: number}`);
    }
  }
}
