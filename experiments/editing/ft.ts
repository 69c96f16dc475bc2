// FT-L: constrained fine-tuning (Zhu et al. 2020, as run by ROME's baselines/ft and Hase et al.):
// Adam on mlp.c_proj (weight and bias) of one layer or of several adjacent layers, with every weight
// kept within an L-infinity ball of radius eps around its original value.
//
// Loss "prompt_last" (ROME's reference FT baseline): the next-token distribution after the last prompt token
// only; *every* target token id is scored against that one distribution (no teacher forcing), mean
// over target tokens, then over the batch. For fact erasure ("decrease") -log p becomes -log(1 - p).
// A batch steps only while its loss is >= 1e-2, and training stops once an epoch's mean loss is
// below 1e-2. The edit is the dense change of the trained tensors; the model is restored afterwards.
//
// computeFtBatch trains many edits at once without touching the model: each edit's prompts form one group
// of a batch with its own copy of the trained tensors (engine/model.ts GroupedParams), so one forward and
// backward per step serve every edit, and what never changes (the blocks below the lowest trained layer,
// and that block up to its MLP output projection) runs once per batch (engine/model.ts ResumePoint). Each
// edit steps and stops exactly as computeFt would (its own loss, its own Adam moments and L-infinity
// ball); results equal computeFt's to float tolerance (the grouped products sum in another order).
import { allocateGradients, backward, releaseFactors } from "../../engine/autograd.ts";
import { sideBySide, type Tensor } from "../../engine/gpu.ts";
import {
  type Batch,
  type GroupedParams,
  makeBatch,
  type Model,
  type ResumePoint,
} from "../../engine/model.ts";
import { rowOps } from "../../engine/ops.ts";
import { Adam, type AdamParam, zeroGrads } from "../../engine/optimizer.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import type { DenseDelta, Edit, EditRequest } from "./edit.ts";
import type { FtHparams } from "./hparams.ts";
import { batchWithNoise, instantiate } from "./keys.ts";

const STOP_LOSS = 1e-2;

/** The parameters FT-L trains on `layers`, after checking the request list and hyper-parameters. */
function trainedParams(model: Model, requests: EditRequest[], hp: FtHparams): string[] {
  if (requests.length === 0) throw new Error("ft: no requests");
  for (const l of hp.layers) {
    if (!Number.isInteger(l) || l < 0 || l >= model.nLayer) {
      throw new Error(`ft: layer ${l} outside [0, ${model.nLayer})`);
    }
  }
  if (!(hp.normConstraint >= 0)) throw new Error(`ft: normConstraint must be >= 0, got ${hp.normConstraint}`);
  return hp.layers.flatMap((l) =>
    model.config.mlpBias
      ? [`h.${l}.mlp.c_proj.weight`, `h.${l}.mlp.c_proj.bias`]
      : [`h.${l}.mlp.c_proj.weight`]
  );
}

/**
 * The "prompt_last" loss of one request of a batch of n from its prompt's last-token logits `row` [V]:
 * the mean over its target tokens `ys` of -log p(y) (fact erasure: -log(1 - p(y))), over n; adds the
 * loss's gradient w.r.t. the logits into `out` [V]:
 * d loss / d logits = sum_j c_j (softmax - onehot(y_j)), c_j = d loss / d NLL_j.
 */
function promptLastLoss(
  row: Float32Array,
  ys: number[],
  decrease: boolean,
  n: number,
  out: Float32Array,
): number {
  let mx = -Infinity;
  for (const v of row) mx = Math.max(mx, v);
  // exp(logit - max) of every vocabulary entry, computed once (the softmax's numerators).
  const e = new Float64Array(row.length);
  let z = 0;
  for (let v = 0; v < row.length; v++) {
    e[v] = Math.exp(row[v] - mx);
    z += e[v];
  }
  const prob = (t: number) => e[t] / z;
  const m = ys.length;
  let loss = 0, cSum = 0;
  for (const y of ys) {
    const p = Math.min(prob(y), 1 - 1e-7);
    loss += (decrease ? -Math.log(1 - p) : -Math.log(p)) / (m * n);
    const c = (decrease ? -p / (1 - p) : 1) / (m * n);
    cSum += c;
    out[y] -= c;
  }
  for (let v = 0; v < row.length; v++) out[v] += cSum * e[v] / z;
  return loss;
}

/** The trained tensors as Adam's parameters, each kept within hp.normConstraint of its anchor (the
 *  original weights) after every step; an anchor with `copies` is the one center of that many copies
 *  (AdamParam's linf.copies). */
function constrained(
  names: string[],
  tensors: Tensor[],
  anchors: { center: Tensor; copies?: number }[],
  hp: FtHparams,
): AdamParam[] {
  return names.map((name, i) => ({
    name,
    tensor: tensors[i],
    size: tensors[i].size,
    linf: { ...anchors[i], radius: hp.normConstraint },
  }));
}

/** One FT-L edit of `requests`, trained in place on the model's own tensors, which are restored after. */
export async function computeFt(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  hp: FtHparams,
): Promise<Edit> {
  const gpu = model.gpu, V = model.config.vocabSize;
  const started = performance.now();
  const names = trainedParams(model, requests, hp);
  const tensors = await Promise.all(names.map((n) => model.writable(n)));
  const originals = (await gpu.readMany(tensors)).map((a) => a.slice());
  const anchors = originals.map((a, i) => gpu.tensor(tensors[i].shape, a));
  const grads = allocateGradients(model, names);
  const adam = new Adam(gpu, constrained(names, tensors, anchors.map((center) => ({ center })), hp), {
    lr: hp.lr,
    trackNorm: false,
  });

  const { prompts, targets } = promptsAndTargets(tok, requests);
  const losses: number[] = [];
  let steps = 0;
  try {
    for (let step = 0; step < hp.numSteps; step++) {
      let epochLoss = 0;
      for (let start = 0; start < requests.length; start += hp.batchSize) {
        const idx = Array.from(
          { length: Math.min(hp.batchSize, requests.length - start) },
          (_, i) => start + i,
        );
        const { batch, hooks, release } = batchWithNoise(gpu, model.config.nEmbd, idx.map((i) => prompts[i]));
        const fwd = model.forward(batch, { hooks, keep: true });
        release();
        const logits = await fwd.logits.read();
        const dlogits = new Float32Array(idx.length * V);
        let loss = 0;
        idx.forEach((req, b) => {
          const decrease = requests[req].direction === "decrease";
          const row = logits.subarray(b * V, (b + 1) * V), out = dlogits.subarray(b * V, (b + 1) * V);
          loss += promptLastLoss(row, targets[req], decrease, idx.length, out);
        });
        losses.push(loss);
        epochLoss += loss * idx.length / requests.length;
        if (loss >= STOP_LOSS) {
          const dl = gpu.tensor([idx.length, V], dlogits);
          zeroGrads(gpu, [...grads.values()]);
          backward(model, fwd, { dlogits: dl, params: grads });
          adam.step(names.map((n) => grads.get(n)!));
          gpu.release(dl);
        }
        model.releaseForward(fwd);
      }
      steps++;
      if (epochLoss < STOP_LOSS) break;
    }
    const trained = await gpu.readMany(tensors);
    const seconds = (performance.now() - started) / 1000;
    return ftEdit(
      requests,
      hp,
      names,
      tensors.map((t) => t.shape),
      trained,
      originals,
      losses,
      steps,
      seconds,
    );
  } finally {
    tensors.forEach((t, i) => gpu.write(t, originals[i]));
    adam.destroy();
    for (const t of [...anchors, ...grads.values()]) t.destroy();
  }
}

/** Each request's bare prompt (subject noised where it says) and its target token ids. */
function promptsAndTargets(tok: Tokenizer, requests: EditRequest[]) {
  return {
    prompts: requests.map((r) => instantiate(tok, "{}", r.prompt, r.subject, r.noise)),
    targets: requests.map((r) =>
      targetIds(tok, r.prompt.replace("{}", r.subject), r.target, { refuseUnknown: true })
    ),
  };
}

/** a - b, element by element (a plain loop: TypedArray.map's callback per element cost seconds of a
 *  sweep's FT-L edits). */
function difference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let j = 0; j < a.length; j++) out[j] = a[j] - b[j];
  return out;
}

/** An FT-L edit: the dense changes trained - original of the trained parameters; `seconds` its training
 *  time (computeFtBatch: its share of its batch's). */
function ftEdit(
  requests: EditRequest[],
  hp: FtHparams,
  names: string[],
  shapes: readonly (readonly number[])[],
  trained: Float32Array[],
  originals: Float32Array[],
  losses: number[],
  epochs: number,
  seconds: number,
): Edit {
  const deltas: DenseDelta[] = names.map((param, i) => ({
    kind: "dense",
    param,
    shape: [...shapes[i]],
    values: difference(trained[i], originals[i]),
  }));
  return {
    method: "ft",
    requests,
    deltas,
    info: { hparams: hp, layers: hp.layers, losses, epochs, seconds },
  };
}

/** One edit of computeFtBatch: the requests it is trained on and its hyper-parameters. */
export interface FtJob {
  /** The facts the edit is trained on; an edit of at most hp.batchSize of them (one mini-batch per epoch)
   *  trains in a batch with other edits, a longer one alone through computeFt. */
  requests: EditRequest[];
  /** Its hyper-parameters; jobs with equal ones share batches. */
  hp: FtHparams;
}

/** GPU bytes one batch's per-edit tensors may take (perEditTensors; the embedded model's c_proj: 1 MB per
 *  edit). */
const BATCH_BYTES = 512 * 2 ** 20;

/** The trained parameters whose gradients backward leaves factored (formed inside Adam's step, never
 *  stored): the weights; the biases' are accumulated. */
const isFactored = (name: string) => name.endsWith(".weight");

/** Whether a trained parameter's copies share one L-infinity center, the model's own tensor: a factored
 *  weight whose gradient Adam forms in its update (whole vec4s of columns), see engine/optimizer.ts. */
const sharesCenter = (name: string, shape: readonly number[]) => isFactored(name) && shape.at(-1)! % 4 === 0;

/** Per-edit tensors of a batch for a trained parameter of this stored shape (see BATCH_BYTES): copies,
 *  final copies and two moments, an anchor unless the copies share one, a gradient unless factored. */
const perEditTensors = (name: string, shape: readonly number[]) =>
  4 + (sharesCenter(name, shape) ? 0 : 1) + (isFactored(name) ? 0 : 1);

/**
 * FT-L edits of many jobs, each as computeFt(model, tok, job.requests, job.hp) would compute it, trained
 * together: jobs with equal hyper-parameters (the same layers) share batches, as many per batch as
 * BATCH_BYTES and the adapter's storage bindings allow. A job with more requests than hp.batchSize (more
 * than one mini-batch per epoch) runs through computeFt. `onProgress(step, steps)` counts the steps of
 * every batch. The model is never written.
 */
export async function computeFtBatch(
  model: Model,
  tok: Tokenizer,
  jobs: FtJob[],
  o: { onProgress?: (step: number, steps: number) => void } = {},
): Promise<Edit[]> {
  const results: Edit[] = new Array(jobs.length);
  const batches = new Map<string, number[]>();
  for (const [j, job] of jobs.entries()) {
    trainedParams(model, job.requests, job.hp); // refuses a bad job before any training
    if (job.requests.length > job.hp.batchSize) continue;
    const key = JSON.stringify(job.hp);
    if (!batches.has(key)) batches.set(key, []);
    batches.get(key)!.push(j);
  }
  // Chunks of jobs that fit one batch's memory.
  const chunks: { members: number[]; bytes: number }[] = [];
  for (const members of batches.values()) {
    const names = trainedParams(model, jobs[members[0]].requests, jobs[members[0]].hp);
    // A 16-bit weight is widened to float32 once (Model.writable), before chunks that train it run side
    // by side.
    for (const n of names) await model.writable(n);
    const sizes = names.map((n) => model.p(n).size);
    const perJob = 4 * names.reduce((a, n, i) => a + perEditTensors(n, model.p(n).shape) * sizes[i], 0);
    const fit = Math.max(
      1,
      Math.min(
        Math.floor(BATCH_BYTES / perJob),
        Math.floor(model.gpu.limits.maxStorageBufferBindingSize / (4 * Math.max(...sizes))),
      ),
    );
    for (let at = 0; at < members.length; at += fit) {
      const chunk = members.slice(at, at + fit);
      chunks.push({ members: chunk, bytes: perJob * chunk.length });
    }
  }
  const totalSteps = chunks.reduce((s, c) => s + jobs[c.members[0]].hp.numSteps, 0);
  let stepsDone = 0;
  const started = performance.now();
  const trained: TrainedJob[] = new Array(jobs.length);
  const wall: number[] = chunks.map(() => 0); // each chunk's seconds from start to end
  const train = async ({ members }: (typeof chunks)[number], c: number) => {
    const t0 = performance.now();
    let steps = 0;
    const out = await trainGroups(model, tok, members.map((j) => jobs[j]), () => {
      steps++;
      o.onProgress?.(++stepsDone, totalSteps);
    });
    members.forEach((j, i) => trained[j] = out[i]);
    stepsDone += jobs[members[0]].hp.numSteps - steps;
    wall[c] = (performance.now() - t0) / 1000;
  };
  // Chunks train side by side while their tensors fit BATCH_BYTES together: every step reads its losses
  // back, waiting for its kernels (engine/gpu.ts sideBySide), and meanwhile another chunk's step runs.
  await sideBySide(
    chunks.length,
    (running, next) => running.reduce((s, c) => s + chunks[c].bytes, chunks[next].bytes) <= BATCH_BYTES,
    (c) => train(chunks[c], c),
  );
  // Each batched edit's seconds: its chunk's share of the call's wall time (chunks overlap, so each
  // chunk's own span, scaled to add up to the call's), split among the chunk's edits.
  const scale = (performance.now() - started) / 1000 / Math.max(1e-9, wall.reduce((a, b) => a + b, 0));
  const seconds = new Map(
    chunks.flatMap((c, k) => c.members.map((j) => [j, wall[k] * scale / c.members.length])),
  );
  for (const [j, job] of jobs.entries()) {
    const t = trained[j];
    results[j] = t
      ? ftEdit(
        job.requests,
        job.hp,
        t.names,
        t.shapes,
        t.trained,
        t.originals,
        t.losses,
        t.epochs,
        seconds.get(j)!,
      )
      : await computeFt(model, tok, job.requests, job.hp);
  }
  return results;
}

/** What trainGroups trained for one job: its parameters' values before and after, losses and epochs. */
interface TrainedJob {
  names: string[];
  shapes: readonly (readonly number[])[];
  trained: Float32Array[];
  originals: Float32Array[];
  losses: number[];
  epochs: number;
}

/**
 * computeFt for jobs of equal hyper-parameters, each at most one mini-batch, in one batch: job g's
 * requests are group g's sequences (padded to the longest list with repeats scored at zero weight).
 * After a step at which jobs stop, the others continue in a batch of their own: their tensors, Adam's
 * moments and their rows of the resume point copied across (no forward), so each steps exactly as
 * before. (Stopped jobs riding on to a quarter of the batch, as before, cost a block's FT-L 11% more
 * job-steps and about 9% more CPU: bench/RESULTS.md.)
 */
async function trainGroups(
  model: Model,
  tok: Tokenizer,
  jobs: FtJob[],
  onStep: (step: number) => void,
): Promise<TrainedJob[]> {
  const gpu = model.gpu, V = model.config.vocabSize, hp = jobs[0].hp;
  const names = trainedParams(model, jobs[0].requests, hp);
  const tensors = await Promise.all(names.map((n) => model.writable(n)));
  const originals = await gpu.readMany(tensors);
  const sizes = originals.map((w) => w.length);
  const S = Math.max(...jobs.map((j) => j.requests.length));
  // Sequence s of job g (g * S + s): request s, or its last again past the end of its list.
  const padded = jobs.flatMap((job) =>
    Array.from({ length: S }, (_, s) => job.requests[Math.min(s, job.requests.length - 1)])
  );
  const { prompts, targets } = promptsAndTargets(tok, padded);
  // Where every step's forward starts (makeBatch's resume point).
  const lowest = Math.min(...hp.layers);
  const factored = new Set(names.filter(isFactored));
  // Each job's tensors at the step it stopped (copied before that step's update, which moves a stopped
  // job by Adam's momentum only; it then leaves the batch).
  const finals = tensors.map((t) => gpu.zeros([jobs.length, ...t.shape]));

  /** Records trained tensor i's original values into every group's slice of `t` [G, ...shape]. */
  const repeatOriginal = (i: number, t: Tensor) => {
    for (let g = 0; g < t.size / sizes[i]; g++) gpu.copy(tensors[i], t, sizes[i], 0, g * sizes[i]);
  };
  /** A batch of the jobs `members` (in batch order); fill(i, copy) records their trained tensor i. Its
   *  resume point is a forward's, or with `from` the rows of its members' sequences in an earlier batch
   *  of them (`at`: each member's position there): the same values, row by row, without the forward. */
  const batchOf = (
    members: number[],
    fill: (i: number, copy: Tensor) => void,
    from?: { batch: Batch; resume: ResumePoint; at: number[] },
  ) => {
    const G = members.length;
    const shapes = tensors.map((t) => [G, ...t.shape]);
    const filled = (each: (i: number, t: Tensor) => void) =>
      shapes.map((shape, i) => {
        const t = gpu.empty(shape);
        each(i, t);
        return t;
      });
    const copies = filled(fill);
    // The L-infinity balls' centers: every weight copy's is the model's own weight (never written here),
    // one tensor for all of them (sharesCenter); the others' are repeated per copy.
    const anchors = names.map((n, i) => {
      if (sharesCenter(n, tensors[i].shape)) return undefined;
      const t = gpu.empty(shapes[i]);
      repeatOriginal(i, t);
      return t;
    });
    // The weights' gradients stay factored (backward's x^T dy of each copy), formed inside Adam's
    // update; the biases' are accumulated.
    const grads = new Map(names.flatMap((n, i) => (factored.has(n) ? [] : [[n, gpu.zeros(shapes[i])]])));
    const grouped: GroupedParams = { groups: G, tensors: new Map(names.map((n, i) => [n, copies[i]])) };
    const centers = anchors.map((a, i) => (a ? { center: a } : { center: tensors[i], copies: G }));
    const adam = new Adam(gpu, constrained(names, copies, centers, hp), { lr: hp.lr, trackNorm: false });
    const sequences = members.flatMap((g) => Array.from({ length: S }, (_, s) => g * S + s));
    let batch: Batch, resume: ResumePoint;
    if (from) {
      // Every row of a sequence is computed alone (no kernel mixes sequences), so its rows in the earlier
      // batch are what a forward of this one computes; padding rows stay zero (no real row reads them,
      // and their gradients are exactly zero).
      batch = makeBatch(sequences.map((b) => prompts[b].ids));
      const entries = members.flatMap((_, q) =>
        Array.from({ length: S }, (_, s) => {
          const [now, before] = [q * S + s, from.at[q] * S + s];
          return Array.from({ length: batch.lengths[now] }, (_, t) => ({
            dst: now * batch.T + t,
            src: before * from.batch.T + t,
            keep: 0,
            take: 1,
          }));
        }).flat()
      );
      const rows = (t: Tensor) => {
        const width = t.shape[1];
        const out = gpu.zeros([batch.B * batch.T, width]);
        rowOps(gpu, out, t, width, entries);
        return out;
      };
      const { m, key, attn } = from.resume;
      resume = { layer: lowest, m: rows(m), key: rows(key), attn: attn && rows(attn) };
    } else {
      const noised = batchWithNoise(gpu, model.config.nEmbd, sequences.map((b) => prompts[b]));
      batch = noised.batch;
      // The blocks below the lowest trained layer and that block up to its MLP output projection never
      // change: one kept forward gives the resume point of every step (the tensors a step's own forward
      // would compute there, so the same bits).
      const first = model.forward(batch, { hooks: noised.hooks, keep: true, fullLastBlock: true });
      resume = model.resumePoint(first, lowest);
      model.releaseForward(first);
      noised.release();
    }
    const free = () => {
      adam.destroy();
      gpu.release(resume.m, resume.key, resume.attn);
      for (const t of [...copies, ...grads.values()]) t.destroy();
      for (const t of anchors) t?.destroy();
    };
    return { members, copies, grads, grouped, adam, batch, resume, free };
  };

  const losses: number[][] = jobs.map(() => []);
  const epochs: number[] = jobs.map(() => hp.numSteps);
  const active = new Set(jobs.keys());
  let current = batchOf([...jobs.keys()], repeatOriginal);
  // Job g, at position p of the current batch, stops: its tensors now are its result.
  const stop = (p: number, g: number) => {
    current.copies.forEach((c, i) => gpu.copy(c, finals[i], sizes[i], p * sizes[i], g * sizes[i]));
    active.delete(g);
  };
  try {
    for (let step = 0; step < hp.numSteps && active.size > 0; step++) {
      const { members, batch, resume, grouped, grads, adam } = current;
      const fwd = model.forward(batch, { resume, keep: true, grouped });
      const logits = await fwd.logits.read();
      const dlogits = new Float32Array(members.length * S * V);
      // Every member is training (a batch is rebuilt after any step at which one stops).
      members.forEach((g, p) => {
        const n = jobs[g].requests.length;
        let loss = 0;
        for (let s = 0; s < n; s++) {
          const row = p * S + s, b = g * S + s;
          const out = dlogits.subarray(row * V, (row + 1) * V);
          loss += promptLastLoss(
            logits.subarray(row * V, (row + 1) * V),
            targets[b],
            padded[b].direction === "decrease",
            n,
            out,
          );
        }
        losses[g].push(loss);
        if (loss < STOP_LOSS) {
          dlogits.fill(0, p * S * V, (p + 1) * S * V);
          epochs[g] = step + 1;
          stop(p, g);
        }
      });
      if (active.size > 0) {
        const dl = gpu.tensor([members.length * S, V], dlogits);
        zeroGrads(gpu, [...grads.values()]);
        const { factors } = backward(model, fwd, { dlogits: dl, params: grads, factored });
        adam.step(names.map((n) => factors.get(n) ?? grads.get(n)!));
        releaseFactors(gpu, factors);
        gpu.release(dl);
      }
      model.releaseForward(fwd);
      onStep(step + 1);
      // The jobs still training, once others have stopped, continue in a batch of their own.
      const kept = members.flatMap((g, p) => (active.has(g) ? [{ g, p }] : []));
      if (kept.length > 0 && kept.length < members.length) {
        const next = batchOf(kept.map((k) => k.g), (i, copy) => {
          kept.forEach(({ p }, q) => gpu.copy(current.copies[i], copy, sizes[i], p * sizes[i], q * sizes[i]));
        }, { batch: current.batch, resume: current.resume, at: kept.map((k) => k.p) });
        current.adam.copyMomentsTo(
          next.adam,
          sizes.map((n) => kept.map(({ p }, q) => ({ from: p * n, at: q * n, count: n }))),
        );
        current.free();
        current = next;
      }
    }
    current.members.forEach((g, p) => {
      if (active.has(g)) stop(p, g);
    });
    const trained = await gpu.readMany(finals);
    return jobs.map((_, g) => ({
      names,
      shapes: tensors.map((t) => t.shape),
      trained: trained.map((t, i) => t.subarray(g * sizes[i], (g + 1) * sizes[i])),
      originals,
      losses: losses[g],
      epochs: epochs[g],
    }));
  } finally {
    current.free();
    for (const t of finals) t.destroy();
  }
}
