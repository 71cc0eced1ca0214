"""How the cost of clref grows: step time against batch size and N, the default
row's time to R² >= 0.99 against N, and the default run's peak memory.

python bench/scaling.py [--out results/scaling.md] [--budget-minutes 30] [--jobs 2] [--skip-runs]

Writes a Markdown report (results/scaling.md by default). The step timings take a
few minutes; the training runs take most of the time, each stopping as soon as
its schedule is done; a schedule twice as long follows only while R² >= 0.99 has
not been reached and the longer run fits in the budget.
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

BATCHES = (256, 512, 1024, 2048, 4096)
DIMENSIONS = (5, 10, 20, 40)


def median_ms(function, repeats=10, warmup=2):
    times = []
    for k in range(warmup + repeats):
        start = time.perf_counter()
        function()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def step_and_loss_ms(loss, batch, n):
    """Median ms of a whole training step at the grid presets' shape (widths 4 x 128)
    and of the loss alone (value and gradient for h and h_tilde)."""
    model = ({"space": "sphere", "conditional": "vmf", "head": "sphere", "p": None} if loss == "dot"
             else {"space": "box", "conditional": "laplace", "head": "none", "p": 1.0})
    cfg = C.Config(n=n, widths=train.CPU.widths, batch_size=batch, tau=1.0, lr=1e-4,
                   cond_pool=1000, **model)
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
    return median_ms(step), median_ms(lambda: loss_grad(h, h_tilde, cfg.tau, cfg.p))


def crossover(rows):
    """The smallest batch at which the loss takes at least half the step, or None."""
    return next((batch for batch, step, loss in rows if loss >= step / 2), None)


def timing_tables(threads):
    train.set_blas_threads(threads)
    lines = [f"## Step time against batch size (N = 10, widths 4 x 128, {threads} thread)", "",
             "| batch | dot: step ms | dot: loss ms | L1: step ms | L1: loss ms |",
             "|---|---|---|---|---|"]
    rows = {"dot": [], "l1": []}
    for batch in BATCHES:
        for loss in rows:
            rows[loss].append((batch, *step_and_loss_ms(loss, batch, 10)))
        (_, dot_step, dot_loss), (_, l1_step, l1_loss) = rows["dot"][-1], rows["l1"][-1]
        lines.append(f"| {batch} | {dot_step:.1f} | {dot_loss:.1f} | {l1_step:.1f} | {l1_loss:.1f} |")
        print(lines[-1], flush=True)
    growth = BATCHES[-1] // BATCHES[0]
    sentence = []
    for loss, label in (("dot", "dot"), ("l1", "L1")):
        (_, step0, loss0), (_, step1, loss1) = rows[loss][0], rows[loss][-1]
        where = crossover(rows[loss])
        sentence.append(f"{label}: the whole step grew {step1 / step0:.0f}x and the loss alone "
                        f"{loss1 / loss0:.0f}x; the loss takes half the step or more "
                        + (f"from batch {where} on" if where else "at no batch measured"))
    lines += ["", f"From batch {BATCHES[0]} to {BATCHES[-1]} ({growth}x): " + "; ".join(sentence)
              + f". The encoder's work is linear in the batch; the loss compares every pair, "
              f"so its work is quadratic ({growth * growth}x)."]
    lines += ["", f"## Step time against N (batch 512, widths 4 x 128 for every N, as the presets "
              f"keep them; {threads} thread)", "", "| N | dot: step ms | L1: step ms |", "|---|---|---|"]
    by_n = []
    for n in DIMENSIONS:
        dot, l1 = step_and_loss_ms("dot", 512, n)[0], step_and_loss_ms("l1", 512, n)[0]
        by_n.append((n, dot, l1))
        lines.append(f"| {n} | {dot:.1f} | {l1:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", f"From N = {DIMENSIONS[0]} to {DIMENSIONS[-1]} the dot step grew "
              f"{by_n[-1][1] / by_n[0][1]:.2f}x and the L1 step {by_n[-1][2] / by_n[0][2]:.2f}x: with "
              "the hidden widths fixed, N only enters the first and last layer and, for the L1 "
              "loss, the number of coordinates compared per pair."]
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
    args = parser.parse_args(argv)
    started = time.time()
    lines = ["# How the cost grows", "",
             f"Made by `python bench/scaling.py` on this machine ({os.cpu_count()} cores, numpy "
             f"{np.__version__}). Step times are medians of 10 steps after 2 warm-up steps on "
             "fixed inputs, float32, one BLAS thread as in the grid (one run per core).", ""]
    lines += timing_tables(threads=1)
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
