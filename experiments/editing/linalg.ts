// Dense float64 linear algebra on the CPU for the closed-form edits: Cholesky factorisation of
// the key second moment C [f,f] (symmetric positive definite) and solves with it.
// Matrices are row-major Float64Arrays. f is 512 for the embedded model and 6400 for GPT-2 XL
// (a factorisation of f^3/3 multiply-adds, about a minute in plain JavaScript; done once per
// layer and cached by KeyStats).

export class NotPositiveDefiniteError extends Error {}

/**
 * Lower-triangular L with A = L L^T (A [n,n] symmetric positive definite; only its lower triangle
 * is read). Rows are computed four at a time so that each earlier row j is streamed from memory once
 * per four rows (L[i][j] = (A[i][j] - L[i][:j] . L[j][:j]) / L[j][j]): at f = 3072 the matrix does
 * not fit in cache and a row-at-a-time loop is limited by memory traffic.
 */
export function cholesky(A: ArrayLike<number>, n: number, what = "matrix"): Float64Array {
  if (A.length !== n * n) throw new Error(`cholesky: ${what} has ${A.length} values, expected ${n}x${n}`);
  const L = new Float64Array(n * n);
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rows = Math.min(4, n - i0);
    // Row offsets of the block (a missing 4th row repeats the first: computed, never stored).
    const r0 = i0 * n,
      r1 = (i0 + Math.min(1, rows - 1)) * n,
      r2 = (i0 + Math.min(2, rows - 1)) * n,
      r3 = (i0 + rows - 1) * n;
    for (let j = 0; j < i0 + rows; j++) {
      const rowJ = j * n;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < j; k++) {
        const l = L[rowJ + k];
        s0 += L[r0 + k] * l;
        s1 += L[r1 + k] * l;
        s2 += L[r2 + k] * l;
        s3 += L[r3 + k] * l;
      }
      const sums = [s0, s1, s2, s3];
      for (let a = 0; a < rows; a++) {
        const i = i0 + a;
        if (i < j) continue;
        const s = A[i * n + j] - sums[a];
        if (i === j) {
          if (!(s > 0)) {
            throw new NotPositiveDefiniteError(
              `${what} is not positive definite (pivot ${i} of ${n} is ${s}); ` +
                "with key statistics this means too few samples for the key width, or keys that never vary",
            );
          }
          L[i * n + i] = Math.sqrt(s);
        } else {
          L[i * n + j] = s / L[rowJ + j];
        }
      }
    }
  }
  return L;
}

/** x with L L^T x = b (L from cholesky). */
export function choleskySolve(L: Float64Array, n: number, b: ArrayLike<number>): Float64Array {
  if (b.length !== n) throw new Error(`choleskySolve: right-hand side has ${b.length} values, expected ${n}`);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    const row = i * n;
    for (let k = 0; k < i; k++) s -= L[row + k] * y[k];
    y[i] = s / L[row + i];
  }
  // Back substitution with L^T: column i of L is read with stride n.
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let k = i + 1; k < n; k++) s -= L[k * n + i] * x[k];
    x[i] = s / L[i * n + i];
  }
  return x;
}

/** Solves A X = B for symmetric positive definite A [n,n] and B [n,m]; returns X [n,m]. */
export function solveSpd(
  A: ArrayLike<number>,
  n: number,
  B: ArrayLike<number>,
  m: number,
  what = "matrix",
): Float64Array {
  if (B.length !== n * m) {
    throw new Error(`solveSpd: right-hand sides have ${B.length} values, expected ${n}x${m}`);
  }
  const L = cholesky(A, n, what);
  const X = new Float64Array(n * m);
  const column = new Float64Array(n);
  for (let j = 0; j < m; j++) {
    for (let i = 0; i < n; i++) column[i] = B[i * m + j];
    const x = choleskySolve(L, n, column);
    for (let i = 0; i < n; i++) X[i * m + j] = x[i];
  }
  return X;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`dot: lengths ${a.length} and ${b.length} differ`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** Elementwise mean of equally long vectors. */
export function meanOf(vectors: ArrayLike<number>[]): Float64Array {
  if (vectors.length === 0) throw new Error("meanOf: no vectors");
  const out = new Float64Array(vectors[0].length);
  for (const v of vectors) {
    if (v.length !== out.length) throw new Error(`meanOf: lengths ${v.length} and ${out.length} differ`);
    for (let i = 0; i < out.length; i++) out[i] += v[i] / vectors.length;
  }
  return out;
}
