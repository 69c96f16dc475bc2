"""The PyTorch peer of bench/science.ts: the same science in torch on the same machine, on its GPU when
torch sees one (CUDA) and on its CPU otherwise.

Reads the job that bench/science.ts writes (token ids of every prompt, fact-token positions, the
key second moments C per layer, ROME's hyper-parameters, a trace prompt with its noise) and runs,
through transformers' GPT2LMHeadModel on the embedded model's folder:

  rome   straightforward per-edit ROME, as ROME's own code does it: for each fact x layer, the keys
         at the fact token over the context prompts (one forward), u = C^-1 k* / |C^-1 k*|, v* by Adam
         on a delta added to the MLP output at the fact token (mean NLL of the target over the context
         prompts + kl_factor KL at the "{} is a" prompt + weight decay; stop below 5e-2; clamp), the
         rank-one update of mlp.c_proj, the edit's evaluation prompts in one forward, undo;
  trace  a batched causal-trace grid: the clean run once, then per kind one forward over every
         (token, layer, sample) with the subject's embeddings noised and the cell's clean states
         restored over its window (the median of `repeats` runs); then every fact's grid in turn.

Writes {"threads", "device", "rome": {"perEdit", "edits": [...]}, "trace": {"seconds", "timings", "maxDiff"},
"traces": {"seconds", "maxDiff"}} to OUT.
usage: python3 bench/science_torch.py JOB.json OUT.json
"""
import json
import os
import sys
import time

# OpenMP threads that spin while they wait make torch's CPU kernels 40x slower on a machine shared with
# other jobs (a 22-prompt GPT-2 forward: 4.2 s instead of 0.1 s at load average 10); passive waiting
# costs nothing on an idle machine. Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

STOP_LOSS = 5e-2
# Where the peer runs: the GPU when torch has one (the same device Locus's WebGPU adapter then uses).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tensor(values, **kw):
    return torch.tensor(values, device=DEVICE, **kw)


def padded(seqs):
    ids = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids.to(DEVICE)


def first(out):
    return out[0] if isinstance(out, tuple) else out


def replace_first(out, new):
    return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new


def target_rows(seqs, targets):
    """(sequence, position, token) of every target token scored after its prompt (teacher forced)."""
    rows = []
    for i, (ids, tgt) in enumerate(zip(seqs, targets)):
        start = len(ids) - (len(tgt) - 1) - 1
        rows += [(i, start + j, t) for j, t in enumerate(tgt)]
    return [tensor(c) for c in zip(*rows)]


def rome_edit(model, job, edit, layer, chol):
    hp = job["hparams"]
    prompts = edit["prompts"]
    n_ctx = len(prompts) - 1
    ids = padded([p["ids"] for p in prompts])
    rows = torch.arange(len(prompts), device=DEVICE)
    facts = tensor([p["fact"] for p in prompts])
    mlp = model.transformer.h[layer].mlp
    captured = {}
    hooks = [
        mlp.c_proj.register_forward_hook(lambda m, i, o: captured.update(key=i[0][rows, facts])),
        mlp.register_forward_hook(lambda m, i, o: captured.update(value=first(o)[rows, facts])),
    ]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    keys = captured["key"][:n_ctx]
    h0 = captured["value"][0]
    u = torch.cholesky_solve(keys.mean(0).double()[:, None], chol)[:, 0].float()
    u = u / u.norm()

    target = edit["target"]
    seq, pos, tok = target_rows([p["ids"] for p in prompts[:n_ctx]], [target] * n_ctx)
    delta = torch.zeros_like(h0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp["lr"])

    def add_delta(m, i, o):
        out = first(o).clone()
        out[rows, facts] = out[rows, facts] + delta
        return replace_first(o, out)

    hook = mlp.register_forward_hook(add_delta)
    log_init = None
    max_norm = hp["clampNormFactor"] * h0.norm()
    for it in range(hp["steps"]):
        lp = torch.log_softmax(model(ids).logits, -1)
        nll = -lp[seq, pos, tok].view(n_ctx, len(target)).mean(1)
        kl_lp = lp[n_ctx, facts[n_ctx]]
        if log_init is None:
            log_init = kl_lp.detach()
        kl = (kl_lp.exp() * (kl_lp - log_init)).sum()
        loss = nll.mean() + hp["klFactor"] * kl + hp["weightDecay"] * delta.norm() / h0.norm() ** 2
        if loss.item() < STOP_LOSS or it == hp["steps"] - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    hook.remove()
    r = delta.detach() / keys[0].dot(u)

    weight = mlp.c_proj.weight  # Conv1D [f, d]
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(torch.outer(u, r))
        items = edit["eval"]
        seqs = [it["ids"] + it["target"][:-1] for it in items]
        seq, pos, tok = target_rows(seqs, [it["target"] for it in items])
        lp = torch.log_softmax(model(padded(seqs)).logits, -1)[seq, pos, tok]
        weight.copy_(original)
    at, probs = 0, []
    for it in items:
        probs.append(float(lp[at : at + len(it["target"])].mean().exp()))
        at += len(it["target"])
    return probs[0]


def trace_grid(model, tr):
    ids, (b, e), target, N = tr["ids"], tr["subject"], tr["target"], tr["samples"]
    T, L, d = len(ids), model.config.n_layer, model.config.n_embd
    noise = tensor(tr["noise"], dtype=torch.float32).view(N, e - b, d)
    blocks = model.transformer.h
    modules = {
        "resid": list(blocks),
        "mlp": [blk.mlp for blk in blocks],
        "attn": [blk.attn for blk in blocks],
    }
    clean = {k: [None] * L for k in modules}
    hooks = []
    for kind, mods in modules.items():
        for layer, mod in enumerate(mods):
            def keep(m, i, o, kind=kind, layer=layer):
                clean[kind][layer] = first(o)[0].detach()
            hooks.append(mod.register_forward_hook(keep))
    with torch.no_grad():
        model(tensor([ids]))
    for h in hooks:
        h.remove()

    grids = {}
    for kind, window in tr["windows"].items():
        # Rows: (token t, layer l, sample n); the row restores token t at layers window(l).
        cells = [(t, layer, n) for t in range(T) for layer in range(L) for n in range(N)]
        sample = tensor([c[2] for c in cells])

        def corrupt(m, i, o):
            out = o.clone()
            out[:, b:e] += noise[sample]
            return out

        hooks = [model.transformer.drop.register_forward_hook(corrupt)]
        for j, mod in enumerate(modules[kind]):
            picked = [
                (r, t) for r, (t, layer, _) in enumerate(cells)
                if max(0, layer - window // 2) <= j < min(L, layer + (window + 1) // 2)
            ]
            if not picked:
                continue
            rows = tensor([p[0] for p in picked])
            toks = tensor([p[1] for p in picked])

            def restore(m, i, o, rows=rows, toks=toks, j=j):
                out = first(o).clone()
                out[rows, toks] = clean[kind][j][toks]
                return replace_first(o, out)

            hooks.append(mod.register_forward_hook(restore))
        with torch.no_grad():
            logits = model(tensor([ids] * len(cells))).logits[:, T - 1]
        for h in hooks:
            h.remove()
        p = torch.softmax(logits, -1)[:, target].view(T, L, N).mean(-1)
        grids[kind] = p.tolist()
    return grids


def grid_diff(grids, locus):
    """Largest |p torch - p Locus| over every kind, token and layer of a grid."""
    return max(
        abs(grids[k][t][layer] - locus[k][t][layer])
        for k in grids for t in range(len(grids[k])) for layer in range(len(grids[k][t]))
    )


def main():
    job = json.load(open(sys.argv[1]))
    model = GPT2LMHeadModel.from_pretrained(job["model"], dtype=torch.float32).to(DEVICE).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    f = model.transformer.h[0].mlp.c_proj.weight.shape[0]
    # Factorised once per layer, outside the per-edit clock (Locus also factorises C once per layer).
    chol = {
        int(layer): torch.linalg.cholesky(
            torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(f, f)).double().to(DEVICE)
        )
        for layer, path in job["stats"].items()
    }

    rome_edit(model, job, job["edits"][0], job["layers"][0], chol[job["layers"][0]])  # warm-up
    edits, start = [], time.perf_counter()
    for layer in job["layers"]:
        for edit in job["edits"]:
            edits.append({"fact": edit["fact"], "layer": layer, "rewrite": rome_edit(model, job, edit, layer, chol[layer])})
    per_edit = (time.perf_counter() - start) / len(edits)

    trace_grid(model, job["trace"])  # warm-up
    timings = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        grids = trace_grid(model, job["trace"])
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    many = [trace_grid(model, tr) for tr in job["traces"]]
    many_seconds = time.perf_counter() - start
    out = {
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "CPU",
        "rome": {"perEdit": per_edit, "edits": edits},
        "trace": {
            "seconds": sorted(timings)[len(timings) // 2],
            "timings": timings,
            "maxDiff": grid_diff(grids, job["trace"]["locus"]),
        },
        "traces": {
            "seconds": many_seconds,
            "maxDiff": max(grid_diff(g, tr["locus"]) for g, tr in zip(many, job["traces"])),
        },
    }
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
