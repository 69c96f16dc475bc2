// Backward pass of GPT2.forward (run with keep: true), written out by hand op by op in
// reverse, like llm.c's gpt2_backward. Only what is asked for is computed:
//   - parameter gradients for a chosen subset of parameter names (others are never materialised),
//   - gradients w.r.t. the source tensors of hook patches (e.g. ROME's delta added to an MLP output),
//   - gradients w.r.t. a site's state at chosen rows (e.g. integrated gradients on MLP neurons),
// and the walk stops at the lowest layer anything was requested for.
//
// Weight gradients are matmuls and deterministic column reductions (no float atomics), so a
// backward pass is bit-reproducible on one adapter. Gradients accumulate (+=) into the tensors
// in `Gradients`, so micro-batches add up; zero them with optimizer.zeroGrads between steps.
import {
  attentionBackward,
  biasBackward,
  embeddingBackward,
  geluBackward,
  layernormBackward,
} from "./backward_ops.ts";
import { Tensor } from "./gpu.ts";
import type { ForwardResult, GPT2, Hook, Site } from "./model.ts";
import { matmul, type RowEntry, rowOps } from "./ops.ts";

/** Gradient accumulators by parameter name (same shapes as the parameters). */
export type Gradients = Map<string, Tensor>;

export function allocateGradients(model: GPT2, names: Iterable<string>): Gradients {
  const grads: Gradients = new Map();
  for (const name of names) {
    if (name === "wte.weight") {
      if (model.wte.length !== 1) {
        throw new Error("wte gradients need an unsplit embedding (vocabulary fits one binding)");
      }
      grads.set(name, model.gpu.zeros(model.wte[0].tensor.shape));
    } else grads.set(name, model.gpu.zeros(model.p(name).shape));
  }
  return grads;
}

export interface BackwardRequest {
  /** d loss / d logits [outputRows.length, V] of the forward. */
  dlogits: Tensor;
  /** Parameter gradients to accumulate into. */
  params?: Gradients;
  /** Gradients w.r.t. hook patch sources: grad[e.src] += e.take * d state[e.dst]. Keyed by the source tensor. */
  patchSources?: Map<Tensor, Tensor>;
  /** Gradient of a site's state (after its patches) at `rows`, written into `into` rows 0..n-1. */
  states?: { layer: number; site: Site; rows: number[]; into: Tensor }[];
}

/** Splits entries into rounds in which no destination row repeats (each round is one dispatch). */
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

export function backward(model: GPT2, fwd: ForwardResult, req: BackwardRequest): void {
  const gpu = model.gpu, cfg = model.config;
  const acts = fwd.acts;
  if (!acts) throw new Error("backward needs a forward run with keep: true");
  const { B, T } = fwd.batch;
  const R = B * T, d = cfg.nEmbd, f = 4 * d, H = cfg.nHead, n = fwd.outputRows.length, V = cfg.vocabSize;
  const grads = req.params ?? new Map<string, Tensor>();
  const want = (name: string) => grads.get(name);

  // Lowest layer anything is requested for; below it nothing needs a gradient.
  let lowest = cfg.nLayer;
  for (const name of grads.keys()) {
    const m = /^h\.(\d+)\./.exec(name);
    lowest = Math.min(lowest, m ? Number(m[1]) : name.startsWith("ln_f") ? cfg.nLayer : -1);
  }
  for (const h of fwd.hooks) {
    if (h.patch?.src && req.patchSources?.has(h.patch.src)) {
      lowest = Math.min(lowest, h.site === "embed" ? -1 : h.layer);
    }
  }
  for (const s of req.states ?? []) lowest = Math.min(lowest, s.site === "embed" ? -1 : s.layer);
  lowest = Math.max(lowest, fwd.startLayer - 1);

  // Gradients through the hooks of one site, in reverse order of application.
  const hookBackward = (layer: number, site: Site, dstate: Tensor) => {
    for (const s of req.states ?? []) {
      if (s.site === site && (site === "embed" || s.layer === layer)) {
        rowOps(
          gpu,
          s.into,
          dstate,
          model.siteWidth(site),
          s.rows.map((r, i) => ({ dst: i, src: r, keep: 0, take: 1 })),
        );
      }
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
        const g = req.patchSources?.get(h.patch!.src);
        if (g) {
          for (
            const round of distinctRounds(
              entries.map((e) => ({ dst: e.src, src: e.dst, keep: 1, take: e.take })),
            )
          ) {
            rowOps(gpu, g, dstate, width, round);
          }
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

  // Linear layer y = x W + b: accumulate dW, db if requested; return dx (or nothing).
  const linearBackward = (
    dy: Tensor,
    x: Tensor,
    prefix: string,
    nIn: number,
    nOut: number,
    needDx: boolean,
  ): Tensor | undefined => {
    const dW = want(prefix + ".weight"), db = want(prefix + ".bias");
    if (dW) matmul(gpu, x, dy, nIn, nOut, R, { transA: true, out: dW, beta: 1 });
    if (db) biasBackward(gpu, dy, R, nOut, { dbias: db });
    if (!needDx) return undefined;
    return matmul(gpu, dy, model.p(prefix + ".weight"), R, nIn, nOut, {
      transB: true,
      weight: true,
      out: gpu.empty([R, nIn]),
    });
  };

  // ---- unembedding and final layernorm (only the scored rows)
  const dlnf = gpu.zeros([n, d]);
  for (const c of model.wte) {
    // dlnf += dlogits[:, chunk] wte_chunk; only whole-vocabulary chunks are supported for wte's own grad.
    if (model.wte.length === 1) {
      matmul(gpu, req.dlogits, c.tensor, n, d, V, { weight: true, out: dlnf, beta: 1 });
    } else throw new Error("backward through a split embedding is not supported");
  }
  const dwte = want("wte.weight");
  if (dwte) matmul(gpu, req.dlogits, acts.lnf, V, d, n, { transA: true, out: dwte, beta: 1 });
  const dselected = gpu.zeros([n, d]);
  layernormBackward(gpu, dlnf, acts.selected, model.p("ln_f.weight"), acts.lnfStats, n, d, {
    dx: dselected,
    dgamma: want("ln_f.weight"),
    dbeta: want("ln_f.bias"),
  });
  let dx = gpu.zeros([R, d]);
  for (const round of distinctRounds(fwd.outputRows.map((r, i) => ({ dst: r, src: i, keep: 1, take: 1 })))) {
    rowOps(gpu, dx, dselected, d, round);
  }
  gpu.release(dlnf, dselected);

  // ---- blocks, top to bottom
  for (let l = cfg.nLayer - 1; l >= Math.max(lowest, fwd.startLayer); l--) {
    const a = acts.layers[l - fwd.startLayer];
    const p = `h.${l}.`;
    const below = l > lowest; // does anything below this block need gradients?
    hookBackward(l, "resid", dx);
    // out = m + mlp: both receive dx.
    const dmlp = gpu.empty([R, d]);
    gpu.copy(dx, dmlp);
    hookBackward(l, "mlp", dmlp);
    const dkey = linearBackward(dmlp, a.key, p + "mlp.c_proj", f, d, true)!;
    hookBackward(l, "key", dkey);
    const dpre = gpu.zeros([R, f]);
    geluBackward(gpu, dkey, a.pre, R * f, { dx: dpre });
    hookBackward(l, "mlp_pre", dpre);
    const dln2 = linearBackward(dpre, a.ln2, p + "mlp.c_fc", d, f, true)!;
    // dm = dx + layernorm_2 backward
    const dm = dx;
    layernormBackward(gpu, dln2, a.m, model.p(p + "ln_2.weight"), a.ln2Stats, R, d, {
      dx: dm,
      dgamma: want(p + "ln_2.weight"),
      dbeta: want(p + "ln_2.bias"),
    });
    gpu.release(dmlp, dkey, dpre, dln2);
    const dattn = gpu.empty([R, d]);
    gpu.copy(dm, dattn);
    hookBackward(l, "attn", dattn);
    const dheads = linearBackward(dattn, a.heads, p + "attn.c_proj", d, d, true)!;
    const dqkv = gpu.zeros([R, 3 * d]);
    attentionBackward(gpu, dheads, a.qkv, a.probs, B, T, d, H, { dqkv });
    const needLn1 = below || want(p + "ln_1.weight") || want(p + "ln_1.bias");
    const dln1 = linearBackward(dqkv, a.ln1, p + "attn.c_attn", d, 3 * d, !!needLn1);
    if (dln1) {
      // dx_in = dm + layernorm_1 backward (accumulated into dm, which becomes the next dx)
      layernormBackward(gpu, dln1, a.x, model.p(p + "ln_1.weight"), a.ln1Stats, R, d, {
        dx: dm,
        dgamma: want(p + "ln_1.weight"),
        dbeta: want(p + "ln_1.bias"),
      });
    }
    gpu.release(dattn, dheads, dqkv, dln1);
    dx = dm;
  }

  // ---- embeddings
  if (lowest < 0 && fwd.startLayer === 0) {
    hookBackward(-1, "embed", dx);
    const dwpe = want("wpe.weight");
    if (dwte || dwpe) {
      embeddingBackward(gpu, dx, fwd.batch.ids, R, T, d, { dwte, dwpe });
    }
  }
  gpu.release(dx);
}
