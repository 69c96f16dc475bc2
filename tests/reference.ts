// Plain float64 TypeScript references (llm.c-style CPU reference). Every GPU kernel and the
// whole forward pass are tested against these. Arrays are row-major Float64Array.

/** C[M,N] = op(A) op(B) (+ bias), op = optional transpose of the stored layout. */
export function matmulRef(
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  o: { transA?: boolean; transB?: boolean; bias?: ArrayLike<number> } = {},
): Float64Array {
  const C = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = o.bias ? o.bias[n] : 0;
      for (let k = 0; k < K; k++) {
        const a = o.transA ? A[k * M + m] : A[m * K + k];
        const b = o.transB ? B[n * K + k] : B[k * N + n];
        s += a * b;
      }
      C[m * N + n] = s;
    }
  }
  return C;
}

/** y[R,C] = (x - mean)/sqrt(var + eps) * gamma + beta per row (biased variance); stats[R,2] = (mean, rstd). */
export function layernormRef(
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  R: number,
  C: number,
  eps: number,
): { y: Float64Array; stats: Float64Array } {
  const y = new Float64Array(R * C), stats = new Float64Array(R * 2);
  for (let r = 0; r < R; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c];
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[r * C + c] - mean) ** 2;
    variance /= C;
    const rstd = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - mean) * rstd * gamma[c] + beta[c];
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  return { y, stats };
}

/** GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluRef(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(
    x,
    (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  );
}

/**
 * Causal multi-head attention core. qkv [B*T, 3d] = [q | k | v] per row, head h in columns h*hd..(h+1)*hd
 * of each part. Returns y [B*T, d] (heads concatenated) and probs [B, nHead, T, T] (0 above the diagonal).
 */
export function attentionRef(
  qkv: ArrayLike<number>,
  B: number,
  T: number,
  d: number,
  nHead: number,
): { y: Float64Array; probs: Float64Array } {
  const hd = d / nHead;
  const y = new Float64Array(B * T * d), probs = new Float64Array(B * nHead * T * T);
  const at = (b: number, t: number, part: number, h: number, i: number) =>
    qkv[(b * T + t) * 3 * d + part * d + h * hd + i];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let t = 0; t < T; t++) {
        const scores = new Float64Array(t + 1);
        for (let j = 0; j <= t; j++) {
          let s = 0;
          for (let i = 0; i < hd; i++) s += at(b, t, 0, h, i) * at(b, j, 1, h, i);
          scores[j] = s / Math.sqrt(hd);
        }
        const p = softmaxRow(scores);
        const row = ((b * nHead + h) * T + t) * T;
        for (let j = 0; j <= t; j++) {
          probs[row + j] = p[j];
          for (let i = 0; i < hd; i++) y[(b * T + t) * d + h * hd + i] += p[j] * at(b, j, 2, h, i);
        }
      }
    }
  }
  return { y, probs };
}

/** out[r] = wte[tokens[r] - rowStart] + wpe[r % T] for rows whose token is in the chunk; other rows copy `out0`. */
export function embedRef(
  tokens: ArrayLike<number>,
  wte: ArrayLike<number>,
  wpe: ArrayLike<number>,
  R: number,
  T: number,
  C: number,
  out0: ArrayLike<number>,
  rowStart = 0,
): Float64Array {
  const out = Float64Array.from(out0);
  const wteRows = wte.length / C;
  for (let r = 0; r < R; r++) {
    const row = tokens[r] - rowStart;
    if (row < 0 || row >= wteRows) continue;
    for (let c = 0; c < C; c++) out[r * C + c] = wte[row * C + c] + wpe[(r % T) * C + c];
  }
  return out;
}

function softmaxRow(x: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  const e = Float64Array.from(x, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Row-wise softmax of logits [R, V]. */
export function softmaxRef(logits: ArrayLike<number>, R: number, V: number): Float64Array {
  const out = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    out.set(softmaxRow(Array.prototype.slice.call(logits, r * V, (r + 1) * V)), r * V);
  }
  return out;
}

/** out[r] = logits[r, targets[r]] - logsumexp(logits[r, :]). */
export function logProbRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  R: number,
  V: number,
): Float64Array {
  const out = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[r * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[r * V + v] - m);
    out[r] = logits[r * V + targets[r]] - m - Math.log(s);
  }
  return out;
}

/** Per row, the k largest values and their indices, descending; ties keep the lower index first. */
export function topKRef(
  x: ArrayLike<number>,
  R: number,
  V: number,
  k: number,
): { indices: number[]; values: number[] } {
  const indices: number[] = [], values: number[] = [];
  for (let r = 0; r < R; r++) {
    const order = Array.from({ length: V }, (_, v) => v);
    order.sort((i, j) => x[r * V + j] - x[r * V + i] || i - j);
    for (const v of order.slice(0, k)) {
      indices.push(v);
      values.push(x[r * V + v]);
    }
  }
  return { indices, values };
}

/** dst[e.dst] = e.keep * dst[e.dst] + e.take * src[e.src] per entry, over rows of C values (src = dst when null). */
export function rowOpsRef(
  dst: ArrayLike<number>,
  src: ArrayLike<number> | null,
  C: number,
  entries: { dst: number; src: number; keep: number; take: number }[],
): Float64Array {
  const before = Float64Array.from(dst);
  const from = src ?? before;
  const out = Float64Array.from(dst);
  for (const e of entries) {
    for (let c = 0; c < C; c++) {
      const kept = e.keep === 0 ? 0 : e.keep * before[e.dst * C + c];
      const taken = e.take === 0 ? 0 : e.take * from[e.src * C + c];
      out[e.dst * C + c] = kept + taken;
    }
  }
  return out;
}

/** Virtual low-rank edits: out[r, :] = mlp[r, :] + sum over row r's components c of (key[r, :] . U[c, :]) V[c, :].
 *  key [R, F], U [C, F], V [C, D], mlp [R, D]; edit e owns components firsts[e] .. firsts[e] + ranks[e] - 1. */
export function virtualEditRef(
  mlp: ArrayLike<number>,
  key: ArrayLike<number>,
  U: ArrayLike<number>,
  V: ArrayLike<number>,
  ranks: number[],
  rowEdit: number[],
  F: number,
  D: number,
  dense: boolean[] = ranks.map(() => false),
): Float64Array {
  const out = Float64Array.from(mlp);
  // Edit e's key rows: its ranks[e] components, then D dense columns; its value rows: its components.
  const keyRows = ranks.map((k, e) => k + (dense[e] ? D : 0));
  const firstKey = keyRows.map((_, e) => keyRows.slice(0, e).reduce((a, b) => a + b, 0));
  const firstValue = ranks.map((_, e) => ranks.slice(0, e).reduce((a, b) => a + b, 0));
  const dot = (r: number, u: number) => {
    let s = 0;
    for (let a = 0; a < F; a++) s += key[r * F + a] * U[u * F + a];
    return s;
  };
  rowEdit.forEach((e, r) => {
    if (e < 0) return;
    for (let c = 0; c < ranks[e]; c++) {
      const s = dot(r, firstKey[e] + c);
      for (let j = 0; j < D; j++) out[r * D + j] += s * V[(firstValue[e] + c) * D + j];
    }
    if (dense[e]) { for (let j = 0; j < D; j++) out[r * D + j] += dot(r, firstKey[e] + ranks[e] + j); }
  });
  return out;
}
