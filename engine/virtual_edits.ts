// Virtual edits: a low-rank change of a layer's MLP output projection evaluated without writing the
// weights. A weight edit W_math += sum_c v_c u_c^T (ROME: one component; a MEMIT batch: one per fact)
// adds sum_c (key . u_c) v_c to the MLP output of every token, so a batched forward can give each
// row its own edit: row r of the batch gets its edit's correction at the "mlp" site, and rows of
// other edits (or none) are left alone. Many edits are then scored in one forward over all their
// prompts instead of apply / score / undo one at a time (shaders/virtual_edit.wgsl). A dense change
// (FT-L) is d key rows, one per output column, whose scores are the correction itself, plus a change
// of the projection's bias per edit.
import { cdiv, type Gpu, type Tensor, uniforms } from "./gpu.ts";
import { ELEMENT_WG, grid1d, rowOps } from "./ops.ts";

/** Scores of one row per invocation of virtual_scores_vec4 (shaders/virtual_edit.wgsl). */
const SCORES_PER_INVOCATION = 4;

/** The edits acting at one layer's MLP output in a forward (Model.forward's `virtualEdits`). */
export interface VirtualEdit {
  /** The block whose MLP output the edits change. */
  layer: number;
  /** Key rows of every edit in turn, [C, f] (f = the MLP's inner width): edit e's ranks[e] low-rank
   *  key directions u_c, then, where dense[e], the d columns of its dense change (of W_math [d, f]). */
  keys: Tensor;
  /** Value changes v_c of the low-rank components in the same order, [max(1, sum of ranks), d] (a
   *  placeholder row when every edit is dense). */
  values: Tensor;
  /** Low-rank components of each edit (default: 1 each; 0 for an edit that is only dense). */
  ranks?: number[];
  /** Whether each edit also holds a dense change (default: none do). */
  dense?: boolean[];
  /** Each edit's change of the projection's bias, [edits, d], added to its rows (FT-L's dense edits). */
  biases?: Tensor;
  /** The edit acting on each row b*T + t of the batch (-1: none), [B*T]. */
  rowEdit: number[];
}

/** Expands one edit index per prompt (-1: none) to every row b*T + t of a batch of B prompts of T slots. */
export function promptRowEdits(promptEdit: number[], T: number): number[] {
  return promptEdit.flatMap((e) => new Array<number>(T).fill(e));
}

/**
 * Records mlp[r, :] += sum over the components c of row r's edit of (key[r, :] . u_c) v_c (+ its dense
 * change applied to key[r, :], + its bias change).
 * mlp [R, d] (updated in place), key [R, f] (the c_proj input of the same rows).
 */
export function applyVirtualEdit(
  gpu: Gpu,
  mlp: Tensor,
  key: Tensor,
  edit: VirtualEdit,
  R: number,
  f: number,
  d: number,
): void {
  const where = `virtual edit at layer ${edit.layer}`;
  const C = edit.keys.size / f;
  if (!Number.isInteger(C) || C < 1 || edit.keys.shape.at(-1) !== f) {
    throw new Error(`${where}: keys [${edit.keys.shape}] must be [components, ${f}]`);
  }
  if (edit.dense && !edit.ranks) throw new Error(`${where}: dense changes need the edits' ranks`);
  const ranks = edit.ranks ?? new Array<number>(C).fill(1);
  const dense = edit.dense ?? ranks.map(() => false);
  if (dense.length !== ranks.length) {
    throw new Error(`${where}: dense has ${dense.length} entries for ${ranks.length} edits`);
  }
  const keyRows = ranks.map((k, e) => k + (dense[e] ? d : 0));
  if (ranks.some((k, e) => !Number.isInteger(k) || k < 0 || keyRows[e] < 1)) {
    throw new Error(
      `${where}: ranks must be integers >= 0 (>= 1 where an edit is not dense), got [${ranks}]`,
    );
  }
  const total = keyRows.reduce((a, b) => a + b, 0), lowRank = ranks.reduce((a, b) => a + b, 0);
  if (total !== C) {
    const denseCount = dense.filter(Boolean).length;
    throw new Error(
      `${where}: ranks [${ranks}]${denseCount ? ` and ${denseCount} dense changes of ${d} rows` : ""} ` +
        `give ${total} key rows, the keys have ${C}`,
    );
  }
  const valueRows = Math.max(1, lowRank);
  if (edit.values.size !== valueRows * d || edit.values.shape.at(-1) !== d) {
    throw new Error(
      `${where}: values [${edit.values.shape}] must be [${valueRows}, ${d}], a row per low-rank component`,
    );
  }
  if (edit.rowEdit.length !== R) {
    throw new Error(`${where}: rowEdit has ${edit.rowEdit.length} entries, the batch has ${R} rows`);
  }
  // Per edit: (first key row, key rows, first value row, low-rank components).
  let keyAt = 0, valueAt = 0;
  const entries = keyRows.map((k, e) => {
    const entry = [keyAt, k, valueAt, ranks[e]];
    keyAt += k;
    valueAt += ranks[e];
    return entry;
  });
  const table = new Uint32Array(4 * R);
  edit.rowEdit.forEach((e, r) => {
    if (e === -1) return;
    if (!Number.isInteger(e) || e < 0 || e >= ranks.length) {
      throw new Error(`${where}: row ${r} names edit ${e}, there are ${ranks.length} (or -1 for none)`);
    }
    table.set(entries[e], 4 * r);
  });
  const K = Math.max(...keyRows);
  const rows = gpu.upload([R, 4], table, "u32");
  const scores = gpu.empty([R, K]);
  // Four values per storage access where the key width allows (the same sums, shaders/virtual_edit.wgsl).
  const vec4 = f % 4 === 0;
  // Rows per invocation of the vec4 scores: the adapter's choice (rows of one edit share their key rows).
  const RB = gpu.kernels.virtualScoreRows;
  const sizes = { WG: ELEMENT_WG, KB: SCORES_PER_INVOCATION, RB }; // every entry point of the module
  gpu.run(
    gpu.pipeline("virtual_edit.wgsl", vec4 ? "virtual_scores_vec4" : "virtual_scores", sizes),
    [scores, key, edit.keys, rows],
    grid1d(
      gpu,
      cdiv(vec4 ? cdiv(R, RB) * Math.ceil(K / SCORES_PER_INVOCATION) : R * K, ELEMENT_WG),
    ),
    uniforms().u32(R, f, K),
  );
  gpu.run(
    gpu.pipeline("virtual_edit.wgsl", "virtual_apply", sizes),
    [mlp, scores, edit.values, rows],
    grid1d(gpu, cdiv(R * d, ELEMENT_WG)),
    uniforms().u32(R, d, K),
  );
  gpu.release(scores);
  if (edit.biases) {
    if (edit.biases.size !== ranks.length * d) {
      throw new Error(
        `${where}: biases [${edit.biases.shape}] must be [${ranks.length}, ${d}], one per edit`,
      );
    }
    const add = edit.rowEdit.flatMap((e, r) => e === -1 ? [] : [{ dst: r, src: e, keep: 1, take: 1 }]);
    rowOps(gpu, mlp, edit.biases, d, add);
  }
}
