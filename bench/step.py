"""Time one training step of the paper's encoder and of the grid's; JSON lines.

python bench/step.py [--threads T] [--out results/bench.jsonl]

The first line is the environment (versions, BLAS, kernel, CPU, threads, commit),
then one line per setting: the median milliseconds of a step (sample, mix, encode
both views, loss, gradient, Adam) and numpy's rate on the same matrix products,
timed between the steps so that both see the same machine load (README "Speed").
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


def bench_step(loss, dtype, batch_size, includes_sampling, widths=train.REFERENCE_WIDTHS, steps=20,
               warmup=3):
    """Median milliseconds of one training step of an encoder of `widths` at N = 10,
    and numpy's rate on the same matrix products, timed between the steps so that
    both see the same machine load."""
    base = dict(n=10, widths=tuple(widths), batch_size=batch_size, dtype=dtype, tau=1.0,
                cond_pool=1000, lr=1e-4)
    if loss == "dot":
        cfg = C.Config(**base, space="sphere", conditional="vmf", head="sphere", p=None)
    else:
        cfg = C.Config(**base, space="box", conditional="laplace", head="none", p=1.0)
    rng = np.random.default_rng(0)
    mixing = C.make_mixing(cfg.n, cfg.mixing_layers, rng, cfg.cond_pool)
    params = C.init_encoder(cfg.n, cfg.widths, cfg.head, rng, dtype)
    adam = C.adam_init(params)
    fixed = train.contrastive_batch(cfg, mixing, rng)
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


GRID_WIDTHS = train.CPU.widths


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
    args = parser.parse_args(argv)
    if args.threads is not None and train.set_blas_threads(args.threads) is None:
        parser.error("--threads: numpy's BLAS is not an OpenBLAS whose thread count can be set")
    lines = [json.dumps({"env": train.environment()})]
    print(lines[0], flush=True)
    for row in run_bench(lambda line: print(line, flush=True)):
        lines.append(json.dumps(row))
    train.write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
