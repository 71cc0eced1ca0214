"""From the reference recipe to clref's, one change at a time (results/ladder.md).

python bench/ladder.py [--set ladder|encoder|all] [--rows R,R] [--rungs X,Y]
                       [--seeds 1000,1001,1002] [--jobs 2] [--threads T]
    trains every run of the set that has not finished, then writes
    results/ladder.csv, results/ladder.md and results/ladder.png. Resumable like
    the grid: SIGINT or SIGTERM keeps the work, and the same command again reads
    the finished runs and continues the interrupted ones.
python bench/ladder.py --report
    the same files from the runs that have finished, training nothing.

The ladder: three rows of the grid (sphere_vmf_k10, Theorem 1; box_laplace_l1,
the permutation theorem; sphere_laplace, a robustness row), each trained
- as its preset (rung "preset"),
- with exactly one of the preset's departures from the reference recipe set back
  to the reference's value (train.DEPARTURES, one rung each where the row has it),
- with the whole reference recipe (rung "official", `--recipe official`),
every rung at the preset's budget in pairs (steps x batch): a batch-6144 rung runs
the preset's steps x batch / 6144, its other step counts scaled alike. Seeds 1000,
1001, 1002, on which no recipe was chosen.

The encoder set: the paper's encoder widths (rung "widths") on every other grid
row but kappa = 1, seed 1000.

Every run is evaluated every 2 % of its steps and whenever 2 % more steps have
passed (as the cost study, bench/recovery_cost.py), so the pairs to the row's bar
(the first evaluation that meets it) are at most 2 % late.
"""
import argparse
import csv
import math
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

ROWS = ("sphere_vmf_k10", "box_laplace_l1", "sphere_laplace")
SEEDS = (1000, 1001, 1002)
ENCODER_ROWS = tuple(name for name in train.GRID_PRESETS if name not in ROWS and name != "sphere_vmf")
ENCODER_SEEDS = (1000,)
EVALUATIONS, EVAL_GROWTH = 50, 0.02
SETS = ("ladder", "encoder")
COLUMNS = ["set", "row", "rung", "seed", "finished", "met", "r2", "mcc", "pairs_to_bar", "pairs", "budget",
           "steps", "batch_size", "seconds", "seconds_per_step", "blas_threads", "changes"]


def rungs(row):
    """The rung names of a row in ladder order: the preset, one per departure the
    row has (a departure whose reference value the preset already holds is no
    rung), the whole reference recipe."""
    cfg = train.PRESETS[row].config
    return ["preset", *(name for name in train.DEPARTURES if train.reverted(cfg, [name]) != cfg),
            "official"]


def rung_config(row, rung, seed):
    """The configuration of one run: the row's preset with the rung's departure
    reverted at equal pairs, evaluated every 2 % of its steps, no supervised baseline."""
    cfg = train.PRESETS[row].config
    if rung != "preset":
        cfg = train.reverted(cfg, [rung])
    return C.check_config(cfg.replace(seed=seed, supervised_steps=0, eval_growth=EVAL_GROWTH,
                                      eval_every=max(1, cfg.steps // EVALUATIONS)))


def changed_fields(row, rung):
    """{field: (preset's value, rung's value)} of the fields the rung changes,
    evaluation cadence aside."""
    base = train.PRESETS[row].config.to_dict()
    cfg = rung_config(row, rung, base["seed"]).to_dict()
    return {k: (base[k], cfg[k]) for k in base
            if base[k] != cfg[k] and k not in ("eval_every", "eval_growth", "supervised_steps")}


def run_dir(out_root, row, rung, seed):
    return os.path.join(out_root, f"{row}-{rung.replace(' ', '_')}-s{seed}")


def ladder_jobs(out_root, sets=SETS, rows=None, rung_names=None, seeds=None):
    """[(set, row, rung, seed, cfg, directory)]: seed by seed (the ladder's first), the
    longest runs first within a seed, so that an interrupted sweep has whole seeds."""
    jobs = []
    for set_name in sets:
        for row in ROWS if set_name == "ladder" else ENCODER_ROWS:
            names = rungs(row) if set_name == "ladder" else ["widths"]
            for rung in names:
                for seed in SEEDS if set_name == "ladder" else ENCODER_SEEDS:
                    if ((rows is None or row in rows) and (rung_names is None or rung in rung_names)
                            and (seeds is None or seed in seeds)):
                        jobs.append((set_name, row, rung, seed, rung_config(row, rung, seed),
                                     run_dir(out_root, row, rung, seed)))
    return sorted(jobs, key=lambda j: (j[3], SETS.index(j[0]), -work(j[4])))


def work(cfg):
    """A rough count of a run's multiply-adds: pairs x the encoder's weights."""
    sizes = (cfg.n, *cfg.widths, cfg.n)
    return cfg.steps * cfg.batch_size * sum(a * b for a, b in zip(sizes, sizes[1:]))


def ladder_job(job):
    """One run in a pool worker (train.run_quietly): read back when finished,
    continued when interrupted, else trained."""
    set_name, row, rung, seed, cfg, path = job
    if train.stop_requested():
        return {"status": "skipped"}
    try:
        metrics, read_back = train.run_quietly(cfg, path, row, resume=True)
    except train.Interrupted:
        return {"status": "interrupted"}
    except train.NonFiniteLoss as error:
        print(f"{os.path.basename(path)}: {error}", flush=True)
        return {"status": "finished"}
    word = "already finished" if read_back else "finished"
    print(f"{os.path.basename(path)}: {word}, R² {metrics['r2']:.4f}, MCC {metrics['mcc']:.4f}, "
          f"met {metrics['met']}, {train.format_seconds(metrics['seconds'])}", flush=True)
    return {"status": "finished"}


def read_log(path):
    try:
        with open(os.path.join(path, "log.csv")) as f:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def blas_threads_of(path):
    """The BLAS threads of each stretch of a run (its env.json), as "1" or "1, then 2, then 1":
    a run resumed with another thread count while another run shared the cores has seconds
    that do not compare with the others'."""
    history = train.read_json(os.path.join(path, "env.json")) or []
    counts = [str(entry.get("blas_threads")) for entry in history if isinstance(entry, dict)]
    changes = [c for k, c in enumerate(counts) if k == 0 or c != counts[k - 1]]
    return ", then ".join(changes) or "unknown"


def run_record(job):
    """One row of ladder.csv from a run's log.csv and metrics.json; a run started and
    not finished gives its numbers so far (finished False); one never started, None."""
    set_name, row, rung, seed, cfg, path = job
    metrics = train.finished_metrics(path, cfg)
    log = read_log(path) if metrics is not None or train.same_config(path, cfg) else []
    if not log:
        return None
    preset = train.PRESETS[row]
    reached = next((r["step"] for r in log if train.bars_met(preset, r)), None)
    last = metrics if metrics is not None else log[-1]
    steps = int(last["steps"] if metrics is not None else last["step"])
    changes = "; ".join(f"{k} {_short(b)}" for k, (a, b) in changed_fields(row, rung).items())
    return {"set": set_name, "row": row, "rung": rung, "seed": seed, "finished": metrics is not None,
            "met": train.bars_met(preset, last), "r2": last["r2"], "mcc": last["mcc"],
            "pairs_to_bar": None if reached is None else int(reached * cfg.batch_size),
            "pairs": steps * cfg.batch_size, "budget": cfg.steps * cfg.batch_size, "steps": steps,
            "batch_size": cfg.batch_size,
            "seconds": last["seconds"], "seconds_per_step": last["seconds"] / max(steps, 1),
            "blas_threads": blas_threads_of(path), "changes": changes or "-"}


def _short(value):
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def command_of(job):
    set_name, row, rung, seed, _, _ = job
    return shlex.join(["python", "bench/ladder.py", "--set", set_name, "--rows", row, "--rungs", rung,
                       "--seeds", str(seed)])


# ----------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------

def _median_range(values, fmt):
    if not values:
        return "-"
    middle = fmt(float(np.median(values)))
    return middle if len(values) == 1 else f"{middle} ({fmt(min(values))}-{fmt(max(values))})"


def _millions(pairs):
    return f"{pairs / 1e6:.2f} M"


def pairs_cell(records):
    """Median pairs to the bar over the runs that met it at some evaluation, and how
    many did; "not met" when none did."""
    got = [r["pairs_to_bar"] for r in records if r["pairs_to_bar"] is not None]
    if not got:
        return "not met"
    return _median_range(got, _millions) + ("" if len(got) == len(records) else
                                            f", {len(got)} of {len(records)}")


# A departure is "needed" at this budget when reverting it leaves the bar missed at
# the budget on most seeds; it "buys speed" when the bar is still met there but the
# pairs or the seconds to reach it grow by more than a quarter (medians); else "neutral".
SPEED_MARGIN = 1.25


def reading(records, row, rung):
    """(word, why) for one departure of one row, from the finished runs."""
    own = [r for r in records if r["row"] == row and r["rung"] == rung and r["finished"]]
    base = [r for r in records if r["row"] == row and r["rung"] == "preset" and r["finished"]]
    if not own or not base:
        return None
    if sum(not r["met"] for r in own) * 2 > len(own):
        return "needed", f"met at the budget on {sum(r['met'] for r in own)} of {len(own)} seeds"

    def to_bar(runs, key):
        got = [r["pairs_to_bar"] if key == "pairs" else
               r["seconds_per_step"] * r["pairs_to_bar"] / r["batch_size"]
               for r in runs if r["pairs_to_bar"] is not None]
        return float(np.median(got)) if got else math.nan
    pairs = to_bar(own, "pairs") / to_bar(base, "pairs")
    seconds = to_bar(own, "seconds") / to_bar(base, "seconds")
    why = f"pairs to the bar x{pairs:.2f}, seconds to it x{seconds:.2f} of the preset's"
    return ("buys speed" if max(pairs, seconds) > SPEED_MARGIN else "neutral"), why


def ladder_markdown(records, jobs, command):
    lines = [f"# The ladder: from the reference recipe to clref's, one change at a time", "",
             f"Made by `{command}` at commit {train.head_commit()} (the runs in results/ladder/runs; each",
             "run's own command is in the last table). Rows, rungs and seeds: bench/ladder.py's",
             "docstring; the departures: README, the table of differences (`python train.py --list`).",
             "Seconds are of one core (one BLAS thread, two runs at a time on this 2-core",
             "machine) and include the evaluations. A rung's changes are the fields it sets.", ""]
    finished = sum(r["finished"] for r in records)
    lines += [f"{finished} of the {len(jobs)} runs have finished.", ""]
    for set_name, title in (("ladder", "The ladder"), ("encoder", "The paper's encoder on the other rows")):
        sub = [r for r in records if r["set"] == set_name]
        if not sub:
            continue
        lines += [f"## {title}", "",
                  "| row | rung | changes | seeds | met | held-out R² | MCC | pairs to the bar | "
                  "budget | s/step | seconds | reading |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in dict.fromkeys(r["row"] for r in sub):
            present = {r["rung"] for r in sub if r["row"] == row}
            for rung in [name for name in ("preset", *train.DEPARTURES, "official") if name in present]:
                runs = [r for r in sub if r["row"] == row and r["rung"] == rung]
                done = [r for r in runs if r["finished"]]
                read = reading(records, row, rung) if set_name == "ladder" and rung not in (
                    "preset", "official") else None
                lines.append(
                    f"| {row} | {rung} | {runs[0]['changes']} | {len(done)}"
                    + (f" (+{len(runs) - len(done)} running)" if len(done) < len(runs) else "")
                    + f" | {sum(r['met'] for r in done)}/{len(done)} | "
                    f"{_median_range([r['r2'] for r in done], lambda v: f'{v:.3f}')} | "
                    f"{_median_range([r['mcc'] for r in done], lambda v: f'{v:.3f}')} | "
                    f"{pairs_cell(done) if done else '-'} | {_millions(runs[0]['budget'])} | "
                    f"{_median_range([r['seconds_per_step'] for r in done], lambda v: f'{v:.3f}')} | "
                    f"{_median_range([r['seconds'] for r in done], lambda v: f'{v:.0f}')} | "
                    f"{'' if read is None else f'{read[0]}: {read[1]}'} |")
        lines.append("")
    lines += ["## Every run", "", "BLAS threads: those of each stretch of the run, when it was resumed "
              "with another count (its seconds then do not compare with the others').", "",
              "| run | finished | met | R² | MCC | pairs to the bar | seconds | BLAS threads | command |",
              "|---|---|---|---|---|---|---|---|---|"]
    by_dir = {os.path.basename(job[5]): job for job in jobs}
    for r in records:
        job = next(j for j in by_dir.values() if j[1:4] == (r["row"], r["rung"], r["seed"]))
        lines.append(f"| {os.path.basename(job[5])} | {'yes' if r['finished'] else 'no (so far)'} | "
                     f"{'yes' if r['met'] else 'no'} | {r['r2']:.4f} | {r['mcc']:.4f} | "
                     f"{'not met' if r['pairs_to_bar'] is None else _millions(r['pairs_to_bar'])} | "
                     f"{r['seconds']:.0f} | {r['blas_threads']} | `{command_of(job)}` |")
    return "\n".join(lines) + "\n"


# kappa = 1 with the reference widths: the cost study's recipe at N = 10, kappa = 3 with
# those widths (one seed), against the study's own runs there, scales the law's kappa = 1
# cost (results/cost.md) by the ratio of their pairs to R² 0.99
KAPPA_POINT, KAPPA_COMMAND = (10, 3.0), (
    "python bench/recovery_cost.py --set study --points 10:3 --seeds 0 --jobs 1 --threads 1 "
    "--base '{\"widths\": [100, 500, 500, 500, 500, 100]}' --out results/ladder/kappa/runs "
    "--results results/ladder/kappa")
THREE_HOURS = 3 * 3600


def kappa1_lines(results_dir):
    """ladder.md's estimate of what kappa = 1 costs with the reference widths."""
    def rows(path):
        try:
            with open(path) as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []
    n, kappa = KAPPA_POINT
    wide = [r for r in rows(os.path.join(results_dir, "ladder", "kappa", "cost.csv"))
            if r["set"] == "study" and int(r["n"]) == n and float(r["kappa"]) == kappa]
    narrow = [r for r in rows(os.path.join(results_dir, "cost.csv"))
              if r["set"] == "study" and int(r["n"]) == n and float(r["kappa"]) == kappa]
    lines = ["## kappa = 1 with the reference widths: an estimate", "",
             f"The measured point: `{KAPPA_COMMAND}` (N = {n}, kappa = {kappa:g}, the cost study's "
             "recipe with the reference widths), against the study's 64-64-64 runs at the same point.", ""]
    done = [r for r in wide if r["finished"] == "True" and r["pairs_099"]]
    fit = train.read_json(os.path.join(results_dir, "cost.json"))
    if not done or not narrow or fit is None:
        return lines + ["Not finished yet: no estimate.", ""]
    import importlib.util
    spec = importlib.util.spec_from_file_location("recovery_cost", os.path.join(HERE, "recovery_cost.py"))
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    ratio = float(np.median([float(r["pairs_099"]) for r in done])) / float(
        np.median([float(r["pairs_099"]) for r in narrow if r["pairs_099"]]))
    law = cost.law_pairs(fit["pairs_099"], 10, cost.pair_information(10, 1.0))
    pairs_per_second = float(np.median([float(r["pairs_per_second"]) for r in done]))
    hours = ratio * law / pairs_per_second / 3600
    return lines + [
        f"Pairs to R² 0.99 at the point: {_millions(float(done[0]['pairs_099']))} with the reference "
        f"widths against a median of {_millions(np.median([float(r['pairs_099']) for r in narrow]))} "
        f"with 64-64-64 ({len(narrow)} seeds): ratio {ratio:.2f}.",
        f"The law's kappa = 1 cost at N = 10 is {_millions(law)} pairs; times the ratio, "
        f"{_millions(ratio * law)}. At the {pairs_per_second:.0f} pairs a second the reference "
        f"widths trained at here (one core, beside other runs), that is {hours:.1f} hours of one core: "
        + ("under three hours, so it is run." if hours * 3600 < THREE_HOURS
           else "over three hours, so it is not run."), ""]


def write_reports(jobs, results_dir, command):
    records = [r for r in (run_record(job) for job in jobs) if r is not None]
    os.makedirs(results_dir, exist_ok=True)
    train.write_text(os.path.join(results_dir, "ladder.csv"), train.csv_text(records, COLUMNS))
    train.write_text(os.path.join(results_dir, "ladder.md"),
                     ladder_markdown(records, jobs, command) + "\n" + "\n".join(kappa1_lines(results_dir)))
    import plots
    plots.plot_ladder(results_dir)
    print(f"{sum(r['finished'] for r in records)} of the {len(jobs)} runs have finished; wrote "
          f"{results_dir}/ladder.csv, ladder.md, ladder.png")
    return records


def _names(text, allowed, what):
    """The comma-separated names of `text` (a rung's spaces may be written as _)."""
    names = [name if name in allowed else name.replace("_", " ") for name in text.split(",")]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise SystemExit(f"--{what}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="all", choices=[*SETS, "all"],
                        help="which runs to train (default: all)")
    parser.add_argument("--rows", help="comma-separated rows to train (default: the set's)")
    parser.add_argument("--rungs", help="comma-separated rungs to train (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds to train (default: the set's)")
    train.add_study_arguments(parser, os.path.join(ROOT, "results", "ladder", "runs"))
    args = parser.parse_args(argv)
    train.check_study_arguments(args)
    all_rows = (*ROWS, *ENCODER_ROWS)
    rows = _names(args.rows, all_rows, "rows") if args.rows else None
    rung_names = _names(args.rungs, ["preset", *train.DEPARTURES, "official"], "rungs") if args.rungs else None
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    jobs = ladder_jobs(args.out)
    command = shlex.join(["python", "bench/ladder.py", *(argv if argv is not None else sys.argv[1:])])
    if not args.report:
        sets = SETS if args.set == "all" else (args.set,)
        todo = [job for job in ladder_jobs(args.out, sets, rows, rung_names, seeds)]
        start = time.time()
        results = train.run_in_pool(ladder_job, todo, args.jobs, args.threads)
        status = [r["status"] for r in results]
        if train.stop_requested() or status.count("finished") < len(status):
            write_reports(jobs, args.results, command)
            print(f"ladder interrupted after {train.format_seconds(time.time() - start)}: "
                  f"{status.count('finished')} of {len(status)} runs finished; run the same "
                  "command again to continue", file=sys.stderr)
            return 128 + (train.STOP["signum"] or 15)
    write_reports(jobs, args.results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
