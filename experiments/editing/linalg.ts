// Dense float64 linear algebra on the CPU for the closed-form edits: Cholesky factorisation of
// the key second moment C [f,f] (symmetric positive definite) and solves with it.
// Matrices are row-major Float64Arrays. f is 512 for the embedded model and 6400 for GPT-2 XL
// (a factorisation of f^3/6 multiply-adds, ~25 s in plain JavaScript on one core; done once per
// layer and statistics, in Workers when wide, and kept by KeyStats in memory and on disk).

export class NotPositiveDefiniteError extends Error {}

/**
 * Lower-triangular L with A = L L^T (A [n,n] symmetric positive definite; only its lower triangle
 * is read). Left-looking in 4x4 tiles: L[i][j] = (A[i][j] - L[i][:j] . L[j][:j]) / L[j][j] for four
 * rows i against four rows j at once (tileSums, then finishTile), row of tiles by row of tiles. At
 * f = 6400 this is f^3/6 = 4.4e10 multiply-adds, ~25 s in JavaScript on one core: choleskyInBackground
 * spreads the same tiles over Workers, and KeyStats keeps the factor on disk.
 */
export function cholesky(A: ArrayLike<number>, n: number, what = "matrix"): Float64Array {
  if (A.length !== n * n) throw new Error(`cholesky: ${what} has ${A.length} values, expected ${n}x${n}`);
  const L = new Float64Array(n * n);
  const sums = new Float64Array(16);
  for (let i0 = 0; i0 < n; i0 += 4) {
    for (let j0 = 0; j0 <= i0; j0 += 4) {
      tileSums(L, n, i0, j0, sums);
      finishTile(A, L, n, i0, j0, sums, what);
    }
  }
  return L;
}

/**
 * sums[4a + b] = sum over k < j0 of L[i0 + a][k] L[j0 + b][k]: the part of tile (i0, j0)'s dot products
 * that only needs columns left of the tile. Each step of the inner loop loads 8 values for 16
 * multiply-adds held in locals (a row at a time loads 2 per multiply-add). A tile cut by the matrix's
 * end repeats its last row (computed, never stored).
 */
export function tileSums(L: Float64Array, n: number, i0: number, j0: number, sums: Float64Array): void {
  const rowsOf = (r0: number) => {
    const last = Math.min(r0 + 3, n - 1);
    return [r0 * n, Math.min(r0 + 1, last) * n, Math.min(r0 + 2, last) * n, last * n];
  };
  const [a0, a1, a2, a3] = rowsOf(i0), [b0, b1, b2, b3] = rowsOf(j0);
  let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
  for (let k = 0; k < j0; k++) {
    const x0 = L[a0 + k], x1 = L[a1 + k], x2 = L[a2 + k], x3 = L[a3 + k];
    const y0 = L[b0 + k], y1 = L[b1 + k], y2 = L[b2 + k], y3 = L[b3 + k];
    s00 += x0 * y0, s01 += x0 * y1, s02 += x0 * y2, s03 += x0 * y3;
    s10 += x1 * y0, s11 += x1 * y1, s12 += x1 * y2, s13 += x1 * y3;
    s20 += x2 * y0, s21 += x2 * y1, s22 += x2 * y2, s23 += x2 * y3;
    s30 += x3 * y0, s31 += x3 * y1, s32 += x3 * y2, s33 += x3 * y3;
  }
  sums.set([s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33]);
}

/**
 * Writes tile (i0, j0) of L from A, its tileSums and the columns [j0, j) of the tile itself and of the
 * diagonal tile (j0, j0) (finished first when i0 > j0): element (i, j) column by column.
 */
export function finishTile(
  A: ArrayLike<number>,
  L: Float64Array,
  n: number,
  i0: number,
  j0: number,
  sums: Float64Array,
  what: string,
): void {
  for (let j = j0; j < Math.min(j0 + 4, n); j++) {
    for (let i = Math.max(i0, j); i < Math.min(i0 + 4, n); i++) {
      let s = A[i * n + j] - sums[(i - i0) * 4 + j - j0];
      for (let k = j0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
      if (i === j) {
        if (!(s > 0)) {
          throw new NotPositiveDefiniteError(
            `${what} is not positive definite (pivot ${i} of ${n} is ${s}); ` +
              "with key statistics this means too few samples for the key width, or keys that never vary",
          );
        }
        L[i * n + i] = Math.sqrt(s);
      } else {
        L[i * n + j] = s / L[j * n + j];
      }
    }
  }
}

/** Widths from which choleskyInBackground uses Workers (below, a factorisation takes milliseconds). */
const BACKGROUND_WIDTH = 1024;

/** The background factorisations in flight, one after another (each already uses every core, and at
 *  f = 6400 holds ~0.8 GB while it runs: MEMIT's five layers at once would hold 4 GB). */
let backgroundQueue: Promise<unknown> = Promise.resolve();

/**
 * cholesky(A, n), bit for bit, computed by Workers where the runtime is Deno and the matrix is wide: the
 * caller's thread (recording GPU work, say) keeps running, and the tiles are spread over up to 8 cores
 * (`workers`, cholesky_worker.ts); calls are queued, so one runs at a time. Otherwise here, synchronously.
 */
export function choleskyInBackground(
  A: Float32Array,
  n: number,
  what = "matrix",
  workers = Math.max(1, Math.min(8, navigator.hardwareConcurrency ?? 1)),
): Promise<Float64Array> {
  if (n < BACKGROUND_WIDTH || typeof Deno === "undefined" || typeof Worker === "undefined") {
    return Promise.resolve().then(() => cholesky(A, n, what));
  }
  const mine = backgroundQueue.then(() => factoriseInWorkers(A, n, what, workers));
  backgroundQueue = mine.catch(() => {});
  return mine;
}

function factoriseInWorkers(
  A: Float32Array,
  n: number,
  what: string,
  workers: number,
): Promise<Float64Array> {
  if (A.length !== n * n) throw new Error(`cholesky: ${what} has ${A.length} values, expected ${n}x${n}`);
  const shared = {
    A: new SharedArrayBuffer(4 * n * n),
    L: new SharedArrayBuffer(8 * n * n),
    sync: new SharedArrayBuffer(16),
  };
  new Float32Array(shared.A).set(A);
  const pool = Array.from(
    { length: workers },
    () => new Worker(new URL("./cholesky_worker.ts", import.meta.url).href, { type: "module" }),
  );
  const finished = pool.map((worker, id) =>
    new Promise<void>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<{ error?: string; notPositiveDefinite?: boolean }>) => {
        if (e.data.error === undefined) resolve();
        else {
          reject(
            e.data.notPositiveDefinite ? new NotPositiveDefiniteError(e.data.error) : new Error(e.data.error),
          );
        }
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`cholesky worker: ${e.message}`));
      };
      worker.postMessage({ ...shared, n, what, id, workers });
    })
  );
  return Promise.all(finished).then(() => new Float64Array(shared.L).slice())
    .finally(() => pool.forEach((w) => w.terminate()));
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
  // Back substitution with L^T, a column of L^T (a row of L, contiguous) at a time: once x[i] is
  // known, its terms L[i][k] x[i] leave the equations k < i (a column of L, read with stride n, would
  // miss the cache at every step for f = 6400).
  const x = y;
  for (let i = n - 1; i >= 0; i--) {
    const row = i * n, xi = x[i] / L[row + i];
    x[i] = xi;
    for (let k = 0; k < i; k++) x[k] -= L[row + k] * xi;
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
