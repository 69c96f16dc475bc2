// Backward pass of Model.forward (run with keep: true) for every family, written out by hand op
// by op in reverse, like llm.c's gpt2_backward. Only what is asked for is computed:
//   - parameter gradients for a chosen subset of parameter names (others are never materialised),
//   - gradients w.r.t. the source tensors of hook patches (e.g. ROME's delta added to an MLP output),
//   - gradients w.r.t. a site's state at chosen rows (e.g. integrated gradients on MLP neurons),
// and the walk stops at the lowest layer anything was requested for.
//
// Weight gradients are matmuls and deterministic column reductions (no float atomics), so a
// backward pass is bit-reproducible on one adapter. Gradients accumulate (+=) into the tensors
// in `Gradients`, so micro-batches add up; zero them with optimizer.zeroGrads between steps.
import { qkvWidth } from "./config.ts";
import {
  attentionBackward,
  attentionBackwardLse,
  biasBackward,
  embeddingBackward,
  geluBackward,
  gluBackward,
  layernormBackward,
  softcapBackward,
} from "./backward_ops.ts";
import { type Gpu, Tensor } from "./gpu.ts";
import type { ForwardResult, Hook, Model, Site } from "./model.ts";
import { add, gatherColumns, matmul, type RowEntry, rowOps } from "./ops.ts";

/** Gradient accumulators by parameter name (same shapes as the parameters). */
export type Gradients = Map<string, Tensor>;

/** Zeroed gradient buffers, one per named parameter (Locus names, e.g. `h.3.mlp.c_proj.weight`). */
export function allocateGradients(model: Model, names: Iterable<string>): Gradients {
  const grads: Gradients = new Map();
  for (const name of names) {
    if (name === "wte.weight" || name === "lm_head.weight") {
      const chunks = name === "wte.weight" ? model.wte : model.head;
      if (chunks.length !== 1) {
        throw new Error(`${name} gradients need an unsplit matrix (vocabulary fits one binding)`);
      }
      grads.set(name, model.gpu.zeros(chunks[0].tensor.shape));
    } else if (name === "lm_head.bias") grads.set(name, model.gpu.zeros([model.config.vocabSize]));
    else grads.set(name, model.gpu.zeros(model.p(name).shape));
  }
  return grads;
}

/**
 * A grouped weight's gradient left as its factors by `backward` (BackwardRequest.factored): copy g's
 * gradient [M, N] is a_g^T b_g, where a_g and b_g are rows [g * rows, (g + 1) * rows) of a [groups *
 * rows, M] and b [groups * rows, N] (x and dy for GPT-2's [in, out] weights, dy and x for [out, in]).
 * Adam.step forms it inside its update instead of writing it out. `held` is the backward's own gradient
 * tensor among a and b, kept for the step: releaseFactors frees it once the step is recorded.
 */
export interface FactoredGradient {
  /** [groups * rows, M] */
  a: Tensor;
  /** [groups * rows, N] */
  b: Tensor;
  /** Weight copies (GroupedParams.groups). */
  groups: number;
  /** Rows of a and b per copy. */
  rows: number;
  /** Rows of a copy's gradient [M, N] (the weight's stored shape). */
  M: number;
  /** Its columns. */
  N: number;
  /** The backward's own tensor among a and b, released by releaseFactors. */
  held: Tensor;
}

/** What `backward` leaves to its caller. */
export interface BackwardResult {
  /** The gradients of BackwardRequest.factored, by name. */
  factors: Map<string, FactoredGradient>;
}

/** Records into[g] += a_g^T b_g for every copy g of factored gradient `f` (into: [groups, M, N]): the
 *  gradient written out, as backward accumulates an unfactored grouped weight's. */
export function addFactoredGradient(gpu: Gpu, f: Omit<FactoredGradient, "held">, into: Tensor): void {
  matmul(gpu, f.a, f.b, f.M, f.N, f.rows, {
    transA: true,
    batch: f.groups,
    strides: { a: f.rows * f.M, b: f.rows * f.N, c: f.M * f.N },
    out: into,
    beta: 1,
  });
}

/** Releases the tensors factored gradients hold, once the steps that read them are recorded. */
export function releaseFactors(gpu: Gpu, factors: Map<string, FactoredGradient>): void {
  for (const f of factors.values()) gpu.release(f.held);
}

/** What `backward` differentiates: the loss gradient at the logits and what to return gradients of. */
export interface BackwardRequest {
  /** d loss / d logits [outputRows.length, V] of the forward. */
  dlogits: Tensor;
  /** Parameter gradients to accumulate into. */
  params?: Gradients;
  /**
   * Grouped weights (a forward's GroupedParams) whose gradients are left as their factors
   * (BackwardResult.factors) instead of being accumulated into `params`: an optimiser step then forms
   * each in its own pass (FT-L's weight copies, whose gradients would otherwise be written out, read
   * back and zeroed at every step).
   */
  factored?: Set<string>;
  /** Gradients w.r.t. hook patch sources: grad[e.src] += e.take * d state[e.dst]. Keyed by the source tensor. */
  patchSources?: Map<Tensor, Tensor>;
  /** Gradient of a site's state (after its patches) at `rows`, written into `into` rows 0..n-1. */
  states?: { layer: number; site: Site; rows: number[]; into: Tensor }[];
}

/** Splits entries into rounds in which no destination row repeats (each round is one dispatch): for rowOps in
 *  place, which refuses repeated rows (from another buffer it applies them in order itself). */
function distinctRounds(entries: RowEntry[]): RowEntry[][] {
  const rounds: { used: Set<number>; list: RowEntry[] }[] = [];
  for (const e of entries) {
    let r = rounds.find((x) => !x.used.has(e.dst));
    if (!r) rounds.push(r = { used: new Set(), list: [] });
    r.used.add(e.dst);
    r.list.push(e);
  }
  return rounds.map((r) => r.list);
}

/** The hand-written backward pass of a forward kept with `keep: true`: fills the requested parameter,
 *  hook-source and site gradients (recorded into the same submit stream, no readback). */
export function backward(model: Model, fwd: ForwardResult, req: BackwardRequest): BackwardResult {
  const gpu = model.gpu, cfg = model.config;
  const acts = fwd.acts;
  if (!acts) throw new Error("backward needs a forward run with keep: true");
  const { B, T } = fwd.batch;
  const R = B * T, d = cfg.nEmbd, f = cfg.nInner, n = fwd.outputRows.length, V = cfg.vocabSize;
  const H = cfg.nHead, Hkv = cfg.nKvHead, hd = cfg.headDim, qd = H * hd, width = qkvWidth(cfg);
  const fcOut = model.siteWidth("mlp_pre");
  const grads = req.params ?? new Map<string, Tensor>();
  const suffix = fwd.suffix;
  if (suffix && grads.size > 0) {
    throw new Error(
      "backward: a suffix forward gives no parameter gradients (its cached prefix's share is missing)",
    );
  }
  const want = (name: string) => grads.get(name);
  const factored = req.factored ?? new Set<string>();
  for (const name of factored) {
    if (grads.has(name)) throw new Error(`backward: ${name} is asked for both factored and accumulated`);
    if (!fwd.grouped?.tensors.has(name) || !name.endsWith(".weight")) {
      throw new Error(`backward: only grouped weights can be factored, not ${name}`);
    }
  }
  const factors = new Map<string, FactoredGradient>();
  // The gradient tensors factors hold are released by the caller (releaseFactors), not here.
  const held = new Set<Tensor>();
  const release = (...tensors: (Tensor | undefined)[]) =>
    gpu.release(...tensors.filter((t) => !t || !held.has(t)));
  const requested = [...grads.keys(), ...factored];
  const rms = cfg.norm === "rmsnorm";
  const sequential = cfg.residual === "sequential";

  // Lowest layer anything is requested for; below it nothing needs a gradient.
  let lowest = cfg.nLayer;
  for (const name of requested) {
    const m = /^h\.(\d+)\./.exec(name);
    lowest = Math.min(lowest, m ? Number(m[1]) : /^(ln_f|lm_head)/.test(name) ? cfg.nLayer : -1);
  }
  for (const h of fwd.hooks) {
    if (h.patch?.src && req.patchSources?.has(h.patch.src)) {
      lowest = Math.min(lowest, h.site === "embed" ? -1 : h.layer);
    }
  }
  for (const s of req.states ?? []) lowest = Math.min(lowest, s.site === "embed" ? -1 : s.layer);
  lowest = Math.max(lowest, fwd.startLayer - 1);
  // Whether the walk must go on below the lowest block's MLP output projection: a parameter of that
  // block other than the projection's own (and the MLP branch's post-norm), a site gradient or a hook's
  // source below it. Without one (FT-L training that projection, v*'s delta at the MLP output) the block
  // ends with the projection's weight gradient: its input gradient and everything under it would feed
  // nothing.
  const lowestBlockGoesOn =
    requested.some((name) =>
      name.startsWith(`h.${lowest}.`) && !/^h\.\d+\.(mlp\.c_proj\.|ln_mlp_out\.)/.test(name)
    ) ||
    (req.states ?? []).some((s) => s.layer === lowest && s.site !== "resid" && s.site !== "mlp") ||
    fwd.hooks.some((h) =>
      h.layer === lowest && h.site !== "resid" && h.site !== "mlp" && !!h.patch?.src &&
      !!req.patchSources?.has(h.patch.src)
    );

  // Gradients through the hooks of one site, in reverse order of application. `rows`: the batch rows
  // dstate holds, when not all (a trimmed last block's, where the forward ran no hooks): a requested
  // row it does not hold reached no logit, its gradient is 0.
  const hookBackward = (layer: number, site: Site, dstate: Tensor, rows?: number[]) => {
    for (const s of req.states ?? []) {
      if (s.site !== site || (site !== "embed" && s.layer !== layer)) continue;
      const width = model.siteWidth(site);
      if (!rows) {
        rowOps(gpu, s.into, dstate, width, s.rows.map((r, i) => ({ dst: i, src: r, keep: 0, take: 1 })));
        continue;
      }
      // Each requested row's copies among `rows` (a repeated output row ran once per copy) add up; a row
      // without one gets 0.
      const entries = s.rows.flatMap((r, i) => {
        const copies = rows.flatMap((x, j) => (x === r ? [j] : []));
        return copies.length === 0
          ? [{ dst: i, src: 0, keep: 0, take: 0 }]
          : copies.map((j, k) => ({ dst: i, src: j, keep: k === 0 ? 0 : 1, take: 1 }));
      });
      rowOps(gpu, s.into, dstate, width, entries);
    }
    const hooks: Hook[] = fwd.hooks.filter((h) =>
      h.patch && h.site === site && (site === "embed" || h.layer === layer)
    );
    const width = model.siteWidth(site);
    for (const h of hooks.reverse()) {
      const entries = h.patch!.entries;
      if (h.patch!.src === null) {
        // state[dst] = keep*state[dst] + take*state[src]: the source rows receive take * d state[dst].
        for (
          const round of distinctRounds(
            entries.map((e) => ({ dst: e.src, src: e.dst, keep: 1, take: e.take })),
          )
        ) {
          rowOps(gpu, dstate, null, width, round);
        }
      } else {
        // Many rows may patch from one source row (a v* request's prompts): one ordered scatter-add.
        const g = req.patchSources?.get(h.patch!.src);
        if (g) {
          rowOps(
            gpu,
            g,
            dstate,
            width,
            entries.map((e) => ({ dst: e.src, src: e.dst, keep: 1, take: e.take })),
          );
        }
      }
      rowOps(
        gpu,
        dstate,
        null,
        width,
        entries.map((e) => ({ dst: e.dst, src: e.dst, keep: e.keep, take: 0 })),
      );
    }
  };

  // Linear layer y = x W + b (GPT-2's [in, out] layout) or y = x W^T + b ([out, in]) of R rows:
  // accumulate dW, db if requested; return dx (or nothing).
  const linearBackward = (
    dy: Tensor,
    x: Tensor,
    prefix: string,
    nIn: number,
    nOut: number,
    needDx: boolean,
    R: number,
  ): Tensor | undefined => {
    const dW = want(prefix + ".weight"), db = want(prefix + ".bias");
    const outIn = cfg.linearLayout === "out_in";
    const groupedWeight = fwd.grouped?.tensors.get(prefix + ".weight");
    if (groupedWeight) {
      return groupedLinearBackward(dy, x, prefix, groupedWeight, { dW, db }, nIn, nOut, needDx, R);
    }
    const split = model.rowChunks.get(prefix + ".weight");
    if (split) {
      // W [out, in] split by output rows: dx = sum over chunks of dy[:, chunk rows] W_chunk.
      if (dW) throw new Error(`the gradient of ${prefix}.weight, split into row chunks, is not supported`);
      if (db) biasBackward(gpu, dy, R, nOut, { dbias: db });
      if (!needDx) return undefined;
      const dx = gpu.empty([R, nIn]);
      split.forEach((c, i) => {
        const slice = gatherColumns(gpu, dy, R, nOut, c.rowStart, c.rows);
        matmul(gpu, slice, c.tensor, R, nIn, c.rows, { weight: true, out: dx, beta: i === 0 ? 0 : 1 });
        gpu.release(slice);
      });
      return dx;
    }
    if (dW) {
      if (outIn) matmul(gpu, dy, x, nOut, nIn, R, { transA: true, out: dW, beta: 1 });
      else matmul(gpu, x, dy, nIn, nOut, R, { transA: true, out: dW, beta: 1 });
    }
    if (db) biasBackward(gpu, dy, R, nOut, { dbias: db });
    if (!needDx) return undefined;
    return matmul(gpu, dy, model.p(prefix + ".weight"), R, nIn, nOut, {
      transB: !outIn,
      weight: true,
      out: gpu.empty([R, nIn]),
    });
  };

  // The same for a linear whose weight (and maybe bias) has a copy per group of rows (GroupedParams):
  // group g's rows [g*rows, (g+1)*rows) give copy g's gradient, dW[g] [shape] += x_g^T dy_g (GPT-2's
  // [in, out]) or dy_g^T x_g ([out, in]), db[g] += the column sums of dy_g, and dx_g = dy_g W_g^T.
  const groupedLinearBackward = (
    dy: Tensor,
    x: Tensor,
    prefix: string,
    W: Tensor,
    { dW, db }: { dW?: Tensor; db?: Tensor },
    nIn: number,
    nOut: number,
    needDx: boolean,
    R: number,
  ): Tensor | undefined => {
    const G = fwd.grouped!.groups, rows = R / G;
    const outIn = cfg.linearLayout === "out_in";
    const groupedBias = fwd.grouped!.tensors.has(prefix + ".bias");
    const perGroup = (g: Tensor, name: string, size: number) => {
      if (g.size !== G * size) {
        throw new Error(`backward: the gradient of grouped ${prefix}${name} needs ${G} x ${size} values`);
      }
    };
    if (dW) perGroup(dW, ".weight", nIn * nOut);
    if (db && groupedBias) perGroup(db, ".bias", nOut);
    const [a, b, M, N] = outIn ? [dy, x, nOut, nIn] : [x, dy, nIn, nOut];
    const factor = { a, b, groups: G, rows, M, N, held: dy };
    if (factored.has(prefix + ".weight")) {
      factors.set(prefix + ".weight", factor);
      held.add(dy);
    } else if (dW) addFactoredGradient(gpu, factor, dW);
    if (db && groupedBias) {
      const ones = gpu.tensor([rows], new Float32Array(rows).fill(1));
      matmul(gpu, ones, dy, 1, nOut, rows, {
        batch: G,
        strides: { a: 0, b: rows * nOut, c: nOut },
        out: db,
        beta: 1,
      });
      gpu.release(ones);
    } else if (db) biasBackward(gpu, dy, R, nOut, { dbias: db });
    if (!needDx) return undefined;
    return matmul(gpu, dy, W, rows, nIn, nOut, {
      transB: !outIn,
      batch: G,
      strides: { a: rows * nOut, b: nIn * nOut, c: rows * nIn },
      out: gpu.empty([R, nIn]),
    });
  };

  // A norm's backward into `dx` (accumulated), from the forward's input `x` and saved stats.
  const normBackward = (dy: Tensor, x: Tensor, prefix: string, stats: Tensor, rows: number, dx: Tensor) => {
    layernormBackward(gpu, dy, x, model.p(prefix + ".weight"), stats, rows, d, {
      dx,
      dgamma: want(prefix + ".weight"),
      dbeta: want(prefix + ".bias"),
      rms,
      gainOffset: cfg.normGainOffset,
    });
  };

  // ---- soft-cap, unembedding and final norm (only the scored rows)
  let dlogits = req.dlogits;
  if (cfg.finalSoftcap) {
    dlogits = gpu.empty([n, V]);
    gpu.copy(req.dlogits, dlogits);
    softcapBackward(gpu, dlogits, fwd.logits, n * V, cfg.finalSoftcap);
  }
  const dlnf = gpu.zeros([n, d]);
  // dlnf = dlogits W_head, summed over the head's row chunks (a vocabulary over one binding is split).
  for (const c of model.head) {
    const slice = model.head.length === 1 ? dlogits : gatherColumns(gpu, dlogits, n, V, c.rowStart, c.rows);
    matmul(gpu, slice, c.tensor, n, d, c.rows, { weight: true, out: dlnf, beta: 1 });
    if (slice !== dlogits) gpu.release(slice);
  }
  const dwte = want("wte.weight");
  const dhead = cfg.tiedHead ? dwte : want("lm_head.weight");
  if (dhead) matmul(gpu, dlogits, acts.lnf, V, d, n, { transA: true, out: dhead, beta: 1 });
  const dheadBias = want("lm_head.bias");
  if (dheadBias) biasBackward(gpu, dlogits, n, V, { dbias: dheadBias });
  if (dlogits !== req.dlogits) gpu.release(dlogits);
  const dselected = gpu.zeros([n, d]);
  normBackward(dlnf, acts.selected, "ln_f", acts.lnfStats, n, dselected);
  gpu.release(dlnf);
  // t [rows.length, width] at the batch rows `rows` -> [R, width], zero elsewhere (a repeated row sums).
  const widen = (t: Tensor, rows: number[], width: number): Tensor => {
    const all = gpu.zeros([R, width]);
    rowOps(gpu, all, t, width, rows.map((r, i) => ({ dst: r, src: i, keep: 1, take: 1 })));
    gpu.release(t);
    return all;
  };
  // The stream's gradient: at the outputRows while in a trimmed last block (which ran at them), else [R, d].
  let dx = acts.layers.at(-1)?.rows ? dselected : widen(dselected, fwd.outputRows, d);

  // A branch's output of R rows: the post-norm's backward (Gemma 2/3) gives the gradient of the state
  // before it.
  const branchBackward = (
    dadded: Tensor,
    state: Tensor,
    prefix: string,
    stats: Tensor | undefined,
    R: number,
  ): Tensor => {
    const dstate = gpu.zeros([R, d]);
    if (cfg.postNorms) normBackward(dadded, state, prefix, stats!, R, dstate);
    else gpu.copy(dadded, dstate);
    return dstate;
  };

  // ---- blocks, top to bottom
  for (let l = cfg.nLayer - 1; l >= Math.max(lowest, fwd.startLayer); l--) {
    const a = acts.layers[l - fwd.startLayer];
    const p = `h.${l}.`;
    const below = l > lowest; // does anything below this block need gradients?
    // Rows from attention's output on: a trimmed last block's outputRows, else all R.
    const Rb = a.rows?.length ?? R;
    hookBackward(l, "resid", dx, a.rows);
    // The gradient reaching the attention branch: d out in parallel blocks, d m in sequential ones.
    const dattnAdded = sequential ? undefined : gpu.empty([Rb, d]);
    if (dattnAdded) gpu.copy(dx, dattnAdded);
    // MLP branch: out = m + [post-norm] mlp.
    const dmlp = branchBackward(dx, a.mlp, p + "ln_mlp_out", a.mlpNormStats, Rb);
    hookBackward(l, "mlp", dmlp, a.rows);
    const goesOn = below || lowestBlockGoesOn;
    if (goesOn && a.resumed) {
      throw new Error(
        `backward: block ${l} started at its MLP output projection (a resume point): no gradient below it`,
      );
    }
    const dkey = linearBackward(dmlp, a.key, p + "mlp.c_proj", f, d, goesOn, Rb);
    if (!dkey) {
      release(dmlp, ...(dattnAdded ? [dattnAdded] : []));
      break;
    }
    hookBackward(l, "key", dkey, a.rows);
    const dpre = cfg.mlp === "gated"
      ? gluBackward(gpu, dkey, a.pre, Rb, f, cfg.activation, { dx: gpu.empty([Rb, 2 * f]) })
      : geluBackward(gpu, dkey, a.pre, Rb * f, { dx: gpu.empty([Rb, f]), activation: cfg.activation });
    hookBackward(l, "mlp_pre", dpre, a.rows);
    const dln2 = linearBackward(dpre, a.ln2, p + "mlp.c_fc", d, fcOut, true, Rb)!;
    release(dmlp, dkey, dpre);
    // ln_2 reads m (sequential) or x (parallel): its backward adds into dx, the stream's gradient,
    // which then is d m (sequential) or d x so far (parallel). GPT-J's MLP reads ln_1's output.
    let dln1Extra: Tensor | undefined;
    if (cfg.residual === "parallel_shared_norm") dln1Extra = a.rows ? widen(dln2, a.rows, d) : dln2;
    else {
      normBackward(dln2, a.m, p + "ln_2", a.ln2Stats, Rb, dx);
      gpu.release(dln2);
    }
    // Attention branch.
    const dattn = branchBackward(dattnAdded ?? dx, a.attn, p + "ln_attn_out", a.attnNormStats, Rb);
    if (dattnAdded) gpu.release(dattnAdded);
    hookBackward(l, "attn", dattn, a.rows);
    let dheads = linearBackward(dattn, a.heads, p + "attn.c_proj", qd, d, true, Rb)!;
    // Below a trimmed block's attention output every row takes part again.
    if (a.rows) {
      dheads = widen(dheads, a.rows, qd);
      dx = widen(dx, a.rows, d);
    }
    const attentionOptions = {
      dqkv: gpu.empty([R, width]),
      nKvHead: Hkv,
      scale: cfg.attnScale,
      softcap: cfg.attnSoftcap,
      window: cfg.windows[l],
      queries: suffix && { Tq: T, offsets: suffix.offsets, cache: suffix.qkv[l - fwd.startLayer] },
    };
    // The forward kept the probabilities or, where they would be too large or the adapter prefers
    // recomputing them, each row's log-sum-exp (engine/kernel_choice.ts).
    let dqkv = a.probs
      ? attentionBackward(gpu, dheads, a.qkv, a.probs, B, suffix?.T ?? T, qd, H, attentionOptions)
      : attentionBackwardLse(gpu, dheads, a.qkv, a.lse!, B, suffix?.T ?? T, qd, H, attentionOptions);
    release(dattn, dheads);
    if (cfg.rotary) {
      model.rotate(dqkv, l, R, T, -1, suffix?.offsets);
    }
    if (cfg.qkNorm) {
      // The q and k parts of the projection's gradient come through their norms; v's is unchanged.
      const dprojected = gpu.empty([R, width]);
      gpu.copy(dqkv, dprojected);
      for (
        const [part, heads, off, stats] of [["q", H, 0, a.qNormStats!], [
          "k",
          Hkv,
          qd,
          a.kNormStats!,
        ]] as const
      ) {
        const name = `${p}attn.${part}_norm.weight`;
        layernormBackward(gpu, dqkv, a.qkvProjected!, model.p(name), stats, R * heads, hd, {
          dx: dprojected,
          dgamma: want(name),
          rms: true,
          gainOffset: cfg.normGainOffset,
          rows: { G: heads, ld: width, off },
          accumulate: false,
        });
      }
      release(dqkv);
      dqkv = dprojected;
    }
    const needLn1 = below || want(p + "ln_1.weight") || want(p + "ln_1.bias");
    const dln1 = linearBackward(dqkv, a.ln1, p + "attn.c_attn", d, width, !!needLn1, R);
    if (dln1) {
      if (dln1Extra) add(gpu, dln1, dln1Extra, R * d, { out: dln1 });
      // dx_in = d(stream) + norm_1 backward
      normBackward(dln1, a.x, p + "ln_1", a.ln1Stats, R, dx);
    }
    release(dqkv, ...(dln1 ? [dln1] : []), ...(dln1Extra ? [dln1Extra] : []));
  }

  // The input of a pass that started at a block is the residual leaving the block below: its hooks.
  if (fwd.startLayer > 0 && lowest < fwd.startLayer) hookBackward(fwd.startLayer - 1, "resid", dx);

  // ---- embeddings
  if (lowest < 0 && fwd.startLayer === 0) {
    hookBackward(-1, "embed", dx);
    const dwpe = want("wpe.weight");
    if (dwte || dwpe) {
      if (cfg.embedScale !== 1) {
        throw new Error("embedding gradients of scaled embeddings (Gemma) are not supported");
      }
      embeddingBackward(gpu, dx, fwd.batch.ids, R, T, d, { dwte, dwpe });
    }
  }
  gpu.release(dx);
  return { factors };
}
