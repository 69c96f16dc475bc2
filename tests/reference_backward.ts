// Float64 references for the backward kernels, the loss and the optimizer: plain loops that
// follow the math line by line. Each backward here is itself checked against central finite
// differences of the float64 forward beside it (tests/backward_test.ts), so a GPU kernel that
// matches these matches the true gradient. Arrays are row-major.

type Arr = ArrayLike<number>;

/** Central finite-difference gradient of a scalar function f at x (float64). */
export function finiteDifferenceGradient(f: (x: Float64Array) => number, x: Arr, h = 1e-5): Float64Array {
  const at = Float64Array.from(x);
  const grad = new Float64Array(at.length);
  for (let i = 0; i < at.length; i++) {
    const saved = at[i];
    at[i] = saved + h;
    const up = f(at);
    at[i] = saved - h;
    const down = f(at);
    at[i] = saved;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

/** sum_i a[i] * b[i]: turns a tensor output into the scalar loss L = <y, dy> whose gradient is the backward. */
export function dot(a: Arr, b: Arr): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------- LayerNorm

/** y[R,C] = (x - mean) * rstd * gamma + beta per row (biased variance); stats [R,2] = (mean, rstd). */
export function layernormForward64(x: Arr, gamma: Arr, beta: Arr, R: number, C: number, eps: number) {
  const y = new Float64Array(R * C);
  const stats = new Float64Array(2 * R);
  for (let r = 0; r < R; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c] / C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[r * C + c] - mean) ** 2 / C;
    const rstd = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - mean) * rstd * gamma[c] + beta[c];
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  return { y, stats };
}

/** Gradients of layernormForward64 given dy, using the saved stats. */
export function layernormBackwardRef(dy: Arr, x: Arr, gamma: Arr, stats: Arr, R: number, C: number) {
  const dx = new Float64Array(R * C);
  const dgamma = new Float64Array(C);
  const dbeta = new Float64Array(C);
  for (let r = 0; r < R; r++) {
    const mean = stats[2 * r], rstd = stats[2 * r + 1];
    const xhat = (c: number) => (x[r * C + c] - mean) * rstd;
    let meanG = 0, meanGXhat = 0;
    for (let c = 0; c < C; c++) {
      const g = dy[r * C + c] * gamma[c];
      meanG += g / C;
      meanGXhat += g * xhat(c) / C;
    }
    for (let c = 0; c < C; c++) {
      const g = dy[r * C + c] * gamma[c];
      dx[r * C + c] = rstd * (g - meanG - xhat(c) * meanGXhat);
      dgamma[c] += dy[r * C + c] * xhat(c);
      dbeta[c] += dy[r * C + c];
    }
  }
  return { dx, dgamma, dbeta };
}

// ---------------------------------------------------------------- GELU

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluForward64(x: Arr): Float64Array {
  return Float64Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v ** 3))));
}

export function geluBackwardRef(dy: Arr, x: Arr): Float64Array {
  return Float64Array.from(x, (v, i) => {
    const t = Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v ** 3));
    const dtanhArg = SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v);
    return dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * dtanhArg);
  });
}

// ---------------------------------------------------------------- attention

/**
 * Causal attention. qkv [B*T,3d] = [q|k|v], head h = columns h*hd..(h+1)*hd of each;
 * y [B*T,d] heads concatenated; probs [B,nHead,T,T] (masked entries 0).
 */
export function attentionForward64(qkv: Arr, B: number, T: number, d: number, nHead: number) {
  const hd = d / nHead, scale = 1 / Math.sqrt(hd);
  const y = new Float64Array(B * T * d);
  const probs = new Float64Array(B * nHead * T * T);
  const q = (b: number, t: number, h: number, e: number) => qkv[(b * T + t) * 3 * d + h * hd + e];
  const k = (b: number, t: number, h: number, e: number) => qkv[(b * T + t) * 3 * d + d + h * hd + e];
  const v = (b: number, t: number, h: number, e: number) => qkv[(b * T + t) * 3 * d + 2 * d + h * hd + e];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let i = 0; i < T; i++) {
        const row = ((b * nHead + h) * T + i) * T;
        const scores = [];
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let e = 0; e < hd; e++) s += q(b, i, h, e) * k(b, j, h, e);
          scores.push(s * scale);
        }
        const max = Math.max(...scores);
        const exps = scores.map((s) => Math.exp(s - max));
        const sum = exps.reduce((a, c) => a + c, 0);
        for (let j = 0; j <= i; j++) probs[row + j] = exps[j] / sum;
        for (let e = 0; e < hd; e++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) acc += probs[row + j] * v(b, j, h, e);
          y[(b * T + i) * d + h * hd + e] = acc;
        }
      }
    }
  }
  return { y, probs };
}

/** dqkv [B*T,3d] of attentionForward64 given dy [B*T,d] and the forward's probs. */
export function attentionBackwardRef(
  dy: Arr,
  qkv: Arr,
  probs: Arr,
  B: number,
  T: number,
  d: number,
  nHead: number,
) {
  const hd = d / nHead, scale = 1 / Math.sqrt(hd);
  const dqkv = new Float64Array(B * T * 3 * d);
  const col = (part: number, h: number, e: number) => part * d + h * hd + e; // part 0=q, 1=k, 2=v
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let i = 0; i < T; i++) {
        const row = ((b * nHead + h) * T + i) * T;
        // y_i = sum_j p_ij v_j  =>  dp_ij = dy_i . v_j,  dv_j += p_ij dy_i
        const dp = new Float64Array(i + 1);
        for (let j = 0; j <= i; j++) {
          for (let e = 0; e < hd; e++) {
            const dyie = dy[(b * T + i) * d + h * hd + e];
            dp[j] += dyie * qkv[(b * T + j) * 3 * d + col(2, h, e)];
            dqkv[(b * T + j) * 3 * d + col(2, h, e)] += probs[row + j] * dyie;
          }
        }
        // softmax backward: ds_ij = p_ij (dp_ij - sum_k p_ik dp_ik)
        let weighted = 0;
        for (let j = 0; j <= i; j++) weighted += probs[row + j] * dp[j];
        // s_ij = scale q_i . k_j  =>  dq_i += scale ds_ij k_j,  dk_j += scale ds_ij q_i
        for (let j = 0; j <= i; j++) {
          const ds = probs[row + j] * (dp[j] - weighted);
          for (let e = 0; e < hd; e++) {
            dqkv[(b * T + i) * 3 * d + col(0, h, e)] += scale * ds * qkv[(b * T + j) * 3 * d + col(1, h, e)];
            dqkv[(b * T + j) * 3 * d + col(1, h, e)] += scale * ds * qkv[(b * T + i) * 3 * d + col(0, h, e)];
          }
        }
      }
    }
  }
  return dqkv;
}

// ---------------------------------------------------------------- embeddings

/** out[r] = wte[tokens[r]] + wpe[r % T], out [R,C]. */
export function embedForward64(
  tokens: Arr,
  wte: Arr,
  wpe: Arr,
  R: number,
  T: number,
  C: number,
): Float64Array {
  const out = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) out[r * C + c] = wte[tokens[r] * C + c] + wpe[(r % T) * C + c];
  }
  return out;
}

/** dwte [V,C] and dwpe [P,C] of embedForward64 given dout [R,C]. */
export function embeddingBackwardRef(
  dout: Arr,
  tokens: Arr,
  R: number,
  T: number,
  C: number,
  V: number,
  P: number,
) {
  const dwte = new Float64Array(V * C);
  const dwpe = new Float64Array(P * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      dwte[tokens[r] * C + c] += dout[r * C + c];
      dwpe[(r % T) * C + c] += dout[r * C + c];
    }
  }
  return { dwte, dwpe };
}

// ---------------------------------------------------------------- bias, norms

/** Column sums of x [R,N]: the bias gradient of y = xW + b. */
export function columnSumRef(x: Arr, R: number, N: number): Float64Array {
  const out = new Float64Array(N);
  for (let r = 0; r < R; r++) for (let n = 0; n < N; n++) out[n] += x[r * N + n];
  return out;
}

export function sumOfSquaresRef(arrays: Arr[]): number {
  let s = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return s;
}

// ---------------------------------------------------------------- loss

/**
 * Per-row losses -log softmax(logits[r])[targets[r]] (0 where the weight is 0) and
 * dlogits = scale * w_r * (softmax - onehot), the gradient of sum_r scale * w_r * loss_r.
 */
export function crossEntropyRef(logits: Arr, targets: Arr, R: number, V: number, weights?: Arr, scale = 1) {
  const losses = new Float64Array(R);
  const dlogits = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    const w = weights ? weights[r] : 1;
    if (w === 0) continue;
    let max = -Infinity;
    for (let c = 0; c < V; c++) max = Math.max(max, logits[r * V + c]);
    let sum = 0;
    for (let c = 0; c < V; c++) sum += Math.exp(logits[r * V + c] - max);
    losses[r] = Math.log(sum) + max - logits[r * V + targets[r]];
    for (let c = 0; c < V; c++) {
      const p = Math.exp(logits[r * V + c] - max) / sum;
      dlogits[r * V + c] = scale * w * (p - (c === targets[r] ? 1 : 0));
    }
  }
  return { losses, dlogits };
}

// ---------------------------------------------------------------- optimizer

export interface AdamRefOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay per parameter. */
  weightDecay: number[];
  clipNorm?: number;
}

/** AdamW as written in PyTorch's documentation (with clip_grad_norm_ first), in float64. */
export class AdamRef {
  t = 0;
  m: Float64Array[];
  v: Float64Array[];
  constructor(sizes: number[], readonly o: AdamRefOptions) {
    this.m = sizes.map((n) => new Float64Array(n));
    this.v = sizes.map((n) => new Float64Array(n));
  }

  /** Updates params in place; returns the gradients' global norm before clipping. */
  step(params: Float64Array[], grads: Arr[], lr = this.o.lr): number {
    const { beta1, beta2, eps, weightDecay, clipNorm } = this.o;
    const norm = Math.sqrt(sumOfSquaresRef(grads));
    const clip = clipNorm === undefined ? 1 : Math.min(1, clipNorm / (norm + 1e-6));
    this.t++;
    params.forEach((p, i) => {
      for (let j = 0; j < p.length; j++) {
        const g = clip * grads[i][j];
        p[j] -= lr * weightDecay[i] * p[j];
        this.m[i][j] = beta1 * this.m[i][j] + (1 - beta1) * g;
        this.v[i][j] = beta2 * this.v[i][j] + (1 - beta2) * g * g;
        const mHat = this.m[i][j] / (1 - beta1 ** this.t);
        const vHat = this.v[i][j] / (1 - beta2 ** this.t);
        p[j] -= lr * mHat / (Math.sqrt(vHat) + eps);
      }
    });
    return norm;
  }
}
