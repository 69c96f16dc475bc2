// One of choleskyInBackground's Workers (linalg.ts): `workers` of them factorise a shared matrix
// together, by columns of 4x4 tiles. For each tile column j0, every worker computes the tileSums of
// its own row tiles (i0/4 = id mod workers), the owner of the diagonal tile finishes it, and after a
// barrier the others finish theirs; a second barrier lets the next column read them. Each tile's
// arithmetic is linalg.ts's, in the same order, so L is bit-identical to cholesky's.
//
// Message in: { A: SharedArrayBuffer (f32 [n*n]), L: SharedArrayBuffer (f64 [n*n], zeros), sync:
// SharedArrayBuffer (Int32 [4]: arrivals, generation, failed), n, what, id, workers }.
// Message out: {} when done (or stopped at the barrier after another worker found a bad pivot), or
// { error, notPositiveDefinite } from the worker that found it.
import { finishTile, NotPositiveDefiniteError, tileSums } from "./linalg.ts";

interface Job {
  A: SharedArrayBuffer;
  L: SharedArrayBuffer;
  sync: SharedArrayBuffer;
  n: number;
  what: string;
  id: number;
  workers: number;
}

const scope = self as unknown as {
  onmessage: (e: MessageEvent<Job>) => void;
  postMessage: (message: unknown) => void;
};

/** Waits until all `workers` have arrived (a generation counter makes it reusable). */
function barrier(sync: Int32Array, workers: number): void {
  const generation = Atomics.load(sync, 1);
  if (Atomics.add(sync, 0, 1) === workers - 1) {
    Atomics.store(sync, 0, 0);
    Atomics.add(sync, 1, 1);
    Atomics.notify(sync, 1);
  } else {
    while (Atomics.load(sync, 1) === generation) Atomics.wait(sync, 1, generation);
  }
}

scope.onmessage = (e) => {
  const { n, what, id, workers } = e.data;
  const A = new Float32Array(e.data.A), L = new Float64Array(e.data.L), sync = new Int32Array(e.data.sync);
  const mine = (i0: number) => (i0 / 4) % workers === id;
  const sums = new Map<number, Float64Array>(); // row tile -> its sums for the current column
  for (let j0 = 0; j0 < n; j0 += 4) {
    for (let i0 = j0; i0 < n; i0 += 4) {
      if (!mine(i0)) continue;
      const s = sums.get(i0) ?? new Float64Array(16);
      tileSums(L, n, i0, j0, s);
      sums.set(i0, s);
    }
    if (mine(j0)) {
      try {
        finishTile(A, L, n, j0, j0, sums.get(j0)!, what);
      } catch (err) {
        scope.postMessage({
          error: (err as Error).message,
          notPositiveDefinite: err instanceof NotPositiveDefiniteError,
        });
        Atomics.store(sync, 2, 1);
      }
      sums.delete(j0);
    }
    barrier(sync, workers);
    if (Atomics.load(sync, 2)) {
      if (!mine(j0)) scope.postMessage({});
      return;
    }
    for (const [i0, s] of sums) finishTile(A, L, n, i0, j0, s, what);
    barrier(sync, workers);
  }
  scope.postMessage({});
};
