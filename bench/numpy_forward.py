"""The GPT-2 forward in numpy (float32), the CPU yardstick for bench/forward.ts.

Same computation as Locus's forward: B=1 prompt of T tokens, all blocks over all tokens, then
ln_f and the tied unembedding at the last token only. Random weights (values do not matter for
speed). Prints one JSON line: {"shape", "tokens", "ms_median", "threads"}.
usage: python3 bench/numpy_forward.py N_LAYER N_EMBD N_HEAD VOCAB TOKENS REPS
"""
import json
import os
import sys
import time

import numpy as np


def layernorm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x)))


def main():
    L, d, H, V, T, reps = map(int, sys.argv[1:7])
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s, dtype=np.float32) * np.float32(0.02))
    blocks = [dict(
        attn=w(d, 3 * d), attn_b=w(3 * d), proj=w(d, d), proj_b=w(d),
        fc=w(d, 4 * d), fc_b=w(4 * d), mproj=w(4 * d, d), mproj_b=w(d),
        g1=np.ones(d, np.float32), b1=np.zeros(d, np.float32),
        g2=np.ones(d, np.float32), b2=np.zeros(d, np.float32)) for _ in range(L)]
    wte, wpe = w(V, d), w(1024, d)
    tokens = rng.integers(0, V, T)
    hd = d // H
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)

    def forward():
        x = wte[tokens] + wpe[:T]
        for p in blocks:
            qkv = layernorm(x, p["g1"], p["b1"]) @ p["attn"] + p["attn_b"]
            q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(T, H, hd).transpose(1, 0, 2) for i in range(3))
            s = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hd)) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            y = (s @ v).transpose(1, 0, 2).reshape(T, d)
            x = x + y @ p["proj"] + p["proj_b"]
            h = gelu_new(layernorm(x, p["g2"], p["b2"]) @ p["fc"] + p["fc_b"])
            x = x + h @ p["mproj"] + p["mproj_b"]
        return layernorm(x[-1:], 1, 0) @ wte.T

    for _ in range(3):  # warm-up, as in bench/forward.ts
        forward()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        forward()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(json.dumps({"shape": [L, d, H, V], "tokens": T, "ms_median": times[len(times) // 2],
                      "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}))


if __name__ == "__main__":
    main()
