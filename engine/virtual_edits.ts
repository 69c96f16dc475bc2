// Virtual edits: a low-rank change of a layer's MLP output projection evaluated without writing the
// weights. A weight edit W_math += sum_c v_c u_c^T (ROME: one component; a MEMIT batch: one per fact)
// adds sum_c (key . u_c) v_c to the MLP output of every token, so a batched forward can give each
// row its own edit: row r of the batch gets its edit's correction at the "mlp" site, and rows of
// other edits (or none) are left alone. Many edits are then scored in one forward over all their
// prompts instead of apply / score / undo one at a time (shaders/virtual_edit.wgsl). A dense change
// (FT-L) is d key rows, one per output column, whose scores are the correction itself, plus a change
// of the projection's bias per edit.
import { cdiv, type Gpu, type Tensor, uniforms } from "./gpu.ts";
import { ELEMENT_WG, grid1d, matmulTiles, rowOps } from "./ops.ts";

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
 * mlp [R, d] (updated in place), key [R, f] (the c_proj input of the same rows). `denseProducts: false`
 * keeps the dense changes on the scores kernel where the adapter would run them as products (the same
 * bits either way; tests compare the two).
 */
export function applyVirtualEdit(
  gpu: Gpu,
  mlp: Tensor,
  key: Tensor,
  edit: VirtualEdit,
  R: number,
  f: number,
  d: number,
  o: { denseProducts?: boolean } = {},
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
  edit.rowEdit.forEach((e, r) => {
    if (e !== -1 && (!Number.isInteger(e) || e < 0 || e >= ranks.length)) {
      throw new Error(`${where}: row ${r} names edit ${e}, there are ${ranks.length} (or -1 for none)`);
    }
  });
  // The rows of edits that are only a dense change go through denseProducts where the adapter allows it
  // (the same bits); the others through the scores below.
  const firstKeys = entries.map(([first]) => first);
  const byProduct = o.denseProducts === false ? null : denseProducts(
    gpu,
    mlp,
    key,
    edit,
    firstKeys.map((first, e) => ranks[e] === 0 && dense[e] && first % 4 === 0),
    firstKeys,
    R,
    f,
    d,
  );
  const table = new Uint32Array(4 * R);
  edit.rowEdit.forEach((e, r) => {
    if (e !== -1 && !byProduct?.[e]) table.set(entries[e], 4 * r);
  });
  const scored = keyRows.filter((_, e) => !byProduct?.[e]);
  if (scored.length === 0) return addBiases(gpu, mlp, edit, ranks.length, d, where);
  const K = Math.max(...scored);
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
  addBiases(gpu, mlp, edit, ranks.length, d, where);
}

/** Adds each edit's bias change (VirtualEdit.biases, [edits, d]) to its rows of mlp [R, d]. */
function addBiases(gpu: Gpu, mlp: Tensor, edit: VirtualEdit, edits: number, d: number, where: string): void {
  if (!edit.biases) return;
  if (edit.biases.size !== edits * d) {
    throw new Error(`${where}: biases [${edit.biases.shape}] must be [${edits}, ${d}], one per edit`);
  }
  const add = edit.rowEdit.flatMap((e, r) => e === -1 ? [] : [{ dst: r, src: e, keep: 1, take: 1 }]);
  rowOps(gpu, mlp, edit.biases, d, add);
}

/**
 * Records mlp[r, :] += key[r, :] (the dense change of row r's edit) for the rows of the edits `eligible`
 * names (only a dense change, its first key row in edit.keys, firstKeys[e], a multiple of 4), as one
 * grouped product reading the keys and the changes from texture mirrors (shaders/virtual_dense.wgsl):
 * the same sums in the same order as the scores kernel, so the same bits. Only where the adapter reads
 * activations and transposed weights from textures (llvmpipe: FT-L's dense scores 3-4.5x faster,
 * bench/RESULTS.md) and the mirrors fit; returns which edits it did, or null.
 */
function denseProducts(
  gpu: Gpu,
  mlp: Tensor,
  key: Tensor,
  edit: VirtualEdit,
  eligible: boolean[],
  firstKeys: number[],
  R: number,
  f: number,
  d: number,
): boolean[] | null {
  const texture = matmulTiles(gpu).texture, tiles = texture?.transposed;
  const C = edit.keys.size / f;
  if (
    !tiles || texture.activations === false || !eligible.some(Boolean) || !gpu.canMirror(key, R, f) ||
    !gpu.canMirror(edit.keys, C, f, "transposed")
  ) return null;
  const changes = gpu.mirror(edit.keys, C, f, "transposed")[0].view;
  const params = { K4: f / 4, AW: 1, TM: tiles.TM, TN4: tiles.TN / 4, WG: tiles.WG, GELU: false, ACT: 0 };
  const pipeline = gpu.pipeline("virtual_dense.wgsl", "virtual_dense", params);
  // One dispatch per chunk of the keys' mirror; its blocks: runs of one edit's rows, TM rows at most.
  for (const { view, rowStart, rows } of gpu.mirror(key, R, f)) {
    const blocks: number[] = [];
    for (let r = rowStart; r < rowStart + rows;) {
      const e = edit.rowEdit[r];
      let end = r + 1;
      while (end < rowStart + rows && end - r < tiles.TM && edit.rowEdit[end] === e) end++;
      if (e !== -1 && eligible[e]) blocks.push(r, end - r, firstKeys[e] / 4, 0);
      r = end;
    }
    if (blocks.length === 0) continue;
    const table = gpu.upload([blocks.length / 4, 4], Uint32Array.from(blocks), "u32");
    gpu.run(
      pipeline,
      [view, changes, table, mlp],
      [blocks.length / 4, cdiv(d, tiles.TN * tiles.WG)],
      uniforms().u32(d, 0).f32(1, 1).u32(d, 0, 0, rowStart, 0, R, f),
    );
  }
  return eligible;
}
