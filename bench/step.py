"""Time one training step of the paper's encoder and of the grid's; JSON lines.

python bench/step.py [--threads T] [--out results/bench.jsonl]
python bench/step.py --profile

The first line is the environment (versions, BLAS, kernel, CPU, threads, commit),
then one line per setting: the median milliseconds of a step (sample, mix, encode
both views, loss, gradient, Adam) and numpy's rate on the same matrix products,
timed between the steps so that both see the same machine load (README "Speed").
--profile prints instead where one step's milliseconds go, part by part, at the
paper's shape and the grid's (results/speed.md).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import autograd  # noqa: E402
import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402


def encoder_gemm_shapes(n, widths, rows):
    """(m, k, n) of every matrix product in one forward and backward pass of the
    encoder over `rows` inputs (the input layer needs no gradient for x)."""
    sizes = [n, *widths, n]
    shapes = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append((rows, fan_in, fan_out))          # forward h @ W
        shapes.append((fan_in, rows, fan_out))          # gradient of W: hᵀ g
        if layer > 0:
            shapes.append((rows, fan_out, fan_in))      # gradient of h: g Wᵀ
    return shapes


def gemm_operands(shapes, dtype):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
            for m, k, n in shapes]


def time_gemms(operands):
    start = time.perf_counter()
    for a, b in operands:
        a @ b
    return time.perf_counter() - start


def setting(loss, dtype, batch_size, widths):
    """(cfg, mixing, initial encoder, a batch of pairs, the generator that drew them)
    for a step at N = 10: the sphere with the dot loss, or the box with L1."""
    base = dict(n=10, widths=tuple(widths), batch_size=batch_size, dtype=dtype, tau=1.0,
                cond_pool=1000, lr=1e-4)
    if loss == "dot":
        cfg = C.Config(**base, space="sphere", conditional="vmf", head="sphere", p=None)
    else:
        cfg = C.Config(**base, space="box", conditional="laplace", head="none", p=1.0)
    rng = np.random.default_rng(0)
    mixing = C.make_mixing(cfg.n, cfg.mixing_layers, rng, cfg.cond_pool)
    params = C.init_encoder(cfg.n, cfg.widths, cfg.head, rng, dtype)
    return cfg, mixing, params, train.contrastive_batch(cfg, mixing, rng), rng


def bench_step(loss, dtype, batch_size, includes_sampling, widths=train.REFERENCE_WIDTHS, steps=20,
               warmup=3):
    """Median milliseconds of one training step of an encoder of `widths` at N = 10,
    and numpy's rate on the same matrix products, timed between the steps so that
    both see the same machine load."""
    cfg, mixing, params, fixed, rng = setting(loss, dtype, batch_size, widths)
    adam = C.adam_init(params)
    shapes = encoder_gemm_shapes(cfg.n, cfg.widths, 2 * batch_size)
    if loss == "dot":  # S = h_tilde hᵀ and its two gradient products
        shapes += [(batch_size, cfg.n, batch_size), (batch_size, batch_size, cfg.n),
                   (batch_size, batch_size, cfg.n)]
    operands = gemm_operands(shapes, dtype)
    step_times, gemm_times = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = train.contrastive_batch(cfg, mixing, rng) if includes_sampling else fixed
        _, params, adam = C.train_step(C.contrastive_objective, params, adam, batch, cfg, cfg.lr)
        step_times.append(time.perf_counter() - start)
        gemm_times.append(time_gemms(operands))
    step_seconds = float(np.median(step_times[warmup:]))
    gemm_seconds = float(np.median(gemm_times[warmup:]))
    gflop = sum(2 * m * k * n for m, k, n in shapes) / 1e9
    return {"loss": loss, "dtype": dtype, "batch_size": batch_size,
            "includes_sampling": includes_sampling, "step_ms": round(1000 * step_seconds, 2),
            "gflop": round(gflop, 3), "gflops": round(gflop / step_seconds, 1),
            "gemm_gflops": round(gflop / gemm_seconds, 1),
            "efficiency": round(gemm_seconds / step_seconds, 3),
            "widths": list(cfg.widths), "steps_timed": steps, "threads": train.blas_threads()}


def profile_step(loss, batch_size, widths, threads, dtype="float32", reps=30, warmup=3):
    """Milliseconds (medians over `reps`) of each part of one training step, the parts
    run one after another in every repetition so that all see the same load: each
    layer's forward and backward pass and the matrix products inside them, the head
    both ways, the loss with its gradient, Adam, and the whole step; "rest" is the
    whole step less its parts (autograd's bookkeeping, stacking the two views).
    Returns (milliseconds by part, the gradient the parts computed, as the list of
    trainable leaves), so that a test can check the parts make up the step."""
    train.set_blas_threads(threads)
    cfg, _, params, batch, _ = setting(loss, dtype, batch_size, widths)
    adam = C.adam_init(params)
    layers = params["layers"]
    slopes = [C.ENCODER_SLOPE] * (len(layers) - 1) + [1.0]

    def loss_of(h_both):
        h, h_tilde = C.anp.split(h_both, 2)
        return C.infonce(h, h_tilde, cfg.tau, cfg.p, cfg.self_pair, cfg.loss_form)

    loss_grad = autograd.grad(loss_of)
    times = {}

    def timed(name, function, *args):
        start = time.perf_counter()
        out = function(*args)
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    for _ in range(warmup + reps):
        inputs = [np.concatenate(batch)]
        for k, ((w, b), slope) in enumerate(zip(layers, slopes)):
            timed(f"layer {k + 1} forward: product", np.matmul, inputs[-1], w)
            inputs.append(timed(f"layer {k + 1} forward", C.dense, inputs[-1], w, b, slope))
        h_out = inputs[-1]
        if cfg.head == "sphere":
            h_both = timed("head forward", C.sphere_head, h_out, cfg.radius)
        else:
            h_both = h_out
        g = timed("loss and its gradient", loss_grad, h_both)
        if cfg.head == "sphere":
            g = timed("head backward", C._sphere_head_vjp((0,), h_both, (h_out, cfg.radius), {}),
                      g)[0]
        grads = []
        for k in reversed(range(len(layers))):
            w, b = layers[k]
            h_in, ans = inputs[k], inputs[k + 1]
            argnums = (1, 2) if k == 0 else (0, 1, 2)
            timed(f"layer {k + 1} backward: products",
                  lambda: (h_in.T @ g,) if k == 0 else (g @ w.T, h_in.T @ g))
            out = timed(f"layer {k + 1} backward", C._dense_vjp(argnums, ans, (h_in, w, b, slopes[k]),
                                                                  {}), g)
            grads[:0] = out[-2:]
            g = out[0] if k > 0 else None
        grad_tree = C.with_leaves(C.trainable(params), iter(grads))
        timed("Adam", C.adam_update, params, grad_tree, {"m": [m.copy() for m in adam["m"]],
                                                         "v": [v.copy() for v in adam["v"]],
                                                         "t": 0}, cfg.lr)
        timed("whole step", C.train_step, C.contrastive_objective, params,
              {"m": [m.copy() for m in adam["m"]], "v": [v.copy() for v in adam["v"]], "t": 0},
              batch, cfg, cfg.lr)
    ms = {name: 1000 * float(np.median(values[warmup:])) for name, values in times.items()}
    parts = sum(value for name, value in ms.items() if ":" not in name and name != "whole step")
    ms["rest"] = ms["whole step"] - parts
    return ms, grads


GRID_WIDTHS = train.CPU.widths
PROFILE_SHAPES = (("dot", 1024, train.REFERENCE_WIDTHS, 2), ("dot", 512, GRID_WIDTHS, 1),
                  ("l1", 512, GRID_WIDTHS, 1))   # (loss, batch, widths, BLAS threads)


def profile_table(shapes=PROFILE_SHAPES):
    """A markdown table of `profile_step` at each shape, one column per shape, and the
    share of the step that the matrix products take."""
    env = train.describe_environment(train.environment())
    columns = [profile_step(*shape)[0] for shape in shapes]
    heads = [f"{'-'.join(map(str, widths))}, {loss}, batch {batch}, {threads} thread"
             f"{'s' if threads > 1 else ''}" for loss, batch, widths, threads in shapes]
    names = list(dict.fromkeys(name for column in columns for name in column))
    lines = [f"# {env}; BLAS threads in each column's head; medians of 30 repetitions",
             "| part, ms | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{column[name]:.2f}" if name in column else "" for column in columns) + " |")
    products = [sum(v for k, v in column.items() if ":" in k) for column in columns]
    lines.append("| matrix products / whole step | " + " | ".join(
        f"{p / column['whole step']:.2f}" for p, column in zip(products, columns)) + " |")
    return "\n".join(lines)


def run_bench(say=print):
    """One JSON line per setting of the step benchmark: the paper's encoder at
    batch 1024 and 256, then the grid presets' shape (batch 512, four layers of
    128). gflop counts matrix products only (the L1 loss's pairwise differences
    are not products)."""
    settings = [(batch, train.REFERENCE_WIDTHS, loss, dtype, sampling) for batch in (1024, 256)
                for loss in ("dot", "l1") for dtype in ("float32", "float64")
                for sampling in (False, True)]
    settings += [(512, GRID_WIDTHS, loss, "float32", sampling) for loss in ("dot", "l1")
                 for sampling in (False, True)]
    rows = []
    for batch_size, widths, loss, dtype, includes_sampling in settings:
        row = bench_step(loss, dtype, batch_size, includes_sampling, widths)
        say(json.dumps(row))
        rows.append(row)
    grid = {row["loss"]: row["step_ms"] for row in rows
            if row["widths"] == list(GRID_WIDTHS) and not row["includes_sampling"]}
    ratio = {"grid_l1_over_dot": round(grid["l1"] / grid["dot"], 3)}
    say(json.dumps(ratio))
    return rows + [ratio]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="threads of numpy's BLAS (default: as it chose)")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "results", "bench.jsonl"),
                        help="where the JSON lines go (default results/bench.jsonl)")
    parser.add_argument("--profile", action="store_true",
                        help="print milliseconds per part of one step (paper and grid shapes)")
    args = parser.parse_args(argv)
    if args.threads is not None and train.set_blas_threads(args.threads) is None:
        parser.error("--threads: numpy's BLAS is not an OpenBLAS whose thread count can be set")
    if args.profile:
        print(profile_table(), flush=True)
        return 0
    lines = [json.dumps({"env": train.environment()})]
    print(lines[0], flush=True)
    for row in run_bench(lambda line: print(line, flush=True)):
        lines.append(json.dumps(row))
    train.write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
