// An independent float64 GPT-2 forward in plain TypeScript (llm.c's CPU reference, minGPT's
// "compare against another implementation"). Deliberately naive: one loop nest per op.
import type { GPT2Config } from "../engine/config.ts";
import type { Site } from "../engine/model.ts";

type W = Map<string, Float32Array>;

/** A reference hook: same meaning as engine/model.ts Hook, on float64 rows. */
export interface RefHook {
  layer: number;
  site: Site;
  capture?: (rows: Float64Array[]) => void; // receives the state rows (before patching)
  patch?: (rows: Float64Array[]) => void; // mutates state rows in place
}

function layernorm(x: Float64Array[], g: Float32Array, b: Float32Array, eps: number): Float64Array[] {
  return x.map((row) => {
    const C = row.length;
    let mean = 0;
    for (const v of row) mean += v;
    mean /= C;
    let v2 = 0;
    for (const v of row) v2 += (v - mean) ** 2;
    const rstd = 1 / Math.sqrt(v2 / C + eps);
    return row.map((v, i) => (v - mean) * rstd * g[i] + b[i]);
  });
}

function linear(
  x: Float64Array[],
  w: Float32Array,
  b: Float32Array,
  nIn: number,
  nOut: number,
): Float64Array[] {
  return x.map((row) => {
    const out = new Float64Array(nOut);
    for (let o = 0; o < nOut; o++) {
      let s = b[o];
      for (let i = 0; i < nIn; i++) s += row[i] * w[i * nOut + o];
      out[o] = s;
    }
    return out;
  });
}

const geluNew = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Logits [T, V] of one sequence (every position), with optional hooks. */
export function referenceForward(
  cfg: GPT2Config,
  w: W,
  tokens: number[],
  hooks: RefHook[] = [],
): Float64Array[] {
  const d = cfg.nEmbd, H = cfg.nHead, hd = d / H, T = tokens.length, eps = cfg.layerNormEpsilon;
  const get = (n: string) => w.get(n)!;
  const hook = (layer: number, site: Site, rows: Float64Array[]) => {
    for (const h of hooks) {
      if (h.site === site && (site === "embed" || h.layer === layer)) {
        h.capture?.(rows);
        h.patch?.(rows);
      }
    }
  };
  const wte = get("wte.weight"), wpe = get("wpe.weight");
  let x = tokens.map((tok, t) => {
    const row = new Float64Array(d);
    for (let i = 0; i < d; i++) row[i] = wte[tok * d + i] + wpe[t * d + i];
    return row;
  });
  hook(-1, "embed", x);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = (n: string) => get(`h.${l}.${n}`);
    const ln1 = layernorm(x, p("ln_1.weight"), p("ln_1.bias"), eps);
    const qkv = linear(ln1, p("attn.c_attn.weight"), p("attn.c_attn.bias"), d, 3 * d);
    const heads = tokens.map(() => new Float64Array(d));
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const scores: number[] = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += qkv[t][h * hd + i] * qkv[s][d + h * hd + i];
          scores.push(dot / Math.sqrt(hd));
        }
        const mx = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) {
          for (let i = 0; i < hd; i++) heads[t][h * hd + i] += (e[s] / z) * qkv[s][2 * d + h * hd + i];
        }
      }
    }
    const attn = linear(heads, p("attn.c_proj.weight"), p("attn.c_proj.bias"), d, d);
    hook(l, "attn", attn);
    const m = x.map((row, t) => row.map((v, i) => v + attn[t][i]));
    const ln2 = layernorm(m, p("ln_2.weight"), p("ln_2.bias"), eps);
    const pre = linear(ln2, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"), d, 4 * d);
    hook(l, "mlp_pre", pre);
    const key = pre.map((row) => row.map(geluNew));
    hook(l, "key", key);
    const mlp = linear(key, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"), 4 * d, d);
    hook(l, "mlp", mlp);
    x = m.map((row, t) => row.map((v, i) => v + mlp[t][i]));
    hook(l, "resid", x);
  }
  const lnf = layernorm(x, get("ln_f.weight"), get("ln_f.bias"), eps);
  return lnf.map((row) => {
    const out = new Float64Array(cfg.vocabSize);
    for (let v = 0; v < cfg.vocabSize; v++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += row[i] * wte[v * d + i];
      out[v] = s;
    }
    return out;
  });
}
