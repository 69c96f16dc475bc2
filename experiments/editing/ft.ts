// FT-L: constrained fine-tuning (Zhu et al. 2020, as run by ROME's baselines/ft and Hase et al.):
// Adam on mlp.c_proj (weight and bias) of one layer or of several adjacent layers, with every weight
// kept within an L-infinity ball of radius eps around its original value.
//
// Loss "prompt_last" (ROME's reference FT baseline): the next-token distribution after the last prompt token
// only; *every* target token id is scored against that one distribution (no teacher forcing), mean
// over target tokens, then over the batch. For fact erasure ("decrease") -log p becomes -log(1 - p).
// A batch steps only while its loss is >= 1e-2, and training stops once an epoch's mean loss is
// below 1e-2. The edit is the dense change of the trained tensors; the model is restored afterwards.
import { allocateGradients, backward } from "../../engine/autograd.ts";
import type { Model } from "../../engine/model.ts";
import { Adam, projectLinf, zeroGrads } from "../../engine/optimizer.ts";
import { targetIds, type Tokenizer } from "../../engine/tokenizer.ts";
import type { DenseDelta, Edit, EditRequest } from "./edit.ts";
import type { FtHparams } from "./hparams.ts";
import { batchWithNoise, instantiate } from "./keys.ts";

const STOP_LOSS = 1e-2;

export async function computeFt(
  model: Model,
  tok: Tokenizer,
  requests: EditRequest[],
  hp: FtHparams,
): Promise<Edit> {
  const gpu = model.gpu, V = model.config.vocabSize;
  if (requests.length === 0) throw new Error("ft: no requests");
  for (const l of hp.layers) {
    if (!Number.isInteger(l) || l < 0 || l >= model.nLayer) {
      throw new Error(`ft: layer ${l} outside [0, ${model.nLayer})`);
    }
  }
  if (!(hp.normConstraint >= 0)) throw new Error(`ft: normConstraint must be >= 0, got ${hp.normConstraint}`);
  const names = hp.layers.flatMap((l) =>
    model.config.mlpBias
      ? [`h.${l}.mlp.c_proj.weight`, `h.${l}.mlp.c_proj.bias`]
      : [`h.${l}.mlp.c_proj.weight`]
  );
  const tensors = await Promise.all(names.map((n) => model.writable(n)));
  const originals = (await gpu.readMany(tensors)).map((a) => a.slice());
  const anchors = originals.map((a, i) => gpu.tensor(tensors[i].shape, a));
  const grads = allocateGradients(model, names);
  const adam = new Adam(gpu, names.map((name, i) => ({ name, tensor: tensors[i], size: tensors[i].size })), {
    lr: hp.lr,
  });

  const prompts = requests.map((r) => instantiate(tok, "{}", r.prompt, r.subject, r.noise));
  const targets = requests.map((r) =>
    targetIds(tok, r.prompt.replace("{}", r.subject), r.target, { refuseUnknown: true })
  );
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
          const row = logits.subarray(b * V, (b + 1) * V);
          let mx = -Infinity;
          for (const v of row) mx = Math.max(mx, v);
          let z = 0;
          for (const v of row) z += Math.exp(v - mx);
          const prob = (t: number) => Math.exp(row[t] - mx) / z;
          const ys = targets[req], m = ys.length;
          const decrease = requests[req].direction === "decrease";
          // d loss_b / d logits = sum_j c_j (softmax - onehot(y_j)), c_j = d loss_b / d NLL_j.
          let cSum = 0;
          const out = dlogits.subarray(b * V, (b + 1) * V);
          for (const y of ys) {
            const p = Math.min(prob(y), 1 - 1e-7);
            loss += (decrease ? -Math.log(1 - p) : -Math.log(p)) / (m * idx.length);
            const c = (decrease ? -p / (1 - p) : 1) / (m * idx.length);
            cSum += c;
            out[y] -= c;
          }
          for (let v = 0; v < V; v++) out[v] += cSum * Math.exp(row[v] - mx) / z;
        });
        losses.push(loss);
        epochLoss += loss * idx.length / requests.length;
        if (loss >= STOP_LOSS) {
          const dl = gpu.tensor([idx.length, V], dlogits);
          zeroGrads(gpu, [...grads.values()]);
          backward(model, fwd, { dlogits: dl, params: grads });
          adam.step(names.map((n) => grads.get(n)!));
          tensors.forEach((t, i) => projectLinf(gpu, t, anchors[i], hp.normConstraint));
          gpu.release(dl);
        }
        model.releaseForward(fwd);
      }
      steps++;
      if (epochLoss < STOP_LOSS) break;
    }
    const trained = await gpu.readMany(tensors);
    const deltas: DenseDelta[] = names.map((param, i) => ({
      kind: "dense",
      param,
      shape: [...tensors[i].shape],
      values: trained[i].map((v, j) => v - originals[i][j]),
    }));
    return {
      method: "ft",
      requests,
      deltas,
      info: { hparams: hp, layers: hp.layers, losses, epochs: steps },
    };
  } finally {
    tensors.forEach((t, i) => gpu.write(t, originals[i]));
    adam.destroy();
    for (const t of [...anchors, ...grads.values()]) t.destroy();
  }
}
