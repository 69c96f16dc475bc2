// A Worker (Deno) that runs linalg.ts's cholesky off the main thread, so that factorising a wide key
// second moment (f = 6400: tens of seconds) overlaps an edit's GPU work (the v* or z optimisation)
// instead of preceding it. Message in: { A: Float32Array [n*n], n, what }; out: { L } (the same
// Float64Array the main thread would compute, transferred) or { error, notPositiveDefinite }.
import { cholesky, NotPositiveDefiniteError } from "./linalg.ts";

const scope = self as unknown as {
  onmessage: (e: MessageEvent<{ A: Float32Array; n: number; what: string }>) => void;
  postMessage: (message: unknown, transfer?: Transferable[]) => void;
};
scope.onmessage = (e) => {
  try {
    const L = cholesky(e.data.A, e.data.n, e.data.what);
    scope.postMessage({ L }, [L.buffer as ArrayBuffer]);
  } catch (err) {
    scope.postMessage({
      error: (err as Error).message,
      notPositiveDefinite: err instanceof NotPositiveDefiniteError,
    });
  }
};
