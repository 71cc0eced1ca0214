"""clref's training step against the same step in PyTorch, timed in one process.

python bench/compare_torch.py [--rounds 5] [--rows grid-dot,grid-l1,paper-dot]

PyTorch is not a dependency of clref. This script is the one place that uses it,
and it exits cleanly (code 0, one line) where torch is not installed.

Each row builds one configuration twice: clref's encoder, InfoNCE and Adam, and
a PyTorch model with the same architecture, the same initial weights, the same
fixed batch, the same loss and torch.optim.Adam with the same hyperparameters,
all in float32. The two alternate in blocks of steps (a pause between blocks lets
the other library's idle threads stop spinning), so both see the same machine
load; the medians and their ratio are printed, with the largest relative
difference of the two losses step by step, which shows that both compute the
same thing.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

ROWS = {  # name: (batch, widths, loss, threads); the shapes the grid and the paper run
    "grid-dot": (512, (128, 128, 128, 128), "dot", 1),
    "grid-l1": (512, (128, 128, 128, 128), "l1", 1),
    "paper-dot": (1024, train.REFERENCE_WIDTHS, "dot", 2),
}


def row_config(batch, widths, loss):
    base = dict(n=10, widths=widths, batch_size=batch, dtype="float32", tau=1.0, lr=1e-4,
                cond_pool=1000)
    if loss == "dot":
        return C.Config(**base, space="sphere", conditional="vmf", head="sphere", p=None)
    return C.Config(**base, space="box", conditional="laplace", head="none", p=1.0)


def torch_step_factory(torch, cfg, params, x, x_tilde):
    """The PyTorch step: the same MLP, head, InfoNCE and Adam, starting from clref's weights."""
    layers = []
    for k, (w, b) in enumerate(params["layers"]):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(linear)
        if k < len(params["layers"]) - 1:
            layers.append(torch.nn.LeakyReLU(C.ENCODER_SLOPE))
    model = torch.nn.Sequential(*layers)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    both = torch.from_numpy(np.concatenate([x, x_tilde]))

    def step():
        h_both = model(both)
        if cfg.head == "sphere":
            h_both = cfg.radius * h_both / h_both.norm(dim=1, keepdim=True)
        h, h_tilde = h_both.chunk(2)
        if cfg.p is None:
            s = h_tilde @ h.T / cfg.tau
        else:
            s = -torch.cdist(h_tilde, h, p=cfg.p) ** cfg.p / cfg.tau
        loss = (torch.logsumexp(s, dim=1) - s.diagonal()).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())
    return step


def compare(torch, name, rounds=5, block=8):
    batch, widths, loss, threads = ROWS[name]
    blas = train.set_blas_threads(threads)
    torch.set_num_threads(threads)
    cfg = row_config(batch, widths, loss)
    rng = np.random.default_rng(0)
    mixing = C.make_mixing(cfg.n, cfg.mixing_layers, rng, cfg.cond_pool)
    params = C.init_encoder(cfg.n, cfg.widths, cfg.head, rng, cfg.dtype)
    x, x_tilde = train.contrastive_batch(cfg, mixing, rng)
    torch_step = torch_step_factory(torch, cfg, params, x, x_tilde)
    adam = C.adam_init(params)
    state = {"params": params, "adam": adam}

    def clref_step():
        loss, state["params"], state["adam"] = C.train_step(
            C.contrastive_objective, state["params"], state["adam"], (x, x_tilde), cfg, cfg.lr)
        return loss

    times, losses = {"clref": [], "torch": []}, {"clref": [], "torch": []}
    for _ in range(rounds):
        for key, step in (("clref", clref_step), ("torch", torch_step)):
            time.sleep(0.3)            # idle threads of the other library go to sleep
            for k in range(block + 1):
                start = time.perf_counter()
                losses[key].append(step())
                if k > 0:              # the first step after a switch warms the caches
                    times[key].append(time.perf_counter() - start)
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses["clref"], losses["torch"]))
    clref_ms, torch_ms = (1000 * float(np.median(times[key])) for key in ("clref", "torch"))
    return {"row": name, "batch_size": batch, "widths": list(widths), "loss": loss,
            "threads": threads, "blas_threads": blas, "clref_ms": round(clref_ms, 2),
            "torch_ms": round(torch_ms, 2), "ratio": round(clref_ms / torch_ms, 3),
            "max_rel_loss_diff": float(f"{worst:.1e}"), "steps_timed": rounds * block}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="blocks of 8 timed steps per library and row")
    parser.add_argument("--rows", default="all", help="comma-separated row names, or all: "
                        + ", ".join(ROWS))
    args = parser.parse_args(argv)
    names = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown or args.rounds < 1:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}" if unknown
                     else f"--rounds must be >= 1, got {args.rounds}")
    try:
        import torch
    except ImportError:
        print("compare_torch.py: PyTorch is not installed; it is not a dependency of clref. "
              "Install it (pip install torch) to run the comparison.")
        return 0
    print(f"# torch {torch.__version__}, numpy {np.__version__}; medians of {8 * args.rounds} "
          f"steps each, in alternating blocks; ratio = clref / torch")
    print(f"# {train.describe_environment(train.environment())}")
    print(f"{'row':<10} {'batch':>5} {'widths':<26} {'loss':<4} {'threads':>7} "
          f"{'clref ms':>9} {'torch ms':>9} {'ratio':>6}")
    rows = []
    for name in names:
        row = compare(torch, name, args.rounds)
        rows.append(row)
        widths = "-".join(map(str, row["widths"]))
        print(f"{name:<10} {row['batch_size']:>5} {widths:<26} {row['loss']:<4} {row['threads']:>7} "
              f"{row['clref_ms']:>9.2f} {row['torch_ms']:>9.2f} {row['ratio']:>6.2f}", flush=True)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
