// Locus's parameter names, the same for every family, and where each family's Hugging Face
// checkpoint keeps them. The names follow GPT-2's roles, so experiments never special-case a family:
//
//   wte.weight [V,d]           token embedding             wpe.weight [P,d]   learned positions (GPT-2)
//   h.l.ln_1                   norm before attention (GPT-J: before attention and MLP)
//   h.l.attn.c_attn            fused q|k|v projection      h.l.attn.q_norm, k_norm  (Gemma 3)
//   h.l.attn.c_proj            attention output projection h.l.ln_attn_out          (Gemma 2/3 post-norm)
//   h.l.ln_2                   norm before the MLP
//   h.l.mlp.c_fc               MLP input (gated: gate | up fused)
//   h.l.mlp.c_proj             MLP output = the edit target of ROME/MEMIT (GPT-J fc_out, NeoX
//                              dense_4h_to_h, Llama/Mistral/Qwen/Gemma down_proj)
//   h.l.ln_mlp_out             Gemma 2/3 post-norm of the MLP output
//   ln_f                       final norm                  lm_head  untied head (GPT-J with bias)
//
// GPT-2's Conv1D weights are stored [in, out]; every other family's nn.Linear weights [out, in]
// (ModelConfig.linearLayout). Fused tensors are concatenations of the checkpoint's tensors along
// the output dimension: c_attn = [q; k; v] (NeoX stores them interleaved per head and is reordered),
// gated c_fc = [gate; up].
import type { ModelConfig } from "./config.ts";

/** Where a Locus tensor comes from: checkpoint names concatenated along the output dimension. */
export interface TensorSource {
  /** Checkpoint tensor names, concatenated in this order along the output dimension. */
  parts: string[];
  /** NeoX's query_key_value rows are [head][q|k|v][hd]; Locus wants [q heads | k heads | v heads]. */
  neoxHeads?: boolean;
  /** The untied head sits beside the body ("lm_head.weight", NeoX "embed_out.weight"): no body prefix. */
  outsideBody?: boolean;
}

/** Locus parameter names and shapes of a model with this config. */
export function parameterShapes(c: ModelConfig): [string, number[]][] {
  const d = c.nEmbd, hd = c.headDim, qd = c.nHead * hd, kvd = c.nKvHead * hd;
  const fcOut = c.mlp === "gated" ? 2 * c.nInner : c.nInner;
  const linear = (nIn: number, nOut: number) => (c.linearLayout === "in_out" ? [nIn, nOut] : [nOut, nIn]);
  const norm = (name: string, width = d): [string, number[]][] =>
    c.norm === "layernorm"
      ? [[`${name}.weight`, [width]], [`${name}.bias`, [width]]]
      : [[`${name}.weight`, [width]]];
  const out: [string, number[]][] = [["wte.weight", [c.vocabSize, d]]];
  if (!c.rotary) out.push(["wpe.weight", [c.nPositions, d]]);
  for (let l = 0; l < c.nLayer; l++) {
    const p = `h.${l}.`;
    out.push(...norm(p + "ln_1"));
    out.push([p + "attn.c_attn.weight", linear(d, qd + 2 * kvd)]);
    if (c.qkvBias) out.push([p + "attn.c_attn.bias", [qd + 2 * kvd]]);
    if (c.qkNorm) out.push(...norm(p + "attn.q_norm", hd), ...norm(p + "attn.k_norm", hd));
    out.push([p + "attn.c_proj.weight", linear(qd, d)]);
    if (c.attnOutBias) out.push([p + "attn.c_proj.bias", [d]]);
    if (c.postNorms) out.push(...norm(p + "ln_attn_out"));
    if (c.residual !== "parallel_shared_norm") out.push(...norm(p + "ln_2"));
    out.push([p + "mlp.c_fc.weight", linear(d, fcOut)]);
    if (c.mlpBias) out.push([p + "mlp.c_fc.bias", [fcOut]]);
    out.push([p + "mlp.c_proj.weight", linear(c.nInner, d)]);
    if (c.mlpBias) out.push([p + "mlp.c_proj.bias", [d]]);
    if (c.postNorms) out.push(...norm(p + "ln_mlp_out"));
  }
  out.push(...norm("ln_f"));
  if (!c.tiedHead) out.push(["lm_head.weight", [c.vocabSize, d]]);
  if (c.headBias) out.push(["lm_head.bias", [c.vocabSize]]);
  return out;
}

/** Prefixes the checkpoints of a family put before the body's names (tried in order). */
export function checkpointPrefixes(c: ModelConfig): string[] {
  switch (c.family) {
    case "gpt2":
      return ["", "transformer."];
    case "gptj":
      return ["transformer.", ""];
    case "gpt_neox":
      return ["gpt_neox.", ""];
    default:
      return ["model.", "model.language_model.", ""];
  }
}

/** Checkpoint names (without the body prefix, except the head) of a Locus tensor. */
export function checkpointSource(c: ModelConfig, name: string): TensorSource {
  const m = /^h\.(\d+)\.(.+)$/.exec(name);
  const [layer, rest] = m ? [Number(m[1]), m[2]] : [-1, name];
  const one = (n: string): TensorSource => ({ parts: [n] });
  const suffix = rest.slice(rest.lastIndexOf(".")); // ".weight" / ".bias"
  const role = rest.slice(0, rest.lastIndexOf("."));
  if (c.family === "gpt2") return { parts: [name], outsideBody: role === "lm_head" };
  if (layer < 0) {
    if (role === "lm_head") {
      return { parts: [`${c.family === "gpt_neox" ? "embed_out" : "lm_head"}${suffix}`], outsideBody: true };
    }
    const top: Record<string, Record<string, string>> = {
      gptj: { wte: "wte", ln_f: "ln_f" },
      gpt_neox: { wte: "embed_in", ln_f: "final_layer_norm" },
      llama: { wte: "embed_tokens", ln_f: "norm" },
    };
    const table = top[c.family] ?? top.llama;
    return one(`${table[role]}${suffix}`);
  }
  const L = `${c.family === "gpt_neox" ? "layers" : c.family === "gptj" ? "h" : "layers"}.${layer}.`;
  if (c.family === "gptj") {
    const map: Record<string, string[]> = {
      ln_1: ["ln_1"],
      "attn.c_attn": ["attn.q_proj", "attn.k_proj", "attn.v_proj"],
      "attn.c_proj": ["attn.out_proj"],
      "mlp.c_fc": ["mlp.fc_in"],
      "mlp.c_proj": ["mlp.fc_out"],
    };
    return { parts: map[role].map((n) => L + n + suffix) };
  }
  if (c.family === "gpt_neox") {
    const map: Record<string, string> = {
      ln_1: "input_layernorm",
      ln_2: "post_attention_layernorm",
      "attn.c_attn": "attention.query_key_value",
      "attn.c_proj": "attention.dense",
      "mlp.c_fc": "mlp.dense_h_to_4h",
      "mlp.c_proj": "mlp.dense_4h_to_h",
    };
    return { parts: [L + map[role] + suffix], neoxHeads: role === "attn.c_attn" };
  }
  // Llama, Mistral, Qwen2, Gemma 1/2/3. Gemma 2/3's post_attention_layernorm is the attention
  // output's post-norm and pre_feedforward_layernorm the MLP's input norm; in Llama-style blocks
  // post_attention_layernorm is the MLP's input norm.
  const map: Record<string, string[]> = {
    ln_1: ["input_layernorm"],
    ln_2: [c.postNorms ? "pre_feedforward_layernorm" : "post_attention_layernorm"],
    ln_attn_out: ["post_attention_layernorm"],
    ln_mlp_out: ["post_feedforward_layernorm"],
    "attn.c_attn": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    "attn.q_norm": ["self_attn.q_norm"],
    "attn.k_norm": ["self_attn.k_norm"],
    "attn.c_proj": ["self_attn.o_proj"],
    "mlp.c_fc": ["mlp.gate_proj", "mlp.up_proj"],
    "mlp.c_proj": ["mlp.down_proj"],
  };
  return { parts: map[role].map((n) => L + n + suffix) };
}

/** The checkpoint's own name of the edit target (for messages and saved edits). */
export function editTargetName(c: ModelConfig, layer: number): string {
  return checkpointSource(c, `h.${layer}.mlp.c_proj.weight`).parts[0];
}

/**
 * NeoX's fused query_key_value rows are ordered [head h][q, k, v][hd] (for the weight, each row
 * has `cols` values; for the bias, cols = 1). Returns them as [q of all heads; k; v].
 */
export function neoxToBlocks<T extends Float32Array | Uint16Array>(
  data: T,
  heads: number,
  hd: number,
  cols: number,
): T {
  const out = new (data.constructor as new (n: number) => T)(data.length);
  const block = heads * hd * cols; // one of q, k, v
  for (let h = 0; h < heads; h++) {
    for (let part = 0; part < 3; part++) {
      const src = ((h * 3 + part) * hd) * cols;
      const dst = part * block + h * hd * cols;
      out.set(data.subarray(src, src + hd * cols), dst);
    }
  }
  return out;
}
