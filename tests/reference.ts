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
