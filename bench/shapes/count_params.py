"""Checks the real models' config.json files in bench/shapes/ and writes their parameter counts to README.md.

Each file is the published Hub config.json (legacy key layout) of a model the papers study; the benchmarks
run random weights of these shapes. Every file must load into transformers' config class for its model_type
and build the model on the "meta" device (no memory allocated), in the file's torch_dtype.
Run from the repository root: python3 bench/shapes/count_params.py (transformers 5.18.0, torch 2.13.0).
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "fixtures" / "families"))
from make_families import write_atomic  # noqa: E402  (the fixtures script's temp-fsync-rename writer)

# file -> the Hub repository whose config.json it restates
HUB = {
    "gpt2-xl.json": "openai-community/gpt2-xl",
    "gpt-j-6b.json": "EleutherAI/gpt-j-6b",
    "pythia-6.9b.json": "EleutherAI/pythia-6.9b",
    "llama-2-7b.json": "meta-llama/Llama-2-7b-hf",
    "llama-3-8b.json": "meta-llama/Meta-Llama-3-8B",
    "mistral-7b-v0.1.json": "mistralai/Mistral-7B-v0.1",
    "qwen2-7b.json": "Qwen/Qwen2-7B",
    "gemma-2b.json": "google/gemma-2b",
    "gemma-2-2b.json": "google/gemma-2-2b",
    "gemma-3-1b.json": "google/gemma-3-1b-pt",
}


def row(name):
    raw = json.loads((HERE / name).read_text())
    config = AutoConfig.from_pretrained(HERE / name)
    if config.model_type != raw["model_type"]:
        raise ValueError(f"{name}: loaded as {config.model_type}, file says {raw['model_type']}")
    dtype = getattr(torch, raw.get("torch_dtype", "float32"))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())  # a tied head is one tensor, counted once
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size
    return [f"`{name}`", HUB[name], config.model_type, config.num_hidden_layers, config.hidden_size, heads,
             getattr(config, "num_key_value_heads", None) or heads, head_dim, inner, config.vocab_size,
             "yes" if config.tie_word_embeddings else "no", raw.get("torch_dtype", "float32"),
             f"{params:,}", f"{params / 1e9:.2f}"]


def table(header, right, rows):
    """A Markdown table padded the way deno fmt lays it out (right: which columns align right)."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(header))]
    rule = [("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right)]
    pad = lambda r: "| " + " | ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(r, widths, right)) + " |"
    return [pad(cells[0]), "| " + " | ".join(rule) + " |"] + [pad(r) for r in cells[1:]]


def main():
    files = sorted(p.name for p in HERE.glob("*.json"))
    if sorted(HUB) != files:
        raise ValueError(f"bench/shapes: files {files} do not match the known models {sorted(HUB)}")
    rows = [row(name) for name in HUB]
    for r in rows:
        print(f"{r[0]:24s} {r[-2]:>15s}")
    header = ["file", "Hub model", "model_type", "layers", "hidden", "heads", "kv heads", "head dim",
              "intermediate", "vocab", "tied head", "dtype", "parameters", "billions"]
    right = [False, False, False] + [True] * 7 + [False, False, True, True]
    lines = ["# Real model shapes", ""] + table(header, right, rows)
    write_atomic(HERE / "README.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
