"""How the cost of clref grows: step time against batch size and N, the loss's
tile size, its peak memory, the default row's time to R² >= 0.99 against N, and
the default run's peak memory.

python bench/scaling.py [--out results/scaling.md] [--budget-minutes 30] [--jobs 2] [--skip-runs]
python bench/scaling.py --tiles      # only the loss against its tile size

Writes a Markdown report (results/scaling.md by default). Timings go round by
round over every batch size, so that a drift of the machine's speed reaches all
of them alike; each figure is the median over the rounds. The training runs take
most of the time, each stopping as soon as its schedule is done; a schedule twice
as long follows only while R² >= 0.99 has not been reached and the longer run
fits in the budget.
"""
import argparse
import concurrent.futures
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from autograd import value_and_grad  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

BATCHES = (256, 512, 1024, 2048, 4096, 8192)
TILE_EXPONENTS = (16, 17, 18, 19, 20)     # LOSS_TILE_ELEMENTS = 2^e
ROUNDS = 7
DIMENSIONS = (5, 10, 20, 40)


def interleaved_medians(functions, rounds=ROUNDS):
    """{key: median ms} of each function of the dict, one call per round, round by
    round after one warm-up call each."""
    times = {key: [] for key in functions}
    for function in functions.values():
        function()
    for _ in range(rounds):
        for key, function in functions.items():
            start = time.perf_counter()
            function()
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * float(np.median(values)) for key, values in times.items()}


def model_config(loss, batch, n):
    model = ({"space": "sphere", "conditional": "vmf", "head": "sphere", "p": None} if loss == "dot"
             else {"space": "box", "conditional": "laplace", "head": "none", "p": 1.0})
    return C.Config(n=n, widths=train.CPU.widths, batch_size=batch, tau=1.0, lr=1e-4,
                    cond_pool=1000, **model)


def step_and_loss(loss, batch, n):
    """Two functions: a whole training step at the grid presets' shape (widths
    4 x 128) and the loss alone (value and gradient for h and h_tilde)."""
    cfg = model_config(loss, batch, n)
    rng = np.random.default_rng(0)
    mixing = C.make_mixing(cfg.n, cfg.mixing_layers, rng, cfg.cond_pool)
    state = {"params": C.init_encoder(cfg.n, cfg.widths, cfg.head, rng, cfg.dtype)}
    state["adam"] = C.adam_init(state["params"])
    pair = train.contrastive_batch(cfg, mixing, rng)

    def step():
        _, state["params"], state["adam"] = C.train_step(
            C.contrastive_objective, state["params"], state["adam"], pair, cfg, cfg.lr)

    h, h_tilde = (C.encode(state["params"], x, cfg.head) for x in pair)
    loss_grad = value_and_grad(C.infonce, (0, 1))
    return step, lambda: loss_grad(h, h_tilde, cfg.tau, cfg.p)


def loss_peak_mb(loss, batch):
    """Peak MB that numpy allocates for the loss and its gradients (tracemalloc),
    on float32 outputs of the grid's encoder shape."""
    import tracemalloc
    cfg = model_config(loss, batch, 10)
    g = np.random.default_rng(0)
    h = g.standard_normal((batch, 10)).astype(cfg.dtype)
    h_tilde = (h + 0.05 * g.standard_normal((batch, 10))).astype(cfg.dtype)
    tracemalloc.start()
    try:
        value_and_grad(C.infonce, (0, 1))(h, h_tilde, cfg.tau, cfg.p)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def growth(rows, column):
    """The ratio of each row's `column` to the previous row's, as text."""
    return ["-"] + [f"{b[column] / a[column]:.2f}x" for a, b in zip(rows, rows[1:])]


def crossover(rows):
    """The smallest batch at which the loss takes at least half the step, or None."""
    return next((batch for batch, step, loss in rows if loss >= step / 2), None)


def timing_tables(threads):
    train.set_blas_threads(threads)
    functions = {}
    for batch in BATCHES:
        for loss in ("dot", "l1"):
            functions[(batch, loss, "step")], functions[(batch, loss, "loss")] = \
                step_and_loss(loss, batch, 10)
    ms = interleaved_medians(functions)
    rows = [(batch, ms[(batch, "dot", "step")], ms[(batch, "dot", "loss")],
             ms[(batch, "l1", "step")], ms[(batch, "l1", "loss")]) for batch in BATCHES]
    dot_growth, l1_growth = growth(rows, 2), growth(rows, 4)
    lines = [f"## Step time against batch size (N = 10, widths 4 x 128, {threads} thread)", "",
             f"Medians of {ROUNDS} rounds; the loss is its value and both gradients; \"x\" is "
             "the loss's growth from the batch before (4x would be quadratic work at a constant "
             "rate).", "",
             "| batch | dot: step ms | dot: loss ms | dot: loss growth | L1: step ms | L1: loss ms "
             "| L1: loss growth |", "|---|---|---|---|---|---|---|"]
    for (batch, dot_step, dot_loss, l1_step, l1_loss), dg, lg in zip(rows, dot_growth, l1_growth):
        lines.append(f"| {batch} | {dot_step:.1f} | {dot_loss:.1f} | {dg} | {l1_step:.1f} | "
                     f"{l1_loss:.1f} | {lg} |")
        print(lines[-1], flush=True)
    worst = max(max(b[k] / a[k] for a, b in zip(rows, rows[1:])) for k in (2, 4))
    lines += ["", f"From batch {BATCHES[0]} to {BATCHES[-1]} the largest growth of the loss "
              f"over one doubling is {worst:.2f}x. At the grid's batch (512) the L1 step costs "
              f"{rows[1][3] / rows[1][1]:.2f}x the dot step."]
    lines += ["", "Peak memory that numpy allocates for the loss and its gradients "
              "(tracemalloc, float32, N = 10): "
              + "; ".join(f"{loss} at batch {batch}: {loss_peak_mb(loss, batch):.1f} MB"
                          for loss in ("l1", "dot") for batch in (6144, 8192))
              + ". One (B, B) float32 array at 8192 is 268 MB."]
    print(lines[-1], flush=True)
    lines += ["", f"## Step time against N (batch 512, widths 4 x 128 for every N, as the presets "
              f"keep them; {threads} thread)", "", "| N | dot: step ms | L1: step ms |", "|---|---|---|"]
    functions = {(n, loss): step_and_loss(loss, 512, n)[0] for n in DIMENSIONS for loss in ("dot", "l1")}
    ms = interleaved_medians(functions)
    by_n = [(n, ms[(n, "dot")], ms[(n, "l1")]) for n in DIMENSIONS]
    for n, dot, l1 in by_n:
        lines.append(f"| {n} | {dot:.1f} | {l1:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", f"From N = {DIMENSIONS[0]} to {DIMENSIONS[-1]} the dot step grew "
              f"{by_n[-1][1] / by_n[0][1]:.2f}x and the L1 step {by_n[-1][2] / by_n[0][2]:.2f}x: with "
              "the hidden widths fixed, N only enters the first and last layer and, for the L1 "
              "loss, the number of coordinates compared per pair."]
    return lines


def tile_table(threads):
    """The loss (value and gradients) against LOSS_TILE_ELEMENTS, every batch."""
    train.set_blas_threads(threads)
    chosen = C.LOSS_TILE_ELEMENTS
    lines = [f"## The loss against its tile size (N = 10, float32, {threads} thread)", "",
             f"`clref.LOSS_TILE_ELEMENTS` bounds a tile's (T, D, B) array (L1) or (T, B) block "
             f"(dot); the code uses 2^{chosen.bit_length() - 1}. Milliseconds, medians of "
             f"{ROUNDS} rounds.", "",
             "| tile | " + " | ".join(f"dot {b} | L1 {b}" for b in BATCHES) + " |",
             "|---|" + "---|" * (2 * len(BATCHES))]
    losses = {(b, loss): step_and_loss(loss, b, 10)[1] for b in BATCHES for loss in ("dot", "l1")}
    try:
        for exponent in TILE_EXPONENTS:
            C.LOSS_TILE_ELEMENTS = 1 << exponent
            ms = interleaved_medians(losses)
            lines.append(f"| 2^{exponent} | " + " | ".join(
                f"{ms[(b, 'dot')]:.1f} | {ms[(b, 'l1')]:.1f}" for b in BATCHES) + " |")
            print(lines[-1], flush=True)
    finally:
        C.LOSS_TILE_ELEMENTS = chosen
    return lines


def first_crossing(run_dir, bar=0.99):
    """(step, seconds) of the first evaluation with R² >= bar in run_dir/log.csv, else None."""
    with open(os.path.join(run_dir, "log.csv")) as f:
        for row in csv.DictReader(f):
            if float(row["r2"]) >= bar:
                return int(float(row["step"])), float(row["seconds"])
    return None


def train_command(args):
    return [sys.executable, os.path.join(ROOT, "train.py"), *args]


# Started by a small intermediate process: on Linux a child's peak-memory counter
# starts from its parent's resident size at fork, which here (after the B = 4096
# timings) would dwarf the run's own.
MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:], "
           "stdout=subprocess.DEVNULL).returncode; open(sys.argv[1], 'w').write(str("
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")


def run_child(args):
    """Run train.py with args; returns its peak resident memory in MB."""
    with tempfile.TemporaryDirectory() as scratch:
        report = os.path.join(scratch, "maxrss")
        subprocess.run([sys.executable, "-c", MEASURE, report, *train_command(args)], check=True)
        with open(report) as f:
            return int(f.read()) / 1024   # kB on Linux


def runs_at(n, work, budget_minutes):
    """Table rows of the default preset at N = n: its 12 000-step schedule, then one
    twice as long while R² >= 0.99 has not been reached and it fits the budget."""
    lines, steps, seconds = [], 12000, 0.0
    while seconds * 2 <= budget_minutes * 60:
        run_dir = os.path.join(work, f"default-n{n}-{steps}")
        if not os.path.exists(os.path.join(run_dir, "metrics.json")):   # finished runs are kept
            run_child(["--n", str(n), "--steps", str(steps), "--out", run_dir, "--quiet",
                       "--no-plots", "--supervised-steps", "0", "--threads", "1"])
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        hit, seconds = first_crossing(run_dir), metrics["seconds"]
        lines.append(f"| {n} | {steps} | {f'step {hit[0]}' if hit else 'not reached'} | "
                     f"{f'{hit[1]:.0f}' if hit else '-'} | {metrics['r2']:.4f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
        if hit:
            break
        steps *= 2
    return lines


def default_row_runs(work, budget_minutes, jobs):
    """Time of the default preset to R² >= 0.99 at each N, and the peak memory of
    `python train.py` with everything at its default (its supervised baseline and
    figures included). One process per core, `jobs` at a time, as the grid runs."""
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        peak = pool.submit(run_child, ["--out", os.path.join(work, "default"), "--quiet"])
        tables = [pool.submit(runs_at, n, work, budget_minutes) for n in DIMENSIONS]
        lines = [f"## Time to held-out R² >= 0.99 of the default row ({train.DEFAULT_PRESET}) "
                 "against N", "", f"`python train.py --n N --steps S --threads 1`, {jobs} runs at a "
                 f"time on the {os.cpu_count()} cores; runs up to {budget_minutes:g} min. A run "
                 f"whose directory under --work already holds metrics.json is read, not "
                 f"trained again; its seconds are those it took when it ran.", "",
                 "| N | steps | first evaluation with R² >= 0.99 | seconds to it | final R² | "
                 "seconds of the run |", "|---|---|---|---|---|---|"]
        for table in tables:
            lines += table.result()
        return lines, peak.result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "scaling.md"))
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "scaling"),
                        help="where the training runs go")
    parser.add_argument("--budget-minutes", type=float, default=30.0,
                        help="longest training run per N")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--skip-runs", action="store_true", help="the step timings only")
    parser.add_argument("--tiles", action="store_true",
                        help="only the table of the loss against its tile size, printed")
    args = parser.parse_args(argv)
    if args.tiles:
        tile_table(threads=1)
        return 0
    started = time.time()
    lines = ["# How the cost grows", "",
             f"Made by `python bench/scaling.py` on this machine ({os.cpu_count()} cores, numpy "
             f"{np.__version__}). Step times are medians of {ROUNDS} rounds over every setting, "
             "after one warm-up call each, on fixed inputs, float32, one BLAS thread as in the "
             "grid (one run per core).", ""]
    lines += timing_tables(threads=1)
    lines += [""] + tile_table(threads=1)
    if not args.skip_runs:
        table, peak = default_row_runs(args.work, args.budget_minutes, args.jobs)
        lines += [""] + table
        lines += ["", f"Peak resident memory of `python train.py` (the default run, with its "
                  f"supervised baseline and figures): {peak:.0f} MB."]
    lines += ["", f"The report took {train.format_seconds(time.time() - started)} to make."]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    train.write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
